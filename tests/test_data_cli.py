"""Data kinds from the command line, end to end: 1-D signals, many-channel arrays, 16-bit PNG/TIFF folders, the
synthetic course sprites and the preset whose context width comes from the labels. Commands run through the CLI's
``main`` in this process (``tinyruns.cli``: the same parsing, code and one-line errors as ``python -m
torchdiffusion``, without a torch import each); the sprite maker runs as the real process the page tells users
to start."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from test_cli_errors import assert_clean_error
from test_data_kinds import sines
from tinyruns import cli

TINY = ["--set", "train.images=64", "--set", "train.batch_size=32", "--set", "train.warmup_images=0", "--no-progress"]


def run(*args: str, cwd=None) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300)
    return r.returncode, r.stdout, r.stderr


def train_array(tmp_path, path, *extra: str) -> dict:
    out = tmp_path / f"run-{path.stem}"
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=array", "--set", f"data.path={path}",
                     "--out", str(out), *TINY, *extra)  # fmt: skip
    assert rc == 0, err
    return json.loads((out / "run.json").read_text()) | {"path": out}


def test_signals_train_and_sample_as_signals(tmp_path):
    np.save(tmp_path / "sig.npy", sines(24, channels=2, length=32))
    info = train_array(tmp_path, tmp_path / "sig.npy")
    assert info["kind"] == "signal" and info["data_shape"] == [2, 32]
    assert list((info["path"] / "samples").glob("*.png"))  # the end-of-training picture: line plots
    out = tmp_path / "s.png"
    rc, _, err = cli("sample", str(info["path"]), "--sampler", "euler", "--steps", "3", "--n", "5",
                     "--save-npy", "--gif", "--out", str(out))  # fmt: skip
    assert rc == 0, err
    x = np.load(out.with_suffix(".npy"))
    assert x.shape == (5, 2, 32) and np.isfinite(x).all()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 200  # a figure, not a 32 px strip
    with Image.open(out.with_suffix(".gif")) as im:
        assert im.n_frames >= 2


def test_six_channel_arrays_in_either_layout(tmp_path):
    u = np.random.default_rng(0).integers(0, 256, (16, 6, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "last.npy", u.transpose(0, 2, 3, 1))
    np.save(tmp_path / "first.npy", u)
    assert train_array(tmp_path, tmp_path / "first.npy")["data_shape"] == [6, 8, 8]
    info = train_array(tmp_path, tmp_path / "last.npy")
    assert info["kind"] == "image" and info["data_shape"] == [6, 8, 8]
    out = tmp_path / "six.png"
    rc, _, err = cli("sample", str(info["path"]), "--steps", "2", "--n", "4", "--save-npy", "--out", str(out))
    assert rc == 0, err
    assert "channels 1-3 as RGB of the 6 channels" in err
    assert np.load(out.with_suffix(".npy")).shape == (4, 6, 8, 8)
    with Image.open(out) as im:
        assert im.mode == "RGB"


def test_16bit_png_and_tiff_folder_trains(tmp_path):
    rng = np.random.default_rng(1)
    pics = tmp_path / "pics"  # the run folder goes beside the images, not among them
    pics.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 65536, (8, 8), dtype=np.uint16)).save(pics / f"a{i}.tif")
        Image.fromarray(rng.integers(0, 65536, (8, 8), dtype=np.uint16)).save(pics / f"b{i}.png")
    out = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=folder", "--set",
                     f"data.path={pics}", "--out", str(out), *TINY)  # fmt: skip
    assert rc == 0, err
    assert json.loads((out / "run.json").read_text())["data_shape"] == [1, 8, 8]


def test_shapes_that_cannot_work_are_one_line_errors(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((4, 8, 8, 8), np.uint8))
    np.save(tmp_path / "odd.npy", sines(4, length=33))
    np.save(tmp_path / "sig.npy", sines(4))
    base = ["train", "--preset", "digits-test", "--set", "data.source=array", "--out", str(tmp_path / "r")]
    rc, _, err = cli(*base, "--set", f"data.path={tmp_path / 'cube.npy'}")
    assert_clean_error(rc, err, "cannot tell the channel axis")
    rc, _, err = cli(*base, "--set", f"data.path={tmp_path / 'odd.npy'}")
    assert_clean_error(rc, err, "signal length 33 is not divisible by 2")
    rc, _, err = cli(*base, "--set", f"data.path={tmp_path / 'sig.npy'}", "--set", "data.image_size=8,8")
    assert_clean_error(rc, err, "apply to images")
    assert not (tmp_path / "r").exists()


def test_course_sprites_preset_takes_the_context_width_from_the_labels(tmp_path):
    rc, out, err = run("-m", "torchdiffusion.data.sprites", "--out", "sprites", "--n", "40", cwd=tmp_path)
    assert rc == 0, err
    x = np.load(tmp_path / "sprites" / "sprites_1788_16x16.npy")
    y = np.load(tmp_path / "sprites" / "sprite_labels_nc_1788_16x5.npy")
    assert x.shape == (40, 16, 16, 3) and x.dtype == np.uint8 and y.shape == (40, 5)
    short = ["--set", "train.images=40", "--set", "sample.sampler=ddim", "--set", "sample.steps=3", "--no-progress"]
    short += ["--set", "model.channels=16", "--set", "sample.n=4"]  # a narrower net: the widths checked are context
    rc, _, err = cli("train", "--preset", "course-sprites", "--out", "run", *short, cwd=tmp_path)  # the page's paths
    assert rc == 0, err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["context_dim"] == 5 and cfg["train"]["cond_drop_prob"] == 0.1
    d = cfg["diffusion"]
    assert (d["T"], d["schedule"], d["beta_start"], d["beta_end"]) == (500, "linear", 1e-4, 0.02)
    rc, _, err = cli("sample", "run", "--sampler", "ddim", "--steps", "3", "--n", "4", "--context", "0.5,0,0.5,0,0",
                     "--out", "mix.png", cwd=tmp_path)  # fmt: skip
    assert rc == 0, err
    # three categories instead of five: the width follows the labels file, not a number in the preset
    np.save(tmp_path / "three.npy", np.eye(3)[np.arange(40) % 3])
    rc, _, err = cli("train", "--preset", "course-sprites", "--set", "data.labels_path=three.npy", "--out", "run3",
                     *short, cwd=tmp_path)  # fmt: skip
    assert rc == 0, err
    assert json.loads((tmp_path / "run3" / "config.json").read_text())["model"]["context_dim"] == 3


def test_labels_given_to_a_model_without_conditioning_are_refused(tmp_path):
    rc, _, err = cli("train", "--preset", "course-sprites", "--out", "run", cwd=tmp_path)  # no sprites yet
    assert_clean_error(rc, err, "python -m torchdiffusion.data.sprites --out DIR")
    rc, _, err = run("-m", "torchdiffusion.data.sprites", "--out", "sprites", "--n", "10", cwd=tmp_path)
    assert rc == 0, err
    rc, _, err = cli("train", "--preset", "course", "--set", "data.source=array",
                     "--set", "data.path=sprites/sprites_1788_16x16.npy",
                     "--set", "data.labels_path=sprites/sprite_labels_nc_1788_16x5.npy",
                     "--out", "run", cwd=tmp_path)  # fmt: skip
    assert_clean_error(rc, err, "set model.context_dim=5")
    assert not (tmp_path / "run").exists()
    rc, _, err = run("-m", "torchdiffusion.data.sprites", "--out", "sprites", "--n", "0", cwd=tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "must be >= 1" in err


def test_data_seed_sets_the_split_apart_from_the_run_seed(tmp_path):
    """data.seed = train.seed is the default bit for bit; another data.seed trains on another split."""
    from safetensors.torch import load_file

    def weights(name, data_seed=None):
        out = tmp_path / name
        sets = ["data.holdout=200", "train.seed=1", *([f"data.seed={data_seed}"] if data_seed is not None else [])]
        rc, _, err = cli(
            "train", "--preset", "digits-test", "--out", str(out), *TINY, *[a for s in sets for a in ("--set", s)]
        )
        assert rc == 0, err
        assert json.loads((out / "config.json").read_text())["data"]["seed"] == data_seed
        return load_file(out / "model.safetensors")

    default, same, other = weights("a"), weights("b", 1), weights("c", 0)
    assert all(torch.equal(default[k], same[k]) for k in default)
    assert any(not torch.equal(default[k], other[k]) for k in default)


def test_a_class_the_labels_skip_is_refused_at_sample_time_naming_the_classes_held(tmp_path):
    """Labels 0, 1, 3: class 2's embedding was never trained, like a class above the largest label; run.json
    records the class the labels skip, and --class 2 is refused in one line naming the classes the data hold."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "gap.npz", x=rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), labels=np.tile([0, 1, 3], 4))
    out = tmp_path / "run"
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=array", "--set",
                     f"data.path={tmp_path / 'gap.npz'}", "--set", "data.holdout=0", "--set", "model.num_classes=5",
                     "--out", out, *TINY)  # fmt: skip
    assert rc == 0, err
    info = json.loads((out / "run.json").read_text())
    assert (info["num_classes"], info["classes_without_examples"]) == (4, [2])
    for classes in ("2", "1,2", "4"):
        rc, _, err = cli("sample", out, "--class", classes, "--n", "1", "--steps", "2", "--out", tmp_path / "s.png")
        assert_clean_error(rc, err, "no training example had that class")
        assert "hold classes 0-1, 3 (of the network's 5)" in err
    assert not (tmp_path / "s.png").exists()
    rc, _, err = cli("sample", out, "--class", "3", "--n", "1", "--steps", "2", "--out", tmp_path / "s.png")
    assert rc == 0, err


def test_a_folder_class_whose_images_are_all_held_out_is_a_class_without_examples(tmp_path):
    """The folder's classes are its sub-folders; one whose only image the holdout takes is recorded as a class no
    training example had (and so is a labelled array's skipped label), the classes around it kept."""
    from torchdiffusion.config import DataConfig
    from torchdiffusion.data import load_data, split_indices
    from torchdiffusion.training.loop import classes_without_examples

    rng = np.random.default_rng(1)
    for name, n in (("a", 3), ("b", 1), ("c", 3)):
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "pics" / name / f"{i}.png")
    seed = next(s for s in range(100) if int(split_indices(7, 1, s)[1][0]) == 3)  # file 3: b/0.png
    d = load_data(DataConfig(source="folder", path=str(tmp_path / "pics"), holdout=1, seed=seed))
    assert sorted(set(d.labels.tolist())) == [0, 2] and classes_without_examples(d) == [1]
    whole = load_data(DataConfig(source="folder", path=str(tmp_path / "pics")))
    assert classes_without_examples(whole) == []
