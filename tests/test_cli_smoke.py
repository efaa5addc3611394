"""The command line end to end: train a few steps, sample a grid and a GIF, and refuse bad input cleanly."""

import json

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from test_cli_errors import assert_clean_error
from tinyruns import td


def _is_png(path):
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_few_steps_then_sample_grid_and_gif(tmp_path):
    run = tmp_path / "run"
    rc, _, err = td("train", "--preset", "digits-test", "--set", "train.images=256", "--out", str(run), "--no-progress")
    assert rc == 0, err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "digits-test" and cfg["train"]["images"] == 256
    ema, raw = (load_file(str(run / f"{w}.safetensors")) for w in ("ema", "model"))
    assert ema and ema.keys() == raw.keys()  # the EMA copy has every weight of the model, each finite
    assert all(ema[k].shape == raw[k].shape and torch.isfinite(ema[k]).all() for k in ema)
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(np.isfinite(l["loss"]) for l in lines)

    png = tmp_path / "grid.png"
    rc, out, err = td(
        "sample",
        str(run),
        "--sampler",
        "dpmpp_2m",
        "--steps",
        "3",
        "--n",
        "6",
        "--seed",
        "3",
        "--gif",
        "--out",
        str(png),
    )
    assert rc == 0, err
    assert _is_png(png)
    gif = png.with_suffix(".gif")
    assert gif.exists() and gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    with Image.open(gif) as im:
        assert im.n_frames >= 3  # one frame per step (x_t beside x0_hat)
    # the resolved sampling config is saved beside the artefact
    side = [p for p in tmp_path.iterdir() if p.suffix == ".json"]
    assert side, list(tmp_path.iterdir())

    # the same seed gives the same image; a different seed a different one
    png2 = tmp_path / "again.png"
    rc, _, err = td(
        "sample", str(run), "--sampler", "dpmpp_2m", "--steps", "3", "--n", "6", "--seed", "3", "--out", str(png2)
    )
    assert rc == 0, err
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(png2)))


def test_toy_run_samples_a_scatter_plot(tmp_path):
    run = tmp_path / "toy"
    rc, _, err = td(
        "train",
        "--preset",
        "toy-2d",
        "--set",
        "train.images=1024",
        "--set",
        "data.toy_size=1024",
        "--set",
        "sample.n=200",  # the end-of-training scatter: as small as the one sampled below
        "--set",
        "sample.steps=4",
        "--out",
        str(run),
        "--no-progress",
    )
    assert rc == 0, err
    png = tmp_path / "toy.png"
    rc, _, err = td("sample", str(run), "--steps", "4", "--n", "200", "--out", str(png))
    assert rc == 0, err
    assert _is_png(png)


def assert_training_refused(tmp_path, overrides, needle):
    """``train --preset digits-test --set ...`` fails with one clean line naming ``needle`` and writes no run."""
    out = tmp_path / "run"
    sets = [a for o in overrides for a in ("--set", o)]
    rc, _, err = td("train", "--preset", "digits-test", *sets, "--out", str(out))
    assert_clean_error(rc, err, needle)
    assert not out.exists()


def test_corrupt_image_in_folder(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    for k in range(3):
        Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(pics / f"ok{k}.png")
    (pics / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert_training_refused(tmp_path, ["data.source=folder", f"data.path={pics}"], "broken.png")


def test_array_of_the_wrong_shape(tmp_path):
    arr = tmp_path / "x.npy"
    np.save(arr, np.zeros((4, 2, 2, 3, 4, 5), np.uint8))  # 6-D: neither images nor volumes
    assert_training_refused(tmp_path, ["data.source=array", f"data.path={arr}"], "shape")


def test_size_not_divisible_by_the_levels(tmp_path):
    assert_training_refused(tmp_path, ["data.image_size=6,6", "model.channel_mult=1,2,2"], "divisible")


def test_damaged_weights_file(tmp_path):
    run = tmp_path / "run"
    rc, _, err = td("train", "--preset", "digits-test", "--set", "train.images=64", "--out", str(run), "--no-progress")
    assert rc == 0, err
    (run / "ema.safetensors").write_bytes(b"garbage")
    before = sorted(p.name for p in run.rglob("*"))
    rc, _, err = td("sample", str(run), "--steps", "2", "--n", "2")
    assert_clean_error(rc, err, "ema.safetensors")
    assert sorted(p.name for p in run.rglob("*")) == before
