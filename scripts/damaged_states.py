"""Damage the latest training state at random, resume, and compare with an uninterrupted run.

    PYTHONPATH=src python scripts/damaged_states.py --n 100 --out docs/benchmarks/run-safety/damaged-states.json

A tiny finished run keeps its last two states (96 and 128 images). Each trial copies it, damages
state-000000128.pt in one of tests/damage.py's ways (a flipped bit, a run of changed bytes, a zeroed 4 KiB
page, a truncation, appended bytes, swapped halves, an empty file), checks that the damage is detected
(``verify_state``), reruns the same training, which must set the damaged state aside with one warning and
resume from state-000000096.pt, and compares the final weights files with the uninterrupted run's (sha256).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from damage import damage  # noqa: E402
from test_training_worker import TINY, tiny_data  # noqa: E402
from torchdiffusion.config import override  # noqa: E402
from torchdiffusion.presets import get_preset  # noqa: E402
from torchdiffusion.training import train  # noqa: E402
from torchdiffusion.training.checkpoint import verify_state  # noqa: E402

EXPORTS = ("model.safetensors", "ema.safetensors")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trial(ref: Path, work: Path, rng: random.Random, cfg, ref_digests: dict) -> dict:
    shutil.copytree(ref, work)
    kind = damage(work / "checkpoints" / "state-000000128.pt", rng)
    detected = verify_state(work / "checkpoints" / "state-000000128.pt") is not None
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        train(cfg, work, data=tiny_data(), progress=False)
    warnings = [s for s in err.getvalue().splitlines() if s.startswith("warning:")]
    identical = {n: sha(work / n) for n in EXPORTS} == ref_digests
    shutil.rmtree(work)
    return {"kind": kind, "detected": detected, "one_warning": len(warnings) == 1, "identical": identical}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="number of damaged states (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = override(get_preset("digits-test"), TINY)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ref = train(cfg, Path(tmp) / "ref", data=tiny_data(), progress=False)
        ref_digests = {n: sha(ref / n) for n in EXPORTS}
        trials = [trial(ref, Path(tmp) / "work", rng, cfg, ref_digests) for _ in range(args.n)]
    summary = {
        "trials": len(trials),
        "detected": sum(t["detected"] for t in trials),
        "one_warning": sum(t["one_warning"] for t in trials),
        "identical_final_weights": sum(t["identical"] for t in trials),
        "kinds": dict(sorted(collections.Counter(t["kind"] for t in trials).items())),
    }
    print(json.dumps(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**summary, "trials_detail": trials}, indent=2) + "\n")
    return 0 if summary["detected"] == summary["identical_final_weights"] == len(trials) else 1


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
