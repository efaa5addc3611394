"""Loading a run folder and generating from it: the library entry point every front-end calls.

    run = load_run("runs/demo")                       # EMA weights, eval mode
    x = generate(run.model, seeds=range(64), sample=run.config.sample, data_shape=run.data_shape)

``generate`` builds the sigma grid, binds the conditioning, applies denoiser wrappers (clamping, guidance,
editing) and runs the sampler batch by batch with per-image seeds: image k depends only on seeds[k].
"""

from __future__ import annotations

import json
import math
import numbers
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .cond import CondError, as_cond, check_cond, slice_cond, trained_classes, with_seed_labels
from .config import ConfigError, RunConfig, SampleConfig, check_sample, from_json, validate
from .guidance import autoguided, guided_denoiser
from .io import first_line, state_dict_mismatch
from .precond import Precond
from .provenance import describe_wrapper, note_run, note_sampling
from .samplers import get_sampler
from .schedules import (
    DISCRETE_SIGMA_MAX,
    default_grid,
    grid_sigma_max,
    make_sigmas,
    ode_sigma_low,
    unclamped_timesteps,
)
from .types import Callback, Cond, Denoiser, NoiseSource

if TYPE_CHECKING:
    from .latent import LatentCodec


class SamplingError(ValueError):
    """A draw whose values went non-finite (a step size or scale the model cannot take); one line for the user."""


def run_kind(info: dict, data_shape) -> str:
    """The data kind run.json records (a run written before it recorded one: image for C, H, W, else vector)."""
    return info.get("kind", "image" if len(data_shape) == 3 else "vector")


class RunError(ValueError):
    """A run folder that cannot be loaded; one line for the user."""


# Autoguidance's guide model travels with the model object it belongs to (load_run attaches it; training attaches
# the one it keeps), so every caller of generate() with a run's model samples as the run's config says.
_GUIDES: weakref.WeakKeyDictionary[Precond, Precond] = weakref.WeakKeyDictionary()


# Likewise the classes a run's training data held (run.json, cond.trained_classes): what sample.labels draws from.
_DATA_CLASSES: weakref.WeakKeyDictionary[Precond, list[int]] = weakref.WeakKeyDictionary()


def attach_data_classes(model: Precond, classes: Sequence[int]) -> None:
    """Make ``classes`` (a run's :func:`cond.trained_classes`) the classes ``sample.labels`` draws for ``model``."""
    _DATA_CLASSES[model] = [int(c) for c in classes]


def label_classes(model: Precond) -> int | list[int]:
    """What ``sample.labels`` draws ``model``'s classes from (cond.seed_labels): the classes its run's training
    data held where load_run attached them (a class no example had was never trained), else its network's K."""
    held = _DATA_CLASSES.get(model)
    return held if held and num_classes(model) > 0 else num_classes(model)


def attach_guide(model: Precond, guide: Precond) -> None:
    """Make ``guide`` the weaker model that ``sample.autoguidance`` steers ``model`` away from."""
    _GUIDES[model] = guide


def guide_of(model: Precond) -> Precond | None:
    """The guide model attached to ``model`` (None when it has none)."""
    return _GUIDES.get(model)


def before_guide(sample: SampleConfig, model: Precond) -> SampleConfig:
    """``sample`` with autoguidance off while ``model`` has no guide yet: what training samples with before it has
    reached train.guide_at (the records say which ran)."""
    return sample if guide_of(model) is not None else replace(sample, autoguidance=1.0)


