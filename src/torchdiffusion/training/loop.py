"""The training loop: ``train(cfg, out_dir)`` turns a RunConfig into a run folder.

One optimizer step, for a global batch of B images (Ho et al. 2020 Alg. 1; Karras et al. 2022 Sec. 5):

    x0 ~ data,  sigma ~ p_train(sigma),  n ~ N(0, I),  drop ~ Bernoulli(cond_drop_prob)
    L  = 1/B sum_i w(sigma_i) || D(x0_i + sigma_i n_i, sigma_i, cond_i) - x0_i ||^2      (losses.precond_loss)
    theta <- AdamW(theta, clip(grad L)),  lr from lr.learning_rate,  theta_ema from ema.ema_beta

Everything that makes the run trustworthy is decided by (seed, step) alone:

* **Data order.** Example positions ``step*B .. step*B + B - 1`` of an endless stream of per-epoch
  permutations, each drawn from a generator seeded by (seed, epoch). The position to resume from is just the
  step.
* **Per-example randomness.** sigma, noise and the drop mask of the *whole global batch* are drawn from
  generators seeded by (seed, step) on every rank; each rank keeps its contiguous shard. An example's draws
  therefore depend on its position in the global batch, never on the rank or the number of processes, and a
  1-process and a 2-process run compute the same gradient (up to float summation order).
* **Gradient averaging.** Each rank backpropagates (sum of its per-example losses) / B, then the gradients are
  summed over ranks in one flat all-reduce, together with the loss and the loss-by-noise-level statistics.
  Every rank then sees the same bits, so the non-finite check, clipping, AdamW and the EMA stay in lockstep.
* **Exact resume.** A checkpoint holds model, EMA, optimizer, the step/update counters and every RNG; since
  the per-step draws are re-derived from (seed, step), a run killed at any moment and resumed ends with the
  same bits as an uninterrupted one.

Test hooks (environment variables, used only by the tests):

* ``TORCHDIFFUSION_INJECT_NAN="3,5@1"``: multiply the loss by NaN at steps 3 (every rank) and 5 (rank 1 only).
* ``TORCHDIFFUSION_DUMP_RANKS=1``: every rank writes ``debug/rank-<r>.safetensors`` and ``debug/rank-<r>.json``.
* ``TORCHDIFFUSION_STEP_DELAY=<seconds>``: sleep after every step (so a test can kill a run mid-way).
* ``TORCHDIFFUSION_CRASH_IN_CHECKPOINT=<images>``: see checkpoint.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import __version__ as VERSION
from .. import distributed as dist
from ..config import ConfigError, RunConfig, from_json, to_dict, to_json, validate
from ..data import fit_conditioning, kind_of_shape
from ..io import atomic_write, save_safetensors
from ..losses import precond_loss, sample_sigmas
from ..precond import Precond
from .checkpoint import (
    STATE_FORMAT,
    STATE_VERSION,
    CheckpointError,
    latest_state,
    list_states,
    load_state,
    save_state,
)
from .ema import EMA, ema_beta
from .lr import learning_rate

NUM_NOISE_BUCKETS = 8  # loss_by_sigma resolution


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps); the message is one line for the user."""


# ---------------------------------------------------------------------------------------------------------
# Deterministic randomness: one 63-bit seed per (seed, purpose, index)
# ---------------------------------------------------------------------------------------------------------

_MASK = (1 << 64) - 1
STREAM_DATA, STREAM_DRAWS, STREAM_NOISE, STREAM_TORCH = 1, 2, 3, 4


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


class DataOrder:
    """Example indices for each global batch: an endless stream of seeded per-epoch permutations."""

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        self.N, self.B, self.seed = int(num_examples), int(batch_size), int(seed)
        self._cache: dict[int, Tensor] = {}

    def permutation(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.N, generator=_generator(mix_seed(self.seed, STREAM_DATA, epoch)))
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
            out[m] = self.permutation(e)[offsets[m]]
        return out


# ---------------------------------------------------------------------------------------------------------
# Conditioning and noise-level buckets
# ---------------------------------------------------------------------------------------------------------


