"""Inpainting with the exact denoiser of the MNIST-5k training set: replacement vs RePaint, no network needed.

    .venv/bin/python scripts/oracle_inpaint.py                       # the default settings below
    .venv/bin/python scripts/oracle_inpaint.py ddpm,20,10,2 heun,12,10,2

The empirical distribution of the 4,000 training digits (the classifier's split, 100 per class held out) has an
exact denoiser, D(x, sigma) = sum_i softmax_i(-|x - x_i|^2 / 2 sigma^2) x_i (the ideal, memorising model). Its
exact conditional given the upper half of a held-out digit puts its mass on the training digits whose upper
halves are nearest, so the 1-nearest-neighbour completion is the reference: how often the evaluation classifier
recognises the true label in [upper half of the digit, lower half of its nearest neighbour]. Each argument
``sampler,steps,resample,jump`` runs :func:`torchdiffusion.edit.inpaint` on 100 held-out digits (lower half
repainted) and prints the classifier's accuracy; resample = 1 is plain known-region replacement.
"""

from __future__ import annotations

import argparse
import time

import torch

from torchdiffusion.edit import inpaint
from torchdiffusion.evaluation.classifier import classify
from torchdiffusion.evaluation.datasets import balanced_split, load_labelled
from torchdiffusion.masks import make_mask
from torchdiffusion.samplers import get_sampler
from torchdiffusion.schedules import karras_sigmas
from torchdiffusion.types import NoiseSource


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="sampler,steps,resample,jump", help="settings (default: five)")
    runs = p.parse_args(argv).runs or ["euler,20,1,20", "ddpm,20,1,20", "ddpm,20,10,2", "ddpm,20,20,2", "heun,12,10,2"]
    torch.set_num_threads(2)
    x, y = load_labelled("mnist5k")
    tr, held = balanced_split(y, 100, seed=0)
    sel = held[torch.randperm(len(held), generator=torch.Generator().manual_seed(0))][:100]
    xh, yh = x[sel], y[sel]
    X = x[tr].flatten(1)  # (4000, 784) the training set

    def D(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # exact denoiser of the empirical distribution
        zf = z.flatten(1)
        d2 = (zf**2).sum(1, keepdim=True) - 2 * zf @ X.T + (X**2).sum(1)[None]
        w = torch.softmax(-d2 / (2 * sigma.reshape(-1, 1).to(zf.dtype) ** 2), 1)
        return (w @ X).reshape(z.shape)

    nn = torch.cdist(xh[:, :, :14].flatten(1), x[tr][:, :, :14].flatten(1)).argmin(1)
    ref = xh.clone()
    ref[:, :, 14:] = x[tr][nn][:, :, 14:]
    acc_ref = (classify(ref)[0] == yh).float().mean().item()
    print(f"reference, upper half + nearest neighbour's lower half: accuracy {acc_ref:.2f}")
    mask = make_mask("half:bottom", 28, 28)
    for spec in runs:
        name, steps, r, j = spec.split(",")
        sig = karras_sigmas(int(steps), 0.01, 80.0)
        ns, known = NoiseSource(range(100), (1, 28, 28)), NoiseSource(range(1000, 1100), (1, 28, 28))
        t0 = time.time()
        out = inpaint(
            get_sampler(name),
            D,
            ns.initial() * float(sig[0]),
            sig,
            xh,
            mask,
            jump=int(j),
            resample=int(r),
            noise=ns,
            known_noise=known,
        )
        acc = (classify(out.clamp(-1, 1))[0] == yh).float().mean().item()
        print(
            f"{name:6s} {steps:>3s} steps, resample {r:>2s}, jump {j:>2s}: accuracy {acc:.2f} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
