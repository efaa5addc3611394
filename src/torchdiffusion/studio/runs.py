"""The run folders under the studio's root, as the page shows them: config, data kind, training curves from
metrics.jsonl, the pictures and evaluation reports they hold. Reads only; tolerant of a run being written
(a half-written last metrics line is skipped, a folder without run.json is "training").
"""

from __future__ import annotations

import json
from pathlib import Path

from .security import PathRefused, resolve_under, run_name

PICTURES = (".png", ".gif")
MAX_PICTURES = 120  # newest first
MAX_METRIC_ROWS = 2000  # evenly thinned when a run logged more
SCAN_DEPTH = 2  # runs/<name> and runs/<group>/<name>


def read_object(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def list_runs(root: Path) -> list[dict]:
    """Every folder under ``root`` (up to SCAN_DEPTH levels, hidden ones skipped) that holds a config.json."""
    found = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for d in entries:
            if d.name.startswith(".") or not d.is_dir():
                continue
            rel = d.relative_to(root).as_posix()
            try:
                resolve_under(root, rel)
            except PathRefused:
                continue  # a symlink leading outside the root
            if (d / "config.json").is_file():
                found.append(summary(root, rel))
            elif depth > 1:
                walk(d, depth - 1)

    walk(root, SCAN_DEPTH)
    return found


def summary(root: Path, name: str) -> dict:
    d = resolve_under(root, run_name(name))
    cfg = read_object(d / "config.json") or {}
    info = read_object(d / "run.json") or {}
    has_weights = (d / "ema.safetensors").is_file() or (d / "model.safetensors").is_file()
    return {
        "name": name,
        "preset": cfg.get("preset"),
        "kind": info.get("kind"),
        "data_shape": info.get("data_shape"),
        "source": (cfg.get("data") or {}).get("source"),
        "num_classes": (cfg.get("model") or {}).get("num_classes", 0),
        "context_dim": (cfg.get("model") or {}).get("context_dim", 0),
        "text_dim": (cfg.get("model") or {}).get("text_dim", 0),
        "ready": bool(info.get("data_shape")) and has_weights,
        "finished": bool(info.get("finished")),
    }


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl rows (numbers and lists of numbers only); broken lines skipped; thinned to MAX_METRIC_ROWS."""
    rows = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            rows.append({k: v for k, v in rec.items() if isinstance(v, (int, float, list, str)) and len(k) < 64})
    if len(rows) > MAX_METRIC_ROWS:
        stride = -(-len(rows) // MAX_METRIC_ROWS)
        rows = rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])
    return rows


def pictures(root: Path, folder: Path) -> list[str]:
    """PNG/GIF files in the run folder and its sub-folders (not hidden), newest first, as paths under root."""
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(root)
        if p.suffix.lower() in PICTURES and not any(s.startswith(".") for s in rel.parts) and p.is_file():
            found.append((p.stat().st_mtime, rel.as_posix()))
    return [r for _, r in sorted(found, reverse=True)[:MAX_PICTURES]]


def details(root: Path, name: str) -> dict:
    """One run: its summary, config, run.json, metrics rows, pictures and evaluation report (if any)."""
    d = resolve_under(root, run_name(name))
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"no run named {name!r} under the runs folder")
    report = read_object(d / "eval" / "report.json")
    return {
        **summary(root, name),
        "config": read_object(d / "config.json"),
        "info": read_object(d / "run.json"),
        "metrics": read_metrics(d / "metrics.jsonl"),
        "pictures": pictures(root, d),
        "report": report,
    }


def data_example(root: Path, name: str, index: int) -> bytes:
    """Example ``index`` of a run's data (its holdout split when it kept one) as a PNG - what the editing commands
    use when no picture is uploaded (their --index)."""
    import argparse
    import io

    from ..commands.inpaint import load_inputs
    from ..config import from_json, validate
    from ..generate import _read_json, run_kind
    from ..viz import _pil, to_uint8_hwc

    d = resolve_under(root, run_name(name))
    if not (d / "config.json").is_file():  # as /api/run says it (the OSError named the server's absolute path)
        raise FileNotFoundError(f"no run named {name!r} under the runs folder")
    cfg = validate(from_json((d / "config.json").read_text()))
    info = _read_json(d / "run.json", "run.json")  # missing or damaged: said as sampling says it
    shape = tuple(info.get("data_shape") or ())
    image_shape = tuple(info.get("image_shape") or shape)  # a latent run's images (latent.py)
    run_ = argparse.Namespace(path=d, config=cfg, data_shape=shape, image_shape=image_shape, kind=run_kind(info, shape))
    x = load_inputs(run_, argparse.Namespace(images=None, index=index, n=1))
    buf = io.BytesIO()
    _pil(to_uint8_hwc(x)[0]).save(buf, format="PNG")
    return buf.getvalue()
