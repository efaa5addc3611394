"""The records the training loop passes around.

Setup       what stays fixed for a whole run: config, data, process group, length, noise-level buckets
TrainState  what a step changes and a checkpoint saves: model, EMA, optimizer, counters, the log window
Clock       the run's cumulative process CPU and wall seconds, and the train.cpu_minutes / train.minutes limits
Batch       this rank's micro-batches of one global batch: x0, sigma, noise, cond
StepStats   what one optimizer step measured, summed over every rank
Window      the StepStats of the steps since the last metrics line, summed
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..config import RunConfig, TrainConfig
from ..precond import Precond
from .ema import EMA

if TYPE_CHECKING:
    from .loop import DataOrder, StopFlag
    from .objective import Objective

NUM_NOISE_BUCKETS = 8  # loss_by_sigma resolution


def steps_of_run(t: TrainConfig) -> int:
    """Optimizer steps of a run: train.images in whole global batches (the last one full)."""
    return math.ceil(t.images / t.batch_size)


def guide_images(t: TrainConfig, total_images: int) -> int:
    """Images seen when autoguidance's guide model is kept: train.guide_at of the run's length (0: none is kept)."""
    return math.ceil(t.guide_at * total_images)


def guide_due_by_clock(t: TrainConfig, clock: Clock) -> bool:
    """Whether train.guide_at of a time limit (train.cpu_minutes, train.minutes) has passed: a run that a limit ends
    before train.images keeps its guide at that fraction of its time, so it still has the guide its config samples
    with (sample.autoguidance)."""
    return t.guide_at > 0 and clock.over(t.guide_at * t.cpu_minutes, t.guide_at * t.minutes) != 0


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps); the message is one line for the user."""


@dataclass(frozen=True)
class Setup:
    """What stays fixed for the whole run, on this rank."""

    cfg: RunConfig
    out: Path  # the run folder
    data: Any  # the TensorData: .x, and .labels / .context / .text when the model is conditional
    X: Tensor  # (N, *data_shape) float32, the training examples
    info: dict  # data_shape, kind, class_names, num_classes, context_dim (saved in run.json)
    device: torch.device
    rank: int
    world_size: int
    total_steps: int  # ceil(train.images / B): the run ends after this many global batches
    order: DataOrder  # which examples make up global batch ``step``
    unit: str  # loss_by_sigma buckets over "t" (discrete models) or "log_sigma"
    edges: list[float]  # the K + 1 bucket edges in that unit
    discrete_sigmas: Tensor | None  # the sigma table of a discrete model (training draws from it)
    stop: StopFlag  # set by SIGTERM/SIGINT; read at every step's all-reduce
    objective: Objective  # the sigma draws and per-example loss of a step (objective.py)
    autocast: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)

    @property
    def batch_size(self) -> int:
        """B: the global batch, all ranks and micro-batches together."""
        return self.cfg.train.batch_size

    @property
    def micro_batch(self) -> int:
        """Examples per forward/backward pass on one rank: B / (world size x grad_accum)."""
        return self.batch_size // (self.world_size * self.cfg.train.grad_accum)

    @property
    def total_images(self) -> int:
        return self.total_steps * self.batch_size

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.info["data_shape"])

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    def finished(self, state: TrainState) -> bool:
        """The run has ended: train.images are seen, or a time limit stopped it (``state.limit``)."""
        return state.step >= self.total_steps or state.limit is not None


# The time limits: the name recorded in run.json's "stopped_by", and its code in the stop all-reduce.
LIMITS = {1: "train.cpu_minutes", 2: "train.minutes"}


