"""torchdiffusion studio: a local web page over the run folders under RUNS_DIR - sample with a live view of x_t and
x0_hat, paint a mask and inpaint, outpaint, img2img, interpolate, explain pictures, and (with --allow-train)
start and stop trainings. The page runs the command line's own commands, one at a time (see studio/)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from .argtypes import int_in

HELP = "a local web page to sample, edit, explain and watch training (FastAPI; pip install '.[studio]')"
EXAMPLES = """examples:
  torchdiffusion studio runs --check          # start on a free port, sample once through the page's API, stop
Serve the page with 'torchdiffusion studio runs/ --port 8765' and open http://127.0.0.1:8765/ (Ctrl-C stops it;
a running job is cancelled at its next step and trainings are checkpointed). With --host other than 127.0.0.1
the start line prints a URL holding a random access token, required on every request. See docs/studio.md."""

LOCAL = ("127.0.0.1", "localhost")
CHECK_UNREAD = ("port", "host", "allow_train")  # options --check does not read


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="?", default="runs", help="folder holding the run folders (default: runs)")
    p.add_argument("--port", type=int_in(0, 65535), default=8765, help="TCP port (default 8765; 0 = any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; others need a token)")
    p.add_argument("--allow-train", action="store_true", help="let the page start and stop trainings")
    p.add_argument(
        "--check",
        action="store_true",
        help="start on a free 127.0.0.1 port, sample 4 images of the first run through the HTTP API "
        "(progress bar from the page's event stream), print the files, stop (it takes no --port, --host or "
        "--allow-train)",
    )


def _studio_modules():
    from ..extras import missing

    try:
        import uvicorn

        from ..studio.app import create_app
    except ImportError:
        raise ValueError(missing("studio", "torchdiffusion studio")) from None
    return uvicorn, create_app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the server starts (a port in use is one clear line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, e.strerror, f"{host}:{port}") from None
    except (socket.gaierror, UnicodeError):
        sock.close()
        raise ValueError(f"--host {host!r} is not an address of this machine") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def server(app, uvicorn):
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3, access_log=False)
    return uvicorn.Server(config)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..studio.security import new_token
    from .common import given_options

    root = Path(args.runs).expanduser()
    if args.check:  # the check serves itself on a free 127.0.0.1 port, without trainings: it reads none of these
        unread = [flag for dest, flag in given_options(args).items() if dest in CHECK_UNREAD]
        if unread:
            raise ConfigError(
                f"{', '.join(unread)} {'changes' if len(unread) == 1 else 'change'} nothing with --check: it serves "
                "itself on a free 127.0.0.1 port, without trainings"
            )
    if root.exists() and not root.is_dir():
        raise ConfigError(f"runs folder {root} is a file, not a folder")
    if not root.is_dir():
        raise ConfigError(f"runs folder {root} does not exist (train a run first: torchdiffusion train --out ...)")
    uvicorn, create_app = _studio_modules()
    if args.check:
        from ..studio.check import check

        return check(root, create_app, uvicorn, bind, server)
    token = None if args.host in LOCAL else new_token()
    sock = bind(args.host, args.port)
    app = create_app(root, token=token, allow_train=args.allow_train)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"studio: http://{shown}:{port}/" + (f"?token={token}" if token else "") + "  (Ctrl-C stops it)", flush=True)
    server(app, uvicorn).run(sockets=[sock])
    return 0
