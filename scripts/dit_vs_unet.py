"""DiT against the U-Net at matched FLOPs per image: quality against training length, from periodic evaluation.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/dit_vs_unet.py --out runs/dit-vs-unet \\
        [--images 30000] [--eval-every 6000] [--eval-n 256] [--presets mnist-cpu-28,mnist-dit] [--threads 1] [--set K=V]
    .venv/bin/python scripts/dit_vs_unet.py --out runs/dit-vs-unet --table-only   # the table of the runs so far
    .venv/bin/python scripts/dit_vs_unet.py --sizes 4,32,32     # parameters and GFLOPs of the named DiT sizes

Trains each preset into OUT/<preset> with ``torchdiffusion train`` (the same command resumes a stopped run and
leaves a finished one alone), with the in-training quick evaluation every ``--eval-every`` images: ``--eval-n``
samples from the EMA model with the preset's sampler, read by the data set's evaluation classifier (the share
classified with confidence >= 0.9, as ``evaluate`` and ``scripts/digit_check.py`` report it) and the Fréchet
distance in its features. Then writes OUT/dit-vs-unet.json and OUT/dit-vs-unet.md: per evaluation point, the
images seen, the training FLOPs spent (3 x the forward FLOPs per image, ``nets.count_flops``: forward plus a
backward of twice its cost) and the training seconds (wall clock less the evaluations; a timing, so only
meaningful on a quiet machine). ``--set`` overrides apply to every preset (e.g. ``train.precision=bf16``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from torchdiffusion.config import override
from torchdiffusion.nets import build_net, count_flops, count_params
from torchdiffusion.presets import get_preset


def train(preset: str, out: Path, args: argparse.Namespace) -> None:
    """``torchdiffusion train`` for one preset; a finished run of the same length is left as it is."""
    settings = [
        f"train.images={args.images}",
        f"train.eval_every_images={args.eval_every}",
        f"train.eval_n={args.eval_n}",
        f"train.log_every_images={max(1, args.eval_every // 3)}",
        "train.checkpoint_every_images=10000",
        f"train.threads={args.threads}",
        *args.set,
    ]
    cmd = [sys.executable, "-m", "torchdiffusion", "train", "--preset", preset, "--out", str(out)]
    for s in settings:
        cmd += ["--set", s]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})


def curve(run: Path) -> list[dict]:
    """The evaluation points of a run folder's metrics.jsonl, each with the training seconds up to it.

    Training seconds: the run's wall clock when the evaluation started (``wall_s`` of its line) less the seconds
    of the evaluations before it, so evaluating more often does not make a run look slower; lines of runs from
    before ``wall_s`` was logged fall back to summing images / rate over the log lines (evaluation included)."""
    points, seconds, last_seen, evaluating = [], 0.0, 0, 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "images_per_s" in rec:  # a log line: images since the last one at this rate
            seconds += (rec["images_seen"] - last_seen) / max(rec["images_per_s"], 1e-9)
            last_seen = rec["images_seen"]
        fd = next((v for k, v in rec.items() if k.startswith("eval/FD-")), None)
        if fd is not None:
            points.append(
                dict(
                    images=rec["images_seen"],
                    confident_fraction=rec.get("eval/confident_fraction"),  # data with a shipped classifier
                    min_class_fraction=rec.get("eval/min_class_fraction"),  # logged by newer runs
                    fd=fd,
                    train_seconds=rec["wall_s"] - evaluating if "wall_s" in rec else seconds,
                )
            )
            evaluating += rec.get("eval/seconds", 0.0)
    return points


def report(out: Path, presets: list[str], overrides: list[str]) -> dict:
    rows = {}
    for p in presets:
        run = out / p
        cfg = override(get_preset(p), overrides)
        shape = tuple(json.loads((run / "run.json").read_text())["data_shape"])
        fwd = count_flops(cfg.model, shape)
        params = count_params(build_net(cfg.model, shape))
        pts = curve(run)
        for pt in pts:
            pt["train_tflop"] = pt["images"] * 3 * fwd / 1e12
        rows[p] = dict(net=cfg.model.net, params=params, forward_gflop_per_image=fwd / 1e9, points=pts)
    return rows


def markdown(rows: dict) -> str:
    lines = ["| preset | net | params | GFLOP/image (fwd) |", "|---|---|---|---|"]
    for p, r in rows.items():
        lines.append(f"| {p} | {r['net']} | {r['params'] / 1e6:.2f} M | {r['forward_gflop_per_image']:.3f} |")
    lines += [
        "",
        "| images seen | preset | training TFLOP | confident share | rarest digit | FD (classifier features) | "
        "train s (loaded) |",
        "|---|---|---|---|---|---|---|",
    ]
    images = sorted({pt["images"] for r in rows.values() for pt in r["points"]})
    for n in images:
        for p, r in rows.items():
            for pt in r["points"]:
                if pt["images"] == n:
                    share, rare = (pt.get(k) for k in ("confident_fraction", "min_class_fraction"))
                    share, rare = ("-" if v is None else f"{100 * v:.1f} %" for v in (share, rare))
                    lines.append(
                        f"| {n:,} | {p} | {pt['train_tflop']:.1f} | {share} | {rare} | {pt['fd']:.1f} | "
                        f"{pt['train_seconds']:.0f} |"
                    )
    return "\n".join(lines) + "\n"


def sizes_table(shape: tuple[int, ...]) -> str:
    """Parameters and forward GFLOPs per example of every named DiT size (presets.DIT_SIZES) at patches 2, 4, 8,
    counted on the meta device (Peebles & Xie's Table 4 gives half these FLOPs: multiply-adds)."""
    from torchdiffusion.presets import DIT_SIZES, dit_model

    lines = [
        f"| model | width | depth | heads | params | GFLOP/example (fwd) on {'x'.join(map(str, shape))} |",
        "|---|---|---|---|---|---|",
    ]
    for name, (width, depth, heads) in DIT_SIZES.items():
        for patch in (2, 4, 8):
            if any(s % patch for s in shape[1:]):
                continue
            model = dit_model(name, patch)
            with torch.device("meta"):
                params = count_params(build_net(model, shape))
            gflop = count_flops(model, shape) / 1e9
            lines.append(f"| {name}/{patch} | {width} | {depth} | {heads} | {params / 1e6:.1f} M | {gflop:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder of the run folders and the table")
    ap.add_argument("--sizes", help="C,H,W: only print the table of the named DiT sizes for this example shape")
    ap.add_argument("--presets", default="mnist-cpu-28,mnist-dit", help="comma-separated presets to compare")
    ap.add_argument("--images", type=int, default=30_000, help="training images per run")
    ap.add_argument("--eval-every", type=int, default=6_000, help="images between evaluations")
    ap.add_argument("--eval-n", type=int, default=256, help="samples per evaluation")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training (default 1)")
    ap.add_argument("--set", action="append", default=[], help="override for every preset (repeatable)")
    ap.add_argument("--table-only", action="store_true", help="only draw the table of the runs in --out")
    args = ap.parse_args()
    if args.sizes:
        print(sizes_table(tuple(int(v) for v in args.sizes.split(","))), end="")
        return 0
    if not args.out:
        ap.error("--out is required")
    out, presets = Path(args.out), args.presets.split(",")
    if not args.table_only:
        for p in presets:
            train(p, out / p, args)
    rows = report(out, presets, args.set)
    (out / "dit-vs-unet.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (out / "dit-vs-unet.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
