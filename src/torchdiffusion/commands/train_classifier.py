"""torchdiffusion train-classifier: a noise-aware classifier p(y | x, sigma) for classifier guidance."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .argtypes import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_IMAGES_SEEN,
    MAX_SEED,
    MAX_THREADS,
    check_output_dir,
    nonneg_int,
    positive_float,
    positive_int,
)

HELP = (
    "train a noise-aware classifier p(y | x, sigma) for 'sample --classifier', or (--evaluation) a clean "
    "classifier of labelled image data for 'guidance-sweep --classifier'"
)
EXAMPLES = """examples:
  torchdiffusion train-classifier runs/mnist                    # the run's data and sigma distribution
  torchdiffusion train-classifier mnist-cpu --out runs/mnist-clf --images 200000
  torchdiffusion sample runs/mnist --class 3 --classifier runs/mnist/classifier --classifier-scale 2
  torchdiffusion train-classifier runs/sprites --evaluation     # your own labelled data (e.g. an .npy + labels)
  torchdiffusion guidance-sweep runs/sprites --classifier runs/sprites/classifier/eval-classifier.safetensors
Writes OUT/noisy-classifier.safetensors and OUT/noisy-classifier.json (config, held-out accuracy per sigma,
the arguments); with --evaluation OUT/eval-classifier.safetensors (+ .json, held-out accuracy). Labels are the
data's class labels (for emoji: the categories)."""

EVAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # noise levels of the held-out accuracy report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="run folder (uses its config.json) or preset name")
    p.add_argument("--out", help="output folder (default: RUN/classifier, or runs/classifier-<preset>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument(
        "--images",
        type=positive_int(MAX_IMAGES_SEEN),
        default=100_000,
        help="training length in images seen (default 100000; --evaluation: rounded up to whole passes)",
    )
    p.add_argument("--batch-size", type=positive_int(MAX_BATCH), default=128)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--width", type=positive_int(1024), default=32, help="channels of the first stage (default 32)")
    p.add_argument(
        "--holdout", type=nonneg_int(MAX_COUNT), default=500, help="examples kept out for the accuracy report"
    )
    p.add_argument("--seed", type=nonneg_int(MAX_SEED), default=0)
    p.add_argument("--threads", type=nonneg_int(MAX_THREADS), default=0, help="torch threads (0 = torch's default)")
    p.add_argument(
        "--evaluation",
        action="store_true",
        help="train the clean evaluation classifier (SmallClassifier) that guidance-sweep scores samples with",
    )
    p.add_argument(
        "--epochs",
        type=positive_int(10_000),
        default=None,
        help="--evaluation: passes over the training images (default: as many as --images takes, at least 10)",
    )


def resolve(source: str, sets: list[str], evaluation: bool = False):
    """(config, default output folder) for a run folder or a preset name. A --set of what the classifier does not
    read - the model, training and sampling sections but train.seed; the diffusion section for --evaluation's
    clean classifier - is refused in one line, as a data setting no source reads is."""
    from ..config import ConfigError, from_json, override, refuse_unread, validate
    from ..presets import get_preset

    path = Path(source)
    if path.is_dir():
        from ..generate import refuse_other_runs

        refuse_other_runs(path)
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path} is not a run folder: config.json is missing")
        cfg, out = from_json((path / "config.json").read_text()), path / "classifier"
    else:
        cfg = get_preset(source)
        out = Path("runs") / f"classifier-{cfg.preset}"
    read = ("data.", "train.seed") if evaluation else ("data.", "diffusion.", "train.seed")
    for a in sets:
        key = a.split("=", 1)[0].strip()
        if not key.startswith(read):
            what = (
                "the data and train.seed"
                if evaluation
                else "the data, the diffusion section (its noise levels) and train.seed"
            )
            raise ConfigError(f"--set {a.strip()} changes nothing: train-classifier reads {what}")
    return refuse_unread(validate(override(cfg, sets)), [s for s in sets if s.strip().startswith("data.")]), out


def _a_classifiers(path: Path) -> bool:
    """Whether ``path`` is a classifier's file: weights with the network's config in their metadata, or the JSON
    card (with that config) written beside them."""
    import json

    from ..evaluation.classifier import read_classifier_file

    try:
        if path.suffix == ".safetensors":
            return "config" in read_classifier_file(path)[0]
        card = json.loads(path.read_text())
    except Exception:  # unreadable, not safetensors, not JSON: not ours
        return False
    return isinstance(card, dict) and "config" in card


