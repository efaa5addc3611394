"""Few-step students of an MNIST teacher, side by side with the teacher at NFE 1, 2, 4 and 20.

    OMP_NUM_THREADS=1 nice .venv/bin/python scripts/shortcuts_table.py runs/demo --out runs/shortcuts \\
        [--images 20000] [--n 1000] [--methods progressive consistency dmd reflow] [--distill-only] [--guidance W] \\
        [--grid G] [--autoguidance W] [--threads N]

Distils (``torchdiffusion.shortcuts.distill``, the code of ``torchdiffusion distill``) one student per method -
progressive to 2 steps through its 8 -> 4 -> 2 halvings (the 4-step stage is scored too; an eps teacher cannot be
halved to 1 step), consistency distillation, distribution matching distillation (dmd) and reflow to 4 steps,
sampled at 1, 2 and 4 (``dmd2`` and ``dmd1``: distribution matching distilled for 2 steps and for 1, sampled at
each step count up to their own) - reusing students already in ``--out``. Scores every row with the shipped MNIST-5k
classifier (scripts/digit_check.py's check: share of samples classified with confidence >= 0.9) and the Fréchet
distance in that classifier's features against the training images. Cost is counted in training images seen: each
student's (all its stages) against the teacher's own (run.json), and in process CPU seconds of the whole
distillation (teacher evaluations and reflow's pair drawing included) against the teacher's training CPU seconds
(run.json ``cpu_s``). The teacher is scored with each of ``--teacher-samplers`` at every NFE; the table keeps, per
NFE, the sampler with the lowest Fréchet distance (its best sampler), and table.json keeps them all. Writes
OUT/table.json and OUT/table.md.

A class-conditional teacher (``mnist-class``): sample i asks for digit i mod 10; the teacher is sampled with
classifier-free guidance at its ``sample.guidance`` (or ``--guidance``), which is also the scale its students
distil (they sample at guidance 1, the scale baked in), and the table gains the requested-digit accuracy: the share
of samples the classifier assigns to the digit asked for.

``--autoguidance W`` distils the teacher steered from the guide model its run keeps (``distill --autoguidance``)
and adds rows of the teacher sampled that way (two network evaluations per step, said in the row's name).
``--threads`` sets torch's threads for the whole script (default 1: students distilled side by side with
--distill-only, one core each)."""

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
from torchdiffusion.evaluation.classifier import class_report
from torchdiffusion.generate import generate, load_run
from torchdiffusion.shortcuts.distill import DistillSettings, distill


def requested_digits(run, n: int):
    """Sample i asks for digit i mod 10 when ``run`` is class-conditional; None for an unconditional run."""
    return torch.arange(n) % run.config.model.num_classes if run.config.model.num_classes else None


def score(run, sample, n: int, ref_stats) -> dict:
    """confident share and classifier-feature FD of ``n`` samples (seeds 0..n-1) with ``sample``, and for a
    class-conditional run the share classified as the digit each sample asked for (``accuracy``)."""
    labels = requested_digits(run, n)
    t0 = time.time()
    x = generate(
        run.model,
        range(n),
        replace(sample, n=n, batch_size=250),
        run.data_shape,
        cond=None if labels is None else {"class": labels},
        grid_dir=run.path / "grids",
    )
    seconds = time.time() - t0
    fd = M.frechet_distance(M.FeatureStats.of(FE.extract(x, "clf:mnist5k")), ref_stats)
    rep = class_report(x, "mnist5k", labels=labels)
    out = {"confident": rep["confident_fraction"], "fd_clf": fd, "seconds_per_64": seconds * 64 / n}
    if labels is not None:
        out["accuracy"] = rep["accuracy"]
        out["guidance"] = sample.guidance
    return out


METHOD = {"dmd2": "dmd", "dmd1": "dmd"}  # --methods names of students distilled for fewer steps than the table's 4


