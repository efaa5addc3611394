"""Peak memory (RSS) of one training step of the volume-shapes U-Net, with and without activation checkpointing.

    OMP_NUM_THREADS=1 python scripts/volume_memory.py --size 32 --batch 32 > docs/benchmarks/kinds/volume-memory.json

Each setting runs in a fresh process (ru_maxrss only grows): build the preset's network at size^3, then forward
and backward of the denoising loss on a batch of shapes3d volumes; the JSON holds the peak RSS, the RSS before
the step (the model and the batch) and the step's CPU seconds (a loaded machine's timings: CPU time only).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

STEP = """
import json, resource, sys, time, torch
from dataclasses import replace
from torchdiffusion.presets import get_preset
from torchdiffusion.data.volume import shapes3d
from torchdiffusion.nets import build_net
size, batch, ckpt, steps = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
torch.manual_seed(0)
model = replace(get_preset("volume-shapes").model, checkpoint=ckpt)
net = build_net(model, (1, size, size, size))
x, labels = shapes3d(batch, (size, size, size))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.process_time()
for _ in range(steps):
    noise = torch.randn_like(x)
    out = net(x + noise, torch.rand(batch) * 999, {"class": labels})
    ((out - noise) ** 2).mean().backward()
cpu = (time.process_time() - t0) / steps
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024, "cpu_s_per_step": cpu}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    a = p.parse_args()
    rows = []
    for ckpt in (False, True):
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, "-c", STEP, str(a.size), str(a.batch), str(int(ckpt)), str(a.steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout)
        r.update(checkpoint=ckpt, size=a.size, batch=a.batch, wall_s_loaded=round(time.time() - t0, 1))
        r["step_mib"] = round(r["peak_rss_mib"] - r["rss_before_mib"], 1)
        rows.append(r)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"rows": rows, "children_cpu_s": round(kids.ru_utime + kids.ru_stime, 1)}, indent=2))


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
