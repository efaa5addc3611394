"""Typed configuration: frozen dataclasses, JSON round trip, ``key=value`` overrides, validation (the named
presets built from them: presets.py).

A run is fully described by one :class:`RunConfig`; its resolved form is saved as ``config.json`` in the run
folder, and ``torchdiffusion train --preset NAME --set train.lr=1e-3 --dry-run`` prints it. Lengths are counted
in images seen, never in steps, so a result does not depend on the batch size or the number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line meant for the user."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "mnist5k"  # mnist5k | digits | fashion_mnist | emoji | folder | array | toy | csv | sklearn:<set>
    # | text | fasta | sklearn_text | python_docs (tables: data/table.py; sequences: data/sequence.py) | shapes3d
    # | nifti (volumes: data/volume.py) | signal_csv | ucr:<set> (signals: data/signal.py)
    path: str | None = None  # image folder or .npy/.npz file (folder / array sources)
    labels_path: str | None = None  # optional labels .npy for the array source (the course preset's sprite format)
    image_size: tuple[int, int] | None = None  # (H, W) to resize/crop to; None keeps the native size
    channels: int | None = None  # 1 (grayscale) or 3 (RGB) for folders; None keeps the native channel count
    layout: str = "auto"  # auto | NCHW | NHWC | NHW (images) | NCL (1-D signals) | NCDHW | NDHW (volumes): how
    # the array source reads axes
    # array and folder sources: map each channel's own range to [-1, 1] (data/scale.py): auto (no map; the pixel
    # rules for images) | minmax | percentile (0.5-99.5 %, clamped). The bounds are fitted on the training examples
    # and recorded here
    scale: str = "auto"
    scale_lo: tuple[float, ...] = ()  # per channel; set from the data at training (or given, to fix the map)
    scale_hi: tuple[float, ...] = ()
    toy: str = "8gaussians"  # 8gaussians | moons | swissroll | checkerboard (toy source)
    toy_size: int = 50_000  # how many toy points to draw (toy source)
    emoji_size: int = 16  # 16 or 32 (emoji source); 64 for the latent-diffusion presets
    emoji_set: str = "single"  # single (one code point each) | sequences (also skin tones and ZWJ sequences)
    holdout: int = 0  # images kept out of training (last ones after a seeded shuffle), for evaluation
    # seeds the data: the train/holdout shuffle (and the toy points); None = train.seed. Set it to keep one split
    # while train.seed varies the network's initialisation and draws (run-to-run spread on the same held-out set)
    seed: int | None = None
    limit: int | None = None  # use only the first N training examples (tests, quick runs)
    categorical: tuple[str, ...] = ()  # table: columns read as categories besides the non-numeric ones
    target: str | None = None  # table: the categorical column train-on-synthetic models predict (sklearn: target)
    seq_len: int = 64  # sequence: symbols per example (non-overlapping windows of the source)
    volume_size: tuple[int, int, int] = (16, 16, 16)  # shapes3d: D, H, W of each volume (the sides may differ)
    volume_count: int = 2000  # shapes3d: how many volumes (classes cycle: sphere, cube, torus, ellipsoid)
    latents_of: str | None = None  # an autoencoder run folder: diffuse its latents of these images (latent.py)
    signal_length: int | None = None  # signal: resample every series to this many points (None keeps the length)


@dataclass(frozen=True)
class ModelConfig:
    net: str = "unet"  # unet (images, signals, volumes) | dit (images) | mlp (vectors) | table | transformer
    channels: int = 32  # base width of the U-Net
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per resolution level; len = number of levels
    num_res_blocks: int = 1  # residual blocks per level (encoder side)
    # feature-map sizes (min of H, W) that get self-attention; a preset's or config file's size matching no level
    # for the data is moved to the nearest level's when training starts (recorded), a --set one refused (nets/unet.py)
    attn_resolutions: tuple[int, ...] = (7,)
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.0  # dropout inside residual blocks
    embedding: str = "sinusoidal"  # sinusoidal | fourier noise embedding
    groups: int = 8  # GroupNorm groups (capped by the channel count)
    mlp_width: int = 256  # hidden width of the MLP denoiser (vectors, tables) and of the transformer (sequences)
    mlp_depth: int = 4  # hidden layers of the MLP denoiser; layers of the transformer
    num_classes: int = 0  # > 0: class-conditional (label embedding)
    context_dim: int = 0  # > 0: context-vector conditioning (one-/multi-hot, fractional, continuous); -1: from the data
    text_dim: int = 0  # > 0: text conditioning by cross-attention over token features of this width
    text_pooled: bool = False  # text: also add the pooled caption (mean of its tokens) to the noise embedding
    text_retrieval: int = 0  # text: > 0 also conditions on the mean of the caption's k nearest training examples
    retrieval_input: str = "embedding"  # how they enter: "embedding" (MLP -> noise embedding) or "channels" (input)
    categories: tuple[int, ...] = ()  # table: classes of each categorical column (set from the data at training)
    vocab: int = 0  # sequence: number of symbols (set from the data at training)
    rotary: bool = False  # sequence transformer: rotary positions in attention (RoPE) in place of the learned table
    checkpoint: bool = False  # U-Net, DiT: recompute each block's activations in backward (less memory, ~1/3 more time)
    space_to_depth: int = 1  # U-Net, images: fold each s x s pixel block into channels at the input and unfold at
    # the output (pixel unshuffle / shuffle, as "simple diffusion" does for large images): the network runs at H/s x W/s
    # DiT (model.net=dit; width = channels, heads = channels / head_channels; sizes: presets.DIT_SIZES)
    patch: int = 2  # DiT: patch size p (must divide H and W); N = HW / p^2 tokens
    depth: int = 12  # DiT: transformer blocks (12 for DiT-S and DiT-B)
    pos_embedding: str = "sincos"  # DiT: sincos (fixed 2-D sin-cos, as DiT) | learned (a table started from it)

    @property
    def conditional(self) -> bool:
        """Whether the network takes a class, a context vector or text (what classifier-free guidance steers)."""
        return self.num_classes > 0 or self.context_dim != 0 or self.text_dim > 0


@dataclass(frozen=True)
class DiffusionConfig:
    parameterization: str = "eps"  # eps | x0 | v | edm (what the network predicts; see precond.py)
    process: str = "discrete"  # discrete (DDPM table of T steps) | continuous (EDM sigma range) | categorical
    # (sequences: no Gaussian part; diffusion.discrete corrupts the symbols, categorical.py)
    discrete: str = "masked"  # masked (absorbing state; MDLM/MD4) | uniform (D3PM): sequences; tables use masked
    masked_bound: str = "weighted"  # sequences, masked: the bound's estimator, weighted (1/t) | anchored (categorical)
    schedule: str = "linear"  # linear | cosine | sigmoid variance schedule (discrete process)
    T: int = 1000  # number of timesteps (discrete process)
    beta_start: float = 1e-4  # linear schedule endpoints (Ho et al.)
    beta_end: float = 0.02
    sigma_min: float = 0.002  # continuous process range (EDM Table 1)
    sigma_max: float = 80.0
    sigma_data: float = 0.5  # EDM's data standard deviation (data in [-1, 1])
    noise_conditioning: str = "timestep"  # timestep | log_sigma: what the network is told about the noise
    sigma_sampling: str = "discrete"  # discrete (t ~ U{0..T-1}) | lognormal (EDM) | uniform (t ~ U(0, 1): categorical)
    P_mean: float = -1.2  # EDM's log-normal training distribution (Table 1)
    P_std: float = 1.2
    weighting: str = "uniform"  # uniform (the parameterization's own MSE) | min_snr | edm | x0
    min_snr_gamma: float = 5.0  # gamma of min-SNR weighting (Hang et al. 2023)
    boundary: str = "none"  # none | consistency: f(x, sigma_min) = x (Song et al. 2023; see precond.py)


@dataclass(frozen=True)
class TrainConfig:
    images: int = 200_000  # length of training, in images seen (not steps)
    cpu_minutes: float = 0.0  # also stop after this much process CPU time (all threads; 0 = no limit)
    minutes: float = 0.0  # also stop after this much wall-clock time (0 = no limit)
    batch_size: int = 128  # global batch (all processes together, before gradient accumulation splits it)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-3  # AdamW peak learning rate
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_images: int = 10_000  # linear learning-rate warm-up, in images
    lr_decay: str = "none"  # none | cosine (to 0 at the end) | cooldown (constant, then linearly to 0: lr_cooldown)
    lr_cooldown: float = 0.2  # lr_decay = cooldown: the final fraction of train.images over which lr falls to 0
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    ema_halflife_images: int = 25_000  # EMA half-life in images (EDM style); 0 disables EMA
    ema_warmup_ratio: float = 0.05  # half-life grows to at most this fraction of images seen (EDM ema_rampup)
    # keep the EMA weights as they are after this fraction of train.images: the run's guide model (guide.safetensors),
    # the weaker version of itself that autoguidance (sample.autoguidance) steers away from; 0 = keep none
    guide_at: float = 0.0
    cond_drop_prob: float = 0.1  # probability of dropping the conditioning (classifier-free guidance)
    # model.text_retrieval: the probability of dropping the caption alone, keeping its retrieved neighbours (on
    # top of cond_drop_prob, which drops both), so the model also learns D(x | neighbours) for
    # sample.retrieval_guidance; 0 = never
    caption_drop_prob: float = 0.0
    # none (every example equally often) | groups | classes: draw examples with probability 1 / the size of their
    # group (data.groups: an emoji and its skin-tone variants) or class, so each group or class is drawn equally
    # often (with replacement; training/loop.py DataOrder)
    balance: str = "none"
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (autocast; loss, sigma arithmetic and EMA stay fp32) | auto (bf16 +
    # channels-last where the hardware has native bf16, else fp32; config.json records which ran: training/precision.py)
    channels_last: bool = False  # NHWC memory format for the U-Net
    compile: bool = False  # torch.compile the network (slow to start; opt-in)
    log_every_images: int = 5_000  # metrics.jsonl cadence
    sample_every_images: int = 0  # sample grid cadence; 0 = only at the end
    eval_every_images: int = 0  # quick evaluation cadence (FD, confident share -> metrics.jsonl); 0 = never
    eval_n: int = 256  # samples per quick evaluation
    # the quick evaluation's classifier (FD in its features, confident share, class accuracy): "" = the data set's
    # shipped one where it ships; else 'train-classifier RUN --evaluation''s eval-classifier.safetensors or folder
    eval_classifier: str = ""
    checkpoint_every_images: int = 50_000  # training-state cadence
    keep_checkpoints: int = 2  # keep the last K training states
    max_nonfinite: int = 10  # stop after this many consecutive non-finite steps
    num_workers: int = 0  # read by nothing (READ_BY_NOTHING): kept so that config.json files that hold it load
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default


@dataclass(frozen=True)
class SamplerSettings:
    """Settings passed as is to the sampler as keyword arguments; None keeps the default the sampler's name gives
    it. Each sampler takes only some of them (``torchdiffusion sample --list-samplers`` shows which, with their
    defaults); setting one the chosen sampler does not take is an error, never silently ignored."""

    eta: float | None = None  # stochasticity: ddim, euler_ancestral, dpmpp_* (0 = ODE; 1 = DDPM / reverse SDE)
    s_churn: float | None = None  # heun: EDM's S_churn (0 = deterministic; heun_sde: 40)
    s_tmin: float | None = None  # heun: churn only for sigma in [s_tmin, s_tmax]
    s_tmax: float | None = None
    s_noise: float | None = None  # heun, euler_ancestral: scale of the fresh noise (EDM's S_noise)
    order: int | None = None  # lms, unipc: multistep order
    r: float | None = None  # dpmpp_2s: where the second evaluation sits, lambda_i + r h
    variance: str | None = None  # ddpm: posterior (beta~) | beta
    add_noise: bool | None = None  # ddpm: false drops the re-added noise (a teaching ablation)
    snr: float | None = None  # pc: the corrector's signal-to-noise ratio
    corrector_steps: int | None = None  # pc: Langevin corrector steps per level
    steps_per_level: int | None = None  # langevin: Langevin steps per noise level
    step_lr: float | None = None  # langevin: step size a_i = step_lr sigma_i^2
    rtol: float | None = None  # adaptive: relative and absolute error tolerances
    atol: float | None = None


@dataclass(frozen=True)
class SampleConfig:
    # UniPC (exact weights) on the process's own grid: at NFE 10 level with diffusers' best on held-out Gaussian
    # mixtures, where Heun on a rho = 7 Karras grid (the old default) diverged (docs/samplers.md, "Defaults")
    sampler: str = "unipc"  # any name in samplers.SAMPLERS
    steps: int = 18  # steps on the sigma grid (NFE depends on the sampler)
    # auto: the run's tuned grid for this sampler and steps when it has one, else uniform_t for a DDPM-trained
    # model and exponential (log-SNR) otherwise; when x0_hat is not clamped, a log-SNR grid from sigma <= 80 down
    # to 1 / n for an ODE sampler, a DDPM model's timesteps with sigma <= 80 for a stochastic one
    # (generate.resolve_grid); karras | exponential | uniform_t | tuned name one kind
    grid: str = "auto"
    rho: float = 7.0  # Karras grid exponent
    spacing: str = "trailing"  # leading | trailing | linspace (uniform_t grid)
    n: int = 64  # number of samples
    seed: int = 0  # image k uses seed + k
    batch_size: int = 256  # images per network call
    guidance: float = 1.0  # classifier-free guidance scale (1 = plain conditional)
    guidance_interval: tuple[float, float] | None = None  # guide only for sigma in [lo, hi] (Kynkaanniemi 2024)
    guidance_rescale: float = 0.0  # phi in [0, 1] of rescaled CFG (Lin et al. 2024); 0 = off
    # autoguidance weight w (Karras et al. 2024): D_guide + w (D - D_guide), D_guide the run's guide model (its
    # EMA at train.guide_at); 1 = off, > 1 steers away from the guide's errors (one more network call per step)
    autoguidance: float = 1.0
    # a model.text_retrieval run trained with train.caption_drop_prob > 0: guide towards the retrieved neighbours at
    # this scale and from them towards the caption at sample.guidance (guidance.retrieval_guided, one more network
    # call per step); 0 = off (classifier-free guidance on caption and neighbours together)
    retrieval_guidance: float = 0.0
    settings: SamplerSettings = field(default_factory=SamplerSettings)  # the sampler's own settings
    clip_denoised: bool = True  # clamp x0_hat to the data range [-1, 1] for images and volumes
    # The class of each image when a class-conditional model is sampled without one (no --class; cond.seed_labels):
    # none = the learned null class (the unconditional model that train.cond_drop_prob trains); cycle = seed mod K
    # (seeds 0..n-1: each class n / K times, as evaluate draws them); random = uniform, drawn from the image's seed;
    # K: the classes a run's training data held (generate.label_classes), else the network's
    labels: str = "none"


@dataclass(frozen=True)
class ObjectiveConfig:
    """What training minimises (training/objective.py); the distillation ones learn from a teacher run folder."""

    # denoising | progressive | consistency_distillation | consistency_training | distribution_matching | reflow
    name: str = "denoising"
    teacher: str | None = None  # the teacher's run folder (the distillation objectives)
    teacher_steps: int = 0  # progressive: the teacher's DDIM steps on this halving (the student takes half)
    teacher_grid: str = ""  # progressive: the grid of those steps, a sample.grid name ("" = the teacher's own)
    # progressive after its first halving: the previous halving's student this one learns from (at guidance 1, on
    # its 2 x max_steps DDIM grid); teacher, teacher_steps, teacher_grid, guidance and autoguidance then name what
    # the whole distillation started from (the teacher run, its first steps and grid, the guidance baked in)
    stage_teacher: str = ""
    guidance: float = 1.0  # the classifier-free guidance scale the teacher is distilled at (conditional models)
    autoguidance: float = 1.0  # the teacher steered from its run's guide model at this w (1: the model alone)
    max_steps: int = 0  # the sampling steps a student was distilled for (more are refused); 0 = no limit
    ct_steps_start: int = 10  # consistency: discretisation steps s0 at the start of the curriculum (iCT: 10)
    ct_steps_end: int = 1280  # consistency: s1 at its end (iCT: 1280; equal to s0 for a fixed grid)
    ct_P_mean: float = -1.1  # consistency: log-normal proposal over the grid's levels (iCT Sec. 3.5)
    ct_P_std: float = 2.0
    reflow_pairs: int = 0  # reflow: (noise, teacher sample) pairs drawn from the teacher; data.path holds them
    dmd_fake_updates: int = 3  # distribution matching: fake-denoiser updates per generator update (DMD2: 5)
    dmd_fake_lr: float = 0.0  # distribution matching: the fake denoiser's learning rate (0: train.lr)


@dataclass(frozen=True)
class RunConfig:
    preset: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)


# the named presets live in presets.py; these names stay importable from here (``from torchdiffusion.config
# import get_preset``), looked up there on first use (presets.py imports this module, so not at import time)
_IN_PRESETS = ("PRESETS", "DIT_SIZES", "TRAIN_OBJECTIVES", "dit_model", "get_preset")


def __getattr__(name: str) -> Any:
    if name in _IN_PRESETS:
        from . import presets

        return getattr(presets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# A preset's name as config.json and the model card record it and as it names the default run folder (runs/<preset>):
# one plain name, never a path (a config file's own, unknown to the presets, is kept: a distilled student's
# "mnist-cpu-progressive", an experiment's name)
PRESET_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}"


def check_preset_name(name: str, where: str) -> None:
    """A ConfigError (one line) unless ``name`` is a plain :data:`PRESET_NAME`; ``where`` names what holds it."""
    if not re.fullmatch(PRESET_NAME, name):
        raise ConfigError(
            f"{where} records preset {name!r}, which is no preset name (letters, digits and . _ + -, not a path): "
            "write the preset it started from, or custom"
        )


def pick_preset(presets: dict, name: str, what: str = "preset"):
    """``presets[name]``, or a ConfigError that lists the names (train, train-autoencoder, train-clip)."""
    if name not in presets:
        raise ConfigError(f"unknown {what} {name!r}; choose from {', '.join(presets)}")
    return presets[name]


# JSON round trip and overrides


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def recorded_json(cfg: RunConfig) -> str:
    """A run's config.json: its objective block with only the settings that objective reads (unread_setting: a DMD
    student records no consistency curriculum, a progressive one no fake-denoiser updates), and any other that is
    not at its default (given through the Python API: a resume compares it); the left-out ones load at their
    defaults, so a resume compares every setting as before."""
    d, default = to_dict(cfg), to_dict(ObjectiveConfig())
    d["objective"] = {
        k: v for k, v in d["objective"].items() if unread_setting(cfg, f"objective.{k}") is None or v != default[k]
    }
    return json.dumps(d, indent=2, sort_keys=False)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a JSON value or a command-line string to the annotated field type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except (ConfigError, ValueError, TypeError):
                continue
        raise ConfigError(f"{where}: cannot read {value!r}")
    if origin is tuple:
        if isinstance(value, str):  # "1,2", "(1,2)" or "[1,2]"; brackets inside an element stay ("price (usd)")
            text = value.strip()
            if len(text) >= 2 and (text[0], text[-1]) in (("(", ")"), ("[", "]")):
                text = text[1:-1]
            value = [v.strip() for v in text.split(",") if v.strip() != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        elem = args[0] if args else str
        return tuple(_coerce(elem, v, where) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):  # (a JSON true/false, as JSON writes it)
            raise ConfigError(f"{where}: expected an integer, got {json.dumps(value)}")
        if isinstance(value, int):
            return value
        text = str(value).replace("_", "").strip()
        if re.fullmatch(r"[+-]?\d+", text):  # exactly (through a float, seeds beyond 2**53 were rounded)
            return int(text)
        try:
            f = float(text)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):  # (float(True) is 1.0: a JSON true is no learning rate)
            raise ConfigError(f"{where}: expected a number, got {json.dumps(value)}")
        try:
            f = float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
        except (ValueError, TypeError, OverflowError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(f):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return f
    if tp is str:
        if value is None or isinstance(value, (bool, dict, list)):  # (a null preset became "None": runs/None)
            raise ConfigError(f"{where}: expected text, got {json.dumps(value)}")
        return str(value)
    return value


def from_dict(cls: type, d: dict, where: str = "") -> Any:
    """Build a (nested) config dataclass from a dict, checking every key and type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown config key {where}{sorted(unknown)[0]!r}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(d[f.name], dict):
                raise ConfigError(f"config section {where}{f.name} must be an object")
            kwargs[f.name] = from_dict(tp, d[f.name], f"{where}{f.name}.")
        else:
            kwargs[f.name] = _coerce(tp, d[f.name], f"{where}{f.name}")
    return cls(**kwargs)


