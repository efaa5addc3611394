"""Sampler settings, tuned grids and the sampler benchmark from the command line, on tiny run folders.

Commands go through the CLI's ``main`` in this process (``tinyruns.cli``: the same parsing, code and one-line errors
as ``python -m torchdiffusion``, without a torch import each)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tinyruns import cli, write_run
from torchdiffusion.cli import main
from torchdiffusion.config import SampleConfig
from torchdiffusion.generate import clamps_x0, load_run, make_grid_sigmas
from torchdiffusion.process import DiscreteVP
from torchdiffusion.schedules import DISCRETE_SIGMA_MAX

TINY = ("digits-test", ["sample.steps=3", "sample.n=4", "sample.sampler=euler"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("samplers") / "run", *TINY)


def _sample(run, tmp_path, tag, *flags):
    out = tmp_path / f"{tag}.png"
    assert main(list(map(str, ["sample", run, "--n", 4, "--steps", 3, "--out", out, "--save-npy", *flags]))) == 0
    return np.load(out.with_suffix(".npy")), json.loads(out.with_suffix(".json").read_text())


def test_sampler_settings_reach_every_sampler(run, tmp_path):
    a, _ = _sample(run, tmp_path, "eta0", "--sampler", "dpmpp_2m_sde", "--eta", 0)
    b, meta = _sample(run, tmp_path, "eta1", "--sampler", "dpmpp_2m_sde", "--eta", 1)
    assert meta["sample"]["settings"]["eta"] == 1.0
    assert not np.array_equal(a, b)  # --eta changes a sampler other than ddim
    c, _ = _sample(run, tmp_path, "plain", "--sampler", "dpmpp_2m")
    assert np.array_equal(a, c)  # dpmpp_2m_sde at eta 0 is dpmpp_2m: one sampler, a named setting
    d, _ = _sample(run, tmp_path, "churn", "--sampler", "heun", "--set", "sample.settings.s_churn=20")
    e, _ = _sample(run, tmp_path, "churn-flag", "--sampler", "heun", "--s-churn", 20)
    f, _ = _sample(run, tmp_path, "heun", "--sampler", "heun")
    assert np.array_equal(d, e) and not np.array_equal(d, f)
    g, meta = _sample(run, tmp_path, "lang", "--sampler", "langevin", "--steps-per-level", 2)
    assert meta["nfe"] == 3 * 2 + 1
    code, out, err = cli("sample", run, "--sampler", "heun", "--eta", 0.5)
    assert code == 2 and "has no setting 'eta'" in err and len(err.strip().splitlines()) == 1


def test_a_run_saved_with_the_old_eta_field_keeps_it(run, tmp_path):
    old = write_run(tmp_path / "old", *TINY)
    cfg = json.loads((old / "config.json").read_text())
    cfg["sample"].pop("settings")
    cfg["sample"].update(sampler="ddim", eta=0.5)
    (old / "config.json").write_text(json.dumps(cfg))
    assert load_run(old).config.sample.settings.eta == 0.5


def test_another_sampler_leaves_the_settings_of_the_runs_own(tmp_path):
    """A run whose config sets its sampler's settings (ddim at eta 0.5) sampled with --sampler heun: heun runs at its
    defaults (the same samples as a run without those settings), and the run's own sampler keeps them; a setting
    given on the command line is kept and named when the sampler does not take it."""
    own = write_run(tmp_path / "own", "digits-test", [*TINY[1][:2], "sample.sampler=ddim", "sample.settings.eta=0.5"])
    plain = write_run(tmp_path / "plain", *TINY)
    for run, tag in [(own, "own"), (plain, "plain")]:
        x, meta = _sample(run, tmp_path, f"{tag}-heun", "--sampler", "heun")
        assert meta["sample"]["settings"]["eta"] is None, tag
        if tag == "own":
            heun_own = x
    assert np.array_equal(heun_own, x)  # the runs share their weights (write_run's seed): heun at its defaults
    _, meta = _sample(own, tmp_path, "own-ddim", "--sampler", "ddim")
    assert meta["sample"]["settings"]["eta"] == 0.5
    _, meta = _sample(own, tmp_path, "own-sde", "--sampler", "dpmpp_2m_sde")  # it takes eta: the run's value stays
    assert meta["sample"]["settings"]["eta"] == 0.5
    for flags in (["--eta", "0.5"], ["--set", "sample.settings.eta=0.5"]):
        code, _, err = cli("sample", own, "--sampler", "heun", *flags, "--out", tmp_path / "x.png")
        assert code == 2 and "has no setting 'eta'" in err and len(err.strip().splitlines()) == 1, err
    evaluate = ["evaluate", own, "--metrics", "fd", "--features", "raw", "--n", "4", "--steps", "2"]
    rc, _, err = cli(*evaluate, "--sampler", "heun", "--out", tmp_path / "e")
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert rc == 0 and report["sampling"]["sampler"] == "heun" and "settings" not in report["sampling"], err


def test_list_samplers_shows_settings_defaults_and_whole_descriptions():
    code, out, _ = cli("sample", "--list-samplers")
    assert code == 0
    text = " ".join(out.split())
    assert "langevin Annealed Langevin dynamics" in text and "--steps-per-level 3, --step-lr 1.0" in text
    assert "inside [s_tmin, s_tmax]." in text  # heun_sde's description, to its last word
    assert "--s-churn 40.0, --s-tmin 0.05, --s-tmax 50.0, --s-noise 1.003" in text
    assert "dpmpp_2m_exact" in text and "dpmpp_2s_sde" in text
    # heun's s_tmax default is infinite: listed as what leaving it out gives ('--s-tmax inf' could not be typed)
    assert "--s-tmax unset (no upper end)" in text and "--s-tmax inf" not in text
    rc, _, err = cli("sample", "r", "--rho", "inf")
    assert rc == 2 and "must be a finite number in (0, inf)," in err, err  # it said "(0, inf]"


def test_every_listed_setting_can_be_set():
    """Each setting --list-samplers advertises is a SamplerSettings field (sample.settings.<name>) and a flag of
    sample's (adaptive's h_init and max_steps were listed but could be set neither way)."""
    import dataclasses

    from torchdiffusion.commands.sample import add_arguments
    from torchdiffusion.config import SamplerSettings
    from torchdiffusion.samplers import SAMPLERS, sampler_settings

    fields = {f.name for f in dataclasses.fields(SamplerSettings)}
    parser = __import__("argparse").ArgumentParser()
    add_arguments(parser)
    flags = {o for a in parser._actions for o in a.option_strings}
    for name in SAMPLERS:
        for setting in sampler_settings(name):
            assert setting in fields, (name, setting)
            assert "--" + setting.replace("_", "-") in flags, (name, setting)


def test_the_samplers_page_lists_every_sampler_with_its_settings():
    """docs/samplers.md's table (what --list-samplers prints, for readers): a row for every sampler, naming each
    setting it takes."""
    import re
    from pathlib import Path

    from torchdiffusion.samplers import SAMPLERS, sampler_settings

    page = (Path(__file__).parents[1] / "docs" / "samplers.md").read_text()
    table = page.split("| name | method | settings (default) | NFE on n steps |\n")[1].split("\n\n")[0]
    rows = {}
    for line in table.splitlines():
        cells = line.split(" | ")
        if line.startswith("| `") and len(cells) == 4:
            for name in re.findall(r"`(\w+)`", cells[0]):
                rows[name] = cells[2]
    for name in SAMPLERS:
        assert name in rows, name
        for setting in sampler_settings(name):
            assert f"`{setting}`" in rows[name], (name, setting)


def test_sample_uses_the_tuned_grid_bench_samplers_fitted(run, tmp_path):
    code, _, err = cli(
        "sample", run, "--grid", "tuned", "--steps", 3, "--sampler", "euler", "--out", tmp_path / "x.png"
    )
    assert code == 2 and "no grid tuned for euler at 3 steps" in err
    args = ["--run", run, "--samplers", "euler", "--tuned-samplers", "euler", "--grids", "tuned", "--nfe", 3]
    args += ["--n", 4, "--no-diffusers", "--tune-maxfev", 4, "--fit-n", 8, "--ref-steps", 3]
    code, _, err = cli("bench-samplers", *args, "--out", tmp_path / "bench")
    assert code == 0, err
    fitted = json.loads((run / "grids" / "euler-nfe3.json").read_text())
    assert fitted["objective"] == "rms error to the accurate ODE solution"  # images (clamped): each path, by default
    grid = fitted["sigmas"]
    a, meta = _sample(run, tmp_path, "tuned", "--grid", "tuned", "--sampler", "euler")
    b, _ = _sample(run, tmp_path, "karras", "--grid", "karras", "--sampler", "euler")
    assert meta["sample"]["grid"] == "tuned" and len(grid) == 4 and not np.array_equal(a, b)
    # grid auto (the default of new runs) takes the tuned grid when one matches, and the JSON says which it used
    c, meta_auto = _sample(run, tmp_path, "auto", "--grid", "auto", "--sampler", "euler")
    assert np.array_equal(a, c) and meta_auto["grid_used"]["grid"] == "tuned"
    assert meta_auto["grid_used"]["path"].endswith("euler-nfe3.json") and meta_auto["grid_used"]["sigmas"] == grid
    _, meta_k = _sample(run, tmp_path, "karras-meta", "--grid", "karras", "--sampler", "euler")
    assert meta_k["grid_used"]["grid"] == "karras"
    assert meta_k["grid_used"]["sigmas"][0] == pytest.approx(min(load_run(run).model.sigma_max, DISCRETE_SIGMA_MAX))
    _, meta_other = _sample(run, tmp_path, "auto-heun", "--grid", "auto", "--sampler", "heun")  # no tuned grid
    assert meta_other["grid_used"]["grid"] == "uniform_t"
    code, _, err = cli("sample", run, "--grid", "tuned", "--steps", 5, "--out", tmp_path / "y.png")
    assert code == 2 and "it has euler grids for 3 steps" in err

    # The editing commands plan their grid as `sample` does: --grid tuned reads the run's grid, auto takes it when it
    # matches; interpolate plans it for the ODE solver that walks its path (--method), not the run's sampler.
    def edit(command, tag, *flags):
        out = tmp_path / f"{command}-{tag}.png"
        code, _, err = cli(command, run, "--steps", 3, *flags, "--out", out)
        assert code == 0, err
        return np.asarray(Image.open(out))

    for command, flags in (("inpaint", ["--n", 2]), ("img2img", ["--n", 2]), ("interpolate", ["--frames", 3])):
        tuned = edit(command, "tuned", *flags, "--grid", "tuned")
        assert np.array_equal(tuned, edit(command, "auto", *flags, "--grid", "auto"))
        assert not np.array_equal(tuned, edit(command, "karras", *flags, "--grid", "karras"))
    code, _, err = cli("interpolate", run, "--steps", 3, "--method", "heun", "--grid", "tuned")
    assert code == 2 and "no grid tuned for heun at 3 steps" in err
    assert "it has none for heun; grids for euler" in err  # what the folder holds, for another sampler


def test_bench_samplers_builds_the_grids_sample_builds(run, tmp_path):
    """The benchmark's standard grids are the ones `sample --grid KIND` uses on the same model; its default
    sampler list is every sampler but adaptive (which has rows of its own)."""
    args = ["--run", run, "--grids", "karras,exponential,uniform_t", "--nfe", 4, "--n", 8, "--no-diffusers"]
    code, _, err = cli("bench-samplers", *args, "--ref-steps", 2, "--out", tmp_path / "b")
    assert code == 0, err
    rows = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    ours = [r for r in rows if r["family"] == "torchdiffusion" and r["sampler"] != "adaptive"]
    assert {"dpmpp_2s_sde", "dpmpp_2m_exact", "heun_sde", "langevin"} <= {r["sampler"] for r in ours}
    loaded = load_run(run)
    model, base = loaded.model, loaded.config.sample
    clamped = clamps_x0(base, loaded.data_shape, loaded.codec)  # as the benchmark samples the run
    for r in ours:
        steps = len(r["extra"]["sigmas"]) - 1
        expected = make_grid_sigmas(model, SampleConfig(**{**base.__dict__, "grid": r["grid"]}), steps, clamped=clamped)
        assert torch.equal(torch.tensor(r["extra"]["sigmas"], dtype=torch.float64), expected), r["sampler"]


def test_bench_samplers_analytic_case_is_sampled_as_a_linear_ddpm_model(tmp_path):
    """The analytic case's Karras rows span the linear DDPM table diffusers' schedulers see (sigma_min 0.01), capped
    at DISCRETE_SIGMA_MAX = 80 below its sigma_max of 157 as every Karras grid of a discrete model; and Annealed
    Langevin at its default settings lands near Heun's quality at a similar budget."""
    args = ["--case", "8gaussians", "--samplers", "heun,langevin", "--grids", "karras", "--nfe", 31]
    code, _, err = cli("bench-samplers", *args, "--n", 2000, "--no-diffusers", "--out", tmp_path / "a")
    assert code == 0, err
    rows = {r["sampler"]: r for r in json.loads((tmp_path / "a" / "results.json").read_text())["rows"]}
    p = DiscreteVP("linear", T=1000)
    assert p.sigma_max > DISCRETE_SIGMA_MAX
    assert rows["heun"]["extra"]["sigmas"][0] == pytest.approx(DISCRETE_SIGMA_MAX)
    assert rows["heun"]["extra"]["sigmas"][-2] == pytest.approx(p.sigma_min)
    assert rows["langevin"]["nfe"] == 31 and rows["langevin"]["sw"] < 0.15  # 31 NFE = 10 levels x 3 + 1
    assert rows["langevin"]["sw"] < 2 * rows["heun"]["sw"] + rows["reference"]["sw"]  # reference: the floor row


