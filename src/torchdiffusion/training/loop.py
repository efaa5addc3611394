"""The training loop: ``train(cfg, out_dir)`` turns a RunConfig into a run folder.

One optimizer step, for a global batch of B images (Ho et al. 2020 Alg. 1; Karras et al. 2022 Sec. 5):

    x0 ~ data,  sigma ~ p_train(sigma),  n ~ N(0, I),  drop ~ Bernoulli(cond_drop_prob)
    L  = 1/B sum_i w(sigma_i) || D(x0_i + sigma_i n_i, sigma_i, cond_i) - x0_i ||^2      (losses.precond_loss)

(the denoising objective; objective.py swaps in the draws and loss of distillation and consistency objectives)
    theta <- AdamW(theta, clip(grad L)),  lr from lr.learning_rate,  theta_ema from ema.ema_beta

Everything that makes the run trustworthy is decided by (seed, step) alone:

* **Data order.** Example positions ``step*B .. step*B + B - 1`` of an endless stream of per-epoch
  permutations, each drawn from a generator seeded by (seed, epoch). The position to resume from is just the
  step.
* **Per-example randomness.** sigma, noise and the drop mask of the *whole global batch* are drawn from
  generators seeded by (seed, step) on every rank; each rank keeps its contiguous shard. An example's draws
  therefore depend on its position in the global batch, never on the rank or the number of processes, and a
  1-process and a 2-process run compute the same gradient (up to float summation order). An objective that
  draws more (distribution matching) draws it the same way: for the whole global batch from (seed, step),
  cut at the micro-batch's ``position`` (``global_draws``).
* **Gradient averaging.** Each rank backpropagates (sum of its per-example losses) / B, then the gradients are
  summed over ranks in one flat all-reduce, together with the loss and the loss-by-noise-level statistics.
  Every rank then sees the same bits, so the non-finite check, clipping, AdamW and the EMA stay in lockstep.
* **Exact resume.** A checkpoint holds model, EMA, optimizer, the step/update counters and every RNG; since
  the per-step draws are re-derived from (seed, step), a run killed at any moment and resumed ends with the
  same bits as an uninterrupted one.

The loop itself (``_train``) reads top to bottom: data, run folder, TrainState, then
``draw_batch -> train_step -> callbacks`` until the images are seen. Logging, sample grids, evaluation and
checkpoints are callbacks (callbacks.py); ``train(..., callbacks=[...])`` adds more.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import distributed as dist
from ..cond import cond_from_data
from ..config import ConfigError, RunConfig, validate
from ..data import fit_conditioning, fit_kind, kind_of_shape
from ..heap import keep_freed_memory
from ..precond import Precond
from ..progress import Stopped
from .callbacks import Callback, default_callbacks
from .ema import EMA, ema_beta, ema_halflife
from .lr import learning_rate
from .objective import Objective, build_objective
from .precision import resolve_precision
from .run_folder import (
    as_it_ran,
    open_run_folder,
    publish,
    restore,
    saved_config,
    truncate_metrics,
    write_config,
)
from .runlock import check_held, held_still, hold_run_folder
from .state import (
    LIMITS,
    NUM_NOISE_BUCKETS,
    Batch,
    Clock,
    MicroBatch,
    Setup,
    StepStats,
    TrainingError,
    TrainState,
    guide_due_by_clock,
    guide_images,
    steps_of_run,
)

__all__ = ["DataOrder", "TrainingError", "draw_batch", "global_draws", "mix_seed", "train", "train_step"]


# Deterministic randomness: one 63-bit seed per (seed, purpose, index)

_MASK = (1 << 64) - 1
STREAM_DATA, STREAM_DRAWS, STREAM_NOISE, STREAM_TORCH, STREAM_OBJECTIVE = 1, 2, 3, 4, 5


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (SplitMix64 finaliser over each part)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & _MASK)) & _MASK
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK
        h ^= h >> 31
    return h & ((1 << 63) - 1)


def _generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def global_draws(seed: int, step: int) -> torch.Generator:
    """The generator of an objective's own draws at global batch ``step``: the same on every rank, so an objective
    draws for the whole global batch (B examples) and keeps its micro-batch's slice, as :func:`draw_batch` does."""
    return _generator(mix_seed(seed, STREAM_OBJECTIVE, step))


