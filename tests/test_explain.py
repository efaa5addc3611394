"""The explain pictures: their numbers checked against the process/oracles, their files written atomically."""

import json
import math

import pytest
import torch

from pictures import TAB_BLUE, TAB_ORANGE, assert_plot, gif_frames
from torchdiffusion import explain as ex
from torchdiffusion.analytic import IsotropicGaussian, eight_gaussians
from torchdiffusion.process import DiscreteVP


def test_forward_strip_follows_q_xt_given_x0(tmp_path):
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    out = ex.forward_strip(x0, [0, 500, 999], schedules=("linear", "cosine"), T=1000, path=tmp_path / "f.png")
    assert not list(tmp_path.glob("*.tmp*"))
    assert_plot(tmp_path / "f.png")
    for name, x in out.items():
        assert x.shape == (3, 3, 1, 8, 8)
        ab = DiscreteVP(name, 1000).alpha_bars
        n = (x[:, 1] - ab[500].sqrt() * x0) / (1 - ab[500]).sqrt()  # the same noise at every t ...
        for k, t in ((0, 0), (2, 999)):  # ... so every column is sqrt(abar_t) x0 + sqrt(1 - abar_t) n
            assert torch.allclose(x[:, k], (ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * n).float(), atol=1e-4)
    # ... and the same noise for both schedules: only alpha_bar differs
    assert not torch.allclose(out["linear"][:, 1], out["cosine"][:, 1])
    with pytest.raises(ex.ExplainError):
        ex.forward_strip(x0, [1000], T=1000)


def test_forward_strip_labels_sit_over_their_columns_for_wide_images(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(ex, "_save_fig", lambda fig, path: figs.append(fig))
    ex.forward_strip(torch.zeros(2, 1, 8, 32), [0, 100, 500, 999], schedules=("linear",), path=tmp_path / "w.png")
    ticks = list(figs[0].axes[0].get_xticks())
    assert len(ticks) == 4
    for k, x in enumerate(ticks):  # make_grid(pad=1): column k spans [1 + 33 k, 1 + 33 k + 32)
        assert 1 + 33 * k <= x < 1 + 33 * k + 32, (k, x)


def test_schedule_curves_are_consistent():
    c = ex.schedule_curves(T=200)
    for name, d in c.items():
        ab = torch.as_tensor(d["alpha_bar"])
        snr = 10 ** torch.as_tensor(d["log10_snr"])
        assert torch.allclose(snr, ab / (1 - ab), rtol=1e-6), name
        assert torch.allclose(torch.as_tensor(d["sigma"]) ** 2, 1 / snr, rtol=1e-6), name
        assert (ab[1:] <= ab[:-1]).all(), name  # less signal as t grows
    assert math.isclose(c["edm"]["sigma"][-1], 80.0) and math.isclose(c["edm"]["sigma"][0], 0.002)


def test_plot_schedules_writes_png(tmp_path):
    curves = ex.plot_schedules(tmp_path / "s.png", T=50)
    assert list(curves) == ["linear", "cosine", "sigmoid", "edm"]
    # three panels side by side, with the first two schedules' curves drawn in their colours
    assert_plot(tmp_path / "s.png", min_aspect=2.5, colours=(TAB_BLUE, TAB_ORANGE))


def test_loss_by_noise_reads_metrics(tmp_path):
    recs = [
        {"images_seen": 100 * (i + 1), "loss": 1.0 / (i + 1), "loss_by_sigma": [2.0 / (i + 1), None, 0.5]}
        for i in range(4)
    ]
    recs[0].update(loss_by_sigma_unit="t", loss_by_sigma_edges=[0, 10, 20, 30])
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + '\n{"partial')
    d = ex.plot_loss_by_noise(tmp_path, tmp_path / "loss.png")
    assert d["by_noise"].shape == (4, 3) and d["unit"] == "t" and d["edges"] == [0, 10, 20, 30]
    assert math.isnan(d["by_noise"][0, 1])
    assert_plot(tmp_path / "loss.png")
    with pytest.raises(ex.ExplainError):
        ex.plot_loss_by_noise(tmp_path / "nowhere")