# A DDPM model of 2-D points (eps, cosine table): sampled as vectors, its x0_hat is never clamped.
POINTS_DDPM = [
    "diffusion.process=discrete",
    "diffusion.parameterization=eps",
    "diffusion.schedule=cosine",
    "diffusion.noise_conditioning=timestep",
    "diffusion.sigma_sampling=discrete",
    "diffusion.weighting=uniform",
    "sample.sampler=euler",
    "sample.grid=auto",
    "sample.n=4",
]


def test_sample_records_the_grid_generate_walks(tmp_path):
    """The JSON beside `sample`'s output names the grid generate() stepped through: for an unclamped DDPM model
    (points, Euler) the log-SNR grid from DISCRETE_SIGMA_MAX down to 1 / n, for a clamped image model the whole
    table as before."""
    from dataclasses import replace

    from torchdiffusion.generate import generate

    points = write_run(tmp_path / "points", "toy-2d", POINTS_DDPM, data_shape=(2,))
    image = write_run(tmp_path / "image", "digits-test", ["sample.grid=auto", "sample.n=4"])
    for folder, capped in ((points, True), (image, False)):
        _, meta = _sample(folder, tmp_path, folder.name)  # 3 steps, grid auto
        run = load_run(folder)
        seen = []
        generate(
            run.model,
            [0],
            replace(run.config.sample, steps=3),
            run.data_shape,
            callback=lambda info, seen=seen: seen.extend([info.sigma] + [info.sigma_next] * (info.i == info.n - 1)),
            grid_dir=folder / "grids",
            codec=run.codec,
        )
        used = meta["grid_used"]
        assert used["sigmas"] == seen and used["asked"] == "auto"
        assert ("sigma_cap" in used) == capped
        if capped:
            assert used["grid"] == "exponential" and used["sigma_low"] == pytest.approx(1 / 3) == used["sigmas"][-2]
            assert run.model.sigma_max > DISCRETE_SIGMA_MAX == pytest.approx(used["sigmas"][0])
        else:
            assert used["grid"] == "uniform_t" and "sigma_low" not in used
            assert used["sigmas"][0] == run.model.sigma_max > DISCRETE_SIGMA_MAX


