"""Kill a tiny training with SIGKILL at random moments and inside each final write, then resume; 1 and 2 processes.

    PYTHONPATH=src python scripts/kill_resume_sweep.py --kills 10 --out docs/benchmarks/run-safety/kills.json

For each process count: one uninterrupted reference run; then run folders killed (the whole process tree at
once, like a machine going down) at moments drawn uniformly over the reference run's lifetime, rerunning the
same command after every kill and moving to a fresh folder once a run has finished, until ``--kills``
kills; then one more folder killed once inside each final write in turn (the last state; model.safetensors,
ema.safetensors and run.json, just before and just after their rename). After every kill the folder must be
honest: a run.json that says "finished" vouches (sha256) for weights equal to the reference's, and a weights
file that run.json does not vouch for is refused by ``load_run``. Finally every folder is rerun to its end and
its weights files must be byte-identical to the reference's. Uses tests/test_training_worker.py's tiny run.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from procs import descendants  # noqa: E402

WORKER = str(ROOT / "tests" / "test_training_worker.py")
EXPORTS = ("model.safetensors", "ema.safetensors")
FINAL = 128  # images of the tiny run
FINAL_WRITES = ["state"] + [f"{w}:{n}:{FINAL}" for n in (*EXPORTS, "run.json") for w in ("before", "after")]


def command(nproc: int, run: Path, *options: str) -> list[str]:
    """The tiny training into ``run`` on ``nproc`` processes, slowed down to 0.5 s a step (plus ``options``)."""
    worker = [WORKER, str(run), "--step-delay", "0.5", *options]
    if nproc == 1:
        return [sys.executable, *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *worker]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kill_tree(p: subprocess.Popen) -> None:
    for pid in [*descendants(p.pid), p.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


def run_once(cmd: list[str], kill_after: float | None = None) -> bool:
    """Run ``cmd``; with ``kill_after`` SIGKILL its tree after that many seconds. Returns whether it was killed
    (by us, or by itself through a crash hook) rather than ending on its own."""
    p = subprocess.Popen(
        cmd,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return p.wait(timeout=kill_after if kill_after is not None else 600) != 0
    except subprocess.TimeoutExpired:
        kill_tree(p)
        return True


def honest(run: Path, ref: dict[str, str]) -> dict:
    """The folder after a kill: what run.json says, and whether it is true (see the module docstring)."""
    from torchdiffusion.generate import RunError, load_run
    from torchdiffusion.training.checkpoint import WEIGHTS_KEY

    if not (run / "run.json").exists():
        return {"images_seen": None, "finished": False, "stale_finished": False, "refused": 0, "unvouched_used": 0}
    info = json.loads((run / "run.json").read_text())
    files = {n: sha(run / n) for n in EXPORTS if (run / n).exists()}
    recorded = info.get(WEIGHTS_KEY) or {}
    stale = bool(info["finished"]) and not (files == recorded == ref)
    refused = used = 0
    for name, digest in files.items():
        if recorded.get(name) != digest:
            try:
                load_run(run, weights=name.split(".")[0])
                used += 1
            except RunError:
                refused += 1
    return {
        "images_seen": info["images_seen"],
        "finished": info["finished"],
        "stale_finished": stale,
        "refused": refused,
        "unvouched_used": used,
    }


def sweep(nproc: int, kills: int, root: Path, rng: random.Random) -> dict:
    """Random kills over fresh folders (a new one once a run has finished), then one folder killed inside
    each final write in turn; every folder is finally run to its end and compared with the reference."""
    ref_dir = root / f"ref{nproc}"
    t0 = time.time()
    run_once(command(nproc, ref_dir))
    t_ref = time.time() - t0
    ref = {n: sha(ref_dir / n) for n in EXPORTS}
    events, folders = [], [root / f"p{nproc}-0"]
    while sum(e["killed"] for e in events) < kills:
        at = rng.uniform(0.0, t_ref)
        killed = run_once(command(nproc, folders[-1]), at)
        events.append({"at": "random", "seconds": round(at, 2), "killed": killed, **honest(folders[-1], ref)})
        if not killed or events[-1]["finished"]:  # the next kills go to a run that still trains
            folders.append(root / f"p{nproc}-{len(folders)}")
    folders.append(root / f"p{nproc}-final-writes")
    for where in FINAL_WRITES:
        hook = ["--crash-in-checkpoint", str(FINAL)] if where == "state" else ["--crash-at", where]
        killed = run_once(command(nproc, folders[-1], *hook))
        events.append({"at": where, "killed": killed, **honest(folders[-1], ref)})
    identical = 0
    for run in folders:
        run_once(command(nproc, run))
        identical += {n: sha(run / n) for n in EXPORTS} == ref
    return {
        "processes": nproc,
        "reference_seconds": round(t_ref, 1),
        "random_kills": sum(e["killed"] for e in events if e["at"] == "random"),
        "random_kills_by_images_seen": dict(
            collections.Counter(str(e["images_seen"]) for e in events if e["at"] == "random" and e["killed"])
        ),
        "kills_inside_final_writes": sum(e["killed"] for e in events if e["at"] != "random"),
        "stale_finished": sum(e["stale_finished"] for e in events),
        "unvouched_weights_refused": sum(e["refused"] for e in events),
        "unvouched_weights_used": sum(e["unvouched_used"] for e in events),
        "folders": len(folders),
        "folders_with_identical_final_weights": identical,
        "events": events,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10, help="random-moment kills per process count (default 10)")
    ap.add_argument("--processes", default="1,2", help="process counts to try (default 1,2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        results = [sweep(int(n), args.kills, Path(tmp), rng) for n in args.processes.split(",")]
    for r in results:
        print(
            f"{r['processes']} process(es): {r['random_kills']} random kills + {r['kills_inside_final_writes']} inside "
            f"final writes; finished-with-stale-weights {r['stale_finished']}; unvouched weights refused "
            f"{r['unvouched_weights_refused']}, used {r['unvouched_weights_used']}; final weights identical in "
            f"{r['folders_with_identical_final_weights']}/{r['folders']} folders"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    ok = all(
        r["folders_with_identical_final_weights"] == r["folders"]
        and not r["stale_finished"]
        and not r["unvouched_weights_used"]
        for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
