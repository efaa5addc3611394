"""Provenance: a manifest beside every artefact, saying what made it and how to make it again.

An artefact ``grid.png`` gets ``grid.png.manifest.json`` beside it (one convention for every file and folder
we write: grids, GIFs, .npy, reports, edits, explain pictures, exports)::

    {"format": "torchdiffusion-manifest", "version": 1,
     "kind": "sample:png",                               # the command and the artefact's type
     "artefact": {"name", "path", "folder", "sha256", "bytes"},   # what this manifest vouches for
     "files": {name: sha256},                            # every other file the same command wrote
     "command": {"name", "argv", "cwd"},                 # the full command: enough to run it again
     "run": {"path", "id", "config_sha256", "weights_file", "weights_sha256", "weights_verified"},
     "sampling": [{"sampler", "steps", "grid", "rho", "spacing", "settings", "seeds", "n",
                   "guidance", "wrappers", "conditioning", "device", "precision"}],
     "environment": {"torchdiffusion", "torch", "numpy", "python", "platform", "git_commit", "git_dirty",
                     "device", "threads"},
     "inputs": {path: sha256},                           # the user's files it read (images, masks, CSVs,
                                                         # series, a run's metrics.jsonl); only where it read any
     "date": "2026-01-01T00:00:00Z", "extra": {...},
     "stopped": "Ctrl-C"}                                # only where the command stopped before it finished

Two ways to write one:

- by hand, for a writer outside the command line: ``write_manifest(path, manifest(run, kind="onnx"))``;
- automatically, for a command whose module sets ``MANIFESTS = True``: the command line runs it inside
  :func:`recording`, which sees every file the command writes through :mod:`torchdiffusion.io`, the run that
  ``load_run`` loaded and each ``generate`` call, and writes one manifest per artefact once the command has
  finished (a command stopped or failed after writing some files marks their manifests ``"stopped"``). A
  command that writes a folder as one artefact (an export) calls :func:`note_artefact` on it: the files under it
  are then listed in the folder's manifest. Each file gets a provisional manifest the moment it is written
  (``"stopped"``: :data:`UNFINISHED`), replaced by the full one at the end: a command killed outright (``kill -9``,
  a power cut) leaves no file without a manifest, so the same command again replaces its files as its own.

``torchdiffusion reproduce MANIFEST`` (commands/reproduce.py) runs ``command.argv`` again and compares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from .io import cache_dir, first_line, sha256_file, watch_writes, write_json

FORMAT = "torchdiffusion-manifest"
VERSION = 1
SUFFIX = ".manifest.json"
# what a provisional manifest says until the command's end replaces it: left behind only by a command that ended
# without running its own code again (kill -9, a power cut)
UNFINISHED = "unfinished: the command ended before it could finish (killed?)"


class ManifestError(ValueError):
    """A manifest that cannot be read or whose run no longer matches it; one line for the user."""


def manifest_path(artefact: str | Path) -> Path:
    """``<artefact>.manifest.json`` beside the artefact (file or folder)."""
    artefact = Path(artefact)
    return artefact.with_name(artefact.name + SUFFIX)


def artefact_digest(path: str | Path) -> tuple[str, int]:
    """(sha256, bytes) of a file; of a folder, the sha256 of its sorted ``<sha256>  <relative path>`` lines."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path), path.stat().st_size
    lines, size = [], 0
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        lines.append(f"{sha256_file(p)}  {p.relative_to(path).as_posix()}\n")
        size += p.stat().st_size
    return hashlib.sha256("".join(lines).encode()).hexdigest(), size


def config_sha256(cfg: Any) -> str:
    """sha256 of the canonical JSON of a resolved config (keys sorted, no spaces): equal configs, equal hash."""
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=1)
def _git() -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of the checkout the package is imported from, or (None, None)."""
    here = Path(__file__).resolve().parent
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", "-C", str(here), *a], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no", "--", str(here)))
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def cpu_name() -> str:
    """The CPU's model name as ``lscpu`` gives it ("AMD EPYC 9654 ..."); ``platform.processor()`` where lscpu is
    missing. Benchmarks name the machine their figures came from with it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def environment(device: str | None = None) -> dict:
    """Versions (torch, numpy, ours, Python), the git commit of our checkout if any, device and threads."""
    import numpy
    import torch

    from . import __version__

    commit, dirty = _git()
    env = {
        "torchdiffusion": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
        "device": device or "cpu",
        "threads": torch.get_num_threads(),
    }
    if env["device"].startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(env["device"]))
        env["cuda"] = torch.version.cuda
    return env


