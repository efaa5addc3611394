"""Real processes: 2-process torchrun (gloo) vs 1 process, SIGKILL + resume bit-identity, SIGTERM, NaN on one rank,
kills inside the final exports, workers that die with their launcher, a run folder locked against a second job.

All runs share one tiny configuration (see test_training_worker.py) and poison step 3 with a NaN (on every
rank for one process, on rank 1 only for two), so one set of runs checks several promises at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from procs import descendants, gone
from test_training_worker import TINY, InjectNaN, tiny_data
from torchdiffusion.config import override
from torchdiffusion.generate import RunError, load_run
from torchdiffusion.model import build_model
from torchdiffusion.presets import get_preset
from torchdiffusion.training import train
from torchdiffusion.training.checkpoint import EXPORTS, WEIGHTS_KEY
from torchdiffusion.training.runlock import RunLock

WORKER = str(Path(__file__).with_name("test_training_worker.py"))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", WORKER]
NAN_1, NAN_2 = "3", "3@1"  # the same step skipped: by every rank of one process / by rank 1 of two
TWO_ARGS = ["--nan", NAN_2, "--dump-ranks"]  # every rank also writes its weights and counters to debug/

pytestmark = pytest.mark.slow


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _run(cmd: list[str], *, rc: int | None = 0) -> subprocess.CompletedProcess:
    """Run to the end; the exit status must be ``rc`` (None: any failure)."""
    r = subprocess.run(cmd, env=_env(), capture_output=True, timeout=300)
    assert (r.returncode != 0) if rc is None else (r.returncode == rc), r.stderr.decode()[-3000:]
    return r


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _honest(run: Path, ref: Path) -> None:
    """After any kill: a run that says it finished has the uninterrupted run's weights, and a weights file that
    run.json does not vouch for (sha256) is refused by load_run instead of being used."""
    info = json.loads((run / "run.json").read_text())
    files = {n: _sha(run / n) for n in EXPORTS if (run / n).exists()}
    if info["finished"]:
        assert files == info[WEIGHTS_KEY] == {n: _sha(ref / n) for n in EXPORTS}
    for name, digest in files.items():
        if (info.get(WEIGHTS_KEY) or {}).get(name) != digest:
            with pytest.raises(RunError):
                load_run(run, weights=name.split(".")[0])


def _start_slow(cmd: list[str], run: Path) -> subprocess.Popen:
    """Start a slowed-down run in a session of its own and wait until its first checkpoint exists."""
    p = subprocess.Popen(
        [*cmd, "--step-delay", "0.4"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 240
    while not latest.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, f"the run ended before it could be interrupted: {p.stderr.read().decode()[-2000:]}"
    return p


def _start_and_interrupt(cmd: list[str], run: Path, sig: int) -> subprocess.Popen:
    """Start a slowed-down run, wait until its first checkpoint exists, then send ``sig`` (SIGKILL: to the tree)."""
    p = _start_slow(cmd, run)
    time.sleep(0.5)  # somewhere inside a later step
    if sig == signal.SIGKILL:
        for pid in [*descendants(p.pid), p.pid]:  # the whole tree at once, like a machine going down
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    else:
        os.kill(p.pid, sig)
    p.wait(timeout=240)
    return p


def _resume_here(run: Path) -> None:
    """Finish a one-process run in this process (saves a torch import; the worker uses one thread too)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = override(get_preset("digits-test"), TINY)
        train(cfg, run, data=tiny_data(), progress=False, callbacks=[InjectNaN(NAN_1)])
    finally:
        torch.set_num_threads(n)


