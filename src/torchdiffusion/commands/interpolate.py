"""torchdiffusion interpolate: walk between two seeds (slerp of their noises) or two images (DDIM inversion,
slerp, sample back) with a deterministic probability-flow sampler."""

from __future__ import annotations

import argparse

from .argtypes import MAX_COUNT, MAX_FRAMES, MAX_SEED, int_in, nonneg_int
from .common import add_sampling_arguments

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "interpolate between two seeds or two images (spherical in noise space, DDIM inversion for images)"
EXAMPLES = """examples:
  torchdiffusion interpolate runs/demo --seeds 3 11 --frames 9
  torchdiffusion interpolate runs/demo --data-index 0 1 --steps 50          # two of the run's own images
  torchdiffusion interpolate runs/demo --images a.png b.png --method heun --gif
Sampling uses the deterministic ODE solver --method (euler = DDIM, default; or heun) on the grid the run plans
for it (--grid auto: its tuned grid for that solver and --steps when it has one); with
images the row starts and ends with the inputs' inversion round trips. Output: one row (+ GIF with --gif)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder written by 'torchdiffusion train'")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--seeds", type=nonneg_int(MAX_SEED), nargs=2, metavar=("A", "B"), help="two seeds (default 0 1)")
    src.add_argument("--images", nargs=2, metavar=("A", "B"), help="two image files")
    src.add_argument(
        "--data-index", type=nonneg_int(MAX_COUNT), nargs=2, metavar=("I", "J"), help="two examples of the run's data"
    )
    p.add_argument(
        "--frames", type=int_in(2, MAX_FRAMES), default=9, help="images along the path, endpoints included (default 9)"
    )
    p.add_argument(
        "--method",
        default="euler",
        choices=["heun", "euler", "ddim"],
        help="ODE solver (default euler = ddim with eta 0, safe on every grid; heun is 2nd order but "
        "unstable on a discrete model's uniform_t grid, whose first step spans sigma_max)",
    )
    p.add_argument("--gif", action="store_true", help="also write the path as a GIF (there and back)")
    p.add_argument("--out", help="output PNG (default: RUN/edits/interpolate-....png)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")
    add_sampling_arguments(p)


# Shared sampling flags interpolate does not read: dest -> what sets that part of the path instead
UNREAD = {
    "n": "--frames sets the images along the path",
    "seed": "--seeds picks the two starting noises",
    "batch_size": "the path is one batch",
    "sampler": "--method picks the ODE solver that walks the path (and --grid auto plans the grid for it)",
}


def refuse_unread(args: argparse.Namespace) -> None:
    """EditError in one line for a sampling flag interpolate does not read (UNREAD) or a sampler setting: the path
    is walked by --method's ODE solver, which takes none."""
    from ..edit import EditError
    from .common import given_options, sample_sets

    given = list(given_options(args).items())
    for key, a in sample_sets(args):  # the same settings through --set sample.KEY=VALUE
        given.append((key.removeprefix("sample.").replace("settings.", "setting_", 1), f"--set {a.strip()}"))
    for dest, flag in given:
        if dest in UNREAD:
            raise EditError(f"{flag} changes nothing in interpolate: {UNREAD[dest]}")
        if dest.startswith("setting_"):
            raise EditError(f"{flag} is a sampler setting; interpolate's ODE solver (--method) takes none")


def refuse_unfit_run(path, kind: str, latent: bool) -> None:
    """EditError in one line for a run interpolate cannot walk: one that diffuses latents, or one that holds no
    images (before the plan: a table's or sequence's model has no D(x, sigma) to walk)."""
    from ..edit import EditError

    if latent:
        raise EditError(f"interpolate works on pixel runs; {path} diffuses latents (use inpaint or img2img)")
    if kind != "image":
        raise EditError(f"interpolate draws image rows; {path} holds {kind} data")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..edit import EditError, interpolate, interpolate_images
    from ..generate import load_run, stop_short
    from ..progress import step_bar
    from ..types import NoiseSource
    from .inpaint import default_out, save_rows, setup

    if args.frames < 2:
        raise EditError(f"--frames must be >= 2, got {args.frames}")
    refuse_unread(args)
    run_ = load_run(args.run, weights=args.weights)
    refuse_unfit_run(run_.path, run_.kind, run_.codec is not None)
    drawn = None if args.images or args.data_index else list(args.seeds or (0, 1))  # the two noises, if any
    sample, D, sampler, sigmas, knobs, record = setup(run_, args, solver=args.method, seeds=drawn)  # for --method
    D_down = stop_short(D, sigmas, record)  # the inversion walks the grid up with D itself
    ts = torch.linspace(0, 1, args.frames).tolist()
    n = len(sigmas) - 1  # sampler steps (the inversion takes n - 1)
    if args.images or args.data_index:
        from .inpaint import load_inputs

        if args.images:
            args.n, args.index = None, 0
            x = load_inputs(run_, args)
            tag = "images"
        else:
            i, j = args.data_index
            args.images, args.n = None, 1
            args.index = i
            xa = load_inputs(run_, args, flags="--data-index")
            args.index = j
            x = torch.cat([xa, load_inputs(run_, args, flags="--data-index")])
            tag = f"data{i}-{j}"
        with step_bar(2 * n - 1, f"interpolate (invert, then {args.method})") as bar:
            path = interpolate_images(
                sampler, D, x[:1], x[1:2], sigmas, ts, method=args.method, callback=bar.step, down=D_down, **knobs
            )
        rows = [torch.cat([x[:1], path, x[1:2]])]
    else:
        a, b = args.seeds or (0, 1)
        z = NoiseSource([a, b], run_.data_shape).initial() * float(sigmas[0])
        with step_bar(n, f"interpolate ({args.method})") as bar:
            path = interpolate(sampler, D_down, z[:1], z[1:], sigmas, ts, callback=bar.step, **knobs)
        rows = [path]
        tag = f"seeds{a}-{b}"
    out = default_out(run_, args, f"interpolate-{tag}-{args.method}{sample.steps}", sidecars=(".gif",))
    print(save_rows(rows, out))
    if args.gif:
        from ..viz import make_grid, save_gif

        frames = [make_grid(p[None], nrow=1, pad=0) for p in path]
        print(save_gif(frames + frames[::-1], out.with_suffix(".gif"), duration_ms=150, scale=6, hold_last_ms=150))
    return 0
