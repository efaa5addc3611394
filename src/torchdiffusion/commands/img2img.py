"""torchdiffusion img2img: SDEdit - noise real images part of the way and denoise them with a trained run."""

from __future__ import annotations

import argparse

from .argtypes import unit_float
from .inpaint import add_class_argument, add_input_arguments

MANIFESTS = True  # each file written gets <file>.manifest.json (provenance.py)
HELP = "img2img / SDEdit: partly noise images (strength in [0, 1]) and sample back from there"
EXAMPLES = """examples:
  torchdiffusion img2img runs/demo --strength 0.3 0.5 0.7              # one row per strength
  torchdiffusion img2img runs/demo --images sketch.png --strength 0.6 --sampler ddpm --grid uniform_t --steps 100
Strength s keeps the last round(s * steps) steps of the sampler's grid: 0 returns the input, 1 ignores it.
Output rows: original, then one row per strength."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    add_class_argument(p)
    p.add_argument("--strength", type=unit_float, nargs="+", default=[0.5], help="strength(s) in [0, 1] (default 0.5)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..edit import strength_sigmas
    from ..generate import load_run
    from ..progress import step_bar
    from .inpaint import check_edit_options, load_inputs, save_edit, setup

    check_edit_options(args)
    run_ = load_run(args.run, weights=args.weights)
    x = load_inputs(run_, args)
    sample, D, sampler, sigmas, knobs, _ = setup(run_, args, n=len(x))  # (the guidance on what each strength walks)
    rows = [x]
    seeds = range(sample.seed, sample.seed + len(x))
    total = sum(len(strength_sigmas(sigmas, s)) - 1 for s in args.strength)
    with step_bar(total, f"img2img ({len(args.strength)} strengths)") as bar:
        for s in args.strength:
            rows.append(img2img_images(run_, sampler, D, x, sigmas, s, seeds=seeds, knobs=knobs, bar=bar))
    tag = f"img2img-{'_'.join(f'{s:g}' for s in args.strength)}-{sample.sampler}{sample.steps}"
    edited = torch.stack(rows[1:]) if len(rows) > 2 else rows[1]  # (S, N, ...) for several strengths
    for p in save_edit(run_, args, tag, rows, edited):
        print(p)
    return 0


def img2img_images(run_, sampler, D, x, sigmas, strength: float, *, seeds, knobs: dict, bar=None):
    """SDEdit of images ``x`` at one strength with per-image seeds (the same noise at every strength); a latent run
    edits the latents of ``x`` and decodes them (strength 0 returns ``x`` itself)."""
    from ..edit import img2img, strength_sigmas
    from ..types import NoiseSource

    def edit(v):
        ns = NoiseSource(seeds, v.shape[1:])
        cb = None if bar is None else bar.step
        return img2img(sampler, D, v, sigmas, strength, noise=ns, initial=ns.initial(), callback=cb, **knobs)

    if run_.codec is None or len(strength_sigmas(sigmas, strength)) < 2:
        return edit(x) if run_.codec is None else x.clone()
    from ..latent import edit_in_latents

    return edit_in_latents(run_.codec, x, edit)