def _same_bytes(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _unfinished(run: Path) -> int:
    info = json.loads((run / "run.json").read_text())
    assert not info["finished"]
    return info["images_seen"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted reference runs: one process in this process, two processes under torchrun."""
    root = tmp_path_factory.mktemp("ref")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = override(get_preset("digits-test"), TINY)
    train(cfg, root / "one", data=tiny_data(), progress=False, callbacks=[InjectNaN(NAN_1)])
    torch.set_num_threads(n)
    _run([*TORCHRUN, str(root / "two"), *TWO_ARGS])
    return root / "one", root / "two"


def test_two_processes_train_the_same_model_as_one(runs):
    one, two = runs
    m1 = [json.loads(s) for s in (one / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(s) for s in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["images_seen"] for r in m1] == [r["images_seen"] for r in m2]
    # the same examples, noise levels, noise and drop masks at every position of the global batch:
    assert m1[0]["loss"] == pytest.approx(m2[0]["loss"], rel=1e-5)
    for u, v in zip(m1[0]["loss_by_sigma"], m2[0]["loss_by_sigma"], strict=True):  # None: an empty bucket
        assert (u is None and v is None) or u == pytest.approx(v, rel=1e-4)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    torch.manual_seed(0)  # the loop builds the network right after seeding with train.seed
    init = build_model(override(get_preset("digits-test"), TINY), (1, 8, 8)).state_dict()
    moved = sum(((a[k] - init[k]).double() ** 2).sum() for k in a).sqrt()
    diff = sum(((a[k] - b[k]).double() ** 2).sum() for k in a).sqrt()
    # float summation order differs (one 16-example sum vs two 8-example sums + all-reduce) and Adam's
    # normalisation amplifies it a little, but it stays far below how far 7 updates moved the weights
    assert diff < 1e-2 * moved, (float(diff), float(moved))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-3


def test_nan_on_one_rank_is_skipped_by_both(runs):
    _, two = runs
    r0, r1 = (json.loads((two / "debug" / f"rank-{r}.json").read_text()) for r in (0, 1))
    assert r0["skipped_steps"] == r1["skipped_steps"] == 1 and r0["updates"] == r1["updates"] == 7
    w0, w1 = (load_file(two / "debug" / f"rank-{r}.safetensors") for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # the ranks stayed bit-identical
    last = json.loads((two / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped_steps"] == 1


def test_sigkill_and_resume_two_processes_is_bit_identical(runs, tmp_path):
    _, two = runs
    run = tmp_path / "run"
    _start_and_interrupt([*TORCHRUN, str(run), *TWO_ARGS], run, signal.SIGKILL)
    assert _unfinished(run) < 128
    _honest(run, two)
    # killed again, inside the final export (rank 0 between ema.safetensors and run.json)
    _run([*TORCHRUN, str(run), *TWO_ARGS, "--crash-at", "after:ema.safetensors:128"], rc=None)
    assert _unfinished(run) < 128
    _honest(run, two)
    _run([*TORCHRUN, str(run), *TWO_ARGS])
    _same_bytes(run, two)


def test_sigkill_and_resume_one_process_is_bit_identical(runs, tmp_path):
    one, _ = runs
    run = tmp_path / "run"
    _start_and_interrupt([sys.executable, WORKER, str(run), "--nan", NAN_1], run, signal.SIGKILL)
    assert _unfinished(run) < 128
    _honest(run, one)
    for where in ("before:model.safetensors:128", "after:model.safetensors:128", "before:run.json:128"):
        # killed inside the final exports: the rerun writes them again before anything else
        r = _run([sys.executable, WORKER, str(run), "--nan", NAN_1, "--crash-at", where], rc=-signal.SIGKILL)
        assert not json.loads((run / "run.json").read_text())["finished"], (where, r.stderr.decode()[-2000:])
        _honest(run, one)
    _resume_here(run)
    _same_bytes(run, one)


def test_sigterm_checkpoints_and_exits_zero_then_resumes_exactly(runs, tmp_path):
    one, _ = runs
    run = tmp_path / "run"
    p = _start_and_interrupt([sys.executable, WORKER, str(run), "--nan", NAN_1], run, signal.SIGTERM)
    assert p.returncode == 0, p.stderr.read().decode()[-2000:]
    seen = _unfinished(run)
    assert 32 < seen < 128  # a checkpoint taken at the step the signal interrupted, off the 32-image cadence
    assert (run / "checkpoints" / "latest").read_text().strip() == f"state-{seen:09d}.pt"
    _resume_here(run)
    _same_bytes(run, one)


def test_killing_the_launcher_stops_its_workers_and_a_held_folder_stops_every_rank(runs, tmp_path):
    _, two = runs
    run = tmp_path / "run"
    p = _start_slow([*TORCHRUN, str(run), *TWO_ARGS], run)
    workers = descendants(p.pid)
    assert len(workers) >= 2
    os.killpg(p.pid, signal.SIGKILL)  # torchrun's process group; its workers live in sessions of their own
    p.wait(timeout=60)
    assert all(gone(w, 120) for w in workers), "a worker outlived its launcher"
    _honest(run, two)
    with RunLock(run):  # another job holds the folder: every rank stops at once, none waits forever
        r = _run([*TORCHRUN, str(run), *TWO_ARGS], rc=None)
    assert "is being trained by another process" in r.stderr.decode()
    _run([*TORCHRUN, str(run), *TWO_ARGS])
    _same_bytes(run, two)


def test_a_signal_to_one_worker_stops_every_rank_as_a_stop(tmp_path):
    """SIGTERM to rank 1 alone: every rank stops at the same step (the flags are all-reduced), and rank 0 - which
    got no signal itself - stops as a stop too (raise_on_stop: the CLI's exit 143), not as a finished run that
    goes on (distill started its next stage on a half-trained student)."""
    run = tmp_path / "run"
    p = _start_slow([*TORCHRUN, str(run), *TWO_ARGS, "--raise-on-stop"], run)
    ranks = {}
    for pid in descendants(p.pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = next((v[5:].decode() for v in env if v.startswith(b"RANK=")), None)
        if rank is not None:
            ranks[rank] = pid
    time.sleep(0.5)
    os.kill(ranks["1"], signal.SIGTERM)
    p.wait(timeout=240)
    assert 0 < _unfinished(run) < 128
    assert not list(run.glob("returned-rank*")), "a rank returned as if the run had finished"
    assert "stopped by a signal" in p.stderr.read().decode()


def test_a_dry_run_under_torchrun_prints_one_config(tmp_path):
    """Every rank resolves the same config; each printed it, so stdout held two JSON documents no tool could read."""
    cmd = [*TORCHRUN[:-1], "-m", "torchdiffusion", "train", "--preset", "digits-test", "--dry-run"]
    r = _run(cmd)
    assert json.loads(r.stdout.decode())["preset"] == "digits-test"


def test_a_refusal_rank_0_alone_checks_stops_every_worker_without_a_traceback(tmp_path):
    """The run folder is checked by rank 0 (here: weights without a training state to resume from); its refusal
    is one line, and the other rank - which waited for rank 0's answer - stops with it instead of dying in the
    next collective with gloo's 'Connection closed by peer' traceback."""
    run = tmp_path / "weights-only"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"\0" * 64)
    cmd = [*TORCHRUN[:-1], "-m", "torchdiffusion", "train", "--preset", "digits-test", "--no-progress"]
    r = _run([*cmd, "--set", "train.images=64", "--out", str(run)], rc=None)
    err = r.stderr.decode()
    refusal = "weights-only holds weights (model.safetensors) but no training state to resume from"
    assert err.count(refusal) == 1 and "torchdiffusion train: error: " in err, err[-3000:]
    assert "[rank1]" not in err and "Connection closed by peer" not in err, err[-3000:]
    assert sorted(p.name for p in run.iterdir()) == ["model.safetensors"]  # nothing written beside it


def test_a_run_folder_deleted_under_two_workers_stops_both_in_one_line(tmp_path):
    """rm -rf of the run folder under a 2-process training: rank 0, which alone writes, noticed it alone and left,
    and rank 1 died in the next all-reduce with gloo's 'Connection closed by peer' traceback. Rank 0 now tells the
    others in the step's all-reduce: one line, every rank exits with its code (1), nothing made again."""
    run = tmp_path / "run"
    cmd = [*TORCHRUN[:-1], "-m", "torchdiffusion", "train", "--preset", "toy-2d", "--no-progress"]
    cmd += ["--set", "train.images=400000", "--set", "train.threads=1", "--out", str(run)]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not (run / "config.json").exists():
            assert p.poll() is None, p.stderr.read().decode()[-3000:]
            time.sleep(0.05)
        time.sleep(0.5)  # training steps
        shutil.rmtree(run.rename(tmp_path / "trash"))  # rm -rf, atomic for the test (a plain rmtree races writes)
        p.wait(timeout=240)
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read().decode()
    assert p.returncode != 0 and err.count("was deleted or replaced while training") == 1, err[-3000:]
    assert "Connection closed by peer" not in err and "[rank1]" not in err, err[-3000:]
    codes = re.findall(r"exitcode  : (\d+)", err)
    assert codes and set(codes) == {"1"}, err[-3000:]
    assert not run.exists()