def test_generate_stops_where_the_tuned_grid_says(tmp_path):
    """A tuned grid saved with sigma_end: sample's record names it, and generate's output is the first-order step
    from the last level to sigma_end, D + (sigma_end / sigma_{n-1}) (x_{n-1} - D), where the same grid without
    sigma_end returns D."""
    from dataclasses import replace

    from torchdiffusion.generate import generate
    from torchdiffusion.samplers.optimize_grid import grid_path, save_grid

    folder = write_run(tmp_path / "points", "toy-2d", POINTS_DDPM, data_shape=(2,))
    run = load_run(folder)
    sample = replace(run.config.sample, sampler="unipc", steps=3, grid="tuned")
    grid = torch.tensor([50.0, 2.0, 0.3, 0.0], dtype=torch.float64)
    for name, end in (("plain", 0.0), ("short", 0.06)):
        save_grid(grid_path(tmp_path / name, "unipc", 3), grid, {"sampler": "unipc", "nfe": 3, "sigma_end": end})
    seen = []
    plain = generate(
        run.model,
        range(4),
        sample,
        run.data_shape,
        grid_dir=tmp_path / "plain" / "grids",
        callback=lambda info: seen.append(info.x) if info.i == info.n - 2 else None,
    )
    short = generate(run.model, range(4), sample, run.data_shape, grid_dir=tmp_path / "short" / "grids")
    x_last = seen[0].float()
    assert torch.allclose(short, plain + 0.2 * (x_last - plain), atol=1e-5)
    assert not torch.allclose(short, plain)
    (folder / "grids").mkdir(exist_ok=True)
    (folder / "grids" / "unipc-nfe3.json").write_text((grid_path(tmp_path / "short", "unipc", 3)).read_text())
    _, meta = _sample(folder, tmp_path, "tuned", "--sampler", "unipc", "--grid", "tuned")
    assert meta["grid_used"]["grid"] == "tuned" and meta["grid_used"]["sigma_end"] == 0.06


