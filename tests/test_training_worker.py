"""Subprocess entry for the training tests: ``python tests/test_training_worker.py OUT [key=value ...] [options]``.

Run directly (one process) or under torchrun (several). Trains a tiny class-conditional U-Net on a small
synthetic data set, so the process tests do not depend on any data source. Pytest collects this file but it
holds no tests. Faults are injected through training callbacks (the in-process tests use the same classes):

    --nan STEPS               a non-finite loss at these steps: "3,5@1" = step 3 on every rank, 5 on rank 1 only
    --step-delay SECONDS      sleep after every step (so a test can interrupt a run mid-way)
    --dump-ranks              every rank writes debug/rank-<r>.safetensors and debug/rank-<r>.json at the end
    --crash-in-checkpoint N   exit hard (code 17) while writing the state at N images, after its temporary
                              file is complete and before it is renamed into place
    --crash-at WHEN:FILE:N    SIGKILL itself just before (WHEN=before) or after (after) FILE (model.safetensors,
                              ema.safetensors, run.json) is renamed into place by the checkpoint at N images

Environment: TD_WORKER_RESUME=0 starts over.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from torchdiffusion import distributed as dist
from torchdiffusion.training.callbacks import Callback

# The tiny run every process test shares: 16-image global batches, a checkpoint every 2 steps.
TINY = [
    "model.channels=8",
    "model.channel_mult=1,2",
    "model.groups=4",
    "model.attn_resolutions=4",
    "model.num_classes=4",
    "train.cond_drop_prob=0.5",
    "train.images=128",
    "train.batch_size=16",
    "train.warmup_images=32",
    "train.ema_halflife_images=32",
    "train.log_every_images=32",
    "train.checkpoint_every_images=32",
    "train.keep_checkpoints=2",
    "train.sample_every_images=0",
    "train.lr=1e-2",
]


def tiny_data():
    import torch

    from torchdiffusion.data.base import TensorData

    g = torch.Generator().manual_seed(1234)
    labels = torch.arange(40) % 4
    x = (torch.rand(40, 1, 8, 8, generator=g) * 2 - 1) * 0.5 + labels.view(-1, 1, 1, 1) * 0.1
    return TensorData(x=x, labels=labels, class_names=["a", "b", "c", "d"])


class InjectNaN(Callback):
    """Poison this rank's examples (x0 = NaN, so its loss and gradients are NaN) at the steps of ``spec``."""

    def __init__(self, spec: str):
        self.spec = [item.strip().partition("@") for item in spec.split(",") if item.strip()]

    def before_step(self, state, batch) -> None:
        rank = dist.rank()
        if any(int(step) == batch.step and (r == "" or int(r) == rank) for step, _, r in self.spec):
            for mb in batch.micro:
                mb.x0.fill_(float("nan"))


class StepDelay(Callback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def after_step(self, state, stats) -> None:
        time.sleep(self.seconds)


class DumpRank(Callback):
    """Every rank writes its own weights and counters (the checkpoint holds rank 0's only)."""

    def __init__(self, out: str | Path):
        self.out = Path(out) / "debug"

    def end(self, state) -> None:
        from torchdiffusion.io import atomic_write, save_safetensors

        r = dist.rank()
        save_safetensors(state.model.state_dict(), self.out / f"rank-{r}.safetensors")
        counters = {"rank": r, "step": state.step, "updates": state.updates, "skipped_steps": state.skipped}
        atomic_write(self.out / f"rank-{r}.json", json.dumps(counters))


def crash_in_checkpoint(images: int) -> None:
    """Exit with code 17 when the state at ``images`` is about to be renamed into place (a power cut mid-write)."""
    replace, name = os.replace, f"state-{images:09d}.pt"

    def replace_or_crash(src, dst):
        if Path(dst).name == name:
            os._exit(17)
        return replace(src, dst)

    os.replace = replace_or_crash


def crash_at(spec: str) -> None:
    """``before|after:<file name>:<images>``: SIGKILL this process at that rename of the checkpoint at <images>.

    A write belongs to that checkpoint when its state file is already in place (the state is written first).
    """
    when, name, images = spec.split(":")
    replace, state = os.replace, f"state-{int(images):09d}.pt"

    def replace_or_crash(src, dst):
        ours = Path(dst).name == name and (Path(dst).parent / "checkpoints" / state).is_file()
        if ours and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
        if ours and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_or_crash


def main(argv: list[str]) -> int:
    import torch

    torch.set_num_threads(1)
    from torchdiffusion.config import override
    from torchdiffusion.presets import get_preset
    from torchdiffusion.training import train

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("sets", nargs="*")
    p.add_argument("--nan", default="")
    p.add_argument("--step-delay", type=float, default=0.0)
    p.add_argument("--dump-ranks", action="store_true")
    p.add_argument("--crash-in-checkpoint", type=int, default=None)
    p.add_argument("--crash-at", default=None)
    p.add_argument("--raise-on-stop", action="store_true", help="as the CLI trains: a stop raises progress.Stopped")
    a = p.parse_intermixed_args(argv)
    callbacks: list[Callback] = [InjectNaN(a.nan)]
    if a.step_delay > 0:
        callbacks.append(StepDelay(a.step_delay))
    if a.dump_ranks:
        callbacks.append(DumpRank(a.out))
    if a.crash_in_checkpoint is not None:
        crash_in_checkpoint(a.crash_in_checkpoint)
    if a.crash_at is not None:
        crash_at(a.crash_at)
    cfg = override(get_preset("digits-test"), TINY + a.sets)
    resume = os.environ.get("TD_WORKER_RESUME", "1") == "1"
    from torchdiffusion.progress import Stopped

    try:
        train(
            cfg,
            a.out,
            data=tiny_data(),
            progress=False,
            resume=resume,
            callbacks=callbacks,
            raise_on_stop=a.raise_on_stop,
        )
    except Stopped as e:
        return e.exit_code
    if a.raise_on_stop:  # train returned: this rank took the run for finished (or stopped without a signal)
        (Path(a.out) / f"returned-rank{os.environ.get('RANK', '0')}").touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
