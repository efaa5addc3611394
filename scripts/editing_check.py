"""Inpainting accuracy on held-out digits and the DDIM-inversion round trip.

    .venv/bin/python scripts/editing_check.py runs/demo                       # defaults below
    .venv/bin/python scripts/editing_check.py runs/demo --n 200 --resample 10 --jump 2 --steps 12

1. Inpaint the lower half (mask ``half:bottom``) of ``--n`` real digits, once with plain known-region replacement
   and once with RePaint (``--resample`` passes over segments of ``--jump`` steps); classify the results with the
   evaluation classifier and report accuracy against the true labels, plus the mean squared error of the known
   (upper) region, which must be 0. For reference: the accuracy on the originals and on the half-erased inputs.
   A class-conditional run inpaints at its null class; ``--class-shift S`` asks it for class (label + S) mod K
   instead (``inpaint --class``) and scores each completion against the class asked for.
2. DDIM inversion at ``--invert-steps`` steps (image -> noise -> image, Euler = DDIM eta = 0, and Heun): PSNR.

Digits: the run's own holdout split when it kept one (``data.holdout > 0``: unseen by the diffusion model and by
the classifier only if the classifier's split agrees); otherwise the classifier's held-out split (100 per class,
seed 0 - unseen by the classifier, but the diffusion model trained on all of MNIST-5k). The script says which.
Writes ``--out`` (JSON) and before/after grids beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from torchdiffusion.io import atomic_write


def held_out_digits(run_, n: int):
    from torchdiffusion.data import load_data

    if run_.config.data.holdout > 0 and run_.config.data.source == "mnist5k":
        d = load_data(run_.config.data, split="holdout", seed=run_.config.train.seed)
        return d.x[:n], d.labels[:n], "the run's holdout split (never seen by the diffusion model)"
    from torchdiffusion.evaluation.datasets import balanced_split, load_labelled

    x, y = load_labelled("mnist5k")
    _, held = balanced_split(y, 100, seed=0)
    held = held[torch.randperm(len(held), generator=torch.Generator().manual_seed(0))][:n]
    return (
        x[held],
        y[held],
        (
            "the classifier's held-out split (100 per class, seed 0); the diffusion model "
            "trained on all of MNIST-5k (run has no holdout)"
        ),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=100, help="digits to inpaint (default 100)")
    ap.add_argument("--sampler", help="sampler (default: the run's)")
    ap.add_argument("--steps", type=int, help="steps (default: the run's)")
    ap.add_argument("--grid", help="sigma grid (default: the run's)")
    ap.add_argument("--resample", type=int, default=5, help="RePaint passes per segment (default 5)")
    ap.add_argument("--jump", type=int, default=2, help="RePaint jump length in steps (default 2)")
    ap.add_argument("--invert-steps", type=int, default=50, help="DDIM inversion steps (default 50)")
    ap.add_argument("--invert-n", type=int, default=32, help="digits for the inversion round trip (default 32)")
    ap.add_argument("--classifier", default="mnist5k", help="shipped classifier name or a .safetensors file")
    ap.add_argument("--skip-inpaint", action="store_true")
    ap.add_argument("--skip-inversion", action="store_true")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="digit i (counted from --first) gets noise seed SEED + i")
    ap.add_argument("--first", type=int, default=0, help="skip the first FIRST held-out digits (default 0)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (noise is drawn on the CPU either way)")
    ap.add_argument("--skip-replacement", action="store_true", help="only RePaint")
    ap.add_argument(
        "--guidance", type=float, default=0.0, help="pseudoinverse-guidance weight for every method (default 0: none)"
    )
    ap.add_argument("--guidance-sigma-max", type=float, default=math.inf, help="no guidance above this sigma")
    ap.add_argument(
        "--class-shift",
        type=int,
        help="a class-conditional run inpaints digit i as class (label_i + SHIFT) mod K and is scored against that "
        "requested class (0: its own digit; default: no class, the network's null class, scored against the label)",
    )
    ap.add_argument(
        "--cfg", type=float, default=1.0, help="classifier-free guidance w of the class asked for (default 1)"
    )
    ap.add_argument("--out", help="JSON report (default RUN/edits/editing-check.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from torchdiffusion.edit import inpaint, invert, psnr, repaint_moves
    from torchdiffusion.evaluation.classifier import classify, load_classifier, load_classifier_file
    from torchdiffusion.generate import clamped, clamps_x0, load_run, make_grid_sigmas, sampling_plan
    from torchdiffusion.guidance import guided_denoiser
    from torchdiffusion.masks import make_mask
    from torchdiffusion.samplers import get_sampler, nfe
    from torchdiffusion.types import NoiseSource
    from torchdiffusion.viz import save_grid

    device = torch.device(args.device)
    run_ = load_run(args.run, device=device)
    sample = replace(
        run_.config.sample,
        **{k: v for k, v in (("sampler", args.sampler), ("steps", args.steps), ("grid", args.grid)) if v is not None},
    )
    out = Path(args.out) if args.out else run_.path / "edits" / "editing-check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    x, labels, source = held_out_digits(run_, args.first + args.n)
    x, labels = x[args.first :], labels[args.first :]
    C, H, W = run_.data_shape
    mask = make_mask("half:bottom", H, W).to(device)
    K = run_.config.model.num_classes
    if args.class_shift is not None and K <= 0:
        raise SystemExit("error: --class-shift needs a class-conditional run (model.num_classes > 0)")
    requested = labels if args.class_shift is None else (labels + args.class_shift) % K  # what a completion must be
    clip = clamps_x0(sample, run_.data_shape, run_.codec)

    def denoiser(start: int | None = None, stop: int | None = None):
        """D(x, sigma) of digits start..stop-1 at their requested class (--class-shift); else the null class."""
        cond = None if args.class_shift is None or start is None else {"class": requested[start:stop].to(device)}
        D = guided_denoiser(run_.model, cond, scale=args.cfg)  # model.bind(cond) at w = 1 or without a class
        return clamped(D) if clip else D

    D = denoiser()  # the null class: the inversion round trip below
    sampler = get_sampler(sample.sampler)
    sigmas, knobs, _ = sampling_plan(run_.model, sample, clamped=clip)

    def run_inpaint(resample: int, jump: int | None) -> tuple[torch.Tensor, float]:
        t0 = time.time()
        res = []
        for start in range(0, len(x), args.batch):
            xb = x[start : start + args.batch].to(device)
            seeds = range(args.seed + args.first + start, args.seed + args.first + start + len(xb))
            ns = NoiseSource(seeds, (C, H, W), device=device)
            known = NoiseSource([s + 7_919_000_000 for s in seeds], (C, H, W), device=device)
            res.append(
                inpaint(
                    sampler,
                    denoiser(start, start + len(xb)),
                    ns.initial() * float(sigmas[0]),
                    sigmas,
                    xb,
                    mask,
                    jump=jump,
                    resample=resample,
                    noise=ns,
                    known_noise=known,
                    guidance=args.guidance,
                    guidance_sigma_max=args.guidance_sigma_max,
                    sigma_data=run_.config.diffusion.sigma_data,
                    **knobs,
                ).cpu()
            )
        return torch.cat(res), time.time() - t0

    report: dict = {
        "command": "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
        "run": str(run_.path),
        "digits": source,
        "first": args.first,
        "n": len(x),
        "sampler": sample.sampler,
        "steps": sample.steps,
        "grid": sample.grid,
        "mask": "half:bottom (lower half repainted)",
        "threads": args.threads,
        "device": str(device),
        "guidance": args.guidance,
        "guidance_sigma_max": args.guidance_sigma_max,
        "class": "none (the null class)" if args.class_shift is None else f"(label + {args.class_shift}) mod {K}",
        "cfg": args.cfg,
    }
    keep = mask.cpu().expand_as(x).bool()
    if not args.skip_inpaint:
        clf = (
            load_classifier_file(args.classifier)
            if args.classifier.endswith(".safetensors")
            else load_classifier(args.classifier)
        )
        report["classifier"] = args.classifier
        hits = lambda imgs: classify(imgs.clamp(-1, 1), clf)[0] == labels
        acc = lambda imgs: float(hits(imgs).float().mean())
        report["accuracy_originals"] = acc(x)
        report["accuracy_half_erased_input"] = acc(torch.where(keep, x, torch.full_like(x, -1.0)))
    rows = [x[:16], torch.where(keep, x, torch.zeros_like(x))[:16]]
    methods = {} if args.skip_inpaint else {"replacement": (1, None), "repaint": (args.resample, args.jump)}
    if args.skip_replacement:
        methods.pop("replacement", None)
    for name, (r, j) in methods.items():
        y, secs = run_inpaint(r, j)
        h = classify(y.clamp(-1, 1), clf)[0] == requested  # completions recognised as the digit asked for
        moves = repaint_moves(len(sigmas) - 1, len(sigmas) - 1 if j is None else j, r)
        report[name] = {
            "resample": r,
            "jump": j,
            "nfe_per_image": sum(nfe(sample.sampler, b - a) for a, b in moves if b > a)
            * (2 if args.cfg != 1.0 and args.class_shift is not None else 1),  # guided: two branches per step
            "accuracy": float(h.float().mean()),
            "known_region_mse": float(((y - x)[keep] ** 2).mean()),
            "seconds": round(secs, 1),
            "correct": "".join("1" if v else "0" for v in h.tolist()),
        }
        rows.append(y[:16])
        print(name, report[name], flush=True)
    if not args.skip_inpaint:
        save_grid(torch.cat(rows), out.with_name("editing-check-inpaint.png"), nrow=16)

    xi = x[: args.invert_n].to(device)
    inv = {}
    grids = (
        []
        if args.skip_inversion
        else list(dict.fromkeys([sample.grid] + (["uniform_t"] if run_.model.process is not None else ["karras"])))
    )
    for grid in grids:
        sig = make_grid_sigmas(run_.model, replace(sample, grid=grid), steps=args.invert_steps, clamped=clip)
        for method in ("euler", "heun") if grid == sample.grid else ("euler",):
            t0 = time.time()
            z = invert(D, xi, sig, method=method)
            back = get_sampler(method)(D, z, sig).clamp(-1, 1)
            p = psnr(back, xi)
            inv[f"{method}/{grid}"] = {
                "psnr_mean_db": float(p.mean()),
                "psnr_min_db": float(p.min()),
                "latent_std": float(z.std() / sig[0]),
                "seconds": round(time.time() - t0, 1),
            }
            print("inversion", method, grid, inv[f"{method}/{grid}"], flush=True)
            if method == "euler" and grid == sample.grid:
                save_grid(
                    torch.cat([xi[:16], (z[:16] / float(sig[0])).clamp(-1, 1), back[:16]]).cpu(),
                    out.with_name("editing-check-inversion.png"),
                    nrow=16,
                )
    report["inversion"] = {"steps": args.invert_steps, "n": len(xi), "results": inv}
    atomic_write(out, json.dumps(report, indent=2) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
