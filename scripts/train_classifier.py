"""Train the evaluation classifier of a built-in data set and ship its weights (reproducible, one CPU thread).

    .venv/bin/python scripts/train_classifier.py --data mnist5k
    .venv/bin/python scripts/train_classifier.py --data fashion_mnist

Holds out a seeded, class-balanced split (``--heldout-per-class`` images of each class; for Fashion-MNIST
the official 10k test set is used instead), trains :class:`torchdiffusion.evaluation.classifier.SmallClassifier`
on the rest with small random shifts and pixel noise, reports the held-out accuracy, and writes
``src/torchdiffusion/evaluation/weights/<data>-classifier.safetensors`` plus a JSON card (accuracy, command,
split, seed).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from torchdiffusion.evaluation.classifier import (
    ClassifierConfig,
    accuracy,
    card_path,
    save_classifier,
    train_classifier,
    weights_path,
)
from torchdiffusion.evaluation.datasets import balanced_split, load_labelled

DEFAULTS = {  # per data set: epochs, training subset (None = all)
    "mnist5k": {"epochs": 20, "limit": None, "lr": 2e-3, "max_shift": 2},
    # a seeded 20k subset of the 60k: minutes on one thread; garments are centred, so smaller shifts
    "fashion_mnist": {"epochs": 8, "limit": 20_000, "lr": 4e-3, "max_shift": 1},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="mnist5k", choices=sorted(DEFAULTS))
    ap.add_argument("--epochs", type=int, default=None, help="passes over the training images")
    ap.add_argument("--heldout-per-class", type=int, default=100, help="held-out images per class (mnist5k)")
    ap.add_argument("--limit", type=int, default=None, help="training images (fashion_mnist; default 20000)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW, cosine decay)")
    ap.add_argument("--max-shift", type=int, default=None, help="random shift augmentation, pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="weights path (default: the shipped location)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    epochs = args.epochs or DEFAULTS[args.data]["epochs"]
    lr = args.lr or DEFAULTS[args.data]["lr"]
    max_shift = args.max_shift if args.max_shift is not None else DEFAULTS[args.data]["max_shift"]

    if args.data == "fashion_mnist":
        x_tr, y_tr = load_labelled("fashion_mnist", "train")
        limit = args.limit if args.limit is not None else DEFAULTS["fashion_mnist"]["limit"]
        if limit:
            keep = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(args.seed))[:limit]
            x_tr, y_tr = x_tr[keep], y_tr[keep]
        x_te, y_te = load_labelled("fashion_mnist", "test")
        split = f"official test split (10k) held out; trained on {len(y_tr)} of the 60k training images (seeded)"
    else:
        x, y = load_labelled(args.data)
        tr, te = balanced_split(y, args.heldout_per_class, seed=args.seed)
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
        split = f"seeded (seed={args.seed}) class-balanced hold-out, {args.heldout_per_class} per class"

    cfg = ClassifierConfig(in_channels=x_tr.shape[1], num_classes=int(y_tr.max()) + 1)
    t0 = time.time()
    net = train_classifier(
        x_tr,
        y_tr,
        cfg=cfg,
        epochs=epochs,
        lr=lr,
        max_shift=max_shift,
        seed=args.seed,
        log=lambda e, loss: print(f"epoch {e + 1}/{epochs}  train loss {loss:.4f}", flush=True),
    )
    train_s = time.time() - t0
    acc_held = accuracy(net, x_te, y_te)
    acc_train = accuracy(net, x_tr, y_tr)
    n_params = sum(p.numel() for p in net.parameters())
    print(
        f"held-out accuracy {acc_held:.4f} on {len(y_te)} images; train accuracy {acc_train:.4f}; "
        f"{n_params} parameters; {train_s:.0f} s"
    )

    out = args.out or weights_path(args.data)
    card = {
        "data": args.data,
        "heldout_accuracy": round(acc_held, 4),
        "heldout_images": int(len(y_te)),
        "train_accuracy": round(acc_train, 4),
        "train_images": int(len(y_tr)),
        "split": split,
        "epochs": epochs,
        "lr": lr,
        "max_shift": max_shift,
        "seed": args.seed,
        "parameters": n_params,
        "config": cfg.__dict__,
        "command": "python scripts/train_classifier.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "train_seconds_rough": round(train_s),
        "torch": torch.__version__,
    }
    save_classifier(net, out, card)
    print(f"wrote {out} and {card_path(args.data) if args.out is None else str(out).rsplit('.', 1)[0] + '.json'}")
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