def sigma_sampler(cfg):
    """``(batch, generator) -> (batch,)`` sigmas drawn as the run's model is trained on them
    (losses.training_sigmas: its diffusion config's sampling - sigma_min and sigma_max included - and its process's
    levels)."""
    from ..losses import training_sigmas
    from ..model import build_process

    process = build_process(cfg.diffusion)
    table = process.sigmas if process is not None else None
    return lambda b, g: training_sigmas(cfg.diffusion, b, g, table)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_data
    from ..guidance import GuidanceError

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.images < 1 or args.batch_size < 1 or (args.epochs is not None and args.epochs < 1):
        raise GuidanceError("--images, --batch-size and --epochs must be >= 1")
    if args.epochs is not None and not args.evaluation:  # the noise-aware classifier trains for --images
        raise GuidanceError("--epochs sets the passes of --evaluation's classifier; the noisy one trains --images")
    cfg, default_out = resolve(args.source, args.set, evaluation=args.evaluation)
    if cfg.data.latents_of and not args.evaluation:  # sample --classifier refuses it on a latent run
        raise GuidanceError(
            "a noise-aware classifier guides sampling in pixels, and this run diffuses latents (data.latents_of); "
            "--evaluation trains the classifier that scores its decoded samples"
        )
    out = check_output_dir(args.out or default_out)
    stem = "eval-classifier" if args.evaluation else "noisy-classifier"  # its weights and the JSON card beside them
    for name in (f"{stem}.safetensors", f"{stem}.json"):  # an earlier classifier's are replaced, nothing else
        if (out / name).exists() and not _a_classifiers(out / name):
            raise GuidanceError(
                f"writing {out / name} would replace a file no torchdiffusion command wrote; choose another --out"
            )
    data = load_data(cfg.data, split="train", seed=cfg.train.seed)
    if data.kind != "image":  # whatever its labels
        raise GuidanceError(f"the classifiers are CNNs for image data; the {cfg.data.source} data is {data.kind} data")
    if data.labels is None:
        raise GuidanceError(f"the {cfg.data.source} data has no class labels to train a classifier on")
    K = run_classes(cfg, data)
    n = len(data)
    if not 0 <= args.holdout < n:
        raise GuidanceError(f"--holdout must be in [0, {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))
    tr, te = perm[: n - args.holdout], perm[n - args.holdout :]
    card = {
        "data": cfg.data.source,
        "classes": data.class_names,
        "image_shape": list(data.x.shape[1:]),  # (C, H, W): sample --classifier refuses it for other images
        "holdout": args.holdout,
        "arguments": {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"},
    }
    train_one = _evaluation_classifier if args.evaluation else _noisy_classifier
    print(train_one(args, cfg, data, tr, te, out, card, K))
    return 0


def run_classes(cfg, data) -> int:
    """K, the classes the classifier tells apart: those of the run (model.num_classes), which 'sample --classifier'
    and 'guidance-sweep --classifier' ask of it, whichever labels its data hold; for a run without class labels
    (a context run) the data's (the largest label + 1)."""
    from ..guidance import GuidanceError

    top = int(data.labels.max()) + 1
    K = cfg.model.num_classes
    if K <= 0:
        return top
    if top > K:
        raise GuidanceError(f"the data's labels go up to {top - 1}, and the run is conditioned on {K} classes")
    return K


def _evaluation_classifier(args, cfg, data, tr, te, out: Path, card: dict, K: int) -> Path:
    """The clean SmallClassifier of evaluation.classifier (what guidance-sweep and evaluate score samples with)."""
    from ..evaluation.classifier import ClassifierConfig, accuracy, save_classifier, train_classifier
    from ..progress import step_bar

    ccfg = ClassifierConfig(in_channels=data.x.shape[1], num_classes=K, width=args.width)
    # by default the length of --images (docs/evaluation.md: ten passes over a small data set are too few)
    epochs = args.epochs or max(10, math.ceil(args.images / len(tr)))
    with step_bar(epochs, "evaluation classifier", "epoch") as bar:
        net = train_classifier(
            data.x[tr],
            data.labels[tr],
            cfg=ccfg,
            epochs=epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            log=lambda epoch, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.4f}")),
        )
    acc = round(accuracy(net, data.x[te], data.labels[te]), 4) if args.holdout > 0 else None
    if acc is not None:
        print(f"held-out accuracy: {acc:.3f} on {args.holdout} images", file=sys.stderr)
    path = out / "eval-classifier.safetensors"
    save_classifier(net, path, {**card, "heldout_accuracy": acc, "epochs": epochs, "config": ccfg.__dict__})
    return path


def _noisy_classifier(args, cfg, data, tr, te, out: Path, card: dict, K: int) -> Path:
    """The noise-aware classifier of guidance.py, trained on the diffusion model's own sigma distribution."""
    import torch

    from ..evaluation.noisy_classifier import (
        FILE_NAME,
        NoisyClassifierConfig,
        save_noisy_classifier,
        train_noisy_classifier,
    )
    from ..progress import step_bar

    ncfg = NoisyClassifierConfig(
        in_channels=data.x.shape[1], num_classes=K, width=args.width, sigma_data=cfg.diffusion.sigma_data
    )

    def log(seen, loss, acc):  # about every 10 % of training
        bar.update(seen - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}")

    with step_bar(args.images, "noise-aware classifier", "img") as bar:
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
    card.update(images=args.images, heldout_accuracy_by_sigma=acc, sigma_sampling=cfg.diffusion.sigma_sampling)
    return save_noisy_classifier(net, out / FILE_NAME, card)
