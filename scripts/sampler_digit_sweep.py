"""Which sampler, grid and step count give the most recognisable digits? The digit check for each candidate.

    .venv/bin/python scripts/sampler_digit_sweep.py runs/demo --out runs/sweep \
        [--candidates unipc:uniform_t:20,dpmpp_2m_sde:uniform_t:20:settings.eta=0.5] [--n 256] [--table FILE]

For every candidate ``sampler:grid:steps`` (then optionally ``:key=value`` fields, each a ``sample`` setting as
``--set sample.key=value`` takes it: ``settings.eta=0.5``, ``autoguidance=1.3``) it draws ``--n`` samples from seeds
0..n-1 (the README's digit check; ``--seed S`` draws seeds S..S+n-1 instead) and scores them as ``torchdiffusion
evaluate --features clf:mnist5k`` does (``evaluation.evaluate`` on the samples): the share the MNIST-5k evaluation
classifier is >= 0.9 confident about, the rarest digit's share, and the Fréchet distance in that classifier's
features (FD-MNIST5kclf) against the run's training digits, with the held-out digits' own FD as the floor. The run
folder is only read; reports go under ``--out``. Writes ``sweep.json`` and a markdown table (``--table``, default
``OUT/sweep.md``), rows in the order given. ``--precision bf16`` runs the network under bf16 autocast while sampling
(the sampler's arithmetic stays fp32), as ``generate(..., precision="bf16")`` does.
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

DEFAULT_CANDIDATES = (
    "unipc:uniform_t:20,dpmpp_2m_sde:uniform_t:20,dpmpp_2m_sde:karras:20,dpmpp_2m_sde:exponential:20,"
    "dpmpp_3m_sde:uniform_t:20,euler_ancestral:uniform_t:20,ddpm:uniform_t:20,unipc_bh1:uniform_t:20,"
    "dpmpp_2m:uniform_t:20,dpmpp_2m_sde:uniform_t:30,dpmpp_3m_sde:uniform_t:30"
)


def parse_candidates(text: str) -> list[tuple[str, str, int, tuple[str, ...]]]:
    """``sampler:grid:steps[:key=value...]`` items, comma-separated; the extra fields are ``sample`` keys."""
    out = []
    for item in text.split(","):
        fields = item.strip().split(":")
        if len(fields) < 3 or any("=" not in f for f in fields[3:]):
            raise ValueError(f"candidate {item.strip()!r} must look like sampler:grid:steps[:key=value...]")
        sampler, grid, steps = fields[:3]
        try:
            out.append((sampler, grid, int(steps), tuple(fields[3:])))
        except ValueError:
            raise ValueError(f"candidate {item.strip()!r}: steps {steps!r} is not a whole number") from None
    return out


def candidate_name(sampler: str, grid: str, steps: int, extra: tuple[str, ...]) -> str:
    """The candidate's folder name under --out: sampler-grid-steps, then its extra settings."""
    return "-".join([sampler, grid, str(steps), *(e.replace("settings.", "") for e in extra)])


def digit_scores(run, x, out: Path) -> dict:
    """The digit check of samples ``x`` of ``run``, as ``evaluate --features clf:mnist5k`` reports it: the confident
    share, the rarest digit's share, FD-MNIST5kclf against the training digits and the held-out digits' own FD; also
    how many samples the classifier reads as each digit (``digit_counts``, 0-9)."""
    from torchdiffusion.evaluation.evaluate import evaluate

    rep = evaluate(run.path, ("fd",), len(x), features=["clf:mnist5k"], samples=x, out=out, log=lambda s: None)
    fm = rep["feature_metrics"]["clf:mnist5k"]
    return {
        "confident_fraction": rep["classes"]["confident_fraction"],
        "min_class_fraction": rep["classes"]["min_class_fraction"],
        "FD-MNIST5kclf": fm["samples"]["FD-MNIST5kclf"],
        "FD-MNIST5kclf_heldout": fm.get("heldout", {}).get("FD-MNIST5kclf"),
        "digit_counts": [round(h * len(x)) for h in rep["classes"]["histogram"]],
    }


def candidate_sample(run, sampler: str, grid: str, steps: int, extra: tuple[str, ...], n: int):
    """The run's sample config with one candidate's sampler, grid, steps and extra ``key=value`` settings, checked
    as ``sample --set`` checks it (a setting the sampler does not take is an error)."""
    from torchdiffusion.config import override, validate

    sample = override(replace(run.config.sample, sampler=sampler, grid=grid, steps=steps, n=n), list(extra))
    validate(replace(run.config, sample=sample))
    return sample


