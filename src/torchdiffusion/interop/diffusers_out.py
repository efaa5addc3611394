"""Export a run as a diffusers pipeline folder (the ``save_pretrained`` layout) that ``DDPMPipeline`` and
``DDIMPipeline`` load and run.

    import torchdiffusion.interop.diffusers_out  # registers the network class with this process
    from diffusers import DDIMPipeline
    pipe = DDIMPipeline.from_pretrained("runs/demo-diffusers")
    images = pipe(batch_size=16, num_inference_steps=20, output_type="np").images

**Why our network ships as a diffusers model class, not as ``UNet2DModel``.** Our U-Net and diffusers'
coincide block for block (scale-shift residual blocks whose ``time_emb_proj`` are row slices of our one shared
embedding projection, the same attention, down/up-sampling and GroupNorm), but not in the noise embedding: ours
is ``max(2 C, 128)`` sinusoids spread geometrically over [1/2000, 64] rad per unit of c_noise (``nets/layers.py``);
diffusers' ``Timesteps`` has ``C`` of them (``block_out_channels[0]``) over [1e-4, 1]. No choice of
``freq_shift``/``flip_sin_to_cos`` gives our frequencies, and ``C`` features cannot carry ``2 C`` (the demo:
32 vs 128). So the mapping would not be exact for any preset. Instead the folder names our network,
:class:`TorchdiffusionUNet` (a diffusers ``ModelMixin`` + ``ConfigMixin``), as
``["torchdiffusion.interop.diffusers_out", "TorchdiffusionUNet"]`` in ``model_index.json``; its config is the
run's whole ``config.json``, its weights our network's, as safetensors. Nothing is downloaded or trusted from
the folder: diffusers (>= 0.40) resolves a component of another library from the modules the process has
imported, so import this module before ``from_pretrained``.

**What the network computes for diffusers.** A pipeline hands it ``x_t`` in VP units and an integer timestep t
of our table; with sigma_t = sqrt((1 - abar_t)/abar_t), ``x_t`` is exactly ``c_in(sigma_t) x`` of our
preconditioning for the eps, x0 and v parameterizations (``precond.py``), so the network's raw output ``F`` is
already what diffusers expects for ``prediction_type`` epsilon, sample and v_prediction. The scheduler config
is written from our process: ``trained_betas`` = our beta table, ``num_train_timesteps`` = T, ``clip_sample``
false (our clamping of x0_hat is a sampling choice, and diffusers' DDIM would clip without re-deriving eps from
the clipped x0, which ours does), ``timestep_spacing`` = the run's ``sample.spacing``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import ConfigMixin, DDIMPipeline, DDPMPipeline, DDPMScheduler, ModelMixin  # noqa: F401 (see below)
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import Tensor

from ..config import from_json, to_json, validate
from ..generate import LoadedRun
from ..model import build_model
from ..process import ve_to_vp
from ..types import append_dims

# (ModelMixin and ConfigMixin must be names of this module: diffusers finds the loading method of a component
# by looking its base classes up in the component's module.)

# our parameterization -> diffusers' prediction_type (the network's raw output is that quantity)
PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


class ExportError(ValueError):
    """A run that diffusers' pipelines cannot express; one line for the user."""


class TorchdiffusionUNet(ModelMixin, ConfigMixin):
    """Our network behind diffusers' ``UNet2DModel`` call: ``unet(x_t, t).sample`` = the prediction of
    ``prediction_type`` for VP-scaled ``x_t`` at timestep(s) ``t`` of the run's DDPM table.

    Config: ``run_config`` (the run's whole config.json, as a dict), ``data_shape`` ``[C, H, W]``, and the two
    keys pipelines read to draw their starting noise, ``in_channels`` and ``sample_size`` (``[H, W]``).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, run_config: dict, data_shape: list[int], in_channels: int, sample_size: list[int]):
        super().__init__()
        cfg = validate(from_json(json.dumps(run_config)))
        self.denoiser = build_model(cfg, tuple(int(s) for s in data_shape))

    def forward(
        self, sample: Tensor, timestep: Tensor | int, class_labels: Tensor | None = None, return_dict: bool = True
    ) -> UNet2DOutput | tuple[Tensor]:
        """sample: (B, C, H, W) = x_t in VP units; timestep: scalar or (B,) (a fractional t interpolates
        log sigma); class_labels: (B,) for a class-conditional run (None = the null class)."""
        D = self.denoiser
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        table = D.process.sigmas.to(sample.device)
        sigma = table[t.long()] if not t.is_floating_point() or bool((t == t.round()).all()) else None
        if sigma is None:
            sigma = D.process.t_to_sigma(t)
        sigma = sigma.to(torch.promote_types(sample.dtype, torch.float32))  # as Precond.forward casts it
        cond = None if class_labels is None else {"class": class_labels}
        F = D.net(sample, D.c_noise(sigma), cond)  # x_t = c_in(sigma) x for eps, x0 and v (precond.py table)
        return UNet2DOutput(sample=F) if return_dict else (F,)


def check_exportable(run: LoadedRun) -> None:
    """Refuse (one line) a run that DDPMPipeline/DDIMPipeline cannot run."""
    cfg = run.config
    if run.model.process is None:
        raise ExportError(
            f"{run.path} was trained on continuous sigma ({cfg.diffusion.parameterization}); diffusers' DDPM/DDIM "
            "schedulers need a discrete DDPM process (export it with --format onnx instead)"
        )
    if cfg.diffusion.parameterization not in PREDICTION_TYPES:
        raise ExportError(
            f"{run.path} predicts {cfg.diffusion.parameterization!r}; diffusers' schedulers take epsilon, sample "
            "or v_prediction (parameterization eps, x0 or v; export it with --format onnx instead)"
        )
    if len(run.data_shape) != 3:
        raise ExportError(
            f"{run.path} holds {run.kind} data shaped {tuple(run.data_shape)}; diffusers' image pipelines need "
            "(C, H, W) images"
        )


def scheduler_for(run: LoadedRun) -> DDPMScheduler:
    """The DDPM scheduler of the run's process (DDIMPipeline turns it into a DDIMScheduler on loading)."""
    process = run.model.process
    return DDPMScheduler(
        num_train_timesteps=process.T,
        trained_betas=process.betas.tolist(),  # beta_t = 1 - abar_t / abar_{t-1} of our table
        prediction_type=PREDICTION_TYPES[run.config.diffusion.parameterization],
        variance_type="fixed_small",  # beta~: our ddpm sampler's default "posterior" variance
        clip_sample=False,
        timestep_spacing=run.config.sample.spacing,
        steps_offset=0,
    )


