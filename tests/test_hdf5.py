"""HDF5 arrays through the array source: datasets in groups found by their names, scalars and strings read as
what they are, only the chosen datasets read; ambiguous or damaged files refused in one line; a missing h5py
named with its install."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from test_cli_errors import assert_clean_error
from tinyruns import cli, td
from torchdiffusion.config import DataConfig
from torchdiffusion.data import DataError, load_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_images_labels_and_names_in_groups_are_read_by_their_names(tmp_path):
    """train/images (N, H, W, C uint8), train/labels, class_names (variable-length strings) and a scalar setting:
    read as the npz of the same arrays would be; a huge dataset no role takes is never read."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    with h5py.File(tmp_path / "set.h5", "w") as f:
        f["train/images"] = images
        f["train/labels"] = labels
        f["class_names"] = np.array(["cat", "dog", "owl"], dtype=h5py.string_dtype())
        f["meta/pixel_pitch"] = 0.5  # a scalar: a setting, not examples
    np.savez(tmp_path / "same.npz", x=images, labels=labels, class_names=np.array(["cat", "dog", "owl"]))
    a = load_data(DataConfig(source="array", path=str(tmp_path / "set.h5"), holdout=0))
    b = load_data(DataConfig(source="array", path=str(tmp_path / "same.npz"), holdout=0))
    assert a.kind == "image" and a.x.shape == (12, 3, 8, 8) and np.array_equal(a.x, b.x)
    assert np.array_equal(a.labels, b.labels) and list(a.class_names) == ["cat", "dog", "owl"]
    with h5py.File(tmp_path / "signals.hdf5", "w") as f:  # series (N, C, L) in their own units
        f.create_dataset("x", data=rng.standard_normal((6, 2, 40)).astype(np.float32) * 300)
    d = load_data(DataConfig(source="array", path=str(tmp_path / "signals.hdf5"), holdout=0, scale="minmax"))
    assert d.kind == "signal" and d.x.shape == (6, 2, 40) and float(d.x.abs().max()) == pytest.approx(1.0)
    from torchdiffusion.data.signal import read_signal_file  # impute's and outpaint's --series

    assert read_signal_file(tmp_path / "signals.hdf5")[0].shape == (6, 2, 40)


def test_ambiguous_damaged_and_unread_hdf5_files_are_one_line(tmp_path):
    rng = np.random.default_rng(1)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["train/x"] = rng.random((4, 8, 8))
        f["test/x"] = rng.random((4, 8, 8))  # one name twice: both go by their paths, and neither is chosen
    with pytest.raises(DataError, match="holds the arrays test/x, train/x; name the examples 'x'"):
        load_data(DataConfig(source="array", path=str(tmp_path / "two.h5"), holdout=0))
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["setting"] = 3
    with pytest.raises(DataError, match="holds no datasets of examples"):
        load_data(DataConfig(source="array", path=str(tmp_path / "empty.h5"), holdout=0))
    with h5py.File(tmp_path / "words.h5", "w") as f:
        f["x"] = np.array(["a", "b"], dtype=h5py.string_dtype())
    with pytest.raises(DataError, match="must be"):
        load_data(DataConfig(source="array", path=str(tmp_path / "words.h5"), holdout=0))
    (tmp_path / "fake.h5").write_text("not HDF5 at all\n")
    with pytest.raises(DataError, match=r"cannot read .*fake.h5"):
        load_data(DataConfig(source="array", path=str(tmp_path / "fake.h5"), holdout=0))
    rc, _, err = cli("train", "--preset", "digits-test", "--set", "data.source=array",
                     "--set", f"data.path={tmp_path / 'fake.h5'}", "--out", tmp_path / "run")  # fmt: skip
    assert_clean_error(rc, err, "fake.h5")
    assert not (tmp_path / "run").exists()


def test_a_run_trains_on_an_hdf5_file_and_a_missing_h5py_is_named(tmp_path):
    rng = np.random.default_rng(2)
    with h5py.File(tmp_path / "digits.h5", "w") as f:
        f["images"] = rng.integers(0, 256, (24, 8, 8), dtype=np.uint8)
        f["labels"] = np.arange(24) % 10
    common = ("--preset", "digits-test", "--set", "data.source=array", "--set", f"data.path={tmp_path / 'digits.h5'}",
              "--set", "data.holdout=4", "--set", "train.images=16", "--no-progress")  # fmt: skip
    rc, _, err = cli("train", *common, "--out", tmp_path / "run")
    assert rc == 0, err
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "h5py.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    rc, _, err = td("train", *common, "--out", tmp_path / "run2", env=env)
    assert_clean_error(rc, err, "pip install 'torchdiffusion[hdf5]'")
    assert not (tmp_path / "run2").exists()