def seed_ranges(seeds: Iterable[int]) -> list[list[int]]:
    """Seeds as inclusive ``[first, last]`` runs of consecutive integers: [0..99] -> [[0, 99]]."""
    out: list[list[int]] = []
    for s in (int(v) for v in seeds):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def run_record(run: Any) -> dict:
    """What identifies a loaded run: path, id, config hash, and the weights file with its sha256 - of the bytes
    ``load_run`` loaded and checked against run.json (a run training beside the command may have replaced the file
    since); of the file now, checked against run.json, for a run loaded otherwise (an export)."""
    from .training.checkpoint import WEIGHTS_KEY

    path = Path(run.path).resolve()
    wname = getattr(run, "weights_file", None) or ""
    info = run.info if isinstance(run.info, dict) else {}
    source = info.get("source") or ("onnx" if "onnx" in info else "torchdiffusion")  # diffusers, our export, ONNX
    rec = {"path": str(path), "id": path.name, "source": source, "config_sha256": config_sha256(run.config)}
    rec["weights_file"] = wname
    wfile = path / wname
    loaded = getattr(run, "weights_sha256", None)
    if wname and loaded:  # the bytes the command loaded (training may have written new ones since)
        rec.update(weights_sha256=loaded, weights_verified=bool(getattr(run, "weights_verified", None)))
    elif wname and wfile.is_file():
        digest = sha256_file(wfile)
        recorded = (info.get(WEIGHTS_KEY) or {}).get(wname)
        if recorded is not None and recorded != digest:
            raise ManifestError(f"{wfile} no longer has the sha256 run.json records; the run changed while in use")
        rec.update(weights_sha256=digest, weights_verified=recorded is not None)
    return rec


def guidance_record(sample: Any, conditioning: Any) -> dict | None:
    """The classifier-free guidance a draw ran (its scale, interval and rescale), or None for a draw without a
    conditioning: the model's unconditional prediction alone, whatever scale ``sample.guidance`` holds."""
    if not conditioning:
        return None
    return {"scale": sample.guidance, "interval": sample.guidance_interval, "rescale": sample.guidance_rescale}


def sampling_record(
    sample: Any,
    seeds: Sequence[int] | None = None,
    *,
    wrappers: Sequence[dict] = (),
    conditioning: Sequence[str] | None = None,
    device: str | None = None,
    precision: str = "fp32",
    own_process: bool = False,
    grid_used: dict | None = None,
) -> dict:
    """Sampler, σ grid, steps, settings, seeds (as ranges), guidance, autoguidance and the denoiser wrappers of one
    draw; ``grid_used``: the grid it walked (generate.sampling_plan's record: the sigmas, a tuned grid's file and
    the settings it brought); ``own_process``: a sequence run's draw, by its process's own reverse steps (no
    sampler, grid or settings)."""
    settings = {k: v for k, v in dataclasses.asdict(sample.settings).items() if v is not None}
    return {
        "sampler": None if own_process else sample.sampler,
        "steps": sample.steps,
        "grid": None if own_process else sample.grid,
        "rho": None if own_process else sample.rho,
        "spacing": None if own_process else sample.spacing,
        "settings": {} if own_process else settings,
        "clip_denoised": sample.clip_denoised,
        "seeds": seed_ranges(seeds) if seeds is not None else None,
        "n": len(seeds) if seeds is not None else None,
        "guidance": guidance_record(sample, conditioning),
        "autoguidance": sample.autoguidance,
        **({"grid_used": grid_used} if grid_used is not None else {}),
        "conditioning": sorted(conditioning) if conditioning else None,
        "wrappers": list(wrappers),
        "device": str(device or "cpu"),
        "precision": precision,
    }


