"""A diffusers model folder on local disk, loaded as one of our runs (``load_run`` calls this).

    run = load_run("ddpm-folder")      # model_index.json + unet/ + scheduler/  (save_pretrained layout)
    run = load_run("ddpm-folder/unet") # a bare unet folder, its scheduler config beside it or in ../scheduler/

A diffusers U-Net ``F(x_vp, t)`` predicts eps, v or x0 at an integer timestep t of its scheduler's table
abar_t (``alphas_cumprod``). That is exactly our :class:`~torchdiffusion.precond.Precond` with ``timestep``
noise conditioning over ``DiscreteVP.from_alpha_bars(abar)``:

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(x / sqrt(1 + sigma^2), t(sigma)),
    sigma_t = sqrt((1 - abar_t) / abar_t),

so every sampler, wrapper and metric runs on it unchanged. The table comes from diffusers' own scheduler class
(``beta_schedule`` linear / scaled_linear / squaredcos_cap_v2, ``trained_betas``, ``num_train_timesteps``); the
``uniform_t`` grid at the scheduler's ``timestep_spacing`` (and ``steps_offset``) visits the timesteps its
``set_timesteps`` chooses. Class-conditional models (``num_class_embeds``) take our ``{"class"}`` conditioning as
``class_labels``. Nothing is downloaded; weights are read from safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, SampleConfig, SamplerSettings, validate
from ..io import first_line
from ..precond import Precond
from ..process import DiscreteVP

# diffusers scheduler class -> the sampler of ours that takes the same steps (the resolved config's default)
SCHEDULERS = {
    "DDPMScheduler": "ddpm",
    "DDIMScheduler": "ddim",
    "PNDMScheduler": "lms",
    "LMSDiscreteScheduler": "lms",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_ancestral",
    "HeunDiscreteScheduler": "heun",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
    "UniPCMultistepScheduler": "unipc",
}
# diffusers prediction_type -> our parameterization (precond.py)
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
UNETS = ("UNet2DModel", "UNet2DConditionModel")
SPACINGS = ("leading", "trailing", "linspace")
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def _error(msg: str) -> Exception:
    from ..generate import RunError

    return RunError(msg)


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _error(f"{path} is damaged (not readable JSON: {first_line(e)})") from None
    if not isinstance(d, dict):
        raise _error(f"{path} is damaged (it must hold a JSON object)")
    return d


def is_diffusers_folder(path: str | Path) -> bool:
    """A ``save_pretrained`` pipeline folder (model_index.json or unet/config.json) or a bare model folder (a
    config.json naming a diffusers ``_class_name``); our run folders have neither."""
    path = Path(path)
    if (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file():
        return True
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "_class_name" in json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return False  # load_run reports the damaged file


def unet_folder(path: Path) -> Path:
    """The U-Net folder of a pipeline folder (``unet/``) or a bare unet folder; a pipeline whose samples need
    more than the U-Net (a latent pipeline's autoencoder, a text encoder) is refused."""
    pipeline = (path / "model_index.json").is_file() or (path / "unet").is_dir()
    if (path / "model_index.json").is_file():
        index = _read_json(path / "model_index.json")
        extra = [
            k for k in ("vae", "vqvae", "text_encoder") if isinstance(index.get(k), list) and index[k][:1] != [None]
        ]
        if extra:
            raise _error(
                f"{path} is a pipeline with {', '.join(extra)}: only pixel-space U-Net pipelines are supported"
            )
    unet_dir = path / "unet" if pipeline else path
    if not (unet_dir / "config.json").is_file():
        raise _error(f"{path} is not a complete diffusers folder: {unet_dir / 'config.json'} is missing")
    return unet_dir


def scheduler_file(path: Path, unet_dir: Path) -> Path:
    """The scheduler config: ``scheduler/scheduler_config.json``, or beside a bare unet folder's config, or in
    ``../scheduler/`` of a pipeline's ``unet/`` folder given alone."""
    candidates = [path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json"]
    if unet_dir == path:
        candidates.append(path.parent / "scheduler" / "scheduler_config.json")
    for c in candidates:
        if c.is_file():
            return c
    raise _error(f"{path} has no scheduler config (looked for {', '.join(str(c) for c in candidates)})")


def _scheduler_classes() -> dict:
    import diffusers

    return {
        "DDPMScheduler": diffusers.DDPMScheduler,
        "DDIMScheduler": diffusers.DDIMScheduler,
        "PNDMScheduler": diffusers.PNDMScheduler,
        "LMSDiscreteScheduler": diffusers.LMSDiscreteScheduler,
        "EulerDiscreteScheduler": diffusers.EulerDiscreteScheduler,
        "EulerAncestralDiscreteScheduler": diffusers.EulerAncestralDiscreteScheduler,
        "HeunDiscreteScheduler": diffusers.HeunDiscreteScheduler,
        "DPMSolverMultistepScheduler": diffusers.DPMSolverMultistepScheduler,
        "UniPCMultistepScheduler": diffusers.UniPCMultistepScheduler,
    }


def read_scheduler(file: Path) -> tuple[DiscreteVP, dict]:
    """The process (abar_t table, steps_offset) of a scheduler config, and its settings that matter to us
    (class, prediction_type, timestep_spacing, clip_sample, ...), defaults filled in by diffusers' class."""
    raw = _read_json(file)
    name = raw.get("_class_name")
    if name not in SCHEDULERS:
        raise _error(f"{file}: scheduler {name!r} is not supported; supported: {', '.join(SCHEDULERS)}")
    try:
        sched = _scheduler_classes()[name].from_config(raw)
    except Exception as e:  # diffusers raises NotImplementedError, ValueError, TypeError... for a bad config
        msg = first_line(e)
        raise _error(f"{file} is not a usable {name} config ({msg})") from None
    c = dict(sched.config)
    if c.get("prediction_type") not in PREDICTION_TYPES:
        raise _error(
            f"{file}: prediction_type {c.get('prediction_type')!r} is not supported; "
            f"choose from {', '.join(PREDICTION_TYPES)}"
        )
    # x0_hat clipping we cannot do as the scheduler does: refused rather than sampled another way without a word
    if c.get("thresholding"):
        raise _error(f"{file}: thresholding=True (dynamic thresholding of x0_hat) is not supported")
    if c.get("clip_sample") and c.get("clip_sample_range", 1.0) != 1.0:
        raise _error(
            f"{file}: clip_sample_range={c['clip_sample_range']} is not supported (x0_hat is clipped to [-1, 1] or "
            "not at all)"
        )
    spacing = c.get("timestep_spacing", "leading")
    if spacing not in SPACINGS:
        raise _error(f"{file}: timestep_spacing {spacing!r} is not supported; choose from {', '.join(SPACINGS)}")
    try:
        process = DiscreteVP.from_alpha_bars(
            sched.alphas_cumprod, name=f"diffusers {c.get('beta_schedule')}", steps_offset=c.get("steps_offset", 0)
        )
    except ValueError as e:
        raise _error(f"{file}: its noise table is unusable ({e})") from None
    keys = ("prediction_type", "beta_schedule", "beta_start", "beta_end", "num_train_timesteps", "steps_offset")
    keys += ("clip_sample", "clip_sample_range", "set_alpha_to_one", "thresholding", "variance_type")
    settings = {"class": name, "file": str(file), "timestep_spacing": spacing}
    settings |= {k: c[k] for k in keys if k in c}
    settings["trained_betas"] = c.get("trained_betas") is not None
    return process, settings


def _check_unet_config(file: Path) -> str:
    """The U-Net class named by a config, refused when it needs inputs we cannot give (text, added embeddings)."""
    raw = _read_json(file)
    name = raw.get("_class_name")
    if name not in UNETS:
        raise _error(f"{file}: model class {name!r} is not supported; a {' or '.join(UNETS)} folder is")
    size = raw.get("sample_size")
    if size is None:
        raise _error(f"{file} has no sample_size: the image size of the model is unknown")
    sizes = size if isinstance(size, list) else [size]
    if len(sizes) not in (1, 2) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
        raise _error(f"{file}: sample_size must be a size >= 1 or [height, width], got {size!r}")
    if name == "UNet2DConditionModel":
        blocks = [*raw.get("down_block_types", ()), *raw.get("up_block_types", ()), raw.get("mid_block_type") or ""]
        if any("CrossAttn" in str(b) for b in blocks) or raw.get("addition_embed_type") or raw.get("encoder_hid_dim"):
            raise _error(
                f"{file}: the model takes text embeddings (cross-attention); only class conditioning is supported"
            )
    if raw.get("class_embed_type") is not None:
        raise _error(f"{file}: class_embed_type {raw['class_embed_type']!r} is not supported (num_class_embeds is)")
    return name


def _load_unet(unet_dir: Path, name: str) -> nn.Module:
    import diffusers

    cls = {"UNet2DModel": diffusers.UNet2DModel, "UNet2DConditionModel": diffusers.UNet2DConditionModel}[name]
    if not (unet_dir / WEIGHTS_FILE).is_file():
        raise _error(f"{unet_dir} has no safetensors weights ({WEIGHTS_FILE} is missing)")
    try:
        return cls.from_pretrained(unet_dir, use_safetensors=True, local_files_only=True, low_cpu_mem_usage=False)
    except Exception as e:  # shape mismatch (ValueError/RuntimeError), damaged file (SafetensorError/OSError), ...
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        why = next((line for line in lines if "mismatch" in line or "Missing" in line), lines[0])
        raise _error(f"{unet_dir}: the weights do not fit the model its config.json describes ({why})") from None


class DiffusersUNet(nn.Module):
    """A diffusers U-Net behind our raw-network signature ``F(x_in, c_noise, cond)``: ``c_noise`` is the
    fractional diffusers timestep t(sigma); ``cond["class"]`` becomes ``class_labels``. A model with learned
    variance (out_channels = 2 in_channels) returns its mean half, as diffusers' schedulers use it."""

    def __init__(self, unet: nn.Module, num_classes: int, text_free_conditional: bool):
        super().__init__()
        self.unet = unet
        self.num_classes = num_classes
        self.text_free_conditional = text_free_conditional  # UNet2DConditionModel: encoder_hidden_states=None

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        # a table sigma (up to float32 rounding) is the integer timestep the scheduler calls the network at
        t = torch.where((c_noise - c_noise.round()).abs() < 1e-3, c_noise.round(), c_noise)
        kwargs = {}
        if self.num_classes > 0:
            kwargs["class_labels"] = self._labels(cond)
        if self.text_free_conditional:
            kwargs["encoder_hidden_states"] = None
        dtype = self.unet.dtype  # the network's own precision (callers may hand us float64)
        out = self.unet(x_in.to(dtype), t.to(dtype), return_dict=False, **kwargs)[0]
        return out[:, : x_in.shape[1]]

    @staticmethod
    def _labels(cond: dict | None) -> Tensor:
        if not cond or "class" not in cond:
            raise ValueError("this diffusers model is class-conditional: give class labels (--class)")
        drop = cond.get("drop")
        if drop is not None and bool(drop.any()):
            raise ValueError(
                "this diffusers model has no unconditional (null) class, so classifier-free guidance cannot use it; "
                "sample at --guidance 1"
            )
        return cond["class"]


def load_diffusers(path: str | Path, *, device: str | torch.device = "cpu"):
    """A diffusers folder as a :class:`~torchdiffusion.generate.LoadedRun` (model in eval mode on ``device``)."""
    from ..extras import missing
    from ..generate import LoadedRun

    path = Path(path)
    unet_dir = unet_folder(path)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise _error(missing("bench", f"loading the diffusers folder {path}")) from None
    name = _check_unet_config(unet_dir / "config.json")
    process, sched = read_scheduler(scheduler_file(path, unet_dir))
    unet = _load_unet(unet_dir, name)
    uc = unet.config
    size = uc.sample_size if isinstance(uc.sample_size, (list, tuple)) else (uc.sample_size, uc.sample_size)
    data_shape = (int(uc.in_channels), int(size[0]), int(size[1]))
    if uc.out_channels not in (uc.in_channels, 2 * uc.in_channels):
        raise _error(
            f"{unet_dir / 'config.json'}: out_channels {uc.out_channels} do not fit in_channels {uc.in_channels}"
        )
    num_classes = int(uc.num_class_embeds or 0)
    net = DiffusersUNet(unet, num_classes, text_free_conditional=name == "UNet2DConditionModel")
    param = PREDICTION_TYPES[sched["prediction_type"]]
    model = Precond(net, param, process=process, noise_conditioning="timestep")
    model.to(device).eval().requires_grad_(False)
    cfg = resolved_config(data_shape, num_classes, param, process, sched)
    info = {
        "kind": "image",
        "data_shape": list(data_shape),
        "source": "diffusers",
        "path": str(path),
        "unet": {"class": name, "dir": str(unet_dir)},
        "scheduler": sched,
    }
    wfile = (unet_dir / WEIGHTS_FILE).relative_to(path).as_posix()
    return LoadedRun(path=path, config=cfg, model=model, data_shape=data_shape, info=info, weights_file=wfile)


def resolved_config(
    data_shape: tuple[int, ...], num_classes: int, param: str, process: DiscreteVP, sched: dict
) -> RunConfig:
    """Our RunConfig describing a diffusers model: image data of its shape, its classes, its process, and the
    sampler of ours that matches its scheduler on the scheduler's timestep spacing. The abar_t table itself is
    ``model.process`` (a ``scaled_linear`` or trained table has no name among our schedules; ``linear`` and
    ``squaredcos_cap_v2`` are our ``linear`` and ``cosine``)."""
    C, H, W = data_shape
    schedule = {"squaredcos_cap_v2": "cosine"}.get(sched.get("beta_schedule"), "linear")
    linear = {"beta_start": sched["beta_start"], "beta_end": sched["beta_end"]} if schedule == "linear" else {}
    sampler = SCHEDULERS[sched["class"]]
    variance = {"fixed_large": "beta", "fixed_large_log": "beta"}.get(sched.get("variance_type"), "posterior")
    cfg = RunConfig(
        preset="diffusers",
        data=DataConfig(source="folder", image_size=(H, W), channels=C if C in (1, 3) else None),
        model=ModelConfig(num_classes=num_classes),
        diffusion=DiffusionConfig(parameterization=param, process="discrete", schedule=schedule, T=process.T, **linear),
        sample=SampleConfig(
            sampler=sampler,
            steps=min(50, process.T),
            grid="uniform_t",
            spacing=sched["timestep_spacing"],
            clip_denoised=bool(sched.get("clip_sample", False)),  # to [-1, 1]: other ranges are refused above
            settings=SamplerSettings(variance=variance) if sampler == "ddpm" else SamplerSettings(),
        ),
    )
    try:
        return validate(cfg)
    except ValueError as e:
        raise _error(f"{sched['file']}: {e}") from None
