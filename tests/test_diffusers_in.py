"""diffusers model folders loaded by load_run: our ddim on them equals diffusers' DDIM, our euler its Euler
(scripts/diffusers_equivalence.py holds the cases), the grid visits the scheduler's own timesteps, and every bad
folder is one line (exit 2 from the CLI).
"""

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers", reason="the 'bench' extra (diffusers) is not installed")

from tinyruns import cli, equivalence_script, td  # noqa: E402
from torchdiffusion.generate import RunError, clamps_x0, load_run, make_grid_sigmas  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


EQ = equivalence_script()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One save_pretrained pipeline folder per case of the script."""
    root = tmp_path_factory.mktemp("diffusers")
    return {case: EQ.make_folder(root / f"case{k}", case) for k, case in enumerate(EQ.CASES)}


@pytest.mark.parametrize("case", [c for c in EQ.CASES if c != "eps, full range"])
def test_sampling_equals_diffusers(folders, case):
    """10 steps of DDIM (eta = 0; Euler for linspace) from the same point: ours == diffusers' within 1e-5 (fp32)."""
    x_T, ref = EQ.diffusers_sample(folders[case], case)
    ours = EQ.ours_sample(folders[case], case, x_T)
    assert ref.abs().max() > 0.1  # a real sample, not a collapsed one
    assert (ours - ref).abs().max() <= 1e-5


def test_ddim_equals_diffusers_on_a_full_range_schedule(folders):
    """The standard linear schedule: samples of size ~200, equal to float32 rounding (relative 2e-6)."""
    case = "eps, full range"
    x_T, ref = EQ.diffusers_sample(folders[case], case)
    ours = EQ.ours_sample(folders[case], case, x_T)
    assert (ours - ref).abs().max() <= 2e-6 * ref.abs().max()


def test_class_labels_change_the_sample(folders):
    """The labels reach the network: two classes from the same noise give different samples."""
    run = load_run(folders["class (UNet2DModel)"])
    x = torch.randn(2, 1, 8, 8) * 10
    sigma = torch.full((2,), 10.0)
    a = run.model(x, sigma, {"class": torch.tensor([0, 0])})
    b = run.model(x, sigma, {"class": torch.tensor([0, 3])})
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
def test_grid_visits_the_schedulers_timesteps(tmp_path, spacing, offset):
    """The run's uniform_t grid at n steps is sigma at exactly the timesteps DDIMScheduler.set_timesteps(n) picks."""
    import diffusers

    sched = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=offset, beta_schedule="squaredcos_cap_v2")
    folder = EQ.make_folder(tmp_path / "eps", "eps")
    sched.save_config(folder / "scheduler")
    run = load_run(folder)
    assert run.config.sample.spacing == spacing and run.config.diffusion.schedule == "cosine"
    for n in (1, 7, 10, 50):
        sched.set_timesteps(n)
        sigmas = make_grid_sigmas(
            run.model, run.config.sample, n, clamped=clamps_x0(run.config.sample, run.data_shape, run.codec)
        )
        assert sigmas[-1] == 0 and torch.equal(
            run.model.process.sigma_to_t(sigmas[:-1]).round().long(), sched.timesteps
        )
        assert torch.allclose(sigmas[:-1], run.model.process.sigmas[sched.timesteps], rtol=1e-12)
    ab = run.model.process.alpha_bars
    assert torch.equal(ab, sched.alphas_cumprod.double())  # the scheduler's own table, not a recomputed one


def test_loaded_run_describes_the_model(folders):
    run = load_run(folders["class (UNet2DConditionModel)"])
    cfg = run.config
    assert run.kind == "image" and run.data_shape == (1, 8, 8)
    assert cfg.model.num_classes == 4 and cfg.diffusion.parameterization == "x0" and cfg.diffusion.T == 1000
    assert (cfg.sample.sampler, cfg.sample.grid, cfg.sample.spacing) == ("ddim", "uniform_t", "leading")
    assert run.info["source"] == "diffusers" and run.info["unet"]["class"] == "UNet2DConditionModel"
    assert run.info["scheduler"]["class"] == "DDIMScheduler" and run.model.process.steps_offset == 1
    assert not run.model.training and not any(p.requires_grad for p in run.model.parameters())


def test_bare_unet_folder_loads_like_the_pipeline(folders, tmp_path):
    """A unet folder with scheduler_config.json beside it, and a pipeline's unet/ subfolder, give the same model."""
    import shutil

    src = folders["v"]
    bare = tmp_path / "bare"
    shutil.copytree(src / "unet", bare)
    shutil.copy(src / "scheduler" / "scheduler_config.json", bare)
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 20.0])
    ref = load_run(src).model(x, sigma)
    assert torch.equal(load_run(bare).model(x, sigma), ref)
    assert torch.equal(load_run(src / "unet").model(x, sigma), ref)


