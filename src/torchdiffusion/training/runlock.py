"""One writer per run folder: an exclusive ``flock`` on ``<run>/.train.lock``, held while training runs.

    with hold_run_folder(out):      # every rank enters; rank 0 takes the lock, all ranks agree
        ...train...

A second ``train`` into the same folder (another shell, another torchrun job, a rerun beside workers that are
still alive) is refused at once with :class:`RunFolderBusy`, one line naming the owner's pid, before it writes
anything. The kernel drops the lock when its owner's process ends in any way (exit, crash, kill -9), so a
crashed run never leaves the folder stuck. Reading a run that is being trained (``sample``, ``evaluate``) takes
no lock. Under torchrun only rank 0 locks (the folder is shared) and the answer is broadcast, so every rank of a
refused job stops with the same line.

The lock file is deleted when the lock is released; a process that locks a file which has meanwhile been
deleted (or replaced) notices it and retries on the new file, so two holders can never coexist.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from .. import distributed as dist
from ..io import never_recreate
from .state import TrainingError

LOCK_NAME = ".train.lock"


class RunFolderBusy(ValueError):
    """Another process is training into this run folder; the message is one line for the user."""


class RunFolderGone(TrainingError):
    """The run folder or its lock file was deleted or replaced while training ran (``rm -rf`` of the folder): the
    next checkpoint would recreate a folder without its config, beside any new trainer there. One line."""


_HELD: dict[str, RunLock] = {}  # the run folders this process holds, by absolute path


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.train.lock`` (Linux, macOS)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._made_folder = False

    def acquire(self) -> None:
        """Take the lock or raise RunFolderBusy (the folder is created if needed)."""
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made_folder = True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderBusy(
                    f"{self.folder} is being trained by another process ({self._owner()}); wait for it to end "
                    f"or choose another --out"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            if self._same_file(fd):
                break
            os.close(fd)  # the holder released and deleted the file between our open and flock: try again
        self._fd = fd
        self._write_owner(fd)

    def check_held(self) -> None:
        """RunFolderGone unless the lock file this process locked is still the folder's (not deleted, not
        replaced by a new one another trainer locked)."""
        if self._fd is not None and not self._same_file(self._fd):
            raise RunFolderGone(
                f"{self.folder} (or its {LOCK_NAME}) was deleted or replaced while training; stopped without writing "
                "into it again"
            )

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        fst = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)

    @staticmethod
    def _write_owner(fd: int) -> None:
        try:  # for the refusal message only: a full disk must not stop the run
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass

    def _owner(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            text = ""
        return text.splitlines()[0][:200] if text else "pid unknown"

    def release(self) -> None:
        """Delete the lock file and drop the lock; removes the folder too if this lock created it and it is empty."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: nobody can be holding the old inode
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        if self._made_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only succeeds when nothing was written

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def hold_run_folder(folder: str | Path) -> Iterator[None]:
    """Hold the run folder's lock for the body; every rank enters, every rank of a refused job raises the same."""
    lock = RunLock(folder)
    failure: BaseException | None = None
    message = ""
    if dist.is_main():
        try:
            lock.acquire()
        except (RunFolderBusy, OSError) as e:  # e.g. --out names a file: the other ranks must not wait forever
            failure, message = e, str(e) or type(e).__name__
    message = dist.broadcast_text(message)
    if failure is not None:
        raise failure
    if message:
        raise RunFolderBusy(message)
    _HELD[os.path.abspath(folder)] = lock
    try:
        with never_recreate(folder):  # a folder deleted under the training stays deleted (check_held says why)
            yield
    finally:
        _HELD.pop(os.path.abspath(folder), None)
        if lock._fd is not None and lock._same_file(lock._fd):
            lock.release()
        elif lock._fd is not None:  # the file is another's now (or gone): drop ours without deleting theirs
            os.close(lock._fd)
            lock._fd = None


def held_still(folder: str | Path) -> bool:
    """False when this process holds ``folder``'s lock and the folder or its lock file was deleted or replaced since
    (what :func:`check_held` refuses); True otherwise."""
    lock = _HELD.get(os.path.abspath(folder))
    return lock is None or lock._fd is None or lock._same_file(lock._fd)


def check_held(folder: str | Path) -> None:
    """RunFolderGone when this process holds ``folder``'s lock (hold_run_folder) and the folder or its lock file was
    deleted or replaced since; nothing for a folder it does not hold."""
    lock = _HELD.get(os.path.abspath(folder))
    if lock is not None:
        lock.check_held()
