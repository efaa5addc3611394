"""Atomic files: every artefact (weights, states, JSON, PNG, GIF, MP4, .npy/.npz, compiled kernels) is written here.

A file is written to a temporary name in the same folder (``.<name>.tmp-<pid>-<random><suffix>``: hidden,
recognisable, and with the final suffix so that writers that choose a format by it still work), flushed and
fsynced, then ``os.replace``d over the final name, and the folder is fsynced. A crash or an interrupt
(``KeyboardInterrupt`` included) at any moment leaves either the old file or the new one, never half of one,
and the temporary file (and any folder created for it) is removed on any exception.

- :func:`atomic_write` for bytes, text, or a function that writes to a binary file object;
- :func:`atomic_path` for writers that insist on a path (matplotlib, ffmpeg, a C compiler);
- :func:`save_safetensors` for weights;
- :func:`atomic_folder` for a folder of files that must appear whole (an exported pipeline);
- :func:`cache_dir`: where built artefacts are cached (data sets, reference features, compiled kernels);
- :func:`append_text` for the one file that grows line by line (metrics.jsonl);
- :func:`watch_writes`: while a :class:`WriteWatcher` is active, every file written here is routed through it
  (``route``: where it really goes) and reported to it (``written``); provenance.py uses it to put a manifest
  beside each artefact of a command, and ``reproduce`` to send a re-run's files to a folder of its own.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import Tensor

CACHE_ENV = "TORCHDIFFUSION_CACHE"  # overrides the cache folder
TMP_MARK = ".tmp-"  # every temporary file is named ``.<final name>.tmp-…``


class WriteWatcher(Protocol):
    def route(self, path: Path) -> Path:
        """Where a write of ``path`` really goes (``path`` itself, unless redirected)."""

    def written(self, path: Path, actual: Path) -> None:
        """``path`` (as the writer named it) is complete, at ``actual``."""


_WATCHER: ContextVar[WriteWatcher | None] = ContextVar("torchdiffusion_write_watcher", default=None)


@contextmanager
def watch_writes(watcher: WriteWatcher | None) -> Iterator[WriteWatcher | None]:
    """Route and report every atomic write in the block through ``watcher`` (None: no watcher)."""
    token = _WATCHER.set(watcher)
    try:
        yield watcher
    finally:
        _WATCHER.reset(token)


def first_line(e: BaseException) -> str:
    """An exception as one line for the user: the first line of its message, or its type where it has none."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def cache_dir(*parts: str) -> Path:
    """``$TORCHDIFFUSION_CACHE`` (default ``~/.cache/torchdiffusion``), or a sub-folder of it."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        return Path.home().joinpath(".cache", "torchdiffusion", *parts)
    base = Path(root).expanduser()
    if base.exists() and not base.is_dir():
        raise ValueError(f"{CACHE_ENV}={root} is a file; point it at a folder for the cache (or unset it)")
    return base.joinpath(*parts)


NAME_MAX = 255  # bytes of one file name (ext4, tmpfs, APFS ...)


def temp_name(path: Path) -> Path:
    """``.<name>.tmp-<pid>-<random><suffix>`` beside ``path`` (unique across processes and threads); a name too
    long to take the mark (a legal one of 230+ bytes) is cut short: the temporary file must fit where ``path``
    does."""
    mark = f"{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    suffix = path.suffix if len(f".xxxx{mark}{path.suffix}".encode()) <= NAME_MAX else ""  # room for any 1st char
    stem = path.name
    while len(f".{stem}{mark}{suffix}".encode()) > NAME_MAX:  # ends: one character (<= 4 bytes) always fits
        stem = stem[:-16] or stem[:1]
    return path.with_name(f".{stem}{mark}{suffix}")


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY if directory else os.O_RDWR)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and folders on some platforms) do not support it
        pass
    finally:
        os.close(fd)


_HELD_FOLDERS: ContextVar[tuple[Path, ...]] = ContextVar("torchdiffusion_held_folders", default=())


@contextmanager
def never_recreate(folder: str | Path) -> Iterator[None]:
    """Inside the block, a write under ``folder`` finds it gone (deleted while a training held it) rather than
    making it again: FileNotFoundError naming it. Its own subfolders are still made as needed."""
    token = _HELD_FOLDERS.set((*_HELD_FOLDERS.get(), Path(os.path.abspath(folder))))
    try:
        yield
    finally:
        _HELD_FOLDERS.reset(token)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing ancestors; return the folders created, deepest first."""
    created = []
    q = folder
    while not q.exists() and q.parent != q:
        if Path(os.path.abspath(q)) in _HELD_FOLDERS.get():  # (never_recreate)
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(q))
        created.append(q)
        q = q.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders a failed write created (deepest first), as long as they are still empty."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            return


