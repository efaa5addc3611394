"""Tiny run folders for the command-line tests: written as `train` writes them, with random weights (seconds)."""

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from torchdiffusion.config import override, to_json
from torchdiffusion.model import build_model
from torchdiffusion.presets import get_preset

# One thread per subprocess: tiny networks gain nothing from more, and spinning threads crawl on a busy machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def td(*args, cwd=None, timeout=300, env=None):
    """Run ``python -m torchdiffusion ARGS``; returns (exit code, stdout, stderr)."""
    r = subprocess.run(
        [sys.executable, "-m", "torchdiffusion", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**ENV, **(env or {})},
    )
    return r.returncode, r.stdout, r.stderr


@contextlib.contextmanager
def environ(env: dict[str, str] | None):
    """``os.environ`` with ``env`` added for the duration of the block."""
    old = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(*args, cwd=None, env=None):
    """``torchdiffusion ARGS`` through ``cli.main`` in this process: the parsing, code and one-line errors of
    ``td`` without a new process importing torch (seconds of CPU each). Returns (exit code, stdout, stderr)."""
    from torchdiffusion.cli import main

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()  # --threads and train.threads set this process's: the next test gets it back
    try:
        with (
            contextlib.chdir(cwd or "."),
            environ(env),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = main(list(map(str, args)))
    finally:
        torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


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


def train_text_run(folder: Path, images: int = 64) -> Path:
    """``train --preset text-chars`` on a tiny repeating text (12-character windows, a 1-layer transformer) into
    ``folder``; the text file sits beside it."""
    text = folder.parent / f"{folder.name}.txt"
    text.write_text("abcab cabca bcabc " * 40)
    sets = ["data.source=text", f"data.path={text}", "data.seq_len=12", "data.holdout=8", f"train.images={images}"]
    sets += ["train.batch_size=32", "model.mlp_width=32", "model.mlp_depth=1", "sample.steps=4", "sample.n=2"]
    rc, _, err = cli("train", "--preset", "text-chars", "--out", folder, "--no-progress", *[f"--set={a}" for a in sets])
    assert rc == 0, err
    return folder


def equivalence_script():
    """scripts/diffusers_equivalence.py as a module: its cases and the tiny diffusers folders it builds."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "diffusers_equivalence.py"
    spec = importlib.util.spec_from_file_location("diffusers_equivalence", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_diffusers_folder(folder: Path, case: str = "eps") -> Path:
    """A diffusers pipeline folder (save_pretrained layout): a tiny random U-Net and its scheduler config."""
    return equivalence_script().make_folder(folder, case)


# A class-conditional 8x8 digits model (10 classes), 3 Euler steps.
CLASS_RUN = ("digits-test", ["model.num_classes=10", "train.cond_drop_prob=0.1", "sample.steps=3", "sample.n=4"])


def run_and_stop(args, sig=signal.SIGINT, when=rb"\[\d\d:\d\d", timeout=120):
    """Start ``python -m torchdiffusion ARGS`` with progress bars forced on; once stderr matches ``when`` (by
    default: any tqdm bar has been drawn) send ``sig``. Returns (exit code, stderr, whether ``when`` was seen)."""
    env = {**ENV, "TORCHDIFFUSION_PROGRESS": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "torchdiffusion", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    buf = bytearray()
    reader = threading.Thread(target=lambda: [buf.extend(c) for c in iter(lambda: p.stderr.read1(4096), b"")])
    reader.start()
    deadline = time.monotonic() + timeout
    seen = False
    while p.poll() is None and time.monotonic() < deadline:
        if re.search(when, bytes(buf)):
            seen = True
            p.send_signal(sig)
            break
        time.sleep(0.02)
    try:
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    reader.join()
    return p.returncode, bytes(buf).decode(errors="replace"), seen


def assert_clean_stop(rc, err, seen, sig=signal.SIGINT):
    """A stop: the bar was drawn, the exit code is 128 + signal, no traceback, the last line says it stopped."""
    assert seen, f"no progress bar before the stop:\n{err[-2000:]}"
    assert rc == 128 + int(sig), f"exit code {rc}:\n{err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    last = [l for l in re.split(r"[\r\n]", err) if l.strip()][-1]
    assert "stopped by" in last, last
