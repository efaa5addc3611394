"""export: a run as a diffusers pipeline folder (DDPM/DDIMPipeline sample what our ddpm/ddim sample from the same
noise) and as an ONNX denoiser (ONNX Runtime computes our network; our samplers around it give our samples)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tinyruns import cli, write_run
from torchdiffusion.cli import main
from torchdiffusion.generate import generate, load_run

pytestmark = pytest.mark.usefixtures("one_thread")

needs_diffusers = pytest.mark.skipif(
    importlib.util.find_spec("diffusers") is None,
    reason="diffusers is not installed (pip install 'torchdiffusion[bench]')",
)
needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnx / onnxruntime are not installed (pip install 'torchdiffusion[onnx]')",
)


def tiny(tmp_path_factory, name, settings):
    """A tiny 8x8 eps/v/x0 run on the cosine table of T = 100 (digits-test) with jittered random weights."""
    return load_run(write_run(tmp_path_factory.mktemp(name) / "run", "digits-test", settings, (1, 8, 8)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run, diffusers folder) per parameterization (diffusers DDIM steps to t - T/n, which is the next timestep
    for leading and trailing spacing when n divides T, not for linspace: docs/interop.md)."""
    from torchdiffusion.interop.export import export

    out = {}
    for param, spacing in (("eps", "leading"), ("v", "trailing"), ("x0", "leading")):
        run = tiny(tmp_path_factory, param, [f"diffusion.parameterization={param}", f"sample.spacing={spacing}"])
        folder = tmp_path_factory.mktemp(param) / "diffusers"
        export(run, "diffusers", folder, progress=False)
        out[param] = (run, folder)
    return out


@needs_diffusers
def test_scheduler_config_is_our_process(exported):
    run, folder = exported["v"]
    cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert cfg["prediction_type"] == "sample" and cfg["num_train_timesteps"] == run.model.process.T
    assert cfg["clip_sample"] is False and cfg["timestep_spacing"] == "trailing"
    assert torch.equal(torch.tensor(cfg["trained_betas"], dtype=torch.float64), run.model.process.betas)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"] == ["torchdiffusion.interop.diffusers_out", "TorchdiffusionUNet"]


@needs_diffusers
def test_an_exported_folder_loads_back_as_its_run(exported):
    """load_run reads our own diffusers export (without diffusers): the same config, bit-identical denoiser."""
    from torchdiffusion.interop.export import probe

    run, folder = exported["v"]
    back = load_run(folder)
    assert back.config == run.config and back.data_shape == run.data_shape
    x, sigma = probe(run, 4)
    assert torch.equal(back.model(x, sigma), run.model(x, sigma))


@needs_diffusers
@pytest.mark.parametrize("param", ["eps", "v", "x0"])
def test_ddim_pipeline_samples_equal_ours(exported, param):
    """DDIMPipeline.from_pretrained(folder), 10 steps from generator seed 3, vs our ddim from the same noise."""
    from torchdiffusion.interop.diffusers_out import load_pipeline, pipeline_samples, sample_like_pipeline

    run, folder = exported[param]
    pipe = load_pipeline(folder, "ddim")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    theirs = pipeline_samples(pipe, steps=10, batch=3, seed=3)
    ours = sample_like_pipeline(run, "ddim", steps=10, batch=3, seed=3, spacing=run.config.sample.spacing)
    assert theirs.shape == ours.shape == (3, 1, 8, 8)
    assert (theirs - ours).abs().max() < 1e-4
    assert ours.std() > 0.1  # a sample, not a constant


@needs_diffusers
def test_ddpm_pipeline_samples_equal_ours(exported):
    """DDPMPipeline draws fresh noise at every step from its generator; ours draws the same, in the same order."""
    from torchdiffusion.interop.diffusers_out import load_pipeline, pipeline_samples, sample_like_pipeline

    run, folder = exported["eps"]
    pipe = load_pipeline(folder, "ddpm")
    theirs = pipeline_samples(pipe, steps=4, batch=3, seed=5)
    ours = sample_like_pipeline(run, "ddpm", steps=4, batch=3, seed=5, spacing="leading")
    assert (theirs - ours).abs().max() < 1e-4
    other = sample_like_pipeline(run, "ddpm", steps=4, batch=3, seed=6, spacing="leading")
    assert (other - ours).abs().max() > 1e-2  # the noise matters: the match is not a coincidence


