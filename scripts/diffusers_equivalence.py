"""Our sampler on a diffusers folder loaded by ``load_run``, against diffusers' own DDIM (and Euler), in fp32.

    python scripts/diffusers_equivalence.py            # prints max |ours - diffusers| per case (a few seconds)

Each case builds a small U-Net with seeded random weights and a scheduler config, saves them with
``save_pretrained`` into a temporary folder, and samples 10 steps from the same unit noise z two ways: diffusers
(``DDIMPipeline`` with eta = 0; for class-conditional models, and for the Euler scheduler, the scheduler loop by
hand, with ``class_labels``, as the pipeline takes no labels) and ours (``load_run`` -> the run's ``uniform_t`` grid
at the scheduler's timestep spacing -> the run's sampler, ``ddim`` for DDIMScheduler and ``euler`` for
EulerDiscreteScheduler, from diffusers' starting point in VE units: x = z / sqrt(abar_t) for DDIM's z). Compared is
the sample before the pipeline's ``(x / 2 + 0.5).clamp(0, 1)``. ``tests/test_diffusers_in.py`` runs the same cases.

``linspace`` is compared with Euler: diffusers' ``DDIMScheduler.step`` jumps to t - T/n, which with ``linspace`` is
not the next timestep it evaluates, while its Euler scheduler (the same step as DDIM with eta = 0, in sigma) steps
between the grid's own timesteps, as ours do.

The eps case uses a linear schedule that ends at beta = 2e-3: a random eps network on a full-range schedule
returns samples of size ~200 (x0_hat = (x_vp - sqrt(1 - abar) eps_hat)/sqrt(abar) with abar_T ~ 4e-5), where one
float32 ulp is already 1.5e-5; the relative difference is printed for that case too (``eps, full range``).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

STEPS = 10
SHAPE = (2, 1, 8, 8)  # (B, C, H, W) of the comparison
# name -> (U-Net class, num_class_embeds, scheduler class, scheduler config)
CASES = {
    "eps": ("UNet2DModel", 0, "DDIMScheduler", {"prediction_type": "epsilon", "beta_end": 0.002}),
    "v": ("UNet2DModel", 0, "DDIMScheduler", {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}),
    "class (UNet2DModel)": ("UNet2DModel", 4, "DDIMScheduler", {"prediction_type": "v_prediction"}),
    "class (UNet2DConditionModel)": (
        "UNet2DConditionModel",
        4,
        "DDIMScheduler",
        {"prediction_type": "sample", "beta_schedule": "scaled_linear", "beta_start": 8.5e-4, "beta_end": 0.012}
        | {"steps_offset": 1},
    ),
    "eps, linspace (Euler)": (
        "UNet2DModel",
        0,
        "EulerDiscreteScheduler",
        {"prediction_type": "epsilon", "beta_end": 0.002, "timestep_spacing": "linspace"},
    ),
    "eps, full range": ("UNet2DModel", 0, "DDIMScheduler", {"prediction_type": "epsilon"}),
}


def make_unet(cls_name: str, num_classes: int, seed: int = 0):
    """A tiny diffusers U-Net (8x8, widths 8 and 16) with seeded random weights."""
    import diffusers

    torch.manual_seed(seed)
    common = dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_classes or None,
    )
    if cls_name == "UNet2DConditionModel":  # no cross-attention blocks: class labels are its only conditioning
        return diffusers.UNet2DConditionModel(**common, mid_block_type=None, cross_attention_dim=8)
    return diffusers.UNet2DModel(**common)


def make_folder(out: Path, case: str) -> Path:
    """``out``: a ``save_pretrained`` pipeline folder (model_index.json + unet/ + scheduler/) for one case."""
    import diffusers

    cls_name, num_classes, sched_name, sched = CASES[case]
    unet = make_unet(cls_name, num_classes)
    if sched_name == "DDIMScheduler":
        scheduler = diffusers.DDIMScheduler(clip_sample=False, **sched)
        diffusers.DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out)
    else:  # DDPMPipeline keeps the scheduler it is given (DDIMPipeline turns every one into DDIM)
        scheduler = getattr(diffusers, sched_name)(**sched)
        diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out)
    return out


def labels_for(case: str) -> torch.Tensor | None:
    return torch.arange(SHAPE[0]) % CASES[case][1] if CASES[case][1] else None


def diffusers_sample(folder: Path, case: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_T, x0) of diffusers, x_T in VE units: DDIMPipeline (eta = 0), or the scheduler loop by hand (with class
    labels). DDIM's samples are VP (x_T = z, i.e. x = z / sqrt(abar_t) at its first timestep); Euler's are VE."""
    import diffusers

    g = torch.Generator().manual_seed(seed)
    labels = labels_for(case)
    cls_name, _, sched_name, _ = CASES[case]
    if labels is None and sched_name == "DDIMScheduler":
        pipe = diffusers.DDIMPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        seen = []
        step = pipe.scheduler.step

        def recording_step(model_output, timestep, sample, *args, **kwargs):
            seen.append(sample.clone())  # the first call sees the pipeline's starting noise
            out = step(model_output, timestep, sample, *args, **kwargs)
            seen.append(out.prev_sample)
            return out

        pipe.scheduler.step = recording_step
        images = pipe(batch_size=SHAPE[0], generator=g, num_inference_steps=STEPS, eta=0.0, output_type="np").images
        x0 = seen[-1]
        # the pipeline's output is this sample, scaled to [0, 1]: what we compare is what it returns
        assert torch.allclose(torch.from_numpy(images), (x0 / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))
        return seen[0] / pipe.scheduler.alphas_cumprod[pipe.scheduler.timesteps[0]].double().sqrt(), x0
    unet = getattr(diffusers, cls_name).from_pretrained(folder / "unet")
    sched = getattr(diffusers, sched_name).from_pretrained(folder / "scheduler")
    sched.set_timesteps(STEPS)
    z = torch.randn(SHAPE, generator=g)
    extra = {"encoder_hidden_states": None} if cls_name == "UNet2DConditionModel" else {}
    step = {"eta": 0.0} if sched_name == "DDIMScheduler" else {}
    x = x_T = z * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(sched.scale_model_input(x, t), t, class_labels=labels, **extra).sample
            x = sched.step(out, t, x, **step).prev_sample
    if sched_name == "DDIMScheduler":
        x_T = x_T / sched.alphas_cumprod[sched.timesteps[0]].double().sqrt()
    return x_T, x


