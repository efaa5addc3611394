"""Figures of `torchdiffusion studio`, each against a real server (a subprocess on a free 127.0.0.1 port):

  python scripts/studio_bench.py overhead RUN [--n 16 --steps 20 --reps 5]
      time from "Sample" (POST /api/jobs) to the first preview and to the final grid, against the same sampling
      by the command line (`torchdiffusion sample RUN --n 16 --steps 20`, a fresh process, and the same command
      run in this process, without interpreter start-up, also with the studio's per-step preview as its step
      observer: what the previews alone cost); modes interleaved, medians reported. Also the CPU time of each (the
      server's, the child's, this process's): steadier than wall time on a loaded machine.
  python scripts/studio_bench.py load RUN [--clients 20 --seconds 60]
      clients that each loop over the page's requests (runs, run details, a 4-image sampling job followed to its
      end over server-sent events, job status, a refused value) for the given time; then the time the queue
      takes to drain, and the server's peak RSS.
  python scripts/studio_bench.py stop RUN
      SIGTERM and SIGINT to the server while it samples, and SIGTERM while a training started from the page runs:
      exit codes, no half-written file, the training checkpoint intact and resumable.

RUN is a run folder; the server serves a fresh runs folder holding a copy of it. --out FILE also writes the JSON.
Timings on a loaded machine are noisy: compare the ratios measured within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

TD = [sys.executable, "-m", "torchdiffusion"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``torchdiffusion studio ROOT`` as a subprocess; ``url``; ``stop(sig)`` returns the exit code."""

    def __init__(self, root: Path, *extra: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "TORCHDIFFUSION_PROGRESS": "0"}
        cmd = [*TD, "studio", str(root), "--port", str(port), *extra]
        # The server's output goes to a file, not a pipe: the commands it runs print the files they write, and a
        # pipe nobody reads until the end fills up (64 KiB) and blocks the worker in the middle of a long run.
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            try:
                get(self.url + "/api/info")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.output()) from None
                time.sleep(0.1)
        raise RuntimeError("the studio did not start in 120 s")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self, sig=signal.SIGTERM, timeout: float = 120) -> tuple[int, str]:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self.output()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


def stage(run: str) -> Path:
    """A copy of the run folder (weights, config, metrics; no training states) in a fresh runs folder."""
    import shutil

    src = Path(run).resolve()
    dst = Path(tempfile.mkdtemp(prefix="studio-bench-")) / "runs" / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "studio", "edits", "explain"))
    return dst


