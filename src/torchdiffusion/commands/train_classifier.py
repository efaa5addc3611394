"""torchdiffusion train-classifier: a noise-aware classifier p(y | x, sigma) for classifier guidance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "train a noise-aware classifier p(y | x, sigma) on noised data, for 'sample --classifier'"
EXAMPLES = """examples:
  torchdiffusion train-classifier runs/mnist                    # the run's data and sigma distribution
  torchdiffusion train-classifier mnist-cpu --out runs/mnist-clf --images 200000
  torchdiffusion sample runs/mnist --class 3 --classifier runs/mnist/classifier --classifier-scale 2
Writes OUT/noisy-classifier.safetensors and OUT/noisy-classifier.json (config, held-out accuracy per sigma,
the arguments). Labels are the data's class labels (for emoji: the categories)."""

EVAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # noise levels of the held-out accuracy report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="run folder (uses its config.json) or preset name")
    p.add_argument("--out", help="output folder (default: RUN/classifier, or runs/classifier-<preset>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--images", type=int, default=100_000, help="training length in images seen (default 100000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=32, help="channels of the first stage (default 32)")
    p.add_argument("--holdout", type=int, default=500, help="examples kept out for the accuracy report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")


def resolve(source: str, sets: list[str]):
    """(config, default output folder) for a run folder or a preset name."""
    from ..config import ConfigError, from_json, get_preset, override, validate

    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path} is not a run folder: config.json is missing")
        cfg, out = from_json((path / "config.json").read_text()), path / "classifier"
    else:
        cfg = get_preset(source)
        out = Path("runs") / f"classifier-{cfg.preset}"
    return validate(override(cfg, sets)), out


def sigma_sampler(cfg):
    """``(batch, generator) -> (batch,)`` sigmas from the diffusion model's own training distribution."""
    from ..losses import sample_sigmas
    from ..model import build_process

    d = cfg.diffusion
    process = build_process(d)
    table = process.sigmas if process is not None else None
    return lambda b, g: sample_sigmas(
        d.sigma_sampling, b, generator=g, discrete_sigmas=table, P_mean=d.P_mean, P_std=d.P_std
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_data
    from ..evaluation.noisy_classifier import (
        FILE_NAME,
        NoisyClassifierConfig,
        save_noisy_classifier,
        train_noisy_classifier,
    )
    from ..guidance import GuidanceError

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.images < 1 or args.batch_size < 1:
        raise GuidanceError("--images and --batch-size must be >= 1")
    cfg, default_out = resolve(args.source, args.set)
    out = Path(args.out) if args.out else default_out
    data = load_data(cfg.data, split="train", seed=cfg.train.seed)
    if data.labels is None:
        raise GuidanceError(f"the {cfg.data.source} data has no class labels to train a classifier on")
    if data.kind != "image":
        raise GuidanceError("the noise-aware classifier is a CNN for image data")
    n = len(data)
    if not 0 <= args.holdout < n:
        raise GuidanceError(f"--holdout must be in [0, {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))
    tr, te = perm[: n - args.holdout], perm[n - args.holdout :]
    K = int(data.labels.max()) + 1
    ncfg = NoisyClassifierConfig(
        in_channels=data.x.shape[1], num_classes=K, width=args.width, sigma_data=cfg.diffusion.sigma_data
    )

    def log(seen, loss, acc):
        print(f"  {seen:>9,d} images  loss {loss:.4f}  train acc {acc:.3f}", file=sys.stderr)

    net = train_noisy_classifier(
        data.x[tr],
        data.labels[tr],
        sigma_sampler(cfg),
        cfg=ncfg,
        images=args.images,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        log=log,
    )
    acc = {}
    if args.holdout > 0:
        g = torch.Generator().manual_seed(args.seed + 1)
        x0, y = data.x[te], data.labels[te].long()
        with torch.no_grad():
            for s in EVAL_SIGMAS:
                xn = x0 + s * torch.randn(x0.shape, generator=g)
                pred = net(xn, torch.full((len(xn),), s)).argmax(-1)
                acc[str(s)] = round(float((pred == y).float().mean()), 4)
        print("held-out accuracy by sigma: " + ", ".join(f"{k}: {v:.3f}" for k, v in acc.items()), file=sys.stderr)
    card = {
        "data": cfg.data.source,
        "classes": data.class_names,
        "images": args.images,
        "holdout": args.holdout,
        "heldout_accuracy_by_sigma": acc,
        "sigma_sampling": cfg.diffusion.sigma_sampling,
        "arguments": {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"},
    }
    path = save_noisy_classifier(net, out / FILE_NAME, card)
    print(path)
    return 0