def test_sample_counts_runs_and_records_one_resolved_grid(tmp_path, monkeypatch):
    """``sample`` resolves its grid once: the NFE it records counts the settings a tuned grid brings (the
    predictor-corrector's corrector steps change the count), the record is the grid that ran, and the grid
    file is read once."""
    from torchdiffusion.samplers import nfe
    from torchdiffusion.samplers import optimize_grid as og

    folder = write_run(tmp_path / "points", "toy-2d", POINTS_DDPM, data_shape=(2,))
    grid = [40.0, 3.0, 0.5, 0.0]
    og.save_grid(
        og.grid_path(folder, "pc", 7),  # 3 steps at 1 + 2 evaluations each, + 1
        torch.tensor(grid, dtype=torch.float64),
        {"sampler": "pc", "settings": {"corrector_steps": 2}},
    )
    reads = []
    load = og.load_grid
    monkeypatch.setattr(og, "load_grid", lambda path: reads.append(path) or load(path))
    x, meta = _sample(folder, tmp_path, "pc", "--sampler", "pc", "--grid", "tuned")
    assert len(reads) == 1
    assert meta["grid_used"]["settings"] == {"corrector_steps": 2} and meta["grid_used"]["sigmas"] == grid
    assert meta["nfe"] == nfe("pc", 3, corrector_steps=2) == 2 * 3 + 1 != nfe("pc", 3)
    x2, _ = _sample(
        folder, tmp_path, "pc2", "--sampler", "pc", "--grid", "tuned", "--set", "sample.settings.corrector_steps=2"
    )
    assert np.array_equal(x, x2)  # the grid's corrector steps are the ones that ran
    x1, meta1 = _sample(
        folder, tmp_path, "pc1", "--sampler", "pc", "--grid", "tuned", "--set", "sample.settings.corrector_steps=1"
    )
    assert not np.allclose(x, x1) and meta1["nfe"] == nfe("pc", 3)  # the user's setting wins, and is counted