class DataOrder:
    """Example indices for each global batch: an endless stream of seeded per-epoch permutations.

    With ``weights`` (N,) an epoch is instead N draws with replacement, example i with probability proportional
    to ``weights[i]`` (``train.balance``: 1 / the size of its group or class, so each group or class is drawn
    equally often, as PyTorch's WeightedRandomSampler does); still a function of (seed, step) only.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, weights: Tensor | None = None):
        self.N, self.B, self.seed = int(num_examples), int(batch_size), int(seed)
        self.weights = None if weights is None else weights.to(torch.float64).reshape(self.N)
        self._cache: dict[int, Tensor] = {}

    def epoch(self, epoch: int) -> Tensor:
        """(N,) long: the example indices of ``epoch``, in order (a permutation, or N weighted draws)."""
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            g = _generator(mix_seed(self.seed, STREAM_DATA, epoch))
            if self.weights is None:
                self._cache[epoch] = torch.randperm(self.N, generator=g)
            else:
                self._cache[epoch] = torch.multinomial(self.weights, self.N, replacement=True, generator=g)
        return self._cache[epoch]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, offset in that epoch's permutation) where global batch ``step`` starts."""
        return divmod(step * self.B, self.N)

    def batch(self, step: int) -> Tensor:
        """(B,) long: the example indices of global batch ``step``."""
        pos = step * self.B + torch.arange(self.B)
        epochs, offsets = pos // self.N, pos % self.N
        out = torch.empty(self.B, dtype=torch.long)
        for e in epochs.unique().tolist():
            m = epochs == e
            out[m] = self.epoch(e)[offsets[m]]
        return out


def balance_weights(data: Any, balance: str) -> Tensor | None:
    """``train.balance``: each example's weight 1 / (examples in its group or class), None for ``none``.

    ``groups`` are the data's groups (``data.groups``: an emoji and its skin-tone variants), ``classes`` its labels.
    """
    if balance == "none":
        return None
    key = {"groups": "groups", "classes": "labels"}[balance]
    ids = getattr(data, key, None)
    if ids is None:
        raise ConfigError(f"train.balance={balance} needs a data set with {key} (e.g. data.source=emoji)")
    ids = torch.as_tensor(ids).reshape(-1).long()
    if ids.numel() != data.x.shape[0]:
        raise ConfigError(f"train.balance={balance}: {ids.numel()} {key} for {data.x.shape[0]} examples")
    _, inverse, counts = ids.unique(return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].double()


# Conditioning checks and noise-level buckets
def _check_pixel_range(data: Any, cfg: RunConfig) -> None:
    """Images and volumes in pixel space are sampled with x0_hat clamped to [-1, 1] (generate.clamps_x0): data
    beyond that range (8-bit values 0..255 handed to train(), as floats or as integers; a volume array in its own
    units) would be trained on and then never sampled. Refuse it, saying how to map it."""
    from ..generate import clamps_x0

    if not clamps_x0(cfg.sample, data.x.shape[1:], getattr(data, "codec", None)):
        return
    x = data.x if data.x.is_floating_point() else data.x.to(torch.float32)  # uint8 images trained on as 0..255
    lo, hi = (float(v) for v in torch.aminmax(x))
    if lo < -1 - PIXEL_RANGE_SLACK or hi > 1 + PIXEL_RANGE_SLACK:
        what = "images" if data.x.ndim == 4 else "volumes"
        raise ConfigError(
            f"the training {what} run from {lo:.4g} to {hi:.4g}, but {what} are sampled in [-1, 1] (x0_hat is "
            "clamped to it): map them there (data.scale=minmax or percentile for an array; u / 127.5 - 1 for "
            "8-bit values), or set sample.clip_denoised=false to sample them unclamped"
        )


PIXEL_RANGE_SLACK = 1e-4  # rounding of a map to [-1, 1] in float32


