"""A full disk (ENOSPC, on a small tmpfs) during every kind of write: training states, exported weights, sample
grids, GIFs, reports. Each failure names its file, leaves no temporary file and the previous file intact, and a
run resumes to the same bits once there is space again. Needs root to mount the tmpfs (skipped otherwise)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from test_training_worker import TINY, tiny_data
from torchdiffusion.config import override
from torchdiffusion.presets import get_preset
from torchdiffusion.training import train

EXPORTS = ("model.safetensors", "ema.safetensors")


pytestmark = pytest.mark.usefixtures("one_thread")


@contextlib.contextmanager
def small_disk(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB mounted at ``path`` for the body."""
    path.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip() or 'not permitted'}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Allocate all but about ``leave`` bytes of the disk to one file; delete it to give the space back."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        os.posix_fallocate(fd, 0, max(st.f_bavail * st.f_frsize - leave, 1))
    finally:
        os.close(fd)
    return filler


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_cfg(*sets: str):
    return override(get_preset("digits-test"), TINY + list(sets))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on a disk with room: its weights files' sha256 and the size of one state."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    run = train(tiny_cfg(), tmp_path_factory.mktemp("ref") / "run", data=tiny_data(), progress=False)
    torch.set_num_threads(n)
    return {name: sha(run / name) for name in EXPORTS}, (run / "checkpoints" / "state-000000128.pt").stat().st_size


@pytest.mark.parametrize("where", ["state", "export"])
def test_a_full_disk_during_training_then_space_again_gives_the_same_weights(reference, tmp_path, where):
    digests, state_size = reference
    with small_disk(tmp_path / "disk", 8192) as disk:
        run = disk / "run"
        # the first checkpoint's state needs state_size bytes, its weights files ~2 x 220 kB after it
        filler = fill(disk, 64 << 10 if where == "state" else state_size + (160 << 10))
        with pytest.raises(OSError) as e:
            train(tiny_cfg(), run, data=tiny_data(), progress=False)
        assert e.value.errno == errno.ENOSPC
        name = Path(e.value.filename).name
        assert name == "state-000000032.pt" if where == "state" else name in EXPORTS, e.value
        assert temporaries(disk) == [] and not (run / ".train.lock").exists()
        info = json.loads((run / "run.json").read_text())
        assert not info["finished"]
        filler.unlink()  # space again: the same call resumes and ends with the same bits
        train(tiny_cfg(), run, data=tiny_data(), progress=False)
        assert {name: sha(run / name) for name in EXPORTS} == digests


def test_a_full_disk_when_writing_a_grid_a_gif_or_a_report_leaves_the_old_file(tmp_path):
    from torchdiffusion.evaluation.evaluate import write_report
    from torchdiffusion.io import write_json
    from torchdiffusion.viz import save_gif, save_grid

    images = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    frames = [np.random.default_rng(k).integers(0, 255, (64, 64, 3), dtype=np.uint8) for k in range(20)]
    writers = {
        "grid.png": lambda p: save_grid(images, p),
        "denoise.gif": lambda p: save_gif(frames, p, scale=2),
        "report.json": lambda p: write_report({"x": list(range(20000))}, None, p.parent),
        "samples.json": lambda p: write_json({"x": list(range(20000))}, p),
    }
    with small_disk(tmp_path / "disk", 4096) as disk:
        for name in writers:
            (disk / name).write_bytes(b"previous")
        filler = fill(disk, 8 << 10)
        for name, write in writers.items():
            with pytest.raises(OSError) as e:
                write(disk / name)
            assert e.value.errno == errno.ENOSPC and Path(e.value.filename).name == name
            assert (disk / name).read_bytes() == b"previous" and temporaries(disk) == []
        filler.unlink()
        for name, write in writers.items():
            write(disk / name)
            assert (disk / name).read_bytes() != b"previous"
