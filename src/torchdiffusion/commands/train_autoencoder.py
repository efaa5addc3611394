"""torchdiffusion train-autoencoder: a KL-regularised autoencoder for latent diffusion, into a run folder."""

from __future__ import annotations

import argparse

from .argtypes import fresh_run_folder, new_or_empty_folder
from .common import add_config_arguments, base_config

HELP = "train a KL-regularised autoencoder (the encoder/decoder of latent diffusion) into a run folder"
EXAMPLES = """examples:
  torchdiffusion train-autoencoder --preset emoji64-ae --out runs/emoji64-ae
  torchdiffusion train-autoencoder --preset emoji64-ae --set loss.perceptual=1 --out runs/emoji64-ae-perc
  torchdiffusion train-autoencoder --preset emoji64-ae --set model.channel_mult=1,2,2,2 --out runs/ae-f8
  torchdiffusion train-autoencoder --preset emoji64-ae --dry-run      # print the resolved config and exit
presets: see 'torchdiffusion train-autoencoder --list-presets'
The folder gets config.json, metrics.jsonl, autoencoder.safetensors (with the latent scale factor),
autoencoder.json (scale factor, held-out PSNR) and reconstructions.png (held-out originals above, their
reconstructions below). The output folder must be new or empty, or hold what a killed run of this command left
(it starts over there). Ctrl-C stops with exit code 130; the weights are written only when training has finished."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "emoji64-ae", "a config.json (of an autoencoder run) to start from instead of a preset")
    p.add_argument("--out", help="run folder, new or empty (default: runs/<preset>)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")


def resolve_config(args: argparse.Namespace):
    from ..autoencoder import autoencoder_config_from_json, get_autoencoder_preset, validate_autoencoder_config
    from ..config import override, refuse_unread
    from ..training.run_folder import with_resolved_paths

    cfg = base_config(args, autoencoder_config_from_json, get_autoencoder_preset)
    return with_resolved_paths(refuse_unread(validate_autoencoder_config(override(cfg, args.set)), args.set))


def load_images(cfg):
    """(train, holdout or None) images of the run's data, and ``cfg`` with the bounds ``data.scale`` fitted to
    them (data/scale.py); a DataError/ConfigError for data it cannot use."""
    from dataclasses import replace

    from ..config import ConfigError
    from ..data import load_data, scale_of
    from ..data.scale import recorded

    data = load_data(cfg.data, split="train", seed=cfg.train.seed)
    if data.kind != "image":
        raise ConfigError(f"an autoencoder needs image data (N, C, H, W); {cfg.data.source} gives {data.kind} data")
    C, H, W = data.shape
    f = cfg.model.factor
    if C != cfg.model.in_channels:
        raise ConfigError(f"the data has {C} channels but model.in_channels={cfg.model.in_channels}")
    if H % f or W % f:
        raise ConfigError(f"the images are {H}x{W}; the factor f={f} must divide both sides")
    cfg = replace(cfg, data=recorded(cfg.data, data, scale_of(cfg.data)))
    holdout = load_data(cfg.data, split="holdout", seed=cfg.train.seed).x if cfg.data.holdout > 0 else None
    return data.x, holdout, cfg


def run(args: argparse.Namespace) -> int:
    from ..autoencoder import AUTOENCODER_PRESETS, INFO_FILE, RECONSTRUCTIONS_FILE, WEIGHTS_FILE
    from ..config import to_json

    if args.list_presets:
        for name, c in AUTOENCODER_PRESETS.items():
            m = c.model
            print(f"{name:12s} {c.data.source:8s} f={m.factor} c={m.latent_channels} {c.train.images:>9,d} images")
        return 0
    cfg = resolve_config(args)
    if args.dry_run:
        print(to_json(cfg))
        return 0
    from ..autoencoder import AutoencoderRunConfig

    own = ("config.json", "metrics.jsonl", RECONSTRUCTIONS_FILE, WEIGHTS_FILE, INFO_FILE)  # INFO_FILE: written last
    out = new_or_empty_folder(args.out or f"runs/{cfg.preset}", own, AutoencoderRunConfig)
    from ..training.run_folder import refuse_out_in_data

    refuse_out_in_data(out, cfg.data.path)
    from ..training.state import Clock

    clock = Clock()  # train.cpu_minutes / train.minutes count the data loading too
    x_train, x_holdout, cfg = load_images(cfg)
    perceptual = None
    if cfg.loss.perceptual > 0:
        from ..nets.perceptual import EfficientNetPerceptual

        perceptual = EfficientNetPerceptual(cfg.loss.perceptual_blocks)
        try:
            perceptual.check_images(*x_train.shape[1:])  # before the run folder, not at the first step
        except ValueError as e:
            from ..config import ConfigError

            raise ConfigError(str(e)) from None
    from ..training.autoencoder import train_autoencoder

    with fresh_run_folder(out, own, AutoencoderRunConfig) as out:
        summary = train_autoencoder(
            cfg, out, x_train, x_holdout, progress=not args.no_progress, perceptual=perceptual, clock=clock
        )
    held = f", held-out PSNR {summary['holdout_psnr_db']:.2f} dB" if "holdout_psnr_db" in summary else ""
    print(f"run folder: {out} (scale factor {summary['scale_factor']:.4f}{held})")
    return 0
