"""torchdiffusion distill: a student that samples in 1-4 steps, learnt from a trained run (shortcuts/)."""

from __future__ import annotations

import argparse

from ..config import MAX_GUIDANCE
from .argtypes import float_in, int_in, output_folder, positive_int

METHODS = ("progressive", "consistency", "dmd", "reflow")  # shortcuts/distill.py's, without importing torch here
HELP = (
    "distil a run into a few-step student (progressive distillation, consistency distillation, distribution "
    "matching distillation, reflow)"
)
EXAMPLES = """examples:
  torchdiffusion distill runs/demo --method progressive --steps 4 --out runs/demo-pd4
  torchdiffusion distill runs/demo --method consistency --steps 2 --out runs/demo-cd --images 40000
  torchdiffusion distill runs/demo --method dmd --steps 4 --out runs/demo-dmd --images 16000 --autoguidance 1.5
  torchdiffusion distill runs/toy --method reflow --steps 1 --out runs/toy-reflow --pairs 20000
Then 'torchdiffusion sample runs/demo-pd4' samples with the sampler and grid the student was distilled for.
The student is an ordinary run folder: it loads with load_run, samples through generate (asking it for more steps
- network evaluations - than it was distilled for is refused: heun's second evaluations and adaptive's own steps
count) and every evaluate metric applies; explain ablation's DDPM rows walk its own grid. A class-conditional
teacher is distilled with classifier-free guidance at a fixed scale (--guidance, default the teacher's
sample.guidance): the student samples at guidance 1. Ctrl-C checkpoints and stops (exit 130); the same command
resumes."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("teacher", help="the teacher's run folder")
    p.add_argument("--method", required=True, choices=METHODS, help="the shortcut")
    p.add_argument("--steps", type=int_in(1, 1024), default=4, help="sampling steps of the student (default 4)")
    p.add_argument("--out", required=True, help="the student's run folder")
    p.add_argument(
        "--images", type=positive_int(10**12), default=20_000, help="images seen per training run (default 20000)"
    )
    p.add_argument("--batch-size", type=int_in(1, 65_536), default=64, help="images per optimizer step (default 64)")
    p.add_argument(
        "--lr",
        type=float_in(0.0, 1.0, lo_open=True),
        default=None,
        help="learning rate of the student (default 2e-4; dmd's generator 1e-4)",
    )
    p.add_argument(
        "--teacher-steps",
        type=int_in(2, 65_536),
        default=None,
        help="progressive: the first teacher's DDIM steps, --steps times a power of 2 (default --steps x 8)",
    )
    p.add_argument(
        "--grid",
        default=None,
        help="progressive: the first teacher's grid, karras | exponential | uniform_t | ... (default its own "
        "sample.grid; a discrete model's karras and exponential grids start at sigma 80)",
    )
    p.add_argument("--levels", type=int_in(2, 10_000), default=40, help="consistency: discretisation levels (40)")
    p.add_argument("--pairs", type=int_in(2, 10_000_000), default=5_000, help="reflow: (noise, sample) pairs (5000)")
    p.add_argument("--guidance", type=float_in(0.0, MAX_GUIDANCE), default=None, help="the CFG scale distilled")
    p.add_argument(
        "--autoguidance",
        type=float_in(0.0, 100.0),
        default=None,
        help="distil the teacher steered from the guide model its run keeps at this w (default: the model alone; "
        "refused for a teacher without a guide)",
    )
    p.add_argument(
        "--fake-updates", type=int_in(1, 1000), default=3, help="dmd: fake-denoiser updates per generator update (3)"
    )
    p.add_argument(
        "--fake-lr", type=float_in(0.0, 1.0, lo_open=True), default=2e-4, help="dmd: the fake denoiser's lr (2e-4)"
    )
    p.add_argument("--eval-every", type=int_in(0, 10**12), default=0, help="quick evaluation cadence in images")
    p.add_argument("--seed", type=int_in(0, 2**62), default=0, help="training seed")
    p.add_argument(
        "--threads",
        type=int_in(0, 4096),
        default=None,
        help="torch threads (0: torch's default; default: the teacher's)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# The options of one method: given with another method they would change nothing, so they are refused.
METHOD_OPTIONS = {
    "teacher_steps": "progressive",
    "grid": "progressive",
    "levels": "consistency",
    "pairs": "reflow",
    "fake_updates": "dmd",
    "fake_lr": "dmd",
}


def check_method_options(args: argparse.Namespace) -> None:
    """One line for an option of another --method than the one asked for."""
    from ..config import ConfigError
    from .common import given_options

    for dest, flag in given_options(args).items():
        if METHOD_OPTIONS.get(dest, args.method) != args.method:
            raise ConfigError(f"{flag} is an option of --method {METHOD_OPTIONS[dest]}, not of {args.method}")


def run(args: argparse.Namespace) -> int:
    from ..distributed import check_batch_splits, print0
    from ..shortcuts.distill import DistillSettings, distill

    check_method_options(args)
    check_batch_splits(args.batch_size, name="--batch-size")  # shared out over torchrun's processes

    settings = DistillSettings(
        images=args.images,
        batch_size=args.batch_size,
        lr=args.lr,
        teacher_steps=args.teacher_steps or 0,
        grid=args.grid,
        levels=args.levels,
        pairs=args.pairs,
        guidance=args.guidance,
        autoguidance=args.autoguidance,
        fake_updates=args.fake_updates,
        fake_lr=args.fake_lr,
        eval_every_images=args.eval_every,
        seed=args.seed,
        threads=args.threads,
    )
    with output_folder(args.out) as out:
        distill(args.teacher, args.method, args.steps, out, settings, progress=not args.no_progress)
    print0(f"student run folder: {out}")
    return 0
