"""torchdiffusion train-clip: a small contrastive text-image model on captioned images into a run folder."""

from __future__ import annotations

import argparse

from ..io import json_text
from .argtypes import MAX_BATCH, MAX_IMAGES_SEEN, fresh_run_folder, new_or_empty_folder, positive_int
from .common import add_config_arguments, base_config

HELP = "train a small contrastive text-image model (image tower + frozen MiniLM with a projection) on captions"
EXAMPLES = """examples:
  torchdiffusion train-clip --out runs/emoji32-clip                 # 32-px emoji, 200 held out (~10 CPU minutes)
  torchdiffusion train-clip --preset emoji16-clip --images 100000 --out runs/clip16
  torchdiffusion train-clip --set model.text_layers=1 --set train.lr=5e-4 --out runs/clip-tf
  torchdiffusion train-clip --dry-run                                # print the resolved config and exit
Writes OUT/config.json, OUT/metrics.jsonl, OUT/contrastive.safetensors and OUT/report.json: caption->image
retrieval top-1/top-5 and zero-shot category accuracy on the held-out emoji (data.holdout, whole emoji never
seen in training). Training starts over each time (also where a killed run of it left its files); Ctrl-C stops it
(exit 130) leaving complete files only."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "emoji32-clip", "a train-clip config.json to start from instead of a preset")
    p.add_argument("--images", type=positive_int(MAX_IMAGES_SEEN), help="training length in images seen")
    p.add_argument("--batch-size", type=positive_int(MAX_BATCH), help="pairs per step (the InfoNCE batch)")
    p.add_argument("--out", help="run folder (default: runs/<preset>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")


def resolve_config(args: argparse.Namespace):
    from ..config import ConfigError, override, refuse_unread
    from ..contrastive.config import check_clip_config, clip_config_from_json, get_clip_preset

    cfg = base_config(args, clip_config_from_json, get_clip_preset)
    for dest, flag in (("images", "--images"), ("batch_size", "--batch-size")):
        key = f"train.{dest}"
        if getattr(args, dest) and any(a.split("=", 1)[0].strip() == key for a in args.set):  # the flag won silently
            raise ConfigError(f"{flag} and --set {key} both set {key}; give one")
    flags = [f"train.images={args.images}"] if args.images else []
    flags += [f"train.batch_size={args.batch_size}"] if args.batch_size else []
    from ..training.run_folder import with_resolved_paths

    return with_resolved_paths(refuse_unread(check_clip_config(override(cfg, [*args.set, *flags])), args.set))


def run(args: argparse.Namespace) -> int:
    import sys

    from ..config import to_json
    from ..contrastive.config import CLIP_PRESETS

    if args.list_presets:
        for name, c in CLIP_PRESETS.items():
            print(
                f"{name:18s} {c.data.source}{c.data.emoji_size:<4d} holdout {c.data.holdout:<4d} "
                f"{c.train.images:>9,d} images"
            )
        return 0
    cfg = resolve_config(args)
    if args.dry_run:
        print(to_json(cfg))
        return 0
    from ..contrastive.config import ContrastiveConfig
    from ..contrastive.model import WEIGHTS_NAME
    from ..contrastive.train import load_caption_data, train_contrastive
    from ..training.run_folder import refuse_out_in_data

    own = ("config.json", "metrics.jsonl", WEIGHTS_NAME, "report.json")  # report.json: written last
    out = new_or_empty_folder(args.out or f"runs/{cfg.preset}", own, ContrastiveConfig)
    refuse_out_in_data(out, cfg.data.path)
    data = load_caption_data(cfg)  # bad data (no captions) fails here, before anything is written
    log = lambda line: print(line, file=sys.stderr)
    with fresh_run_folder(out, own, ContrastiveConfig) as out:
        report = train_contrastive(cfg, out, data=data, progress=not args.no_progress, log=log)
    print(json_text(summary(report), indent=2))
    print(f"run folder: {out}", file=sys.stderr)
    return 0


def summary(report: dict) -> dict:
    """The headline numbers: held-out caption->image top-1/top-5 and zero-shot accuracy, with their chance."""
    s = {"images_seen": report["images_seen"], "temperature": round(report["temperature"], 5)}
    h = report.get("heldout")
    if h:
        r = h["retrieval"]
        s.update({f"heldout caption->image {k}": round(v, 4) for k, v in r["caption_to_image"].items()})
        s.update({f"chance {k}": round(v, 4) for k, v in r["chance"].items()}, heldout_n=r["n"])
        if "zero_shot" in h:
            z = h["zero_shot"]
            s.update(zero_shot_accuracy=round(z["accuracy"], 4), zero_shot_majority=round(z["majority"], 4))
    return s
