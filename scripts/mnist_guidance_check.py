"""Guidance check of a class-conditional MNIST-5k model sampled with classifier-free guidance.

    .venv/bin/python scripts/mnist_guidance_check.py --out runs/mnist-class            # train (resumes), sweep, measure
    .venv/bin/python scripts/mnist_guidance_check.py --out runs/mnist-class --skip-train

1. trains the ``mnist-class`` preset (torchdiffusion.config) into ``--out``;
2. runs the guidance sweep (``--sweep-per-class`` samples per digit at each scale) -> ``OUT/guidance-sweep/``,
   copied to ``docs/images/guidance-sweep-mnist.png`` and ``docs/images/guidance-grid-mnist.png``;
3. samples ``--n`` images (class k = index mod 10) at guidance 0, 1 and the preset's default, classifies them
   with the shipped MNIST-5k evaluation classifier, and writes ``OUT/guidance-check.json`` plus a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/mnist-class")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--images", type=int, default=None, help="override the preset's training length")
    ap.add_argument("--n", type=int, default=500, help="samples per guidance scale for the accuracy figure")
    ap.add_argument("--scales", default="0,1,2", help="scales of the accuracy table (the default is added)")
    ap.add_argument("--sweep-scales", default="0,1,2,3,5")
    ap.add_argument("--sweep-per-class", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--docs", default="docs/images")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from torchdiffusion.evaluation.classifier import class_report, load_classifier
    from torchdiffusion.evaluation.guidance_sweep import real_diversity, save_sweep, sweep
    from torchdiffusion.generate import generate, load_run
    from torchdiffusion.presets import get_preset
    from torchdiffusion.training import train
    from torchdiffusion.viz import save_grid

    cfg = get_preset("mnist-class")
    if args.images:
        cfg = replace(cfg, train=replace(cfg.train, images=args.images))
    out = Path(args.out)
    if not args.skip_train:
        t = time.time()
        train(cfg, out, progress=sys.stderr.isatty())
        print(f"trained in {time.time() - t:.0f} s (rough; shared CPU)", file=sys.stderr)
    run = load_run(out)
    clf = load_classifier("mnist5k")
    sample = run.config.sample
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)

    # -- Guidance sweep -------------------------------------------------------------------------------------
    scales = [float(s) for s in args.sweep_scales.split(",")]
    res = sweep(
        run,
        scales,
        classifier=clf,
        n_per_class=args.sweep_per_class,
        mode="class",
        sample=sample,
        log=lambda line: print(line, file=sys.stderr),
    )
    res["real_diversity"] = real_diversity(run, clf, args.sweep_per_class)
    res["run"] = str(out)
    sd = out / "guidance-sweep"
    title = (
        f"MNIST-5k class-conditional: guidance sweep ({sample.sampler}, "
        f"{sample.steps} steps, {args.sweep_per_class}/class)"
    )
    save_sweep(res, sd, title)
    shutil.copyfile(sd / "sweep.png", docs / "guidance-sweep-mnist.png")
    shutil.copyfile(sd / "grid.png", docs / "guidance-grid-mnist.png")

    # -- Accuracy of n samples at a few scales --------------------------------------------------------------
    table_scales = sorted({float(s) for s in args.scales.split(",")} | {float(sample.guidance)})
    want = torch.arange(args.n) % 10
    acc = {
        "n": args.n,
        "sampler": sample.sampler,
        "steps": sample.steps,
        "default_guidance": sample.guidance,
        "train_images": run.config.train.images,
        "scales": {},
    }
    for w in table_scales:
        t = time.time()
        x = generate(run.model, range(args.n), replace(sample, guidance=w), run.data_shape, cond={"class": want})
        rep = class_report(x, clf, labels=want)
        acc["scales"][f"{w:g}"] = {
            "accuracy": rep["accuracy"],
            "per_class_accuracy": rep["per_class_accuracy"],
            "confident_fraction": rep["confident_fraction"],
        }
        save_grid(x[:100], out / f"samples-w{w:g}.png", nrow=10)
        print(f"w = {w:g}: accuracy {rep['accuracy']:.3f} ({time.time() - t:.0f} s)", file=sys.stderr)
    (out / "guidance-check.json").write_text(json.dumps(acc, indent=2) + "\n")
    shutil.copyfile(out / f"samples-w{sample.guidance:g}.png", docs / "mnist-class-samples.png")

    head = "| guidance w | accuracy | " + " | ".join(str(k) for k in range(10)) + " |"
    print(head)
    print("|" + "---|" * (12))
    for w, r in acc["scales"].items():
        cells = " | ".join(f"{100 * v:.0f}" for v in r["per_class_accuracy"])
        print(f"| {w} | {100 * r['accuracy']:.1f} % | {cells} |")
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
