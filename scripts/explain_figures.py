"""Build docs/how-diffusion-works.md ("How diffusion works, in pictures") from `torchdiffusion explain` outputs.

    .venv/bin/python scripts/explain_figures.py --run runs/demo --toy-run runs/toy

Every picture is produced by one `torchdiffusion explain ...` command, run here in a fresh process with its wall
time measured; the page shows the picture, what to look at, the exact command and the time it took. A 2-D run
for the field picture comes from `torchdiffusion train --preset toy-2d --out runs/toy` (skipped when missing).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from torchdiffusion.io import atomic_write
from torchdiffusion.provenance import cpu_name

ROOT = Path(__file__).resolve().parents[1]

# (key, title, command arguments after "torchdiffusion", needs, what to look at)
PICTURES = [
    (
        "forward",
        "1. The forward process: from x₀ to pure noise",
        [
            "explain",
            "forward",
            "--data",
            "mnist5k",
            "--t",
            "0",
            "50",
            "100",
            "200",
            "300",
            "500",
            "700",
            "999",
            "--out",
            "{img}/explain-forward.png",
        ],
        None,
        "Real digits noised by q(x_t | x₀) = N(√ᾱ_t x₀, (1 − ᾱ_t) I) at the same t and with the same noise for two "
        "variance schedules (the number under each column is ᾱ_t). The linear schedule of Ho et al. has all but "
        "erased the digit by t ≈ 500 (ᾱ ≈ 0.08) and spends its second half on almost-pure noise; the cosine "
        "schedule (Nichol & Dhariwal) still shows the digit at t = 500 (ᾱ ≈ 0.5) and spreads the information loss "
        "over all t. (Pixels are clipped to [-1, 1] for display.)",
    ),
    (
        "schedules",
        "2. Schedules in numbers: ᾱ_t, SNR and σ",
        ["explain", "schedules", "--out", "{img}/explain-schedules.png"],
        None,
        "The same schedules as curves, plus EDM's sampling ramp (ρ = 7). Left: the signal kept, ᾱ_t. Middle: the "
        "signal-to-noise ratio SNR = ᾱ/(1 − ᾱ) on a log scale - the quantity that really matters; cosine and "
        "sigmoid are close to straight lines in log-SNR over most of t. Right: the same thing in the "
        "variance-exploding units every sampler of this library works in, σ_t = √((1 − ᾱ_t)/ᾱ_t) = SNR^(-1/2).",
    ),
    (
        "trajectory",
        "3. Denoising, step by step",
        ["explain", "trajectory", "{run}", "--n", "16", "--out", "{img}/explain-trajectory.png"],
        "run",
        "Sampling with the run's own sampler, each column one step (the demo model is class-conditional: sample k "
        "is of digit k mod 10). Top row: the sample x_t (shown in VP scale x/√(1 + σ²)); bottom row: the model's "
        "prediction x̂₀ = D(x_t, σ) at that step. At the first, largest σ an ε-prediction model's x̂₀ = x − σ ε̂ "
        "multiplies its error in ε̂ by σ and shows noise; a few steps later it is a blurry digit of the asked class "
        "that sharpens as σ falls: the coarse layout is decided early, the strokes late. The GIF "
        "(`explain-trajectory.gif`, x_t on the left, x̂₀ on the right) shows every step; with `imageio-ffmpeg` "
        "installed an MP4 is written too.",
    ),
    (
        "loss",
        "4. The loss hides progress at low noise",
        ["explain", "loss", "{run}", "--out", "{img}/explain-loss.png"],
        "run",
        "The training loss recorded per noise-level bucket (`loss_by_sigma` in `metrics.jsonl`). Left: the mean "
        "loss flattens early. Right: each bucket divided by its own first value - the buckets improve at very "
        "different rates, and the mean (dominated by the buckets with the largest loss) says little about whether "
        "the model is still learning the fine detail at low noise.",
    ),
    (
        "field",
        "5. The denoiser field of 2-D data, learned and exact",
        ["explain", "field", "{toy_run}", "--out", "{img}/explain-field.png"],
        "toy_run",
        "For 2-D toy data we can draw what the network learned: arrows D(x, σ) − x (where the denoiser would move "
        "each point; the score is this divided by σ²) at several noise levels, and a few probability-flow ODE "
        "trajectories. Bottom row: the exact answer for the analytic eight-Gaussian mixture. At large σ every "
        "arrow points to the global mean; as σ shrinks the field splits into basins, one per mode.",
    ),
    (
        "ablation",
        "6. Two teaching ablations",
        ["explain", "ablation", "{run}", "--n", "16", "--out", "{img}/explain-ablation.png"],
        "run",
        "The same 16 starting noises sampled four ways, each with its class (digit k mod 10, as the demo samples). "
        "(a) DDPM ancestral sampling as in Ho et al. Algorithm 2. "
        '(b) The same loop without the re-added noise z (the "incorrect" sampler of the DeepLearning.AI short course '
        '"How Diffusion Models Work"): each step moves to the posterior mean, and the samples collapse towards '
        "the class's average image - one smooth, typical digit per class, whatever the starting noise (the two 0s are "
        "the same image, as are the two 1s ...). (c) One shot: the model's single "
        "prediction x̂₀ = D(σ n, σ) from pure noise, at the first level σ of the DDPM panels' grid (the panel names "
        "it: the run's σ_max on its own timesteps, 80 on a Karras grid). The ideal answer is the mean of the data, a "
        "blur; an "
        "ε-prediction model at the cosine schedule's σ_max ≈ 2·10⁴ computes x̂₀ = x − σ ε̂ and so multiplies its "
        "small error in ε̂ by 2·10⁴ - noise (clamped to [-1, 1]). v- and EDM-parameterized models keep x̂₀ bounded "
        "here. (d) The run's iterative sampler: denoising works because it is done a little at a time.",
    ),
]


def _import_torch_seconds() -> float:
    """Wall time of a fresh Python process that imports torch: the floor under every command's time."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - t0


