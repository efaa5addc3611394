"""One worker thread runs the studio's jobs one after another: two browsers never sample at once on the same
cores. A job is one command of the CLI (sample, inpaint, img2img, ...) run in that thread; every sampler step it
takes reaches the job through :func:`torchdiffusion.progress.observe_steps` (the same ``StepInfo`` callback that
feeds the command's progress bar), which records a small preview and is also where a cancel takes effect.

    queue = JobQueue(execute=lambda job: ..., max_pending=32)
    job = queue.submit(Job(command="sample", label="demo", work=...))
    queue.position(job)        # 0 = next to run; None once it runs
    queue.cancel(job.id)       # queued: dropped; running: stops at its next sampler step
    queue.close()              # cancel everything and wait for the worker (server shutdown)
"""

from __future__ import annotations

import base64
import collections
import io
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("torchdiffusion.studio")

PREVIEW_IMAGES = 16  # images of the batch shown in the live preview
KEEP_FINISHED = 200  # finished jobs remembered for their status and files
RECENT_PREVIEWS = 64  # previews kept for a slow event stream (older ones are skipped, never queued up)


class Cancelled(BaseException):
    """Raised from the step observer to stop a job (a BaseException, so no ``except Exception`` swallows it)."""


class QueueFull(RuntimeError):
    """Too many jobs waiting; the client should retry later (HTTP 429)."""


@dataclass
class Job:
    command: str
    label: str  # what the page shows: the run's name
    work: Callable[[], list[str]]  # runs the command; returns the files it wrote (paths relative to the root)
    max_seconds: float = 600.0  # a running job is cancelled past this
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    state: str = "queued"  # queued | running | done | failed | cancelled
    error: str | None = None
    files: list[str] = field(default_factory=list)
    steps: int = 0  # sampler steps taken so far (over all batches)
    step: tuple[int, int] = (0, 0)  # (i + 1, n) of the latest StepInfo
    sigma: float | None = None
    preview: dict | None = None  # {"x": PNG base64, "x0": PNG base64} of the latest step
    previews: int = 0  # previews made so far
    # (index, preview, the step it was taken at) of the latest previews
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT_PREVIEWS), repr=False)
    seq: int = 0  # bumped on every change; the event stream sends a change once
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    _t0: float = field(default=0.0, repr=False)  # time.monotonic() at the start

    @property
    def done(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def public(self, position: int | None = None) -> dict:
        return {
            "id": self.id,
            "command": self.command,
            "run": self.label,
            "state": self.state,
            "position": position,
            "error": self.error,
            "files": self.files,
            "steps": self.steps,
            "step": list(self.step),
            "sigma": self.sigma,
            "previews": self.previews,
            "seq": self.seq,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }

    def observe(self, info) -> None:
        """The step observer: stop when cancelled or out of time, else record the step and its preview."""
        if self.cancel_event.is_set():
            raise Cancelled("cancelled")
        if self._t0 and time.monotonic() - self._t0 > self.max_seconds:
            raise Cancelled(f"stopped after the studio's limit of {self.max_seconds:g} s per job")
        self.steps += 1
        self.step = (int(info.i) + 1, int(info.n))
        self.sigma = float(info.sigma_next)
        preview = step_preview(info)
        if preview is not None:
            self.preview = preview
            self.previews += 1
            at = {"steps": self.steps, "step": list(self.step), "sigma": self.sigma}  # replayed with the preview
            self.recent.append((self.previews, preview, at))
        self.seq += 1


def png_base64(images) -> str:
    """(B, C, H, W) in [-1, 1] -> one PNG grid at its own size (the page scales it up), base64."""
    from ..viz import _pil, make_grid

    buf = io.BytesIO()
    _pil(make_grid(images)).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def step_preview(info) -> dict | None:
    """x_t (shown in VP scale, x / sqrt(1 + sigma^2)) and x0_hat of the first images, for image data only."""
    x = info.x
    if x.dim() != 4 or info.denoised.shape != x.shape:
        return None
    k = min(PREVIEW_IMAGES, x.shape[0])
    x_vp = x[:k].float().cpu() / (1 + float(info.sigma_next) ** 2) ** 0.5
    return {"x": png_base64(x_vp), "x0": png_base64(info.denoised[:k].float().cpu())}


class JobQueue:
    """A FIFO of jobs and the one thread that runs them; ``describe(error)`` turns an exception into one line
    (or None for a bug, which is logged with its traceback)."""

    def __init__(self, describe: Callable[[BaseException], str | None], max_pending: int = 32) -> None:
        self.describe = describe
        self.max_pending = max_pending
        self.pending: collections.deque[Job] = collections.deque()
        self.jobs: dict[str, Job] = {}
        self.running: Job | None = None
        self.closed = False
        self.lock = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="studio-worker", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Job:
        with self.lock:
            if self.closed:
                raise QueueFull("the studio is shutting down")
            if len(self.pending) >= self.max_pending:
                raise QueueFull(f"{len(self.pending)} jobs are waiting already; try again when some have run")
            self.pending.append(job)
            self.jobs[job.id] = job
            self._forget_old()
            self.lock.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id) if isinstance(job_id, str) else None

    def position(self, job: Job) -> int | None:
        with self.lock:
            for k, j in enumerate(self.pending):
                if j is job:
                    return k
        return None

    def cancel(self, job_id: str) -> Job | None:
        with self.lock:
            job = self.get(job_id)
            if job is None or job.done:
                return job
            job.cancel_event.set()
            if job in self.pending:
                self.pending.remove(job)
                self._finish(job, "cancelled", "cancelled before it started")
            return job

    def snapshot(self) -> dict:
        with self.lock:
            running = self.running.public() if self.running else None
            return {"running": running, "waiting": [j.public(k) for k, j in enumerate(self.pending)]}

    def close(self, timeout: float = 120.0) -> None:
        """Refuse new jobs, cancel the waiting and the running one, and wait for the worker to finish its step."""
        with self.lock:
            self.closed = True
            while self.pending:
                self._finish(self.pending.popleft(), "cancelled", "the studio stopped")
            if self.running is not None:
                self.running.cancel_event.set()
            self.lock.notify_all()
        self.thread.join(timeout)

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.done]
        for j in sorted(finished, key=lambda j: j.created)[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[j.id]

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        """The job's last state; the queue stops naming it as running in the same step, so a client that sees it
        finished and asks for the queue never finds it still running."""
        with self.lock:
            if self.running is job:
                self.running = None
            job.state, job.error, job.finished = state, error, time.time()
            job.seq += 1

    def _next(self) -> Job | None:
        with self.lock:
            while not self.pending and not self.closed:
                self.lock.wait()
            if self.closed:
                return None
            job = self.running = self.pending.popleft()
            job.state, job.started, job._t0 = "running", time.time(), time.monotonic()
            job.seq += 1
            return job

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            self._run(job)

    def _run(self, job: Job) -> None:
        from ..progress import observe_steps

        try:
            with observe_steps(job.observe):
                files = job.work()
        except Cancelled as e:
            self._finish(job, "cancelled", str(e) or "cancelled")
        except Exception as e:
            line = self.describe(e)
            if line is None:
                log.exception("studio job %s (%s) failed", job.id, job.command)
                line = f"internal error ({type(e).__name__}); see the studio's log"
            self._finish(job, "failed", line)
        else:
            job.files = files
            self._finish(job, "done")
