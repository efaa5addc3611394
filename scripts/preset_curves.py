"""Quality per training minute of preset candidates: the digit check against wall-clock training time.

    .venv/bin/python scripts/preset_curves.py --out runs/preset-curves [--minutes 11] [--eval-every 15000] \\
        [--candidate NAME=PRESET[,KEY=VALUE...] ...] [--chosen NAME] [--set KEY=VALUE ...] [--threads 2]
    .venv/bin/python scripts/preset_curves.py --out runs/preset-curves --plot-only   # redraw from the runs so far

Trains each candidate into OUT/<NAME> with ``torchdiffusion train`` for ``--minutes`` of wall-clock time (the
learning rate has no decay, so a run stopped by the clock is a point on its own curve, not a truncated schedule),
with the in-training quick evaluation every ``--eval-every`` images: 256 samples of the EMA model with the
preset's sampler, read by the evaluation classifier (the share it is >= 0.9 confident about, as ``evaluate`` and
``scripts/digit_check.py`` report it, and the share of the rarest digit) and the Fréchet distance in its features
against 2,000 training images. The x axis is training wall-clock minutes, evaluation excluded (the run's clock
less its evaluations, ``scripts/dit_vs_unet.curve``), so run it alone on a quiet machine: a timing.
A candidate with autoguidance (``mnist-cpu-uncond``, ``mnist-cpu-28``: they keep a guide at ``train.guide_at``,
a fraction of ``train.images``) is scored unguided here: the clock-stopped runs never reach that fraction of
their nominal 10,000,000 images, and the evaluations record ``eval/autoguidance`` 1
(scripts/autoguidance_check.py scores the guided model). Writes OUT/preset-curves.json, OUT/preset-curves.md
(a table per candidate) and OUT/quality-per-minute.png (the two curves, the chosen candidate drawn thick and
starred). A finished run is left as it is; Ctrl-C stops the training in progress at a checkpoint, and the same
command resumes it.

The default candidates are the demo preset ``mnist-cpu`` (class-conditional, ``train.precision=auto``: bf16
autocast with channels-last activations on CPUs with native bf16, else fp32), the same in fp32, its unconditional
twin ``mnist-cpu-uncond`` (scored unguided, see above) and the 28 x 28 U-Net ``mnist-cpu-28`` (the demo's network
before space-to-depth). The chosen candidate's star is at its preset's own ``train.images`` (where ``make demo``
stops), or at its last point when the curve ends before that.
``--set KEY=VALUE`` (repeatable) is added to every candidate (e.g. ``--set train.seed=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dit_vs_unet import curve  # noqa: E402  (the evaluation points of a run folder, with training seconds)

CANDIDATES = [
    "mnist-cpu=mnist-cpu",
    "mnist-cpu fp32=mnist-cpu,train.precision=fp32",
    "mnist-cpu-uncond=mnist-cpu-uncond",
    "mnist-cpu-28=mnist-cpu-28",
]


def parse(spec: str) -> tuple[str, str, list[str]]:
    """``NAME=PRESET[,KEY=VALUE...]`` -> (name, preset, overrides). A comma starts a new override only where a
    ``key=`` follows it, so a tuple value keeps its commas: ``model.channel_mult=1,2,2``."""
    name, _, rest = spec.partition("=")
    preset, *sets = re.split(r",(?=[A-Za-z_][\w.]*=)", rest)
    if not name or not preset:
        raise SystemExit(f"error: a candidate is NAME=PRESET[,KEY=VALUE...], got {spec!r}")
    return name, preset, sets


def preset_images(preset: str, sets: list[str]) -> int:
    """The ``train.images`` a run of this candidate stops at outside this script (its preset's, or its override)."""
    return resolved(preset, sets).train.images


def autoguided(preset: str, sets: list[str]) -> bool:
    """Whether the candidate samples with autoguidance outside this script (its curve here is unguided)."""
    return resolved(preset, sets).sample.autoguidance != 1.0


def resolved(preset: str, sets: list[str]):
    from torchdiffusion.config import override
    from torchdiffusion.presets import get_preset

    return override(get_preset(preset), sets)


def folder(name: str) -> str:
    return name.replace(" ", "-")


def train(name: str, preset: str, sets: list[str], out: Path, args: argparse.Namespace) -> None:
    settings = [
        "train.images=10000000",  # the clock stops it
        f"train.minutes={args.minutes}",
        f"train.eval_every_images={args.eval_every}",
        f"train.eval_n={args.eval_n}",
        f"train.log_every_images={max(1, args.eval_every // 3)}",
        f"train.threads={args.threads}",
        *sets,
        *args.set,
    ]
    cmd = [sys.executable, "-m", "torchdiffusion", "train", "--preset", preset, "--out", str(out / folder(name))]
    for s in settings:
        cmd += ["--set", s]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})  # its progress bar