# What a section says after its command
AFTER = {
    "forward": "\nThe same strip of your own files, with no training: `--data` takes a folder of images (any sizes "
    "and depths,\nshown at 64 × 64), a folder of WAV recordings, an array (`.npy`, `.npz`, `.h5`; values in their "
    "own units mapped\nby their range) or a CSV of series (`explain table-forward --data table.csv` draws a table's "
    "marginals, `explain\nvolume-forward --data stack.tif` a NIfTI file or TIFF z-stack slice by slice):\n\n"
    "```\ntorchdiffusion explain forward --data my_photos/ --t 0 100 300 500 700 --out my-forward.png\n```\n"
    # a run's own forward process (commands/explain.py: _forward)
    "\n"
    "Given a run instead of `--data`, the strip draws the run's own data under the run's own forward process (the\n"
    "manifest beside the picture records it in `extra.forward`: process, schedule and T, and the levels drawn):\n"
    "\n"
    "- a discrete run: its schedule and T, one block; `--t` counts on its own T (default 0, 5, 10, 20, 30, 50 and\n"
    "  70 % of T, and T − 1). `--schedules` and `--T` may only repeat the run's own (another schedule or T is\n"
    "  refused in one line: draw it without a run, with `--data`);\n"
    "- a continuous run (EDM / VE): x = x₀ + σ n at the noise levels `--sigmas` (default 0, then 7 levels evenly\n"
    "  spaced in log σ from max(σ_min, 0.01) to σ_max), shown in VP scale x / √(1 + σ²); a rectified-flow run\n"
    "  (`diffusion.parameterization=flow`): x_t = (1 − t) x₀ + t n with t = σ/(1 + σ), labelled with σ and t.\n"
    "  `--t`, `--schedules` and `--T` are refused for these runs (they have no timesteps);\n"
    "- a latent run (`data.latents_of`): its images are encoded by the run's autoencoder, the latents noised, and\n"
    "  each column decoded back to images.\n"
    "\n"
    "```\n"
    "torchdiffusion explain forward runs/demo --t 0 100 250 500 750 999 --out forward-demo.png\n"
    "torchdiffusion explain forward runs/edm --sigmas 0.1 0.5 1 2 5 20 80 --out forward-edm.png\n"
    "```\n"
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--toy-run", default="runs/toy")
    ap.add_argument("--img", default="docs/images", help="figure folder (files explain-<key>.png)")
    ap.add_argument("--timings", default="docs/benchmarks/explain-timings.txt", help="wall times of the commands")
    ap.add_argument("--md", default="docs/how-diffusion-works.md")
    ap.add_argument("--only", nargs="+", help="regenerate only these pictures (keys)")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    exe = [sys.executable, "-m", "torchdiffusion"]
    have = {"run": Path(args.run, "run.json").is_file(), "toy_run": Path(args.toy_run, "run.json").is_file()}
    timings: dict[str, float] = {}
    timing_file = Path(args.timings)
    if timing_file.is_file():  # keep earlier timings of pictures not regenerated now
        for line in timing_file.read_text().splitlines():
            k, v = line.split()
            timings[k] = float(v)
    Path(args.img).mkdir(parents=True, exist_ok=True)
    sections = []
    rel = Path(os.path.relpath(Path(args.img).resolve(), Path(args.md).resolve().parent)).as_posix()
    for key, title, cmd, needs, text in PICTURES:
        cmd = [c.format(run=args.run, toy_run=args.toy_run, img=args.img) for c in cmd]
        shown = "torchdiffusion " + " ".join(cmd)
        if needs and not have[needs]:
            print(f"skip {key}: {getattr(args, needs)} is not a finished run", file=sys.stderr)
            if not Path(args.img, f"explain-{key}.png").is_file():
                continue
        elif args.only is None or key in args.only:
            # the page's own earlier pictures (kept in git without their manifests, which the commands would
            # otherwise take for files of the user's and refuse to replace)
            for suffix in (".png", ".gif", ".mp4", ".json"):
                for p in (
                    Path(args.img, f"explain-{key}{suffix}"),
                    Path(args.img, f"explain-{key}{suffix}.manifest.json"),
                ):
                    p.unlink(missing_ok=True)
            t0 = time.time()
            subprocess.run(exe + cmd, check=True)
            timings[key] = time.time() - t0
            Path(args.img, f"explain-{key}.mp4").unlink(missing_ok=True)  # the page shows the GIF
            for m in Path(args.img).glob(f"explain-{key}.*.manifest.json"):  # machine paths: the page says how
                m.unlink()
            print(f"{key}: {timings[key]:.1f} s", file=sys.stderr)
        extra = ""
        if key == "trajectory" and Path(args.img, "explain-trajectory.gif").is_file():
            extra = f"\n![the denoising as a GIF]({rel}/explain-trajectory.gif)\n"
        took = f" (took {timings[key]:.0f} s wall time here)" if key in timings else ""
        sections.append(
            f"## {title}\n\n![{key}]({rel}/explain-{key}.png)\n{extra}\n{text}\n\n"
            f"Regenerate{took}:\n\n```\n{shown}\n```\n" + AFTER.get(key, "")
        )
    atomic_write(timing_file, "".join(f"{k} {v:.1f}\n" for k, v in timings.items()))
    head = (
        "# How diffusion works, in pictures\n\n"
        "Every picture on this page is the output of one `torchdiffusion explain` command on the demo run "
        f"(`{args.run}`, `torchdiffusion demo`) or, for the 2-D field, a toy run "
        f"(`torchdiffusion train --preset toy-2d --out {args.toy_run}`). The same functions are in Python: "
        "`torchdiffusion.explain` (`forward_strip`, `plot_schedules`, `denoising_trajectory`, "
        "`plot_loss_by_noise`, `plot_field`, `ablation`). The page itself is written by "
        "`python scripts/explain_figures.py`; the times are wall-clock seconds on a machine with "
        f"{os.cpu_count()} CPU cores ({cpu_name()}, {platform.machine()}, torch threads: "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}; {time.strftime('%Y-%m-%d')}), including Python start-up "
        f"(`import torch` alone took {_import_torch_seconds():.1f} s there) and loading the run.\n\n"
    )
    md = atomic_write(args.md, head + "\n".join(sections))
    print(md)
    return 0


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
