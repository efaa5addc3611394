"""The command line: ``torchdiffusion <command> ...`` (also ``python -m torchdiffusion``).

A thin shell over the library: each command lives in ``commands/<name>.py`` with ``HELP`` (one line),
``EXAMPLES`` (shown by --help), ``add_arguments(parser)`` and ``run(args) -> int``. Bad input - a ValueError
such as ConfigError, DataError or RunError, or a missing file - prints one line on stderr and exits 2;
no traceback. Ctrl-C (SIGINT) or SIGTERM stops any command at any phase: one line, exit code 130 or 143
(see progress.py).
"""

from __future__ import annotations

import argparse
import sys

from .commands import (
    bench_samplers,
    bench_train,
    demo,
    evaluate,
    explain,
    guidance_sweep,
    img2img,
    inpaint,
    interpolate,
    outpaint,
    sample,
    train,
    train_classifier,
)

# One dict literal: command name -> module. Command modules import heavy things lazily inside run().
COMMANDS = {
    "bench-samplers": bench_samplers,
    "train": train,
    "sample": sample,
    "demo": demo,
    "train-classifier": train_classifier,
    "guidance-sweep": guidance_sweep,
    "inpaint": inpaint,
    "outpaint": outpaint,
    "img2img": img2img,
    "interpolate": interpolate,
    "explain": explain,
    "bench-train": bench_train,
    "evaluate": evaluate,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchdiffusion",
        description="Diffusion models in PyTorch: train, sample, steer, edit, measure and explain.",
        epilog="Run 'torchdiffusion <command> --help' for a command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, mod in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.HELP,
            epilog=mod.EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 with one line on bad flags
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from .progress import Stopped, close_bars, stop_on_signals

    try:
        with stop_on_signals():
            return int(args._run(args) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: stop now, one line, exit 128 + signal number
        close_bars()
        code = e.exit_code if isinstance(e, Stopped) else 130
        what = "SIGTERM" if code == 143 else "Ctrl-C"
        print(f"torchdiffusion {args.command}: stopped by {what}; no partial files were written", file=sys.stderr)
        return code
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"torchdiffusion {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        # Training failures (e.g. too many non-finite steps) are reported in one line with exit code 1.
        if type(e).__name__ == "TrainingError":
            print(f"torchdiffusion {args.command}: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
