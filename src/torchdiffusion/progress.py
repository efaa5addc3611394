"""Progress bars and clean stops for long work: one mechanism for every command.

    with stop_on_signals():                       # SIGINT / SIGTERM raise Stopped from here on
        with step_bar(total=n_batches * steps, desc="sampling") as bar:
            x = generate(model, seeds, sample, shape, callback=bar.step)

A bar is a tqdm bar on stderr, fed by the samplers' ``StepInfo`` callback (``bar.step``) or by any loop
(``bar.update(k)``). It is drawn when stderr is a terminal; ``TORCHDIFFUSION_PROGRESS=1`` draws it anyway
(logs, tests) and ``=0`` hides it. :class:`Stopped` is a ``KeyboardInterrupt``, so ``except Exception`` never
swallows it; the command line reports it in one line and exits with ``128 + signal number`` (130 for Ctrl-C,
143 for SIGTERM). Every writer in the package is atomic, so a stop leaves no half-written file.
:func:`observe_steps` lets a front-end (the studio) see every step a bar is fed, whatever the command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """Work stopped by a signal (Ctrl-C = SIGINT, or SIGTERM); ``exit_code`` = 128 + signal number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


REDELIVER_S = 0.05  # a stop that arrives during an import is delivered again this much later


def _inside_import(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _raise_stopped(signum: int, frame: Any) -> None:
    """Raise Stopped - but not inside an import: an exception there leaves a module half-imported (numpy then
    fails on every use with an ImportError or RecursionError traceback, or swallows the stop). The signal is
    sent again REDELIVER_S later, until it lands outside the import."""
    if _inside_import(frame):
        timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM raise :class:`Stopped` (main thread only; handlers restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_stopped) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def bars_enabled(show: bool = True) -> bool:
    """Whether to draw a bar: never when ``show`` is False, else per TORCHDIFFUSION_PROGRESS or a terminal."""
    if not show:
        return False
    env = os.environ.get("TORCHDIFFUSION_PROGRESS", "").strip()
    if env in ("0", "1"):
        return env == "1"
    return sys.stderr.isatty()


def step_bar(total: int | None = None, desc: str = "", unit: str = "step", *, show: bool = True):
    """A tqdm bar on stderr with ``.step(info)``, the sampler callback that advances it by one step.

    Use it as a context manager (the bar is closed on the way out, stop or not)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=not bars_enabled(show))
    observer = getattr(_observer, "callback", None)

    def step(info=None) -> None:
        bar.update(1)
        if observer is not None and info is not None:
            observer(info)

    bar.step = step
    return bar


_observer = threading.local()  # .callback: the step observer of this thread (see observe_steps)


@contextlib.contextmanager
def observe_steps(callback) -> Iterator[None]:
    """Inside the block, every bar made by :func:`step_bar` in this thread also passes each ``StepInfo`` it is
    stepped with to ``callback`` - how a front-end (the studio) watches any command's sampler, step by step. An
    exception raised by ``callback`` stops the command there, like a Ctrl-C (the writers are atomic)."""
    previous = getattr(_observer, "callback", None)
    _observer.callback = callback
    try:
        yield
    finally:
        _observer.callback = previous


def chain(*callbacks):
    """One callback calling each of ``callbacks`` (None entries skipped) in order."""
    cbs = [c for c in callbacks if c is not None]
    return lambda info: [c(info) for c in cbs] and None


def close_bars() -> None:
    """Close every open bar (each ends its line), so what follows a stop starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    release_bar_lock()


def release_bar_lock() -> None:
    """Release tqdm's global write lock where this thread still holds it.

    tqdm's ``refresh`` takes that (re-entrant) lock without try/finally, so a stop raised while a bar is drawn
    (Ctrl-C inside the write) leaves it held by the stopped thread: the thread itself never notices, but every
    other thread that makes or draws a bar (the studio's worker) would then wait forever."""
    from tqdm.std import TqdmDefaultWriteLock

    th = TqdmDefaultWriteLock.th_lock
    while th is not None and th._is_owned():
        th.release()
    mp = getattr(TqdmDefaultWriteLock, "mp_lock", None)
    while mp is not None and mp._semlock._is_mine():
        mp.release()
