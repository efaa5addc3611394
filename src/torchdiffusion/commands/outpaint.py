"""torchdiffusion outpaint: grow the canvas of images on any side and let a trained run fill the new border."""

from __future__ import annotations

import argparse

from .argtypes import MAX_PIXELS, MAX_STEPS, nonneg_int, positive_int
from .inpaint import add_input_arguments

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "grow images on any side (--left/--right/--top/--bottom pixels) and fill the new area"
EXAMPLES = """examples:
  torchdiffusion outpaint runs/demo --right 8 --bottom 8            # 28x28 digits -> 36x36
  torchdiffusion outpaint runs/demo --left 4 --right 4 --resample 5 --jump 3 --images a.png
The network only knows images of its training size, so the larger canvas is denoised in overlapping windows of
that size whose estimates are averaged (MultiDiffusion); --stride sets the window step. Output rows: original
(padded in grey), result."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    for side in ("left", "right", "top", "bottom"):
        p.add_argument(
            f"--{side}", type=nonneg_int(MAX_PIXELS), default=0, help=f"pixels to add on the {side} (default 0)"
        )
    p.add_argument(
        "--resample", type=positive_int(1000), default=1, help="RePaint passes per segment (default 1 = replacement)"
    )
    p.add_argument(
        "--jump", type=positive_int(MAX_STEPS), help="RePaint jump length in steps (default: steps // 4, at least 1)"
    )
    p.add_argument(
        "--stride", type=positive_int(MAX_PIXELS), help="window step on the grown canvas (default: half the image size)"
    )


def run(args: argparse.Namespace) -> int:
    from ..edit import outpaint_canvas, tiled
    from ..generate import load_run
    from .inpaint import default_out, inpaint_images, load_inputs, repaint_bar, save_rows, setup, show_hole

    run_ = load_run(args.run, weights=args.weights)
    if run_.codec is not None:
        from ..edit import EditError

        raise EditError(f"outpaint works on pixel runs; {run_.path} diffuses latents (use inpaint or img2img)")
    x = load_inputs(run_, args)
    sample, D, sampler, sigmas, knobs = setup(run_, args)
    canvas, mask = outpaint_canvas(x, left=args.left, right=args.right, top=args.top, bottom=args.bottom)
    jump = args.jump if args.jump is not None else max(1, sample.steps // 4)
    D = tiled(D, tuple(run_.data_shape[1:]), args.stride)  # the network sees only windows of its own size
    with repaint_bar(len(sigmas) - 1, jump, args.resample, "outpaint") as bar:
        result = inpaint_images(
            sampler, D, canvas, sigmas, mask, seed=sample.seed, jump=jump, resample=args.resample, knobs=knobs, bar=bar
        )
    tag = f"outpaint-l{args.left}r{args.right}t{args.top}b{args.bottom}-{sample.sampler}{sample.steps}"
    print(save_rows([show_hole(canvas, mask), result], default_out(run_, args, tag)))
    return 0