def _check_data(data: Any, cfg: RunConfig) -> None:
    """Refuse an empty data set, one with NaN or infinite values, or a conditional model whose data lacks its
    conditioning."""
    if data.x.shape[0] == 0:
        raise ConfigError("the training data is empty")
    if data.x.is_floating_point() and not bool(torch.isfinite(data.x).all()):  # every loss would be NaN
        bad = int((~torch.isfinite(data.x)).flatten(1).any(1).sum())
        raise ConfigError(f"the training data has {bad} example(s) with NaN or infinite values")
    _check_pixel_range(data, cfg)
    m = cfg.model
    if m.num_classes > 0 and getattr(data, "labels", None) is None:
        unset = " --set sample.labels=none" if cfg.sample.labels != "none" else ""
        raise ConfigError(
            f"model.num_classes={m.num_classes} but the data has no labels; for an unconditional model add "
            f"--set model.num_classes=0{unset}"
        )
    if m.num_classes > 0 and len(data.labels):
        lo, hi = int(data.labels.min()), int(data.labels.max())
        if lo < 0 or hi >= m.num_classes:
            raise ConfigError(
                f"model.num_classes={m.num_classes} but the data's labels run from {lo} to {hi}; "
                f"train with --set model.num_classes={hi + 1}" + (" (labels must be >= 0)" if lo < 0 else "")
            )
    if m.context_dim > 0 and getattr(data, "context", None) is None:
        raise ConfigError("model.context_dim > 0 but the data has no context vectors")
    if m.context_dim > 0 and data.context.shape[-1] != m.context_dim:
        raise ConfigError(
            f"model.context_dim={m.context_dim} but the data's context vectors have {data.context.shape[-1]} entries"
        )
    if m.text_dim > 0 and getattr(data, "text", None) is None:
        raise ConfigError("model.text_dim > 0 but the data has no text features")
    balance_weights(data, cfg.train.balance)  # train.balance names groups or classes the data has
    if cfg.train.eval_classifier:  # a classifier that cannot read these images: refused now, not at every evaluation
        from ..evaluation.evaluate import EvaluateError, classes_to_sample, fitting_classifier

        if data.x.ndim != 4:
            raise ConfigError(f"train.eval_classifier reads images; this run's examples are {data.x.ndim - 1}-D")
        codec = getattr(data, "codec", None)
        shape = codec.image_shape if codec is not None else data.x.shape[1:]  # the images the samples are
        try:
            names = getattr(data, "class_names", None)
            K = classes_to_sample(m.num_classes, data_classes(data))  # what the quick evaluation asks for
            fitting_classifier(cfg.train.eval_classifier, shape, K, "train.eval_classifier", names)
        except EvaluateError as e:
            raise ConfigError(str(e)) from None


def noise_buckets(model: Precond, K: int = NUM_NOISE_BUCKETS) -> tuple[str, list[float]]:
    """Bucket edges for the loss-by-noise-level metric: timestep t for discrete models, ln(sigma) otherwise."""
    if model.process is not None:
        T = model.process.T
        return "t", [T * k / K for k in range(K + 1)]
    lo, hi = math.log(model.sigma_min), math.log(model.sigma_max)
    return "log_sigma", [lo + (hi - lo) * k / K for k in range(K + 1)]


def bucket_index(model: Precond, sigma: Tensor, edges: list[float]) -> Tensor:
    """(B,) long bucket of each sigma (out-of-range values go to the end buckets)."""
    K = len(edges) - 1
    if model.process is not None:
        u = model.process.sigma_to_t(sigma.detach().cpu()).round()
    else:
        u = sigma.detach().cpu().to(torch.float64).log()
    lo, hi = edges[0], edges[-1]
    return ((u - lo) / (hi - lo) * K).floor().clamp(0, K - 1).long()


def _fit_latents(cfg: RunConfig, data: Any, out: Path, resume: bool) -> RunConfig:
    """A latent run: the autoencoder must be the one a resumed run was trained with (config.json records where it
    was found: latent.resumed_latents_of), the images are mapped by its
    pixel map (``data.scale``, recorded in config.json as the run's own; latent.with_pixel_map), and x0_hat is not
    clamped to [-1, 1] (latents have no such range; the decoded images are clamped)."""
    codec = getattr(data, "codec", None)
    if codec is None:
        return cfg
    from ..latent import check_resume, with_pixel_map

    if resume:
        check_resume(out, codec)
    data_cfg = with_pixel_map(cfg.data, codec)
    if Path(cfg.data.latents_of).expanduser().resolve() != codec.path.resolve():  # found from the resumed run's
        data_cfg = replace(data_cfg, latents_of=str(codec.path.resolve()))  # record: both folders moved together
    return replace(cfg, data=data_cfg, sample=replace(cfg.sample, clip_denoised=False))