def test_a_tuned_grid_runs_at_the_settings_it_was_fitted_at(tmp_path):
    """A tuned grid saved with ``settings`` (UniPC's order) is sampled at them: the same samples as the bare grid at
    that order, not the sampler's own order 3; an order the user sets wins; sample's record names them; settings
    the sampler does not take, or that are not an object, are one line and exit 2."""
    from dataclasses import replace

    from torchdiffusion.config import SamplerSettings
    from torchdiffusion.generate import generate, sampling_plan
    from torchdiffusion.samplers.optimize_grid import grid_path, save_grid

    folder = write_run(tmp_path / "points", "toy-2d", POINTS_DDPM, data_shape=(2,))
    run = load_run(folder)
    grid = torch.tensor([50.0, 4.0, 1.0, 0.3, 0.0], dtype=torch.float64)
    for name, meta in (("bare", {}), ("order2", {"settings": {"order": 2}})):
        save_grid(grid_path(tmp_path / name, "unipc", 4), grid, {"sampler": "unipc", "nfe": 4, **meta})
    tuned = replace(run.config.sample, sampler="unipc", steps=4, grid="tuned")
    at = lambda name, order=None: generate(  # noqa: E731
        run.model,
        range(6),
        replace(tuned, settings=SamplerSettings(order=order)),
        run.data_shape,
        grid_dir=tmp_path / name / "grids",
    )
    assert torch.equal(at("order2"), at("bare", 2))
    assert not torch.allclose(at("order2"), at("bare"))  # the bare grid runs at UniPC's own order 3
    assert torch.equal(at("order2", 3), at("bare"))  # the user's order wins
    _, knobs, record = sampling_plan(run.model, tuned, clamped=False, grid_dir=tmp_path / "order2" / "grids")
    assert knobs == {"order": 2} and record["settings"] == {"order": 2}
    (folder / "grids").mkdir(exist_ok=True)
    saved = folder / "grids" / "unipc-nfe4.json"
    saved.write_text(grid_path(tmp_path / "order2", "unipc", 4).read_text())
    _, meta = _sample(folder, tmp_path, "tuned", "--sampler", "unipc", "--grid", "auto", "--steps", 4)
    assert meta["grid_used"]["grid"] == "tuned" and meta["grid_used"]["settings"] == {"order": 2}
    bad_files = (
        ({"settings": {"eta": 1.0}}, "has no setting 'eta'"),
        ({"settings": [2]}, "settings must be an object"),
        ({"settings": {"order": "two"}}, "settings.order"),
        ({"sigmas": [50.0, 60.0, 0.0]}, "not a decreasing list"),
    )
    for bad, says in bad_files:  # under grid auto too: a damaged grid file is never silently replaced by another grid
        saved.write_text(json.dumps({"sampler": "unipc", "sigmas": grid.tolist(), **bad}))
        for kind in ("tuned", "auto"):
            code, out, err = cli(
                "sample", folder, "--steps", 4, "--sampler", "unipc", "--grid", kind, "--out", tmp_path / "bad.png"
            )
            assert code == 2 and says in err and "unipc-nfe4.json" in err, err
            assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad.png").exists()


