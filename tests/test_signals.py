"""1-D signals: the UCR sets inside the sktime wheel, CSV series, resampling, the Gaussian-process baseline (an
exact denoiser: the oracle for imputation), imputation and forecasting through the inpainting path, the metrics,
and bad input from the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from pictures import assert_plot
from test_cli_errors import assert_clean_error
from tinyruns import cli
from torchdiffusion.cond import cycled_classes
from torchdiffusion.config import ConfigError, DataConfig, ModelConfig
from torchdiffusion.data import DataError, load_data
from torchdiffusion.data.signal import resample
from torchdiffusion.edit import inpaint, outpaint_canvas, tiled
from torchdiffusion.evaluation.signals import (
    GaussianProcess,
    fit_gp,
    random_time_shift,
    real_reference,
    signal_metrics,
    train_signal_classifier,
)
from torchdiffusion.masks import MaskError, make_mask
from torchdiffusion.nets import build_net
from torchdiffusion.presets import get_preset
from torchdiffusion.samplers import get_sampler
from torchdiffusion.schedules import karras_sigmas
from torchdiffusion.signals import linear_fill, random_spans

pytestmark = pytest.mark.usefixtures("one_thread")


def td(*args: str) -> subprocess.CompletedProcess:
    """``torchdiffusion ARGS`` through the CLI's ``main`` in this process (``tinyruns.cli``: no torch import each)."""
    code, out, err = cli(*args)
    return subprocess.CompletedProcess(args, code, out, err)


def gp(length: int = 32, ell: float = 4.0, s2: float = 1.0, classes: int = 1) -> GaussianProcess:
    mean = torch.stack([torch.full((1, length), float(k), dtype=torch.float64) for k in range(classes)])
    return GaussianProcess(mean, torch.tensor([s2], dtype=torch.float64), torch.tensor([ell], dtype=torch.float64))


