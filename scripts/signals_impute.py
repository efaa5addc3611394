"""Imputation and forecasting figures of a signal run (docs/signals.md), written by scripts/signals_figures.sh.

Imputation: every held-out series gets one hidden stretch of 20 % of its points at a seeded random place; the
stretch is filled by linear interpolation (the baseline) and by the model - plain replacement and RePaint - with
4 samples per series (euler_ancestral on the run's grid). The MSE over the hidden points is reported for one
sample and for the mean of the 4 (the point estimate). Forecasting: the last 32 points of three held-out series are
hidden and continued with 32 samples each (outpainting to the right), drawn with their bands.

python scripts/signals_impute.py runs/signal-gunpoint --json docs/benchmarks/signals/gunpoint-impute.json \
    --impute-png docs/images/signal-impute.png --forecast-png docs/images/signal-forecast.png
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from torchdiffusion.data import load_data
from torchdiffusion.generate import load_run
from torchdiffusion.io import atomic_write
from torchdiffusion.signals import forecast, impute, linear_fill, random_spans
from torchdiffusion.viz import save_forecast

SAMPLES = 4  # imputations per series


def hidden_mse(y: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> float:
    hole = 1 - mask
    return float(((y - x) ** 2 * hole).sum() / hole.expand_as(x).sum())


def imputation(run, x: torch.Tensor, mask: torch.Tensor, sample, resample: int, jump: int) -> tuple[dict, torch.Tensor]:
    n = len(x)
    y = impute(run, x.repeat(SAMPLES, 1, 1), mask.repeat(SAMPLES, 1, 1), sample, resample=resample, jump=jump)
    mean = y.reshape(SAMPLES, n, *x.shape[1:]).mean(0)
    return {"mse_one_sample": hidden_mse(y[:n], x, mask), "mse_mean_of_4": hidden_mse(mean, x, mask)}, mean


def draw_imputations(x, mask, fills: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 2.4), sharey=True)
    for i, ax in enumerate(axes):
        hole = (1 - mask[i, 0]).bool()
        ax.axvspan(int(hole.nonzero()[0]), int(hole.nonzero()[-1]), color="0.9")
        ax.plot(x[i, 0].numpy(), c="k", lw=1.0, label="truth")
        for k, (name, y) in enumerate(fills.items()):
            ax.plot(torch.where(hole, y[i, 0], torch.nan).numpy(), c=f"C{k}", lw=1.0, label=name)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    fig.suptitle("a hidden 20 % stretch (grey band) of held-out series, filled", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--json", required=True)
    p.add_argument("--impute-png")
    p.add_argument("--forecast-png")
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    cfg = run.config
    x = load_data(cfg.data, "holdout", cfg.train.seed).x
    mask = random_spans(len(x), x.shape[-1], 0.2, seed=0)
    sample = replace(cfg.sample, sampler="euler_ancestral", steps=args.steps)
    lin = linear_fill(x, mask)
    report = {"run": args.run, "series": len(x), "hidden_fraction": 0.2, "sampler": "euler_ancestral"}
    report["steps"] = args.steps
    report["linear_interpolation"] = {"mse": hidden_mse(lin, x, mask)}
    report["replacement"], plain = imputation(run, x, mask, sample, resample=1, jump=args.steps)
    report["repaint_5x2"], rp = imputation(run, x, mask, sample, resample=5, jump=2)
    atomic_write(args.json, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if args.impute_png:
        draw_imputations(x, mask, {"linear": lin, "replacement (mean of 4)": plain, "RePaint 5x2 (mean of 4)": rp},
                         args.impute_png)  # fmt: skip
    if args.forecast_png:
        cut, hist = 32, x[:3]
        fc = torch.stack(
            [forecast(run, h[:, :-cut], cut, cfg.sample, samples=32, seed=32 * i) for i, h in enumerate(hist)]
        )
        save_forecast(
            hist[..., :-cut], fc, args.forecast_png, truth=hist, title="forecast of the last 32 points: 32 samples"
        )


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
