"""The command line: ``torchdiffusion <command> ...`` (also ``python -m torchdiffusion``).

A thin shell over the library: each command lives in ``commands/<name>.py`` with ``HELP`` (one line),
``EXAMPLES`` (shown by --help), ``add_arguments(parser)`` and ``run(args) -> int``. A command that sets
``MANIFESTS = True`` runs inside ``provenance.recording``: each file it writes gets a manifest beside it.

Every failure the user can act on ends in one line on stderr, ``torchdiffusion <command>: error: ...``, and
one of the exit codes below - never a traceback. Under ``torchrun`` only rank 0 prints a bad value (every rank
sees the same one) and every rank exits with the same code; only ``DISTRIBUTED_COMMANDS`` run under it, any other
command is refused so. Only genuine bugs raise. Ctrl-C (SIGINT) or SIGTERM stops any command at any phase: one
line, exit code 130 or 143 (see progress.py).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import time

from .commands import (
    bench_samplers,
    bench_train,
    card,
    demo,
    distill,
    evaluate,
    explain,
    export,
    guidance_sweep,
    img2img,
    impute,
    inpaint,
    interpolate,
    outpaint,
    reproduce,
    sample,
    studio,
    train,
    train_autoencoder,
    train_classifier,
    train_clip,
)

# One dict literal: command name -> module. Command modules import heavy things lazily inside run().
COMMANDS = {
    "bench-samplers": bench_samplers,
    "train": train,
    "distill": distill,
    "sample": sample,
    "demo": demo,
    "train-classifier": train_classifier,
    "train-autoencoder": train_autoencoder,
    "train-clip": train_clip,
    "guidance-sweep": guidance_sweep,
    "inpaint": inpaint,
    "impute": impute,
    "outpaint": outpaint,
    "img2img": img2img,
    "interpolate": interpolate,
    "explain": explain,
    "bench-train": bench_train,
    "evaluate": evaluate,
    "reproduce": reproduce,
    "card": card,
    "export": export,
    "studio": studio,
}
# The commands that run under torchrun, one process per rank (distributed.py); every other one runs in one process
# and is refused under torchrun's WORLD_SIZE > 1, where each rank would run it whole into the same files
DISTRIBUTED_COMMANDS = ("train", "distill")


EXIT_OK = 0
EXIT_TRAINING = 1  # training ran but could not go on (e.g. every step non-finite)
EXIT_USAGE = 2  # bad input: a flag, a value, a file that is missing, damaged or of the wrong kind
EXIT_ENVIRONMENT = 3  # the system refused: disk full, read-only file system, permission denied, out of memory
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGTERM: 143)
EXIT_BROKEN_PIPE = 141  # stdout's reader went away (128 + SIGPIPE, as a shell reports a process SIGPIPE ended)

EXIT_CODES_HELP = (
    "exit codes: 0 done, 1 training could not go on (non-finite steps), 2 bad input (flag, value, file),\n"
    "  3 the system refused (disk full, read-only file system, permission denied, out of memory),\n"
    "  130 Ctrl-C, 143 SIGTERM, 141 stdout closed by its reader (quietly: '| head').\n"
    "  Every failure is one line on stderr: 'torchdiffusion <command>: error: ...'; nothing is left half-written."
)

# errno values that say "the machine refused", not "the input is wrong": EXIT_ENVIRONMENT
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device; free some space and run the command again",
    errno.EDQUOT: "disk quota exceeded; free some space and run the command again",
    errno.EROFS: "read-only file system; choose another output path",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large for this file system",
    errno.ENOMEM: "out of memory",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
}
# errno values of a path that is not what the command needs: EXIT_USAGE
_PATH_ERRNOS = {
    errno.ENOENT: "does not exist",
    errno.EISDIR: "is a folder where a file is expected",
    errno.ENOTDIR: "a part of the path is a file where a folder is expected",
    errno.EEXIST: "already exists",
    errno.ENOTEMPTY: "is a folder that is not empty",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many symbolic links",
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: ``torchdiffusion <command>: error: ...`` is the only stderr line."""

    def error(self, message: str):  # type: ignore[override]
        _print_error(f"{self.prog}: error: {message} (see '{self.prog} --help')", everywhere=False)
        raise SystemExit(EXIT_USAGE)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser. With ``only`` (a command name, or "" for none) the other commands are listed by name
    and help but get no arguments: all that parsing one command line needs, without the work (and the imports) of
    building every command's options."""
    parser = _Parser(
        prog="torchdiffusion",
        description="Diffusion models in PyTorch: train, sample, steer, edit, measure and explain.",
        epilog="Run 'torchdiffusion <command> --help' for a command's options and examples.\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    for name, mod in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.HELP,
            epilog=mod.EXAMPLES.rstrip() + "\n\n" + EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if only is None or only == name:
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _parser=p, _manifests=getattr(mod, "MANIFESTS", False))
    return parser


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


