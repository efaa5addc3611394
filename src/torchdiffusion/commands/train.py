"""torchdiffusion train: train a model from a preset (+ overrides) into a run folder."""

from __future__ import annotations

import argparse
import sys

from .argtypes import output_folder
from .common import add_config_arguments, base_config

HELP = "train a diffusion model into a run folder (resumes if the folder holds a checkpoint)"
EXAMPLES = """examples:
  torchdiffusion train --preset mnist-cpu --out runs/mnist
  torchdiffusion train --preset toy-2d --out runs/toy --set train.images=200000
  torchdiffusion train --preset mnist-cpu-uncond --set data.source=folder --set data.path=~/pics \\
      --set data.image_size=32,32 --set data.channels=3 --out runs/pics
  torchdiffusion train --preset toy-2d --objective rectified_flow --out runs/toy-rf --set train.images=100000
  torchdiffusion train --preset course --dry-run          # print the resolved config and exit
  torchrun --nproc_per_node=2 -m torchdiffusion train --preset mnist-cpu --out runs/ddp
presets: see 'torchdiffusion train --list-presets'
Ctrl-C (or SIGTERM) checkpoints and stops with exit code 130 (143); the same command resumes."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, "mnist-cpu", "a config.json to start from instead of a preset")
    p.add_argument(
        "--objective",
        choices=("denoising", "rectified_flow", "consistency"),
        default=None,
        help="what to train: denoising (the preset's diffusion loss), rectified_flow (flow matching, velocity "
        "prediction) or consistency (consistency training from data, one-step sampling); applied before --set",
    )
    p.add_argument("--out", help="run folder (default: runs/<preset>)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config as JSON and exit: fitted to the data as config.json will record it (e.g. "
        "model.attn_resolutions moved to a U-Net level), unless the data cannot be read (it says so) or are latents "
        "(encoded only when training starts)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start over: discard the folder's old training states, metrics, sample grids and guide model (and the "
        "grids tuned for them) instead of continuing them",
    )
    p.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (pip install .[tensorboard])")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")


def resolve_config(args: argparse.Namespace):
    from ..config import from_json, override, refuse_unread, validate
    from ..presets import TRAIN_OBJECTIVES, get_preset
    from ..training.run_folder import with_resolved_paths

    cfg = base_config(args, from_json, get_preset)
    objective = TRAIN_OBJECTIVES[getattr(args, "objective", None) or "denoising"]
    return with_resolved_paths(refuse_unread(validate(override(cfg, [*objective, *args.set])), args.set))


def run(args: argparse.Namespace) -> int:
    from ..config import recorded_json
    from ..presets import PRESETS

    if args.list_presets:
        for name, c in PRESETS.items():
            print(
                f"{name:14s} {c.data.source:12s} {c.model.net:5s} {c.diffusion.parameterization:4s} "
                f"{c.train.images:>9,d} images"
            )
        return 0
    cfg = resolve_config(args)
    from ..distributed import check_batch_splits

    check_batch_splits(cfg.train.batch_size, cfg.train.grad_accum)  # (under torchrun; --dry-run too)
    if args.dry_run:  # under torchrun every rank resolves the same config; rank 0 alone prints it
        from ..distributed import default_device, print0

        if not cfg.data.latents_of:  # fitted to the data as the run fits it (latents: encoded when training starts)
            from ..data import DataError, load_data
            from ..io import first_line

            try:
                data = load_data(cfg.data, split="train", seed=cfg.train.seed)
            except (DataError, OSError) as e:  # (a documented command's placeholder path): say what is not fitted
                print0(f"data not read ({first_line(e)}): the settings the run fits to its data are shown as given")
            else:
                cfg = fitted_to_data(cfg, data, args.set)
        print0(recorded_json(cfg), file=sys.stdout)  # as config.json records it
        if cfg.train.precision == "auto":  # decided when training starts; say what it would be on this machine
            from ..training.precision import native_bf16

            ok, why = native_bf16(default_device())
            way = "bf16, channels-last" if ok else "fp32"
            print0(f"train.precision=auto: {way} on this machine ({why}); config.json will record it")
        return 0
    from ..distributed import print0
    from ..training import train

    with output_folder(args.out or f"runs/{cfg.preset}") as out:
        data = load_and_check(cfg, out, resume=not args.no_resume, progress=not args.no_progress, sets=args.set)
        train(
            cfg,
            out,
            resume=not args.no_resume,
            progress=not args.no_progress,
            data=data,
            tensorboard=args.tensorboard,
            raise_on_stop=True,
        )
    print0(f"run folder: {out}")
    return 0


def load_and_check(cfg, out=None, *, resume: bool = True, progress: bool = True, sets=()):
    """Load the data and build the network once before anything is written, so bad input fails cleanly.

    A latent run (``data.latents_of``) loads its autoencoder's latents (encoded once, cached; latent.py); ``out``
    and ``resume`` let it refuse to resume a run trained on another autoencoder's latents. ``sets``: the user's
    ``--set`` assignments; a ``model.attn_resolutions`` among them that matches no level of the U-Net for this
    data is refused (a preset's or config file's is moved to the nearest level, ``data.fit_kind``)."""
    from ..data import load_data
    from ..model import build_model

    if cfg.data.latents_of:
        from ..distributed import is_main
        from ..latent import training_latents

        data = training_latents(cfg, out, resume=resume, progress=progress and is_main())
    else:
        data = load_data(cfg.data, split="train", seed=cfg.train.seed)
    build_model(fitted_to_data(cfg, data, sets), data.shape)  # ConfigError for e.g. a size not divisible by 2^levels
    if cfg.model.text_dim > 0 and getattr(data, "text", None) is None:
        data = caption_features_for(cfg, data)
    if cfg.model.text_retrieval:  # each example's nearest training examples by caption (retrieval.py)
        from ..retrieval import attach_neighbours

        data = attach_neighbours(data, cfg.model.text_retrieval)
    return data


def fitted_to_data(cfg, data, sets=()):
    """``cfg`` as the run fits it to ``data`` and records it in config.json (``data.fit_conditioning``,
    ``data.fit_kind``: e.g. a preset's ``model.attn_resolutions`` that matches no U-Net level moved to the nearest).
    A ``model.attn_resolutions`` among the user's ``--set`` assignments ``sets`` that matches no level is refused."""
    from ..data import fit_conditioning, fit_kind

    fitted = fit_kind(fit_conditioning(cfg, data), data)
    if fitted.model.attn_resolutions != cfg.model.attn_resolutions and any(
        a.split("=", 1)[0].strip() == "model.attn_resolutions" for a in sets
    ):
        from ..config import ConfigError
        from ..nets.unet import unmatched_attention

        raise ConfigError(unmatched_attention(cfg.model, data.shape))
    return fitted


def caption_features_for(cfg, data):
    """Attach the MiniLM token features of the data's captions (text.encode_captions; cached per machine)."""
    from ..config import ConfigError
    from ..distributed import print0
    from ..text import TEXT_DIM, encode_captions

    if cfg.model.text_dim != TEXT_DIM:
        raise ConfigError(f"model.text_dim must be {TEXT_DIM} (the width of the MiniLM token features)")
    print0(f"encoding the captions of {len(data)} examples with MiniLM (cached after the first run)")
    return encode_captions(data)
