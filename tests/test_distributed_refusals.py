"""Real 2-process torchrun (gloo): bad input that every rank meets alike - an output path that is a file, a batch the
processes cannot share out - is one line printed by rank 0 alone, refused before anything is written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tinyruns import write_run

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "torchdiffusion"]
TOY = ["--preset", "toy-2d", "--no-progress", "--set", "train.images=512", "--set", "train.threads=1"]
DISTILL = ["--steps", "1", "--images", "128", "--threads", "1", "--no-progress"]

pytestmark = pytest.mark.slow


def _refused_once(cmd: list[str], line: str) -> subprocess.CompletedProcess:
    """Run under torchrun: it fails, rank 0 prints ``line`` once, no rank prints anything else and both exit 2."""
    r = subprocess.run([*TORCHRUN, *cmd], env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, timeout=300)
    err = r.stderr.decode()
    assert r.returncode != 0, err[-3000:]
    ours = [x for x in err.splitlines() if "torchdiffusion " in x and ": error: " in x]
    assert len(ours) == 1 and line in ours[0] and "[rank" not in ours[0], err[-3000:]
    # torchrun's own report of each failed worker follows: every rank exits with rank 0's code (the silent one used
    # to be ended by torchrun's SIGTERM while it waited, with 143)
    codes = re.findall(r"exitcode  : (\d+)", err)
    assert len(codes) == 2 and set(codes) == {"2"}, err[-3000:]
    frames = [x for x in err.splitlines() if x.strip().startswith('File "')]
    assert not any("torchdiffusion" in x for x in frames), err[-3000:]  # no traceback of a worker
    return r


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("runs") / "teacher", "digits-test", ["sample.steps=3"])


def test_an_output_path_under_a_file_is_printed_once(teacher, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    what = "afile: a part of the path is a file where a folder is expected"
    _refused_once(["train", *TOY, "--out", str(afile)], f"torchdiffusion train: error: {afile}")
    _refused_once(["distill", str(teacher), "--method", "dmd", *DISTILL, "--out", str(afile)], what)
    assert afile.read_text() == "mine"


def test_a_batch_the_processes_cannot_share_is_refused_before_anything_is_written(teacher, tmp_path):
    r = _refused_once(
        ["train", *TOY, "--set", "train.batch_size=255", "--dry-run"],
        "train.batch_size=255 must be divisible by world size x grad_accum = 2 x 1",
    )
    assert not r.stdout.strip()  # no config printed as if it would train
    out = tmp_path / "x4"
    cmd = ["distill", str(teacher), "--method", "progressive", *DISTILL, "--batch-size", "63", "--out", str(out)]
    _refused_once(cmd, "--batch-size 63 must be divisible by the number of processes, 2")
    assert not out.exists()


def test_a_command_that_runs_in_one_process_is_refused_under_torchrun(tmp_path):
    """train-autoencoder under torchrun: its rank 1 held the run lock, so rank 0 refused the folder as 'being
    trained by another process' (exit 2) and rank 1 exited 143; train-classifier trained twice into the same
    files. Every command but train and distill is now refused by rank 0 in one line, nothing written."""
    out = tmp_path / "ae2"
    cmd = ["train-autoencoder", "--preset", "tiny-ae", "--out", str(out), "--set", "train.images=256", "--no-progress"]
    r = _refused_once(cmd, "train-autoencoder runs in one process: start it without torchrun")
    assert "train and distill" in r.stderr.decode() and not r.stdout.strip()
    assert not out.exists()
