"""Few-step students of an MNIST teacher, side by side with the teacher at NFE 1, 2, 4 and 20.

    OMP_NUM_THREADS=1 nice .venv/bin/python scripts/shortcuts_table.py runs/demo --out runs/shortcuts \\
        [--images 20000] [--n 1000] [--methods progressive consistency reflow]

Distils (``torchdiffusion.shortcuts.distill``, the code of ``torchdiffusion distill``) one student per method -
progressive to 2 steps through its 8 -> 4 -> 2 halvings (the 4-step stage is scored too; an eps teacher cannot be
halved to 1 step), consistency distillation and reflow to 4 steps, sampled at 1, 2 and 4 - reusing students
already in ``--out``. Scores every row with the shipped MNIST-5k classifier (scripts/digit_check.py's check:
share of samples classified with confidence >= 0.9) and the Fréchet distance in that classifier's features
against the training images. Cost is counted in training images seen: each student's (all its stages) against
the teacher's own (run.json). Writes OUT/table.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from torchdiffusion.data import load_data
from torchdiffusion.evaluation import features as FE
from torchdiffusion.evaluation import metrics as M
from torchdiffusion.evaluation.classifier import digit_report
from torchdiffusion.generate import generate, load_run
from torchdiffusion.shortcuts.distill import DistillSettings, distill


def score(run, sample, n: int, ref_stats) -> dict:
    """confident share and classifier-feature FD of ``n`` samples (seeds 0..n-1) with ``sample``."""
    t0 = time.time()
    x = generate(run.model, range(n), replace(sample, n=n, batch_size=250), run.data_shape, grid_dir=run.path / "grids")
    seconds = time.time() - t0
    fd = M.frechet_distance(M.FeatureStats.of(FE.extract(x, "clf:mnist5k")), ref_stats)
    rep = digit_report(x)
    return {"confident": rep["confident_fraction"], "fd_clf": fd, "seconds_per_64": seconds * 64 / n}


def images_seen(folder: Path) -> int:
    """Training images of a run folder and of its progressive stages."""
    folders = [folder, *sorted((folder / "stages").glob("*"))] if (folder / "stages").is_dir() else [folder]
    return sum(json.loads((f / "run.json").read_text()).get("images_seen", 0) for f in folders)


def student(teacher: Path, method: str, steps: int, out: Path, s: DistillSettings) -> Path:
    if not (out / "run.json").is_file() or not json.loads((out / "run.json").read_text()).get("finished"):
        distill(teacher, method, steps, out, s)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher")
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=20_000, help="training images per distillation run")
    ap.add_argument("--pairs", type=int, default=5_000, help="reflow pairs")
    ap.add_argument("--n", type=int, default=1000, help="samples per row")
    ap.add_argument("--methods", nargs="+", default=["progressive", "consistency", "reflow"])
    args = ap.parse_args(argv)
    teacher_path, out = Path(args.teacher), Path(args.out)
    teacher = load_run(teacher_path)
    train = load_data(teacher.config.data, split="train", seed=teacher.config.train.seed)
    ref = M.FeatureStats.of(FE.extract(train.x[:5000], "clf:mnist5k"))
    rows = []
    for nfe in (1, 2, 4, 20):
        r = score(teacher, replace(teacher.config.sample, steps=nfe), args.n, ref)
        rows.append({"model": f"teacher ({teacher.config.sample.sampler})", "nfe": nfe, **r})
        print(rows[-1], flush=True)
    s = DistillSettings(images=args.images, pairs=args.pairs)
    plan = {"progressive": (2, {4: "stages/0004-steps", 2: "."}), "consistency": (4, None), "reflow": (4, None)}
    for method in args.methods:
        steps, folders = plan[method]
        folder = student(teacher_path, method, steps, out / method, s)
        cost = images_seen(folder)
        for k, sub in (folders or {k: "." for k in (1, 2, 4)}).items():
            run = load_run(folder / sub)
            r = score(run, replace(run.config.sample, steps=k), args.n, ref)
            rows.append({"model": f"{method} student", "nfe": k, "train_images": cost, **r})
            print(rows[-1], flush=True)
    record = {
        "teacher": str(teacher_path),
        "teacher_images": teacher.info.get("images_seen"),
        "n": args.n,
        "rows": rows,
    }
    (out / "table.json").write_text(json.dumps(record, indent=2))
    lines = [
        "| model | NFE | confident (>= 0.9) | FD (classifier features) | training images |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cost = r.get("train_images", record["teacher_images"])
        lines.append(f"| {r['model']} | {r['nfe']} | {r['confident']:.1%} | {r['fd_clf']:.2f} | {cost:,} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
