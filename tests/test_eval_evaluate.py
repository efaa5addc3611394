"""End to end: 'torchdiffusion evaluate' on a tiny run writes a complete report (raw features, few steps)."""

import json
import shutil

import pytest
import torch

from pictures import read_image
from torchdiffusion.cli import main
from torchdiffusion.evaluation.evaluate import EvaluateError, evaluate


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "digits"
    assert (
        main(
            [
                "train",
                "--preset",
                "digits-test",
                "--out",
                str(out),
                "--set",
                "train.images=128",
                "--set",
                "data.holdout=100",
                "--no-progress",
            ]
        )
        == 0
    )
    yield out
    torch.set_num_threads(n)


def test_evaluate_writes_report_with_every_metric(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "cache"))  # reference features cached here
    out = tmp_path / "eval"
    rep = evaluate(
        tiny_run,
        metrics=("fd", "kid", "pr", "nll", "memorisation"),
        n=24,
        features=["raw"],
        out=out,
        steps=2,
        nll_n=3,
        ode_steps=1,
        vlb_timesteps=3,
        log=lambda *a: None,
    )
    saved = json.loads((out / "report.json").read_text())
    assert saved["n"] == 24
    fm = saved["feature_metrics"]["raw"]
    s, h = fm["samples"], fm["heldout"]
    page = (out / "summary.html").read_text()  # the report's numbers as a table, beside its pictures
    assert f"<td>feature_metrics.raw.samples.FD-raw</td><td>{s['FD-raw']:.5g}</td>" in page
    for picture in ("samples.png", "closest_pairs.png"):
        assert f'<img src="{picture}">' in page
        assert (read_image(out / picture) < 128).any()  # something drawn on the white page
    grid = read_image(out / "samples.png")  # 24 samples of 8x8 in rows of 8: 3 x 8 tiles of 10 px + 2 px border
    assert grid.shape[0] * (8 * 10 + 2) == grid.shape[1] * (3 * 10 + 2)
    for r in (s, h):
        assert {"FD-raw", "KID-raw", "KID-raw_se", "precision-raw", "recall-raw"} <= set(r)
        assert "FD-raw_expected_bias" in r  # n = 24 is far below the warning threshold
    assert h["FD-raw"] < s["FD-raw"]  # an 8-step-trained model is worse than real held-out digits
    nll = saved["nll"]
    assert nll["bits_per_dim_ode"] > 0 and nll["bits_per_dim_vlb"] > 0
    assert 0 <= saved["memorisation"]["copy_fraction"] <= 1
    assert rep["feature_metrics"]["raw"]["n_ref"] > 0 and any((tmp_path / "cache").rglob("*.safetensors"))