def score(run, sample, out: Path, extra: tuple[str, ...] = (), seed: int = 0, precision: str = "fp32") -> dict:
    """Sample ``sample.n`` digits (seeds seed..seed+n-1) with one candidate's sample config (``candidate_sample``)
    and evaluate them; one result row."""
    from torchdiffusion.generate import generate, network_evaluations
    from torchdiffusion.samplers import nfe

    n = sample.n
    # the grid and the settings it brings, resolved once: sampled, recorded and counted alike
    plan = run.sampling_plan(sample)
    _, knobs, grid_record = plan
    t0 = time.perf_counter()
    with network_evaluations(run.model) as evaluated:  # autoguidance (the run's own setting) runs two networks
        x = generate(run.model, range(seed, seed + n), sample, run.data_shape, plan=plan, precision=precision)
    seconds = time.perf_counter() - t0
    return {
        "sampler": sample.sampler,
        "grid": sample.grid,
        "grid_used": grid_record["grid"],
        "steps": sample.steps,
        "settings": list(extra),
        "nfe": nfe(sample.sampler, sample.steps, **knobs),
        "network_evaluations_per_image": evaluated["rows"] / n,
        **digit_scores(run, x, out),
        "sampling_seconds_loaded": round(seconds, 1),
    }


def markdown(rows: list[dict], n: int, seed: int = 0) -> str:
    lines = [
        f"| sampler | grid | steps | settings | NFE | network evaluations / image | confident >= 0.9 (of {n}, seeds "
        f"{seed}-{seed + n - 1}) "
        "| rarest digit | FD-MNIST5kclf |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        evaluations = r.get("network_evaluations_per_image", "-")  # rows resumed from before it was counted: -
        settings = ", ".join(r.get("settings", ())) or "-"
        lines.append(
            f"| `{r['sampler']}` | {r['grid']} | {r['steps']} | {settings} | {r['nfe']} | {evaluations} "
            f"| {digit_cells(r)} |"
        )
    lines += floor_note(rows)
    return "\n".join(lines) + "\n"


def digit_cells(r: dict) -> str:
    """A digit-check row's three table cells: confident share, rarest digit's share, FD-MNIST5kclf."""
    return f"{100 * r['confident_fraction']:.1f} % | {100 * r['min_class_fraction']:.1f} % | {r['FD-MNIST5kclf']:.2f}"


def floor_note(rows: list[dict]) -> list[str]:
    """The line under a digit-check table that gives the held-out digits' own FD (none when it was not measured)."""
    floor = rows[0].get("FD-MNIST5kclf_heldout") if rows else None
    if floor is None:
        return []
    return [f"\nFloor: the run's held-out digits against its training digits, FD-MNIST5kclf {floor:.2f}."]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder (read only)")
    ap.add_argument("--out", required=True, help="folder for the reports")
    ap.add_argument(
        "--candidates", default=DEFAULT_CANDIDATES, help="comma-separated sampler:grid:steps[:key=value...]"
    )
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument(
        "--seed", type=int, default=0, help="first seed (default 0, the README's check); another draws fresh samples"
    )
    ap.add_argument("--table", help="markdown table (default OUT/sweep.md)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the network's arithmetic in sampling (bf16: autocast)",
    )
    ap.add_argument("--resume", action="store_true", help="keep the rows OUT/sweep.json already has")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from torchdiffusion.config import ConfigError
    from torchdiffusion.generate import load_run

    try:
        if args.n < 2 or args.seed < 0:  # a Fréchet distance needs two samples; seeds are >= 0
            raise ValueError(f"--n must be >= 2 and --seed >= 0, got --n {args.n} --seed {args.seed}")
        cands = parse_candidates(args.candidates)
        run = load_run(args.run)
        # every candidate built and checked before the first is sampled
        samples = [candidate_sample(run, sampler, grid, steps, extra, args.n) for sampler, grid, steps, extra in cands]
    except (ValueError, OSError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    if args.resume and (out / "sweep.json").exists():  # rows this script already wrote for the same run and n
        old = json.loads((out / "sweep.json").read_text())
        same = (old.get("n"), old.get("run"), old.get("seed", 0), old.get("precision", "fp32"))
        if same == (args.n, str(run.path), args.seed, args.precision):
            done = {(r["sampler"], r["grid"], r["steps"], tuple(r.get("settings", ()))): r for r in old["rows"]}
    rows = []
    try:
        for (sampler, grid, steps, extra), sample in tqdm(list(zip(cands, samples)), desc="candidates"):
            name = candidate_name(sampler, grid, steps, extra)
            rows.append(
                done.get((sampler, grid, steps, extra))
                or score(run, sample, out / name, extra, args.seed, args.precision)
            )
            r = rows[-1]
            tqdm.write(f"{name}: {100 * r['confident_fraction']:.1f} % FD {r['FD-MNIST5kclf']:.2f}")
            (out / "sweep.json").write_text(
                json.dumps(
                    {"run": str(run.path), "n": args.n, "seed": args.seed, "precision": args.precision, "rows": rows},
                    indent=2,
                )
            )
    except KeyboardInterrupt:
        print("stopped; the rows so far are in sweep.json", file=sys.stderr)
        return 130
    table = Path(args.table) if args.table else out / "sweep.md"
    text = markdown(rows, args.n, args.seed)
    if args.precision != "fp32":
        text += f"\nThe network sampled in {args.precision} (autocast; the sampler's own arithmetic unchanged).\n"
    table.write_text(text)
    print(table)
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
