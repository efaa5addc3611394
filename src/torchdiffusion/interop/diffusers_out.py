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

**What the network computes for diffusers: x0_hat, in float64.** A pipeline hands it ``x_t`` in VP units and an
integer timestep t of our table; the network returns the run's denoiser x0_hat = D(x, sigma_t) at
x = x_t / sqrt(abar_t) (``prediction_type`` sample), computed in float64 around our float32 network (which sees
``x_t`` unchanged) and clamped to [-1, 1] when the run's sampling clamps (``sample.clip_denoised``). Why not the
raw eps: at the top of a 1000-step cosine table abar_T = 2.4e-9, and x0_hat = (x_t - sqrt(1 - abar) eps_hat) /
sqrt(abar) divides by 4.9e-5 a difference of two O(1) float32 numbers; diffusers computes it on its float32
abar table (1.3e-5 off ours there), unclamped, and on the demo such a first step sends the samples to +-thousands
(``docs/interop.md``). From x0_hat, DDIM's only work is eps_hat = (x_t - sqrt(abar) x0_hat)/sqrt(1 - abar), with
no cancellation, which is the eps our ``ddim`` re-derives from a clamped x0_hat; DDPM's posterior mean takes
x0_hat as ours does. The scheduler config is written from our process: ``trained_betas`` = our beta table,
``num_train_timesteps`` = T, ``clip_sample`` false (the network has clamped already), ``timestep_spacing`` = the
run's ``sample.spacing``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import ConfigMixin, DDIMPipeline, DDPMPipeline, DDPMScheduler, ModelMixin  # noqa: F401 (see below)
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import Tensor

from ..config import from_json, to_json, validate, without_guide
from ..generate import LoadedRun
from ..model import build_model
from ..process import ve_to_vp, vp_to_ve
from ..types import append_dims

# (ModelMixin and ConfigMixin must be names of this module: diffusers finds the loading method of a component
# by looking its base classes up in the component's module.)

# the parameterizations of a DDPM table the export covers, with the prediction_type their raw output would be
PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


class ExportError(ValueError):
    """A run that diffusers' pipelines cannot express; one line for the user."""


class TorchdiffusionUNet(ModelMixin, ConfigMixin):
    """Our network behind diffusers' ``UNet2DModel`` call: ``unet(x_t, t).sample`` = the run's x0_hat
    (``prediction_type`` sample) for VP-scaled ``x_t`` at timestep(s) ``t`` of the run's DDPM table.

    Config: ``run_config`` (the run's whole config.json, as a dict), ``data_shape`` ``[C, H, W]``, and the two
    keys pipelines read to draw their starting noise, ``in_channels`` and ``sample_size`` (``[H, W]``).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, run_config: dict, data_shape: list[int], in_channels: int, sample_size: list[int]):
        super().__init__()
        cfg = validate(from_json(json.dumps(run_config)))
        self.denoiser = build_model(cfg, tuple(int(s) for s in data_shape))
        self.clip = bool(cfg.sample.clip_denoised)  # the run's own clamping of x0_hat (generate.clamped)

    def forward(
        self, sample: Tensor, timestep: Tensor | int, class_labels: Tensor | None = None, return_dict: bool = True
    ) -> UNet2DOutput | tuple[Tensor]:
        """sample: (B, C, H, W) = x_t in VP units; timestep: scalar or (B,) (a fractional t interpolates
        log sigma); class_labels: (B,) for a class-conditional run (None = the null class). Returns the run's
        x0_hat = D(x_t / sqrt(abar_t), sigma_t) (``prediction_type`` sample), clamped to [-1, 1] when the run's
        sampling clamps (``sample.clip_denoised``), in ``sample``'s dtype."""
        D = self.denoiser
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        whole = not t.is_floating_point() or bool((t == t.round()).all())
        sigma = D.process.sigmas[t.long().cpu()] if whole else D.process.t_to_sigma(t.cpu())  # float64
        sigma = sigma.to(sample.device)
        cond = None if class_labels is None else {"class": class_labels}
        # float64 around the float32 network: x_t reaches the network unchanged, and D = c_skip x + c_out F
        # keeps its digits at sigma_T ~ 2e4, where x and sigma F agree to ~1e-4 of their size
        x0 = D(vp_to_ve(sample.to(torch.float64), sigma), sigma, cond)
        if self.clip:
            x0 = x0.clamp(-1, 1)
        x0 = x0.to(sample.dtype)
        return UNet2DOutput(sample=x0) if return_dict else (x0,)