def images_seen(folder: Path) -> int:
    """Training images of a run folder and of its progressive stages."""
    folders = [folder, *sorted((folder / "stages").glob("*"))] if (folder / "stages").is_dir() else [folder]
    return sum(json.loads((f / "run.json").read_text()).get("images_seen", 0) for f in folders)


def student(teacher: Path, method: str, steps: int, out: Path, s: DistillSettings) -> tuple[Path, dict]:
    """The student in ``out`` (distilled unless a finished one is there) and the CPU seconds its distillation took
    with the threads it ran on (kept in ``out/distill-cpu.json``; None for a student distilled before that file
    existed)."""
    cost_file = out / "distill-cpu.json"
    if not (out / "run.json").is_file() or not json.loads((out / "run.json").read_text()).get("finished"):
        t0 = time.process_time()
        distill(teacher, method, steps, out, s)
        spent = {"cpu_s": round(time.process_time() - t0, 1), "threads": torch.get_num_threads()}
        cost_file.write_text(json.dumps(spent))
    spent = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
    return out, {"cpu_s": spent.get("cpu_s"), "threads": spent.get("threads")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher")
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=20_000, help="training images per distillation run")
    ap.add_argument("--pairs", type=int, default=5_000, help="reflow pairs")
    ap.add_argument("--n", type=int, default=1000, help="samples per row")
    ap.add_argument("--methods", nargs="+", default=["progressive", "consistency", "dmd", "reflow"])
    ap.add_argument(
        "--distill-only",
        action="store_true",
        help="distil the students of --methods (CPU seconds recorded) and stop: run one process per method side by "
        "side, then once more without this flag to score them all",
    )
    ap.add_argument(
        "--grid", default=None, help="progressive: the first teacher's grid (distill --grid; default its sample.grid)"
    )
    ap.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="class-conditional teacher: the CFG scale it is sampled and distilled at (default its sample.guidance)",
    )
    ap.add_argument(
        "--autoguidance",
        type=float,
        default=1.0,
        help="distil the teacher steered from its guide model at this w, and score the teacher so too (default 1)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--teacher-rows",
        default=None,
        help="a table.json of the same teacher, --n and samplers: reuse its teacher rows instead of sampling again",
    )
    ap.add_argument(
        "--teacher-samplers",
        nargs="+",
        default=["dpmpp_2m_sde", "unipc", "dpmpp_2m", "ddim"],
        help="samplers the teacher is scored with at each NFE (one network evaluation per step each)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    teacher_path, out = Path(args.teacher), Path(args.out)
    teacher = load_run(teacher_path)
    conditional = teacher.config.model.num_classes > 0
    w = args.guidance if args.guidance is not None else teacher.config.sample.guidance
    # the teacher's model alone (no autoguidance guide: its students learn the model alone too); CFG at w
    teacher_sample = replace(teacher.config.sample, autoguidance=1.0, guidance=w if conditional else 1.0)
    train = load_data(teacher.config.data, split="train", seed=teacher.config.train.seed)
    ref = M.FeatureStats.of(FE.extract(train.x[:5000], "clf:mnist5k"))
    s = DistillSettings(
        images=args.images,
        pairs=args.pairs,
        guidance=w if conditional else None,
        grid=args.grid,
        autoguidance=args.autoguidance if args.autoguidance != 1.0 else None,  # (distill refuses a guide-less w)
        threads=torch.get_num_threads(),  # this process's (one, below), whatever the teacher trained with
    )
    plan = {
        "progressive": (2, {4: "stages/0004-steps", 2: "."}),
        "consistency": (4, None),
        "dmd": (4, None),
        "dmd2": (2, {1: ".", 2: "."}),  # distribution matching distilled for 2 steps, and for 1
        "dmd1": (1, {1: "."}),
        "reflow": (4, None),
    }
    if args.distill_only:
        for method in args.methods:
            student(teacher_path, METHOD.get(method, method), plan[method][0], out / method, s)
        return 0
    rows, teacher_all = [], []
    if args.teacher_rows:
        earlier = json.loads(Path(args.teacher_rows).read_text())
        if earlier["teacher"] != str(teacher_path) or earlier["n"] != args.n:
            raise SystemExit(f"{args.teacher_rows} scored another teacher or another --n")
        rows = [r for r in earlier["rows"] if r["model"].startswith("teacher")]
        teacher_all = earlier["teacher_all_samplers"]
    for nfe in () if args.teacher_rows else (1, 2, 4, 20):
        tried = []
        for name in args.teacher_samplers:
            r = score(teacher, replace(teacher_sample, sampler=name, steps=nfe), args.n, ref)
            tried.append({"model": f"teacher ({name})", "nfe": nfe, **r})
            print(tried[-1], flush=True)
        teacher_all += tried
        rows.append(min(tried, key=lambda r: r["fd_clf"]))
        if args.autoguidance != 1.0:  # the steered teacher its students distil: two network evaluations per step
            guided = replace(teacher_sample, autoguidance=args.autoguidance)
            tried = []
            for name in args.teacher_samplers:
                r = score(teacher, replace(guided, sampler=name, steps=nfe), args.n, ref)
                label = f"teacher, autoguided w={args.autoguidance:g}, 2 network evaluations per step ({name})"
                tried.append({"model": label, "nfe": nfe, **r})
                print(tried[-1], flush=True)
            teacher_all += tried
            rows.append(min(tried, key=lambda r: r["fd_clf"]))
    for method in args.methods:
        steps, folders = plan[method]
        folder, spent = student(teacher_path, METHOD.get(method, method), steps, out / method, s)
        cost = images_seen(folder)
        for k, sub in (folders or {k: "." for k in (1, 2, 4)}).items():
            run = load_run(folder / sub)
            r = score(run, replace(run.config.sample, steps=k), args.n, ref)
            for_steps = f", distilled for {steps} step{'s' if steps > 1 else ''}" if method in METHOD else ""
            name = f"{METHOD.get(method, method)} student{for_steps}"
            rows.append({"model": name, "nfe": k, "train_images": cost, **spent, **r})  # CPU s depend on the threads
            print(rows[-1], flush=True)
    record = {
        "teacher": str(teacher_path),
        "teacher_images": teacher.info.get("images_seen"),
        "teacher_cpu_s": teacher.info.get("cpu_s"),
        "teacher_threads": teacher.config.train.threads,
        "n": args.n,
        "distill": {
            "images": args.images,
            "pairs": args.pairs,
            "guidance": w if conditional else None,
            "progressive_grid": args.grid,
            "autoguidance": args.autoguidance,
            "threads": torch.get_num_threads(),
        },
        "rows": rows,
        "teacher_all_samplers": teacher_all,
    }
    (out / "table.json").write_text(json.dumps(record, indent=2))
    acc_head = " requested digit |" if conditional else ""
    lines = [
        f"| model | NFE | confident (>= 0.9) |{acc_head} FD (classifier features) | training images | CPU s |",
        "|---|---|---|---|---|---|" + ("---|" if conditional else ""),
    ]
    for r in rows:
        cost = r.get("train_images", record["teacher_images"])
        cpu = r.get("cpu_s", record["teacher_cpu_s"])
        cpu = "-" if cpu is None else f"{cpu:,.0f}"
        cost = "-" if cost is None else f"{cost:,}"
        acc = f" {r['accuracy']:.1%} |" if conditional else ""
        lines.append(f"| {r['model']} | {r['nfe']} | {r['confident']:.1%} |{acc} {r['fd_clf']:.2f} | {cost} | {cpu} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    # a distillation in progress has saved its state on Ctrl-C: the same command resumes it
    raise SystemExit(run_script(main, stopped="stopped; the same command resumes (finished students are reused)"))