def test_field_of_the_exact_mixture_points_to_the_modes(tmp_path):
    mix = eight_gaussians()
    d = ex.field_data(mix.denoise, [0.5], lim=3.0, grid=13)
    near = torch.cdist(d["xy"], mix.means).min(1).values < 0.3  # lattice points next to a mode ...
    assert near.sum() >= 8
    target = d["xy"] + d["arrows"][0]  # ... are moved onto it: D(x, sigma) = x + arrow
    assert torch.cdist(target[near], mix.means).min(1).values.max() < 0.05
    # the empirical exact denoiser of samples of the data behaves the same way
    D_emp, _ = ex.exact_denoiser_for(mix.sample(2000, torch.Generator().manual_seed(0)), toy=None)
    e = ex.field_data(D_emp, [0.5], lim=3.0, grid=13)
    assert torch.cdist((e["xy"] + e["arrows"][0])[near], mix.means).min(1).values.max() < 0.1
    res = ex.plot_field(
        mix.denoise,
        mix.denoise,
        [0.1, 1.0],
        torch.tensor([10.0, 3.0, 1.0, 0.3, 0.05, 0.0]),
        path=tmp_path / "field.png",
    )
    paths = res["learned"]["paths"]
    assert paths.shape == (24, 6, 2)
    assert torch.cdist(paths[:, -1].double(), mix.means).min(1).values.max() < 0.3  # trajectories reach the modes


class _Oracle(torch.nn.Module):
    """A Precond-like model whose denoiser is the exact one of N(0, 0.5^2), on a discrete linear process."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.process = DiscreteVP("linear", 1000)
        self.sigma_min, self.sigma_max = self.process.sigma_min, self.process.sigma_max
        self.data = IsotropicGaussian(0.0, 0.5)

    def forward(self, x, sigma, cond=None):
        return self.data.denoise(x, sigma)

    def bind(self, cond=None):
        return lambda x, sigma: self(x, sigma, cond)


def test_ablation_without_re_added_noise_collapses_the_variance(tmp_path):
    from torchdiffusion.config import SampleConfig

    model = _Oracle()
    sample = SampleConfig(sampler="heun", steps=20, grid="uniform_t", clip_denoised=False)
    out = ex.ablation(model, sample, (1, 4, 4), list(range(64)), ddpm_steps=250, path=tmp_path / "a.png")
    var = {k.split(",")[0].split(":")[0]: v.var().item() for k, v in out.items()}
    assert abs(var["DDPM"] - 0.25) < 0.05  # correct ancestral sampling reproduces the data variance
    assert var["DDPM without re-added noise"] < 0.02  # the "incorrect" sampler collapses to the mean
    assert var["one shot"] < 1e-3  # D(sigma_max n) is the mean for Gaussian data
    assert abs(var["heun"] - 0.25) < 0.05
    assert_plot(tmp_path / "a.png")


class _ClassOracle(_Oracle):
    """Class c of K = 4: N(mu_c, 0.5^2) with mu_c = c - 1.5, its exact denoiser; no class: the null class, mean 0."""

    def __init__(self):
        super().__init__()
        self.net = type("Net", (), {"num_classes": 4})()  # what generate.num_classes reads

    def forward(self, x, sigma, cond=None):
        mu = torch.zeros(len(x), dtype=x.dtype)
        if cond is not None and "class" in cond:
            mu = cond["class"].to(x.dtype) - 1.5
        mu = mu.view(-1, *([1] * (x.ndim - 1)))
        s2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return mu + (x - mu) * 0.25 / (0.25 + s2)


def test_every_ablation_panel_samples_each_seeds_class():
    """A class-conditional model: the collapsed and one-shot panels end at each seed's class mean (seed mod K with
    labels=cycle), as the two panels that go through generate do - not at the null class's."""
    from torchdiffusion.config import SampleConfig

    seeds = list(range(32))
    sample = SampleConfig(sampler="heun", steps=20, grid="uniform_t", clip_denoised=False, labels="cycle")
    out = ex.ablation(_ClassOracle(), sample, (1, 8, 8), seeds, ddpm_steps=250)
    want = torch.tensor([s % 4 - 1.5 for s in seeds])
    for label, x in out.items():
        means = x.flatten(1).mean(1)
        tol = 0.02 if label.startswith(("one shot", "DDPM without")) else 0.4  # collapsed panels sit at the mean
        assert (means - want).abs().max() < tol, label