def manifest(
    run: Any = None,
    *,
    kind: str,
    sample: Any = None,
    seeds: Sequence[int] | None = None,
    wrappers: Sequence[dict] = (),
    extra: dict | None = None,
    argv: Sequence[str] | None = None,
    command: str | None = None,
    sampling: Sequence[dict] | None = None,
    device: str | None = None,
    precision: str = "fp32",
) -> dict:
    """A manifest (without its artefact section: :func:`write_manifest` adds that).

    Args:
        run: a LoadedRun (``generate.load_run``), or None for artefacts that need no run.
        kind: what the artefact is, ``<command>:<type>`` (``sample:png``, ``evaluate:json``, ``export:onnx`` ...).
        sample, seeds, wrappers: one draw (a SampleConfig, its seeds, ``[{"name": ..., **parameters}]``);
            or ``sampling``: the records of several (:func:`sampling_record`).
        extra: anything else worth keeping (export format, tolerances ...).
        argv, command: the command line (default: this process's ``sys.argv``).
    """
    if sampling is None:
        sampling = [] if sample is None else [sampling_record(sample, seeds, wrappers=wrappers, device=device)]
    argv = list(sys.argv[1:] if argv is None else argv)
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "command": {"name": command or (argv[0] if argv else None), "argv": argv, "cwd": os.getcwd()},
        "run": run_record(run) if run is not None else None,
        "sampling": list(sampling),
        "environment": environment(device or (sampling[0]["device"] if sampling else None)),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "extra": dict(extra or {}),
    }


def write_manifest(artefact: str | Path, record: dict, files: dict[str, str] | None = None) -> Path:
    """Write ``<artefact>.manifest.json`` (atomically) for an artefact that exists; returns its path.

    Adds the artefact's name, sha256 and size (a folder: see :func:`artefact_digest`), and ``files``: the other
    files written with it ({name: sha256})."""
    artefact = Path(artefact)
    digest, size = artefact_digest(artefact)
    record = {
        **record,
        "artefact": {
            "name": artefact.name,
            "path": os.path.abspath(artefact),  # where the command wrote it (reproduce finds the new one so)
            "folder": artefact.is_dir(),
            "sha256": digest,
            "bytes": size,
        },
        "files": dict(files or {}),
    }
    with watch_writes(None):  # a manifest is not itself an artefact of the command being recorded
        return write_json(record, manifest_path(artefact))


