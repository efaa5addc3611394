"""Training: ``train(cfg, out_dir)`` -> a run folder (config.json, run.json, weights, checkpoints, metrics).

    from torchdiffusion.presets import get_preset
    from torchdiffusion.training import train
    run_dir = train(get_preset("mnist-cpu"), "runs/mnist")       # rerun the same call to resume

loop.py        train(): the loop, draw_batch and train_step (one optimizer step, all-reduce, non-finite skip)
state.py       Setup, TrainState, Batch, StepStats, Window: the records the loop passes around
callbacks.py   log, sample grids, quick evaluation, checkpoints on cadences in images; train(callbacks=[...]) adds
run_folder.py  resume or start over, training states, run.json
checkpoint.py  safe training-state files; ema.py the EMA; lr.py the learning-rate schedule
precision.py   train.precision=auto: bf16 + channels-last on native-bf16 hardware, else fp32
"""

from __future__ import annotations

from ..io import save_safetensors
from .callbacks import Callback
from .checkpoint import CheckpointError, latest_state, load_state, save_state
from .ema import EMA, ema_beta
from .loop import TrainingError, train
from .lr import learning_rate

__all__ = [
    "Callback",
    "CheckpointError",
    "EMA",
    "TrainingError",
    "ema_beta",
    "latest_state",
    "learning_rate",
    "load_state",
    "save_safetensors",
    "save_state",
    "train",
]