# How long a silent rank waits for rank 0 to print an error every rank meets alike (seconds; see _print_error)
QUIET_RANK_WAIT_S = 30.0


def _print_error(line: str, *, everywhere: bool, wait: bool = True) -> None:
    """One line on stderr: from rank 0 only, unless ``everywhere`` (a failure one rank may meet alone).

    A rank that stays silent does not exit at once: torchrun stops every worker as soon as one fails, so a silent
    rank that got there first would take rank 0 down before its line is out (seen on a loaded machine, where rank 0
    was still importing). It waits instead - rank 0, meeting the same error, exits non-zero within seconds and
    torchrun then ends this rank with SIGTERM, which ends the wait, not the rank - at most ``QUIET_RANK_WAIT_S``,
    and exits with the same code as rank 0 (only under torchrun, which sets ``TORCHELASTIC_RUN_ID``; a process with
    RANK set by other means exits at once). Not after a stop (``wait=False``): every rank was told to stop and each
    exits as soon as it has."""
    rank = _env_int("RANK", 0)
    if rank == 0:
        print(line, file=sys.stderr, flush=True)
    elif everywhere:
        print(f"{line} [rank {rank}]", file=sys.stderr, flush=True)
    elif wait and os.environ.get("TORCHELASTIC_RUN_ID"):  # a torchrun worker (the launcher sets it)
        _wait_for_rank_0(QUIET_RANK_WAIT_S)


class _WaitEnded(Exception):
    """torchrun's SIGTERM to a silent rank waiting in :func:`_wait_for_rank_0`."""


def _wait_for_rank_0(seconds: float) -> None:
    """Sleep ``seconds`` or until a SIGTERM (torchrun's, once rank 0 has exited): the rank then exits with the code
    it holds, rank 0's, instead of 143 as if it had been stopped."""

    def end(signum, frame):
        raise _WaitEnded

    try:
        before = signal.signal(signal.SIGTERM, end)
    except ValueError:  # not the main thread: no handler can be set here
        time.sleep(seconds)
        return
    try:
        time.sleep(seconds)
    except _WaitEnded:
        pass
    finally:
        signal.signal(signal.SIGTERM, before)


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


def describe_os_error(e: OSError) -> tuple[str, int]:
    """(one line, exit code) for an OSError: the path(s) it concerns and what went wrong."""
    names = [str(f) for f in (e.filename, e.filename2) if f is not None]
    where = " -> ".join(names)
    if e.errno in _ENVIRONMENT_ERRNOS:
        what, code = _ENVIRONMENT_ERRNOS[e.errno], EXIT_ENVIRONMENT
    elif e.errno in _PATH_ERRNOS:
        what, code = _PATH_ERRNOS[e.errno], EXIT_USAGE
    else:  # no errno (e.g. PIL's "cannot identify image file"): the message says it
        what, code = (e.strerror or first_line(e)), EXIT_USAGE
        if not names:
            return first_line(e), code
    return (f"{where}: {what}" if where else what), code