def json_object(text: str) -> dict:
    """The object a config.json holds; a ConfigError in one line when it is not JSON or not an object."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config.json is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict):
        raise ConfigError("config.json must hold an object")
    return d


def from_json(text: str) -> RunConfig:
    d = json_object(text)
    sample = d.get("sample")
    if isinstance(sample, dict) and "eta" in sample:  # written before sampler settings had their own section
        eta = sample.pop("eta")
        if sample.get("sampler") == "ddim" and eta:  # the only sampler that read it
            sample["settings"] = {**sample.get("settings", {}), "eta": eta}
    return from_dict(RunConfig, d)


def override(cfg: Any, assignments: list[str]) -> Any:
    """Apply ``section.key=value`` strings, e.g. ``train.lr=1e-3`` or ``model.channel_mult=1,2,2``."""
    for a in assignments:
        if "=" not in a:
            raise ConfigError(f"override {a!r} must look like section.key=value")
        key, value = a.split("=", 1)
        if key.strip() == "preset" and hasattr(cfg, "preset"):  # (it named runs/<preset> and what the card records)
            raise ConfigError(
                f"{a.strip()}: preset is no setting but the named preset the config started from; start from "
                "another with --preset NAME"
            )
        cfg = _set(cfg, key.strip().split("."), value.strip(), key)
    return cfg


def _set(cfg: Any, path: list[str], value: str, full: str) -> Any:
    hints = typing.get_type_hints(type(cfg))
    name = path[0]
    if name not in hints:
        raise ConfigError(f"unknown config key {full!r}")
    if len(path) == 1:
        if dataclasses.is_dataclass(hints[name]):
            raise ConfigError(f"{full!r} is a section; set one of its keys, e.g. {full}.<key>=...")
        if value == "" and type(None) in typing.get_args(hints[name]):  # a script's unset variable, not a choice
            raise ConfigError(f"{full.strip()}= was given an empty value; write {full.strip()}=none to unset it")
        return replace(cfg, **{name: _coerce(hints[name], value, full)})
    sub = getattr(cfg, name)
    if not dataclasses.is_dataclass(sub):
        raise ConfigError(f"unknown config key {full!r}")
    return replace(cfg, **{name: _set(sub, path[1:], value, full)})


NET_NAMES = ("unet", "dit", "mlp", "table", "transformer")  # nets.NETS and model.build_model
PROCESSES = ("discrete", "continuous", "categorical")

# Upper bounds of sizes: far above any sensible run, far below an allocation that would fail or take forever
MAX_IMAGES = 10**12  # images seen in training (and every *_images cadence)
MAX_BATCH = 65_536  # images per optimizer step or per network call
MAX_WIDTH = 4096  # channels, widths, embedding sizes
MAX_THREADS = 4096  # torch intra-op threads (train.threads)
MAX_PIXELS = 16_384  # one side of an image
MAX_T = 100_000  # timesteps of a discrete process, sampler steps
MAX_SAMPLES = 10_000_000  # images to generate
MAX_SEED = 2**62  # image k uses seed + k: room for k
LOG_SIGMA_LIMIT = 40.0  # |ln sigma| of log-normal training levels (P_mean +- 6 P_std): sigma^2 stays finite in float32


def _lognormal_check(P_mean: float, P_std: float, name: str) -> tuple[bool, str]:
    """Log-normal noise levels ln sigma ~ N(P_mean, P_std^2) that float32 can hold: P_mean +- 6 P_std in +-40."""
    lim = LOG_SIGMA_LIMIT
    ok = math.isfinite(P_mean) and math.isfinite(P_std) and abs(P_mean) + 6 * abs(P_std) <= lim
    return (
        ok,
        f"{name}_mean +- 6*{name.split('.')[-1]}_std must lie in [-{lim:g}, {lim:g}] (ln sigma of the training levels; "
        f"sigma^2 must stay finite in float32), got {P_mean!r} +- 6*{P_std!r}",
    )


def _finite_numbers(cfg: Any, where: str = "") -> list[tuple[bool, str]]:
    """Every float field (and float inside a tuple) of every section is finite: no NaN, no infinity."""
    checks = []
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            checks += _finite_numbers(v, f"{where}{f.name}.")
        elif isinstance(v, float) or (isinstance(v, tuple) and any(isinstance(e, float) for e in v)):
            ok = all(math.isfinite(e) for e in (v if isinstance(v, tuple) else (v,)))
            checks.append((ok, f"{where}{f.name} must be a finite number, got {v!r}"))
    return checks


def _is_a(tp: Any, v: Any) -> bool:
    """Whether ``v`` is a value of the field type ``tp`` (a number field takes an int too; bool is not a number).
    A tuple's elements are checked, its length is left to the domain checks."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(a, v) for a in args)
    if tp is type(None):
        return v is None
    if origin is tuple:
        return isinstance(v, tuple) and all(_is_a(args[0] if args else Any, e) for e in v)
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is str:
        return isinstance(v, str)
    return True