def data_classes(data: Any) -> int:
    """The classes of the data's labels (the largest + 1; 0 without labels): run.json's ``num_classes``."""
    labels = getattr(data, "labels", None)
    return int(labels.max().item()) + 1 if labels is not None and len(labels) else 0


def classes_without_examples(data: Any) -> list[int]:
    """The classes below :func:`data_classes` that no example's label holds (a class of a subset, or one whose
    examples were all held out): run.json's ``classes_without_examples``, for ``--class`` to refuse them."""
    labels = getattr(data, "labels", None)
    if labels is None or not len(labels):
        return []
    held = torch.zeros(data_classes(data), dtype=torch.bool)
    held[labels.long()] = True
    return [int(k) for k in torch.nonzero(~held).flatten()]


def _data_info(data: Any, out: Path) -> dict:
    x = data.x
    shape = [int(s) for s in x.shape[1:]]
    context = getattr(data, "context", None)
    class_names = getattr(data, "class_names", None)
    codec = getattr(data, "codec", None)
    latent = {}
    if codec is not None:  # the autoencoder, also relative to the run: the two folders may move together
        rel = os.path.relpath(codec.path.resolve(), Path(out).resolve())
        latent = {"latents_of": {**codec.record(), "relative": rel}, "image_shape": list(codec.image_shape)}
    return {
        **latent,
        "data_shape": shape,
        "kind": getattr(data, "kind", None) or kind_of_shape(tuple(shape)),
        "class_names": list(class_names) if class_names is not None else None,
        "num_classes": data_classes(data),
        "classes_without_examples": classes_without_examples(data),
        "context_dim": int(context.shape[-1]) if context is not None else 0,
        "schema": data.schema.to_dict() if getattr(data, "schema", None) is not None else None,
        **({"holdout_examples": int(data.held_out)} if getattr(data, "held_out", None) is not None else {}),
        **({"stored_depth": data.stored_depth} if getattr(data, "stored_depth", None) else {}),
    }


class StopFlag:
    """SIGTERM/SIGINT set a flag; the loop finishes the current step, checkpoints and returns."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise Stopped(signum)  # a second Ctrl-C means "now"
        self.requested, self.signum = True, signum

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was asked (a sampler callback: stops a sample grid mid-way)."""
        if self.requested:
            raise Stopped(self.signum)

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


# The loop


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    data: Any | None = None,
    tensorboard: bool = False,
    device: str | torch.device | None = None,
    callbacks: Sequence[Callback] = (),
    raise_on_stop: bool = False,
    objective: Objective | None = None,
    init_weights: dict[str, Tensor] | None = None,
) -> Path:
    """Train the model that ``cfg`` describes and return the run folder.

    Args:
        cfg: the whole run configuration (validated here).
        out_dir: the run folder; created if needed. With ``resume`` and a training state inside it, training
            continues exactly where the newest intact state left off.
        resume: False starts over, deleting the folder's old training states and metrics.
        progress: draw a tqdm bar in images (rank 0 only).
        data: a TensorData (``.x`` (N, C, H, W) or (N, D), ``.labels``, ``.context`` ...); loaded from
            ``cfg.data`` when None.
        tensorboard: also log to ``out_dir/tensorboard`` (when the tensorboard package is installed).
        device: defaults to ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
        callbacks: more :class:`~torchdiffusion.training.callbacks.Callback` s, run on every rank after the
            built-in log / sample grid / evaluation / checkpoint ones.
        objective: what a step minimises (training/objective.py); built from ``cfg.objective`` when None.
        init_weights: a state dict to start a fresh run from (a distillation student starts from its teacher);
            ignored when the run resumes from a training state.
        raise_on_stop: after a SIGINT/SIGTERM stop (checkpoint written), raise ``progress.Stopped`` instead of
            returning, so a caller never goes on with a half-trained model (the command line does this). A stop
            during the final sample grid (training complete) raises ``Stopped`` either way; the next call draws it.

    Raises:
        ConfigError / CheckpointError (ValueError): unusable configuration, data or run folder.
        RunFolderBusy (ValueError): another process is training into ``out_dir``.
        TrainingError (RuntimeError): ``max_nonfinite`` consecutive non-finite steps, or no finite step at all.
    """
    cfg = validate(cfg)
    out = Path(out_dir)
    owns_group = not dist.is_initialized()
    with StopFlag() as stop:
        try:
            device = dist.init(None if device is None else torch.device(device))
            with hold_run_folder(out):  # one writer per run folder (a second one is refused here)
                out = _train(
                    cfg,
                    out,
                    resume=resume,
                    progress=progress,
                    data=data,
                    tensorboard=tensorboard,
                    device=device,
                    stop=stop,
                    callbacks=callbacks,
                    objective=objective,
                    init_weights=init_weights,
                )
            if stop.requested and raise_on_stop:
                raise Stopped(stop.signum)
            return out
        finally:
            if owns_group:
                dist.shutdown()


