"""Safe checkpoints: atomic writes, keep-K, a crash in the middle of a write, malicious pickles refused."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_training_worker import TINY, tiny_data
from torchdiffusion.config import override
from torchdiffusion.presets import get_preset
from torchdiffusion.training import CheckpointError, latest_state, load_state, save_state, train
from torchdiffusion.training.checkpoint import atomic_write, list_states

WORKER = str(Path(__file__).with_name("test_training_worker.py"))


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(*sets: str):
    return override(get_preset("digits-test"), TINY + list(sets))


def _state(images: int) -> dict:
    return {
        "format": "torchdiffusion-train-state",
        "version": 1,
        "images_seen": images,
        "w": torch.full((3,), float(images)),
    }


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")

    def bad(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(p, bad)
    assert p.read_bytes() == b"old" and [q.name for q in tmp_path.iterdir()] == ["f.bin"]


def test_save_state_keeps_the_last_k_and_latest_names_the_newest(tmp_path):
    for n in (16, 32, 48, 64):
        save_state(tmp_path, _state(n), n, keep=2)
    assert [n for n, _ in list_states(tmp_path)] == [48, 64]
    path = latest_state(tmp_path)
    assert path.name == "state-000000064.pt"
    assert torch.equal(load_state(path)["w"], torch.full((3,), 64.0))


def test_damaged_latest_is_a_one_line_error(tmp_path):
    (tmp_path / "latest").write_text("../../etc/passwd\n")
    with pytest.raises(CheckpointError, match="damaged"):
        latest_state(tmp_path)
    (tmp_path / "latest").write_text("state-000000016.pt\n")
    with pytest.raises(CheckpointError, match="missing"):
        latest_state(tmp_path)


class _Evil:
    """Unpickling this would create a marker file: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    train(tiny_cfg("train.images=32"), run, data=tiny_data(), progress=False)
    evil = run / "checkpoints" / "state-000000032.pt"  # replaces the genuine latest state
    with open(evil, "wb") as f:
        pickle.dump({"format": "torchdiffusion-train-state", "model": _Evil(marker)}, f)
    with pytest.raises(CheckpointError, match="refusing to load") as e:
        load_state(evil)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="refusing to load"):  # resuming the run hits the same wall
        train(tiny_cfg("train.images=64"), run, data=tiny_data(), progress=False)
    assert not marker.exists()
    # sanity: the file really would run code under an unrestricted unpickler
    with open(evil, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_crash_in_the_middle_of_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, WORKER, str(run), "--crash-in-checkpoint", "64"]
    r = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert r.returncode == 17, r.stderr.decode()[-2000:]
    ckpt = run / "checkpoints"
    assert list(ckpt.glob(".state-000000064.pt.tmp-*")), "the crash should have happened mid-write"
    assert not (ckpt / "state-000000064.pt").exists()
    path = latest_state(ckpt)
    assert path.name == "state-000000032.pt" and load_state(path)["images_seen"] == 32
    # resuming finishes the run bit-identically to one that never crashed
    train(tiny_cfg(), run, data=tiny_data(), progress=False)
    train(tiny_cfg(), ref, data=tiny_data(), progress=False)
    for name in ("model.safetensors", "ema.safetensors"):
        assert (run / name).read_bytes() == (ref / name).read_bytes()
    assert not list(ckpt.glob(".state-*.tmp-*"))  # the stray temp file is cleaned up


def test_run_folder_loads_with_load_run(tmp_path):
    generate = pytest.importorskip("torchdiffusion.generate")
    run = train(tiny_cfg("train.images=32"), tmp_path, data=tiny_data(), progress=False)
    loaded = generate.load_run(run)
    ema = load_state(latest_state(run / "checkpoints"))["ema"]
    assert loaded.data_shape == (1, 8, 8)
    assert all(torch.equal(v, ema[k]) for k, v in loaded.model.state_dict().items())