@contextmanager
def network_evaluations(model: Precond) -> Iterator[dict[str, int]]:
    """Count the rows the denoising networks evaluate while the block runs: ``model`` and its autoguidance guide.

    A sampler's NFE counts calls of the denoiser it is handed; behind one call the networks may run more than once
    per image: classifier-free guidance evaluates the conditional and the unconditional row (outside its interval
    only the first), autoguidance the guide model as well. Divided by the images sampled, ``counter["rows"]`` is
    the networks' evaluations per image that the sampling really cost."""
    counter = {"rows": 0}

    def count(module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        counter["rows"] += int(x.shape[0])

    models = [m for m in (model, guide_of(model)) if m is not None]
    handles = [m.register_forward_pre_hook(count, with_kwargs=True) for m in models]
    try:
        yield counter
    finally:
        for h in handles:
            h.remove()


@dataclass
class LoadedRun:
    path: Path
    config: RunConfig
    model: Precond  # eval mode, on `device`
    data_shape: tuple[int, ...]
    info: dict  # run.json
    weights_file: str = ""  # the weights file loaded (ema.safetensors or model.safetensors)
    # the sha256 of the bytes loaded, and whether run.json vouched for them (None: a run from before digests):
    # what a manifest records, whatever training writes over the file while the command runs
    weights_sha256: str | None = None
    weights_verified: bool | None = None
    codec: LatentCodec | None = None  # a latent run's autoencoder (run.json latents_of; latent.py), else None
    retrieval: Any = None  # model.text_retrieval: the run's retrieval.Database (retrieval.safetensors), else None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One output's shape: the decoded images' (C, H, W) for a latent run, else ``data_shape``."""
        return self.codec.image_shape if self.codec is not None else self.data_shape

    @property
    def kind(self) -> str:
        return run_kind(self.info, self.data_shape)

    def to_data_units(self, x: Tensor) -> Tensor:
        """Outputs (the model's [-1, 1] units) in the data's own units, by the map ``data.scale`` fitted at training
        (data/scale.py); ``x`` itself for a run without one."""
        from .data.scale import to_data_units

        d = self.config.data
        return to_data_units(x, d.scale_lo, d.scale_hi) if d.scale_lo else x

    def to_model_units(self, x: Tensor) -> Tensor:
        """Inputs in the data's own units (series to fill in, say) in the model's units: the inverse of
        :meth:`to_data_units`, clamped as training clamped (``data.scale=percentile``)."""
        from .data.scale import to_model_units

        d = self.config.data
        return to_model_units(x, d.scale_lo, d.scale_hi, clamp=d.scale == "percentile") if d.scale_lo else x

    def sampling_plan(self, sample: SampleConfig) -> tuple[Tensor, dict, dict]:
        """:func:`sampling_plan` of this run for ``sample``: its clamping and its tuned grids (``grids/``), the
        plan :func:`generate` samples by when handed ``grid_dir=run.path / "grids"`` (or the plan itself)."""
        clamped = clamps_x0(sample, self.data_shape, self.codec)
        return sampling_plan(self.model, sample, clamped=clamped, grid_dir=self.path / "grids")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise RunError(f"{path.parent} is not a complete run folder: {path.name} is missing")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is damaged ({what} is not valid JSON: {e})") from None
    if not isinstance(d, dict):
        raise RunError(f"{path} is damaged ({what} must hold an object)")
    return d


def _check_weights_digest(run: Path, wfile: Path, data: bytes, info: dict) -> dict:
    """The weights file must be the one run.json vouches for (sha256); runs from before digests pass unchecked.

    Training writes the weights files first and run.json last, so a reader that meets a new file with the old
    run.json reads run.json once more before refusing.
    """
    from .training.checkpoint import RUN_INFO, WEIGHTS_KEY, sha256_bytes

    if WEIGHTS_KEY not in info:
        return info
    digest = sha256_bytes(data)
    for attempt in range(3):
        recorded = info.get(WEIGHTS_KEY)
        if recorded is None:
            raise RunError(f"{run} has no trained weights yet (training has not written its first checkpoint)")
        if not isinstance(recorded, dict):
            raise RunError(f"{run / RUN_INFO} is damaged ({WEIGHTS_KEY} must hold an object)")
        if recorded.get(wfile.name) == digest:
            return info
        if attempt < 2:
            time.sleep(0.2)
            info = _read_json(run / RUN_INFO, "run.json")
    raise RunError(
        f"{wfile} is not the file run.json records (sha256 differs): its training was interrupted while "
        f"writing it; run the same train command again to finish"
    )


def _load_weights(
    path: Path, wfile: Path, info: dict, cfg: RunConfig, data_shape: tuple[int, ...], device
) -> tuple[Precond, dict, str]:
    """The network of config.json with the weights of ``wfile`` (checked against run.json's digest), run.json as
    read, and the sha256 of the bytes loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from .model import build_model
    from .training.checkpoint import sha256_bytes

    if not wfile.is_file():  # recorded in run.json (the guide model) but gone
        raise RunError(f"{wfile} is missing, though run.json records it; restore it, or train the run again")
    try:
        data = wfile.read_bytes()
        digest = sha256_bytes(data)
        info = _check_weights_digest(path, wfile, data, info)
        state = {k: v.to(device) for k, v in load(data).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if isinstance(e, RunError):
            raise
        raise RunError(f"{wfile} is damaged ({first_line(e)})") from None
    model = build_model(cfg, data_shape)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RunError(f"{wfile} does not match the network in config.json ({state_dict_mismatch(e)})") from None
    return model, info, digest


def other_run(path: Path) -> tuple[str, str] | None:
    """(weights file, what it is) when the folder ``path`` holds an autoencoder's or a text encoder's run - whose
    config.json is of another kind than a diffusion run's -, else None."""
    from .autoencoder import WEIGHTS_FILE as AUTOENCODER
    from .contrastive.model import WEIGHTS_NAME as CONTRASTIVE

    kinds = ((AUTOENCODER, "an autoencoder (train-autoencoder)"), (CONTRASTIVE, "a text encoder (train-clip)"))
    found = next(((name, what) for name, what in kinds if (Path(path) / name).is_file()), None)
    if found is not None:
        return found
    try:  # one stopped before its weights: its config.json's sections say which (its "loss"; a tower's embed_dim)
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict) or "diffusion" in cfg:
        return None
    if isinstance(cfg.get("loss"), dict):
        return AUTOENCODER, "an unfinished autoencoder (train-autoencoder)"
    if isinstance(cfg.get("model"), dict) and "embed_dim" in cfg["model"]:
        return CONTRASTIVE, "an unfinished text encoder (train-clip)"
    return None