def make_cond(data: Any, idx: Tensor, drop: Tensor, cfg: RunConfig, device: torch.device) -> dict | None:
    """The cond dict for examples ``idx`` of ``data``: "class", "context", "text"/"text_mask" and "drop".

    A key is present when the model asks for it (num_classes / context_dim / text_dim > 0) and the data has
    it. ``drop`` (B,) bool marks examples that use the null embedding (classifier-free guidance dropout).
    """
    m = cfg.model
    cond: dict[str, Tensor] = {}
    if m.num_classes > 0 and getattr(data, "labels", None) is not None:
        cond["class"] = data.labels[idx].to(device=device, dtype=torch.long)
    if m.context_dim > 0 and getattr(data, "context", None) is not None:
        cond["context"] = data.context[idx].to(device=device, dtype=torch.float32)
    if m.text_dim > 0 and getattr(data, "text", None) is not None:
        cond["text"] = data.text[idx].to(device=device, dtype=torch.float32)
        if getattr(data, "text_mask", None) is not None:
            cond["text_mask"] = data.text_mask[idx].to(device=device)
    if not cond:
        return None
    cond["drop"] = drop.to(device=device, dtype=torch.bool)
    return cond


def _check_cond_data(data: Any, cfg: RunConfig) -> None:
    m = cfg.model
    if m.num_classes > 0 and getattr(data, "labels", None) is None:
        raise ConfigError("model.num_classes > 0 but the data has no labels")
    if m.context_dim > 0 and getattr(data, "context", None) is None:
        raise ConfigError("model.context_dim > 0 but the data has no context vectors")
    if m.context_dim > 0 and data.context.shape[-1] != m.context_dim:
        raise ConfigError(
            f"model.context_dim={m.context_dim} but the data's context vectors have {data.context.shape[-1]} entries"
        )
    if m.text_dim > 0 and getattr(data, "text", None) is None:
        raise ConfigError("model.text_dim > 0 but the data has no text features")


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


# ---------------------------------------------------------------------------------------------------------
# Signals, test hooks, run-folder files
# ---------------------------------------------------------------------------------------------------------


class _StopFlag:
    """SIGTERM/SIGINT set a flag; the loop finishes the current step, checkpoints and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        self.requested = True

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _nan_steps(rank: int) -> set[int]:
    """Steps at which the TORCHDIFFUSION_INJECT_NAN test hook poisons this rank's loss."""
    spec = os.environ.get("TORCHDIFFUSION_INJECT_NAN", "").strip()
    out = set()
    for item in filter(None, (s.strip() for s in spec.split(","))):
        step, _, r = item.partition("@")
        if r == "" or int(r) == rank:
            out.add(int(step))
    return out