def get(url: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def follow(url: str, job_id: str, t0: float) -> tuple[float | None, float, dict]:
    """Read a job's event stream: (time of the first preview, time of the last event, the last event)."""
    first, last = None, {}
    with urllib.request.urlopen(f"{url}/api/jobs/{job_id}/events", timeout=600) as stream:
        for raw in stream:
            if not raw.startswith(b"data:"):
                continue
            last = json.loads(raw[5:])
            if first is None and "preview" in last:
                first = time.perf_counter() - t0
            if last["state"] in ("done", "failed", "cancelled"):
                break
    return first, time.perf_counter() - t0, last


def studio_sample(url: str, run: str, n: int, steps: int, seed: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    job = get(url + "/api/jobs", {"command": "sample", "run": run, "params": {"n": n, "steps": steps, "seed": seed}})
    first, total, last = follow(url, job["id"], t0)
    assert last["state"] == "done", last
    return first, total


def children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def overhead(args: argparse.Namespace) -> dict:
    """Wall time (first preview, final grid) and CPU time per sampling: studio, CLI process, CLI in this process."""
    from torchdiffusion.cli import main
    from torchdiffusion.progress import observe_steps
    from torchdiffusion.studio.jobs import step_preview

    run = stage(args.run)
    server = Server(run.parent)
    out = Path(tempfile.mkdtemp()) / "cli.png"
    flags = ["--n", str(args.n), "--steps", str(args.steps), "--out", str(out)]
    keys = ["studio_first_preview", "studio_final", "cli_process", "cli_in_process", "cli_in_process_previews"]
    times = {k: [] for k in keys} | {f"cpu_{k}": [] for k in keys[1:]}
    studio_sample(server.url, run.name, args.n, args.steps, 0)  # warm-up (imports, first load)
    main(["sample", str(run), *flags])
    for k in range(args.reps):
        c0 = server.cpu_s()
        first, total = studio_sample(server.url, run.name, args.n, args.steps, k)
        times["cpu_studio_final"].append(server.cpu_s() - c0)
        times["studio_first_preview"].append(first)
        times["studio_final"].append(total)
        t0, c0 = time.perf_counter(), children_cpu_s()
        subprocess.run([*TD, "sample", str(run), *flags, "--seed", str(k)], check=True, capture_output=True)
        times["cli_process"].append(time.perf_counter() - t0)
        times["cpu_cli_process"].append(children_cpu_s() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        main(["sample", str(run), *flags, "--seed", str(k)])
        times["cli_in_process"].append(time.perf_counter() - t0)
        times["cpu_cli_in_process"].append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        with observe_steps(step_preview):  # the two preview PNGs of every step, as the studio's jobs make them
            main(["sample", str(run), *flags, "--seed", str(k)])
        times["cli_in_process_previews"].append(time.perf_counter() - t0)
        times["cpu_cli_in_process_previews"].append(time.process_time() - c0)
    server.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "run": args.run,
        "n": args.n,
        "steps": args.steps,
        "reps": args.reps,
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "median_s": med,
        "wall_studio_vs_cli_in_process": med["studio_final"] / med["cli_in_process"] - 1,
        "wall_studio_vs_cli_process": med["studio_final"] / med["cli_process"] - 1,
        "cpu_studio_vs_cli_in_process": med["cpu_studio_final"] / med["cpu_cli_in_process"] - 1,
        "cpu_studio_vs_cli_process": med["cpu_studio_final"] / med["cpu_cli_process"] - 1,
        "wall_previews_in_process": med["cli_in_process_previews"] / med["cli_in_process"] - 1,
        "all_s": times,
    }


def client_loop(url: str, run: str, deadline: float, tally: dict, lock: threading.Lock, k: int) -> None:
    """One client: the page's requests in turn until the deadline; every answer counted by status class."""
    calls = [
        lambda: get(url + "/api/runs"),
        lambda: get(f"{url}/api/run?name={run}"),
        lambda: get(url + "/api/jobs"),
        lambda: get(url + "/api/jobs", {"command": "sample", "run": run, "params": {"steps": 0}}),  # refused: 400
        lambda: sample_job(url, run, k),
    ]
    i = 0
    while time.monotonic() < deadline:
        key = "2xx"
        try:
            calls[i % len(calls)]()
        except urllib.error.HTTPError as e:
            key = f"{e.code // 100}xx"
        except OSError:
            key = "no answer"
        with lock:
            tally["sent"] += 1
            tally[key] = tally.get(key, 0) + 1
        i += 1


def sample_job(url: str, run: str, seed: int) -> None:
    job = get(url + "/api/jobs", {"command": "sample", "run": run, "params": {"n": 4, "steps": 4, "seed": seed}})
    follow(url, job["id"], time.perf_counter())


def load(args: argparse.Namespace) -> dict:
    run = stage(args.run)
    server = Server(run.parent)
    tally, lock = {"sent": 0}, threading.Lock()
    deadline = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=client_loop, args=(server.url, run.name, deadline, tally, lock, k))
        for k in range(args.clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 660)
    t0 = time.monotonic()
    while True:
        q = get(server.url + "/api/jobs")
        if not q["running"] and not q["waiting"]:
            break
        time.sleep(0.2)
    drained = time.monotonic() - t0
    rss = server.peak_rss_mb()
    code, _ = server.stop()
    answered = tally["sent"] - tally.get("no answer", 0)
    return {"clients": args.clients, "seconds": args.seconds, **tally, "answered": answered} | {
        "queue_drained_after_s": drained,
        "peak_rss_mb": rss,
        "exit_code": code,
    }


def tmp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp-" in p.name]


def stop_while_sampling(run: Path, sig) -> dict:
    from PIL import Image

    server = Server(run.parent)
    job = get(server.url + "/api/jobs", {"command": "sample", "run": run.name, "params": {"n": 64, "steps": 500}})
    while get(f"{server.url}/api/jobs/{job['id']}")["steps"] < 3:
        time.sleep(0.05)
    code, out = server.stop(sig)
    written = list((run / "studio").glob(f"*{job['id']}*"))
    for p in written:  # a file that exists is whole
        if p.suffix == ".png":
            Image.open(p).verify()
    return {"signal": signal.Signals(sig).name, "exit_code": code, "files": [p.name for p in written]} | {
        "tmp_files": tmp_files(run.parent),
        "last_line": out.strip().splitlines()[-1] if out.strip() else "",
    }


def stop_while_training(root: Path) -> dict:
    from torchdiffusion.training.checkpoint import newest_intact_state

    server = Server(root, "--allow-train")
    name = f"studio-train-{os.getpid()}"
    get(server.url + "/api/train", {"preset": "digits-test", "name": name, "images": 10_000_000})
    ckpt = root / name / "checkpoints"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300 and not get(server.url + "/api/train")["trainings"][0]["log"]:
        time.sleep(0.5)
    time.sleep(5)  # a few seconds of training
    code, out = server.stop(signal.SIGTERM)
    state = newest_intact_state(ckpt, warn=lambda m: None)
    r = subprocess.run([*TD, "sample", str(root / name), "--n", "4", "--steps", "3"], capture_output=True, text=True)
    return {
        "server_exit_code": code,
        "checkpoint": str(state[0].name) if state else None,
        "tmp_files": tmp_files(root / name),
        "sample_after_stop_exit_code": r.returncode,
        "sample_stderr": r.stderr.strip()[-300:],
    }


def stop(args: argparse.Namespace) -> dict:
    run = stage(args.run)
    return {
        "sampling": [stop_while_sampling(run, s) for s in (signal.SIGTERM, signal.SIGINT)],
        "training": stop_while_training(run.parent),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["overhead", "load", "stop"])
    p.add_argument("run", help="a run folder (copied into a fresh runs folder that the server serves)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--out", help="also write the figures to this JSON file")
    args = p.parse_args()
    result = {"overhead": overhead, "load": load, "stop": stop}[args.what](args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    from torchdiffusion.cli import run_script

    raise SystemExit(run_script(main))
