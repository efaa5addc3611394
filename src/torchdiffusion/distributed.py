"""One code path for one process and many: rank, world size, and the few collectives training needs.

Launch with ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --nproc_per_node=2 -m torchdiffusion train --preset mnist-cpu --out runs/ddp      # one machine
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=host0:29500 -m torchdiffusion train ...                                  # on each node

Without torchrun (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) nothing is initialised and every
helper below degrades to the single-process answer, so the training loop never branches on "distributed or
not". The backend is NCCL when the process trains on CUDA and gloo on the CPU.

Workers die with their launcher. torchrun starts each worker in a session of its own, so killing torchrun's
process group (or torchrun alone, with SIGKILL) would leave them training and checkpointing on their own.
``init`` therefore asks the kernel for SIGTERM when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``) and
starts a watchdog thread that notices a changed parent pid anywhere: both make the training loop stop cleanly
(SIGTERM: finish the step, checkpoint, return); a worker still alive ``ORPHAN_GRACE_S`` later is killed.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


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


def check_batch_splits(batch_size: int, grad_accum: int = 1, name: str = "train.batch_size") -> None:
    """ConfigError (one line) for a batch that the processes torchrun starts cannot share out in ``grad_accum``
    equal micro-batches each: the training loop's own check, which the commands make before anything is written."""
    from .config import ConfigError

    w = world_size()
    if batch_size % (w * grad_accum) != 0:
        if grad_accum == 1 and name.startswith("--"):  # a command's own option (distill): no grad_accum to name
            raise ConfigError(f"{name} {batch_size} must be divisible by the number of processes, {w}")
        raise ConfigError(f"{name}={batch_size} must be divisible by world size x grad_accum = {w} x {grad_accum}")


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


ORPHAN_GRACE_S = 60.0  # a worker whose launcher died gets this long to checkpoint before it is killed
_PR_SET_PDEATHSIG = 1


def launched_by_torchrun() -> bool:
    """Whether this process is a torchrun worker (torchrun sets TORCHELASTIC_RUN_ID for its workers)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def die_with_parent(grace_s: float = ORPHAN_GRACE_S, poll_s: float = 0.5) -> None:
    """Stop this process (SIGTERM, then SIGKILL after ``grace_s``) as soon as its parent process is gone."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still works
    if parent == 1 or not _alive(parent):  # the launcher died before we got here
        _orphaned(grace_s)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        _orphaned(grace_s)

    threading.Thread(target=watch, name="torchdiffusion-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _orphaned(grace_s: float) -> None:
    """The launcher is gone: ask for a clean stop now, insist after ``grace_s``."""
    os.kill(os.getpid(), signal.SIGTERM)

    def kill_later() -> None:
        time.sleep(grace_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill_later, name="torchdiffusion-orphan-kill", daemon=True).start()


_watching = False


def init(device: torch.device | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group that torchrun describes (no-op for one process); returns the training device.

    Idempotent: calling it when a group is already up only returns the device. A torchrun worker is also
    bound to its launcher's life here (see ``die_with_parent``).
    """
    global _watching
    if launched_by_torchrun() and not _watching:
        _watching = True
        die_with_parent()
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


def all_reduce_sum_flat_(tensors: list[Tensor]) -> list[Tensor]:
    """In-place sum over ranks of several tensors (one device) in ONE flat all-reduce. Returns ``tensors``."""
    if is_initialized() and tensors:
        flat = all_reduce_sum_(torch.cat([t.reshape(-1) for t in tensors]))
        for t, f in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
            t.copy_(f.view_as(t))
    return tensors


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


def _comm_device() -> torch.device:
    """Where small collective tensors live: the current CUDA device under NCCL, else the CPU."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_int(value: int, src: int = 0, device: torch.device | str | None = None) -> int:
    """Rank ``src``'s integer on every rank."""
    t = torch.tensor([int(value)], dtype=torch.int64, device=device or _comm_device())
    return int(broadcast_(t, src).item())


def broadcast_text(text: str, src: int = 0) -> str:
    """Rank ``src``'s string on every rank (e.g. one error line that every rank must raise)."""
    if not is_initialized():
        return text
    n = broadcast_int(len(text.encode("utf-8")), src)
    if n == 0:
        return ""
    buf = torch.zeros(n, dtype=torch.uint8, device=_comm_device())
    if rank() == src:
        buf.copy_(torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8))
    return bytes(broadcast_(buf, src).cpu().tolist()).decode("utf-8", errors="replace")


class RankFailure(Exception):
    """Raised on every other rank when a check rank 0 alone makes failed (:func:`main_decides`): rank 0's one-line
    message and exit code (``cli.classify``), which rank 0 prints; the others exit with the code, silently."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def main_decides(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 alone - its answer there, None on the other ranks, which wait for it. When it raises,
    every rank raises (rank 0 its own exception, the others :class:`RankFailure`), so no rank is left waiting in
    the next collective for a rank that has gone (its peers used to fail with gloo's 'Connection closed by peer'
    traceback). Without torchrun, just ``fn()``."""
    result, failure, verdict = None, None, ""
    if is_main():
        try:
            result = fn()
        except Exception as e:
            from .cli import classify
            from .io import first_line

            known = classify(e)
            failure, verdict = e, f"{known[1]}\n{known[0]}" if known else f"1\n{first_line(e)}"
    verdict = broadcast_text(verdict)
    if failure is not None:
        raise failure
    if verdict:
        code, _, message = verdict.partition("\n")
        raise RankFailure(message, int(code))
    return result


def ranks_agree(value: float, device: torch.device | str | None = None) -> bool:
    """Whether every rank holds the same float (e.g. a checksum of the weights)."""
    t = torch.tensor([value, -value], dtype=torch.float64, device=device or _comm_device())
    all_reduce_max_(t)
    return bool(t[0].item() == -t[1].item())