def _bad_file_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of readers fed a file of the wrong kind (random bytes, a pickle, a truncated header)."""
    import pickle
    import zipfile

    kinds: list[type[BaseException]] = [pickle.UnpicklingError, zipfile.BadZipFile, EOFError]
    try:
        from safetensors import SafetensorError

        kinds.append(SafetensorError)
    except ImportError:
        pass
    return tuple(kinds)


def expand_home(args: argparse.Namespace) -> None:
    """A path written ``~/...`` (quoted, so the shell left it) means the home folder for every option and argument,
    as it did for some: ``sample '~/runs/demo' --out '~/g.png'`` wrote into a folder named ``~`` here."""
    for k, v in vars(args).items():
        if k.startswith("_") or k in ("set", "prompt", "negative_prompt", "text"):
            continue
        if isinstance(v, str) and (v == "~" or v.startswith("~/")):
            setattr(args, k, os.path.expanduser(v))
        elif isinstance(v, list) and any(isinstance(w, str) and w.startswith("~/") for w in v):
            setattr(args, k, [os.path.expanduser(w) if isinstance(w, str) and w.startswith("~/") else w for w in v])


def classify(e: BaseException) -> tuple[str, int, bool] | None:
    """(message, exit code, print on every rank) for a failure the user can act on; None for a bug."""
    loop = sys.modules.get(f"{__package__}.training.loop")  # a TrainingError exists only once it is imported:
    TrainingError = loop.TrainingError if loop is not None else ()  # earlier failures are told without importing it

    ranks = sys.modules.get(f"{__package__}.distributed")
    if ranks is not None and isinstance(e, ranks.RankFailure):  # rank 0's failure, which rank 0 prints
        return first_line(e), e.exit_code, False
    if isinstance(e, (ValueError, *_bad_file_errors())):  # ConfigError, DataError, RunError, ...: bad input
        return first_line(e), EXIT_USAGE, False
    if isinstance(e, OSError):  # one rank may meet it alone - unless it says every rank meets it alike
        msg, code = describe_os_error(e)
        return msg, code, not getattr(e, "same_on_every_rank", False)
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return f"out of memory ({first_line(e)}); try a smaller batch size", EXIT_ENVIRONMENT, True
    if isinstance(e, TrainingError):
        return first_line(e), EXIT_TRAINING, False
    return None


def _stdout_gone() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as a process SIGPIPE ends, with stdout pointed at
    /dev/null so that Python's flush at exit says nothing ("Exception ignored ... BrokenPipeError")."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def run_script(main_fn, name: str | None = None, stopped: str | None = None) -> int:
    """A script's ``main()`` (scripts/) under the command line's contract: a failure the user can act on - a
    missing run, a value out of range, a damaged file (:func:`classify`) - is one line ``NAME: error: ...`` with
    its exit code, not a traceback; Ctrl-C ends with 130 (and the line ``stopped``, if given) and a closed stdout
    quietly with 141; a bug is raised."""
    from pathlib import Path

    name = name or Path(sys.argv[0]).name
    try:
        return int(main_fn() or 0)
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt:
        print(stopped or f"{name}: stopped by Ctrl-C", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        known = classify(e)
        if known is None:
            raise
        print(f"{name}: error: {known[0]}", file=sys.stderr)
        return known[1]


# options whose empty value is a value: the empty negative prompt, bench-samplers' "tune no sampler"
EMPTY_MEANS_NONE = {"negative_prompt", "tuned_samplers"}


def empty_option(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> str | None:
    """The first option given an empty string (alone or in a list) where no option takes one, or None; ``parser``:
    the command's (default: the one the command line recorded in ``args``)."""
    parser = parser or getattr(args, "_parser", None)
    for action in getattr(parser, "_actions", ()):
        if not action.option_strings or action.dest in EMPTY_MEANS_NONE:
            continue
        v = getattr(args, action.dest, None)
        if (isinstance(v, str) and not v.strip()) or (
            isinstance(v, list) and any(isinstance(x, str) and not x.strip() for x in v)
        ):
            return max(action.option_strings, key=len)
    return None


LISTING_FLAGS = ("list_presets", "list_samplers")  # print a list and exit: nothing else on the line is read