def test_trajectory_records_every_step(tmp_path):
    from torchdiffusion.config import SampleConfig

    model = _Oracle()
    sample = SampleConfig(sampler="euler", steps=6, clip_denoised=False)
    res = ex.denoising_trajectory(
        model, sample, (1, 4, 4), [0, 1, 2, 3], gif=tmp_path / "t.gif", png=tmp_path / "t.png"
    )
    assert len(res["xs"]) == 6 and res["sigmas"][-1] == 0.0
    assert torch.allclose(res["xs"][-1], res["x"])
    # x0_hat of a step is D at the level the step started from: the grid's first sigma, then each x_t's
    assert res["x0_sigmas"][1:] == pytest.approx(res["sigmas"][:-1]) and res["x0_sigmas"][0] > res["sigmas"][0]
    frames = gif_frames(tmp_path / "t.gif")
    assert len(frames) == 6  # one frame per step: x_t beside x0_hat
    assert (frames[0] != frames[-1]).any()  # the noise is gone by the last step
    assert_plot(tmp_path / "t.png")


def test_the_forward_pictures_draw_a_users_own_files(tmp_path):
    """explain forward / table-forward / volume-forward --data PATH: a folder of images of two sizes and 16-bit
    depth, a folder of WAV recordings, an array in kelvins, a CSV table and a TIFF z-stack are drawn by the source
    their kind takes; a path that is none of these is one line."""
    import wave

    import numpy as np
    from PIL import Image

    from test_cli_errors import assert_clean_error
    from tinyruns import cli

    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "photos" / "a.png")
    Image.fromarray(rng.integers(0, 65536, (20, 50), dtype=np.uint16)).save(tmp_path / "photos" / "b.png")
    (tmp_path / "clips").mkdir()
    for i in range(3):
        with wave.open(str(tmp_path / "clips" / f"{i}.wav"), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes(rng.integers(-9000, 9000, 64).astype("<i2").tobytes())
    np.save(tmp_path / "kelvins.npy", (280 + 20 * rng.random((5, 1, 16, 16))).astype(np.float32))
    rows = "\n".join(f"{rng.random():.3f},{rng.random():.3f},{'ab'[i % 2]}" for i in range(40))
    (tmp_path / "table.csv").write_text("x,y,kind\n" + rows + "\n")
    pages = [Image.fromarray(rng.integers(0, 4096, (8, 8)).astype(np.uint16)) for _ in range(8)]
    pages[0].save(tmp_path / "cell.tif", save_all=True, append_images=pages[1:])
    for what, data in (
        ("forward", "photos"),
        ("forward", "clips"),
        ("forward", "kelvins.npy"),
        ("table-forward", "table.csv"),
        ("volume-forward", "cell.tif"),
    ):
        out = tmp_path / f"{what}-{data}.png"
        rc, _, err = cli("explain", what, "--data", tmp_path / data, "--out", out)
        assert rc == 0 and out.is_file(), (what, data, err)
    from torchdiffusion.commands.explain import data_config, load_explained
    from torchdiffusion.data import read_image

    # each image by its own format's range (an 8-bit one beside a 16-bit one is not mapped to near-black), and
    # float TIFFs in kelvins, which are not pixels, by the folder's range
    photos = load_explained(data_config(str(tmp_path / "photos"), "forward"))
    assert photos.value_range is None and photos.x.shape == (2, 3, 64, 64)
    drawn = sorted(float(x.mean()) for x in photos.x)
    alone = sorted(
        float(read_image(tmp_path / "photos" / f, size=(64, 64), channels=3).mean()) for f in ("a.png", "b.png")
    )
    assert np.allclose(drawn, alone, atol=1e-5)
    (tmp_path / "thermal").mkdir()
    for i in range(2):
        Image.fromarray((280 + 20 * rng.random((12, 12))).astype(np.float32)).save(tmp_path / "thermal" / f"{i}.tif")
    thermal = load_explained(data_config(str(tmp_path / "thermal"), "forward"))
    assert thermal.x.min() == -1 and thermal.x.max() == 1
    rc, _, err = cli("explain", "forward", "--data", tmp_path / "nowhere", "--out", tmp_path / "n.png")
    assert_clean_error(rc, err, "neither a data source")
    rc, _, err = cli("explain", "forward", "--data", "", "--out", tmp_path / "n.png")  # not the current folder
    assert_clean_error(rc, err, "--data was given an empty value")
    rc, _, err = cli("explain", "volume-forward", "--data", tmp_path / "clips", "--out", tmp_path / "v.png")
    assert_clean_error(rc, err, "a folder without the files 'explain volume-forward' reads")
    assert not (tmp_path / "n.png").exists() and not (tmp_path / "v.png").exists()


def test_explain_options_are_read_or_refused(tmp_path):
    """Options that changed nothing in the picture: --set of what the field's Heun paths do not read (a sampler,
    its settings, seeds), steps past its 24, --weights of a picture drawn without a model, more schedules than
    the signal strip draws (it drew the default cosine under any name), more series than it draws."""
    from tinyruns import cli, write_run

    toy = write_run(tmp_path / "toy", "toy-2d", ["data.limit=400"], (2,))
    out = tmp_path / "f.png"
    for args, says in [
        (["field", toy, "--set", "sample.sampler=euler"], "'explain field' draws Heun paths and reads only"),
        (["field", toy, "--set", "sample.settings.s_churn=40"], "reads only sample.steps"),
        (["field", toy, "--steps", "30"], "at most 24 steps, got 30"),
        (["field", toy, "--set", "sample.steps=30"], "at most 24 steps, got 30"),
        (["forward", toy, "--weights", "model"], "does not read --weights"),
        (["volume-forward", "--data", "shapes3d", "--weights", "model"], "does not read --weights"),
        (["volume-forward", toy, "--weights", "model"], "does not read --weights"),  # the data alone: no model
        (["table-forward", "--data", "sklearn:iris", "--weights", "model"], "--weights is read with a run only"),
        (["forward", "--data", "ucr:GunPoint", "--schedules", "linear", "cosine"], "draws one schedule"),
        (["forward", "--data", "ucr:GunPoint", "--images", "11"], "at most 10 series, got 11"),
    ]:
        rc, _, err = cli("explain", *args, "--out", out)
        assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not out.exists()
    assert cli("explain", "field", toy, "--steps", "6", "--out", out)[0] == 0
    (paths,) = json.loads((tmp_path / "f.png.manifest.json").read_text())["sampling"]  # the Heun paths it drew
    assert (paths["sampler"], paths["steps"], paths["n"]) == ("heun", 6, 24) and len(paths["grid_used"]["sigmas"]) == 7
    digits = write_run(tmp_path / "digits", "digits-test", [])
    assert cli("explain", "trajectory", digits, "--steps", "2", "--set", "sample.n=3", "--out", out)[0] == 0
    manifest = json.loads((tmp_path / "f.png.manifest.json").read_text())
    assert manifest["sampling"][0]["n"] == 3  # --set sample.n was dropped for the picture's own 16
    assert cli("explain", "forward", "--data", "ucr:GunPoint", "--t", "0", "500", "--images", "5", "--out", out)[0] == 0


def test_fractional_timesteps_are_refused_not_rounded():
    from torchdiffusion.explain import ExplainError, forward_strip, signal_forward

    with pytest.raises(ExplainError, match="whole numbers"):
        forward_strip(torch.zeros(1, 1, 8, 8), [10.5])  # drawn at t = 10 under the label 10.5
    with pytest.raises(ExplainError, match="whole numbers"):
        signal_forward(torch.zeros(1, 1, 16), [0, 2.5])


def test_forward_strip_of_a_run_draws_the_runs_own_process(tmp_path, monkeypatch):
    """A run's strip draws the process it was trained on - its schedule and T, or its continuous process at the
    noise levels --sigmas - and its manifest says so; an option that would draw another process is refused."""
    from test_cli_errors import assert_clean_error
    from tinyruns import cli, write_run

    strips = []
    real = ex.forward_strip
    monkeypatch.setattr(ex, "forward_strip", lambda *a, **k: strips.append((a, k, real(*a, **k))) or strips[-1][2])
    cosine = write_run(tmp_path / "cos", "digits-test", [])  # cosine schedule, T = 100
    out = tmp_path / "f.png"
    assert cli("explain", "forward", cosine, "--images", "2", "--out", out)[0] == 0
    (x0, _), kw, drawn = strips[-1]
    assert list(drawn) == ["cosine"] and kw["processes"][0].vp.T == 100
    ts = [0, 5, 10, 20, 30, 50, 70, 99]  # the default t: fractions of the run's own T
    assert drawn["cosine"].shape[1] == len(ts)
    ab = DiscreteVP("cosine", 100).alpha_bars
    n = (drawn["cosine"][:, -1] - ab[99].sqrt() * x0) / (1 - ab[99]).sqrt()
    assert torch.allclose(drawn["cosine"][:, 3], (ab[20].sqrt() * x0 + (1 - ab[20]).sqrt() * n).float(), atol=1e-4)
    extra = json.loads((tmp_path / "f.png.manifest.json").read_text())["extra"]["forward"]
    abars = [float(ab[t]) for t in ts]  # the alpha_bar_t each column was drawn with, not only the schedule's name
    assert extra == [{"process": "discrete", "schedule": "cosine", "T": 100, "levels": ts, "alpha_bars": abars}]
    # the run's own schedule and T may be named; another is refused, nothing written
    assert (
        cli("explain", "forward", cosine, "--T", "100", "--schedules", "cosine", "--t", "0", "99", "--out", out)[0] == 0
    )
    out.unlink()
    for args, says in [
        (["--schedules", "linear"], "draws its own cosine schedule; --schedules linear would draw another"),
        (["--T", "1000"], "draws its own T = 100; --T 1000 would draw another"),
        (["--t", "0", "999"], "[0, 99]"),
        (["--sigmas", "1"], "its levels are timesteps --t, not --sigmas"),
    ]:
        rc, _, err = cli("explain", "forward", cosine, *args, "--out", out)
        assert_clean_error(rc, err, says)
        assert not out.exists()
    rc, _, err = cli("explain", "forward", "--data", "digits", "--sigmas", "1", "--out", out)
    assert_clean_error(rc, err, "--sigmas is read with a run of a continuous process")

    for name, sets, scale in [  # drawn = (x_0 + sigma n) / scale(sigma): VP scale for EDM, (1 - t) x_0 + t n for flow
        ("edm", ["diffusion.process=continuous", "diffusion.parameterization=edm"], lambda s: (1 + s * s) ** 0.5),
        ("flow", ["diffusion.process=continuous", "diffusion.parameterization=flow"], lambda s: 1 + s),
    ]:
        sets += ["diffusion.noise_conditioning=log_sigma", "diffusion.sigma_sampling=lognormal"]
        run = write_run(tmp_path / name, "digits-test", sets)
        assert cli("explain", "forward", run, "--images", "2", "--sigmas", "0.5", "4", "--out", out)[0] == 0
        (x0, _), kw, drawn = strips[-1]
        kind = "ve" if name == "edm" else "flow"
        assert list(drawn) == [kind]
        n = (drawn[kind][:, 1] * scale(4.0) - x0) / 4.0
        assert torch.allclose(drawn[kind][:, 0], (x0 + 0.5 * n) / scale(0.5), atol=1e-4)  # the same noise at each sigma
        assert 0.5 < float(n.std()) < 1.5
        extra = json.loads((tmp_path / "f.png.manifest.json").read_text())["extra"]["forward"][0]
        assert extra["levels"] == [0.5, 4.0] and "T" not in extra and "schedule" not in extra
        rc, _, err = cli("explain", "forward", run, "--t", "0", "10", "--out", tmp_path / "g.png")
        assert_clean_error(rc, err, "runs a continuous process")
        rc, _, err = cli("explain", "forward", run, "--T", "1000", "--out", tmp_path / "g.png")
        assert_clean_error(rc, err, "drop --T")
        # levels beyond the run's own range, and more images than its data hold, were drawn without a word
        rc, _, err = cli("explain", "forward", run, "--sigmas", "0.5", "81", "--out", tmp_path / "g.png")
        assert_clean_error(rc, err, "--sigmas 81 lies above this run's noise range (sigma up to 80)")
        assert not (tmp_path / "g.png").exists()
    few = write_run(tmp_path / "few", "digits-test", ["data.limit=6"])
    rc, _, err = cli("explain", "forward", few, "--images", "7", "--out", tmp_path / "g.png")
    assert_clean_error(rc, err, "--images 7: the data hold 6 images")
    assert not (tmp_path / "g.png").exists()


def test_forward_strip_of_a_continuous_run_draws_sigma_zero_by_default_and_on_request(tmp_path, monkeypatch):
    """sigma = 0, the clean data, starts the default strip of a continuous run; --sigmas 0 asks for the same column
    (it was refused by the option that the default used)."""
    from tinyruns import cli, write_run

    strips = []
    real = ex.forward_strip
    monkeypatch.setattr(ex, "forward_strip", lambda *a, **k: strips.append((a, k, real(*a, **k))) or strips[-1][2])
    sets = ["diffusion.process=continuous", "diffusion.parameterization=edm", "diffusion.noise_conditioning=log_sigma"]
    sets += ["diffusion.sigma_sampling=lognormal"]
    run, out = write_run(tmp_path / "edm", "digits-test", sets), tmp_path / "f.png"
    assert cli("explain", "forward", run, "--images", "2", "--out", out)[0] == 0
    assert strips[-1][0][1][0] == 0.0
    assert cli("explain", "forward", run, "--images", "2", "--sigmas", "0", "4", "--out", out)[0] == 0
    (x0, levels), _, drawn = strips[-1]
    assert levels == [0.0, 4.0] and torch.allclose(drawn["ve"][:, 0], x0, atol=1e-6)
    extra = json.loads((tmp_path / "f.png.manifest.json").read_text())["extra"]["forward"][0]
    assert extra["levels"] == [0.0, 4.0]


def test_a_loss_bucket_starting_at_zero_is_left_out_without_a_warning(tmp_path):
    """A distilled student's metrics can hold a bucket whose first loss is 0: its ratio to its first value was 0/0,
    a numpy RuntimeWarning on stderr; it is not drawn (no ratio on a log scale), the other buckets are."""
    import warnings

    p = tmp_path / "metrics.jsonl"
    rows = [{"loss": 1.0, "images_seen": i, "loss_by_sigma": [0.0, 1.0 / i]} for i in (1, 2)]
    p.write_text("\n".join(map(json.dumps, rows)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ex.plot_loss_by_noise(p, tmp_path / "loss.png")
    assert_plot(tmp_path / "loss.png")