def check_exportable(run: LoadedRun) -> None:
    """Refuse (one line) a run that DDPMPipeline/DDIMPipeline cannot run."""
    cfg = run.config
    limit = cfg.objective.max_steps
    if limit > 0:  # a student: its few steps are its own sampler on its own grid (grids/), no scheduler's timesteps
        raise ExportError(
            f"{run.path} is a student distilled ({cfg.objective.name}) to sample in at most {limit} steps with "
            f"{cfg.sample.sampler} on its own grid, which diffusers' DDPM/DDIM pipelines do not carry (they would "
            "step it like a full diffusion model); export it with --format onnx instead"
        )
    if cfg.objective.name == "consistency_training":  # f(x, sigma) jumps to the ODE's end: its own sampler's rule
        raise ExportError(
            f"{run.path} is a consistency model (consistency training), sampled by its own consistency rule "
            f"({cfg.sample.sampler}: jump to x0, re-noise), which diffusers' DDPM/DDIM pipelines do not carry (they "
            "would take its output for a denoiser's); export it with --format onnx instead"
        )
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
        prediction_type="sample",  # the network returns the run's x0_hat (TorchdiffusionUNet.forward)
        variance_type="fixed_small",  # beta~: our ddpm sampler's default "posterior" variance
        clip_sample=False,
        timestep_spacing=run.config.sample.spacing,
        steps_offset=0,
    )


def unet_for(run: LoadedRun) -> TorchdiffusionUNet:
    """The run's network, with its weights, as a diffusers model."""
    C, H, W = (int(s) for s in run.data_shape)
    unet = TorchdiffusionUNet(
        run_config=json.loads(to_json(without_guide(run.config))),  # the export carries no guide model
        data_shape=[C, H, W],
        in_channels=C,
        sample_size=[H, W],
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


DIFFERENCE_OF = "max |unet(x_t, t) - x0_hat_run(x_t, t)| of the reloaded pipeline's network over the table ="


@torch.no_grad()
def max_difference(run: LoadedRun, folder: Path) -> float:
    """Reload the folder with DDIMPipeline and compare its unet's x0_hat with the run's denoiser (float64 around
    its network, clamped as the run samples) on 8 noisy inputs at 8 timesteps spread over the table."""
    pipe = load_pipeline(folder)
    process, B = run.model.process, 8
    t = torch.linspace(0, process.T - 1, B).round().long()
    sigma = process.sigmas[t]
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((B, *run.data_shape), generator=g) * 2 - 1
    x_t = ve_to_vp(x0 + append_dims(sigma.float(), 4) * torch.randn(x0.shape, generator=g), sigma.float())
    theirs = pipe.unet(x_t, t).sample
    ours = run.model(vp_to_ve(x_t.double(), sigma), sigma)
    ours = ours.clamp(-1, 1) if run.config.sample.clip_denoised else ours
    return float((theirs - ours.float()).abs().max())


@torch.no_grad()
def sample_like_pipeline(
    run: LoadedRun,
    sampler: str,
    steps: int,
    batch: int,
    seed: int,
    spacing: str = "leading",
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Our ``ddim`` or ``ddpm`` sampler run the way ``DDIMPipeline``/``DDPMPipeline(batch_size=batch,
    generator=torch.Generator().manual_seed(seed), num_inference_steps=steps)`` runs: the grid of the
    scheduler's timesteps (``uniform_t`` with its ``timestep_spacing``), the starting noise and every step's
    noise drawn from one generator in the pipeline's order, x0_hat clamped as the run samples
    (``sample.clip_denoised``, as the exported network does), the result clamped to [-1, 1]. ``dtype``: the
    sampler's state, by default ``generate.state_dtype`` (float64) as ``generate`` runs it; the network runs
    in float32 either way. Returns (B, C, H, W) float32."""
    from ..generate import clamped, make_sigmas, state_dtype
    from ..samplers import get_sampler

    dt = dtype or state_dtype(torch.device("cpu"))
    shape = (batch, *run.data_shape)
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(shape, generator=g)  # x_T in VP units, as the pipeline draws it (float32)
    sigmas = make_sigmas("uniform_t", steps, 0.0, 0.0, discrete_sigmas=run.model.process.sigmas, spacing=spacing)
    x = vp_to_ve(start.to(dt), sigmas[:1].to(dt).expand(batch))
    D = run.model.bind(None)
    D = clamped(D) if run.config.sample.clip_denoised else D
    noise = lambda: torch.randn(shape, generator=g).to(dt)  # noqa: E731 (the pipeline's draws)
    return get_sampler(sampler)(D, x, sigmas, noise=noise).clamp(-1, 1).float()


def pipeline_samples(pipe, steps: int, batch: int, seed: int) -> Tensor:
    """A pipeline's samples before its output scaling: (B, C, H, W) in [-1, 1] (it returns (x + 1)/2 as NHWC)."""
    images = pipe(
        batch_size=batch, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps, output_type="np"
    ).images
    return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
