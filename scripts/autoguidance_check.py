"""The digit check of a run sampled with autoguidance, for several guide models and weights w.

    .venv/bin/python scripts/autoguidance_check.py runs/demo --out runs/autoguidance [--w 1,1.4,1.5,1.7] \\
        [--guide GUIDE ...] [--interval LO,HI ...] [--n 256] [--table docs/benchmarks/x.md]

Autoguidance (Karras et al. 2024) samples ``D_guide + w (D - D_guide)``: the run's EMA model D steered away from a
weaker version of itself (guidance.autoguided). A GUIDE is ``own`` (the run's guide.safetensors, kept by training
at ``train.guide_at``; the default), another run folder (its EMA weights, e.g. the same preset and seed trained
for fewer images: ``torchdiffusion train --preset mnist-cpu --set train.images=20000``) or a training state
``checkpoints/state-*.pt`` (its EMA weights). Every (guide, w) is scored as ``scripts/sampler_digit_sweep.py``
scores a sampler: ``--n`` samples from seeds 0..n-1 with the run's own sampler, grid and steps, the share the
MNIST-5k evaluation classifier is >= 0.9 confident about, the rarest digit's share and FD-MNIST5kclf against the
training digits. w = 1 is the run without guidance. ``--interval LO,HI`` (repeatable; ``none`` = every sigma) guides
only for sigma in [LO, HI] (sample.guidance_interval), each interval scored at every w. Writes
``OUT/autoguidance.json`` and a markdown table.

How the unconditional demo's guide (the EMA at 20,000 of its 150,000 images, which the presets mnist-cpu-uncond
and mnist-cpu-28 keep) and w = 1.5 were chosen: two seeds of the demo preset of then, each guided by its own EMA
at 10,000, 20,000, 40,000 and 60,000 images (docs/guidance.md#autoguidance).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_digit_sweep import digit_cells, digit_scores, floor_note  # noqa: E402  (the README's digit check, one definition)


def load_guide(run, spec: str):
    """The guide model a GUIDE names (see the module docstring), on the run's network."""
    from torchdiffusion.generate import guide_of, load_run
    from torchdiffusion.model import build_model
    from torchdiffusion.training import load_state

    if spec == "own":
        guide = guide_of(run.model)
        if guide is None:
            raise ValueError(f"{run.path} keeps no guide model (trained with train.guide_at=0); name one with --guide")
        return guide
    path = Path(spec)
    if path.is_file():
        guide = build_model(run.config, run.data_shape)
        guide.load_state_dict(load_state(path)["ema"])
        return guide.eval().requires_grad_(False)
    other = load_run(path)
    if other.data_shape != run.data_shape:
        raise ValueError(f"{path} is a model of {other.data_shape}, not of {run.data_shape}")
    return other.model


def parse_interval(text: str) -> tuple[float, float] | None:
    """``LO,HI`` as a sigma interval; ``none`` for guidance everywhere."""
    if text.strip().lower() == "none":
        return None
    lo, hi = (float(v) for v in text.split(","))
    return (lo, hi)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder (read only)")
    ap.add_argument("--out", required=True, help="folder for the reports")
    ap.add_argument("--guide", action="append", help="own (default), a run folder or a state-*.pt; repeatable")
    ap.add_argument("--w", default="1,1.5", help="comma-separated autoguidance weights (1 = unguided)")
    ap.add_argument(
        "--interval",
        action="append",
        help="guide only for sigma in LO,HI (sample.guidance_interval; 'none' = everywhere, the default); repeatable",
    )
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--table", help="markdown table (default OUT/autoguidance.md)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from torchdiffusion.config import validate
    from torchdiffusion.generate import RunError, attach_guide, generate, load_run

    try:
        ws = [float(w) for w in args.w.split(",")]
        intervals = [parse_interval(i) for i in args.interval or ["none"]]
        run = load_run(args.run)
        for i in intervals:  # the config's own check of sample.guidance_interval (0 <= LO < HI)
            validate(replace(run.config, sample=replace(run.config.sample, guidance_interval=i)))
        guides = {spec: load_guide(run, spec) for spec in args.guide or ["own"]}
    except (ValueError, OSError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    plan = [("none", 1.0, None)] if 1.0 in ws else []  # w = 1 is the run alone, whatever the guide: scored once
    plan += [(spec, w, i) for spec in guides for w in ws if w != 1.0 for i in intervals]
    try:
        for spec, w, interval in tqdm(plan, desc="autoguidance"):
            if spec != "none":
                attach_guide(run.model, guides[spec])
            sample = replace(run.config.sample, n=args.n, autoguidance=w, guidance_interval=interval)
            t0 = time.perf_counter()
            x = generate(run.model, range(args.n), sample, run.data_shape, grid_dir=run.path / "grids")
            seconds = time.perf_counter() - t0
            tag = f"w{w:g}-{Path(spec).name or spec}" + (f"-{interval[0]:g}-{interval[1]:g}" if interval else "")
            r = {"guide": spec, "w": w, "interval": interval, **digit_scores(run, x, out / tag)}
            r["sampling_seconds"] = round(seconds, 1)
            rows.append(r)
            where = f" sigma in {list(interval)}" if interval else ""
            tqdm.write(f"{spec} w={w:g}{where}: {100 * r['confident_fraction']:.1f} % FD {r['FD-MNIST5kclf']:.2f}")
            record = {"run": str(run.path), "n": args.n, "rows": rows}
            (out / "autoguidance.json").write_text(json.dumps(record, indent=2))
    except KeyboardInterrupt:
        print("stopped; the rows so far are in autoguidance.json", file=sys.stderr)
        return 130
    table = Path(args.table) if args.table else out / "autoguidance.md"
    table.write_text(markdown(rows, args.n, run.config.sample))
    print(table)
    return 0


def markdown(rows: list[dict], n: int, sample) -> str:
    lines = [
        f"Sampler: `{sample.sampler}`, {sample.grid}, {sample.steps} steps; {n} samples (seeds 0-{n - 1}).\n",
        f"| guide | w | sigma interval | confident >= 0.9 (of {n}) | rarest digit | FD-MNIST5kclf | sampling s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        i = r.get("interval")
        where = f"[{i[0]:g}, {i[1]:g}]" if i else "all"
        lines.append(f"| {r['guide']} | {r['w']:g} | {where} | {digit_cells(r)} | {r['sampling_seconds']} |")
    lines += floor_note(rows)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
