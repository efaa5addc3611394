"""Drive diffusers' schedulers (an optional dev extra) on any of our denoisers, as a DDPM-trained model.

diffusers' schedulers expect an epsilon-prediction network on a discrete VP table (here T = 1000, linear beta
from 1e-4 to 0.02, at the timestep spacing asked for: leading, trailing or linspace). We give them exactly
that, built from the denoiser with the conversions of :mod:`torchdiffusion.process`: at timestep t
(fractional for Karras-sigma schedulers), sigma_t from the table, x = vp_to_ve(x_vp, sigma_t),
eps = (x - D(x, sigma_t)) / sigma_t. Every call of the network is counted; a scheduler gets the largest number
of inference steps whose calls fit the NFE budget.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..process import DiscreteVP, vp_to_ve
from ..types import Denoiser

# name -> (diffusers class name, extra config). clip_sample=False: the data are not images in [-1, 1].
SCHEDULERS = {
    "DDPM": ("DDPMScheduler", {"clip_sample": False}),
    "DDIM": ("DDIMScheduler", {"clip_sample": False}),
    "DPMSolverMultistep": ("DPMSolverMultistepScheduler", {}),
    "DPMSolverMultistep+karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "UniPCMultistep": ("UniPCMultistepScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
}


def available() -> bool:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False
    return True


def make_scheduler(name: str, T: int = 1000, spacing: str = "trailing"):
    import diffusers

    cls_name, extra = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    return cls(
        num_train_timesteps=T,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        timestep_spacing=spacing,
        **extra,
    )


def eps_model(denoise: Denoiser, process: DiscreteVP) -> Callable[[Tensor, Tensor], Tensor]:
    """eps(x_vp, t) of a DDPM model whose denoiser is ``denoise`` (t: scalar timestep, maybe fractional)."""

    def eps(x_vp: Tensor, t: Tensor) -> Tensor:
        sigma = process.t_to_sigma(torch.as_tensor(t, dtype=torch.float64).reshape(1)).expand(x_vp.shape[0])
        x = vp_to_ve(x_vp.to(torch.float64), sigma)
        D = denoise(x, sigma).to(torch.float64)
        return ((x - D) / sigma.reshape((-1,) + (1,) * (x.ndim - 1))).to(x_vp.dtype)

    return eps


def steps_for_budget(name: str, nfe: int, spacing: str = "trailing") -> int:
    """The largest num_inference_steps whose number of network calls is <= nfe."""
    best = 1
    for steps in range(1, nfe + 1):
        s = make_scheduler(name, spacing=spacing)
        s.set_timesteps(steps)
        if len(s.timesteps) <= nfe:
            best = steps
    return best


def sample_diffusers(
    name: str,
    denoise: Denoiser,
    shape: tuple[int, ...],
    nfe: int,
    seed: int,
    process: DiscreteVP | None = None,
    z: Tensor | None = None,
    spacing: str = "trailing",
) -> tuple[Tensor, int]:
    """(n, *shape) samples from diffusers' scheduler ``name`` within ``nfe`` calls; returns (x0, calls).

    ``z``: the unit starting noise (n, *shape); pass the one our samplers use so that both start from the same
    points (the mode each sample lands in then agrees, and the comparison is not dominated by sampling noise).

    Samples come back in VE units (the same as x_vp at t = 0 up to sqrt(1 + sigma_min^2) ~ 1)."""
    process = process or DiscreteVP("linear", T=1000)
    sched = make_scheduler(name, T=process.T, spacing=spacing)
    sched.set_timesteps(steps_for_budget(name, nfe, spacing))
    g = torch.Generator().manual_seed(seed)
    if z is None:
        z = torch.randn(shape, generator=g, dtype=torch.float32)
    x = z.to(torch.float32) * float(sched.init_noise_sigma)
    model = eps_model(denoise, process)
    calls = 0
    import inspect

    takes_generator = "generator" in inspect.signature(sched.step).parameters
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        eps = model(inp, t)
        calls += 1
        kw = {"generator": g} if takes_generator else {}
        x = sched.step(eps, t, x, **kw).prev_sample
    return x, calls