def test_editing_commands_stop_where_a_tuned_grid_says(tmp_path):
    """The editing commands take a tuned grid's whole plan, its stop short of 0 included (generate.stop_short):
    interpolate's first frame from seeds A, B is the image `sample --seed A` draws on that grid, and each command's
    output moves when only the grid's sigma_end does."""
    from torchdiffusion.samplers.optimize_grid import grid_path, save_grid
    from torchdiffusion.viz import to_uint8_hwc

    run = write_run(tmp_path / "run", *TINY)
    karras = SampleConfig(sampler="euler", steps=3, grid="karras")
    grid = make_grid_sigmas(load_run(run).model, karras, clamped=True)
    outputs = {}
    for end in (0.0, 0.3 * float(grid[-2])):
        save_grid(grid_path(run, "euler", 3), grid, {"sampler": "euler", "nfe": 3, "sigma_end": end})
        x, meta = _sample(run, tmp_path, f"sample-{end:g}", "--grid", "tuned", "--n", 1, "--seed", 5)
        assert meta["grid_used"].get("sigma_end", 0.0) == end
        for command, flags in (
            ("inpaint", ["--n", 2]),
            ("img2img", ["--n", 2, "--strength", 0.9]),
            ("interpolate", ["--seeds", 5, 6, "--frames", 3]),
        ):
            out = tmp_path / f"{command}-{end:g}.png"
            code, _, err = cli(command, run, "--steps", 3, "--grid", "tuned", *flags, "--out", out)
            assert code == 0, err
            outputs[command, end] = np.asarray(Image.open(out).convert("L"))
        frame0 = outputs["interpolate", end][4 * 2 : 4 * 10 : 4, 4 * 2 : 4 * 10 : 4]  # 8x8 image, 2-px pad, 4x
        assert np.array_equal(frame0, to_uint8_hwc(torch.from_numpy(x[:1]))[0, :, :, 0])
    for command in ("inpaint", "img2img", "interpolate"):
        assert not np.array_equal(outputs[command, 0.0], outputs[command, 0.3 * float(grid[-2])]), command