def _train(
    cfg: RunConfig,
    out: Path,
    *,
    resume: bool,
    progress: bool,
    data: Any,
    tensorboard: bool,
    device: torch.device,
    stop: StopFlag,
    callbacks: Sequence[Callback],
    objective: Objective | None = None,
    init_weights: dict[str, Tensor] | None = None,
) -> Path:
    t, clock = cfg.train, Clock()  # the time limits count data loading too
    dist.check_batch_splits(t.batch_size, t.grad_accum)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    keep_freed_memory()  # reuse freed activations instead of faulting in fresh pages every step (heap.py)

    cfg, data = _training_data(cfg, out, data, resume=resume, progress=progress, device=device)

    # Run folder: the state to resume from, or a fresh start. Then model, EMA and optimizer (the same on every
    # rank), what stays fixed for the run, and the saved state on top.
    state_path = open_run_folder(out, cfg, resume)
    # train.precision=auto -> what runs here, or what the resumed run ran; config.json below records it
    cfg = resolve_precision(cfg, device, saved_config(out) if state_path is not None else None)
    t = cfg.train
    h_end = ema_halflife(t.images, t.ema_halflife_images, t.ema_warmup_ratio)
    if 0 < h_end and round(h_end) < t.ema_halflife_images:  # the EMA's warm-up ramp still binds at the end
        dist.print0(
            f"train.ema_halflife_images={t.ema_halflife_images:,} is not reached in this run: "
            f"train.ema_warmup_ratio={t.ema_warmup_ratio:g} caps the half-life at "
            f"{h_end:,.0f} images by the end of its {t.images:,}"
        )
    state = new_state(cfg, tuple(data.x.shape[1:]), device)
    state.clock = clock
    if state_path is None and init_weights is not None:
        state.model.load_state_dict(init_weights)
        state.ema = EMA(state.model)
    setup = _setup(cfg, out, data, device, state.model, stop, objective)
    if state_path is not None:
        restore(state, state_path, setup)
        # a run that has used up its time limit is finished (a raised limit continues it); rank 0 decides. One that
        # train.images ended stays ended by it, whatever limit a rerun gives (run.json's stopped_by stays null)
        if state.step < setup.total_steps:
            over = state.clock.over(t.cpu_minutes, t.minutes) if setup.main else 0
            state.limit = LIMITS.get(dist.broadcast_int(over))
        if setup.finished(state):  # nothing left to train: config.json keeps what ran (as_it_ran)
            cfg = as_it_ran(out, cfg, state.images_seen)
        dist.print0(f"resuming {out} from {state_path.name} ({state.images_seen} images seen)")
    write_config(out, cfg)  # only now: a refused resume leaves config.json as it was
    if setup.main and cfg.model.text_retrieval:  # the database sample --prompt retrieves from (retrieval.py)
        from ..retrieval import save_database

        save_database(data.retrieval, out)
    if setup.main:
        truncate_metrics(out / "metrics.jsonl", state.images_seen)
        # A resumed run writes its weights files again from the state (a kill may have cut the last export
        # short) before run.json vouches for them; a fresh one records that it has none yet.
        publish(state, setup, finished=setup.finished(state), exported=state_path is not None)
    if t.compile:
        state.model.net.compile()
    callbacks = [*default_callbacks(setup, state, progress=progress, tensorboard=tensorboard), *callbacks]

    # Steps until train.images are seen or a time limit is reached; the callbacks log, sample, evaluate and
    # checkpoint on their cadences, and at the end.
    state.model.train()
    while not setup.finished(state):
        batch = draw_batch(setup, state.step)
        for cb in callbacks:
            cb.before_step(state, batch)
        stats = train_step(state, batch, setup)
        # autoguidance's guide: the EMA at train.guide_at of the run's images, or of a time limit that may end it first
        at = guide_images(t, setup.total_images)
        if state.keep_guide(at, by_clock=stats.guide_by_clock) and state.images_seen < at:
            dist.print0(
                f"kept the guide model (autoguidance) at {state.images_seen} images, not {at}: train.guide_at="
                f"{t.guide_at:g} of the time limit came first"
            )
        state.window.add(stats, t.batch_size)
        for cb in callbacks:
            cb.after_step(state, stats)
        if stats.stop and not setup.finished(state):
            dist.print0(f"stopped by a signal after {state.images_seen} images; rerun the same command to resume")
            if not setup.stop.requested:  # another rank's signal (all-reduced): this rank stops as that one does
                setup.stop.requested, setup.stop.signum = True, signal.SIGTERM
            break
    if state.limit is not None and state.step < setup.total_steps:
        c = state.clock
        dist.print0(
            f"{state.limit}={getattr(t, state.limit[6:])} reached after {state.images_seen} images "
            f"({c.cpu_s():.0f} CPU s, {c.wall_s():.0f} s wall): the run ends here"
        )
    for cb in callbacks:
        cb.end(state)
    if setup.finished(state) and state.step > 0 and state.updates == 0:
        raise TrainingError(
            f"every one of the {state.skipped} steps had a non-finite loss or gradient, so nothing was learned; "
            f"try a lower train.lr or train.precision=fp32"
        )
    dist.barrier()
    return out