def test_cli_rejects_unknown_metric(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--metrics", "fid"]) == 2
    assert "unknown metric" in capsys.readouterr().err
    with pytest.raises(EvaluateError):
        evaluate(tiny_run, metrics=("fd",), n=1)


def test_cli_refuses_guidance_for_an_unconditional_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", str(tiny_run), "--metrics", "fd", "--features", "raw", "--n", "4", "--out", str(out)]
    assert main([*args, "--guidance", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--guidance changes nothing: sample.guidance is read only by a class-" in err[0], err
    assert not out.exists()


def test_cli_evaluates_on_the_grid_asked_for(tiny_run, tmp_path, capsys):
    """--grid is the grid the samples are drawn on (recorded in the report, and the samples differ from the run's
    own grid's); an unknown grid, or a sampling flag where no metric draws samples, is one line and no folder."""
    args = ["evaluate", str(tiny_run), "--metrics", "fd", "--features", "raw", "--n", "4", "--steps", "3"]
    reports = {}
    for grid in ("karras", "exponential"):
        assert main([*args, "--grid", grid, "--out", str(tmp_path / grid)]) == 0
        reports[grid] = json.loads((tmp_path / grid / "report.json").read_text())
    assert [reports[g]["sampling"]["grid"] for g in reports] == ["karras", "exponential"]
    fds = [reports[g]["feature_metrics"] for g in reports]
    assert fds[0] != fds[1]
    capsys.readouterr()
    nll = ["evaluate", str(tiny_run), "--metrics", "nll", "--nll-n", "2", "--vlb-timesteps", "2"]
    for bad, needle in [
        ([*args, "--grid", "nope"], "sample.grid must be one of"),
        ([*nll, "--grid", "karras"], "--grid sets how samples are drawn, and --metrics nll draws none"),
    ]:
        assert main([*bad, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "bad").exists()


def test_cli_evaluates_with_the_grid_shape_and_sampler_settings_asked_for(tiny_run, tmp_path, capsys):
    """--rho, --spacing, a sampler setting (--eta) and --set sample.* shape the evaluated samples as they shape
    'sample''s (each recorded in the report's sampling record, and the samples differ); one the sampling would not
    read, or any of them where no metric draws samples, is one line and no folder."""
    args = ["evaluate", str(tiny_run), "--metrics", "fd", "--features", "raw", "--n", "4", "--steps", "3"]
    asked = {
        "rho3": ["--grid", "karras", "--rho", "3"],
        "rho9": ["--grid", "karras", "--rho", "9"],
        "eta0": ["--sampler", "ddim", "--eta", "0"],
        "eta1": ["--sampler", "ddim", "--set", "sample.settings.eta=1"],
        "leading": ["--grid", "uniform_t", "--spacing", "leading"],
        "linspace": ["--grid", "uniform_t", "--spacing", "linspace"],
    }
    reports = {}
    for name, flags in asked.items():
        assert main([*args, *flags, "--out", str(tmp_path / name)]) == 0, name
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    sampling = {name: r["sampling"] for name, r in reports.items()}
    assert (sampling["rho3"]["rho"], sampling["rho9"]["rho"]) == (3.0, 9.0)
    assert (sampling["eta0"]["settings"], sampling["eta1"]["settings"]) == ({"eta": 0.0}, {"eta": 1.0})
    assert (sampling["leading"]["spacing"], sampling["linspace"]["spacing"]) == ("leading", "linspace")
    for a, b in [("rho3", "rho9"), ("eta0", "eta1"), ("leading", "linspace")]:
        assert reports[a]["feature_metrics"] != reports[b]["feature_metrics"], (a, b)
    capsys.readouterr()
    nll = ["evaluate", str(tiny_run), "--metrics", "nll", "--nll-n", "2", "--vlb-timesteps", "2"]
    for bad, needle in [
        ([*args, "--grid", "exponential", "--rho", "3"], "--rho shapes the karras grid"),
        ([*args, "--sampler", "heun", "--eta", "0.5"], "sampler 'heun' has no setting 'eta'"),
        ([*args, "--set", "train.lr=1"], "only sample settings can be changed here"),
        ([*nll, "--rho", "3"], "--rho sets how samples are drawn, and --metrics nll draws none"),
        ([*nll, "--eta", "1"], "--eta sets how samples are drawn, and --metrics nll draws none"),
    ]:
        assert main([*bad, "--out", str(tmp_path / "bad")]) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "bad").exists()


def test_a_report_that_draws_no_samples_names_no_sample_count(tiny_run, tmp_path):
    """--metrics straightness measures its own noises' paths (its n in its section) and draws no samples: the report
    has no top-level sample count (it read 0), while one that draws samples counts them."""
    out = tmp_path / "st"
    assert (
        main(
            ["evaluate", str(tiny_run), "--metrics", "straightness", "--n", "6", "--ode-steps", "2", "--out", str(out)]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert "n" not in report and report["straightness"]["n"] == 6
    both = ["--metrics", "straightness,fd", "--features", "raw", "--n", "4", "--steps", "2", "--ode-steps", "2"]
    assert main(["evaluate", str(tiny_run), *both, "--out", str(tmp_path / "both")]) == 0
    report = json.loads((tmp_path / "both" / "report.json").read_text())
    assert report["n"] == 4 and report["straightness"]["n"] == 4


def test_bits_per_dim_take_nll_n_images_whatever_n_is(tiny_run, tmp_path):
    """--nll-n sets bits/dim's real images: --n (the samples of fd) cut them to its own count before, while the log
    named --nll-n; --n beside nll alone, which draws no samples, is refused."""
    out = tmp_path / "ev"
    args = ["--metrics", "fd,nll", "--features", "raw", "--n", "4", "--steps", "2", "--nll-n", "6", "--ode-steps", "1"]
    assert main(["evaluate", str(tiny_run), *args, "--vlb-timesteps", "2", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 4 and report["nll"]["n"] == 6 and report["heldout_n"] == 4
    assert main(["evaluate", str(tiny_run), "--metrics", "nll", "--n", "3", "--out", str(tmp_path / "n")]) == 2
    assert not (tmp_path / "n").exists()


def test_straightness_follows_guidance_and_records_it(tiny_run, tmp_path):
    """--guidance was ignored by --metrics straightness (and recorded as used beside fd): the paths are now those
    of the guided ODE at the scale given, recorded in the section; on an unconditional run it is refused."""
    run = tmp_path / "cond"
    sets = ["model.num_classes=10", "train.cond_drop_prob=0.5", "train.images=128", "train.batch_size=32"]
    sets += ["train.warmup_images=0", "model.channels=8"]  # (conv2 starts at 0: a step at lr 0 leaves cond unread)
    assert main(["train", "--preset", "digits-test", "--out", str(run), "--no-progress",
                 *[a for x in sets for a in ("--set", x)]]) == 0  # fmt: skip
    S = {}
    for w in ("0", "5"):
        out = tmp_path / f"st{w}"
        args = ["--metrics", "straightness", "--n", "4", "--ode-steps", "2", "--guidance", w, "--out", str(out)]
        assert main(["evaluate", str(run), *args]) == 0
        section = json.loads((out / "report.json").read_text())["straightness"]
        assert section["guidance"] == float(w)
        S[w] = section["S"]
    assert S["0"] != S["5"]
    args = ["--metrics", "straightness", "--guidance", "3", "--out", str(tmp_path / "u")]
    assert main(["evaluate", str(tiny_run), *args]) == 2


def test_quick_eval_for_training_logs(tiny_run):
    from torchdiffusion.evaluation.evaluate import quick_eval
    from torchdiffusion.generate import load_run

    run = load_run(tiny_run)
    train_x = torch.rand(50, *run.data_shape) * 2 - 1
    out = quick_eval(run.model, run.config, run.data_shape, train_x, n=16, steps=2)
    assert list(out) == ["eval/FD-raw@16"] and out["eval/FD-raw@16"] > 0


def test_a_later_evaluation_leaves_no_picture_of_an_earlier_one(tiny_run, tmp_path, monkeypatch):
    """The same --out twice: the folder then holds the second evaluation's files only (and their manifests)."""
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ev"
    base = ["evaluate", str(tiny_run), "--features", "raw", "--n", "8", "--steps", "2", "--out", str(out)]
    assert main([*base, "--metrics", "fd,memorisation"]) == 0
    first = {p.name for p in out.iterdir()}
    assert {"closest_pairs.png", "closest_pairs.png.manifest.json", "samples.png"} <= first
    assert main([*base, "--metrics", "fd"]) == 0  # no memorisation: no closest pairs
    second = {p.name for p in out.iterdir()}
    assert "closest_pairs.png" not in second and "closest_pairs.png.manifest.json" not in second
    assert "samples.png" in second and "closest_pairs" not in (out / "summary.html").read_text()
    nll = [a for a in base if a not in ("--steps", "2", "--n", "8")]  # nll alone draws no samples: both refused
    assert main([*nll, "--metrics", "nll", "--nll-n", "2", "--ode-steps", "1", "--vlb-timesteps", "2"]) == 0
    third = {p.name for p in out.iterdir()}
    assert "samples.png" not in third and "samples.png.manifest.json" not in third
    assert {"report.json", "summary.html"} <= third
    assert json.loads((out / "report.json").read_text())["metrics"] == ["nll"]


def test_an_evaluation_removes_no_picture_another_command_wrote(tiny_run, tmp_path, monkeypatch):
    """--out a folder that holds a picture named like an evaluation's, written by sample (its manifest says so):
    the evaluation leaves it as it was; one no command wrote (no manifest): the evaluation is refused."""
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "figures"
    assert main(["sample", str(tiny_run), "--n", "2", "--steps", "2", "--out", str(out / "samples.png")]) == 0
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "samples.png.manifest.json" in kept
    nll = ["--metrics", "nll", "--nll-n", "2", "--ode-steps", "1", "--vlb-timesteps", "2"]
    assert main(["evaluate", str(tiny_run), *nll, "--out", str(out)]) == 0  # draws no samples: writes no pictures
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in kept} == kept
    out.joinpath("profiles.png").write_bytes(b"a figure of the user's own")  # no command wrote it: refused outright
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["evaluate", str(tiny_run), *nll, "--out", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept


def test_an_evaluation_without_manifests_is_evaluated_again(tiny_run, tmp_path, monkeypatch):
    """A folder an evaluation wrote without manifests (stopped by Ctrl-C after its report, or the library) is
    known by its report.json: the same evaluation into it again replaces its files."""
    monkeypatch.setenv("TORCHDIFFUSION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "ev"
    argv = ["evaluate", str(tiny_run), "--features", "raw", "--metrics", "fd", "--n", "8", "--steps", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    for m in out.glob("*.manifest.json"):
        m.unlink()
    assert main([*argv, "--out", str(out)]) == 0


def test_straightness_measures_the_ode_sampling_solves(tiny_run, tmp_path):
    """Sampling an image run clamps x0_hat to [-1, 1]; straightness followed the unclamped denoiser (paths ending at
    pixel values in the thousands on an eps model, S growing with the steps). It now measures the clamped ODE."""
    from torchdiffusion.generate import clamped, load_run
    from torchdiffusion.shortcuts.straightness import straightness
    from torchdiffusion.types import NoiseSource

    out = tmp_path / "st"
    args = ["--metrics", "straightness", "--n", "4", "--ode-steps", "3", "--seed", "5", "--out", str(out)]
    assert main(["evaluate", str(tiny_run), *args]) == 0
    section = json.loads((out / "report.json").read_text())["straightness"]
    run = load_run(tiny_run)
    noise = NoiseSource(range(5, 9), run.data_shape).initial()
    D = lambda x, s: run.model(x, s)  # noqa: E731
    with torch.no_grad():
        want = straightness(clamped(D), noise, run.model.sigma_max, 3)
        raw = straightness(D, noise, run.model.sigma_max, 3)
    assert section["clamped"] is True and section["S"] == pytest.approx(want.S, rel=1e-6)
    assert want.S != pytest.approx(raw.S, rel=1e-3)


def test_memorisation_of_one_training_image_is_refused_before_sampling(tiny_run, tmp_path, monkeypatch, capsys):
    import importlib
    from dataclasses import replace

    E = importlib.import_module("torchdiffusion.evaluation.evaluate")

    real_sets = E._real_sets

    def one_image(cfg):  # the run's training set cut to its first image
        train, held = real_sets(cfg)
        return replace(train, x=train.x[:1], labels=train.labels[:1]), held

    monkeypatch.setattr(E, "_real_sets", one_image)
    monkeypatch.setattr(E, "_draw_samples", lambda *a, **k: pytest.fail("sampled before refusing"))
    run = tmp_path / "run"  # a run trained on that one image, as its run.json says
    shutil.copytree(tiny_run, run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "train_examples": 1}))
    out = tmp_path / "eval"
    args = ["evaluate", str(run), "--metrics", "fd,memorisation", "--features", "raw", "--n", "4"]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs at least 2 distinct training examples, and this run has 1" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("train_examples", 1698, "now gives 1697 training examples; the run was trained with 1698 (run.json train"),
        ("holdout_examples", 7, "now gives 100 held-out examples; the run was trained with 7 (run.json holdout"),
    ],
)
def test_data_changed_since_training_is_refused_before_sampling(tiny_run, tmp_path, capsys, key, value, words):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    info = json.loads((run / "run.json").read_text())
    assert info[key] != value
    (run / "run.json").write_text(json.dumps({**info, key: value}))  # as if the data had changed since training
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--metrics", "fd", "--features", "raw", "--n", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_data_of_another_shape_than_trained_on_is_refused_before_sampling(tiny_run, tmp_path, monkeypatch, capsys):
    import importlib
    from dataclasses import replace

    E = importlib.import_module("torchdiffusion.evaluation.evaluate")
    real_sets = E._real_sets

    def wider(cfg):  # the data as a folder of other-sized images would now load
        train, held = real_sets(cfg)
        return replace(train, x=torch.zeros(len(train), 1, 8, 9)), held

    monkeypatch.setattr(E, "_real_sets", wider)
    monkeypatch.setattr(E, "_draw_samples", lambda *a, **k: pytest.fail("sampled before refusing"))
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_run), "--metrics", "fd", "--features", "raw", "--n", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "now holds examples of shape [1, 8, 9]; the run was trained on [1, 8, 8]" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


EDM = [
    "diffusion.parameterization=edm",
    "diffusion.process=continuous",
    "diffusion.noise_conditioning=log_sigma",
    "diffusion.sigma_sampling=lognormal",
    "diffusion.weighting=edm",
]


@pytest.mark.parametrize(
    "preset, sets, shape, args, words",
    [
        ("digits-test", EDM, (1, 8, 8), ["nll", "--vlb-timesteps", "5"], "continuous process has no discrete VP chain"),
        ("toy-2d", ["model.mlp_width=8"], (2,), ["nll", "--vlb-timesteps", "5"], "this run holds vector data"),
        ("digits-test", ["model.num_classes=10"], (1, 8, 8), ["nll", "--guidance", "3"], "of the unguided"),
        ("digits-test", [], (1, 8, 8), ["nll", "--batch-size", "1"], "--metrics nll draws no samples"),
        ("digits-test", [], (1, 8, 8), ["straightness", "--batch-size", "7"], "--metrics straightness draws no samp"),
    ],
)
def test_an_option_the_metrics_asked_for_do_not_read_is_refused(tmp_path, capsys, preset, sets, shape, args, words):
    from tinyruns import write_run

    run = write_run(tmp_path / "run", preset, ["diffusion.process=discrete", *sets], shape)
    out = tmp_path / "eval"
    small = ["--nll-n", "2"] if args[0] == "nll" else ["--n", "2"]
    assert main(["evaluate", str(run), "--metrics", *args, *small, "--ode-steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_consistency_model_has_no_bits_per_dim_or_straightness(tmp_path, capsys):
    """Its network maps x_sigma to the ODE's end point, not the denoiser the probability-flow ODE and the VP bound
    need: nll and straightness asked for are refused; the default metrics leave nll out and the report says why."""
    from tinyruns import write_run

    sets = ["objective.name=consistency_training", "diffusion.boundary=consistency", "sample.sampler=consistency"]
    run = write_run(tmp_path / "cm", "digits-test", [*sets, "sample.steps=1"])
    out = tmp_path / "eval"
    for metrics in (["nll", "--nll-n", "2"], ["straightness", "--n", "2"]):
        assert main(["evaluate", str(run), "--metrics", *metrics, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--metrics {metrics[0]}: this run's network is a consistency model" in err
        assert len(err.splitlines()) == 1 and not out.exists()
    assert main(["evaluate", str(run), "--features", "raw", "--n", "8", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] == ["fd", "kid", "pr", "memorisation"] and "nll" not in report
    assert report["notes"]["nll"].startswith("left out of the default metrics: this run's network is a consistency")


@pytest.mark.parametrize(
    "values, grid, bin_width",
    [
        (torch.tensor([0, 1, 12345, 40001, 65535]) / 32767.5 - 1, "16-bit", 2 / 65535),
        (torch.tensor([0, 17, 255]) / 127.5 - 1, "8-bit", 2 / 255),
        (torch.tensor([-0.9123, 0.00017, 0.5]), None, None),
    ],
)
def test_bits_per_dim_take_the_bin_of_the_data_they_measure(tiny_run, values, grid, bin_width):
    """16-bit images are dequantised within their own bin (2/65535) and the VP bound's decoder spans their 65536
    levels; images on no grid get the continuous density's figure and no discrete bound - each said in the report."""
    import importlib

    from torchdiffusion.evaluation.likelihood import ode_bits_per_dim
    from torchdiffusion.generate import load_run

    E = importlib.import_module("torchdiffusion.evaluation.evaluate")
    run = load_run(tiny_run)
    x = values.float()[torch.arange(2 * 64) % len(values)].reshape(2, 1, 8, 8)
    rep = E._nll(run, x, 2, 1, 2, seed=7)
    m = run.model
    expected = ode_bits_per_dim(
        lambda xx, s: m(xx, s),
        x,
        bin_width=bin_width,
        generator=torch.Generator().manual_seed(7),
        sigma_min=m.sigma_min,
        sigma_max=m.sigma_max,
        steps=1,
        trace="hutchinson",
    )
    assert rep["bits_per_dim_ode"] == pytest.approx(float(expected.mean()), rel=1e-6)
    if grid is None:
        assert rep["dequantisation"].startswith("none: the images lie on no 8- or 16-bit grid")
        assert "bits_per_dim_vlb" not in rep and rep["vlb"].startswith("not computed")
    else:
        L = round(2 / bin_width)
        assert rep["dequantisation"].startswith(f"uniform, Delta = 2/{L} ({grid} data")
        assert f"over the {L + 1} levels of {grid} data" in rep["vlb"] and rep["bits_per_dim_vlb"] > 0


@pytest.mark.parametrize(
    "metrics, n, words", [("fd,kid,pr", 3, "--metrics pr: it needs at least 4"), ("kid", 2, "kid: it needs at least 3")]
)
def test_too_few_samples_for_a_metric_are_refused_before_sampling(tiny_run, tmp_path, capsys, metrics, n, words):
    out = tmp_path / "eval"
    args = ["evaluate", str(tiny_run), "--metrics", metrics, "--features", "raw", "--n", str(n), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--n {n} is too few samples for" in err and words in err and len(err.splitlines()) == 1
    assert "sampling" not in err and not out.exists()


def test_seeds_beyond_the_largest_are_refused_before_sampling(tiny_run, tmp_path, capsys):
    from torchdiffusion.config import MAX_SEED

    out = tmp_path / "eval"
    seed = str(MAX_SEED - 2)  # image k takes seed + k: 4 samples reach MAX_SEED + 1
    args = ["evaluate", str(tiny_run), "--metrics", "fd", "--features", "raw", "--n", "4", "--seed", seed]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"needs seeds up to {MAX_SEED + 1}" in err and f"take --seed <= {MAX_SEED - 3}" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_inception_features_without_a_file_name_the_flag_that_gives_one(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TORCHDIFFUSION_INCEPTION", raising=False)
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_run), "--metrics", "fd", "--features", "inception", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pass --inception FILE or set TORCHDIFFUSION_INCEPTION" in err and "inception_path" not in err
    assert len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize(
    "sets, what",
    [
        (EDM, "a continuous-sigma (EDM) model"),
        ([*EDM, "diffusion.parameterization=flow", "diffusion.sigma_sampling=rf_uniform"], "a rectified-flow (flow-m"),
    ],
)
def test_the_report_says_what_kind_of_continuous_model_has_no_vp_bound(tmp_path, sets, what):
    from tinyruns import write_run

    run = write_run(tmp_path / "run", "digits-test", sets)
    rep = evaluate(run, ("nll",), 2, out=tmp_path / "eval", nll_n=2, ode_steps=1, log=lambda *a: None)
    assert rep["nll"]["vlb"].startswith(f"not available: {what}")
    assert ("EDM" in rep["nll"]["vlb"]) == ("EDM" in what)


def test_vlb_timesteps_are_refused_for_images_on_no_grid_of_levels(tmp_path, capsys):
    """Float images on no grid of levels get no discrete VP bound, so --vlb-timesteps would change nothing: refused
    before anything is measured; without it bits/dim come with the continuous figure and say why no bound."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(-1, 1, (60, 1, 8, 8)).astype("float32"))
    run = tmp_path / "run"
    data = ["--set", "data.source=array", "--set", f"data.path={tmp_path / 'x.npy'}", "--set", "data.holdout=10"]
    assert main(["train", "--preset", "digits-test", *data, "--out", str(run), "--set", "train.images=16"]) == 0
    nll = ["evaluate", str(run), "--metrics", "nll", "--nll-n", "2", "--ode-steps", "1"]
    capsys.readouterr()
    assert main([*nll, "--vlb-timesteps", "2", "--out", str(tmp_path / "e1")]) == 2
    err = capsys.readouterr().err
    assert "--vlb-timesteps" in err and "lie on no 8-bit, 16-bit or own grid" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "e1").exists()
    assert main([*nll, "--out", str(tmp_path / "e2")]) == 0
    rep = json.loads((tmp_path / "e2" / "report.json").read_text())
    assert rep["nll"]["vlb"].startswith("not computed") and "bits_per_dim_ode" in rep["nll"]


def test_the_library_takes_the_vp_bound_timesteps_the_command_line_takes(tiny_run, tmp_path):
    """evaluate() without vlb_timesteps asked for 100 strata of a T = 100 run's bound and failed after the ODE's
    bits/dim (nothing written): the default is resolved in one place, min(100, T - 1), for the library and the
    command line alike; 0 sums all T terms, and a count beyond T - 1 is refused before anything is measured."""
    from torchdiffusion.evaluation.evaluate import VLB_TIMESTEPS

    quiet = dict(nll_n=2, ode_steps=1, log=lambda *a: None)
    api = evaluate(tiny_run, ["nll"], out=tmp_path / "api", **quiet)["nll"]
    assert "bits_per_dim_vlb" in api and f"~{VLB_TIMESTEPS - 1} log-spaced" in api["vlb"]
    assert (tmp_path / "api" / "report.json").is_file()
    every = evaluate(tiny_run, ["nll"], out=tmp_path / "all", vlb_timesteps=0, **quiet)["nll"]
    assert "all T timesteps" in every["vlb"]
    with pytest.raises(EvaluateError, match=r"in \[1, 99\]"):
        evaluate(tiny_run, ["nll"], out=tmp_path / "bad", vlb_timesteps=100, **quiet)
    assert not (tmp_path / "bad").exists()
    cli = ["evaluate", str(tiny_run), "--metrics", "nll", "--nll-n", "2", "--ode-steps", "1"]
    assert main([*cli, "--out", str(tmp_path / "cli")]) == 0
    saved = json.loads((tmp_path / "cli" / "report.json").read_text())["nll"]
    assert saved["vlb"] == api["vlb"] and saved["bits_per_dim_vlb"] == api["bits_per_dim_vlb"]


def test_every_section_drawn_from_the_seed_records_it(tiny_run, tmp_path):
    """Bits/dim's dequantisation noise, Hutchinson probes and VP-bound strata, and straightness's noises, are drawn
    from --seed: an nll-only report recorded no seed, so two reports of other bits/dim did not say why; each such
    section now names the seed its figures used."""
    quiet = dict(nll_n=2, ode_steps=1, vlb_timesteps=2, log=lambda *a: None)
    reports = []
    for s in (3, 4):
        evaluate(tiny_run, ["nll"], out=tmp_path / f"s{s}", seed=s, **quiet)
        reports.append(json.loads((tmp_path / f"s{s}" / "report.json").read_text()))
    assert [r["nll"]["seed"] for r in reports] == [3, 4]
    assert reports[0]["nll"]["bits_per_dim_ode"] != reports[1]["nll"]["bits_per_dim_ode"]
    rep = evaluate(tiny_run, ["straightness"], 3, out=tmp_path / "st", seed=7, ode_steps=1, log=lambda *a: None)
    assert rep["straightness"]["seed"] == 7


@pytest.mark.parametrize(
    "shape, metrics, words",
    [
        ((20, 64), ("fd", "memorisation"), "shape (N, 1, 8, 8) for this run's image data, got (20, 64)"),
        ((20, 3, 8, 8), ("fd",), "shape (N, 1, 8, 8) for this run's image data, got (20, 3, 8, 8)"),
        ((2, 1, 8, 8), ("kid",), "samples: 2 are too few samples for --metrics kid: it needs at least 3"),
    ],
)
def test_samples_given_that_do_not_fit_the_run_are_refused_before_anything_is_measured(
    tiny_run, tmp_path, shape, metrics, words
):
    """Samples given to evaluate() were measured whatever their shape: flattened ones ran FD/KID/PR on other values
    and memorisation crashed in torch.stack, three-channel ones failed late; refused in one line up front."""
    with pytest.raises(EvaluateError) as e:
        evaluate(tiny_run, metrics, samples=torch.rand(shape), features=["raw"], out=tmp_path / "e", log=print)
    assert words in str(e.value) and len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "samples, n, words",
    [
        (torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8), None, "torch.uint8 values"),
        (torch.linspace(0, 255, 1280).reshape(20, 1, 8, 8), None, "span [0, 255]"),
        (torch.linspace(-1.01, 0.99, 1280, dtype=torch.float64).reshape(20, 1, 8, 8), None, "span [-1.01, 0.99]"),
        (torch.full((20, 1, 8, 8), float("nan")), None, "NaN or infinite"),
        (torch.rand(20, 1, 8, 8), 30, "n=30 beside 20 samples"),
    ],
)
def test_samples_given_in_other_units_or_beside_another_n_are_refused(tiny_run, tmp_path, samples, n, words):
    """Samples given to evaluate() were measured in whatever units they came: 8-bit pixels (integers, or floats
    0..255) sat thousands from every real image in model units [-1, 1] (nearest-neighbour distance ~4069 against
    ~19). Samples that are not floating point, or lie outside [-1, 1] where generate() clips its samples there
    (this run's images), and an n given beside samples that is not their count, are refused in one line."""
    with pytest.raises(EvaluateError) as e:
        evaluate(tiny_run, ["fd"], n, samples=samples, features=["raw"], out=tmp_path / "e", log=print)
    assert words in str(e.value) and len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_samples_in_model_units_are_measured_with_or_without_their_n(tiny_run, tmp_path):
    """Samples within [-1, 1] (up to a rounding's 1e-3), in float32 or float64, are measured, n omitted or their
    count."""
    x = (torch.rand(20, 1, 8, 8) * 2 - 1) * (1 + 5e-4)
    for i, (samples, n) in enumerate(((x, None), (x.double(), 20))):
        rep = evaluate(tiny_run, ["fd"], n, samples=samples, features=["raw"], out=tmp_path / f"e{i}", log=print)
        assert rep["n"] == 20