def _edit(path: Path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def _drop(path: Path, key: str):
    d = json.loads(path.read_text())
    del d[key]
    path.write_text(json.dumps(d))


BAD = {
    "unet config missing": (lambda f: (f / "unet" / "config.json").unlink(), "config.json is missing"),
    "sample_size absent": (lambda f: _drop(f / "unet" / "config.json", "sample_size"), "no sample_size"),
    "sample_size not a size": (lambda f: _edit(f / "unet" / "config.json", sample_size="8"), "sample_size must be"),
    "latent pipeline": (
        lambda f: _edit(f / "model_index.json", vqvae=["diffusers", "VQModel"]),
        "only pixel-space U-Net pipelines are supported",
    ),
    "weights missing": (
        lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
        "diffusion_pytorch_model.safetensors is missing",
    ),
    "channels of the config not those of the weights": (
        lambda f: _edit(f / "unet" / "config.json", in_channels=3, out_channels=3),
        "the weights do not fit the model its config.json describes",
    ),
    "damaged unet config": (lambda f: (f / "unet" / "config.json").write_text("{"), "not readable JSON"),
    "scheduler config missing": (
        lambda f: (f / "scheduler" / "scheduler_config.json").unlink(),
        "has no scheduler config",
    ),
    "unsupported scheduler": (
        lambda f: _edit(f / "scheduler" / "scheduler_config.json", _class_name="ScoreSdeVeScheduler"),
        "scheduler 'ScoreSdeVeScheduler' is not supported",
    ),
    "unsupported prediction type": (
        lambda f: _edit(f / "scheduler" / "scheduler_config.json", prediction_type="flow"),
        "prediction_type 'flow' is not supported",
    ),
    "unknown beta schedule": (
        lambda f: _edit(f / "scheduler" / "scheduler_config.json", beta_schedule="zigzag"),
        "is not a usable DDIMScheduler config",
    ),
    "dynamic thresholding": (
        lambda f: _edit(f / "scheduler" / "scheduler_config.json", thresholding=True),
        "thresholding=True (dynamic thresholding of x0_hat) is not supported",
    ),
    "clip range not 1": (
        lambda f: _edit(f / "scheduler" / "scheduler_config.json", clip_sample=True, clip_sample_range=2.0),
        "clip_sample_range=2.0 is not supported",
    ),
    "unsupported model class": (
        lambda f: _edit(f / "unet" / "config.json", _class_name="UNet1DModel"),
        "model class 'UNet1DModel' is not supported",
    ),
    "text model": (
        lambda f: _edit(
            f / "unet" / "config.json", _class_name="UNet2DConditionModel", mid_block_type="UNetMidBlock2DCrossAttn"
        ),
        "takes text embeddings",
    ),
}


@pytest.fixture
def bad_folder(folders, tmp_path):
    import shutil

    def make(name):
        f = tmp_path / name.replace(" ", "_")
        shutil.copytree(folders["eps"], f)
        BAD[name][0](f)
        return f

    return make


@pytest.mark.parametrize("name", BAD)
def test_bad_folder_is_one_line(bad_folder, name):
    with pytest.raises(RunError) as e:
        load_run(bad_folder(name))
    msg = str(e.value)
    assert BAD[name][1] in msg and "\n" not in msg


@pytest.mark.parametrize(
    "name",
    [
        "unet config missing",
        "scheduler config missing",
        "channels of the config not those of the weights",
        "unsupported scheduler",
        "unsupported prediction type",
    ],
)
def test_cli_bad_folder_exits_2_with_one_line(bad_folder, tmp_path, name):
    """One line on stderr, exit 2, no traceback, no picture: the first case in a real subprocess (what a user
    runs), the others through the same ``main`` in this process (each subprocess spends seconds importing)."""
    run = td if name == "unet config missing" else cli
    rc, out, err = run("sample", bad_folder(name), "--n", "2", "--steps", "2", "--out", tmp_path / "x.png")
    assert rc == 2 and BAD[name][1] in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()


def test_cli_samples_a_diffusers_folder(folders, tmp_path):
    """sample with --class on a class-conditional folder, in a real subprocess."""
    f = folders["class (UNet2DModel)"]
    rc, out, err = td("sample", f, "--class", "1,2", "--n", "2", "--steps", "3", "--out", tmp_path / "s.png")
    assert rc == 0 and (tmp_path / "s.png").is_file(), err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["sample", "{class}", "--n", "2", "--steps", "2"], "give class labels (--class)"),
        (["sample", "{class}", "--class", "1", "--guidance", "3", "--n", "2", "--steps", "2"], "no unconditional"),
        (["interpolate", "{weights missing}", "--steps", "2"], "diffusion_pytorch_model.safetensors is missing"),
        (["inpaint", "{class}", "--class", "1", "--steps", "2"], "records no data of its own to edit"),
        (["img2img", "{class}", "--class", "1", "--steps", "2"], "(a diffusers model folder): give --images"),
        # its scheduler's noise table is its own: an ONNX export rebuilt another, a diffusers one crashed
        (["export", "{class}", "--format", "onnx"], "is a diffusers pipeline folder already"),
        (["export", "{class}", "--format", "diffusers"], "is a diffusers pipeline folder already"),
    ],
)
def test_cli_refusals_are_one_line(folders, bad_folder, tmp_path, capsys, argv, needle):
    from torchdiffusion.cli import main

    where = {"{class}": folders["class (UNet2DModel)"], "{weights missing}": bad_folder("weights missing")}
    argv = [str(where.get(a, a)) for a in argv] + ["--out", str(tmp_path / "x.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists(), err


def test_missing_diffusers_names_the_extra(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(RunError, match=r"pip install 'torchdiffusion\[bench\]'"):
        load_run(folders["eps"])


def test_float64_input_runs_at_the_networks_precision(folders):
    """Callers that hand the denoiser float64 (diffusers' schedulers in bench-samplers) get the float32 answer."""
    model = load_run(folders["v"]).model
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 20.0])
    assert torch.allclose(model(x.double(), sigma.double()).float(), model(x, sigma), atol=1e-5)


def test_samples_carry_a_manifest_that_reproduces(folders, tmp_path, capsys):
    """The manifest names the folder and the U-Net's weights with their sha256; reproduce is bit-identical."""
    from torchdiffusion.cli import main

    out = tmp_path / "s.png"
    assert main(["sample", str(folders["eps"]), "--n", "2", "--steps", "2", "--out", str(out)]) == 0
    rec = json.loads((tmp_path / "s.png.manifest.json").read_text())["run"]
    assert rec["path"] == str(folders["eps"].resolve()) and rec["source"] == "diffusers"
    assert rec["weights_file"] == "unet/diffusion_pytorch_model.safetensors" and len(rec["weights_sha256"]) == 64
    capsys.readouterr()
    assert main(["reproduce", str(tmp_path / "s.png.manifest.json")]) == 0
    assert "bit-identical" in capsys.readouterr().out


def test_samples_of_our_diffusers_export_reproduce(tmp_path, capsys):
    """A run exported to diffusers and sampled from the export: reproduce finds the export's config and weights."""
    from tinyruns import write_run
    from torchdiffusion.cli import main

    run = write_run(tmp_path / "run", "digits-test", [], (1, 8, 8))
    assert main(["export", str(run), "--format", "diffusers", "--out", str(tmp_path / "exported")]) == 0
    assert (
        main(["sample", str(tmp_path / "exported"), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.png")]) == 0
    )
    capsys.readouterr()
    assert main(["reproduce", str(tmp_path / "s.png.manifest.json")]) == 0
    assert "bit-identical" in capsys.readouterr().out


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_a_ddpm_folder_samples_with_every_kind_of_sampler(tmp_path, variance_type):
    """A DDPMPipeline folder samples with its scheduler's variance by default (sample.settings.variance), and with
    any other sampler asked for - which does not take that setting - at that sampler's own defaults."""
    import diffusers

    folder = tmp_path / "ddpm"
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=100, beta_end=0.002, variance_type=variance_type)
    diffusers.DDPMPipeline(unet=EQ.make_unet("UNet2DModel", 0), scheduler=scheduler).save_pretrained(folder)
    assert load_run(folder).config.sample.settings.variance == {"fixed_small": "posterior"}.get(variance_type, "beta")
    for flags in ([], ["--sampler", "ddim", "--grid", "uniform_t"], ["--sampler", "dpmpp_2m"], ["--sampler", "heun"]):
        out = tmp_path / f"{'-'.join(flags) or 'default'}.png"
        rc, _, err = cli("sample", folder, *flags, "--n", "2", "--steps", "3", "--out", out)
        meta = json.loads(out.with_suffix(".json").read_text())
        want = None if flags else load_run(folder).config.sample.settings.variance
        assert rc == 0 and meta["sample"]["settings"]["variance"] == want, err
