"""torchdiffusion evaluate: sample a run and measure it (FD, KID, precision/recall, bits/dim, memorisation)."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "evaluate a trained run: Fréchet distance, KID, precision/recall, bits/dim, memorisation -> JSON + HTML"
EXAMPLES = """examples:
  torchdiffusion evaluate runs/demo --metrics fd,kid,pr,nll,memorisation --n 5000
  torchdiffusion evaluate runs/demo --metrics fd,kid --features clf:mnist5k --n 1000   # fast: no EfficientNet
  torchdiffusion evaluate runs/fashion --n 5000 --nll-n 256 --vlb-timesteps 1000
  TORCHDIFFUSION_INCEPTION=inception-2015-12-05.pt torchdiffusion evaluate runs/demo --features inception

Metrics are named for their features (FD-EffNetLite0, FD-MNIST5kclf); "FID" only with --features inception.
Writes RUN/eval/report.json and RUN/eval/summary.html (or --out DIR). Warnings (a feature network that cannot
run and the pip install that fixes it, the small-n bias of FD) are printed on stderr as well. --metrics nll
alone scores real images and draws no samples."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by 'torchdiffusion train'")
    p.add_argument(
        "--metrics",
        default="fd,kid,pr,nll,memorisation",
        help="comma-separated: fd, kid, pr, nll, memorisation (default: all)",
    )
    p.add_argument("--n", type=int, default=5000, help="generated samples (default 5000)")
    p.add_argument(
        "--features",
        help="comma-separated feature networks: effnet_lite0, clf:<data>, inception, raw "
        "(default: effnet_lite0 + the data set's classifier)",
    )
    p.add_argument("--out", help="output folder (default RUN/eval)")
    p.add_argument("--sampler", help="override the run's sampler")
    p.add_argument("--steps", type=int, help="override the run's sampling steps")
    p.add_argument("--seed", type=int, default=10_000, help="image k uses seed + k (default 10000)")
    p.add_argument("--batch-size", type=int, default=100, help="images per network call")
    p.add_argument("--nll-n", type=int, default=64, help="real (held-out) images for bits/dim (default 64)")
    p.add_argument("--ode-steps", type=int, default=32, help="RK4 steps of the probability-flow ODE (default 32)")
    p.add_argument(
        "--vlb-timesteps", type=int, default=100, help="stratified timesteps for the VP bound; 0 = all T (default 100)"
    )
    p.add_argument("--inception", help="TorchScript Inception-v3 file for --features inception")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.evaluate import evaluate

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    feats = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    report = evaluate(
        args.run,
        metrics,
        args.n,
        features=feats,
        out=args.out,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        batch_size=args.batch_size,
        nll_n=args.nll_n,
        ode_steps=args.ode_steps,
        vlb_timesteps=args.vlb_timesteps or None,
        inception_path=args.inception,
        device=args.device,
        log=lambda line: print(line, file=sys.stderr),  # phases and warnings on screen; the numbers on stdout
        progress=True,
    )
    print(json.dumps(summary_lines(report), indent=2))
    return 0


def summary_lines(report: dict) -> dict:
    """The headline numbers of a report (what the README tables quote)."""
    s: dict = {"n": report.get("n")}
    for r in report.get("feature_metrics", {}).values():
        for which in ("samples", "heldout"):
            for k, v in r.get(which, {}).items():
                if k not in ("n", "warnings") and not k.endswith("_expected_bias"):
                    s[f"{k} ({which})"] = round(v, 5) if isinstance(v, float) else v
    nll = report.get("nll", {})
    for k in ("bits_per_dim_ode", "bits_per_dim_vlb"):
        if k in nll:
            s[k] = round(nll[k], 4)
    mem = report.get("memorisation", {})
    if mem:
        s["copy_fraction"] = mem.get("copy_fraction")
        s["heldout_copy_fraction"] = mem.get("holdout_copy_fraction")
    if "classes" in report:
        s["confident_fraction"] = report["classes"]["confident_fraction"]
    return s