def _training_data(
    cfg: RunConfig, out: Path, data: Any, *, resume: bool, progress: bool, device: torch.device
) -> tuple[RunConfig, Any]:
    """The whole training set in memory, as float32 (N, *data_shape), and the config fitted to it."""
    if data is None and cfg.data.latents_of:  # latent diffusion: the autoencoder's latents, cached (latent.py)
        from ..latent import training_latents

        data = training_latents(cfg, out, resume=resume, progress=progress and dist.is_main(), device=device)
    elif data is None:
        from ..data import load_data

        data = load_data(cfg.data, split="train", seed=cfg.train.seed)
    cfg = _fit_latents(cfg, data, out, resume)
    cfg = fit_conditioning(cfg, data)  # model.context_dim=-1 -> the data's width, before config.json is written
    asked = cfg.model.attn_resolutions
    cfg = fit_kind(cfg, data)  # a table's categories, a sequence's vocabulary; the network of the data kind
    saved = saved_config(out) if resume else None
    if saved is not None and saved.model.attn_resolutions == asked != cfg.model.attn_resolutions:
        # a run begun before a preset's attention size followed the data to its nearest level: resumed with the
        # network it was built with (no attention at the unmatched size), which its config.json records
        cfg = replace(cfg, model=replace(cfg.model, attn_resolutions=asked))
    _check_data(data, cfg)
    if cfg.model.text_retrieval and getattr(data, "retrieval", None) is None:
        from ..retrieval import attach_neighbours  # each example's neighbours by caption, from other groups

        data = attach_neighbours(data, cfg.model.text_retrieval)
    return cfg, data


def _setup(
    cfg: RunConfig, out: Path, data: Any, device: torch.device, model: Precond, stop: StopFlag, objective: Any
) -> Setup:
    t = cfg.train
    total_steps = steps_of_run(t)
    if objective is None:
        objective = build_objective(cfg, model, total_steps, device, out)
    X = data.x.to(torch.float32)
    unit, edges = noise_buckets(model)
    bf16 = t.precision == "bf16"
    return Setup(
        cfg=cfg,
        out=out,
        data=data,
        X=X,
        info=_data_info(data, out),
        device=device,
        rank=dist.rank(),
        world_size=dist.world_size(),
        total_steps=total_steps,
        order=DataOrder(X.shape[0], t.batch_size, t.seed, balance_weights(data, t.balance)),
        unit=unit,
        edges=edges,
        discrete_sigmas=model.process.sigmas if model.process is not None else None,
        stop=stop,
        objective=objective,
        autocast=torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext(),
    )


