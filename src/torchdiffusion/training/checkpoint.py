"""Safe files: atomic writes, weights as safetensors, training states that never run code when loaded.

Layout inside a run folder::

    model.safetensors, ema.safetensors      raw and averaged weights (the state_dict of the Precond)
    checkpoints/state-<images:09d>.pt       full training state (torch.save of plain tensors/dicts)
    checkpoints/latest                      one line: the file name of the newest *complete* state

Every file is written through :func:`torchdiffusion.io.atomic_write` (a temporary name in the same folder, fsync,
``os.replace``), so a crash at any moment leaves either the old file or the new one, never half of one; ``latest``
is replaced only after the state it names is complete, and old states are deleted only after that. States are
read back with ``torch.load(..., weights_only=True)`` alone: a pickle that would run code is refused.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import torch

from ..io import atomic_write

STATE_FORMAT = "torchdiffusion-train-state"
STATE_VERSION = 1
LATEST = "latest"
_STATE_RE = re.compile(r"^state-(\d{9,})\.pt$")


class CheckpointError(ValueError):
    """A training state that cannot (or must not) be loaded; the message is one line for the user."""


def state_name(images_seen: int) -> str:
    """``state-<images_seen:09d>.pt``."""
    return f"state-{int(images_seen):09d}.pt"


def list_states(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete state files in a folder, oldest first, as (images_seen, path)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _STATE_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_state(ckpt_dir: str | Path, state: dict, images_seen: int, keep: int = 2) -> Path:
    """Write ``state-<images_seen>.pt`` safely, point ``latest`` at it, keep only the newest ``keep`` states."""
    ckpt_dir = Path(ckpt_dir)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = atomic_write(ckpt_dir / state_name(images_seen), lambda f: f.write(data))
    atomic_write(ckpt_dir / LATEST, path.name + "\n")
    states = list_states(ckpt_dir)
    for _, old in states[: max(0, len(states) - max(1, keep))]:
        if old != path:
            old.unlink(missing_ok=True)
    for stray in ckpt_dir.glob(".state-*.tmp-*"):  # left by a crash in the middle of a write
        stray.unlink(missing_ok=True)
    return path


def latest_state(ckpt_dir: str | Path) -> Path | None:
    """The state that ``checkpoints/latest`` names, or None when there is none yet."""
    ckpt_dir = Path(ckpt_dir)
    latest = ckpt_dir / LATEST
    if not latest.is_file():
        return None
    name = latest.read_text(encoding="utf-8", errors="replace").strip()
    if not _STATE_RE.match(name):
        raise CheckpointError(f"{latest} is damaged: it names {name!r}, not a state-<images>.pt file")
    path = ckpt_dir / name
    if not path.is_file():
        raise CheckpointError(f"{latest} names {name}, which is missing")
    return path


def load_state(path: str | Path) -> dict:
    """Read a training state with ``weights_only=True``; anything that is not plain tensors/containers is refused."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"refusing to load {path}: not a plain training state ({first})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"refusing to load {path}: not a torchdiffusion training state")
    if state.get("version", 0) > STATE_VERSION:
        raise CheckpointError(f"{path} was written by a newer torchdiffusion (state version {state['version']})")
    return state