def test_sample_precision_bf16_runs_the_network_in_bf16_and_says_so(run, tmp_path):
    """--precision bf16 samples the network under bf16 autocast: other bits than fp32, close to them (the sampler's
    arithmetic stays float64), recorded in the settings record and the manifest (a table run refuses the flag:
    test_tables)."""
    a, meta_a = _sample(run, tmp_path, "fp32")
    b, meta_b = _sample(run, tmp_path, "bf16", "--precision", "bf16")
    assert meta_a["precision"] == "fp32" and meta_b["precision"] == "bf16"
    assert not np.array_equal(a, b)
    assert np.abs(a - b).max() < 0.25 and np.abs(a - b).mean() < 0.02  # the same images, bf16's rounding apart
    manifest = json.loads((tmp_path / "bf16.png.manifest.json").read_text())
    assert manifest["sampling"][0]["precision"] == "bf16"


def test_the_gif_recorder_keeps_each_image_in_place_when_batches_take_different_steps():
    """The adaptive solver's batches take their own number of steps: frames were filed by step index, so a batch
    that finished early dropped out of the last frames and shifted the images after it into its place."""
    from types import SimpleNamespace

    import torch

    from torchdiffusion.commands.sample import Recorder

    rec = Recorder(k=3, batch_size=1)
    for image, steps in enumerate((3, 2, 3)):
        for i in range(steps):
            x = torch.full((1, 1, 2, 2), float(10 * image + i))
            rec(SimpleNamespace(i=i, sigma_next=0.0, x=x, denoised=x))
    assert len(rec.sigmas) == 3
    last = rec._frame(2, 1)[:, 0, 0, 0].tolist()
    assert last == [2.0, 11.0, 22.0]  # image 1 holds its last state (11), image 2 stays image 2


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--sampler", "heun", "--s-tmin", "10"], "--s-tmin changes nothing: sampler 'heun' reads s_tmin only with"),
        (["--sampler", "heun", "--set", "sample.settings.s_noise=2"], "--set sample.settings.s_noise changes nothing"),
        (["--sampler", "euler_ancestral", "--eta", "0", "--s-noise", "5"], "reads s_noise only with eta > 0"),
        (["--sampler", "ddpm", "--add-noise", "false", "--variance", "beta"], "reads variance only with add_noise"),
        (["--sampler", "pc", "--corrector-steps", "0", "--snr", "0.9"], "reads snr only with corrector_steps > 0"),
        (["--grid", "karras", "--set", "sample.spacing=leading"], "places the uniform_t grid's timesteps"),
        (["--grid", "exponential", "--set", "sample.rho=3"], "sample.rho is read only by the karras grid"),
        (["--set", "sample.steps=0"], "--set sample.steps=0 and --steps both set sample.steps"),  # 3 steps ran
        (["--sampler", "adaptive"], "--steps changes nothing: the adaptive solver takes its own steps"),
        (["--sampler", "ddim", "--eta", "0.5", "--set", "sample.settings.eta=0.2"], "and --eta both set"),
    ],
)
def test_settings_that_change_nothing_here_are_refused(run, tmp_path, flags, says):
    """Each of these sampled exactly what the command without it samples (bit-identical .npy)."""
    rc, _, err = cli("sample", run, "--n", 2, "--steps", 3, "--out", tmp_path / "x.png", *flags)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not list(tmp_path.iterdir())