def new_state(cfg: RunConfig, data_shape: tuple[int, ...], device: torch.device) -> TrainState:
    """The network built from train.seed (rank 0's weights on every rank), its EMA and AdamW; counters at 0."""
    from ..model import build_model

    t = cfg.train
    torch.manual_seed(t.seed)
    model = build_model(cfg, data_shape).to(device)
    for p in model.parameters():  # rank 0's initial weights everywhere, whatever the init code does
        dist.broadcast_(p.data)
    if t.channels_last and len(data_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    ema = EMA(model)
    # fused: one kernel updates every tensor (4.7x faster than the per-tensor loop on 2 CPU threads; the same
    # update rule, not bit-identical to it - a resumed run keeps the optimizer settings it was saved with)
    fused = device.type in ("cpu", "cuda") and all(p.dtype in (torch.float32, torch.float64) for p in params)
    opt = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, fused=fused)
    return TrainState(model=model, ema=ema, opt=opt, params=params, batch_size=t.batch_size)


def draw_batch(setup: Setup, step: int) -> Batch:
    """This rank's micro-batches of global batch ``step``: every draw comes from (train.seed, step) alone.

    sigma, drop and noise are drawn for the whole global batch (B examples) and sliced, so an example's draws
    depend on its position in the global batch, never on the rank or the number of processes.
    """
    t, device = setup.cfg.train, setup.device
    B, shard, b = t.batch_size, t.batch_size // setup.world_size, setup.micro_batch
    torch.manual_seed(mix_seed(t.seed, STREAM_TORCH, step, setup.rank))  # e.g. dropout inside the network
    g = _generator(mix_seed(t.seed, STREAM_DRAWS, step))
    sigma = setup.objective.draw_sigmas(B, g, step)
    drop = torch.rand(B, generator=g) < t.cond_drop_prob
    # train.caption_drop_prob: the caption alone dropped, its retrieved neighbours kept (drawn only when asked, so
    # other runs' draws are unchanged)
    u = torch.rand(B, generator=g) if t.caption_drop_prob > 0 else None
    caption_only = None if u is None else (~drop) & (u < t.caption_drop_prob / max(1.0 - t.cond_drop_prob, 1e-12))
    noise_g = _generator(mix_seed(t.seed, STREAM_NOISE, step), device)
    noise = torch.randn((B, *setup.data_shape), generator=noise_g, device=device)
    idx = setup.order.batch(step)

    # This rank's contiguous shard of B / world_size examples, in grad_accum micro-batches of b.
    micro = []
    for k in range(t.grad_accum):
        sl = slice(setup.rank * shard + k * b, setup.rank * shard + (k + 1) * b)
        x0 = setup.X[idx[sl]].to(device, non_blocking=True)
        if t.channels_last and x0.ndim == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        if caption_only is None:
            cond = cond_from_data(setup.data, idx[sl], drop[sl], setup.cfg.model, device)
        else:
            cond = cond_from_data(setup.data, idx[sl], drop[sl] | caption_only[sl], setup.cfg.model, device)
            cond["drop_neighbours"] = drop[sl].to(device)
        mb = MicroBatch(x0=x0, sigma=sigma[sl].to(device), noise=noise[sl], cond=cond, index=idx[sl], position=sl.start)
        micro.append(mb)
    return Batch(step=step, micro=micro)


