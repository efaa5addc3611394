"""argparse ``type=`` functions for numbers and paths: a bad value is refused while parsing, before any work.

Each returns a converter whose error becomes argparse's one line, e.g.
``torchdiffusion sample: error: argument --steps: must be an integer in [1, 100000], got '0'``.
Upper bounds keep absurd sizes (``--steps 1000000000000``) from reaching an allocation.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Upper bounds shared by the commands (far above any sensible use, far below an allocation failure)
MAX_STEPS = 100_000  # sampler steps, timesteps, ODE steps
MAX_COUNT = 1_000_000  # images to generate / read (a million 28x28 images are 3 GB of floats)
MAX_BATCH = 65_536  # images per network call
MAX_FRAMES = 10_000  # frames of an interpolation
MAX_THREADS = 4096
MAX_SEED = 2**62  # image k uses seed + k: room for k
MAX_IMAGES_SEEN = 10**12  # training lengths in images
MAX_PIXELS = 16_384  # one side of an image


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An integer in [lo, hi] (written as an integer: ``10``, ``1_000``; not ``1e3`` or ``10**3``)."""

    def convert(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {text!r}")
        return v

    convert.__name__ = "integer"
    convert.kind = int  # type: ignore[attr-defined]  # what it parses, for tools that look at flags
    return convert


def positive_int(hi: int) -> Callable[[str], int]:
    return int_in(1, hi)


def nonneg_int(hi: int) -> Callable[[str], int]:
    return int_in(0, hi)


def float_in(
    lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """A finite number in the interval from lo to hi (ends closed unless ``*_open``); never NaN or inf."""
    left, right = "(" if lo_open else "[", ")" if hi_open or not math.isfinite(hi) else "]"  # (no "inf]")
    domain = f" in {left}{lo:g}, {hi:g}{right}" if math.isfinite(lo) or math.isfinite(hi) else ""

    def convert(text: str) -> float:
        try:
            v = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = v < lo or (lo_open and v == lo)
        too_high = v > hi or (hi_open and v == hi)
        if not math.isfinite(v) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be a finite number{domain}, got {text!r}")
        return v

    convert.__name__ = "number"
    convert.kind = float  # type: ignore[attr-defined]
    return convert


def finite_float(text: str) -> float:
    """Any finite number (no NaN, no infinity)."""
    return float_in()(text)


finite_float.kind = float  # type: ignore[attr-defined]


def positive_float(text: str) -> float:
    return float_in(0.0, lo_open=True)(text)


positive_float.kind = float  # type: ignore[attr-defined]


def unit_float(text: str) -> float:
    """A number in [0, 1] (a strength, a probability, a stochasticity)."""
    return float_in(0.0, 1.0)(text)


unit_float.kind = float  # type: ignore[attr-defined]


def existing_file(text: str) -> str:
    """A path that exists and is a file (not a folder)."""
    p = Path(text).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return str(p)


def check_output_file(path: str | Path, sidecars: tuple[str, ...] = ()) -> Path:
    """Refuse an output file path that cannot be written, before any work: a folder, a parent that is a
    file, or a read-only/unwritable place. (A full disk only shows while writing; the writers clean up.)
    ``sidecars``: the suffixes of the files written beside it (``sample``'s ``.json``, ``.gif``, ``.npy``);
    neither it nor they may replace a file a run folder is made of (:func:`refuse_folder_record`), and the
    sidecars, which the user did not name, only a command's earlier outputs (:func:`_ours`): the user's own data
    ``x.npy`` stays when a picture is asked for as ``x.png``."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(p))
    _check_name_length(p, sidecars)
    _check_output_dir_path(p.parent)
    if p.exists() and not os.access(p, os.W_OK):
        raise PermissionError(13, "Permission denied", str(p))
    from ..provenance import manifest_path

    refuse_folder_record(p)
    beside = [p.with_suffix(suffix) for suffix in sidecars]
    for q in [*beside, manifest_path(p)]:
        if q.is_dir():  # found only after the work, beside the first file written
            raise IsADirectoryError(21, "Is a directory", str(q))
    _refuse_foreign_manifest(p, *beside)
    for q in beside:
        refuse_folder_record(q, beside=p)
        _refuse_foreign(q, None, f"{q} (beside {p})", "give --out another name")  # the output was named; not these
    return p


def check_output_dir(
    path: str | Path, writes: tuple[str, ...] = (), record: tuple[str, tuple[str, ...]] | None = None
) -> Path:
    """Refuse an output folder that is a file, sits under a file, or cannot be written, before any work;
    ``writes``: the names the command writes in it, none of which may replace a file of a run folder - nor, with
    ``record`` (the name and keys of the JSON record the command writes there, e.g. evaluate's report.json), a
    file of the user's own (the user named the folder, not the files; :func:`_ours`)."""
    p = Path(path).expanduser()
    try:
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(p))
        _check_output_dir_path(p)
    except OSError as e:  # every rank names the same folder (on a shared file system): rank 0 alone prints it
        e.same_on_every_rank = True  # type: ignore[attr-defined]  # (cli.classify)
        raise
    for name in writes:
        refuse_folder_record(p / name)
        if record is not None:
            _refuse_foreign(p / name, record, str(p / name), "choose another folder")
    return p


def _refuse_foreign_manifest(*outputs: Path) -> None:
    """ConfigError (one line) when a command that writes manifests (provenance.recording is on) would write one
    over a file of that name that is not a manifest - the user's own notes beside their picture."""
    from ..config import ConfigError
    from ..provenance import ManifestError, is_recording, manifest_path, read_manifest

    if not is_recording():
        return
    for out in outputs:
        m = manifest_path(out)
        if m.is_file():
            try:
                read_manifest(m)
            except ManifestError:
                raise ConfigError(
                    f"writing {out.name}'s manifest would replace {m}, which is no manifest; give --out another name"
                ) from None


def _refuse_foreign(q: Path, record: tuple[str, tuple[str, ...]] | None, what: str, hint: str) -> None:
    """ConfigError (one line) when ``q`` exists and is not a command's output (:func:`_ours`)."""
    from ..config import ConfigError

    if q.is_file() and not _ours(q, record):
        raise ConfigError(f"writing {what} would replace a file no torchdiffusion command wrote; {hint}")


def _ours(q: Path, record: tuple[str, tuple[str, ...]] | None = None) -> bool:
    """Whether ``q`` is a command's output: its manifest is beside it; or it is the ``.json`` record written with
    a picture, which has none of its own (provenance.Recording.artefacts), beside an artefact of its stem; or
    ``record`` - the (name, keys) of the JSON record a command writes in its output folder - is in ``q``'s folder,
    holds those keys and has no manifest: the folder is that command's, written by a run that wrote no manifests
    (stopped by Ctrl-C, or the library). (Where the record has its manifest, so does every file of that run.)"""
    import glob
    import json

    from ..provenance import SUFFIX, manifest_path

    if manifest_path(q).is_file():
        return True
    if q.suffix == ".json" and any(q.parent.glob(glob.escape(q.stem) + ".*" + SUFFIX)):
        return True
    if record is None:
        return False
    if manifest_path(q.parent / record[0]).is_file():
        return False
    try:
        doc = json.loads((q.parent / record[0]).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and all(k in doc for k in record[1])


def folder_record(p: Path) -> Path | None:
    """The folder whose record ``p`` is - weights, the config and run.json beside them, training states, tuned
    grids, a contrastive model's report, an autoencoder's reconstructions - or None when ``p`` is no such file.
    Other commands' outputs may sit in those folders (samples, evaluations) but never replace these files."""
    from ..autoencoder import WEIGHTS_FILE as AUTOENCODER
    from ..contrastive.model import WEIGHTS_NAME as CONTRASTIVE

    folder = p.parent
    if p.suffix == ".json" and p.with_suffix(".safetensors").is_file() and not p.is_dir():
        return folder  # a weights file's record, there or not yet (sample --out run/model.png's model.json)
    if not p.is_file():
        return None
    if p.suffix == ".safetensors":
        return folder
    if folder.name in ("checkpoints", "grids") and _made_folder(folder.parent):
        return folder.parent
    if _made_folder(folder) and (
        p.name in ("config.json", "run.json", "metrics.jsonl")
        or (p.name == "report.json" and (folder / CONTRASTIVE).is_file())
        or (p.name == "reconstructions.png" and (folder / AUTOENCODER).is_file())
    ):
        return folder
    return None


def _made_folder(folder: Path) -> bool:
    """A folder a training command made: its config.json beside weights, run.json or training states (a config.json
    alone may be any command's settings, e.g. sample's beside a picture named config.png)."""
    return (folder / "config.json").is_file() and (
        (folder / "run.json").is_file() or (folder / "checkpoints").is_dir() or any(folder.glob("*.safetensors"))
    )


def refuse_folder_record(p: Path, beside: Path | None = None) -> None:
    """ConfigError (one line) when writing ``p`` would replace a file a run folder is made of."""
    from ..config import ConfigError

    folder = folder_record(p)
    if folder is not None:
        what = f"{p} (written beside {beside})" if beside is not None else str(p)
        part = p.relative_to(folder).as_posix()
        does = f"replace {part} of" if p.exists() else f"pass for the record of {p.with_suffix('.safetensors').name} in"
        raise ConfigError(f"writing {what} would {does} the run folder {folder}; choose another path")


def _check_name_length(p: Path, sidecars: tuple[str, ...] = ()) -> None:
    """ConfigError (one line) before the work when ``p``'s name, or the name of a file written beside it (its
    ``.manifest.json``, the sidecars), is longer than a file name can be: it failed after the work, naming a
    temporary file."""
    from ..config import ConfigError
    from ..io import NAME_MAX
    from ..provenance import SUFFIX

    beside = (p.with_suffix(s).name + ("" if s == ".json" else SUFFIX) for s in sidecars)  # (a settings record
    names = [p.name + SUFFIX, *beside]  # gets no manifest of its own)
    longest = max(names, key=lambda n: len(n.encode()))
    if len(longest.encode()) > NAME_MAX:
        over = len(longest.encode()) - NAME_MAX
        raise ConfigError(
            f"the file name {p.name[:40]}... is too long by {over} bytes for {longest[-30:]!r} written beside it "
            f"(a name holds at most {NAME_MAX} bytes); choose a shorter one"
        )


def _check_output_dir_path(p: Path) -> None:
    """The nearest existing ancestor of ``p`` must be a writable folder (created folders go under it)."""
    q = p
    while not q.exists():
        if q.is_symlink():  # (a folder made there would fail with "already exists", after the work)
            from ..config import ConfigError

            raise ConfigError(f"{q} is a symbolic link to {os.readlink(q)}, which does not exist")
        if q.parent == q:
            return
        q = q.parent
    if not q.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(q))
    if not os.access(q, os.W_OK | os.X_OK):
        err = os.statvfs(q)
        if err.f_flag & os.ST_RDONLY:
            raise OSError(30, "Read-only file system", str(q))
        raise PermissionError(13, "Permission denied", str(q))
    from ..io import check_creatable

    check_creatable(q)  # a folder that takes no new files (/proc) is refused now, not at the first write


def new_or_empty_folder(path: str | Path, own: tuple[str, ...] = (), config_type: type | None = None) -> Path:
    """``path`` for a command that writes a whole run folder from scratch and does not resume (train-autoencoder,
    train-clip): new, empty, or holding a run of the same command that ended before its end (:func:`unfinished_run`;
    :func:`start_over` removes it under the run lock); a ConfigError (one line) when it holds anything else -
    another run would be overwritten - and RunFolderBusy when a run of it is training there now."""
    from ..config import ConfigError
    from ..training.runlock import RunLock

    p = check_output_dir(path)
    if p.is_dir() and any(p.iterdir()):
        if unfinished_run(p, own, config_type) is None:
            raise ConfigError(f"{p} is not empty; give a new or empty folder with --out")
        with RunLock(p):  # a run that is still training holds it: RunFolderBusy, one line
            pass
    return p


def unfinished_run(folder: Path, own: tuple[str, ...], config_type: type | None) -> list[Path] | None:
    """The files of a run that a command writing ``own`` (its run folder's names, the one it writes last at the
    end) left when it ended before that end - killed, so its own clean-up never ran: only names of ``own`` (the
    last one absent), its run lock and temporary files of those names, with a config.json of ``config_type``'s
    fields (or, killed before it wrote that, the lock file alone). None when the folder holds anything else, or
    nothing."""
    import dataclasses
    import json

    from ..io import TMP_MARK
    from ..training.runlock import LOCK_NAME

    if not own or config_type is None or not folder.is_dir():
        return None
    files = list(folder.iterdir())
    temporary = lambda f: f.name.startswith(".") and TMP_MARK in f.name and f.name[1:].split(TMP_MARK)[0] in own
    if not files or (folder / own[-1]).exists():
        return None
    if not all(f.is_file() and (f.name in own or f.name == LOCK_NAME or temporary(f)) for f in files):
        return None
    if not (folder / "config.json").exists():  # killed before it wrote its config: its lock file, nothing else
        return files if all(f.name == LOCK_NAME or temporary(f) for f in files) else None
    try:
        doc = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    fields = {f.name for f in dataclasses.fields(config_type)}
    return files if isinstance(doc, dict) and set(doc) == fields else None


@contextmanager
def fresh_run_folder(path: str | Path, own: tuple[str, ...], config_type: type) -> Iterator[Path]:
    """The run folder of a command that writes it whole and does not resume (train-autoencoder, train-clip; checked
    first by :func:`new_or_empty_folder`), as :func:`output_folder` gives it and held by the run lock: what a killed
    run of the command left is removed first (:func:`start_over`); Ctrl-C or a failure in the block removes the
    files of ``own`` again - the folder was empty, so it is left empty."""
    from ..training.runlock import RunLock

    with output_folder(path) as out, RunLock(out):
        start_over(out, own, config_type)
        try:
            yield out
        except BaseException:
            for name in own:
                (out / name).unlink(missing_ok=True)
            raise


def start_over(folder: Path, own: tuple[str, ...], config_type: type | None) -> None:
    """Under the run lock: remove what a run of this command that ended before its end left in ``folder``
    (:func:`unfinished_run`), saying so; the run starts again from the beginning."""
    from ..training.runlock import LOCK_NAME

    left = [f for f in unfinished_run(folder, own, config_type) or [] if f.name != LOCK_NAME]
    if left:
        for f in left:
            f.unlink(missing_ok=True)
        names = ", ".join(sorted(f.name for f in left))
        print(f"{folder} held a run that ended before it finished ({names}): starting it again", file=sys.stderr)


@contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """Checked output folder (see :func:`check_output_dir`) that is removed again, with the folders created for
    it, when the block fails while it is still empty - a refused command leaves nothing behind."""
    p = check_output_dir(path)
    created = []
    q = p
    while not q.exists() and q.parent != q:
        created.append(q)
        q = q.parent
    try:
        yield p
    except BaseException:
        for d in created:  # deepest first (those already removed, e.g. by the run lock, skipped); stops at the
            if not d.is_dir():  # first folder that holds something
                continue
            try:
                d.rmdir()
            except OSError:
                break
        raise