def test_a_setting_its_other_settings_switch_on_is_taken(run, tmp_path):
    for flags in (
        ["--sampler", "heun", "--s-churn", "1", "--s-noise", "2"],
        ["--sampler", "heun_sde", "--s-noise", "2"],
    ):
        assert cli("sample", run, "--n", 2, "--steps", 3, "--out", tmp_path / "x.png", *flags)[0] == 0


def test_guidance_options_that_change_nothing_are_refused(tmp_path):
    """At guidance 1 the conditional branch alone is sampled (no rescale, no interval); at guidance 0 the
    unconditional one (no class); classifier guidance at scale 0 is none."""
    run = write_run(tmp_path / "class", "digits-test", ["model.num_classes=4"])
    for flags, says in [
        (["--class", "3", "--guidance-rescale", "0.7"], "--guidance-rescale changes nothing"),
        (["--class", "3", "--guidance-interval", "0.5,10"], "--guidance-interval changes nothing"),
        (["--class", "3", "--set", "sample.guidance_rescale=0.7"], "sample.guidance_rescale=0.7 changes nothing"),
        (["--class", "3", "--guidance", "0"], "--class changes nothing at guidance 0"),
    ]:
        rc, _, err = cli("sample", run, "--n", 2, "--steps", 2, "--out", tmp_path / "x.png", *flags)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err, (flags, err)
    assert cli("sample", run, "--n", 2, "--steps", 2, "--out", tmp_path / "x.png", "--class", "3", "--guidance",
               "2", "--guidance-rescale", "0.7", "--guidance-interval", "0.02,10")[0] == 0  # fmt: skip


def test_the_default_name_of_a_guided_draw_is_not_the_plain_ones(tmp_path):
    """sample --labels cycle --guidance 3 and plain sample wrote samples/euler-2-seed0.png, each over the other."""
    run = write_run(tmp_path / "class", "digits-test", ["model.num_classes=4", "sample.sampler=euler"])
    for flags in ([], ["--labels", "cycle", "--guidance", "3"]):
        assert cli("sample", run, "--n", 2, "--steps", 2, *flags)[0] == 0
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["euler-2-seed0-w3.png", "euler-2-seed0.png"]
