"""Training: ``train(cfg, out_dir)`` -> a run folder (config.json, run.json, weights, checkpoints, metrics).

    from torchdiffusion.config import get_preset
    from torchdiffusion.training import train
    run_dir = train(get_preset("mnist-cpu"), "runs/mnist")       # rerun the same call to resume

See loop.py for the step, ema.py for the EMA, lr.py for the schedule and checkpoint.py for the safe files.
"""

from __future__ import annotations

from ..io import save_safetensors
from .checkpoint import CheckpointError, latest_state, load_state, save_state
from .ema import EMA, ema_beta
from .loop import TrainingError, make_cond, train
from .lr import learning_rate

__all__ = [
    "CheckpointError",
    "EMA",
    "TrainingError",
    "ema_beta",
    "latest_state",
    "learning_rate",
    "load_state",
    "make_cond",
    "save_safetensors",
    "save_state",
    "train",
]