def listing_with_others(args: argparse.Namespace) -> str | None:
    """The one-line error for a listing flag (--list-presets, --list-samplers) given beside other options or a
    positional argument, which it would ignore; None otherwise."""
    from .commands.common import given_options

    listing = [d for d in LISTING_FLAGS if getattr(args, d, False)]
    if not listing:
        return None
    given = given_options(args)
    flag = given.get(listing[0], "--" + listing[0].replace("_", "-"))
    others = [opt for dest, opt in given.items() if dest not in listing]
    others += [
        str(getattr(args, a.dest))
        for a in getattr(args, "_parser", argparse.ArgumentParser())._actions
        if not a.option_strings and getattr(args, a.dest, None) not in (None, a.default, [])
    ]
    if not others:
        return None
    return f"{flag} lists and exits, reading no other argument; drop {', '.join(others)} (or run without {flag})"


def main(argv: list[str] | None = None) -> int:
    from .progress import Stopped, stop_on_signals

    try:
        with stop_on_signals():  # from the first moment: a stop while the command's modules load is one line too
            return _main(argv)
    except KeyboardInterrupt as e:  # a stop before the command's own handling below (parsing, loading)
        code = e.exit_code if isinstance(e, Stopped) else EXIT_INTERRUPTED
        what = "SIGTERM" if code == 143 else "Ctrl-C"
        _print_error(f"torchdiffusion: stopped by {what}", everywhere=False, wait=False)
        return code


def _main(argv: list[str] | None) -> int:
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    parser = build_parser(only=words[0] if words else "")  # the top level takes no option but -h: words[0] names it
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the command's own parser: 'torchdiffusion sample: error: ...'
            getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help (0) or a usage error (2, already printed as one line)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    if not getattr(args, "command", None):
        _print_error("torchdiffusion: error: give a command (see 'torchdiffusion --help')", everywhere=False)
        return EXIT_USAGE
    if args.command not in DISTRIBUTED_COMMANDS and _env_int("WORLD_SIZE", 1) > 1:  # torchrun's workers
        what = " and ".join(DISTRIBUTED_COMMANDS)
        _print_error(
            f"torchdiffusion {args.command}: error: {args.command} runs in one process: start it without torchrun "
            f"(only {what} run under torchrun)",
            everywhere=False,
        )
        return EXIT_USAGE
    from .commands.common import written_options

    args._written = written_options(args._parser, sys.argv[1:] if argv is None else list(argv))
    expand_home(args)
    alone = listing_with_others(args)
    if alone is not None:  # 'train --list-presets --preset x' listed and ignored the rest
        try:
            args._parser.error(alone)
        except SystemExit:
            return EXIT_USAGE
    empty = empty_option(args)
    if empty is not None:  # '--out ""', '--class ""': a value left empty by a script's unset variable, not a default
        try:
            args._parser.error(f"{empty} was given an empty value; leave the option out for its default, or give one")
        except SystemExit:
            return EXIT_USAGE
    from .heap import keep_freed_memory
    from .io import cache_dir
    from .progress import Stopped, close_bars, stop_on_signals
    from .provenance import recording

    keep_freed_memory()  # every command: freed tensors' memory is reused, not returned to the OS (heap.py)

    try:
        with stop_on_signals():
            cache_dir()  # a $TORCHDIFFUSION_CACHE that cannot be the cache folder is refused before any work
            if not args._manifests:
                return int(args._run(args) or 0)
            with recording(args.command, sys.argv[1:] if argv is None else list(argv)) as rec:
                rc = int(args._run(args) or 0)
                if rc != 0:  # its manifests say the command did not finish
                    rec.stopped = f"exit status {rc}"
            return rc
    except BrokenPipeError:
        close_bars()
        return _stdout_gone()
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: stop now, one line, exit 128 + signal number
        close_bars()
        code = e.exit_code if isinstance(e, Stopped) else EXIT_INTERRUPTED
        what = "SIGTERM" if code == 143 else "Ctrl-C"
        _print_error(
            f"torchdiffusion {args.command}: stopped by {what}; no partial files were written",
            everywhere=False,
            wait=False,
        )
        return code
    except Exception as e:
        known = classify(e)
        if known is None:
            raise
        msg, code, everywhere = known
        _print_error(f"torchdiffusion {args.command}: error: {msg}", everywhere=everywhere)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