def _kind(tp: Any) -> str:
    """A field type in words: 'an integer', 'a number or None', 'a tuple of integers'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind(a) for a in args)
    if origin is tuple:
        return f"a tuple of {_kind(args[0]).split(' ', 1)[-1]}s" if args else "a tuple"
    names = {bool: "a bool", int: "an integer", float: "a number", str: "a string", type(None): "None"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def typed_fields(cfg: Any, where: str = "") -> None:
    """A ConfigError naming the first field of ``cfg`` (a config dataclass, built in Python rather than read by
    from_dict or --set, which convert) whose value is not of its declared type: ``train.images="32"`` would
    otherwise fail deep inside with a TypeError that names no field, or ``train.batch_size=16.0`` in the data
    loader after the run folder is written."""
    hints = typing.get_type_hints(type(cfg))
    for f in fields(cfg):
        v, tp = getattr(cfg, f.name), hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, tp):
                raise ConfigError(f"{where}{f.name} must be a {tp.__name__}, got {v!r}")
            typed_fields(v, f"{where}{f.name}.")
        elif not _is_a(tp, v):
            raise ConfigError(f"{where}{f.name} must be {_kind(tp)}, got {v!r} ({type(v).__name__})")


RETRIEVAL_INPUTS = ("embedding", "channels")  # model.retrieval_input (retrieval.py)


def _between(v: Any, lo: float, hi: float, name: str) -> tuple[bool, str]:
    return (lo <= v <= hi, f"{name} must be in [{lo:g}, {hi:g}], got {v!r}")


def _data_checks(d: DataConfig) -> list[tuple[bool, str]]:
    from .data import SOURCES, TOYS
    from .data.scale import scale_checks

    size_ok = d.image_size is None or (len(d.image_size) == 2 and all(1 <= v <= MAX_PIXELS for v in d.image_size))
    return [
        (d.source in SOURCES, f"unknown data source {d.source!r}; choose from {', '.join(SOURCES)}"),
        (d.toy in TOYS, f"unknown toy {d.toy!r}; choose from {', '.join(TOYS)}"),
        (size_ok, f"data.image_size must be H,W with sides in [1, {MAX_PIXELS}], got {d.image_size!r}"),
        (d.channels in (None, 1, 3), f"data.channels must be 1 or 3, got {d.channels!r}"),
        _between(d.toy_size, 1, MAX_SAMPLES, "data.toy_size"),
        (d.emoji_set in ("single", "sequences"), f"data.emoji_set must be single or sequences, got {d.emoji_set!r}"),
        _between(d.holdout, 0, MAX_SAMPLES, "data.holdout"),
        (d.seed is None or 0 <= d.seed <= MAX_SEED, f"data.seed must be in [0, 2^62] or unset, got {d.seed!r}"),
        (d.limit is None or d.limit >= 1, f"data.limit must be >= 1, got {d.limit!r}"),
        _between(d.seq_len, 2, 1_000_000, "data.seq_len"),
        _between(d.volume_count, 1, MAX_SAMPLES, "data.volume_count"),
        (
            len(d.volume_size) == 3 and all(4 <= v <= 1024 for v in d.volume_size),
            f"data.volume_size must be D,H,W with sides in [4, 1024], got {d.volume_size!r}",
        ),
        (
            d.signal_length is None or 2 <= d.signal_length <= 1_000_000,
            f"data.signal_length must be in [2, 1e6], got {d.signal_length!r}",
        ),
        *scale_checks(d),
    ]


def _model_checks(m: ModelConfig) -> list[tuple[bool, str]]:
    return [
        (m.net in NET_NAMES, f"model.net must be one of {', '.join(NET_NAMES)}"),
        (all(k >= 1 for k in m.categories), "model.categories must be class counts >= 1"),
        _between(m.vocab, 0, 1_000_000, "model.vocab"),
        (
            1 <= len(m.channel_mult) <= 8 and all(1 <= c <= 64 for c in m.channel_mult),
            f"model.channel_mult needs 1 to 8 levels of multipliers in [1, 64], got {m.channel_mult!r}",
        ),
        _between(m.channels, 1, MAX_WIDTH, "model.channels"),
        _between(m.num_res_blocks, 1, 64, "model.num_res_blocks"),
        (all(r >= 1 for r in m.attn_resolutions), "model.attn_resolutions must be sizes >= 1"),
        _between(m.head_channels, 1, MAX_WIDTH, "model.head_channels"),
        (0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout!r}"),
        (m.embedding in ("sinusoidal", "fourier"), "model.embedding must be sinusoidal or fourier"),
        _between(m.groups, 1, MAX_WIDTH, "model.groups"),
        _between(m.mlp_width, 1, 65_536, "model.mlp_width"),
        _between(m.mlp_depth, 1, 256, "model.mlp_depth"),
        _between(m.num_classes, 0, 1_000_000, "model.num_classes"),
        (
            -1 <= m.context_dim <= 65_536,
            "model.context_dim must be in [0, 65536], or -1 to take it from the data's context vectors",
        ),
        _between(m.text_dim, 0, 65_536, "model.text_dim"),
        (not m.text_pooled or m.text_dim > 0, "model.text_pooled needs a text-conditioned model (model.text_dim > 0)"),
        _between(m.text_retrieval, 0, 1024, "model.text_retrieval"),
        (
            m.retrieval_input in RETRIEVAL_INPUTS,
            f"model.retrieval_input must be one of {', '.join(RETRIEVAL_INPUTS)}, got {m.retrieval_input!r}",
        ),
        (
            not m.text_retrieval or m.text_dim > 0,
            "model.text_retrieval needs a text-conditioned model (model.text_dim > 0)",
        ),
        _between(m.patch, 1, MAX_PIXELS, "model.patch"),
        _between(m.space_to_depth, 1, 64, "model.space_to_depth"),
        (m.space_to_depth == 1 or m.net == "unet", "model.space_to_depth is for the U-Net (model.net=unet)"),
        _between(m.depth, 1, 256, "model.depth"),
        (m.pos_embedding in ("sincos", "learned"), "model.pos_embedding must be sincos or learned"),
    ]


def _diffusion_checks(d: DiffusionConfig) -> list[tuple[bool, str]]:
    from .losses import SIGMA_SAMPLINGS, WEIGHTINGS
    from .precond import BOUNDARIES, NOISE_CONDITIONINGS, PARAMETERIZATIONS
    from .schedules import BETA_SCHEDULES

    return [
        (d.parameterization in PARAMETERIZATIONS, f"diffusion.parameterization must be one of {PARAMETERIZATIONS}"),
        (d.process in PROCESSES, f"diffusion.process must be one of {', '.join(PROCESSES)}"),
        (d.discrete in ("masked", "uniform"), "diffusion.discrete must be masked or uniform"),
        (d.masked_bound in ("weighted", "anchored"), "diffusion.masked_bound must be weighted or anchored"),
        (
            (d.process == "categorical") == (d.sigma_sampling in ("uniform", "stratified")),
            "diffusion.process=categorical goes with diffusion.sigma_sampling=uniform or stratified (and only they); "
            f"this run has diffusion.process={d.process} and diffusion.sigma_sampling={d.sigma_sampling}",
        ),
        (d.schedule in BETA_SCHEDULES, f"diffusion.schedule must be one of {tuple(BETA_SCHEDULES)}"),
        _between(d.T, 2, MAX_T, "diffusion.T"),
        # Ho et al.'s linear schedule: 0 < beta_1 <= beta_T < 1 (each beta_t is a variance fraction)
        (
            0.0 < d.beta_start <= d.beta_end < 1.0,
            f"need 0 < diffusion.beta_start <= diffusion.beta_end < 1, got {d.beta_start!r}, {d.beta_end!r}",
        ),
        (
            d.noise_conditioning in NOISE_CONDITIONINGS,
            f"diffusion.noise_conditioning must be one of {NOISE_CONDITIONINGS}",
        ),
        (
            not (d.process == "continuous" and d.noise_conditioning == "timestep"),
            "a continuous process needs diffusion.noise_conditioning=log_sigma",
        ),
        (d.sigma_sampling in SIGMA_SAMPLINGS, f"diffusion.sigma_sampling must be one of {SIGMA_SAMPLINGS}"),
        (
            not (d.process == "continuous" and d.sigma_sampling == "discrete"),
            "a continuous process needs diffusion.sigma_sampling=lognormal or rf_uniform",
        ),
        (d.weighting in WEIGHTINGS, f"diffusion.weighting must be one of {WEIGHTINGS}"),
        (d.boundary in BOUNDARIES, f"diffusion.boundary must be one of {BOUNDARIES}"),
        (0 < d.sigma_min < d.sigma_max, "need 0 < diffusion.sigma_min < diffusion.sigma_max"),
        (d.sigma_data > 0, f"diffusion.sigma_data must be > 0, got {d.sigma_data!r}"),
        (d.P_std > 0, f"diffusion.P_std must be > 0, got {d.P_std!r}"),
        _lognormal_check(d.P_mean, d.P_std, "diffusion.P"),
        (d.min_snr_gamma > 0, f"diffusion.min_snr_gamma must be > 0, got {d.min_snr_gamma!r}"),
    ]


def time_limit_checks(t: Any) -> list[tuple[bool, str]]:
    """``train.cpu_minutes`` and ``train.minutes`` of a training section (train's, an autoencoder's): >= 0."""
    return [
        (math.isfinite(v) and v >= 0, f"train.{k} must be >= 0 (0 = no limit), got {v!r}")
        for k, v in (("cpu_minutes", t.cpu_minutes), ("minutes", t.minutes))
    ]


def _train_checks(t: TrainConfig) -> list[tuple[bool, str]]:
    cadences = ("warmup_images", "ema_halflife_images", "log_every_images", "sample_every_images")
    cadences += ("eval_every_images", "checkpoint_every_images")
    return [
        _between(t.images, 1, MAX_IMAGES, "train.images"),
        _between(t.batch_size, 1, MAX_BATCH, "train.batch_size"),
        *time_limit_checks(t),
        (
            t.grad_accum >= 1 and t.batch_size % t.grad_accum == 0,
            "train.batch_size must be a multiple of train.grad_accum",
        ),
        (t.lr > 0, f"train.lr must be > 0, got {t.lr!r}"),
        (len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas must be two numbers in [0, 1)"),
        (t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay!r}"),
        (t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 disables clipping), got {t.grad_clip!r}"),
        *(_between(getattr(t, k), 0, MAX_IMAGES, f"train.{k}") for k in cadences),
        (0.0 <= t.guide_at < 1.0, f"train.guide_at must be in [0, 1) (a fraction of train.images), got {t.guide_at!r}"),
        (t.ema_warmup_ratio >= 0, f"train.ema_warmup_ratio must be >= 0, got {t.ema_warmup_ratio!r}"),
        _between(t.seed, 0, MAX_SEED, "train.seed"),
        (t.precision in ("fp32", "bf16", "auto"), "train.precision must be fp32, bf16 or auto"),
        (t.lr_decay in ("none", "cosine", "cooldown"), "train.lr_decay must be none, cosine or cooldown"),
        (t.balance in ("none", "groups", "classes"), "train.balance must be none, groups or classes"),
        (
            0.0 < t.lr_cooldown <= 1.0,
            f"train.lr_cooldown must be in (0, 1] (a fraction of train.images), got {t.lr_cooldown!r}",
        ),
        (0.0 <= t.cond_drop_prob <= 1.0, "train.cond_drop_prob must be in [0, 1]"),
        (
            0.0 <= t.caption_drop_prob and t.cond_drop_prob + t.caption_drop_prob <= 1.0,
            "train.caption_drop_prob must be >= 0 with train.cond_drop_prob + train.caption_drop_prob <= 1",
        ),
        _between(t.eval_n, 2, MAX_SAMPLES, "train.eval_n"),
        _between(t.keep_checkpoints, 1, 10_000, "train.keep_checkpoints"),
        _between(t.max_nonfinite, 1, MAX_IMAGES, "train.max_nonfinite"),
        _between(t.num_workers, 0, 256, "train.num_workers"),
        _between(t.threads, 0, MAX_THREADS, "train.threads"),
    ]


SAMPLE_LABELS = ("none", "cycle", "random")  # sample.labels
MAX_GUIDANCE = 100.0  # classifier-free guidance scales above this only push the samples off the data


def check_sample(s: SampleConfig) -> SampleConfig:
    """``s`` unchanged when generate() can sample with it; else a one-line ConfigError naming the field: the checks
    of :func:`validate` that need no run (types, finite numbers, every field in its domain, a known sampler and
    settings it takes, each of its kind) - for a SampleConfig built in Python rather than read from a run."""
    typed_fields(s, "sample.")
    for ok, msg in _finite_numbers(s, "sample.") + _sample_checks(s, None):
        if not ok:
            raise ConfigError(msg)
    _check_sampler(s)
    return s


def _check_sampler(s: SampleConfig) -> None:
    """A ConfigError (one line) unless ``s.sampler`` is a known sampler and ``s.settings`` are settings it takes,
    each of its kind (samplers.resolve_settings, samplers.check_settings)."""
    from .samplers import SAMPLERS, check_setting_values, check_settings, resolve_settings

    if s.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {s.sampler!r}; choose from {', '.join(SAMPLERS)}")
    try:
        settings = resolve_settings(s.sampler, dataclasses.asdict(s.settings))
        check_settings(s.sampler, settings)
        check_setting_values(s.sampler, settings)  # each value in the sampler's own domain (eta in [0, 1] ...)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _sample_checks(s: SampleConfig, d: DiffusionConfig | None) -> list[tuple[bool, str]]:
    """The sample section in its domain; ``d``: the run's process (None: a check without a run skips the grid's
    fit to it)."""
    from .schedules import SIGMA_GRIDS

    return [
        (1 <= s.steps <= MAX_T, f"sample.steps must be >= 1 and <= {MAX_T}, got {s.steps}"),
        (
            math.isfinite(s.guidance) and 0 <= s.guidance <= MAX_GUIDANCE,
            f"sample.guidance must be in [0, {MAX_GUIDANCE:g}] (0 unconditional, 1 conditional), got {s.guidance!r}",
        ),
        (0.0 <= s.guidance_rescale <= 1.0, "sample.guidance_rescale must be in [0, 1]"),
        (
            math.isfinite(s.retrieval_guidance) and s.retrieval_guidance >= 0,
            f"sample.retrieval_guidance must be >= 0 (0 = off), got {s.retrieval_guidance!r}",
        ),
        (
            math.isfinite(s.autoguidance) and s.autoguidance >= 0,
            f"sample.autoguidance must be >= 0 (1 = off), got {s.autoguidance!r}",
        ),
        (
            s.guidance_interval is None
            or (len(s.guidance_interval) == 2 and 0 <= s.guidance_interval[0] < s.guidance_interval[1]),
            "sample.guidance_interval needs two sigmas 0 <= lo < hi",
        ),
        (s.grid in SIGMA_GRIDS, f"sample.grid must be one of {SIGMA_GRIDS}"),
        (
            not (s.grid == "uniform_t" and d is not None and d.process == "continuous"),
            "sample.grid=uniform_t needs a discrete (DDPM-trained) model",
        ),
        (
            not (s.grid == "uniform_t" and d is not None and d.process == "discrete" and s.steps > d.T),
            f"sample.steps={s.steps} on the uniform_t grid asks for more steps than the model's {d and d.T} "
            "timesteps (diffusion.T)",
        ),
        (s.rho > 0, f"sample.rho must be > 0, got {s.rho!r}"),
        (s.spacing in ("leading", "trailing", "linspace"), "sample.spacing must be leading, trailing or linspace"),
        (1 <= s.n <= MAX_SAMPLES, f"sample.n must be >= 1 and <= {MAX_SAMPLES}, got {s.n}"),
        _between(s.seed, 0, MAX_SEED, "sample.seed"),
        _between(s.batch_size, 1, MAX_BATCH, "sample.batch_size"),
        (s.labels in SAMPLE_LABELS, f"sample.labels must be one of {', '.join(SAMPLE_LABELS)}, got {s.labels!r}"),
    ]


OBJECTIVES = (
    "denoising",
    "progressive",
    "consistency_distillation",
    "consistency_training",
    "distribution_matching",
    "reflow",
)
TEACHER_OBJECTIVES = ("progressive", "consistency_distillation", "distribution_matching", "reflow")


def _objective_checks(o: ObjectiveConfig, d: DiffusionConfig, s: SampleConfig) -> list[tuple[bool, str]]:
    from .schedules import SIGMA_GRIDS

    consistency = o.name in ("consistency_distillation", "consistency_training")
    return [
        (o.name in OBJECTIVES, f"objective.name must be one of {OBJECTIVES}"),
        (
            d.process != "categorical" or (o.name == "denoising" and d.boundary != "consistency"),
            f"diffusion.process=categorical (sequences of symbols) trains with objective.name=denoising and no "
            f"consistency boundary; objective.name={o.name} / diffusion.boundary={d.boundary} need Gaussian noise",
        ),
        (o.name not in TEACHER_OBJECTIVES or bool(o.teacher), f"objective.name={o.name} needs objective.teacher"),
        (not consistency or d.boundary == "consistency", f"{o.name} needs diffusion.boundary=consistency"),
        (o.name != "progressive" or o.teacher_steps >= 2, "progressive needs objective.teacher_steps >= 2"),
        (  # (a grid under another objective is read by nothing: refused as such by --set, RUN_READ_WHEN)
            o.teacher_grid in ("", *SIGMA_GRIDS),
            f"objective.teacher_grid must be one of {SIGMA_GRIDS}, got {o.teacher_grid!r}",
        ),
        (
            not (o.name == "progressive" and o.teacher_grid == "uniform_t" and d.process == "continuous"),
            "objective.teacher_grid=uniform_t needs a discrete (DDPM-trained) teacher",
        ),
        _between(o.max_steps, 0, MAX_T, "objective.max_steps"),
        (2 <= o.ct_steps_start <= o.ct_steps_end <= MAX_T, "need 2 <= objective.ct_steps_start <= ct_steps_end"),
        (o.ct_P_std > 0, f"objective.ct_P_std must be > 0, got {o.ct_P_std!r}"),
        _lognormal_check(o.ct_P_mean, o.ct_P_std, "objective.ct_P"),
        (o.guidance >= 0, f"objective.guidance must be >= 0, got {o.guidance!r}"),
        _between(o.autoguidance, 0, 100, "objective.autoguidance"),
        (
            o.name != "distribution_matching" or o.max_steps >= 1,
            "distribution_matching needs objective.max_steps >= 1 (the generator's steps)",
        ),
        _between(o.dmd_fake_updates, 1, 1000, "objective.dmd_fake_updates"),
        _between(o.dmd_fake_lr, 0, 1, "objective.dmd_fake_lr"),
        _between(o.reflow_pairs, 0, MAX_SAMPLES, "objective.reflow_pairs"),
        _within_distilled_steps(o, s),
    ]


def _within_distilled_steps(o: ObjectiveConfig, s: SampleConfig) -> tuple[bool, str]:
    """A student (objective.max_steps > 0) is sampled in at most max_steps network evaluations: sample.steps, and
    what the sampler spends on them (heun's second evaluations, pc's corrector, adaptive's own steps)."""
    from .samplers import SAMPLERS, nfe

    said = (  # a student's limit is its distillation's; on another objective it is the setting's alone
        f"this model was distilled for at most {o.max_steps} sampling steps"
        if o.name in TEACHER_OBJECTIVES
        else f"objective.max_steps={o.max_steps} limits sampling to at most {o.max_steps} steps"
    )
    if o.max_steps == 0:
        return True, ""
    if s.steps > o.max_steps:
        return False, f"{said}; sample.steps={s.steps} asks for more"
    if s.sampler not in SAMPLERS:  # named by the sampler's own check
        return True, ""
    try:
        n = nfe(s.sampler, s.steps, **{k: v for k, v in dataclasses.asdict(s.settings).items() if v is not None})
    except (TypeError, ValueError):  # settings the sampler does not take: named by their own check
        return True, ""
    if n is None:
        return False, (
            f"{said} (network evaluations); sample.sampler={s.sampler} chooses its own steps, as many as its "
            "tolerances need: sample it with its own sampler, or one of one evaluation a step"
        )
    return n <= o.max_steps, (
        f"{said} (network evaluations); sample.sampler={s.sampler} spends {n} on sample.steps={s.steps}: give fewer "
        "steps, or a sampler of one evaluation a step"
    )


def _process_checks(m: ModelConfig, d: DiffusionConfig) -> list[tuple[bool, str]]:
    """The networks that carry their own process (model.build_model): the sequence transformer diffuses symbols
    (categorical), the table model's numeric columns a continuous sigma range; every other network a Gaussian
    process (discrete or continuous)."""
    return [
        (
            (m.net == "transformer") == (d.process == "categorical"),
            f"model.net=transformer (sequences of symbols) goes with diffusion.process=categorical, and only it; "
            f"this run has model.net={m.net} and diffusion.process={d.process}",
        ),
        (
            m.net != "table" or d.process == "continuous",
            f"the table model (model.net=table) diffuses its numeric columns over a continuous sigma range: it needs "
            f"diffusion.process=continuous, got {d.process}",
        ),
    ]


def _autoguidance_checks(t: TrainConfig, s: SampleConfig) -> list[tuple[bool, str]]:
    return [
        (
            s.autoguidance == 1.0 or t.guide_at > 0,
            f"sample.autoguidance={s.autoguidance:g} needs a guide model, and this run keeps none "
            f"(train.guide_at=0); use sample.autoguidance=1",
        ),
    ]


def without_guide(cfg: RunConfig) -> RunConfig:
    """The config of a copy of the model that travels without its guide model (the ONNX and diffusers exports):
    autoguidance off, so the copy samples as the model alone (docs/interop.md)."""
    return replace(cfg, train=replace(cfg.train, guide_at=0.0), sample=replace(cfg.sample, autoguidance=1.0))


def _retrieval_checks(m: ModelConfig, t: TrainConfig, s: SampleConfig) -> list[tuple[bool, str]]:
    return [
        (
            t.caption_drop_prob == 0 or m.text_retrieval > 0,
            "train.caption_drop_prob needs model.text_retrieval > 0 (it drops the caption and keeps the neighbours)",
        ),
        (
            s.retrieval_guidance == 0 or t.caption_drop_prob > 0,
            "sample.retrieval_guidance needs a model.text_retrieval run trained with train.caption_drop_prob > 0 "
            "(a model that never saw its caption dropped alone has no D(x | neighbours))",
        ),
    ]


def validate(cfg: RunConfig) -> RunConfig:
    """Every field in its domain (one place for all of them); returns cfg unchanged when it is usable.

    Raises ConfigError with a one-line message naming the first field out of its domain: a NaN or infinite
    number, a size <= 0 or absurdly large (refused before anything is allocated), a schedule parameter
    outside its domain (0 < beta < 1, rho > 0, sigma_data > 0), an unknown name.
    """
    typed_fields(cfg)
    checks = _finite_numbers(cfg)
    checks += _data_checks(cfg.data) + _model_checks(cfg.model) + _diffusion_checks(cfg.diffusion)
    checks += _train_checks(cfg.train) + _sample_checks(cfg.sample, cfg.diffusion)
    checks += _objective_checks(cfg.objective, cfg.diffusion, cfg.sample)
    checks += _process_checks(cfg.model, cfg.diffusion)
    checks += _autoguidance_checks(cfg.train, cfg.sample)
    checks += _retrieval_checks(cfg.model, cfg.train, cfg.sample)
    checks.append(
        (
            cfg.sample.labels == "none" or cfg.model.num_classes > 0,
            f"sample.labels={cfg.sample.labels} draws class labels, and this model is not class-conditional "
            "(model.num_classes = 0); use sample.labels=none",
        )
    )
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    if unread_setting(cfg, "sample.sampler") is None:  # (a sequence run takes its own reverse steps, no sampler)
        _check_sampler(cfg.sample)
    return cfg


def checked_sample(cfg: RunConfig, sample: SampleConfig) -> SampleConfig:
    """``sample`` once validate has checked it as ``cfg``'s sampling (a grid, sampler and settings the run's
    process takes; a student's steps within those it was distilled for): how a command vets the sampling its flags
    ask for before anything loads or draws."""
    return validate(replace(cfg, sample=sample)).sample


def with_sampler(sample: SampleConfig, sampler: str, keep: typing.Collection[str] = ()) -> SampleConfig:
    """``sample`` drawing with ``sampler``: the settings it holds that ``sampler`` does not take are dropped -
    they were its own sampler's (a diffusers DDPM folder's ``variance``, a run trained with
    ``sample.settings.eta=0.5``), and the sampler asked for instead runs at its defaults there - except those in
    ``keep`` (the ones a command line gave, which validate then names if ``sampler`` does not take them). An
    unknown ``sampler`` is left for validate to name."""
    from .samplers import SAMPLERS, sampler_settings

    sample = replace(sample, sampler=sampler)
    if sampler not in SAMPLERS:
        return sample
    takes, held = sampler_settings(sampler), sample.settings
    drop = {
        f.name: None
        for f in fields(held)
        if getattr(held, f.name) is not None and f.name not in takes and f.name not in keep
    }
    return replace(sample, settings=replace(held, **drop)) if drop else sample


# Settings that only some runs read. Each entry: key -> (is it read by this config?, who reads it, the keys that
# decide). Each condition is necessary for the setting to change anything, so a ``--set`` of the key where it is false
# would be silently ignored: ``refuse_unread`` refuses it instead (``model.patch=4`` on a U-Net, ``diffusion.beta_end``
# on a cosine schedule, ``train.eval_n`` without quick evaluations). The data section's are declared by each source
# beside its loader (``data.SOURCES``, ``Source.reads``: ``data.toy=moons`` on MNIST).
CONSISTENCY_OBJECTIVES = ("consistency_distillation", "consistency_training")


def data_readers() -> dict[str, tuple[str, ...]]:
    """data field -> the sources that read it, for every field only some sources read (``data.Source.reads``)."""
    from .data import SOURCES

    readers: dict[str, tuple[str, ...]] = {}
    for name, source in SOURCES.items():
        for f in source.reads:
            readers[f] = (*readers.get(f, ()), name)
    return readers


def _read_by_net(who: str, *nets: str) -> tuple[typing.Callable[[RunConfig], bool], str, tuple[str, ...]]:
    """A RUN_READ_WHEN entry: read when model.net is one of ``nets``."""
    return (lambda c: c.model.net in nets, who, ("model.net",))


def _read_by_objective(who: str, *names: str) -> tuple[typing.Callable[[RunConfig], bool], str, tuple[str, ...]]:
    """A RUN_READ_WHEN entry: read when objective.name is one of ``names``."""
    return (lambda c: c.objective.name in names, f"{who} (objective.name={' | '.join(names)})", ("objective.name",))


_UNET, _DIT = "the U-Net (model.net=unet)", "the DiT (model.net=dit)"
_UNET_DIT = "the U-Net and the DiT (model.net=unet | dit)"
_VECTOR_NETS = "the MLP, table and sequence networks (model.net=mlp | table | transformer)"
_PRECOND_NETS = ("unet", "dit", "mlp")  # model.wrap_net: the networks that Precond turns into D(x, sigma)
_PRECOND = (
    "the networks wrapped by the preconditioning (model.net=unet | dit | mlp; the table and sequence models fix their "
    "own: EDM's on the numeric columns, the categorical process's loss)"
)
RUN_READ_WHEN: dict[str, tuple[typing.Callable[[RunConfig], bool], str, tuple[str, ...]]] = {
    # networks (nets/, tabular.py, sequences.py)
    "model.channels": _read_by_net(_UNET_DIT, "unet", "dit"),
    "model.channel_mult": _read_by_net(_UNET, "unet"),
    "model.num_res_blocks": _read_by_net(_UNET, "unet"),
    "model.attn_resolutions": _read_by_net(_UNET, "unet"),
    "model.groups": _read_by_net(_UNET, "unet"),
    "model.checkpoint": _read_by_net(_UNET_DIT, "unet", "dit"),
    "model.head_channels": _read_by_net(
        "the U-Net, the DiT and the sequence transformer", "unet", "dit", "transformer"
    ),
    "model.patch": _read_by_net(_DIT, "dit"),
    "model.depth": _read_by_net(_DIT, "dit"),
    "model.pos_embedding": _read_by_net(_DIT, "dit"),
    "model.mlp_width": _read_by_net(_VECTOR_NETS, "mlp", "table", "transformer"),
    "model.mlp_depth": _read_by_net(_VECTOR_NETS, "mlp", "table", "transformer"),
    "model.rotary": _read_by_net("the sequence transformer (model.net=transformer)", "transformer"),
    "model.retrieval_input": (
        lambda c: c.model.text_retrieval > 0,
        "retrieval conditioning (model.text_retrieval > 0)",
        ("model.text_retrieval",),
    ),
    # the process and the loss (model.py, losses.py, sequences.py)
    **dict.fromkeys(
        ("diffusion.schedule", "diffusion.T"),
        (lambda c: c.diffusion.process == "discrete", "the discrete process", ("diffusion.process",)),
    ),
    **dict.fromkeys(
        ("diffusion.beta_start", "diffusion.beta_end"),
        (
            lambda c: c.diffusion.process == "discrete" and c.diffusion.schedule == "linear",
            "the linear schedule of the discrete process",
            ("diffusion.process", "diffusion.schedule"),
        ),
    ),
    # a discrete model's range is its schedule's; the table model and rectified-flow draws read these
    **dict.fromkeys(
        ("diffusion.sigma_min", "diffusion.sigma_max"),
        (
            lambda c: (
                c.diffusion.process != "discrete"
                or c.diffusion.sigma_sampling == "rf_uniform"
                or c.model.net in ("table", "transformer")
            ),
            "a continuous process, the table and sequence models and rectified-flow draws (a discrete process takes "
            "its range from its schedule)",
            ("diffusion.process", "diffusion.sigma_sampling", "model.net"),
        ),
    ),
    **dict.fromkeys(
        ("diffusion.P_mean", "diffusion.P_std"),
        (
            lambda c: c.diffusion.sigma_sampling == "lognormal",
            "log-normal noise levels (diffusion.sigma_sampling=lognormal)",
            ("diffusion.sigma_sampling",),
        ),
    ),
    **dict.fromkeys(
        ("diffusion.parameterization", "diffusion.sigma_data", "diffusion.weighting"),
        _read_by_net(_PRECOND, *_PRECOND_NETS),
    ),
    # the table model is conditioned on log sigma (EDM's c_noise), the one value its continuous process accepts
    "diffusion.noise_conditioning": _read_by_net(
        "the networks conditioned on the noise level (model.net=unet | dit | mlp | table; a sequence model is told "
        "the time of its categorical process)",
        *_PRECOND_NETS,
        "table",
    ),
    "diffusion.min_snr_gamma": (
        lambda c: c.diffusion.weighting == "min_snr" and c.model.net in _PRECOND_NETS,
        "min-SNR weighting (diffusion.weighting=min_snr) of the preconditioned networks (model.net=unet | dit | mlp)",
        ("diffusion.weighting", "model.net"),
    ),
    "diffusion.discrete": _read_by_net("sequence diffusion (model.net=transformer)", "transformer"),
    "diffusion.masked_bound": (
        lambda c: c.model.net == "transformer" and c.diffusion.discrete == "masked",
        "masked sequence diffusion (model.net=transformer, diffusion.discrete=masked)",
        ("model.net", "diffusion.discrete"),
    ),
    # training (training/)
    "train.channels_last": _read_by_net("the image networks (model.net=unet | dit)", "unet", "dit"),
    "train.lr_cooldown": (
        lambda c: c.train.lr_decay == "cooldown",
        "the cooldown schedule (train.lr_decay=cooldown)",
        ("train.lr_decay",),
    ),
    "train.ema_warmup_ratio": (
        lambda c: c.train.ema_halflife_images > 0,
        "the EMA (train.ema_halflife_images > 0)",
        ("train.ema_halflife_images",),
    ),
    **dict.fromkeys(
        ("train.eval_n", "train.eval_classifier"),
        (
            lambda c: c.train.eval_every_images > 0,
            "the quick evaluation (train.eval_every_images > 0)",
            ("train.eval_every_images",),
        ),
    ),
    # conditioning dropout (training) and classifier-free guidance (generate.py)
    **dict.fromkeys(
        ("train.cond_drop_prob", "sample.guidance"),
        (
            lambda c: c.model.conditional,
            "a class-, context- or text-conditioned model",
            ("model.num_classes", "model.context_dim", "model.text_dim"),
        ),
    ),
    # at guidance 1 the conditional branch alone is evaluated (guidance.guided_denoiser): nothing to rescale
    "sample.guidance_rescale": (
        lambda c: c.model.conditional and c.sample.guidance != 1.0,
        "classifier-free guidance (a conditioned model at sample.guidance != 1)",
        ("model.num_classes", "model.context_dim", "model.text_dim", "sample.guidance"),
    ),
    # sampling (generate.py; the diffusers export reads sample.spacing)
    "sample.guidance_interval": (
        lambda c: (c.model.conditional and c.sample.guidance != 1.0) or c.sample.autoguidance != 1.0,
        "classifier-free guidance (a conditioned model at sample.guidance != 1) or autoguidance "
        "(sample.autoguidance != 1)",
        ("model.num_classes", "model.context_dim", "model.text_dim", "sample.guidance", "sample.autoguidance"),
    ),
    # a sequence model samples by its process's own reverse steps (sequences.py): no sampler, grid or settings
    **dict.fromkeys(
        ("sample.sampler", "sample.grid", *(f"sample.settings.{f.name}" for f in dataclasses.fields(SamplerSettings))),
        (
            lambda c: c.model.net != "transformer",
            "the samplers over sigma grids (a sequence model, model.net=transformer, takes its process's own reverse "
            "steps, sample.steps of them)",
            ("model.net",),
        ),
    ),
    # generate.clamps_x0: images and volumes in pixel space (a signal's 1-D U-Net is ruled out by sample's data check)
    "sample.clip_denoised": (
        lambda c: c.model.net in ("unet", "dit") and not c.data.latents_of,
        "images and volumes in pixel space (model.net=unet | dit without data.latents_of; latents, vectors, signals "
        "and tables are never clamped)",
        ("model.net", "data.latents_of"),
    ),
    "sample.rho": (
        lambda c: c.sample.grid == "karras" and c.model.net != "transformer",
        "the karras grid (sample.grid=karras) of the samplers over sigma grids",
        ("sample.grid", "model.net"),
    ),
    "sample.spacing": (
        lambda c: c.diffusion.process == "discrete",
        "the uniform_t grid of a discrete (DDPM-trained) model",
        ("diffusion.process",),
    ),
    # objectives (training/objective.py, shortcuts/objectives.py)
    **dict.fromkeys(
        ("objective.teacher", "objective.guidance", "objective.autoguidance"),
        _read_by_objective("the distillation objectives", *TEACHER_OBJECTIVES),
    ),
    **dict.fromkeys(
        ("objective.teacher_steps", "objective.teacher_grid", "objective.stage_teacher"),
        _read_by_objective("progressive distillation", "progressive"),
    ),
    **dict.fromkeys(
        ("objective.ct_steps_start", "objective.ct_steps_end", "objective.ct_P_mean", "objective.ct_P_std"),
        _read_by_objective("the consistency objectives", *CONSISTENCY_OBJECTIVES),
    ),
    "objective.reflow_pairs": _read_by_objective("reflow", "reflow"),
    **dict.fromkeys(
        ("objective.dmd_fake_updates", "objective.dmd_fake_lr"),
        _read_by_objective("distribution matching", "distribution_matching"),
    ),
}


# Settings kept so that every config.json written with them still loads, but read by no code path.
READ_BY_NOTHING = {
    "train.num_workers": "training indexes the data set in memory, with no data loader processes",
}


def _value_at(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def unread_setting(cfg: Any, key: str) -> str | None:
    """Why nothing reads the setting ``key`` (``section.name``) of ``cfg``, or None when something may: the data
    section of any config (a diffusion, autoencoder or contrastive run), every section of a :class:`RunConfig`, and
    the settings of an autoencoder's or text encoder's config in its class's ``READ_WHEN``."""
    section, _, name = key.partition(".")
    if key in READ_BY_NOTHING and isinstance(cfg, RunConfig):
        return f"{key} is read by nothing: {READ_BY_NOTHING[key]}"
    if key == "data.latents_of" and not isinstance(cfg, RunConfig):  # train-autoencoder, train-clip: pixels
        return f"{key} is read only by train (a diffusion run on an autoencoder's latents); this one trains on pixels"
    readers = data_readers().get(name) if section == "data" and hasattr(cfg, "data") else None
    if readers is not None:
        ok, who, deciding = cfg.data.source in readers, f"data.source={' | '.join(readers)}", ("data.source",)
    elif isinstance(cfg, RunConfig) and key in RUN_READ_WHEN:
        read, who, deciding = RUN_READ_WHEN[key]
        ok = read(cfg)
    elif key in getattr(cfg, "READ_WHEN", {}):  # an autoencoder's or text encoder's own table
        read, who, deciding = cfg.READ_WHEN[key]
        ok = read(cfg)
    else:
        return None
    if ok:
        return None
    has = ", ".join(f"{k}={shown(_value_at(cfg, k))}" for k in deciding)
    return f"{key} is read only by {who}, and this run has {has}"


def unread_flag(cfg: Any, key: str, flag: str) -> str | None:
    """The one-line refusal of a command-line ``flag`` that sets ``key`` where nothing reads it (``--guidance`` on
    an unconditional run: the rule of :func:`unread_setting`, the same as for ``--set KEY=...``), or None."""
    why = unread_setting(cfg, key)
    return None if why is None else f"{flag} changes nothing: {why}"


def shown(v: Any) -> str:
    """A setting's value as --set writes it (a tuple: comma-separated)."""
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


def refuse_unread(cfg: Any, assignments: list[str]) -> Any:
    """``cfg`` unchanged when every ``key=value`` of ``assignments`` (the user's ``--set``, already applied) sets
    something this run reads; else a one-line ConfigError: the setting would change nothing (data_readers,
    RUN_READ_WHEN)."""
    for a in assignments:
        key = a.split("=", 1)[0].strip()
        why = unread_setting(cfg, key)
        if why is not None:
            raise ConfigError(f"--set {a.strip()} changes nothing: {why}")
    return cfg
