"""Run the commands of docs/course.md, as written there, on synthetic sprites and copy their pictures to docs/.

The page's commands train the course-sprites preset in full; here training is cut to CPU-minute settings by
the ``--set`` overrides in ``CPU_SETTINGS`` (the page states them). The commands run in a work folder
(default ``build/course``); the pictures go to ``docs/images/course-*``; the settings, the machine
(``lscpu``'s model name) and each command's wall time go to ``docs/benchmarks/course-figures.json``.

    OMP_NUM_THREADS=1 python scripts/course_figures.py                  # about 5 minutes on a 2-core CPU
    OMP_NUM_THREADS=1 python scripts/course_figures.py --images 30000   # better pictures, about 3x longer
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from torchdiffusion.provenance import cpu_name

ROOT = Path(__file__).resolve().parent.parent
CONTEXTS = "1,0,0,0,0;0,1,0,0,0;0,0,1,0,0;0,0,0,1,0;0,0,0,0,1"  # hero, non-hero, food, spell, side-facing
MIXES = "0.5,0,0.5,0,0;0,0.5,0.5,0,0;0.5,0,0,0.5,0;0,0,0.5,0.5,0"  # hero+food, non-hero+food, hero+spell, food+spell

# The page's commands, in its order ({train_settings} is empty on the page, CPU_SETTINGS here).
COMMANDS = [
    "python -m torchdiffusion.data.sprites --out sprites",
    "torchdiffusion train --preset course-sprites --out runs/sprites{train_settings}",
    "torchdiffusion explain forward runs/sprites --T 500 --schedules linear --t 0 50 100 200 300 400 499 "
    "--out forward.png",
    f'torchdiffusion sample runs/sprites --context "{CONTEXTS}" --n 20 --gif --out ddpm.png',
    f'torchdiffusion sample runs/sprites --context "{MIXES}" --n 16 --out mixed.png',
    f'torchdiffusion sample runs/sprites --sampler ddim --steps 25 --context "{CONTEXTS}" --n 20 --out ddim.png',
]
# work-folder file -> docs/images name
PICTURES = {
    "forward.png": "course-forward.png",
    "ddpm.png": "course-ddpm.png",
    "ddpm.gif": "course-ddpm.gif",
    "mixed.png": "course-mixed.png",
    "ddim.png": "course-ddim.png",
}


def cpu_settings(images: int, channels: int) -> list[str]:
    """The overrides that make the page's training a CPU-minutes run (smaller net and batch, fewer images)."""
    return [
        f"train.images={images}",
        "train.batch_size=32",
        "train.lr=2e-3",
        "train.warmup_images=500",
        f"train.ema_halflife_images={max(500, images // 5)}",
        f"model.channels={channels}",
        "sample.n=16",
    ]


def run(command: str, cwd: Path) -> float:
    """Run one page command (``torchdiffusion`` / ``python`` mapped to this interpreter); its wall seconds."""
    argv = shlex.split(command)
    head = [sys.executable, "-m", "torchdiffusion"] if argv[0] == "torchdiffusion" else [sys.executable]
    argv = head + argv[1:]
    print("$", command, flush=True)
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(ROOT / "build" / "course"), help="work folder (default build/course)")
    p.add_argument("--images", type=int, default=8_000, help="training images (default 8000)")
    p.add_argument("--channels", type=int, default=32, help="U-Net base width (default 32; the preset has 64)")
    args = p.parse_args()
    work = Path(args.work)
    shutil.rmtree(work / "runs" / "sprites", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    settings = cpu_settings(args.images, args.channels)
    train_settings = "".join(f" --set {s}" for s in settings)
    times = {}
    try:
        for command in COMMANDS:
            times[command] = round(run(command.format(train_settings=train_settings), work), 1)
    except KeyboardInterrupt:
        print("interrupted: docs/ left as it was", file=sys.stderr)
        return 130
    for src, dst in PICTURES.items():
        shutil.copyfile(work / src, ROOT / "docs" / "images" / dst)
    metrics = [json.loads(line) for line in (work / "runs/sprites/metrics.jsonl").read_text().splitlines() if line]
    losses = [m["loss"] for m in metrics if m.get("loss") is not None]
    report = {
        "machine": cpu_name(),
        "train_overrides": settings,
        "sprites": "python -m torchdiffusion.data.sprites (synthetic, 1788 sprites, seed 0)",
        "first_logged_loss": round(losses[0], 4) if losses else None,
        "last_logged_loss": round(losses[-1], 4) if losses else None,
        "wall_seconds": times,
        "note": "wall times on a machine shared with other jobs: they show the order of magnitude only",
    }
    from torchdiffusion.io import atomic_write

    atomic_write(ROOT / "docs" / "benchmarks" / "course-figures.json", json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