def train_step(state: TrainState, batch: Batch, setup: Setup) -> StepStats:
    """One optimizer step on one global batch: forward/backward, one all-reduce, then update or skip everywhere.

    A step whose loss or gradient is not finite (on any rank) is skipped by every rank: weights, optimizer,
    LR schedule and EMA stay as they were. train.max_nonfinite such steps in a row raise TrainingError.
    """
    t = setup.cfg.train
    B, K = t.batch_size, len(setup.edges) - 1

    # Forward/backward over this rank's micro-batches; gradients accumulate (sum of losses) / B.
    loss_sum, sums, counts = torch.zeros(1), torch.zeros(K), torch.zeros(K)
    for mb in batch.micro:
        with setup.autocast:
            per = setup.objective.loss(state.model, mb, batch.step)
        (per.sum() / B).backward()
        per, bucket = per.detach().float().cpu(), bucket_index(state.model, mb.sigma, setup.edges)
        loss_sum += per.sum()
        sums.index_add_(0, bucket, per)
        counts.index_add_(0, bucket, torch.ones_like(per))

    # One all-reduce for gradients and statistics; afterwards every rank holds the same bits. Gradients start
    # as None each step (the backward then hands over its tensors instead of adding them to zeros); a parameter
    # this batch did not use gets zeros, so every rank reduces the same list.
    for p in state.params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in state.params]
    # [a signal, the time limit rank 0 has reached (its code; the other ranks add 0), whether train.guide_at of a
    # time limit has passed on rank 0's clock]: every rank stops, and keeps the guide, together ...
    limit = state.clock.over(t.cpu_minutes, t.minutes) if setup.main else 0
    guide_due = setup.main and state.guide is None and guide_due_by_clock(t, state.clock)
    # ... and whether rank 0's run folder was deleted (rm -rf): rank 0 alone writes, so it alone would notice, and
    # the others would wait in the next collective for a rank that has gone (gloo's 'Connection closed by peer')
    gone = setup.main and not held_still(setup.out)
    stop = torch.tensor([float(setup.stop.requested), float(limit), float(guide_due), float(gone)])
    loss_sum, stop, sums, counts = _all_reduce_sum(grads, [loss_sum, stop, sums, counts], setup.device)
    if stop[3] > 0:  # every rank stops with rank 0's one line (RunFolderGone), before anything is written
        dist.main_decides(lambda: check_held(setup.out))
    grad_norm = torch.nn.utils.get_total_norm(grads)
    finite = bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(loss_sum[0]))

    # Update, or skip the step everywhere (optimizer, LR schedule and EMA untouched).
    if finite:
        _update(state, grad_norm, setup)
    else:
        state.skipped += 1
        state.consecutive_nonfinite += 1
        if state.consecutive_nonfinite >= t.max_nonfinite:
            raise TrainingError(
                f"stopped at step {state.step} ({state.images_seen} images): {state.consecutive_nonfinite} "
                f"consecutive steps had a non-finite loss or gradient (train.max_nonfinite={t.max_nonfinite}); "
                f"try a lower train.lr or train.precision=fp32"
            )
    for p in state.params:
        p.grad = None
    state.step += 1
    if int(stop[1]) and state.step < setup.total_steps:
        state.limit = LIMITS[int(stop[1])]
    return StepStats(
        loss_sum=float(loss_sum[0]),
        grad_norm=float(grad_norm),
        finite=finite,
        stop=bool(stop[0] > 0),
        bucket_sums=sums,
        bucket_counts=counts,
        guide_by_clock=bool(stop[2] > 0),
    )


def _update(state: TrainState, grad_norm: Tensor, setup: Setup) -> None:
    """theta <- AdamW(theta, clip(grad)) at the scheduled lr, then the EMA; counts the update."""
    t, B = setup.cfg.train, state.batch_size
    state.consecutive_nonfinite = 0
    if t.grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(state.params, t.grad_clip, grad_norm)
    lr = learning_rate(t, state.updates, setup.total_images)
    for group in state.opt.param_groups:
        group["lr"] = lr
    state.opt.step()
    state.ema.update(state.model, ema_beta(B, state.updates * B, t.ema_halflife_images, t.ema_warmup_ratio))
    state.updates += 1


def _all_reduce_sum(grads: list[Tensor], stats: list[Tensor], device: torch.device) -> list[Tensor]:
    """Sum the gradients (in place) and the CPU statistics over every rank in one flat all-reduce.

    Returns the summed statistics (the inputs themselves with one process).
    """
    if dist.world_size() == 1:
        return stats
    moved = [s.to(device) for s in stats]
    dist.all_reduce_sum_flat_(grads + moved)
    return [m.cpu() for m in moved]