def test_ucr_sets_load_offline_without_importing_sktime():
    code = (
        "import sys; from torchdiffusion.config import DataConfig; from torchdiffusion.data import load_data;"
        "d = load_data(DataConfig(source='ucr:GunPoint')); e = load_data(DataConfig(source='ucr:ItalyPowerDemand'));"
        "print(tuple(d.x.shape), d.labels.bincount().tolist(), tuple(e.x.shape), 'sktime' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["(200,", "1,", "150)", "[100,", "100]", "(1096,", "1,", "24)", "False"]


def test_ucr_series_are_z_normalised_and_resampled_to_the_unet_length():
    d = load_data(get_preset("signal-gunpoint").data, "train")
    assert d.shape == (1, 128) and d.kind == "signal" and len(d) == 150
    raw = load_data(DataConfig(source="ucr:GunPoint"))
    torch.testing.assert_close(raw.x.mean(-1), torch.zeros(200, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(raw.x.std(-1, unbiased=False), torch.ones(200, 1), atol=1e-2, rtol=0)


def test_ragged_set_is_refused_unless_resampled():
    with pytest.raises(DataError, match="ragged: series of 7 to 29 points; set data.signal_length"):
        load_data(DataConfig(source="ucr:JapaneseVowels"))
    d = load_data(DataConfig(source="ucr:JapaneseVowels", signal_length=32))
    assert d.shape == (12, 32) and d.class_names == [str(k) for k in range(1, 10)]


def test_linear_resampling_keeps_lines_and_end_points():
    t = torch.linspace(0, 1, 37, dtype=torch.float64)
    x = torch.stack([3 * t - 1, -2 * t]).reshape(1, 2, 37)
    y = resample(x, 16)
    u = torch.linspace(0, 1, 16, dtype=torch.float64)
    torch.testing.assert_close(y, torch.stack([3 * u - 1, -2 * u]).reshape(1, 2, 16))
    assert resample(x, 37) is x


def test_csv_series_with_header_and_labels(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("t0,t1,t2,t3,label\n0,1,2,3,up\n3,2,1,0,down\n1,1,1,1,up\n")
    d = load_data(DataConfig(source="signal_csv", path=str(p)))
    rows = {tuple(r[0]): d.class_names[k] for r, k in zip(d.x.tolist(), d.labels.tolist())}  # (seeded order)
    assert rows == {(0, 1, 2, 3): "up", (3, 2, 1, 0): "down", (1, 1, 1, 1): "up"} and d.class_names == ["down", "up"]
    q = tmp_path / "plain.csv"
    q.write_text("0.5,1,2\n-1,2,3\n")
    assert load_data(DataConfig(source="signal_csv", path=str(q), signal_length=5)).shape == (1, 5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2,3\n1,2\n", "ragged: rows of 2 to 3 cells"),
        ("1,2,3\n1,,3\n", "missing or NaN values"),
        ("1,2,NaN\n1,2,3\n", "missing or NaN values"),
        ("1,2,3\n1,x,3\n", "row 2: a cell is not a number"),
    ],
)
def test_bad_csv_series_are_refused_in_one_line(tmp_path, text, message):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        load_data(DataConfig(source="signal_csv", path=str(p)))


def test_cli_refuses_ragged_and_nan_series_with_exit_2(tmp_path):
    p = tmp_path / "ragged.csv"
    p.write_text("1,2,3,4\n1,2,3\n")
    r = td("train", "--preset", "signal-gunpoint", "--set", "data.source=signal_csv", "--set", f"data.path={p}",
           "--set", "data.holdout=0", "--out", str(tmp_path / "run"), "--no-progress")  # fmt: skip
    assert_clean_error(r.returncode, r.stderr, "ragged")
    np.save(tmp_path / "nan.npy", np.array([[[0.0] * 15 + [np.nan]]] * 4))
    r = td("train", "--preset", "signal-gunpoint", "--set", "data.source=array", "--set",
           f"data.path={tmp_path / 'nan.npy'}", "--set", "data.holdout=0", "--out", str(tmp_path / "run2"))  # fmt: skip
    assert_clean_error(r.returncode, r.stderr, "NaN")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_class_conditional_1d_unet_shapes_and_length_check():
    cfg = ModelConfig(
        channels=8, channel_mult=(1, 2, 2), attn_resolutions=(8,), groups=4, head_channels=8, num_classes=3
    )
    net = build_net(cfg, (2, 32))
    for p in net.parameters():  # break the zero initialisation so the class can change the output
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(3, 2, 32)
    a = net(x, torch.zeros(3), {"class": torch.tensor([0, 1, 2])})
    b = net(x, torch.zeros(3), {"class": torch.tensor([1, 1, 1])})
    assert a.shape == x.shape and torch.equal(a[1], b[1]) and not torch.allclose(a[0], b[0])
    with pytest.raises(ConfigError, match="signal length 150 is not divisible by 4"):
        build_net(cfg, (1, 150))


def test_gp_fit_recovers_a_known_kernel():
    truth = gp(length=64, ell=5.0, s2=0.7, classes=2)
    y = cycled_classes(range(2), 4000)
    x = truth.sample(y, seed=1)
    fit = fit_gp(x, y, 2)
    assert fit.length_scale.item() == pytest.approx(5.0, rel=0.05)
    assert fit.variance.item() == pytest.approx(0.7, rel=0.05)
    torch.testing.assert_close(fit.mean, truth.mean, atol=0.1, rtol=0)


def test_gp_sampler_with_its_exact_denoiser_draws_the_gp():
    """The probability-flow ODE with the GP's exact denoiser (heun, 40 steps) maps noise to the GP: the sample
    covariance matches K (an oracle for the signal path of the samplers)."""
    g = gp(length=24, ell=3.0)
    mix = g.mixture()
    sigmas = karras_sigmas(40, 0.002, 80.0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 1, 24, generator=gen, dtype=torch.float64) * 80.0
    D = lambda x, s: mix.denoise(x.reshape(len(x), -1), s).reshape(x.shape)
    out = get_sampler("heun")(D, x, sigmas)
    cov = torch.cov(out.reshape(3000, 24).T)
    assert (cov - g.covariance(0)).abs().max() < 0.12


def test_imputation_with_the_exact_denoiser_approaches_kriging_and_beats_linear_interpolation():
    """On GP draws with the GP's exact denoiser: inpainting keeps the known points; RePaint's resampling moves the
    mean of 8 imputations toward the exact conditional mean E[x_hole | x_known] (kriging), and with 10 passes it
    beats linear interpolation in MSE (plain replacement does not: it ignores the known points' pull)."""
    g = gp(length=32, ell=3.0)
    mix = g.mixture()
    x = g.sample(torch.zeros(32, dtype=torch.long), seed=3).double()
    mask = random_spans(32, 32, 0.2, seed=0).double()
    K, krig = g.covariance(0), x.clone()
    for i in range(32):
        k, h = mask[i, 0].bool(), ~mask[i, 0].bool()
        krig[i, 0, h] = K[h][:, k] @ torch.linalg.solve(K[k][:, k], x[i, 0, k])
    hole = 1 - mask

    def mse(a, b):
        return float(((a - b) ** 2 * hole).sum() / hole.sum())

    def imputed(jump: int, resample: int) -> torch.Tensor:
        D = lambda z, s: mix.denoise(z.reshape(len(z), -1), s).reshape(z.shape)
        xr, mr = x.repeat(8, 1, 1), mask.repeat(8, 1, 1)
        gen = torch.Generator().manual_seed(0)
        noise = lambda: torch.randn(xr.shape, generator=gen, dtype=torch.float64)
        sigmas = karras_sigmas(24, 0.002, 80.0)
        y = inpaint(
            get_sampler("euler_ancestral"), D, noise() * 80, sigmas, xr, mr, jump=jump, resample=resample, noise=noise
        )
        assert torch.equal(y * mr, xr * mr)
        return y.reshape(8, 32, 1, 32).mean(0)

    plain, repaint = imputed(24, 1), imputed(2, 10)
    assert mse(krig, x) < 0.2 * mse(linear_fill(x, mask), x)  # the oracle: kriging is far better than a line
    assert mse(repaint, krig) < 0.6 * mse(plain, krig)
    assert mse(repaint, x) < mse(linear_fill(x, mask), x) < mse(plain, x)


def test_linear_fill_and_random_spans():
    x = torch.arange(10.0).reshape(1, 1, 10) * 2
    m = make_mask("span:0.3,0.7", 1, 10)[:, :, 0]
    assert m.tolist() == [[[1, 1, 1, 0, 0, 0, 0, 1, 1, 1]]]
    assert make_mask("span:3,7", 1, 10)[:, :, 0].tolist() == m.tolist()  # whole points: the same stretch
    for bad in ("span:0.6,0.5", "span:4,11", "span:0.5,1.5"):  # said for the span, in its own terms
        with pytest.raises(MaskError, match=r"span '.*' must be x0 < x1, as whole points 0 <= x0 < x1 <= 10"):
            make_mask(bad, 1, 10)
    for side in ("top", "bottom"):  # either half of a one-row series is all of it: every point was regenerated
        with pytest.raises(MaskError, match=f"half:{side} of a one-row series covers all of it"):
            make_mask(f"half:{side}", 1, 10)
    assert make_mask("half:right", 1, 10)[:, :, 0].sum() == 5
    torch.testing.assert_close(linear_fill(x.masked_fill(m == 0, float("nan")), m), x)
    spans = random_spans(50, 40, 0.2, seed=0)
    hidden = 1 - spans[:, 0]
    assert hidden.sum(1).tolist() == [8.0] * 50
    assert (hidden.diff(dim=1).abs().sum(1) <= 2).all()  # one contiguous stretch


def test_signal_outpaint_canvas_and_tiled_windows():
    x = torch.randn(2, 3, 16)
    canvas, mask = outpaint_canvas(x, right=8)
    assert canvas.shape == (2, 3, 24) and mask.shape == (1, 1, 24) and torch.equal(canvas[..., :16], x)
    assert mask[0, 0].tolist() == [1.0] * 16 + [0.0] * 8
    calls = []

    def D(z, s):
        calls.append(z.shape[-1])
        return 2 * z

    out = tiled(D, (16,), stride=4)(canvas, torch.ones(2))
    torch.testing.assert_close(out, 2 * canvas)  # a pointwise denoiser is unchanged by the window fusion
    assert calls == [16, 16, 16]


def test_time_shift_is_a_shift_with_repeated_ends():
    x = torch.arange(8.0).reshape(1, 1, 8).repeat(20, 1, 1)
    y = random_time_shift(x, 2, torch.Generator().manual_seed(0))
    for row in y[:, 0]:
        d = row - x[0, 0]
        assert ((row[1:] - row[:-1]) >= 0).all() and d[2:-2].unique().numel() == 1


def test_metrics_tell_real_series_from_noise():
    """On sines of two frequencies: the classifier separates them, held-out real series sit near the training
    ones in its features, pure noise sits far, and trained on noise it predicts held-out series at chance."""
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(32.0)

    def sines(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 2
        phase = torch.rand(n, generator=g) * 2 * math.pi
        x = torch.sin(2 * math.pi * (2 + 3 * y[:, None]) * t / 32 + phase[:, None])[:, None]
        return x + 0.1 * torch.randn(x.shape, generator=g), y

    train, held = sines(120, 1), sines(60, 2)
    net = train_signal_classifier(*train, 2, epochs=60)
    real = real_reference(net, train, held)
    assert real["trtr"] >= 0.95
    noise = (torch.randn(120, 1, 32, generator=gen), cycled_classes(range(2), 120))
    bad = signal_metrics(net, train, held, noise, 2, epochs=30)
    good = signal_metrics(net, train, held, sines(120, 3), 2, epochs=30)
    assert good["fd"] < 0.2 * bad["fd"] and good["tstr"] >= 0.9 and bad["tstr"] <= 0.7


def cfg_sampler(run) -> str:
    return json.loads((run / "config.json").read_text())["sample"]["sampler"]


def test_signal_run_from_the_command_line_evaluates_imputes_and_forecasts(tmp_path):
    """A tiny class-conditional run on CSV sines: evaluate reports the model, the GP baseline and the real data;
    impute fills NaN points (keeping the given ones); outpaint writes S continuations per series."""
    t = np.arange(16)
    rows = [
        ",".join(f"{np.sin(2 * np.pi * (1 + k % 2) * t_ / 16 + k):.5f}" for t_ in t) + f",{k % 2}" for k in range(40)
    ]
    p = tmp_path / "sines.csv"
    p.write_text(",".join(f"t{i}" for i in t) + ",label\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"  # sample.n/steps: the final grid is not checked here, only drawn
    r = td("train", "--preset", "signal-gunpoint", "--set", "data.source=signal_csv", "--set", f"data.path={p}",
           "--set", "data.signal_length=null", "--set", "data.holdout=12", "--set", "model.channels=8",
           "--set", "model.attn_resolutions=4", "--set", "model.groups=4", "--set", "model.head_channels=8",
           "--set", "train.images=64", "--set", "train.warmup_images=0", "--set", "sample.n=2",
           "--set", "sample.steps=2", "--out", str(run), "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = td("evaluate", str(run), "--n", "8", "--steps", "2", "--threads", "1")
    assert r.returncode == 0, r.stderr
    rc, _, err = cli("explain", "ablation", run, "--ddpm-steps", "3", "--out", tmp_path / "ablation.png")
    assert rc == 0, err  # four panels of series
    assert_plot(tmp_path / "ablation.png", min_aspect=2.0)
    report = json.loads((run / "eval" / "report.json").read_text())
    assert set(report) >= {"model", "gaussian_process", "real"} and report["real"]["n_heldout"] == 12
    assert 0 <= report["model"]["tstr"] <= 1 and report["gaussian_process"]["fd"] >= 0
    r = td("evaluate", str(run), "--n", "8", "--steps", "2", "--sampler", "euler", "--batch-size", "3", "--threads",
           "1", "--out", str(tmp_path / "eval-euler"))  # fmt: skip
    euler = json.loads((tmp_path / "eval-euler" / "report.json").read_text())
    sampled = (euler["sampling"]["sampler"], report["sampling"]["sampler"])
    assert r.returncode == 0 and sampled == ("euler", cfg_sampler(run)), r.stderr
    assert (run / "eval" / "summary.html").is_file() and "samples.png" in (run / "eval" / "summary.html").read_text()
    assert euler["model"] != report["model"] and euler["gaussian_process"] == report["gaussian_process"]
    # --seed draws other samples; the feature network, and so the real data's floor, stays the same
    r = td("evaluate", str(run), "--n", "8", "--steps", "2", "--seed", "5", "--threads", "1",
           "--out", str(tmp_path / "eval-seed5"))  # fmt: skip
    seed5 = json.loads((tmp_path / "eval-seed5" / "report.json").read_text())
    assert r.returncode == 0 and seed5["real"] == report["real"] and seed5["model"] != report["model"], r.stderr
    for option in (["--nll-n", "5"], ["--ode-steps", "4"], ["--inception", "x.pt"]):  # image metrics' options
        r = td("evaluate", str(run), "--n", "8", *option, "--out", str(tmp_path / "g"))
        assert_clean_error(r.returncode, r.stderr, f"{option[0]} does not apply to signal runs")
    assert not (tmp_path / "g").exists()
    r = td("sample", str(run), "--n", "2", "--set", "sample.clip_denoised=true", "--out", str(tmp_path / "x.png"))
    assert_clean_error(r.returncode, r.stderr, "x0_hat is clamped only for images and volumes in pixel space")
    # a run that samples only on its tuned grid (sample.grid = tuned, as a distilled student) is evaluated on it
    from torchdiffusion.samplers.optimize_grid import grid_path, save_grid

    cfg = json.loads((run / "config.json").read_text())
    save_grid(grid_path(run, cfg["sample"]["sampler"], 2), torch.tensor([20.0, 1.0, 0.0]), {})
    (run / "config.json").write_text(json.dumps({**cfg, "sample": {**cfg["sample"], "grid": "tuned"}}))
    r = td("evaluate", str(run), "--n", "8", "--steps", "2", "--threads", "1", "--out", str(tmp_path / "eval-tuned"))
    assert r.returncode == 0, r.stderr
    gaps = np.sin(np.arange(16) / 3.0)[None, None].repeat(3, 0)
    gaps[:, 0, 5:9] = np.nan
    np.save(tmp_path / "gaps.npy", gaps)
    r = td("impute", str(run), "--series", str(tmp_path / "gaps.npy"), "--steps", "2", "--resample", "2",
           "--out", str(tmp_path / "filled.npy"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    filled = np.load(tmp_path / "filled.npy")
    known = ~np.isnan(gaps)  # the given points exactly as given, in their own float type (they came back float32)
    assert np.isfinite(filled).all() and filled.dtype == gaps.dtype and np.array_equal(filled[known], gaps[known])
    r = td("impute", str(run), "--series", str(tmp_path / "gaps.npy"), "--steps", "2", "--out", str(tmp_path / "f.csv"))
    assert r.returncode == 0, r.stderr  # in a CSV too: given values in digits that read back exactly (it kept 7)
    cells = np.loadtxt(tmp_path / "f.csv", delimiter=",")
    assert np.array_equal(cells[known[:, 0]], gaps[:, 0][known[:, 0]])
    # a jump longer than the steps ran as the steps, and the manifest recorded the jump given
    rc, _, err = cli("impute", run, "--series", tmp_path / "gaps.npy", "--steps", "2", "--resample", "2", "--jump", "3",
                     "--out", tmp_path / "never.npy")  # fmt: skip
    assert_clean_error(rc, err, "--jump 3 is longer than the 2 sampling steps")
    r = td("outpaint", str(run), "--right", "8", "--n", "2", "--samples", "3", "--steps", "2",
           "--out", str(tmp_path / "fc.png"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "fc.npy").shape == (2, 3, 1, 24)
    # both manifests say how the points were drawn (they held no draw at all)
    for name, seeds, knob in (("filled.npy", [[0, 2]], "resample"), ("fc.png", [[0, 5]], "right")):
        drawn = json.loads((tmp_path / f"{name}.manifest.json").read_text())["sampling"]
        assert len(drawn) == 1 and drawn[0]["seeds"] == seeds and knob in drawn[0]["wrappers"][0], (name, drawn)
    # --right past --cut: the truth is drawn over the points it has (the plot failed after sampling)
    r = td("outpaint", str(run), "--right", "8", "--cut", "4", "--n", "2", "--samples", "2", "--steps", "2",
           "--out", str(tmp_path / "fc2.png"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fc2.png").is_file() and np.load(tmp_path / "fc2.npy").shape == (2, 2, 1, 20)
    r = td("outpaint", str(run), "--left", "4", "--out", str(tmp_path / "x.png"))
    assert_clean_error(r.returncode, r.stderr, "right only")
    r = td("outpaint", str(run), "--right", "8", "--save-npy", "--out", str(tmp_path / "x.png"))
    assert_clean_error(r.returncode, r.stderr, "a forecast always writes its .npy")
    for image_option in (["--resample", "2", "--jump", "2"], ["--class", "1"], ["--stride", "4"]):  # read by none
        r = td("outpaint", str(run), "--right", "8", *image_option, "--out", str(tmp_path / "x.png"))
        assert_clean_error(r.returncode, r.stderr, f"{image_option[-2]} is an option of the other kind of run")
        assert "forecasting a signal does not read it" in r.stderr
    (tmp_path / "ragged.csv").write_text("1,2,3\n1,2\n")
    for series, needle in (("ragged.csv", "ragged"), ("gaps.npy", "the run's are (1, 16)")):
        if series == "gaps.npy":
            np.save(tmp_path / "gaps.npy", gaps[:, :, :12])
        r = td("impute", str(run), "--series", str(tmp_path / series), "--out", str(tmp_path / "never.npy"))
        assert_clean_error(r.returncode, r.stderr, needle)
    for unread, needle in (
        (["--jump", "2"], "needs --resample 2"),
        (["--mask-char", "#"], "only for sequence runs"),
    ):
        rc, _, err = cli("impute", run, "--series", tmp_path / "gaps.npy", *unread, "--out", tmp_path / "never.npy")
        assert_clean_error(rc, err, needle)
    assert not (tmp_path / "never.npy").exists()


def test_impute_takes_a_tuned_grids_stop_short_of_zero(tmp_path):
    """impute and forecast sample by the plan `sample` takes, a tuned grid's stop short of 0 included
    (generate.stop_short): the filled points move when only the saved grid's sigma_end does."""
    from dataclasses import replace

    from tinyruns import write_run
    from torchdiffusion.generate import clamps_x0, load_run, make_grid_sigmas
    from torchdiffusion.samplers.optimize_grid import grid_path, save_grid
    from torchdiffusion.signals import forecast, impute

    tiny = ["model.channels=8", "model.attn_resolutions=4", "model.groups=4", "model.head_channels=8"]
    run = write_run(tmp_path / "run", "signal-gunpoint", [*tiny, "sample.sampler=euler", "sample.steps=3"], (1, 16))
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "kind": "signal"}))
    r = load_run(run)
    karras = replace(r.config.sample, grid="karras")
    grid = make_grid_sigmas(r.model, karras, clamped=clamps_x0(karras, r.data_shape, r.codec))
    x = torch.sin(torch.arange(16.0) / 3)[None, None].repeat(2, 1, 1)
    mask = torch.ones(1, 1, 16)
    mask[..., 5:9] = 0
    filled, continued = {}, {}
    for end in (0.0, 0.3 * float(grid[-2])):
        save_grid(grid_path(run, "euler", 3), grid, {"sampler": "euler", "nfe": 3, "sigma_end": end})
        r = load_run(run)
        tuned = replace(r.config.sample, grid="tuned")
        assert r.sampling_plan(tuned)[2].get("sigma_end", 0.0) == end
        filled[end] = impute(r, x, mask, tuned, seed=3)
        continued[end] = forecast(r, x[0, :, :12], 4, tuned, samples=2, seed=3)
        assert torch.equal(filled[end] * mask, x * mask)  # the known points are kept either way
    a, b = filled.values()
    assert not torch.equal(a, b)
    a, b = continued.values()
    assert not torch.equal(a, b)


@pytest.mark.parametrize("delimiter, decimal", [(",", "."), (";", ","), ("\t", "."), ("|", ".")])
def test_signal_csvs_in_every_spreadsheet_dialect_read_alike(tmp_path, delimiter, decimal):
    """One series per row, with a label column: comma, semicolon with decimal commas, tab or pipe, and a byte order
    mark - the same values and labels (a tab or semicolon file was refused or read as one cell per row)."""
    from torchdiffusion.data.signal import read_signal_file

    x = np.round(np.random.default_rng(2).normal(size=(3, 9)), 3)
    lines = [delimiter.join(["label", *(f"t{j}" for j in range(9))])]
    lines += [delimiter.join([f"c{i}", *(f"{v}".replace(".", decimal) for v in row)]) for i, row in enumerate(x)]
    (tmp_path / "s.csv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    values, labels = read_signal_file(tmp_path / "s.csv")
    assert labels == ["c0", "c1", "c2"] and np.array_equal(values[:, 0], x)


def test_impute_of_a_multichannel_signal_run_refuses_a_csv_it_could_not_read_back(tmp_path):
    """A CSV row is one series of one channel (--series reads it so): a 2-channel run's output was written with
    its channels end to end, a file --series then refused. Refused before any work; .npy keeps the channels."""
    x = np.sin(np.linspace(0, 6, 128))[None, None].repeat(24, 0).repeat(2, 1) + np.random.default_rng(0).normal(
        0, 0.1, (24, 2, 128)
    )
    np.save(tmp_path / "two.npy", x.astype(np.float32))
    run = tmp_path / "run"
    sets = ["data.source=array", f"data.path={tmp_path / 'two.npy'}", "data.holdout=4", "model.num_classes=0"]
    sets += ["model.channels=8", "model.attn_resolutions=", "model.groups=4", "train.images=32", "sample.steps=2"]
    rc, _, err = cli(
        "train", "--preset", "signal-gunpoint", "--out", run, "--no-progress", *[f"--set={a}" for a in sets]
    )
    assert rc == 0, err
    gaps = x[:2].copy()
    gaps[:, :, 3:7] = np.nan
    np.save(tmp_path / "gaps.npy", gaps)
    rc, _, err = cli("impute", run, "--series", tmp_path / "gaps.npy", "--steps", "2", "--out", tmp_path / "f.csv")
    assert_clean_error(rc, err, "this run's series have 2 channels; write .npy")
    assert not (tmp_path / "f.csv").exists()
    rc, _, err = cli("impute", run, "--series", tmp_path / "gaps.npy", "--steps", "2", "--out", tmp_path / "f.npy")
    assert rc == 0 and np.load(tmp_path / "f.npy").shape == (2, 2, 128), err


def _tiny_signal_run(folder):
    """A signal-gunpoint run folder with jittered initial weights, 16-point series (50 held out), 3 Euler steps."""
    from tinyruns import write_run

    tiny = ["model.channels=8", "model.attn_resolutions=4", "model.groups=4", "model.head_channels=8"]
    sets = [*tiny, "data.signal_length=16", "sample.sampler=euler", "sample.steps=4"]
    run = write_run(folder, "signal-gunpoint", sets, (1, 16))
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "kind": "signal"}))
    return run


@pytest.mark.parametrize(
    "argv, needle",
    [
        # a --cut past the series' length sliced from its end (-1 points: it ran as --cut 1, recorded as asked)
        (["--cut", "17"], "--cut 17 leaves nothing of series of 16 points"),
        # --index/--n past the held-out series forecast fewer series than asked, as the image commands refuse
        (["--index", "49", "--n", "3"], "--index/--n ask for examples 49 to 51; the holdout data has 50 (0 to 49)"),
    ],
)
def test_forecast_refuses_a_cut_or_selection_past_the_series(tmp_path, argv, needle):
    run = _tiny_signal_run(tmp_path / "run")
    out = tmp_path / "fc.png"
    rc, _, err = cli("outpaint", run, "--right", "4", "--samples", "2", *argv, "--out", out)
    assert_clean_error(rc, err, needle)
    assert not list(tmp_path.glob("fc*"))


def test_forecasts_manifest_records_the_repaint_jump_that_ran(tmp_path):
    """A forecast with --resample 2 ran with RePaint's jump steps // 4 and its manifest left the jump out."""
    run = _tiny_signal_run(tmp_path / "run")
    out = tmp_path / "fc.png"
    rc, _, err = cli("outpaint", run, "--right", "4", "--n", "1", "--samples", "2", "--resample", "2", "--out", out)
    assert rc == 0, err
    edit = json.loads((tmp_path / "fc.png.manifest.json").read_text())["sampling"][0]["wrappers"][0]
    assert edit["jump"] == 1 and edit["resample"] == 2  # 4 steps


def test_forecast_and_impute_refuse_a_guidance_interval_off_the_grid_they_walk(tmp_path):
    """An autoguidance interval holding no noise level of the grid a forecast or an imputation walks guided
    nothing, without a word; refused in one line as `sample` refuses it, nothing written."""
    import hashlib
    import shutil

    from tinyruns import write_run
    from torchdiffusion.training.checkpoint import GUIDE_FILE, WEIGHTS_KEY

    tiny = ["model.channels=8", "model.attn_resolutions=4", "model.groups=4", "model.head_channels=8"]
    sets = [*tiny, "data.signal_length=16", "sample.sampler=euler", "sample.steps=4", "train.guide_at=0.5"]
    run = write_run(tmp_path / "run", "signal-gunpoint", sets, (1, 16))
    shutil.copy(run / "ema.safetensors", run / GUIDE_FILE)  # a guide: the run's own weights
    info = {**json.loads((run / "run.json").read_text()), "kind": "signal"}
    files = ("ema.safetensors", "model.safetensors", GUIDE_FILE)
    info[WEIGHTS_KEY] = {f: hashlib.sha256((run / f).read_bytes()).hexdigest() for f in files}
    (run / "run.json").write_text(json.dumps(info))
    gaps = np.sin(np.arange(16.0) / 3)[None, None].astype(np.float32)
    gaps[..., 5:9] = np.nan
    np.save(tmp_path / "gaps.npy", gaps)
    guided = ["--set", "sample.autoguidance=2", "--set", "sample.guidance_interval=100,200"]  # sigma_max is 80
    for argv, out in [
        (["outpaint", run, "--right", "4", "--n", "1", "--samples", "2"], tmp_path / "fc.png"),
        (["impute", run, "--series", tmp_path / "gaps.npy"], tmp_path / "f.npy"),
    ]:
        rc, _, err = cli(*argv, *guided, "--out", out)
        assert_clean_error(rc, err, "holds no noise level of the grid the sampler walks")
        assert not list(tmp_path.glob(f"{out.stem}*"))


@pytest.mark.parametrize("gaps", [True, False])
def test_signal_evaluation_asks_for_the_classes_the_training_series_held(tmp_path, monkeypatch, gaps):
    """evaluate on a class-conditional signal run of a 5-class network whose training series held labels 0, 1, 3
    (run.json num_classes 4, classes_without_examples [2]): sample k asks for class [0, 1, 3][k mod 3], and the
    Gaussian-process baseline draws the same classes; labels 0..4 (every class) keep k mod 5 for both."""
    import torchdiffusion.generate as gen
    from tinyruns import write_run
    from torchdiffusion.evaluation.signals import GaussianProcess, evaluate_signal_run

    held = [0, 1, 3] if gaps else [0, 1, 2, 3, 4]
    rng = np.random.default_rng(0)
    labels = np.tile(held, 40 // len(held) + 1)[:30]
    x = (np.sin(np.arange(16) / (1 + labels[:, None])) + rng.normal(0, 0.1, (30, 16)))[:, None].astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, labels=labels)
    tiny = ["model.channels=8", "model.attn_resolutions=4", "model.groups=4", "model.head_channels=8"]
    sets = [*tiny, "model.num_classes=5", "data.source=array", f"data.path={tmp_path / 's.npz'}", "data.holdout=6"]
    run = write_run(tmp_path / "run", "signal-gunpoint", [*sets, "data.signal_length=null"], (1, 16))
    info = json.loads((run / "run.json").read_text())
    gap = {"kind": "signal", "num_classes": held[-1] + 1, "classes_without_examples": [2] if gaps else []}
    (run / "run.json").write_text(json.dumps({**info, **gap}))
    asked, baseline = [], []
    monkeypatch.setattr(gen, "generate", lambda m, seeds, s, shape, cond=None, **kw: (
        asked.append(cond["class"]), torch.randn(len(list(seeds)), *shape))[1])  # fmt: skip
    drawn = GaussianProcess.sample
    monkeypatch.setattr(GaussianProcess, "sample", lambda gp, y, seed=0: (baseline.append(y), drawn(gp, y, seed))[1])
    evaluate_signal_run(gen.load_run(run), n=7, seed=0, progress=False)
    want = torch.tensor(held)[torch.arange(7) % len(held)]
    assert asked[0].equal(want) and baseline[0].equal(want)
