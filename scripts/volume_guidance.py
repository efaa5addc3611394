"""Volume metrics of one trained run at several classifier-free guidance scales and evaluation seeds.

At n = 200 samples the energy distance of one evaluation moves between seeds by as much as the margins the
docs state, so a guidance scale is chosen from the mean over seeds, with its standard error. Every evaluation
uses the same feature network (evaluation/volumes.FEATURE_SEED); a seed draws other samples and other baseline
volumes. For each (guidance, seed): the model's and the Gaussian baseline's energy distance and MMD^2 against
the held-out volumes, their ratio, and the class accuracy of the samples.

    python scripts/volume_guidance.py runs/volume-shapes --guidance 2,4,6 --seeds 10000,20000,30000 --n 200 \
        --json docs/benchmarks/kinds/volume-guidance.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def mean_se(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation / sqrt(k); 0 for one value)."""
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return m, se


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a volume run folder")
    p.add_argument("--guidance", type=_floats, default=[2.0], help="comma-separated guidance scales")
    p.add_argument("--seeds", type=_ints, default=[10_000, 20_000, 30_000], help="comma-separated evaluation seeds")
    p.add_argument("--n", type=int, default=200, help="samples (and baseline draws) per evaluation")
    p.add_argument("--steps", type=int, default=None, help="override the run's sampling steps")
    p.add_argument("--json", help="write every evaluation and the summary here")
    args = p.parse_args(argv)

    import torch

    from torchdiffusion.evaluation.evaluate import evaluate

    torch.set_num_threads(1)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for g in args.guidance:
            ratios = []
            for seed in args.seeds:
                t0 = time.process_time()
                rep = evaluate(
                    args.run,
                    ("volume",),
                    args.n,
                    guidance=g,
                    seed=seed,
                    steps=args.steps,
                    out=Path(tmp) / f"g{g}-s{seed}",
                    log=lambda line: None,
                )["volume"]
                model, base = rep["model"], rep["gaussian_pca"]
                row = {
                    "guidance": g,
                    "seed": seed,
                    "energy": model["energy"],
                    "baseline_energy": base["energy"],
                    "ratio": model["energy"] / base["energy"],
                    "mmd2": model["mmd2"],
                    "baseline_mmd2": base["mmd2"],
                    "class_accuracy": model.get("class_accuracy"),
                    "floor_energy": rep["training_volumes"]["energy"],
                    "cpu_s": round(time.process_time() - t0, 1),
                }
                rows.append(row)
                ratios.append(row["ratio"])
                print(json.dumps(row), file=sys.stderr)
            cell = {"guidance": g, "seeds": len(args.seeds)}
            for key in ("energy", "baseline_energy", "ratio", "class_accuracy"):
                m, se = mean_se([r[key] for r in rows if r["guidance"] == g])
                cell[key], cell[f"{key}_se"] = m, se
            summary.append(cell)

    print(f"run {args.run}: n = {args.n} per evaluation, seeds {args.seeds}; mean ± standard error over seeds\n")
    print("| guidance | energy (model) | energy (Gaussian baseline) | ratio | class accuracy |")
    print("|---|---|---|---|---|")
    for c in summary:
        print(
            f"| {c['guidance']:g} | {c['energy']:.3f} ± {c['energy_se']:.3f} | {c['baseline_energy']:.3f} ± "
            f"{c['baseline_energy_se']:.3f} | {c['ratio']:.2f} ± {c['ratio_se']:.2f} | "
            f"{c['class_accuracy']:.3f} ± {c['class_accuracy_se']:.3f} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"run": args.run, "n": args.n, "seeds": args.seeds, "summary": summary, "rows": rows}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