def _rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [int(v) for v in random.getstate()[1]],
    }
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"], device)
    n = state.get("numpy")
    if n is not None:
        np.random.set_state(
            ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
    if state.get("python"):
        random.setstate((3, tuple(state["python"]), None))


def _data_info(data: Any) -> dict:
    x = data.x
    shape = [int(s) for s in x.shape[1:]]
    labels = getattr(data, "labels", None)
    context = getattr(data, "context", None)
    class_names = getattr(data, "class_names", None)
    return {
        "data_shape": shape,
        "kind": getattr(data, "kind", None) or kind_of_shape(tuple(shape)),
        "class_names": list(class_names) if class_names is not None else None,
        "num_classes": int(labels.max().item()) + 1 if labels is not None and len(labels) else 0,
        "context_dim": int(context.shape[-1]) if context is not None else 0,
    }


def _truncate_metrics(path: Path, images_seen: int) -> None:
    """Drop log lines written after the state we resume from (they will be written again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("images_seen", 0) <= images_seen:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a half-written last line from a kill
    atomic_write(path, "".join(s + "\n" for s in keep))


def _crossed(images_seen: int, batch: int, every: int) -> bool:
    """Whether the step that just brought images_seen up by ``batch`` passed a multiple of ``every``."""
    return every > 0 and images_seen // every > (images_seen - batch) // every


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    data: Any | None = None,
    tensorboard: bool = False,
    device: str | torch.device | None = None,
) -> Path:
    """Train the model that ``cfg`` describes and return the run folder.

    Args:
        cfg: the whole run configuration (validated here).
        out_dir: the run folder; created if needed. With ``resume`` and a ``checkpoints/latest`` inside it,
            training continues exactly where that state left off.
        resume: False starts over, deleting the folder's old training states and metrics.
        progress: draw a tqdm bar in images (rank 0 only).
        data: a TensorData (``.x`` (N, C, H, W) or (N, D), ``.labels``, ``.context`` ...); loaded from
            ``cfg.data`` when None.
        tensorboard: also log to ``out_dir/tensorboard`` (when the tensorboard package is installed).
        device: defaults to ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.

    Raises:
        ConfigError / CheckpointError (ValueError): unusable configuration, data or run folder.
        TrainingError (RuntimeError): ``max_nonfinite`` consecutive non-finite steps.
    """
    cfg = validate(cfg)
    out = Path(out_dir)
    owns_group = not dist.is_initialized()
    with _StopFlag() as stop:
        try:
            device = dist.init(None if device is None else torch.device(device))
            return _train(
                cfg, out, resume=resume, progress=progress, data=data, tensorboard=tensorboard, device=device, stop=stop
            )
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
    stop: _StopFlag,
) -> Path:
    from ..model import build_model

    t_cfg = cfg.train
    rank, W, main = dist.rank(), dist.world_size(), dist.is_main()
    B, A = t_cfg.batch_size, t_cfg.grad_accum
    if B % (W * A) != 0:
        raise ConfigError(f"train.batch_size={B} must be divisible by world size x grad_accum = {W} x {A}")
    shard, micro = B // W, B // (W * A)
    if t_cfg.threads > 0:
        torch.set_num_threads(t_cfg.threads)

    # -- Data ----------------------------------------------------------------------------------------------
    if data is None:
        from ..data import load_data

        data = load_data(cfg.data, split="train", seed=t_cfg.seed)
    cfg = fit_conditioning(cfg, data)  # model.context_dim=-1 -> the data's width, before config.json is written
    X = data.x.to(torch.float32)
    N = X.shape[0]
    if N == 0:
        raise ConfigError("the training data is empty")
    _check_cond_data(data, cfg)
    info = _data_info(data)
    data_shape = tuple(info["data_shape"])
    total_steps = math.ceil(t_cfg.images / B)
    total_images = total_steps * B

    # -- Run folder: decide between resuming and starting over (rank 0 decides, everyone follows) ---------
    ckpt_dir = out / "checkpoints"
    state_path = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            state_path = latest_state(ckpt_dir)
            if state_path is not None:
                _check_same_run(out, cfg)
        else:
            for _, p in list_states(ckpt_dir):
                p.unlink()
            (ckpt_dir / "latest").unlink(missing_ok=True)
            (out / "metrics.jsonl").unlink(missing_ok=True)
            shutil.rmtree(out / "debug", ignore_errors=True)
        atomic_write(out / "config.json", to_json(cfg) + "\n")
    resume_images = dist.broadcast_int(int(state_path.name[6:-3]) if state_path is not None else -1)
    if resume_images >= 0 and state_path is None:
        state_path = ckpt_dir / f"state-{resume_images:09d}.pt"  # other ranks read the same (shared) folder

    # -- Model, EMA, optimizer: same initial weights on every rank ------------------------------------------
    torch.manual_seed(t_cfg.seed)
    model = build_model(cfg, data_shape).to(device)
    for p in model.parameters():  # rank 0's initial weights everywhere, whatever the init code does
        dist.broadcast_(p.data)
    if t_cfg.channels_last and len(data_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    ema = EMA(model)
    opt = torch.optim.AdamW(params, lr=t_cfg.lr, betas=tuple(t_cfg.betas), weight_decay=t_cfg.weight_decay)
    for p in params:  # zero (never None) grads: every rank reduces the same list, unused params included
        p.grad = torch.zeros_like(p)

    step = updates = skipped = consecutive = 0
    unit, edges = noise_buckets(model)
    K = len(edges) - 1
    # Logging window, summed over ranks: [loss_sum, examples, grad_norm_sum, updates, skipped, K sums, K counts]
    window = torch.zeros(5 + 2 * K, dtype=torch.float64)
    if state_path is not None:
        state = load_state(state_path)
        try:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"{state_path} does not match this model ({str(e).splitlines()[0]})") from None
        step, updates = int(state["step"]), int(state["updates"])
        skipped, consecutive = int(state["skipped_steps"]), int(state["consecutive_nonfinite"])
        if "window" in state and state["window"].shape == window.shape:
            window = state["window"].clone()
        _set_rng_state(state["rng"], device)
        if step * B != int(state["images_seen"]):
            raise CheckpointError(f"{state_path} was written with train.batch_size != {B}; resume with the same one")
        dist.print0(f"resuming {out} from {state_path.name} ({step * B} images seen)")
    if main:
        _truncate_metrics(out / "metrics.jsonl", step * B)

    if t_cfg.compile:
        model.net.compile()
    order = DataOrder(N, B, t_cfg.seed)
    discrete = model.process.sigmas if model.process is not None else None
    d = cfg.diffusion
    nan_steps = _nan_steps(rank)
    step_delay = float(os.environ.get("TORCHDIFFUSION_STEP_DELAY", "0") or 0)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if t_cfg.precision == "bf16" else contextlib.nullcontext()
    )

    def state_dict() -> dict:
        epoch, offset = order.position(step)
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "images_seen": step * B,
            "step": step,
            "updates": updates,
            "skipped_steps": skipped,
            "consecutive_nonfinite": consecutive,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "lr_schedule": {"updates": updates, "next_lr": learning_rate(t_cfg, updates, total_images)},
            "data": {"epoch": epoch, "offset": offset, "num_examples": N, "seed": t_cfg.seed},
            "rng": _rng_state(device),
            "window": window.clone(),
            "world_size": W,
        }

    def write_run_json(finished: bool) -> None:
        run = dict(
            info, images_seen=step * B, finished=finished, version=VERSION, loss_by_sigma={"unit": unit, "edges": edges}
        )
        atomic_write(out / "run.json", json.dumps(run, indent=2) + "\n")

    def checkpoint(finished: bool) -> None:
        checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
        if not dist.ranks_agree(checksum):
            raise TrainingError(f"the processes' weights diverged by step {step}; this is a bug, please report it")
        if main:
            save_state(ckpt_dir, state_dict(), step * B, keep=t_cfg.keep_checkpoints)
            save_safetensors(model.state_dict(), out / "model.safetensors")
            save_safetensors(ema.state_dict(), out / "ema.safetensors")
            write_run_json(finished)

    if main:
        write_run_json(finished=step >= total_steps)
    metrics = out / "metrics.jsonl"
    fresh_metrics = not metrics.is_file() or metrics.stat().st_size == 0
    logger = _Logger(out, tensorboard and main, first=fresh_metrics, unit=unit, edges=edges) if main else None
    bar = None
    if main and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_images, initial=step * B, unit="img", unit_scale=True, dynamic_ncols=True, desc="train")
    t_window = time.perf_counter()

    # -- Steps ---------------------------------------------------------------------------------------------
    model.train()
    while step < total_steps:
        # Randomness of this global batch, from (seed, step) only; each rank keeps its shard.
        torch.manual_seed(mix_seed(t_cfg.seed, STREAM_TORCH, step, rank))  # e.g. dropout inside the network
        g = _generator(mix_seed(t_cfg.seed, STREAM_DRAWS, step))
        sigma = sample_sigmas(
            d.sigma_sampling, B, generator=g, discrete_sigmas=discrete, P_mean=d.P_mean, P_std=d.P_std
        )
        drop = torch.rand(B, generator=g) < t_cfg.cond_drop_prob
        noise = torch.randn(
            (B, *data_shape), generator=_generator(mix_seed(t_cfg.seed, STREAM_NOISE, step), device), device=device
        )
        idx = order.batch(step)
        buckets = bucket_index(model, sigma, edges)

        # Forward/backward over this rank's micro-batches; grads accumulate (sum of losses) / B.
        stats = torch.zeros(2 + 2 * K, dtype=torch.float32)  # [loss_sum, stop, K sums, K counts]
        for k in range(A):
            sl = slice(rank * shard + k * micro, rank * shard + (k + 1) * micro)
            x0 = X[idx[sl]].to(device, non_blocking=True)
            if t_cfg.channels_last and x0.ndim == 4:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            cond = make_cond(data, idx[sl], drop[sl], cfg, device)
            s = sigma[sl].to(device)
            with autocast:
                per = precond_loss(model, x0, s, noise[sl], weighting=d.weighting, gamma=d.min_snr_gamma, cond=cond)
            if step in nan_steps:
                per = per * float("nan")
            (per.sum() / B).backward()
            per = per.detach().float().cpu()
            stats[0] += per.sum()
            stats[2 : 2 + K].index_add_(0, buckets[sl], per)
            stats[2 + K :].index_add_(0, buckets[sl], torch.ones_like(per))
        stats[1] = float(stop.requested)

        # One all-reduce for gradients and statistics; afterwards every rank holds the same bits.
        grads = [p.grad for p in params]
        if W > 1:
            flat = torch.cat([g_.reshape(-1) for g_ in grads] + [stats.to(device)])
            dist.all_reduce_sum_(flat)
            o = 0
            for g_ in grads:
                g_.copy_(flat[o : o + g_.numel()].view_as(g_))
                o += g_.numel()
            stats = flat[o:].cpu()
        grad_norm = torch.nn.utils.get_total_norm(grads)
        finite = bool(torch.isfinite(grad_norm)) and bool(torch.isfinite(stats[0]))

        # Update, or skip the step everywhere (optimizer, LR schedule and EMA untouched).
        if finite:
            consecutive = 0
            if t_cfg.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, t_cfg.grad_clip, grad_norm)
            lr = learning_rate(t_cfg, updates, total_images)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            ema.update(model, ema_beta(B, updates * B, t_cfg.ema_halflife_images, t_cfg.ema_warmup_ratio))
            updates += 1
            window[0] += float(stats[0])
            window[1] += B
            window[2] += float(grad_norm)
            window[3] += 1
            window[5 : 5 + K] += stats[2 : 2 + K].double()
            window[5 + K :] += stats[2 + K :].double()
        else:
            skipped += 1
            consecutive += 1
            window[4] += 1
            if consecutive >= t_cfg.max_nonfinite:
                raise TrainingError(
                    f"stopped at step {step} ({step * B} images): {consecutive} consecutive "
                    f"steps had a non-finite loss or gradient (train.max_nonfinite="
                    f"{t_cfg.max_nonfinite}); try a lower train.lr or train.precision=fp32"
                )
        for g_ in grads:
            g_.zero_()
        if step_delay > 0:
            time.sleep(step_delay)
        step += 1
        seen = step * B
        stop_now = bool(stats[1] > 0)
        last = step >= total_steps

        # Logging, sample grids and checkpoints, on the images-seen cadence of the config.
        if bar is not None:
            bar.update(B)
        if _crossed(seen, B, t_cfg.log_every_images) or last or stop_now:
            if main and window[1] + window[4] > 0:
                dt = time.perf_counter() - t_window
                rec = logger.log(
                    window,
                    seen=seen,
                    step=step,
                    lr=learning_rate(t_cfg, max(updates - 1, 0), total_images),
                    skipped=skipped,
                    dt=dt,
                    B=B,
                )
                if bar is not None and rec.get("loss") is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
            window.zero_()
            t_window = time.perf_counter()
        if main and _crossed(seen, B, t_cfg.sample_every_images) and not last:
            _sample_grid(ema.module, cfg, data, info, out / "samples" / f"grid-{seen:09d}.png")
        if main and (_crossed(seen, B, t_cfg.eval_every_images) or (last and t_cfg.eval_every_images > 0)):
            _quick_eval(logger, ema.module, cfg, data_shape, X, seen=seen, step=step)
        if _crossed(seen, B, t_cfg.checkpoint_every_images) or last or stop_now:
            checkpoint(finished=last)
            _dump_rank(out, model, rank, step, updates, skipped)
        if stop_now and not last:
            dist.print0(f"stopped by a signal after {seen} images; rerun the same command to resume")
            break

    if bar is not None:
        bar.close()
    if logger is not None:
        logger.close()
    final_grid = out / "samples" / f"grid-{step * B:09d}.png"
    if main and step >= total_steps and not final_grid.is_file():
        _sample_grid(ema.module, cfg, data, info, final_grid)
    dist.barrier()
    return out


def _check_same_run(out: Path, cfg: RunConfig) -> None:
    """Resuming is allowed when the data, model and diffusion sections match the saved config.json."""
    path = out / "config.json"
    if not path.is_file():
        return
    try:
        old = from_json(path.read_text())
    except ConfigError:
        return
    for section in ("data", "model", "diffusion"):
        if to_dict(getattr(old, section)) != to_dict(getattr(cfg, section)):
            raise ConfigError(
                f"{out} holds a run with a different {section} section; pass --no-resume to start "
                f"over or choose another --out"
            )


def _dump_rank(out: Path, model: torch.nn.Module, rank: int, step: int, updates: int, skipped: int) -> None:
    """TORCHDIFFUSION_DUMP_RANKS test hook: every rank writes its own weights and counters."""
    if os.environ.get("TORCHDIFFUSION_DUMP_RANKS", "") not in ("1", "true", "yes"):
        return
    save_safetensors(model.state_dict(), out / "debug" / f"rank-{rank}.safetensors")
    atomic_write(
        out / "debug" / f"rank-{rank}.json",
        json.dumps({"rank": rank, "step": step, "updates": updates, "skipped_steps": skipped}),
    )


def _quick_eval(logger: _Logger, model: Precond, cfg: RunConfig, data_shape, X: Tensor, *, seen: int, step: int):
    """``train.eval_every_images``: evaluation.quick_eval of the EMA model, one metrics.jsonl line (rank 0).

    Sampling uses its own per-image seeds and every training step reseeds the global RNG, so evaluating (or not)
    leaves the training trajectory bit-identical. An evaluation that fails is logged (one line on stderr and an
    ``eval/error`` record) and training goes on: a metric must not end a long run.
    """
    from ..evaluation.evaluate import quick_eval

    t0 = time.perf_counter()
    try:
        rec = quick_eval(model, cfg, data_shape, X, n=cfg.train.eval_n)
    except Exception as e:  # noqa: BLE001 - reported, not raised (see above)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        dist.print0(f"quick evaluation at {seen} images failed ({msg}); training continues")
        rec = {"eval/error": msg}
    logger.write({"images_seen": seen, "step": step, **rec, "eval/seconds": time.perf_counter() - t0}, seen)


class _Logger:
    """metrics.jsonl (always) and TensorBoard (optional), on rank 0."""

    def __init__(self, out: Path, tensorboard: bool, first: bool, unit: str, edges: list[float]):
        self.path = out / "metrics.jsonl"
        self.first, self.unit, self.edges = first, unit, edges
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                dist.print0("tensorboard is not installed; logging to metrics.jsonl only")

    def log(self, w: Tensor, *, seen: int, step: int, lr: float, skipped: int, dt: float, B: int) -> dict:
        K = (len(w) - 5) // 2
        n, n_up = float(w[1]), float(w[3])
        sums, counts = w[5 : 5 + K], w[5 + K :]
        rec: dict[str, Any] = {
            "images_seen": seen,
            "step": step,
            "loss": float(w[0]) / n if n > 0 else None,
            "grad_norm": float(w[2]) / n_up if n_up > 0 else None,
            "lr": lr,
            "images_per_s": (n + float(w[4]) * B) / dt if dt > 0 else None,  # skipped steps cost time too
            "skipped_steps": skipped,
            "loss_by_sigma": [float(s / c) if c > 0 else None for s, c in zip(sums.tolist(), counts.tolist())],
        }
        if self.first:
            rec["loss_by_sigma_unit"] = self.unit
            rec["loss_by_sigma_edges"] = self.edges
            self.first = False
        self._append(rec)
        if self.tb is not None:
            for key in ("loss", "grad_norm", "lr", "images_per_s", "skipped_steps"):
                if rec[key] is not None:
                    self.tb.add_scalar(f"train/{key}", rec[key], seen)
            for k, v in enumerate(rec["loss_by_sigma"]):
                if v is not None:
                    self.tb.add_scalar(f"loss_by_{self.unit}/bucket{k}", v, seen)
        return rec

    def write(self, rec: dict, seen: int) -> None:
        """One extra metrics.jsonl line (e.g. a quick evaluation); its numbers also go to TensorBoard."""
        self._append(rec)
        if self.tb is not None:
            for key, v in rec.items():
                if "/" in key and isinstance(v, (int, float)):
                    self.tb.add_scalar(key, v, seen)

    def _append(self, rec: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _sample_grid(model: Precond, cfg: RunConfig, data: Any, info: dict, path: Path) -> None:
    """A small grid (images), line plots (signals) or scatter (2-D vectors) from the EMA model (viz.save_samples)."""
    try:
        from ..generate import generate
        from ..viz import save_samples
    except ImportError:
        return
    vector = info["kind"] == "vector"
    if vector and info["data_shape"] != [2]:
        return
    n = min(cfg.sample.n, 2000 if vector else 64)
    seeds = range(cfg.sample.seed, cfg.sample.seed + n)
    device = next(model.parameters()).device
    cond = make_cond(data, torch.arange(n) % data.x.shape[0], torch.zeros(n, dtype=torch.bool), cfg, device)
    if cond is not None and "class" in cond:
        cond["class"] = torch.arange(n, device=device) % cfg.model.num_classes
    try:
        x = generate(
            model, seeds, replace(cfg.sample, n=n), tuple(info["data_shape"]), cond=cond, precision=cfg.train.precision
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        save_samples(x, info["kind"], path, reference=data.x[:2000] if vector else None)
    except Exception as e:  # a grid is a convenience: report it, never lose a training run over it
        dist.print0(f"warning: could not draw {path.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