class NearIdentity(torch.nn.Module):
    """F(x_in, c) = x_in + k net(x_in, c): an eps network that returns almost its input, as a trained one does at
    the top of the table (there the optimal eps_hat = x_vp + O(sqrt(abar_T)))."""

    def __init__(self, net: torch.nn.Module, k: float):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x_in, c_noise, cond=None):
        return x_in + self.k * self.net(x_in, c_noise, cond)


@needs_diffusers
def test_ddim_pipeline_equals_ours_where_abar_T_is_near_zero(tmp_path):
    """The 1000-step cosine table (abar_T = 2.4e-9, sigma_T = 2e4) at trailing spacing, whose first step is at
    t = T - 1: x0_hat = x - sigma_T eps_hat cancels to O(1) from terms of size 2e4. Both sides must keep those
    digits: the exported network returns x0_hat computed in float64 (diffusers' DDIM only re-derives eps from it),
    and our sampler's state is float64. A float32 state moves the samples by more than the bound."""
    from torchdiffusion.interop.diffusers_out import load_pipeline, pipeline_samples, sample_like_pipeline
    from torchdiffusion.interop.export import export

    run = load_run(write_run(tmp_path / "run", "digits-test", ["diffusion.T=1000", "sample.spacing=trailing"]))
    assert run.model.process.alpha_bars[-1] < 1e-8 and run.config.sample.clip_denoised
    export(run, "diffusers", tmp_path / "diffusers", progress=False)
    pipe = load_pipeline(tmp_path / "diffusers", "ddim")
    k = 1 / run.model.process.sigma_max  # x0_hat at t = T - 1 is then O(1): most of it is not clamped
    run.model.net = NearIdentity(run.model.net, k)
    pipe.unet.denoiser.net = NearIdentity(pipe.unet.denoiser.net, k)
    theirs = pipeline_samples(pipe, steps=10, batch=8, seed=3)
    ours = sample_like_pipeline(run, "ddim", steps=10, batch=8, seed=3, spacing="trailing")
    assert (theirs - ours).abs().max() < 1e-4
    assert (ours.abs() < 0.99).float().mean() > 0.5  # not a comparison of clamped values
    ours32 = sample_like_pipeline(run, "ddim", steps=10, batch=8, seed=3, spacing="trailing", dtype=torch.float32)
    assert (theirs - ours32).abs().max() > 1e-4  # the case is sensitive to float32 rounding of the state


@pytest.fixture(scope="module", params=[(1, 0), (2, 0), (2, 3)], ids=["unet", "space-to-depth", "class"])
def onnx_run(tmp_path_factory, request):
    from torchdiffusion.interop.export import export

    # The linear table (sigma_max = 1.6): most samples stay inside [-1, 1], so the comparison is not of clamped
    # values. (On the cosine table, sigma_max = 2029 multiplies float32 rounding: heun's samples differ by 1e-4
    # between two batch sizes in PyTorch alone.) Also with the pixel unshuffle / shuffle of model.space_to_depth,
    # and class-conditional as the demo preset is (3 classes, sampled at seed mod 3).
    settings = ["diffusion.schedule=linear", "sample.sampler=ddim", "sample.steps=6", "sample.grid=uniform_t"]
    s2d, K = request.param
    settings += [f"model.space_to_depth={s2d}", f"model.num_classes={K}"]
    settings += ["sample.labels=cycle"] if K else []
    run = tiny(tmp_path_factory, "onnx", settings)
    assert run.config.model.space_to_depth == s2d and run.config.model.num_classes == K
    folder = tmp_path_factory.mktemp("onnx") / "export"
    export(run, "onnx", folder, progress=False)
    return run, folder