def unet_for(run: LoadedRun) -> TorchdiffusionUNet:
    """The run's network, with its weights, as a diffusers model."""
    C, H, W = (int(s) for s in run.data_shape)
    unet = TorchdiffusionUNet(
        run_config=json.loads(to_json(run.config)), data_shape=[C, H, W], in_channels=C, sample_size=[H, W]
    )
    unet.denoiser.load_state_dict(run.model.state_dict(), strict=True)
    return unet.eval().requires_grad_(False)


def write(run: LoadedRun, folder: Path) -> Path:
    """Write ``DDPMPipeline(unet, scheduler).save_pretrained(folder)``."""
    check_exportable(run)
    pipe = DDPMPipeline(unet=unet_for(run), scheduler=scheduler_for(run))
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def load_pipeline(folder: Path, kind: str = "ddim") -> DDIMPipeline | DDPMPipeline:
    """``DDIMPipeline`` or ``DDPMPipeline.from_pretrained(folder)``, quietly (no loading bar, no notices)."""
    from diffusers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        pipe = {"ddim": DDIMPipeline, "ddpm": DDPMPipeline}[kind].from_pretrained(str(folder))
    finally:
        logging.enable_progress_bar()
        logging.set_verbosity(verbosity)
    pipe.set_progress_bar_config(disable=True)
    return pipe


DIFFERENCE_OF = "max |unet(x_t, t) - F_run(x_t, t)| of the reloaded pipeline's network over the table ="


@torch.no_grad()
def max_difference(run: LoadedRun, folder: Path) -> float:
    """Reload the folder with DDIMPipeline and compare its unet's prediction with the run's network on 8 noisy
    inputs at 8 timesteps spread over the table."""
    pipe = load_pipeline(folder)
    process, B = run.model.process, 8
    t = torch.linspace(0, process.T - 1, B).round().long()
    sigma = process.sigmas[t].float()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((B, *run.data_shape), generator=g) * 2 - 1
    x_t = ve_to_vp(x0 + append_dims(sigma, 4) * torch.randn(x0.shape, generator=g), sigma)
    theirs = pipe.unet(x_t, t).sample
    return float((theirs - run.model.net(x_t, run.model.c_noise(sigma))).abs().max())


@torch.no_grad()
def sample_like_pipeline(
    run: LoadedRun,
    sampler: str,
    steps: int,
    batch: int,
    seed: int,
    spacing: str = "leading",
    dtype: torch.dtype = torch.float32,
    draw_dtype: torch.dtype | None = None,
) -> Tensor:
    """Our ``ddim`` or ``ddpm`` sampler run the way ``DDIMPipeline``/``DDPMPipeline(batch_size=batch,
    generator=torch.Generator().manual_seed(seed), num_inference_steps=steps)`` runs: the grid of the
    scheduler's timesteps (``uniform_t`` with its ``timestep_spacing``), the starting noise and every step's
    noise drawn from one generator in the pipeline's order, no clamping of x0_hat, the result clamped to
    [-1, 1]. ``dtype``: float32, or float64 (the network in float64 too, as ``pipe.to(torch.float64)``);
    ``draw_dtype``: the dtype the noise is drawn in (default ``dtype``, as the pipeline draws it; float32 with
    ``dtype`` float64 gives the float64 solution from the float32 run's noise). Returns (B, C, H, W)."""
    import copy

    from ..generate import make_sigmas
    from ..process import vp_to_ve
    from ..samplers import get_sampler

    model = run.model if dtype == torch.float32 else copy.deepcopy(run.model).to(dtype)
    shape = (batch, *run.data_shape)
    g = torch.Generator().manual_seed(seed)
    draw = dtype if draw_dtype is None else draw_dtype
    start = torch.randn(shape, generator=g, dtype=draw).to(dtype)  # x_T in VP units, as the pipeline draws it
    sigmas = make_sigmas("uniform_t", steps, 0.0, 0.0, discrete_sigmas=run.model.process.sigmas, spacing=spacing)
    x = vp_to_ve(start, sigmas[:1].to(dtype).expand(batch))
    noise = lambda: torch.randn(shape, generator=g, dtype=draw).to(dtype)  # noqa: E731 (the pipeline's draws)
    return get_sampler(sampler)(model.bind(None), x, sigmas, noise=noise).clamp(-1, 1)


def pipeline_samples(pipe, steps: int, batch: int, seed: int) -> Tensor:
    """A pipeline's samples before its output scaling: (B, C, H, W) in [-1, 1] (it returns (x + 1)/2 as NHWC)."""
    images = pipe(
        batch_size=batch, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps, output_type="np"
    ).images
    return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