def read_manifest(path: str | Path) -> dict:
    """A manifest read back and checked; :class:`ManifestError` (one line) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ManifestError(f"{path} is not a manifest (not JSON)") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ManifestError(f'{path} is not a manifest (no "format": "{FORMAT}")')
    if d.get("version") != VERSION:
        raise ManifestError(f"{path} is a manifest of version {d.get('version')!r}; this version reads {VERSION}")
    art, cmd = d.get("artefact"), d.get("command")
    if not isinstance(art, dict) or not isinstance(art.get("name"), str) or not isinstance(art.get("sha256"), str):
        raise ManifestError(f"{path} is damaged: its artefact section is missing or incomplete")
    argv = cmd.get("argv") if isinstance(cmd, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ManifestError(f"{path} is damaged: it records no command line")
    if d.get("run") is not None and not isinstance(d["run"], dict):
        raise ManifestError(f"{path} is damaged: its run section is not an object")
    env = d.get("environment")
    if env is not None and not isinstance(env, dict):
        raise ManifestError(f"{path} is damaged: its environment section is not an object")
    threads = (env or {}).get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ManifestError(f"{path} is damaged: its thread count {threads!r} is not a positive integer")
    inputs = d.get("inputs")
    if inputs is not None and (
        not isinstance(inputs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items())
    ):
        raise ManifestError(f"{path} is damaged: its inputs section is not a map of paths to sha256 digests")
    if cmd.get("cwd") is not None and not isinstance(cmd["cwd"], str):
        raise ManifestError(f"{path} is damaged: the folder its command ran in is not a path")
    return d


class Recording:
    """What one command did: runs loaded, draws made, files and folders written (an ``io.WriteWatcher``)."""

    def __init__(self, command: str, argv: Sequence[str]) -> None:
        self.command, self.argv = command, list(argv)
        self.runs: list[Any] = []
        self.sampling: list[dict] = []
        self.files: dict[Path, None] = {}  # absolute paths, in the order written
        self.folders: list[Path] = []  # folders that are one artefact each
        self.records: set[Path] = set()  # settings records listed in their artefact's manifest (note_record)
        self.device: str | None = None
        self.stopped: str | None = None  # set by a command that ends unsuccessfully without an exception
        self.rank0 = os.environ.get("RANK", "0") in ("", "0")  # under torchrun, rank 0 writes the manifests
        self.earlier: dict[Path, dict | None] = {}  # a file's manifest from before this command wrote it
        self.provisional: set[Path] = set()  # files given a provisional manifest
        self.inputs: dict[str, str] = {}  # files the command read as its input: {absolute path: sha256 when read}
        self.identity: dict[Path, tuple] = {}  # each file or folder as this command left it (_identity)
        self.extra: dict[str, Any] = {}  # what the command resolved and drew (note_extra): the manifests' extra

    def route(self, path: Path) -> Path:
        return path

    def written(self, path: Path, actual: Path) -> None:
        p = Path(os.path.abspath(actual))
        self.files[p] = None
        self.identity[p] = _identity(p)
        if (
            not self.rank0
            or not p.is_file()
            or p.name.endswith(SUFFIX)
            or Path(os.path.abspath(cache_dir())) in p.parents
        ):
            return
        if p not in self.earlier:  # read before the provisional manifest replaces it (stale companions, below)
            self.earlier[p] = _earlier_manifest(p)
        # the provisional manifest: this file is the command's own even if the process dies before its end
        with contextlib.suppress(Exception):  # best effort (a full disk): the command's own write is what counts
            base = manifest(None, kind=f"{self.command}:{_kind(p)}", argv=self.argv, command=self.command)
            write_manifest(p, {**base, "stopped": UNFINISHED})
            self.provisional.add(p)

    def artefacts(self) -> list[Path]:
        """Files and claimed folders that get a manifest: not manifests, not caches, not files of a claimed
        folder, and not a settings record (:func:`note_record`: the ``.json`` ``sample`` writes beside its picture)."""
        cache = Path(os.path.abspath(cache_dir()))
        folders = list(dict.fromkeys([*self.folders, *(p for p in self.files if p.is_dir())]))  # io.atomic_folder
        files = [p for p in self.files if p.is_file() and not p.name.endswith(SUFFIX) and cache not in p.parents]
        files = [p for p in files if not any(f == p or f in p.parents for f in folders)]
        files = [p for p in files if p not in self.records]
        return [*files, *(f for f in folders if f.is_dir())]

    def finish(self, stopped: str | None = None) -> list[Path]:
        """Write one manifest per artefact; returns their paths. ``stopped``: why the command stopped before it
        finished ("Ctrl-C", "SIGTERM", the error), recorded in each manifest of the files it wrote until then."""
        # what another process has written over since (the same command with other seeds, at the same time): its
        # own manifest describes it; this command's would vouch for bytes it did not write
        replaced = [p for p, was in self.identity.items() if was is not None and _identity(p) != was]
        for p in replaced:
            self.files.pop(p, None)
            self.provisional.discard(p)
            print(f"{p.name}: replaced by another process while this command ran; not described here", file=sys.stderr)
        arts = [a for a in self.artefacts() if a not in replaced]
        for p in self.provisional - set(arts):  # files that get no manifest of their own (a settings record)
            with contextlib.suppress(OSError):
                manifest_path(p).unlink(missing_ok=True)
        if not arts:
            return []
        base = manifest(
            self.runs[0] if self.runs else None,
            kind="",
            argv=self.argv,
            command=self.command,
            sampling=_dedupe(self.sampling),
            device=self.device,
            extra=self.extra,
        )
        if self.inputs:
            base["inputs"] = dict(self.inputs)
        if stopped is not None:
            base["stopped"] = stopped
        digests = {p: artefact_digest(p)[0] for p in self.files if p.is_file() and not p.name.endswith(SUFFIX)}
        # read before they were replaced (by this command's provisional manifests, or now)
        earlier = {a: self.earlier[a] if a in self.earlier else _earlier_manifest(a) for a in arts if a.is_file()}
        out = []
        for a in arts:
            others = {str(_rel(p, a.parent)): d for p, d in digests.items() if p != a}
            if a.is_dir():  # a folder artefact (an export): every file under it, written in a temporary folder first
                others.update({str(_rel(f, a.parent)): sha256_file(f) for f in sorted(a.rglob("*")) if f.is_file()})
            record = {**base, "kind": f"{self.command}:{_kind(a)}"}
            out.append(write_manifest(a, record, others))
        # stopped or not: what an earlier command wrote beside a file this one has replaced describes a file gone
        self._remove_stale_companions(earlier, digests)
        return out

    def _remove_stale_companions(self, earlier: dict[Path, dict | None], digests: dict[Path, str]) -> None:
        """Remove what an earlier command wrote beside an artefact this one replaced with other content and did not
        write again (``sample --out g.png`` after ``sample --gif --save-npy --out g.png``: the old g.gif and g.npy,
        and their manifests, vouched for a g.png that is gone). Only files of the artefact's stem in its folder,
        unchanged since they were written (their recorded sha256), that were written with another version of it:
        their own manifest lists it with other content, or (the .json settings record, which has no manifest) its
        earlier manifest lists them and it now holds other content."""
        removed: list[Path] = []
        for a, m in earlier.items():
            new, gone = digests.get(a), []
            for p, digest in _companions(a, m, new).items():
                if p in self.files or p in removed or not p.is_file() or artefact_digest(p)[0] != digest:
                    continue
                with contextlib.suppress(OSError):
                    p.unlink()
                    manifest_path(p).unlink(missing_ok=True)
                    gone.append(p)
            if gone:
                names = ", ".join(p.name for p in gone)
                print(
                    f"removed {names}: an earlier command wrote them beside the {a.name} this one replaced",
                    file=sys.stderr,
                )
            removed += gone


def _companions(a: Path, earlier: dict | None, new: str | None) -> dict[Path, str]:
    """{file: its sha256 when written} of the files of ``a``'s stem an earlier command wrote beside another
    version of ``a`` (``new``: its content now): see Recording._remove_stale_companions."""
    found: dict[Path, str] = {}
    if earlier and earlier.get("artefact", {}).get("sha256") != new and isinstance(earlier.get("files"), dict):
        for name, digest in earlier["files"].items():
            found[a.parent / str(name)] = str(digest)
    for mf in sorted(a.parent.glob("*" + SUFFIX)):
        if not (mf.name.startswith(a.stem + ".") and mf.name.endswith(SUFFIX)) or mf == manifest_path(a):
            continue
        m = _earlier_manifest(mf.parent / mf.name[: -len(SUFFIX)])
        files = m.get("files") if m else None
        if isinstance(files, dict) and a.name in files and files[a.name] != new:
            found[mf.parent / mf.name[: -len(SUFFIX)]] = m["artefact"]["sha256"]
    return {
        p: d
        for p, d in sorted(found.items())
        if p.parent == a.parent and p != a and p.name.startswith(a.stem + ".") and not p.name.endswith(SUFFIX)
    }


def _earlier_manifest(artefact: Path) -> dict | None:
    """The manifest an earlier command left beside ``artefact``, or None (none, or not one we can read)."""
    try:
        return read_manifest(manifest_path(artefact))
    except (ManifestError, OSError):  # (an unreadable one vouches for nothing)
        return None


def _identity(p: Path) -> tuple | None:
    """What tells a file or folder from another written over it: device, inode, mtime and size (an atomic write
    renames a new file into place: a new inode), or None when there is nothing there."""
    try:
        st = p.stat()
    except OSError:
        return None
    if p.is_dir():  # (files may be added under it later by the same command: its inode alone)
        return (st.st_dev, st.st_ino)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _rel(p: Path, root: Path) -> Path:
    try:
        return p.relative_to(root)
    except ValueError:
        return p


def _kind(p: Path) -> str:
    return "folder" if p.is_dir() else (p.suffix.lstrip(".").lower() or "file")


def _dedupe(records: list[dict]) -> list[dict]:
    out: list[dict] = []
    for r in records:
        if r not in out:
            out.append(r)
    return out


_RECORDING: ContextVar[Recording | None] = ContextVar("torchdiffusion_recording", default=None)


@contextlib.contextmanager
def recording(command: str, argv: Sequence[str]) -> Iterator[Recording]:
    """Record a command: a manifest beside each artefact it wrote (see the module docstring). A command stopped
    or failed after writing some of its files (Ctrl-C while its GIF is written, after the picture) marks them so
    (``"stopped"`` in their manifests): whole files, but not all the command meant to write; the same command
    again replaces them as its own."""
    rec = Recording(command, argv)
    token = _RECORDING.set(rec)
    rank0 = rec.rank0
    try:
        with watch_writes(rec):
            try:
                yield rec
            except BaseException as e:
                if rank0:
                    with contextlib.suppress(Exception):  # best effort (a full disk); the stop is what is told
                        rec.finish(stopped=stop_reason(e))
                raise
        if rank0:
            rec.finish(stopped=rec.stopped)
    finally:
        _RECORDING.reset(token)


def is_recording() -> bool:
    """Whether a command is being recorded (its files get manifests)."""
    return _RECORDING.get() is not None


@contextlib.contextmanager
def unrecorded() -> Iterator[None]:
    """Inside the block nothing is recorded - no run loaded, no file written: work a command does in a temporary
    folder of its own (explain shortcuts' toy students) is not what its artefacts came from."""
    token = _RECORDING.set(None)
    try:
        with watch_writes(None):
            yield
    finally:
        _RECORDING.reset(token)


def stop_reason(e: BaseException) -> str:
    """How a command stopped, in a few words: "Ctrl-C", "SIGTERM", or the error's type and first line."""
    if isinstance(e, KeyboardInterrupt):
        return "SIGTERM" if getattr(e, "exit_code", None) == 143 else "Ctrl-C"
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    text = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def note_run(run: Any) -> None:
    """``load_run`` reports the run it loaded (no-op outside :func:`recording`)."""
    rec = _RECORDING.get()
    if rec is not None and all(r.path != run.path for r in rec.runs):
        rec.runs.append(run)


def note_sampling(sample: Any, seeds: Sequence[int] | None = None, **kw: Any) -> None:
    """A draw reports itself (``generate`` does; so do the editing commands): see :func:`sampling_record`."""
    rec = _RECORDING.get()
    if rec is not None:
        rec.sampling.append(sampling_record(sample, seeds, **kw))
        rec.device = rec.device or rec.sampling[-1]["device"]


def note_edit(**values: Any) -> None:
    """Values a command resolved after it reported its draw (RePaint's default jump, say): added to the first
    wrapper of its latest draw, which names the command and its knobs."""
    rec = _RECORDING.get()
    if rec is not None and rec.sampling and rec.sampling[-1].get("wrappers"):
        rec.sampling[-1]["wrappers"][0].update(values)


def note_extra(**values: Any) -> None:
    """What a command drew that its command line does not say (the process of a run's forward strip): kept in the
    ``extra`` section of its manifests (no-op outside :func:`recording`)."""
    rec = _RECORDING.get()
    if rec is not None:
        rec.extra.update(values)


def note_record(path: str | Path) -> None:
    """Declare a file the settings record of the command's artefacts (``sample``'s ``.json`` beside its picture):
    listed with its sha256 in their manifests rather than getting one of its own. Every other file gets its own."""
    rec = _RECORDING.get()
    if rec is not None:
        rec.records.add(Path(os.path.abspath(path)))


def note_input(path: str | Path) -> None:
    """A file the command reads as its input (an image to edit, a mask, a CSV, a series, a run's metrics): its
    sha256 goes into the manifests, and ``reproduce`` refuses when the file has changed since (no-op outside
    :func:`recording`)."""
    rec = _RECORDING.get()
    p = Path(os.path.abspath(path))
    if rec is not None and p.is_file() and str(p) not in rec.inputs:
        rec.inputs[str(p)] = sha256_file(p)


def note_artefact(folder: str | Path) -> None:
    """Declare a folder one artefact (an export): one manifest for it, listing the files under it with their
    sha256."""
    rec = _RECORDING.get()
    if rec is not None:
        rec.folders.append(Path(os.path.abspath(folder)))
        rec.identity[rec.folders[-1]] = _identity(rec.folders[-1])


def describe_wrapper(wrap: Any) -> dict:
    """``{"name": ..., **parameters}`` of a denoiser wrapper: its ``provenance`` attribute when it has one
    (set it on a wrapper to record its parameters), else its function name."""
    info = getattr(wrap, "provenance", None)
    if isinstance(info, dict):
        return dict(info)
    return {"name": getattr(wrap, "__qualname__", type(wrap).__name__)}


# Comparing a regenerated artefact with the original

# Tolerances when the bytes differ (another machine, another torch): arrays within ABS_TOL, 8-bit pictures
# within PIXEL_TOL levels, numbers in JSON reports within REL_TOL; timing fields of reports are not compared.
ABS_TOL = 1e-4
PIXEL_TOL = 1
REL_TOL = 1e-6
TIMING_KEYS = ("seconds", "date", "elapsed")  # a key ending in one of these is a timing field


@dataclasses.dataclass(frozen=True)
class Comparison:
    verdict: str  # "bit-identical" | "identical" | "within tolerance" | "different"
    detail: str

    @property
    def reproduced(self) -> bool:
        return self.verdict != "different"


def compare(original: Path, regenerated: Path) -> Comparison:
    """Bytes first; then decoded content: pixels of PNG/GIF frames, .npy/.npz arrays, JSON data without timings."""
    if artefact_digest(original)[0] == artefact_digest(regenerated)[0]:
        return Comparison("bit-identical", f"sha256 {artefact_digest(original)[0][:16]}")
    if original.is_dir() or regenerated.is_dir():
        return _compare_folders(original, regenerated)
    suffix = original.suffix.lower()
    try:
        if suffix in (".png", ".gif"):
            return _compare_arrays(_frames(original), _frames(regenerated), PIXEL_TOL, "pixel levels")
        if suffix in (".npy", ".npz"):
            return _compare_arrays(_arrays(original), _arrays(regenerated), ABS_TOL, "max |difference|")
        if suffix == ".json":
            return _compare_json(original, regenerated)
        if suffix in (".html", ".htm"):
            return _compare_html(original, regenerated)
    except (OSError, ValueError) as e:
        return Comparison("different", f"cannot decode: {first_line(e)}")
    return Comparison("different", "the bytes differ")


def _frames(path: Path) -> list:
    import numpy as np
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [np.asarray(f.convert("RGBA"), dtype=np.int16) for f in ImageSequence.Iterator(im)]


def _arrays(path: Path) -> list:
    import numpy as np

    with open(path, "rb") as f:
        data = np.load(f, allow_pickle=False)
        return [data[k] for k in sorted(data.files)] if hasattr(data, "files") else [data]


def _compare_arrays(a: list, b: list, tol: float, unit: str) -> Comparison:
    import numpy as np

    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return Comparison("different", "the shapes (or the number of frames) differ")
    diff = max((float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0) for x, y in zip(a, b))
    if diff == 0:
        return Comparison("identical", "the decoded content is equal (the file bytes differ)")
    verdict = "within tolerance" if diff <= tol else "different"
    return Comparison(verdict, f"{unit} {diff:.3g} (tolerance {tol:g})")


TIMING_ROW = re.compile(r"<tr class=timing>.*?</tr>", re.S)  # evaluate's summary.html marks its timing rows


def _compare_html(original: Path, regenerated: Path) -> Comparison:
    a, b = (TIMING_ROW.sub("", p.read_text(encoding="utf-8")) for p in (original, regenerated))
    if a == b:
        return Comparison("identical", "the page is equal but for its timing rows")
    return Comparison("different", "the page differs beyond its timing rows")


def _without_timings(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _without_timings(v) for k, v in d.items() if not str(k).endswith(TIMING_KEYS)}
    if isinstance(d, list):
        return [_without_timings(v) for v in d]
    return d


def _numbers_close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_numbers_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_numbers_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return abs(a - b) <= REL_TOL * max(abs(a), abs(b), 1e-12)
    return a == b


def _compare_json(original: Path, regenerated: Path) -> Comparison:
    a, b = (_without_timings(json.loads(p.read_text(encoding="utf-8"))) for p in (original, regenerated))
    if a == b:
        return Comparison("identical", "equal apart from timing fields")
    if _numbers_close(a, b):
        return Comparison("within tolerance", f"numbers within relative {REL_TOL:g}; timing fields not compared")
    return Comparison("different", "the reports differ beyond timing fields")


def _compare_folders(original: Path, regenerated: Path) -> Comparison:
    names = lambda d: {p.relative_to(d) for p in d.rglob("*") if p.is_file()}  # noqa: E731
    if not (original.is_dir() and regenerated.is_dir()) or names(original) != names(regenerated):
        return Comparison("different", "the folders hold different files")
    worst = Comparison("identical", "every file equal")
    for rel in sorted(names(original)):
        c = compare(original / rel, regenerated / rel)
        if c.verdict == "different":
            return Comparison("different", f"{rel}: {c.detail}")
        if c.verdict == "within tolerance":
            worst = Comparison("within tolerance", f"{rel}: {c.detail}")
    return worst
