"""Every advertised command-line path works end to end: options, presets, GIFs, stops, evaluation messages."""

import signal

import numpy as np
import pytest
import torch
from PIL import Image

from tinyruns import CLASS_RUN, assert_clean_stop, run_and_stop, td, write_run


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
        "interval": ["--guidance-interval", "0.5,2"],
    }.items():
        png = tmp_path / f"{name}.png"
        rc, _, err = td(*base, *extra, "--out", png)
        assert rc == 0, err
        outs[name] = _pixels(png)
    assert np.abs(outs["rescale"] - outs["plain"]).max() > 0
    assert np.abs(outs["interval"] - outs["plain"]).max() > 0
    rc, _, err = td(*base, "--guidance-rescale", "1.5", "--out", tmp_path / "bad.png")
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


def test_end_of_training_grid_has_a_bar_and_stops_at_the_first_ctrl_c(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--preset", "digits-test", "--set", "train.images=64", "--set", "sample.steps=100000"]
    rc, err, seen = run_and_stop([*args, "--out", out], signal.SIGINT, when=rb"sample grid.*\[\d\d:\d\d")
    assert_clean_stop(rc, err, seen, signal.SIGINT)
    assert (out / "ema.safetensors").is_file() and not list((out / "samples").glob("grid-*.png"))


def test_emoji_text_preset_trains_from_the_command_line(tmp_path):
    out = tmp_path / "text"
    settings = ["train.images=32", "train.batch_size=16", "data.limit=48", "sample.n=2", "sample.steps=2"]
    rc, _, err = td("train", "--preset", "emoji-text", *[a for s in settings for a in ("--set", s)], "--out", out)
    assert rc == 0, err[-2000:]
    assert (out / "ema.safetensors").is_file()
    png = tmp_path / "apple.png"
    rc, _, err = td("sample", out, "--prompt", "red apple", "--n", "2", "--steps", "2", "--out", png)
    assert rc == 0, err[-2000:]
    assert png.is_file()


@pytest.fixture(scope="module")
def noisy_classifier(tmp_path_factory):
    """A noise-aware classifier file with random weights (10 classes, 1 channel), as train-classifier writes."""
    from torchdiffusion.guidance import NoisyClassifier, NoisyClassifierConfig, save_noisy_classifier

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
    rc, _, err = td(*base, "--out", tmp_path / "plain.png")
    assert rc == 0, err
    png = tmp_path / "guided.png"
    rc, _, err = td(*base, "--classifier", noisy_classifier, "--classifier-scale", "30", "--gif", "--out", png)
    assert rc == 0, err
    guided, plain = np.load(png.with_suffix(".npy")), np.load(tmp_path / "plain.npy")
    want = make_grid(torch.from_numpy(guided), nrow=2)[..., 0].astype(np.int16)
    other = make_grid(torch.from_numpy(plain), nrow=2)[..., 0].astype(np.int16)
    assert np.abs(want - other).mean() > 5  # the guidance matters, so a re-run without it would show
    frame = _last_gif_frame(png.with_suffix(".gif"))[::3, ::3][:, : want.shape[1]]  # left panel: x_t at sigma 0
    assert np.abs(frame - want).max() <= 1