def markdown(rows: dict, chosen: str) -> str:
    lines = []
    for name, r in rows.items():
        mark = " (chosen)" if name == chosen else ""
        mark += "; autoguided outside this script, scored unguided here" if r.get("autoguided") else ""
        lines += [
            f"**{name}**{mark}: `{r['preset']}` with {', '.join(r['overrides']) or 'no overrides'}",
            "",
            "| images seen | training minutes | confident share | rarest digit | FD (classifier features) |",
            "|---|---|---|---|---|",
        ]
        for pt in r["points"]:
            share, rare = (
                "-" if pt.get(k) is None else f"{100 * pt[k]:.1f} %"
                for k in ("confident_fraction", "min_class_fraction")
            )
            lines.append(f"| {pt['images']:,} | {pt['train_seconds'] / 60:.1f} | {share} | {rare} | {pt['fd']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def machine() -> str:
    """The CPU's model name and whether it computes bf16 natively (what train.precision=auto looks at)."""
    from torchdiffusion.provenance import cpu_name
    from torchdiffusion.training.precision import native_bf16

    _, why = native_bf16(torch.device("cpu"))
    return f"{cpu_name()}, {os.cpu_count()} CPUs ({why})"


def star_index(points: list[dict], preset_images: int | None) -> int:
    """The index of the first evaluation at or past ``preset_images`` (the last point when there is none)."""
    if preset_images:
        for i, p in enumerate(points):
            if p["images"] >= preset_images:
                return i
    return len(points) - 1


def plot(rows: dict, chosen: str, path: Path, where: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in rows.items():
        pts = r["points"]
        if not pts:
            continue
        t = [p["train_seconds"] / 60 for p in pts]
        conf = [100 * (p.get("confident_fraction") or 0.0) for p in pts]
        fd = [p["fd"] for p in pts]
        label = name + (" (scored unguided)" if r.get("autoguided") else "")
        lw, label = (3.0, f"{label} (chosen)") if name == chosen else (1.3, label)
        (line,) = a.plot(t, conf, marker="o", ms=3, lw=lw, label=label)
        b.plot(t, fd, marker="o", ms=3, lw=lw, color=line.get_color())
        if name == chosen:  # the star: where the preset's own run stops (its train.images), else the last point
            i = star_index(pts, r.get("preset_images"))
            a.plot(t[i], conf[i], marker="*", ms=16, color=line.get_color())
            b.plot(t[i], fd[i], marker="*", ms=16, color=line.get_color())
    a.set(
        xlabel="training minutes (wall clock, evaluation excluded)",
        ylabel="% of 256 samples confident >= 0.9",
        title="digit check: confident share",
    )
    b.set(
        xlabel="training minutes (wall clock, evaluation excluded)",
        ylabel="Fréchet distance (classifier features)",
        title="digit check: Fréchet distance",
        yscale="log",
    )
    a.grid(alpha=0.3)
    b.grid(alpha=0.3, which="both")
    a.legend(fontsize=8)
    fig.suptitle(where, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder of the run folders, the table and the plot")
    ap.add_argument("--candidate", action="append", default=[], help="NAME=PRESET[,KEY=VALUE...] (repeatable)")
    ap.add_argument("--chosen", default="mnist-cpu", help="the candidate drawn as chosen")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="added to every candidate")
    ap.add_argument("--minutes", type=float, default=11.0, help="wall-clock training budget per candidate")
    ap.add_argument("--eval-every", type=int, default=15_000, help="images between evaluations")
    ap.add_argument("--eval-n", type=int, default=256, help="samples per evaluation")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each training (default 2)")
    ap.add_argument("--plot-only", action="store_true", help="only redraw the table and plot of the runs in --out")
    args = ap.parse_args()
    out = Path(args.out)
    candidates = [parse(s) for s in (args.candidate or CANDIDATES)]
    if not args.plot_only:
        try:
            for name, preset, sets in candidates:
                train(name, preset, sets, out, args)
        except KeyboardInterrupt:  # the training checkpointed on the same Ctrl-C
            print("stopped; rerun the same command to resume", file=sys.stderr)
            return 130
        except subprocess.CalledProcessError as e:
            print(f"error: training {name!r} ended with exit code {e.returncode}; rerun to resume", file=sys.stderr)
            return e.returncode if 0 < e.returncode < 256 else 1
    rows = {}
    for name, preset, sets in candidates:
        run = out / folder(name)
        if (run / "metrics.jsonl").exists():
            rows[name] = dict(
                preset=preset,
                overrides=sets + args.set,
                preset_images=preset_images(preset, sets),
                autoguided=autoguided(preset, sets),
                points=curve(run),
            )
    where = machine()
    (out / "preset-curves.json").write_text(
        json.dumps(dict(machine=where, chosen=args.chosen, candidates=rows), indent=2)
    )
    table = markdown(rows, args.chosen)
    (out / "preset-curves.md").write_text(table)
    plot(rows, args.chosen, out / "quality-per-minute.png", where)
    print(table)
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
