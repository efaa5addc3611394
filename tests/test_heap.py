"""heap.keep_freed_memory: freed tensors' memory is reused instead of faulted in afresh (glibc), and it can be
switched off. Each case runs in its own process: the malloc settings are process-wide."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the settings are glibc malloc's"
)

PROBE = r"""
import json, resource, torch
from torchdiffusion.heap import keep_freed_memory
took = keep_freed_memory()
sizes = [(i % 7 + 1) * 256 * 1024 for i in range(24)]  # float32 tensors of 1-7 MiB, ~96 MiB in all
def step():  # what a training step does: activations of a few MiB written, kept for the backward, freed
    live = [torch.ones(n) for n in sizes]
    del live
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps({"took": took, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def probe(keep: str) -> dict:
    env = {**os.environ, "TORCHDIFFUSION_KEEP_HEAP": keep}
    env.pop("LD_PRELOAD", None)
    cmd = [sys.executable, "-c", PROBE]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_instead_of_faulted_in_again():
    kept, default = probe("1"), probe("0")
    assert kept["took"] is True and default["took"] is False
    # 20 steps x 24,576 pages: glibc's defaults hand a share of them back and fault them in again every step
    # (measured 108,800 faults); kept, the pages stay mapped and are reused (4,865)
    assert default["faults"] > 40_000, default
    assert kept["faults"] < default["faults"] / 8, (kept, default)