def _as_asked(e: OSError, tmp: Path, path: Path) -> OSError:
    """``e`` naming ``path`` (or the file under it) where it names the temporary ``tmp`` (or a file in that
    folder) or, with an errno, no file at all (ENOSPC from a write); ``e`` itself otherwise. Creating ``tmp`` in a
    folder that exists can fail with ENOENT only where the file system takes no new files (/proc): that is told as
    EPERM, not as a path that does not exist."""
    if e.errno is None or not (e.filename is None or isinstance(e.filename, (str, Path))):
        return e
    name = Path(e.filename) if e.filename is not None else tmp
    if name != tmp and tmp not in name.parents:
        return e
    code = errno.EPERM if e.errno == errno.ENOENT and name == tmp and tmp.parent.is_dir() else e.errno
    return OSError(code, os.strerror(code), str(path / name.relative_to(tmp)) if name != tmp else str(path))


@contextmanager
def atomic_path(path: str | Path, *, before_rename: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally, fsync it and replace ``path`` with it.

    On any exception in the block (or in the replace) the temporary file is removed and ``path`` is untouched;
    an OSError that names no file (ENOSPC from a write, say) or the temporary one is raised again naming ``path``.
    ``before_rename`` runs after the temporary file is complete and before the rename (a crash-test hook).
    """
    named = Path(path)
    watcher = _WATCHER.get()
    path = watcher.route(named) if watcher is not None else named
    created = _make_parents(path.parent)
    tmp = temp_name(path)
    try:
        yield tmp
        _fsync(tmp)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        _remove_empty(created)
        if isinstance(e, OSError):
            raise _as_asked(e, tmp, path) from None  # the file asked for, not our temporary one
        raise
    _fsync(path.parent, directory=True)
    if watcher is not None:
        watcher.written(named, path)


def check_creatable(folder: Path) -> None:
    """Create and remove a temporary file in ``folder`` (which exists): a folder that passes a permission check
    but takes no new files (/proc, /sys, some mounts) raises here, before a command's work, the OSError of that
    creation naming ``folder`` (told as :func:`atomic_path` tells it: ENOENT there as EPERM)."""
    tmp = temp_name(folder / ".torchdiffusion-probe")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as e:
        raise _as_asked(e, tmp, folder) from None
    os.close(fd)
    os.unlink(tmp)


def atomic_write(
    path: str | Path,
    data: bytes | str | Callable[[IO[bytes]], Any],
    *,
    before_rename: Callable[[], None] | None = None,
) -> Path:
    """Write ``path`` atomically from ``bytes``, ``str`` (UTF-8; a lone surrogate - the bytes of a file name that
    is not UTF-8 - as its escape ``\udcff``, which JSON reads back as the same character) or ``write(file)`` on a
    binary file object."""
    with atomic_path(path, before_rename=before_rename) as tmp, open(tmp, "xb") as f:
        if isinstance(data, str):
            f.write(data.encode("utf-8", "backslashreplace"))
        elif isinstance(data, bytes | bytearray | memoryview):
            f.write(data)
        else:
            data(f)
    return Path(path)


def finite(obj: Any) -> Any:
    """``obj`` (dicts, lists, tuples, numbers) with every non-finite float as None: JSON has no NaN or Infinity, and
    strict readers (browsers' JSON.parse, jq, most languages' parsers) refuse the tokens Python writes for them."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(obj, **kwargs)`` that every reader takes: non-finite numbers written as null (:func:`finite`)."""
    import json

    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def write_json(obj: Any, path: str | Path, indent: int | None = 2) -> Path:
    """``obj`` as indented JSON (non-finite numbers as null, :func:`json_text`; anything else JSON has no type for
    as its ``str``), written atomically: every JSON record and report a command writes goes through here."""
    return atomic_write(path, json_text(obj, indent=indent, default=str) + "\n")


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to a log file (not atomic: a kill may leave a partial last line, which readers skip).

    An OSError that names no file (ENOSPC from the write, say) is raised again naming ``path``.
    """
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, os.strerror(e.errno), str(path)) from None
        raise


def state_dict_mismatch(e: BaseException, limit: int = 240) -> str:
    """One line from ``load_state_dict``'s error: its first specific complaint ("size mismatch for net.conv.weight:
    copying a param with shape ..." or "Missing key(s) in state_dict: ..."), not the heading every such error opens
    with ("Error(s) in loading state_dict for Precond:"); cut to ``limit`` characters."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if not ln.startswith("Error(s) in loading state_dict")), None)
    line = detail or (lines[0] if lines else type(e).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def safetensors_bytes(state: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A state_dict serialised as safetensors (tensors detached, made contiguous, on the CPU), the same bytes for
    the same tensors and metadata in every process: safetensors writes its ``__metadata__`` map in a random
    order per process (a Rust HashMap), so with two or more keys the header is written again with them sorted
    (the tensors' entries and data untouched; offsets count from the end of the header)."""
    from safetensors.torch import save

    blob = save({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, metadata=metadata)
    if not metadata or len(metadata) < 2:
        return blob
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors pads it
    return len(text).to_bytes(8, "little") + text + blob[8 + n :]


def save_safetensors(state: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save a state_dict as safetensors, atomically (:func:`safetensors_bytes`: the same bytes every time)."""
    return atomic_write(path, safetensors_bytes(state, metadata))


def routed(path: str | Path) -> Path:
    """Where a write of ``path`` really goes: ``path``, unless the active watcher sends it elsewhere."""
    watcher = _WATCHER.get()
    return watcher.route(Path(path)) if watcher is not None else Path(path)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to fill; when the block ends normally it takes the place of
    ``path`` (missing, an empty folder, or an earlier version of the same artefact, which is removed). On any
    exception the temporary folder is removed, with everything in it, and ``path`` is untouched: a folder of files
    (an exported pipeline) appears whole or not at all; an OSError is raised naming ``path`` (or the file in it),
    never the temporary folder, as :func:`atomic_path` does. The folder is one write for a watcher: it is routed
    (:func:`routed`) and reported as a whole; the writes that fill it are not."""
    import shutil

    named = Path(path)
    watcher = _WATCHER.get()
    path = routed(named)
    created = _make_parents(path.parent)
    tmp = temp_name(path)
    try:
        tmp.mkdir()
    except OSError as e:
        _remove_empty(created)
        raise _as_asked(e, tmp, path) from None
    old = None
    try:
        with watch_writes(None):
            yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        if path.is_dir() and any(path.iterdir()):
            old = temp_name(path)
            os.replace(path, old)  # the earlier version steps aside, then the new one moves in
        os.replace(tmp, path)
    except BaseException as e:
        if old is not None and not path.exists():
            os.replace(old, path)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        if isinstance(e, OSError):
            raise _as_asked(e, tmp, path) from None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    _fsync(path.parent, directory=True)
    if watcher is not None:
        watcher.written(named, path)


def sha256_tensor(x: Tensor) -> str:
    """The sha256 of a tensor's values (its bytes, C order), shape and dtype: names caches by the data themselves,
    so images changed on disk under the same path and settings are never served from a stale cache."""
    import torch

    h = hashlib.sha256(f"{tuple(x.shape)} {x.dtype}".encode())
    h.update(memoryview(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