@needs_onnx
@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_network_equals_pytorch(onnx_run, batch):
    from torchdiffusion.interop.export import probe

    run, folder = onnx_run
    loaded = load_run(folder)  # load_run reads an ONNX export as a run
    x_in, c_noise = probe(run, batch, seed=10 + batch)
    F_onnx, F_torch = loaded.model.net(x_in, c_noise), run.model.net(x_in, c_noise)
    assert F_onnx.shape == F_torch.shape == (batch, 1, 8, 8)
    assert (F_onnx - F_torch).abs().max() < 1e-4
    assert F_torch.abs().max() > 1e-2
    K = run.config.model.num_classes
    if K:  # each class, and a dropped one (the null class), as the PyTorch network reads them
        labels = torch.arange(batch) % K
        for cond in ({"class": labels}, {"class": labels, "drop": torch.arange(batch) % 2 == 0}):
            F_onnx, F_torch = loaded.model.net(x_in, c_noise, cond), run.model.net(x_in, c_noise, cond)
            assert (F_onnx - F_torch).abs().max() < 1e-4
        assert (run.model.net(x_in, c_noise, {"class": labels}) - run.model.net(x_in, c_noise)).abs().max() > 1e-3
        with pytest.raises(ValueError, match="class labels must be in"):
            loaded.model.net(x_in, c_noise, {"class": labels + K})
        with pytest.raises(ValueError, match="no context conditioning"):
            loaded.model.net(x_in, c_noise, {"context": torch.zeros(batch, 2)})


@needs_onnx
@pytest.mark.parametrize("sampler", ["ddim", "heun"])
def test_samples_through_onnx_equal_pytorch(onnx_run, sampler):
    from dataclasses import replace

    run, folder = onnx_run
    loaded = load_run(folder / "denoiser.onnx")  # the file alone carries its config
    assert loaded.config == run.config and loaded.data_shape == run.data_shape
    sample = replace(run.config.sample, sampler=sampler, batch_size=3)
    ours = generate(run.model, range(5), sample, run.data_shape)
    theirs = generate(loaded.model, range(5), sample, loaded.data_shape)
    assert (ours - theirs).abs().max() < 1e-4
    assert (ours.abs() < 0.99).float().mean() > 0.3  # not a comparison of clamped values
    if run.config.model.num_classes:  # classifier-free guidance: the class and the null class through the graph
        guided = replace(sample, guidance=2.0)
        ours_g = generate(run.model, range(5), guided, run.data_shape)
        assert (ours_g - generate(loaded.model, range(5), guided, loaded.data_shape)).abs().max() < 1e-4
        assert (ours_g - ours).abs().max() > 1e-3


@needs_onnx
def test_export_cli_and_sample_from_the_onnx_folder(tmp_path):
    """The command end to end: export, then sample from the export like from a run."""
    run = write_run(tmp_path / "run", "digits-test", ["sample.steps=2"], (1, 8, 8))
    rc, out, err = cli("export", run, "--format", "onnx", "--out", tmp_path / "onnx")
    assert rc == 0, err[-2000:]
    assert "max |F_onnx - F_torch|" in out and not list(tmp_path.glob(".*tmp*"))
    from torchdiffusion.provenance import artefact_digest, read_manifest

    m = read_manifest(tmp_path / "onnx.manifest.json")  # the folder is one artefact, its manifest beside it
    assert m["artefact"]["sha256"] == artefact_digest(tmp_path / "onnx")[0] and m["run"]["id"] == "run"
    first = (tmp_path / "onnx" / "denoiser.onnx").stat().st_ino
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0  # replaces it
    assert (tmp_path / "onnx" / "denoiser.onnx").stat().st_ino != first and not list(tmp_path.glob(".*tmp*"))
    rc, out, err = cli("sample", tmp_path / "onnx", "--n", "2", "--sampler", "ddim")
    assert rc == 0, err[-2000:]
    assert (tmp_path / "onnx" / "samples" / "ddim-2-seed0.png").is_file()
    rc, out, err = cli("sample", tmp_path / "onnx", "--n", "2", "--precision", "bf16", "--out", tmp_path / "b.png")
    assert rc == 2 and "is an ONNX export: onnxruntime runs it in the precision" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b.png").exists()  # torch's autocast would change nothing there
    # now the folder holds more than an export: replacing it would delete the samples, so a new export is refused
    rc, out, err = cli("export", run, "--format", "onnx", "--out", tmp_path / "onnx")
    assert rc == 2 and "holds an earlier export and other files (samples/ddim-2-seed0.json)" in err, err
    assert (tmp_path / "onnx" / "samples" / "ddim-2-seed0.png").is_file()


