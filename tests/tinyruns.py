"""Tiny run folders for the command-line tests: written as `train` writes them, with random weights (seconds)."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from torchdiffusion.config import get_preset, override, to_json
from torchdiffusion.model import build_model


def td(*args, cwd=None, timeout=180, env=None):
    """Run ``python -m torchdiffusion ARGS``; returns (exit code, stdout, stderr)."""
    r = subprocess.run(
        [sys.executable, "-m", "torchdiffusion", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )
    return r.returncode, r.stdout, r.stderr


def write_run(folder: Path, preset: str, settings: list[str], data_shape=(1, 8, 8), *, jitter: float = 0.05) -> Path:
    """A run folder of ``preset`` + ``settings`` whose weights are the initial ones plus N(0, jitter^2) noise.

    The noise makes zero-initialised layers (output convolution, label embedding) matter, so conditioning and
    guidance change the output as they would in a trained model."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = override(get_preset(preset), settings)
    torch.manual_seed(0)
    model = build_model(cfg, tuple(data_shape))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(jitter * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "ema.safetensors"))
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(to_json(cfg))
    kind = "image" if len(data_shape) == 3 else "vector"
    (folder / "run.json").write_text(json.dumps({"data_shape": list(data_shape), "kind": kind, "finished": True}))
    return folder


# A class-conditional 8x8 digits model (10 classes), 3 Euler steps.
CLASS_RUN = ("digits-test", ["model.num_classes=10", "train.cond_drop_prob=0.1", "sample.steps=3", "sample.n=4"])
