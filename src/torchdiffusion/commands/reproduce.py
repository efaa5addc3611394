"""torchdiffusion reproduce: run the command a manifest records again, and compare what it writes."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HELP = "regenerate an artefact from its manifest and report: bit-identical, identical, within tolerance, different"
EXAMPLES = """examples:
  torchdiffusion reproduce runs/demo/samples/grid.png.manifest.json
  torchdiffusion reproduce runs/demo/samples/grid.png.manifest.json --out again/   # keep the new files

Checks first that the run's config and weights still have the sha256 the manifest records, then runs the
recorded command (same working folder, same threads) with every file it writes sent to --out (default: a
temporary folder, removed afterwards), and compares the new artefact with the original: bit-identical bytes;
identical decoded content (PNG/GIF pixels, .npy arrays, JSON reports apart from timing fields); within the
tolerance (1 pixel level, 1e-4 for arrays, 1e-6 relative for report numbers); or different (exit code 1)."""

EXIT_DIFFERENT = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="a <artefact>.manifest.json written beside an artefact")
    p.add_argument("--out", help="folder for the regenerated files (default: a temporary folder, removed after)")


class Redirect:
    """A :class:`torchdiffusion.io.WriteWatcher` sending every write to ``out``: files of the artefact's folder
    flat into ``out``, any other file under ``out/elsewhere/<its absolute path>``; caches are left alone."""

    def __init__(self, out: Path, home: Path) -> None:
        from ..io import cache_dir

        self.out, self.home, self.cache = out, home, Path(os.path.abspath(cache_dir()))

    def route(self, path: Path) -> Path:
        from .argtypes import refuse_folder_record

        p = Path(os.path.abspath(path))
        if self.cache in p.parents:
            return path
        q = self.out / p.name if p.parent == self.home else self.out / "elsewhere" / p.relative_to(p.anchor)
        refuse_folder_record(q)  # --out may be any folder: never over the files a run folder is made of
        return q

    def written(self, path: Path, actual: Path) -> None:
        pass


def check_run(m: dict, where: Path) -> None:
    """The run the manifest names must still have the config and weights it records (sha256), and the files it read
    as inputs their recorded sha256, else refuse."""
    from ..config import ConfigError, from_json, validate
    from ..generate import load_run
    from ..interop.diffusers_in import is_diffusers_folder
    from ..interop.onnx import onnx_file
    from ..provenance import ManifestError, config_sha256, sha256_file

    for name, recorded in (m.get("inputs") or {}).items():  # the files it read: images, masks, CSVs, metrics
        if not Path(name).is_file():
            raise ManifestError(f"{name} is missing; the manifest needs it as an input (sha256 {recorded[:16]}...)")
        if sha256_file(name) != recorded:
            raise ManifestError(
                f"{name} has changed since {where.name} was written (sha256 differs from the recorded "
                f"{recorded[:16]}...); the artefact cannot be reproduced from it"
            )
    rec = m.get("run")
    if not rec:
        return
    run = Path(str(rec.get("path", "")))
    export = "diffusers folder" if is_diffusers_folder(run) else "ONNX export" if onnx_file(run) is not None else None
    if export is not None:  # its RunConfig is the one load_run resolves (diffusers configs, our exports' own)
        try:
            cfg = load_run(run).config
        except ValueError as e:
            raise ManifestError(f"{where}: the {export} it names no longer loads ({e})") from None
    elif not (run / "config.json").is_file():
        raise ManifestError(f"{where}: the run folder it names, {run}, is missing or is not a run folder")
    else:
        try:
            cfg = validate(from_json((run / "config.json").read_text()))
        except (ConfigError, UnicodeDecodeError) as e:
            raise ManifestError(f"{run / 'config.json'} is damaged: {e}") from None
    if rec.get("config_sha256") and config_sha256(cfg) != rec["config_sha256"]:
        raise ManifestError(f"{run / 'config.json'} has changed since {where.name} was written (config sha256 differs)")
    wname, recorded = rec.get("weights_file"), rec.get("weights_sha256")
    if wname and recorded:
        wfile = run / str(wname)
        if not wfile.is_file():
            raise ManifestError(f"{wfile} is missing; the manifest needs the weights with sha256 {recorded[:16]}...")
        if sha256_file(wfile) != recorded:
            raise ManifestError(
                f"{wfile} has changed since {where.name} was written (sha256 differs from the recorded "
                f"{recorded[:16]}...); the artefact cannot be reproduced from these weights"
            )


@contextlib.contextmanager
def recorded_setting(cwd: str, threads: int | None) -> Iterator[None]:
    """Inside the block: the recorded working folder and torch thread count (restored after)."""
    import torch

    old_cwd, old_threads = os.getcwd(), torch.get_num_threads()
    os.chdir(cwd)
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        torch.set_num_threads(old_threads)


def rerun(m: dict, out: Path, home: Path) -> int:
    """Run the recorded command line with its writes sent to ``out``; its exit code."""
    from ..cli import COMMANDS, build_parser, expand_home
    from ..io import watch_writes
    from ..provenance import ManifestError

    argv, cwd = m["command"]["argv"], str(m["command"].get("cwd") or ".")
    if not getattr(COMMANDS.get(argv[0]), "MANIFESTS", False):
        raise ManifestError(f"the manifest records 'torchdiffusion {argv[0]}', which reproduce cannot run")
    if not Path(cwd).is_dir():
        raise ManifestError(f"the folder the command ran in, {cwd}, no longer exists")
    with recorded_setting(cwd, (m.get("environment") or {}).get("threads")):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # the parser printed its one line
            return int(e.code or 2) if not isinstance(e.code, str) else 2
        expand_home(args)  # as the command line did
        # stdout is the verdict's; the command's own lines name the paths it was told, not where its files went
        with watch_writes(Redirect(out, home)), open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return int(args._run(args) or 0)


def environment_note(m: dict) -> str | None:
    """A line when this machine differs from the recorded one where bits may change (versions, device)."""
    from ..provenance import environment

    then, now = m.get("environment") or {}, environment((m.get("environment") or {}).get("device"))
    keys = ("torch", "numpy", "torchdiffusion", "platform", "device_name")
    changed = [f"{k} {then.get(k)} -> {now.get(k)}" for k in keys if then.get(k) != now.get(k)]
    return ("recorded elsewhere (" + "; ".join(changed) + "): bit-identity is not expected") if changed else None


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..provenance import artefact_digest, compare, read_manifest
    from .argtypes import check_output_dir
    from .sample import SIDECARS

    where = Path(args.manifest).expanduser()
    m = read_manifest(where)
    check_run(m, where)
    art = m["artefact"]
    written_at = Path(str(art.get("path") or where.parent / art["name"]))
    original = where.parent / art["name"]  # beside its manifest, wherever the two were moved
    # the artefact and what sample writes beside it land in --out (checked again at every write: Redirect.route)
    beside = (art["name"], *(Path(art["name"]).with_suffix(s).name for s in SIDECARS))
    if args.out:
        out = check_output_dir(args.out, writes=beside)
        here, olds = out.resolve(), {p.resolve() for p in (original, written_at)}
        if any(here in (p, p.parent) or p in here.parents for p in olds):
            raise ConfigError(  # the regenerated files over the old, or inside an original folder (an export)
                f"--out {args.out} holds the original {art['name']}: choose another folder for the new files"
            )
        from .argtypes import _ours

        def same_bytes(q: Path) -> bool:
            try:
                return artefact_digest(q)[0] == art["sha256"]
            except OSError:
                return False

        # replaced: a command's output (its manifest beside it), or an earlier reproduction - the artefact's bytes
        # again, with the files written beside it; anything else is the user's and stays
        again = os.path.lexists(out / art["name"]) and same_bytes(out / art["name"])
        taken = [name for name in beside if os.path.lexists(out / name) and not (again or _ours(out / name))]
        if taken:  # a folder artefact (an export) would replace whatever sits there - a run folder, say - whole
            raise ConfigError(
                f"--out {args.out} already holds {taken[0]}, which the regenerated {art['name']} would replace; "
                "choose an empty or new folder"
            )
    else:
        out = Path(tempfile.mkdtemp(prefix="torchdiffusion-reproduce-"))
    try:
        rc = rerun(m, out.resolve(), written_at.parent)
        if rc != 0:
            return rc
        new = Redirect(out.resolve(), written_at.parent).route(written_at)
        if not new.exists():
            print(f"{art['name']}: different (the command no longer writes it)")
            return EXIT_DIFFERENT
        note = environment_note(m)
        if m.get("stopped"):
            print(f"the command that wrote {art['name']} stopped before it finished ({m['stopped']})", file=sys.stderr)
        if note:
            print(note, file=sys.stderr)
        if not original.exists():
            same = artefact_digest(new)[0] == art["sha256"]
            verdict = "bit-identical (to the recorded sha256; the original is gone)" if same else "different"
            print(f"{art['name']}: {verdict}")
            return 0 if same else EXIT_DIFFERENT
        if artefact_digest(original)[0] != art["sha256"]:
            print(f"{original} changed after its manifest was written; comparing with it as it is now", file=sys.stderr)
        c = compare(original, new)
        print(f"{art['name']}: {c.verdict} ({c.detail})" + (f" -> {new}" if args.out else ""))
        return 0 if c.reproduced else EXIT_DIFFERENT
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