@needs_onnx
def test_an_onnx_export_is_refused_where_a_pytorch_network_is_needed_and_its_samples_reproduce(tmp_path, capsys):
    """An ONNX export samples like a run; what needs its PyTorch weights (export again, distil from it, --weights
    model) is one line and writes nothing; and a picture drawn from it reproduces bit for bit."""
    run = write_run(tmp_path / "run", "digits-test", ["sample.steps=2"], (1, 8, 8))
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    onnx = str(tmp_path / "onnx")
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for argv, says in (
        (["export", onnx, "--format", "onnx", "--out", str(tmp_path / "again")], "is an ONNX export"),
        (["export", onnx, "--format", "diffusers", "--out", str(tmp_path / "again")], "is an ONNX export"),
        (["distill", onnx, "--method", "progressive", "--steps", "2", "--images", "16", "--out", str(tmp_path / "s")],
         "is an ONNX export"),
        (["sample", onnx, "--n", "2", "--weights", "model", "--out", str(tmp_path / "w.png")], "holding one network"),
    ):  # fmt: skip
        assert says in _refused(capsys, argv)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, argv
    png = tmp_path / "o.png"
    assert main(["sample", onnx, "--n", "2", "--steps", "2", "--out", str(png)]) == 0
    capsys.readouterr()
    assert main(["reproduce", str(png) + ".manifest.json"]) == 0
    assert capsys.readouterr().out.startswith("o.png: bit-identical")