def refuse_other_runs(path: Path) -> None:
    """A one-line RunError when the folder ``path`` holds an autoencoder's or a text encoder's run (:func:`other_run`;
    read as a diffusion run's, its config.json would be called damaged)."""
    other = other_run(path)
    if other is not None and not (Path(path) / "run.json").is_file():
        raise RunError(f"{path} holds {other[1]}, not a diffusion run (train)")


def load_run(path: str | Path, *, weights: str = "ema", device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of a run folder from config.json + run.json + ``<weights>.safetensors``.

    ``weights``: ``ema`` (default; falls back to ``model`` when the run kept no EMA - an EMA file run.json records
    that is missing is an error, not a fallback) or ``model`` (raw).
    A diffusers folder (``save_pretrained`` layout) loads too, as the run its U-Net and scheduler describe
    (``weights`` does not apply; see :mod:`torchdiffusion.interop.diffusers_in`); one we exported ourselves loads
    back as its run (:func:`torchdiffusion.interop.export.load_diffusers_export`); an ONNX export (a folder
    holding ``denoiser.onnx``, or the file) loads with its network run by ONNX Runtime on the CPU
    (:func:`torchdiffusion.interop.onnx.load_onnx`).
    Raises :class:`RunError` (one line) for a missing folder or missing/damaged files.
    """
    from .interop.diffusers_in import is_diffusers_folder, load_diffusers
    from .interop.export import is_diffusers_export, load_diffusers_export
    from .interop.onnx import load_onnx, onnx_file
    from .training.checkpoint import GUIDE_FILE, WEIGHTS_KEY

    path = Path(path).expanduser()  # ("~/runs/demo" quoted past the shell, as --out takes it)
    onnx = onnx_file(path) is not None
    if not onnx and path.is_file():
        raise RunError(f"{path} is a file, not a run folder")
    if not onnx and not path.is_dir():
        raise RunError(f"run folder {path} does not exist")
    export = (
        "onnx" if onnx else "ours" if is_diffusers_export(path) else "diffusers" if is_diffusers_folder(path) else ""
    )
    if export and weights != "ema":  # the default: the one network there is
        raise RunError(
            f"{path} is an export holding one network; --weights {weights} chooses between a run folder's raw and "
            "EMA weights"
        )
    if export == "onnx":  # an ONNX export ('torchdiffusion export --format onnx'): ONNX Runtime
        return load_onnx(path)
    if export == "ours":  # our own run, exported with 'torchdiffusion export --format diffusers'
        return load_diffusers_export(path, device=device)
    if export == "diffusers":
        run = load_diffusers(path, device=device)
        note_run(run)
        return run
    refuse_other_runs(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise RunError(f"{path} is not a run folder: config.json is missing")
    try:
        cfg = validate(from_json(cfg_path.read_text()))
    except ConfigError as e:
        raise RunError(f"{cfg_path} is damaged: {e}") from None
    info = _read_json(path / "run.json", "run.json")
    data_shape = tuple(int(v) for v in info.get("data_shape", ()))
    if not data_shape:
        raise RunError(f"{path / 'run.json'} is damaged: no data_shape")
    if weights not in ("ema", "model"):
        raise RunError(f"weights must be 'ema' or 'model', got {weights!r}")
    wfile = path / f"{weights}.safetensors"
    if weights == "ema" and not wfile.is_file():
        if wfile.name in (info.get(WEIGHTS_KEY) or {}):  # the run kept an EMA: its raw weights are not a stand-in
            raise RunError(
                f"{wfile} is missing, though run.json records it (the run's averaged weights); restore it, or "
                "use the raw weights with --weights model"
            )
        wfile = path / "model.safetensors"
    if not wfile.is_file():
        raise RunError(f"{path} has no trained weights yet ({wfile.name} is missing)")
    model, info, digest = _load_weights(path, wfile, info, cfg, data_shape, device)
    verified = WEIGHTS_KEY in info or None  # (_check_weights_digest passed: run.json records these bytes)
    if keeps_guide(info):  # the run kept a guide model (train.guide_at)
        guide, info, _ = _load_weights(path, path / GUIDE_FILE, info, cfg, data_shape, device)
        attach_guide(model, guide.to(device).eval().requires_grad_(False))
    model.to(device).eval().requires_grad_(False)
    if cfg.model.num_classes > 0:
        attach_data_classes(model, trained_classes(cfg.model.num_classes, info))
    from .latent import codec_of_run

    try:
        codec = codec_of_run(path, info, device=device)
    except ConfigError as e:
        raise RunError(str(e)) from None
    retrieval = None
    if cfg.model.text_retrieval:
        from .retrieval import RetrievalError, load_database

        try:
            retrieval = load_database(path, cfg.model.text_retrieval, math.prod(data_shape))
        except RetrievalError as e:
            raise RunError(str(e)) from None
    run = LoadedRun(
        path=path,
        config=cfg,
        model=model,
        data_shape=data_shape,
        info=info,
        weights_file=wfile.name,
        weights_sha256=digest,
        weights_verified=verified,
        codec=codec,
        retrieval=retrieval,
    )
    note_run(run)  # for the manifests of what the command writes (provenance.py)
    return run


# Sigma grids for a model


def clamps_x0(sample: SampleConfig, data_shape: Sequence[int], codec: LatentCodec | None = None) -> bool:
    """Whether sampling clips x0_hat to [-1, 1] (:func:`clamped`): images and volumes in pixel space with
    ``sample.clip_denoised``; latents, vectors, signals and tables never. The one place this is decided: it
    chooses the denoiser wrapper and the ``auto`` grid (:func:`resolve_grid`)."""
    return bool(sample.clip_denoised) and len(data_shape) in (3, 4) and codec is None


def make_grid_sigmas(
    model: Precond,
    sample: SampleConfig,
    steps: int | None = None,
    *,
    clamped: bool,
    grid_dir: str | Path | None = None,
) -> Tensor:
    """The sampling grid a SampleConfig asks for, over the sigma range the model was trained on: the one grid
    builder of ``sample``, ``generate``, the editing commands and ``bench-samplers``. See :func:`resolve_grid`."""
    return resolve_grid(model, sample, steps, clamped=clamped, grid_dir=grid_dir)[0]


def resolve_grid(
    model: Precond,
    sample: SampleConfig,
    steps: int | None = None,
    *,
    clamped: bool,
    grid_dir: str | Path | None = None,
) -> tuple[Tensor, dict]:
    """(sigmas (n + 1,) float64 ending in 0, a record of which grid that is) for ``sample`` on ``model``.

    ``grid = "tuned"`` reads the grid fitted for ``sample.sampler`` at ``steps`` steps from ``grid_dir`` (a run
    folder's ``grids/``, written by ``bench-samplers`` or
    ``save_grid`` after ``fit_grid``); an error when there is none.
    ``grid = "auto"`` uses that tuned grid when one matches, else the default (:func:`schedules.default_grid`); a
    grid file of the sampler's that cannot be read is an error either way (a ``GridError`` naming it).
    A tuned grid's record carries the sampler settings it was fitted at (``settings``, from its JSON, e.g. UniPC's
    ``order``), which :func:`sampling_plan` passes on where the user sets none.
    When x0_hat is not ``clamped`` (:func:`clamps_x0`) that default depends on the sampler: a deterministic one
    (:func:`samplers.walks_ode_grid`) gets a log-SNR grid from the model's sigma_max (at most
    ``schedules.DISCRETE_SIGMA_MAX`` for a discrete model) down to :func:`schedules.ode_sigma_low` (the record
    says ``sigma_low``), and ``unipc`` without an order set takes ``samplers.UNIPC_AUTO_ORDER`` there (the record
    says ``settings: {order}``, as a tuned grid's does: :func:`sampling_plan` passes it on); a stochastic one gets
    a discrete model's timesteps with sigma <= ``schedules.DISCRETE_SIGMA_MAX``
    (:func:`schedules.unclamped_timesteps`; the record says ``sigma_cap``). Karras and log-SNR grids of a discrete
    model stop at ``schedules.DISCRETE_SIGMA_MAX``.
    ``model`` needs only ``sigma_min``, ``sigma_max`` and ``process``."""
    from dataclasses import asdict

    from .samplers import UNIPC_AUTO_ORDER, walks_ode_grid
    from .samplers.optimize_grid import NoTunedGrid, find_tuned_grid

    steps = sample.steps if steps is None else steps
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    discrete = model.process.sigmas if model.process is not None else None
    kind = sample.grid
    if kind in ("tuned", "auto") and grid_dir is not None:
        try:
            sigmas, path, meta = find_tuned_grid(grid_dir, sample.sampler, steps, with_path=True)
            end = float(meta.get("sigma_end", 0.0))  # where its last step stops (0: at 0)
            record = {"grid": "tuned", "asked": kind, "path": str(path), "sigmas": sigmas.tolist()}
            record.update({"sigma_end": end} if end else {})
            if meta.get("settings"):  # the sampler settings it was fitted at
                record["settings"] = dict(meta["settings"])
            return sigmas, record
        except NoTunedGrid:  # a damaged grid file is an error under auto too: never silently another grid
            if kind == "tuned":
                raise
    if kind == "tuned":
        raise ConfigError("grid=tuned needs a run folder's tuned grids (sample from a run folder)")
    cap = {}
    sigma_low = model.sigma_min
    if kind == "auto":
        ode = not clamped and walks_ode_grid(sample.sampler, asdict(sample.settings))
        kind = default_grid(discrete is not None, unclamped_ode=ode)
        if ode:
            top = grid_sigma_max(kind, model.sigma_max, discrete is not None)
            sigma_low = min(ode_sigma_low(steps, model.sigma_min), top / 2)
            cap = {"sigma_low": sigma_low, **({"sigma_cap": DISCRETE_SIGMA_MAX} if discrete is not None else {})}
            if sample.sampler == "unipc" and sample.settings.order is None:
                cap["settings"] = {"order": UNIPC_AUTO_ORDER}
        elif discrete is not None and not clamped:
            discrete, cap = unclamped_timesteps(discrete), {"sigma_cap": DISCRETE_SIGMA_MAX}
            if steps > len(discrete):
                raise ConfigError(
                    f"grid auto takes an unclamped DDPM model's {len(discrete)} timesteps with sigma <= "
                    f"{DISCRETE_SIGMA_MAX:g}: ask for at most {len(discrete)} steps, or name a grid (uniform_t, "
                    f"exponential)"
                )
    if kind == "uniform_t" and discrete is None:
        raise ConfigError("the uniform_t grid needs a DDPM-trained (discrete) model; use karras or exponential")
    try:
        sigmas = make_sigmas(
            kind,
            steps,
            sigma_low,
            grid_sigma_max(kind, model.sigma_max, discrete is not None),
            rho=sample.rho,
            discrete_sigmas=discrete,
            spacing=sample.spacing,
            steps_offset=model.process.steps_offset if model.process is not None else 0,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return sigmas, {"grid": kind, "asked": sample.grid, **cap, "sigmas": sigmas.tolist()}


# Denoiser wrappers used here (the full set lives in guidance.py)


def state_dtype(device: torch.device) -> torch.dtype:
    """The dtype of a sampler's state x and arithmetic: float64 (the network still runs in its own dtype,
    Precond casts at its boundary), float32 on a device without float64 (MPS).

    Why: at the top of a DDPM table sigma_T is large (1000-step cosine: abar_T ~ 2.4e-9, sigma_T ~ 2e4), and in
    float32 the state x = x0 + sigma_T n keeps ~2e-3 of absolute precision, so x0_hat = x - sigma_T eps_hat
    moves by ~1e-3 on the first step; the float64 state costs a few elementwise operations per step.
    """
    return torch.float32 if device.type == "mps" else torch.float64


def clamped(D: Denoiser, lo: float = -1.0, hi: float = 1.0) -> Denoiser:
    """Clip x0_hat to the data range (Ho et al.'s "clipped" sampling) - a denoiser wrapper."""
    return lambda x, sigma: D(x, sigma).clamp(lo, hi)


def sampler_knobs(name: str, sample: SampleConfig, grid_record: dict | None = None) -> dict:
    """The keyword settings of ``sample.settings`` that are set, for sampler ``name`` (an error names a setting
    the sampler does not take), with the settings the grid's record brings (:func:`resolve_grid`'s ``settings``: the
    UniPC order of an ``auto`` plan, the settings a tuned grid was fitted at) where the user sets none."""
    from dataclasses import asdict

    from .samplers import resolve_settings

    try:
        knobs = resolve_settings(name, asdict(sample.settings))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return {**(grid_record or {}).get("settings", {}), **knobs}


def sampling_plan(
    model: Precond,
    sample: SampleConfig,
    *,
    clamped: bool,
    grid_dir: str | Path | None = None,
) -> tuple[Tensor, dict, dict]:
    """(sigma grid, sampler settings, grid record) for ``sample`` on ``model``: what ``generate`` and the editing
    commands run, so that a grid and the settings it brings (:func:`resolve_grid`) always travel together."""
    sigmas, record = resolve_grid(model, sample, clamped=clamped, grid_dir=grid_dir)
    return sigmas, sampler_knobs(sample.sampler, sample, record), record


def stop_short(denoise: Denoiser, sigmas: Tensor, grid_record: dict) -> Denoiser:
    """``denoise`` for walking ``sigmas`` down as planned: on a tuned grid that stops short of 0 (its record's
    ``sigma_end``) the last step is the first-order one to ``sigma_end`` it was fitted with
    (:func:`samplers.optimize_grid.final_step`); on every other plan, ``denoise`` itself. Not for walking up the grid
    (an inversion): the wrapper changes D at the last level."""
    from .samplers.optimize_grid import final_step

    sigma_end = float(grid_record.get("sigma_end", 0.0))
    return final_step(denoise, float(sigmas[-2]), sigma_end) if sigma_end else denoise


def guidance_of(sample: SampleConfig) -> dict:
    """:func:`~torchdiffusion.guidance.guided_denoiser`'s settings from a sample config (CFG scale, interval,
    rescale, retrieval scale): what ``generate`` and the editing commands guide with."""
    return {
        "scale": sample.guidance,
        "interval": sample.guidance_interval,
        "rescale": sample.guidance_rescale,
        "retrieval_scale": sample.retrieval_guidance,
    }


def keeps_guide(info: dict) -> bool:
    """Whether a run folder's run.json records autoguidance's guide model (guide.safetensors: training reached
    train.guide_at), which :func:`load_run` attaches to the model."""
    from .training.checkpoint import GUIDE_FILE, WEIGHTS_KEY

    weights = info.get(WEIGHTS_KEY)
    return isinstance(weights, dict) and GUIDE_FILE in weights


def refuse_autoguidance_without_guide(sample: SampleConfig, has_guide: bool) -> None:
    """A RunError (one line) when ``sample`` asks for autoguidance and the model has no guide (``has_guide``: a
    loaded model's :func:`guide_of`, or a run folder's :func:`keeps_guide` before it is loaded)."""
    if sample.autoguidance != 1.0 and not has_guide:
        raise RunError(
            f"sample.autoguidance={sample.autoguidance:g} needs the run's guide model (guide.safetensors, kept by "
            f"training with train.guide_at > 0) and this model has none; use sample.autoguidance=1"
        )


def required_guide(model: Precond, sample: SampleConfig) -> Precond | None:
    """The guide ``sample.autoguidance`` steers ``model`` away from (None at 1: the model alone); a RunError (one
    line) when it asks for autoguidance and the model has no guide."""
    guide = guide_of(model)
    refuse_autoguidance_without_guide(sample, guide is not None)
    return guide if sample.autoguidance != 1.0 else None


def autoguided_denoiser(
    model: Precond, sample: SampleConfig, denoiser_of: Callable[[Precond], Denoiser], clip: bool
) -> Denoiser:
    """The denoiser ``sample`` samples ``model`` with: ``denoiser_of(net)`` (its conditioning and CFG) of the model,
    steered from the same of its guide at ``sample.autoguidance`` (:func:`required_guide`; both clamped first), and
    clamped to [-1, 1] when ``clip`` (:func:`clamps_x0`). What `sample` draws with and the editing commands edit
    with."""
    guide = required_guide(model, sample)
    D = denoiser_of(model)
    if guide is not None:  # autoguidance: the guide sees the same conditioning and CFG; both clamped first
        D_0 = denoiser_of(guide)
        D = autoguided(
            clamped(D) if clip else D,
            clamped(D_0) if clip else D_0,
            sample.autoguidance,
            interval=sample.guidance_interval,
        )
    return clamped(D) if clip else D  # images, volumes: in [-1, 1]


def checked_seeds(seeds: Sequence[int]) -> list[int]:
    """``seeds`` as ints: each an integer (1.7 was seed 1) in [0, config.MAX_SEED] (2**70 overflowed deep in torch),
    at least one; else a one-line ValueError."""
    from .config import MAX_SEED

    seeds = list(seeds)
    if not seeds:
        raise ValueError("generate needs at least one seed (one per sample)")
    for s in seeds:
        if (
            isinstance(s, bool)
            or not isinstance(s, numbers.Integral)
            and not (isinstance(s, Tensor) and s.numel() == 1 and not s.is_floating_point())
        ):
            raise ValueError(f"seeds must be integers, got {s!r}")
        if not 0 <= int(s) <= MAX_SEED:
            raise ValueError(f"seeds must lie in [0, {MAX_SEED}], got {int(s)}")
    return [int(s) for s in seeds]


@torch.no_grad()
def generate(
    model: Precond,
    seeds: Sequence[int],
    sample: SampleConfig,
    data_shape: Sequence[int],
    *,
    cond: Cond = None,
    uncond: Cond = None,
    callback: Callback | None = None,
    wrap: Callable[[Denoiser, slice], Denoiser] | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    grid_dir: str | Path | None = None,
    codec: LatentCodec | None = None,
    plan: tuple[Tensor, dict, dict] | None = None,
) -> Tensor:
    """Sample ``len(seeds)`` examples; returns (N, *data_shape) float32 on the CPU, or (N, *codec.image_shape)
    decoded images for a latent model given its ``codec``.

    Args:
        model: a Precond (eval mode).
        seeds: one seed per image; image k depends only on seeds[k] (not on batch size or order).
        sample: sampler, steps, grid, clamping, batch size...
        data_shape: one example's shape, e.g. (1, 28, 28).
        cond: conditioning for all N images (dict of (N, ...) tensors, or None); sliced per batch. A
            class-conditional model given no "class" takes the classes ``sample.labels`` draws from the seeds
            (cond.seed_labels; "none": the learned null class), among the classes its run's training data held
            (:func:`label_classes`).
        uncond: the negative conditioning of classifier-free guidance (same keys as ``cond``, (N, ...)), or
            None for the learned null embedding; CFG runs at ``sample.guidance`` (see guidance.guided_denoiser).
        callback: receives a StepInfo per step (batch by batch).
        wrap: optional ``wrap(D, batch_slice) -> D`` applied after conditioning (guidance, inpainting...).
        precision: ``fp32`` or ``bf16`` (autocast of the network only; the sampler's arithmetic stays in
            :func:`state_dtype`, float64).
        grid_dir: where ``sample.grid = "tuned"`` finds its grids (a run folder's ``grids/``).
        codec: a latent model's autoencoder (``LoadedRun.codec``): the sampler works on latents of
            ``data_shape``, unclamped, and each batch is decoded at the very end, ``x = G(z / s)`` (latent.py).
        plan: the (grid, settings, grid record) of :func:`sampling_plan` for this model, ``sample`` and
            ``grid_dir``, when the caller has resolved it already (to record or count it): sampled as given, so
            the grid a caller records is the grid that ran (a tuned grid file is read once).
    """
    from .latent import as_pixels

    check_sample(sample)  # a SampleConfig built in Python is checked as a run's is (config.validate)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    seeds = checked_seeds(seeds)
    data_shape = tuple(data_shape)
    if not data_shape or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in data_shape
    ):
        raise ValueError(f"data_shape must be one example's shape, sizes >= 1, e.g. (1, 28, 28); got {data_shape!r}")
    data_shape = tuple(int(v) for v in data_shape)
    cond, uncond = (check_cond(as_cond(c), len(seeds), what) for c, what in ((cond, "cond"), (uncond, "uncond")))
    _refuse_unread_cond(model, cond)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sampler = get_sampler(sample.sampler)
    clip = clamps_x0(sample, data_shape, codec)
    sigmas, knobs, grid_record = plan or sampling_plan(model, sample, clamped=clip, grid_dir=grid_dir)
    required_guide(model, sample)  # a one-line error before anything is recorded or drawn
    cond = with_seed_labels(cond, seeds, label_classes(model), sample.labels)  # no class given: sample.labels
    _refuse_guidance_without_cond(sample, cond, uncond)
    note_sampling(
        sample,
        seeds,
        wrappers=[describe_wrapper(wrap)] if wrap is not None else [],
        conditioning=sorted(cond) if isinstance(cond, dict) else None,
        device=str(device),
        precision=precision,
        grid_used=grid_record,
    )
    out = []
    bs = max(1, sample.batch_size)
    for start in range(0, len(seeds), bs):
        sl = slice(start, min(start + bs, len(seeds)))
        ns = NoiseSource(seeds[sl], data_shape, device=device, dtype=state_dtype(device))
        x = ns.initial() * float(sigmas[0])
        guided = {**guidance_of(sample), "uncond": slice_cond(uncond, sl)}
        D = autoguided_denoiser(model, sample, partial(guided_denoiser, cond=slice_cond(cond, sl), **guided), clip)
        if wrap is not None:
            D = wrap(D, sl)
        if precision == "bf16":
            D = _autocast(D, device)
        D = stop_short(D, sigmas, grid_record)  # a tuned grid may stop short of 0
        x = sampler(D, x, sigmas, noise=ns, callback=callback, **knobs)
        if not torch.isfinite(x).all():  # never pictures of NaN: the command stops before writing anything
            raise SamplingError(
                f"the samples became NaN or infinite while sampling ({sample.sampler}, {len(sigmas) - 1} steps): a "
                "sampler setting (e.g. --step-lr), the guidance scale or the steps are out of this model's reach; "
                "lower the setting or choose another sampler"
            )
        out.append(as_pixels(x.float(), codec).cpu())
    x = torch.cat(out)
    if clip:
        x = x.clamp(-1, 1)
    return x