def ours_sample(folder: Path, case: str, x_T: torch.Tensor) -> torch.Tensor:
    """The run's own sampler (ddim, eta = 0; euler) on its own grid, from diffusers' starting point x_T (VE)."""
    from torchdiffusion.generate import clamps_x0, load_run, make_grid_sigmas
    from torchdiffusion.samplers import get_sampler

    run = load_run(folder)
    sample = replace(run.config.sample, steps=STEPS)
    sigmas = make_grid_sigmas(run.model, sample, clamped=clamps_x0(sample, run.data_shape, run.codec))
    labels = labels_for(case)
    D = run.model.bind({"class": labels} if labels is not None else None)
    return get_sampler(run.config.sample.sampler)(D, x_T.float(), sigmas)


def compare(case: str, root: Path) -> tuple[float, float, float]:
    """(max |ours - diffusers|, the same divided by max |diffusers|, max |diffusers|) for one case."""
    folder = make_folder(root / case.replace(" ", "_").replace("(", "").replace(")", "").replace(",", ""), case)
    x_T, ref = diffusers_sample(folder, case)
    ours = ours_sample(folder, case, x_T)
    diff = float((ours - ref).abs().max())
    return diff, diff / float(ref.abs().max()), float(ref.abs().max())


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # the pipeline's notes on optional packages
    diffusers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'case':<30} {'max abs diff':>14} {'relative':>10} {'max |x|':>9}")
        for case in CASES:
            diff, rel, size = compare(case, Path(tmp))
            print(f"{case:<30} {diff:>14.2e} {rel:>10.1e} {size:>9.3g}")


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
