"""torchdiffusion img2img: SDEdit - noise real images part of the way and denoise them with a trained run."""

from __future__ import annotations

import argparse

from .argtypes import unit_float
from .inpaint import add_input_arguments

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "img2img / SDEdit: partly noise images (strength in [0, 1]) and sample back from there"
EXAMPLES = """examples:
  torchdiffusion img2img runs/demo --strength 0.3 0.5 0.7              # one row per strength
  torchdiffusion img2img runs/demo --images sketch.png --strength 0.6 --sampler ddpm --grid uniform_t --steps 100
Strength s keeps the last round(s * steps) steps of the sampler's grid: 0 returns the input, 1 ignores it.
Output rows: original, then one row per strength."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    p.add_argument("--strength", type=unit_float, nargs="+", default=[0.5], help="strength(s) in [0, 1] (default 0.5)")


def run(args: argparse.Namespace) -> int:
    from ..edit import img2img, strength_sigmas
    from ..generate import load_run
    from ..progress import step_bar
    from ..types import NoiseSource
    from .inpaint import default_out, load_inputs, save_rows, setup

    run_ = load_run(args.run, weights=args.weights)
    x = load_inputs(run_, args)
    sample, D, sampler, sigmas, knobs = setup(run_, args)
    for s in args.strength:
        strength_sigmas(sigmas, s)  # validate every strength before the slow part
    rows = [x]
    seeds = range(sample.seed, sample.seed + len(x))
    total = sum(len(strength_sigmas(sigmas, s)) - 1 for s in args.strength)
    with step_bar(total, f"img2img ({len(args.strength)} strengths)") as bar:
        for s in args.strength:
            ns = NoiseSource(seeds, x.shape[1:])  # the same noise for every strength: only s changes
            rows.append(img2img(sampler, D, x, sigmas, s, noise=ns, initial=ns.initial(), callback=bar.step, **knobs))
    tag = f"img2img-{'_'.join(f'{s:g}' for s in args.strength)}-{sample.sampler}{sample.steps}"
    print(save_rows(rows, default_out(run_, args, tag)))
    return 0