def _refuse_guidance_without_cond(sample: SampleConfig, cond: Cond, uncond: Cond) -> None:
    """A CondError for a negative conditioning ``uncond`` with nothing to guide toward: no conditioning given and
    none drawn from the seeds (sample.labels, class models), so the samples are D_u whatever ``uncond`` says. (The
    sample config's guidance scale is not refused here: a run's own config may hold one for its conditioned draws,
    volume-shapes' guidance 2 with labels 'none'; 'sample' refuses --guidance given for such a draw.)"""
    if cond is None and uncond is not None:
        raise CondError(
            "uncond changes nothing: these samples have no conditioning to guide toward (no cond given and none "
            "drawn from the seeds: an unconditional model, or sample.labels='none'); give cond or drop uncond"
        )


def _refuse_unread_cond(model: Precond, cond: Cond) -> None:
    """A CondError for a conditioning the model's network never reads (it would sample as if none were given):
    class labels for a model without classes, context vectors or caption features for one without them.
    Networks whose embedding is not ours (an ONNX session) are checked for classes alone."""
    from .nets.layers import CondEmbedding

    if cond is None:
        return
    net = getattr(model, "net", None)
    emb = getattr(net, "cond_emb", None)
    reads = {"class": num_classes(model) > 0}
    if isinstance(emb, CondEmbedding):
        reads |= {"context": emb.context_dim > 0, "text": int(getattr(net, "text_dim", 0)) > 0}
    for key, read in reads.items():
        if key in cond and not read:
            raise CondError(f"cond[{key!r}] is given, and this model does not read it (trained without {key})")


