"""Inpainting accuracy against network evaluations: RePaint with and without pseudoinverse guidance, at equal NFE.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/inpaint_nfe.py runs/demo --out docs/benchmarks/inpaint-nfe \\
        [--n 100] [--first 0] [--seed 0] [--guidance 1] [--guidance-sigma-max 10]

Each point is one ``scripts/editing_check.py`` run (the held-out lower-half test of docs/editing.md: the lower half
of held-out digits repainted, scored against their labels by the shipped MNIST-5k classifier) with the
``euler_ancestral`` sampler on the run's grid: 50 and 100 steps of one pass, then 50 steps with RePaint's resampling
(jump 5) of 2, 4 and 8 passes - 50, 100, 100, 200 and 400 network evaluations per image - once plain and once with
pseudoinverse guidance (``edit.pseudoinverse_guided``; one extra backward pass per guided evaluation). Points
already in ``--out`` are reused. Writes OUT/points.json and OUT/accuracy-vs-nfe.png (accuracy with one standard
error against NFE per image).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

SETTINGS = [  # (steps, resample passes, jump)
    (50, 1, 5),
    (100, 1, 5),
    (50, 2, 5),
    (50, 4, 5),
    (50, 8, 5),
]


def editing_check():
    spec = importlib.util.spec_from_file_location("editing_check", Path(__file__).with_name("editing_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=100, help="held-out digits per point (default 100)")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--guidance-sigma-max", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check = editing_check()
    points = []
    for guided in (False, True):
        for steps, r, jump in SETTINGS:
            name = f"{'guided' if guided else 'plain'}-s{steps}-r{r}-j{jump}.json"
            if not (out / name).is_file():
                cli = [args.run, "--n", str(args.n), "--first", str(args.first), "--seed", str(args.seed)]
                cli += [
                    "--sampler",
                    "euler_ancestral",
                    "--steps",
                    str(steps),
                    "--resample",
                    str(r),
                    "--jump",
                    str(jump),
                ]
                cli += [
                    "--skip-replacement",
                    "--skip-inversion",
                    "--threads",
                    str(args.threads),
                    "--out",
                    str(out / name),
                ]
                if guided:
                    cli += ["--guidance", str(args.guidance), "--guidance-sigma-max", str(args.guidance_sigma_max)]
                check.main(cli)
            rep = json.loads((out / name).read_text())
            acc, n = rep["repaint"]["accuracy"], rep["n"]
            points.append(
                {
                    "method": "RePaint + pseudoinverse guidance" if guided else "RePaint",
                    "steps": steps,
                    "resample": r,
                    "jump": jump,
                    "nfe_per_image": rep["repaint"]["nfe_per_image"],
                    "accuracy": acc,
                    "standard_error": math.sqrt(acc * (1 - acc) / n),
                    "n": n,
                    "seconds": rep["repaint"]["seconds"],
                    "guidance": rep.get("guidance"),
                    "guidance_sigma_max": rep.get("guidance_sigma_max"),
                }
            )
            print(points[-1], flush=True)
    (out / "points.json").write_text(json.dumps({"run": args.run, "first": args.first, "points": points}, indent=2))
    plot(points, out / "accuracy-vs-nfe.png")
    return 0


def plot(points: list[dict], path: Path) -> None:
    from torchdiffusion.viz import _pyplot, _save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, colour in (("RePaint", "tab:blue"), ("RePaint + pseudoinverse guidance", "tab:orange")):
        best: dict[int, dict] = {}
        for p in points:  # at an NFE reached two ways (100 steps x 1 pass, 50 x 2), the better point
            if p["method"] == method and p["accuracy"] >= best.get(p["nfe_per_image"], {"accuracy": -1})["accuracy"]:
                best[p["nfe_per_image"]] = p
        xs = sorted(best)
        ax.errorbar(
            xs,
            [100 * best[x]["accuracy"] for x in xs],
            yerr=[100 * best[x]["standard_error"] for x in xs],
            marker="o",
            capsize=3,
            color=colour,
            label=method,
        )
    ax.axhline(80, color="grey", linestyle=":", label="80 %")
    ax.set_xscale("log")
    nfes = sorted({p["nfe_per_image"] for p in points})
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.minorticks_off()
    ax.set_xlabel("network evaluations per image")
    ax.set_ylabel("correct completions (%)")
    ax.set_title("inpainting the lower half of held-out digits")
    ax.legend(loc="lower right")
    fig.tight_layout()
    _save_figure(fig, path)


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
