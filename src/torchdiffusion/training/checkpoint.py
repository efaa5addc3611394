"""Safe files: atomic writes, weights as safetensors, training states that never run code when loaded.

Layout inside a run folder::

    model.safetensors, ema.safetensors      raw and averaged weights (the state_dict of the Precond)
    guide.safetensors                       the EMA at train.guide_at, autoguidance's guide (if kept)
    run.json                                what the run is, how far it got, and the sha256 of both weights files
    checkpoints/state-<images:09d>.pt       full training state (torch.save of plain tensors/dicts)
    checkpoints/state-<images:09d>.pt.sha256   its digest, in ``sha256sum`` format
    checkpoints/latest                      one line: the file name of the newest *complete* state

Every file is written through :func:`torchdiffusion.io.atomic_write` (a temporary name in the same folder, fsync,
``os.replace``), so a crash at any moment leaves either the old file or the new one, never half of one, and a
failed write (a full disk) leaves no temporary file. A state's digest is written before the state itself,
``latest`` only after the state it names is complete, and old states are deleted only after that. The order of
one checkpoint is

    state (+ digest)  ->  model.safetensors, ema.safetensors  ->  run.json (their sha256, "finished")

so run.json never vouches for weights files that were not written completely: a kill between the steps leaves
a run.json whose digests do not match the files (``generate.load_run`` refuses them), and a rerun of the same
command writes the weights again from the newest state before anything else. On resume every state is checked
against its digest; a damaged one is set aside (``*.damaged``) and the newest intact state is used instead.
States are read back with ``torch.load(..., weights_only=True)`` alone: a pickle that would run code is refused.

"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..io import atomic_write, first_line, safetensors_bytes, sha256_file, write_json

STATE_FORMAT = "torchdiffusion-train-state"
STATE_VERSION = 1
LATEST = "latest"
DIGEST_SUFFIX = ".sha256"
DAMAGED_SUFFIX = ".damaged"
EXPORTS = ("model.safetensors", "ema.safetensors")
GUIDE_FILE = "guide.safetensors"  # autoguidance's guide model, the EMA at train.guide_at (when the run keeps one)
RUN_INFO = "run.json"
WEIGHTS_KEY = "weights_sha256"  # run.json: {file name: sha256 hex}, or null before the first export
_STATE_RE = re.compile(r"^state-(\d{9,})\.pt$")


class CheckpointError(ValueError):
    """A training state that cannot (or must not) be loaded; the message is one line for the user."""


def state_name(images_seen: int) -> str:
    """``state-<images_seen:09d>.pt``."""
    return f"state-{int(images_seen):09d}.pt"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_weights(out: str | Path, states: dict[str, dict[str, Tensor]]) -> dict[str, str]:
    """Write ``{file name: state_dict}`` (model.safetensors, ema.safetensors) atomically; returns their sha256."""
    digests = {}
    for name, state in states.items():
        data = safetensors_bytes(state)
        atomic_write(Path(out) / name, data)
        digests[name] = sha256_bytes(data)
    return digests


def write_run_info(out: str | Path, info: dict) -> Path:
    """Write run.json atomically (last of a checkpoint: it vouches for the weights files written before it)."""
    return write_json(info, Path(out) / RUN_INFO)


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


def digest_path(state_path: str | Path) -> Path:
    """Where a state's sha256 lives: ``<state>.sha256`` beside it."""
    state_path = Path(state_path)
    return state_path.with_name(state_path.name + DIGEST_SUFFIX)


def save_state(ckpt_dir: str | Path, state: dict, images_seen: int, keep: int = 2) -> Path:
    """Write ``state-<images_seen>.pt`` (+ its digest) safely, point ``latest`` at it, keep the newest ``keep``."""
    ckpt_dir = Path(ckpt_dir)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path = ckpt_dir / state_name(images_seen)
    atomic_write(digest_path(path), f"{sha256_bytes(data)}  {path.name}\n")
    atomic_write(path, data)
    atomic_write(ckpt_dir / LATEST, path.name + "\n")
    states = list_states(ckpt_dir)
    for _, old in states[: max(0, len(states) - max(1, keep))]:
        if old != path:
            old.unlink(missing_ok=True)
            digest_path(old).unlink(missing_ok=True)
    for stray in ckpt_dir.glob(".state-*.tmp-*"):  # left by a crash in the middle of a write
        stray.unlink(missing_ok=True)
    for orphan in ckpt_dir.glob(f"state-*.pt{DIGEST_SUFFIX}"):  # a digest whose state was never renamed in
        if not orphan.with_name(orphan.name[: -len(DIGEST_SUFFIX)]).exists():
            orphan.unlink(missing_ok=True)
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


def recorded_digest(state_path: str | Path) -> str | None:
    """The sha256 written beside a state (None for a state saved before digests were kept)."""
    try:
        text = digest_path(state_path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return text.split()[0].lower() if text.split() else ""


def verify_state(path: str | Path) -> str | None:
    """Why the state file at ``path`` is damaged (its bytes differ from the recorded sha256), or None if intact."""
    path = Path(path)
    expected = recorded_digest(path)
    if expected is None:
        return None
    try:
        actual = sha256_file(path)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if actual != expected:
        return "its sha256 differs from the one recorded when it was written"
    return None


def load_state(path: str | Path, *, verify: bool = True) -> dict:
    """Read a training state with ``weights_only=True``; anything that is not plain tensors/containers is refused.

    With ``verify`` the file's sha256 must match the one recorded beside it (when there is one).
    """
    path = Path(path)
    if verify and (why := verify_state(path)) is not None:
        raise CheckpointError(f"refusing to load {path}: {why} (the file is damaged)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as e:
        first = first_line(e)
        raise CheckpointError(f"refusing to load {path}: not a plain training state ({first})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"refusing to load {path}: not a torchdiffusion training state")
    if state.get("version", 0) > STATE_VERSION:
        raise CheckpointError(f"{path} was written by a newer torchdiffusion (state version {state['version']})")
    return state


def _read_latest(ckpt_dir: Path) -> str | None:
    try:
        return (ckpt_dir / LATEST).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def newest_intact_state(ckpt_dir: str | Path, warn: Callable[[str], None] = print) -> tuple[Path, dict] | None:
    """The newest state that matches its digest and loads, as (path, state); None when the folder has none.

    Newer states that are damaged are renamed ``*.damaged`` (kept for inspection, never resumed from) with a
    one-line ``warn`` each, and ``latest`` is pointed at the state returned. When every state is damaged the
    newest one's error is raised and nothing is renamed.
    """
    ckpt_dir = Path(ckpt_dir)
    damaged: list[tuple[Path, CheckpointError]] = []
    for _, path in reversed(list_states(ckpt_dir)):
        try:
            state = load_state(path)
        except CheckpointError as e:
            if "newer torchdiffusion" in str(e):
                raise
            damaged.append((path, e))
            continue
        for bad, err in damaged:
            aside = bad.with_name(bad.name + DAMAGED_SUFFIX)
            os.replace(bad, aside)
            digest_path(bad).unlink(missing_ok=True)
            warn(
                f"warning: {bad} is damaged ({str(err).split(': ', 1)[-1]}); set aside as {aside.name}, "
                f"resuming from {path.name} instead"
            )
        if _read_latest(ckpt_dir) != path.name:
            atomic_write(ckpt_dir / LATEST, path.name + "\n")
        return path, state
    if damaged:
        path, err = damaged[0]
        raise CheckpointError(
            f"{err}; no earlier intact state to resume from: start over in another --out (train: or --no-resume)"
        )
    return None
