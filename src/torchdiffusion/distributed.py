"""One code path for one process and many: rank, world size, and the few collectives training needs.

Launch with ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --nproc_per_node=2 -m torchdiffusion train --preset mnist-cpu --out runs/ddp      # one machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=host0:29500 -m torchdiffusion train ...                                  # on each node

Without torchrun (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) nothing is initialised and every
helper below degrades to the single-process answer, so the training loop never branches on "distributed or
not". The backend is NCCL when the process trains on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import datetime
import os
import sys

import torch
import torch.distributed as dist
from torch import Tensor


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def is_initialized() -> bool:
    """Whether a process group is up (launched by torchrun with more than one process)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without torchrun)."""
    return dist.get_rank() if is_initialized() else _env_int("RANK", 0)


def world_size() -> int:
    """Number of processes taking part in training (1 without torchrun)."""
    return dist.get_world_size() if is_initialized() else _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    """This process's rank on its own machine: the CUDA device it drives."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on rank 0, the only process that writes files and draws progress bars."""
    return rank() == 0


def print0(*args, **kwargs) -> None:
    """``print`` on rank 0 only (to stderr by default, so stdout stays clean for tools)."""
    if is_main():
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def default_device() -> torch.device:
    """The device this process trains on: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def init(device: torch.device | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group that torchrun describes (no-op for one process); returns the training device.

    Idempotent: calling it when a group is already up only returns the device.
    """
    device = default_device() if device is None else torch.device(device)
    if _env_int("WORLD_SIZE", 1) > 1 and not is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return device


def shutdown() -> None:
    """Leave the process group (no-op for one process)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if is_initialized():
        dist.barrier()


def all_reduce_sum_(t: Tensor) -> Tensor:
    """In-place sum over ranks; every rank receives the same bits. Returns ``t``."""
    if is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max_(t: Tensor) -> Tensor:
    """In-place maximum over ranks. Returns ``t``."""
    if is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_reduce_mean_(t: Tensor) -> Tensor:
    """In-place mean over ranks. Returns ``t``."""
    if is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world_size())
    return t


def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """In-place: every rank receives rank ``src``'s tensor. Returns ``t``."""
    if is_initialized():
        dist.broadcast(t, src=src)
    return t


def broadcast_int(value: int, src: int = 0, device: torch.device | str = "cpu") -> int:
    """Rank ``src``'s integer on every rank."""
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    return int(broadcast_(t, src).item())


def ranks_agree(value: float, device: torch.device | str = "cpu") -> bool:
    """Whether every rank holds the same float (e.g. a checksum of the weights)."""
    t = torch.tensor([value, -value], dtype=torch.float64, device=device)
    all_reduce_max_(t)
    return bool(t[0].item() == -t[1].item())