class Clock:
    """The run's cumulative seconds: process CPU time (``time.process_time``: user + system time of every thread of
    this process) and wall-clock time, counted from the start of training in this process plus what the state it
    resumed from had counted (so an exact resume continues both counters)."""

    def __init__(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        self.cpu_before, self.wall_before = 0.0, 0.0

    def resume(self, cpu_s: float, wall_s: float) -> None:
        self.cpu_before, self.wall_before = float(cpu_s), float(wall_s)

    def cpu_s(self) -> float:
        return self.cpu_before + time.process_time() - self.cpu0

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.wall0

    def over(self, cpu_minutes: float, minutes: float) -> int:
        """The code (a key of LIMITS) of the first limit reached, 0 if none; a limit of 0 is off."""
        if cpu_minutes > 0 and self.cpu_s() >= 60.0 * cpu_minutes:
            return 1
        if minutes > 0 and self.wall_s() >= 60.0 * minutes:
            return 2
        return 0


@dataclass
class Window:
    """The statistics of the steps since the last metrics line, summed over every rank.

    Checkpointed (as one float64 tensor, see :meth:`to_tensor`), so a resumed run writes the same lines.
    """

    loss_sum: float  # per-example losses of the applied steps
    examples: int  # examples in the applied steps
    grad_norm_sum: float  # gradient norms of the applied steps
    updates: int  # applied steps
    skipped: int  # skipped (non-finite) steps
    bucket_sums: Tensor  # (K,) float64 per-example losses by noise-level bucket
    bucket_counts: Tensor  # (K,) float64 examples by bucket

    @classmethod
    def empty(cls, num_buckets: int = NUM_NOISE_BUCKETS) -> Window:
        zeros = torch.zeros(num_buckets, dtype=torch.float64)
        return cls(0.0, 0, 0.0, 0, 0, zeros, zeros.clone())

    def add(self, stats: StepStats, batch_size: int) -> None:
        if stats.finite:
            self.loss_sum += stats.loss_sum
            self.examples += batch_size
            self.grad_norm_sum += stats.grad_norm
            self.updates += 1
            self.bucket_sums += stats.bucket_sums.double()
            self.bucket_counts += stats.bucket_counts.double()
        else:
            self.skipped += 1

    def to_tensor(self) -> Tensor:
        """(5 + 2K,) float64: [loss_sum, examples, grad_norm_sum, updates, skipped, K sums, K counts]."""
        head = torch.tensor(
            [self.loss_sum, self.examples, self.grad_norm_sum, self.updates, self.skipped], dtype=torch.float64
        )
        return torch.cat([head, self.bucket_sums, self.bucket_counts])

    @classmethod
    def from_tensor(cls, t: Tensor) -> Window:
        K = (len(t) - 5) // 2
        h = t[:5].tolist()
        return cls(h[0], int(h[1]), h[2], int(h[3]), int(h[4]), t[5 : 5 + K].clone(), t[5 + K :].clone())


@dataclass
class TrainState:
    """What a step changes and a checkpoint saves (the RNG states are read when the checkpoint is written)."""

    model: Precond
    ema: EMA
    opt: torch.optim.Optimizer
    params: list[torch.nn.Parameter]  # the trainable parameters; their gradients are reduced in this order
    batch_size: int  # B, to count images
    window: Window = field(default_factory=Window.empty)
    step: int = 0  # global batches consumed (applied or skipped steps)
    updates: int = 0  # optimizer updates applied: the LR schedule and the EMA count these
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    consecutive_nonfinite: int = 0  # skipped steps in a row (training stops at train.max_nonfinite)
    clock: Clock = field(default_factory=Clock)  # cumulative CPU and wall seconds (checkpointed)
    limit: str | None = None  # the time limit (a value of LIMITS) that ended the run, if one did
    guide: Precond | None = None  # the EMA model as it was at train.guide_at (autoguidance), once reached

    def keep_guide(self, at_images: int, by_clock: bool = False) -> bool:
        """Keep a frozen copy of the EMA model as the run's guide once ``at_images`` images are seen, or when
        ``by_clock`` (train.guide_at of a time limit has passed: :func:`guide_due_by_clock`), whichever comes first
        (autoguidance, Karras et al. 2024: a weaker version of the model itself). True when it is kept now."""
        if at_images > 0 and self.guide is None and (self.images_seen >= at_images or by_clock):
            self.set_guide(self.ema.state_dict())
            return True
        return False

    def set_guide(self, weights: dict[str, Tensor]) -> None:
        """The guide model with ``weights``, attached to the EMA module so in-training samples use it
        (generate.attach_guide)."""
        from ..generate import attach_guide

        self.guide = copy.deepcopy(self.ema.module)
        self.guide.load_state_dict(weights)
        attach_guide(self.ema.module, self.guide)

    @property
    def images_seen(self) -> int:
        return self.step * self.batch_size


@dataclass
class MicroBatch:
    """One forward/backward pass: the draws of Alg. 1 for examples of this rank's shard."""

    x0: Tensor  # (b, *data_shape) clean examples, on the device
    sigma: Tensor  # (b,) noise levels
    noise: Tensor  # (b, *data_shape) n ~ N(0, I)
    cond: dict | None  # cond.cond_from_data: class / context / text and the guidance drop mask
    index: Tensor | None = None  # (b,) long: the examples' positions in the data set (reflow pairs them with noise)
    position: int = 0  # the first example's position in the global batch (an objective's own draws are cut there)


@dataclass
class Batch:
    """This rank's shard of global batch ``step``, cut into train.grad_accum micro-batches."""

    step: int
    micro: list[MicroBatch]


@dataclass(frozen=True)
class StepStats:
    """One optimizer step, summed over every rank (so every rank holds the same numbers)."""

    loss_sum: float  # sum of the B per-example losses
    grad_norm: float  # global gradient norm, before clipping
    finite: bool  # False: the step was skipped on every rank
    stop: bool  # some rank was asked to stop (SIGTERM/SIGINT) during the step
    bucket_sums: Tensor  # (K,) per-example losses summed by noise-level bucket
    bucket_counts: Tensor  # (K,) examples in each bucket
    guide_by_clock: bool = False  # train.guide_at of a time limit has passed (rank 0's clock decides for all)