def _refused(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_run(root / "demo", "digits-test", [], (1, 8, 8))
    write_run(root / "edm", "mnist-edm", ["model.channels=8", "model.channel_mult=1,2", "model.groups=4"], (1, 8, 8))
    write_run(root / "toy", "toy-2d", ["model.mlp_width=8"], (2,))
    write_run(root / "context", "digits-test", ["model.context_dim=3"], (1, 8, 8))
    (root / "a-file").write_text("x")
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("x")
    return root


@pytest.mark.parametrize(
    "case,fmt,out,says",
    [
        pytest.param("edm", "diffusers", "new", "continuous sigma", marks=needs_diffusers),
        pytest.param("toy", "diffusers", "new", "continuous sigma", marks=needs_diffusers),
        pytest.param("context", "onnx", "new", "context- or text-conditioned run", marks=needs_onnx),
        ("demo", "onnx", "a-file", "a-file"),
        ("demo", "diffusers", "full", "holds other files"),
        ("demo", "zip", "new", "invalid choice: 'zip'"),
        ("missing", "onnx", "new", "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(runs, capsys, case, fmt, out, says):
    before = sorted(p.name for p in runs.rglob("*"))
    line = _refused(capsys, ["export", str(runs / case), "--format", fmt, "--out", str(runs / out)])
    assert line.startswith("torchdiffusion export: error:") and says in line, line
    assert sorted(p.name for p in runs.rglob("*")) == before  # nothing written, nothing removed


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    """Few-step students of a tiny digits teacher: {method: run folder} (progressive: 2 DDIM steps on its halved
    grid; consistency: 2 multistep consistency steps on its levels)."""
    root = tmp_path_factory.mktemp("students")
    teacher = write_run(root / "teacher", "digits-test", [], (1, 8, 8))
    tiny = ["--images", "64", "--batch-size", "32", "--no-progress", "--steps", "2"]
    out = {}
    for method, extra in (("progressive", ["--teacher-steps", "4"]), ("consistency", [])):
        out[method] = root / method
        rc, _, err = cli("distill", teacher, "--method", method, *extra, "--out", out[method], *tiny)
        assert rc == 0, err[-2000:]
    return out


@needs_diffusers
@pytest.mark.parametrize("method", ["progressive", "consistency"])
def test_a_student_is_refused_as_a_diffusers_pipeline(students, tmp_path, capsys, method):
    """A diffusers pipeline of a few-step student stepped it as an ordinary 100-step model on the scheduler's
    timesteps: refused in one line naming the ONNX export, nothing written."""
    line = _refused(capsys, ["export", str(students[method]), "--format", "diffusers", "--out", str(tmp_path / "d")])
    assert "is a student distilled" in line and "at most 2 steps" in line and "--format onnx" in line, line
    assert not list(tmp_path.iterdir())


@needs_diffusers
def test_a_consistency_trained_model_is_refused_as_a_diffusers_pipeline(tmp_path, capsys):
    """A consistency model trained from scratch on the discrete process was written as a DDPM pipeline, whose
    scheduler takes the network for a denoiser; refused in one line naming the ONNX export, nothing written."""
    run = tmp_path / "ct"
    sets = ["--set", "train.images=32", "--set", "train.batch_size=16", "--set", "model.channels=8"]
    rc, _, err = cli(
        "train", "--preset", "digits-test", "--objective", "consistency", *sets, "--no-progress", "--out", run
    )
    assert rc == 0, err
    out = tmp_path / "d"
    line = _refused(capsys, ["export", str(run), "--format", "diffusers", "--out", str(out)])
    assert "is a consistency model" in line and "--format onnx" in line, line
    assert not out.exists()


@needs_onnx
@pytest.mark.parametrize("method", ["progressive", "consistency"])
def test_the_onnx_export_of_a_student_samples_as_the_student(students, tmp_path, method):
    """The export kept the student's config (sample.grid = tuned) but not its grids/, so sampling it with its own
    settings was refused ("no grid tuned for ddim at 2 steps"): the grids travel along, named in the manifest, and
    the export's samples are the student's."""
    from torchdiffusion.interop.export import foreign_files
    from torchdiffusion.provenance import read_manifest

    run, onnx = students[method], tmp_path / "onnx"
    rc, _, err = cli("export", run, "--format", "onnx", "--out", onnx)
    assert rc == 0, err[-2000:]
    grids = sorted(p.name for p in (run / "grids").glob("*.json"))
    assert sorted(p.name for p in (onnx / "grids").glob("*.json")) == grids and foreign_files(onnx) == []
    inputs = read_manifest(tmp_path / "onnx.manifest.json")["inputs"]
    assert sorted(Path(p).name for p in inputs) == grids
    for steps in ("1", "2") if method == "consistency" else ("2",):
        for where, png in ((run, tmp_path / f"run{steps}.png"), (onnx, tmp_path / f"onnx{steps}.png")):
            rc, _, err = cli("sample", where, "--n", "4", "--steps", steps, "--out", png)
            assert rc == 0, err[-2000:]
        assert (tmp_path / f"run{steps}.png").read_bytes() == (tmp_path / f"onnx{steps}.png").read_bytes()
    assert main(["export", str(run), "--format", "onnx", "--out", str(onnx)]) == 0  # replaces its own export


@needs_onnx
def test_the_onnx_export_carries_the_tuned_grids_that_grid_auto_samples_on(tmp_path):
    """sample.grid = auto (the default) samples on a tuned grid of the run's grids/ whenever one matches the sampler
    and steps: the export left them behind (it copied them only under grid = tuned), and sampled on another grid."""
    from torchdiffusion.samplers.optimize_grid import grid_path, save_grid

    run = write_run(tmp_path / "run", "digits-test", ["sample.grid=auto"])
    save_grid(grid_path(run, "dpmpp_2m", 3), torch.tensor([20.0, 3.0, 0.4, 0.0], dtype=torch.float64), {})
    onnx = tmp_path / "onnx"
    rc, _, err = cli("export", run, "--format", "onnx", "--out", onnx)
    assert rc == 0, err[-2000:]
    assert (onnx / "grids" / "dpmpp_2m-nfe3.json").is_file()
    pngs = []
    for where in (run, onnx):
        pngs.append(tmp_path / f"{where.name}.png")
        rc, _, err = cli("sample", where, "--sampler", "dpmpp_2m", "--steps", "3", "--n", "2", "--out", pngs[-1])
        assert rc == 0, err[-2000:]
        assert json.loads(pngs[-1].with_suffix(".json").read_text())["grid_used"]["grid"] == "tuned"
    assert pngs[0].read_bytes() == pngs[1].read_bytes()


def test_a_damaged_onnx_file_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf")
    line = _refused(capsys, ["sample", str(tmp_path / "bad.onnx"), "--n", "1"])
    assert "bad.onnx" in line and ("not a readable ONNX model" in line or "'onnx' extra" in line), line


def test_files_an_export_does_not_write_are_foreign_at_any_depth(tmp_path):
    """A new export replaces an earlier one whole: a note inside its unet/ folder (not only beside it) is the user's
    and must stop the replacement."""
    from torchdiffusion.interop.export import EXPORT_FILES, foreign_files

    for name in EXPORT_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert foreign_files(tmp_path) == []
    (tmp_path / "unet" / "NOTES.md").write_text("mine\n")
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "a.png").write_bytes(b"png")
    assert foreign_files(tmp_path) == [tmp_path / "samples" / "a.png", tmp_path / "unet" / "NOTES.md"]
