"""Run out of disk space at every write of a tiny training (and of a grid, a GIF and a report), then resume.

    sudo PYTHONPATH=src python scripts/disk_full_sweep.py --out docs/benchmarks/run-safety/disk-full.json

Mounts a small tmpfs (root only). A counting pass lists every file a tiny training (tests/test_training_worker.py's
run, with a sample grid every checkpoint) opens for writing. Then, for each k, a fresh run fills the disk to the
last byte just before its k-th write and trains until that stops it: the script records which file the ENOSPC
names and that no temporary file is left, gives the space back, reruns the same training and compares its
weights files with an uninterrupted run's (sha256). (A grid that cannot be written is a warning and training
goes on; the next write then stops it. An append may still fit in a page the file already has.) Last, a sample
grid, a GIF and a report written on a full disk: the error names the file, no temporary file is left and the
previous file is unchanged.
"""

from __future__ import annotations

import argparse
import builtins
import collections
import contextlib
import errno
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_disk_full import fill, temporaries  # noqa: E402
from test_training_worker import TINY, tiny_data  # noqa: E402
from torchdiffusion.config import override  # noqa: E402
from torchdiffusion.presets import get_preset  # noqa: E402
from torchdiffusion.training import train  # noqa: E402

EXPORTS = ("model.safetensors", "ema.safetensors")


def kind_of(name: str) -> str:
    """The kind of write a file name stands for."""
    if name.startswith("state-") or name == "latest":
        return "checkpoint"
    if name.startswith("grid-"):
        return "grid"
    return {"model.safetensors": "export", "ema.safetensors": "export"}.get(name, name)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def writes_watched(disk: Path, fill_at: int | None) -> Iterator[list[str]]:
    """Count the files opened for writing under ``disk`` (names, in order); fill the disk before write ``fill_at``."""
    names: list[str] = []
    real_open = builtins.open

    def watching_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and str(file).startswith(str(disk)) and Path(file).name != "filler":
            if len(names) == fill_at:
                fill(disk, 0)
            names.append(Path(file).name)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = watching_open
    try:
        yield names
    finally:
        builtins.open = real_open


def training_trial(disk: Path, k: int, cfg, ref: dict) -> dict:
    run = disk / "run"
    err = io.StringIO()
    failed = None
    with writes_watched(disk, k) as names, contextlib.redirect_stderr(err):
        try:
            train(cfg, run, data=tiny_data(), progress=False)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            failed = Path(e.filename).name if e.filename else "(no file name)"
    left = [str(t) for t in temporaries(disk)]
    grid_warnings = sum("could not draw" in s for s in err.getvalue().splitlines())
    (disk / "filler").unlink(missing_ok=True)
    with contextlib.redirect_stderr(io.StringIO()):
        train(cfg, run, data=tiny_data(), progress=False)
    identical = {n: sha(run / n) for n in EXPORTS} == ref
    shutil.rmtree(run)
    return {
        "write": k,
        "file": names[k] if k < len(names) else None,
        "failed_at": failed,
        "kind": kind_of(failed) if failed else None,
        "grid_warnings": grid_warnings,
        "temporaries": left,
        "identical": identical,
    }


def picture_trials(disk: Path) -> list[dict]:
    from torchdiffusion.evaluation.evaluate import write_report
    from torchdiffusion.viz import save_gif, save_grid

    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    frames = [np.random.default_rng(k).integers(0, 255, (96, 96, 3), dtype=np.uint8) for k in range(30)]
    writers = {
        "grid.png": lambda p: save_grid(images, p),
        "trajectory.gif": lambda p: save_gif(frames, p, scale=2),
        "report.json": lambda p: write_report({"values": list(range(50000))}, None, p.parent),
    }
    out = []
    for name, write in writers.items():
        (disk / name).write_bytes(b"previous")
        filler = fill(disk, 4 << 10)
        try:
            write(disk / name)
            named = None
        except OSError as e:
            named = Path(e.filename).name if e.errno == errno.ENOSPC and e.filename else repr(e)
        out.append(
            {
                "file": name,
                "error_names": named,
                "temporaries": [str(t) for t in temporaries(disk)],
                "previous_intact": (disk / name).read_bytes() == b"previous",
            }
        )
        filler.unlink()
        (disk / name).unlink()
    return out


@contextlib.contextmanager
def small_disk(size_kib: int):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", tmp], check=True)
        try:
            yield Path(tmp)
        finally:
            subprocess.run(["umount", "-l", tmp], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = override(get_preset("digits-test"), [*TINY, "train.sample_every_images=32"])
    with tempfile.TemporaryDirectory() as tmp:
        ref_run = train(cfg, Path(tmp) / "ref", data=tiny_data(), progress=False)
        ref = {n: sha(ref_run / n) for n in EXPORTS}
    with small_disk(16384) as disk:
        with writes_watched(disk, None) as names:
            train(cfg, disk / "count", data=tiny_data(), progress=False)
        shutil.rmtree(disk / "count")
        trials = [training_trial(disk, k, cfg, ref) for k in range(len(names))]
        pictures = picture_trials(disk)
    summary = {
        "trials": len(trials),
        "writes": len(trials),
        "stopped_by_kind": dict(collections.Counter(str(t["kind"]) for t in trials)),
        "grid_warnings": sum(t["grid_warnings"] for t in trials),
        "trials_leaving_temporaries": sum(bool(t["temporaries"]) for t in trials),
        "identical_after_resume": sum(t["identical"] for t in trials),
        "pictures": pictures,
    }
    print(json.dumps(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**summary, "trials_detail": trials}, indent=2) + "\n")
    ok = summary["identical_after_resume"] == len(trials) and not summary["trials_leaving_temporaries"]
    ok = ok and all(p["error_names"] == p["file"] and p["previous_intact"] and not p["temporaries"] for p in pictures)
    return 0 if ok else 1


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