def num_classes(model: Precond) -> int:
    """K of a class-conditional network: its own ``num_classes`` (an ONNX export's session, interop/onnx.py), else
    its CondEmbedding's class table less the null row; 0 otherwise."""
    from .nets.layers import CondEmbedding

    own = getattr(getattr(model, "net", None), "num_classes", None)
    if isinstance(own, int):
        return own
    return next((int(m.num_classes) for m in model.modules() if isinstance(m, CondEmbedding)), 0)


def _autocast(D: Denoiser, device: torch.device) -> Denoiser:
    def wrapped(x, sigma):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return D(x, sigma).to(x.dtype)

    return wrapped


@torch.no_grad()
def trajectory(
    model: Precond,
    seeds: Sequence[int],
    sample: SampleConfig,
    data_shape: Sequence[int],
    *,
    cond: Cond = None,
    uncond: Cond = None,
    frames: int = 40,
    callback: Callback | None = None,
    codec: LatentCodec | None = None,
    grid_dir: str | Path | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor], list[float], list[float]]:
    """Sample and record the path: returns (final x, x_t per step in VP scale, x0_hat per step, the sigma of each
    x_t (the level the step reached), the sigma each x0_hat was denoised at (the level the step started from)).
    ``grid_dir``: as :func:`generate`'s (a run folder's ``grids/``, where its tuned grids are).

    x_t is shown divided by sqrt(1 + sigma^2) (the VP scaling) so every frame has unit-ish range; at most
    ``frames`` evenly spaced steps are kept (always the last one). A latent model's ``codec`` decodes every
    frame and the result, so all of them are images.
    """
    from .latent import as_pixels

    xs, x0s, sig, sig0 = [], [], [], []

    def cb(info):
        xs.append((info.x / (1 + info.sigma_next**2) ** 0.5).float().cpu())
        x0s.append(info.denoised.float().cpu())
        sig.append(info.sigma_next)
        sig0.append(info.sigma)  # D(x, sigma) of the step's start: x0_hat belongs to this level, not sigma_next
        if callback is not None:
            callback(info)  # e.g. a progress bar

    x = generate(
        model,
        seeds,
        replace(sample, batch_size=len(seeds)),
        data_shape,
        cond=cond,
        uncond=uncond,
        callback=cb,
        codec=codec,
        grid_dir=grid_dir,
    )
    keep = sorted(set(torch.linspace(0, len(xs) - 1, min(frames, len(xs))).round().long().tolist()))
    frames_x, frames_x0 = [as_pixels(xs[i], codec) for i in keep], [as_pixels(x0s[i], codec) for i in keep]
    return x, frames_x, frames_x0, [sig[i] for i in keep], [float(sig0[i]) for i in keep]
