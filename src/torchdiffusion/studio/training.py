"""Training from the studio (only with ``--allow-train``): ``torchdiffusion train`` as a subprocess on a preset
and, optionally, a picture folder under the runs root; stopped with SIGTERM, the trainer's own clean stop
(it checkpoints, so the same train command resumes and the run folder stays intact).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .params import ParamError, _Parser
from .security import resolve_under, run_name

TRAIN_KEYS = frozenset({"preset", "name", "data", "images"})  # what POST /api/train reads
MAX_IMAGES = 10_000_000  # train.images the studio starts
MAX_RUNNING = 1  # trainings at once (they share the cores with sampling)
LOG_LINES = 40  # the last lines of a training's output kept for the page


class Trainer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, collections.deque] = {}
        self.lock = threading.Lock()

    def argv(self, params: dict) -> tuple[str, list[str]]:
        """(run name, train argv) from {"preset", "name", "data" (folder under the root, optional), "images"},
        checked by the train command's own parser and config validation."""
        from ..commands import train as train_command
        from ..config import validate
        from ..data.files import IMAGE_SUFFIXES, list_files
        from ..training.run_folder import refuse_out_in_data
        from .runs import SCAN_DEPTH

        if not isinstance(params, dict):
            raise ParamError("give an object with preset, name, and optionally data and images")
        unknown = sorted(set(params) - TRAIN_KEYS)
        if unknown:
            raise ParamError(f"unknown key {unknown[0]!r}; a training takes {', '.join(sorted(TRAIN_KEYS))}")
        name = run_name(params.get("name", ""))
        if name.count("/") >= SCAN_DEPTH:  # the page lists runs SCAN_DEPTH levels deep: it would never show this one
            raise ParamError(f"run name {name!r}: at most {SCAN_DEPTH} folder levels (e.g. 'mnist/class-7')")
        out = resolve_under(self.root, name)
        if out.exists():
            raise ParamError(f"{name} exists already; choose a new run name")
        sets = []
        if params.get("data") is not None:
            data = resolve_under(self.root, str(params["data"]))
            if not data.is_dir():
                raise ParamError(f"data folder {params['data']} is not a folder under the runs folder")
            refuse_out_in_data(out, str(data))  # the runs folder itself holds the new run: its grids would be data
            if not list_files(data, IMAGE_SUFFIXES):  # the training would start, then stop at its data
                raise ParamError(f"data folder {params['data']} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            sets += ["--set", "data.source=folder", "--set", f"data.path={data}"]
        images = params.get("images")
        if images is not None:
            if isinstance(images, bool) or not isinstance(images, int) or not 1 <= images <= MAX_IMAGES:
                raise ParamError(f"images: an integer in [1, {MAX_IMAGES}]")
            sets += ["--set", f"train.images={images}"]
        preset = params.get("preset")
        if not isinstance(preset, str) or len(preset) > 64:
            raise ParamError("preset: give a preset name")
        argv = [f"--preset={preset}", *sets, "--out", str(out), "--no-progress"]
        p = _Parser(prog="torchdiffusion train", add_help=False, allow_abbrev=False)
        train_command.add_arguments(p)
        validate(train_command.resolve_config(p.parse_args(argv)))  # a bad preset or value: ConfigError -> 400
        return name, argv

    def start(self, params: dict) -> str:
        name, argv = self.argv(params)
        with self.lock:
            if sum(p.poll() is None for p in self.procs.values()) >= MAX_RUNNING:
                raise ParamError("a training is running already; stop it first")
            env = {**os.environ, "TORCHDIFFUSION_PROGRESS": "0"}
            proc = subprocess.Popen(
                [sys.executable, "-m", "torchdiffusion", "train", *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                text=True,
            )
            self.procs[name] = proc
            self.logs[name] = collections.deque(maxlen=LOG_LINES)
        threading.Thread(target=self._read, args=(proc, self.logs[name]), daemon=True).start()
        return name

    @staticmethod
    def _read(proc: subprocess.Popen, lines: collections.deque) -> None:
        for line in proc.stdout:
            lines.append(line.rstrip()[:500])

    def stop(self, name: str, wait: float = 0.0) -> dict:
        """SIGTERM: the trainer checkpoints and exits 143; ``wait`` seconds for it to do so."""
        proc = self.procs.get(name)
        if proc is None:
            raise FileNotFoundError(f"no training named {name!r} was started here")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.status(name)

    def status(self, name: str) -> dict:
        proc = self.procs[name]
        code = proc.poll()
        return {
            "name": name,
            "running": code is None,
            "exit_code": code,
            "log": list(self.logs.get(name, ())),
        }

    def all(self) -> list[dict]:
        return [self.status(n) for n in list(self.procs)]

    def close(self, wait: float = 120.0) -> None:
        """Stop every training (SIGTERM) and wait for each to checkpoint."""
        for name in list(self.procs):
            self.stop(name, wait=0)
        for proc in self.procs.values():
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
