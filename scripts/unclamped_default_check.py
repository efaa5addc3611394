"""Would another sampler or grid make a better default for unclamped runs? Checked across step counts, noise tables
and denoiser errors, not at one setting.

    OMP_NUM_THREADS=1 python scripts/unclamped_default_check.py --out docs/benchmarks/samplers/unclamped-default

On the held-out Gaussian mixtures of ``bench.analytic_cases`` (the 64-D one left out for time), sampled as a
1000-step DDPM eps model on the linear and the cosine table whose eps_hat is the exact one (delta 0) or off by
``delta tanh(W x_vp + b)`` (``unclamped_grid.perturbed``), each setting's sliced Wasserstein-1 (mean over two
starting noises, seeds 0 and 100, 5,000 samples, to a fixed exact set of seed 2) is divided by that of UniPC on the
model's timesteps with sigma <= 80 (the ``auto`` grid of these data until the log-SNR grid down to 1 / n replaced
it). Settings: UniPC and DPM-Solver++(3M) on the timesteps <= 80, and on log-SNR (exponential) grids from 80 down to
the table's sigma_min and down to 0.02; UniPC of order 3 (its default) and of order 2 on the log-SNR grid from 80
down to 1 / n (``schedules.ode_sigma_low``; order 2 there is what ``SampleConfig()`` runs now,
``generate.sampling_plan``). Reported per table, delta and step count: the geometric mean of the ratio over the
mixtures, on how many the setting beats the timesteps, and its worst ratio (below 1: better).
Writes ``results.json`` and ``results.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unclamped_grid import perturbed  # noqa: E402

from torchdiffusion.bench.analytic_cases import CASES, HELD_OUT_CASES  # noqa: E402
from torchdiffusion.bench.fast_mixture import FastMixtureDenoiser  # noqa: E402
from torchdiffusion.bench.metrics import SlicedReference, random_directions  # noqa: E402
from torchdiffusion.process import DiscreteVP  # noqa: E402
from torchdiffusion.samplers import get_sampler  # noqa: E402
from torchdiffusion.schedules import make_sigmas, ode_sigma_low, unclamped_timesteps  # noqa: E402

SETTINGS = (
    ("unipc", "timesteps <= 80"),  # what the others are divided by: first
    ("dpmpp_3m", "timesteps <= 80"),
    ("unipc", "log-SNR 80 to sigma_min"),
    ("dpmpp_3m", "log-SNR 80 to sigma_min"),
    ("unipc", "log-SNR 80 to 0.02"),
    ("dpmpp_3m", "log-SNR 80 to 0.02"),
    ("unipc", "log-SNR 80 to 1/n"),
    ("unipc order 2", "log-SNR 80 to 1/n"),  # SampleConfig() on these data now
)


def grid(kind: str, steps: int, p: DiscreteVP) -> torch.Tensor:
    if kind == "timesteps <= 80":
        return make_sigmas("uniform_t", steps, 0, 0, discrete_sigmas=unclamped_timesteps(p.sigmas))
    if kind.endswith("1/n"):
        low = ode_sigma_low(steps, p.sigma_min)
    else:
        low = p.sigma_min if kind.endswith("sigma_min") else max(0.02, p.sigma_min)
    return make_sigmas("exponential", steps, low, 80.0)


def solver(setting: str):
    """The sampler function of a setting's name: a sampler name, optionally followed by "order K"."""
    name, _, order = setting.partition(" order ")
    fn = get_sampler(name)
    return functools.partial(fn, order=int(order)) if order else fn


def measure(cases, n: int, seeds=(0, 100)) -> list[dict]:
    rows = []
    combos = [(t, d) for t in ("linear", "cosine") for d in (0.0, 0.03)]
    for (table, delta), case in tqdm([(c, m) for c in combos for m in cases], desc="table x error x mixture"):
        p = DiscreteVP(table, T=1000)
        mix = CASES[case]()
        exact = FastMixtureDenoiser(mix)
        D = perturbed(exact, mix.dim, delta) if delta else exact
        sliced = SlicedReference(mix.sample(n, torch.Generator().manual_seed(2)), random_directions(mix.dim, 256))
        zs = [torch.randn(n, mix.dim, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
        for steps in (5, 10, 20):
            for sampler, kind in SETTINGS:
                sig = grid(kind, steps, p)
                sw = []
                for z in zs:
                    x = solver(sampler)(D, float(sig[0]) * z, sig)
                    sw.append(sliced.distance(x) if bool(torch.isfinite(x).all()) else math.inf)
                rows.append(
                    {
                        "table": table,
                        "delta": delta,
                        "case": case,
                        "steps": steps,
                        "sampler": sampler,
                        "grid": kind,
                        "sw": sum(sw) / len(sw),
                    }
                )
    return rows


def summary(rows: list[dict]) -> str:
    base = {
        (r["table"], r["delta"], r["case"], r["steps"]): r["sw"]
        for r in rows
        if (r["sampler"], r["grid"]) == SETTINGS[0]
    }
    lines = [
        "| table | delta | steps | " + " | ".join(f"{s} on {g}" for s, g in SETTINGS[1:]) + " |",
        "|---|---|---|" + "---|" * (len(SETTINGS) - 1),
    ]
    keys = sorted({(r["table"], r["delta"], r["steps"]) for r in rows}, key=lambda k: (k[0] != "linear", k[1], k[2]))
    for table, delta, steps in keys:
        cells = []
        for sampler, kind in SETTINGS[1:]:
            ratios = [
                r["sw"] / base[(table, delta, r["case"], steps)]
                for r in rows
                if (r["table"], r["delta"], r["steps"], r["sampler"], r["grid"]) == (table, delta, steps, sampler, kind)
            ]
            gm = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
            cells.append(f"{gm:.2f} ({sum(v < 1 for v in ratios)}/{len(ratios)}, worst {max(ratios):.2f})")
        lines.append(f"| {table} | {delta:g} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    default_cases = [c for c in HELD_OUT_CASES[:9] if c != "mixture64b"]  # the first two held-out sets
    ap.add_argument("--cases", default=",".join(default_cases), help=f"any of {', '.join(HELD_OUT_CASES)}")
    ap.add_argument("--n", type=int, default=5000, help="samples per set")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        print(f"error: unknown case {bad[0]!r}; choose from {', '.join(CASES)}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        rows = measure(cases, args.n)
    except KeyboardInterrupt:
        print("stopped; nothing written", file=sys.stderr)
        return 130
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join(["scripts/unclamped_default_check.py", *(argv or sys.argv[1:])]), "rows": rows}
    doc["seconds"] = round(time.perf_counter() - t0)
    (out / "results.json").write_text(json.dumps(doc, indent=2))
    (out / "results.md").write_text(summary(rows))
    print(summary(rows))
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
