"""The studio's web application: a thin FastAPI shell over the command line's own commands (sample, inpaint,
outpaint, img2img, interpolate, explain), run one at a time by the worker of jobs.py, their sampler steps
streamed to the page as server-sent events.

    app = create_app("runs", token=None, allow_train=False)      # uvicorn.run(app, host="127.0.0.1", port=8765)

Every parameter goes through the command's argparse parser and the config validation (params.py): a refused
value is a 400 with the CLI's one line; a path outside the runs root, a hidden file or a bad upload is a 400
(security.py); an unknown run or job a 404; a full queue a 429. An unexpected error is logged and answered
500 - the fuzz test checks that none happens.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from .jobs import Job, JobQueue, QueueFull
from .params import COMMANDS, ParamError, command_parser, parse_command, precheck
from .runs import data_example, details, list_runs, read_object
from .security import (
    LOCAL_HOSTS,
    MAX_BODY_BYTES,
    TOKEN_HEADER,
    TOKEN_PARAM,
    PathRefused,
    decode_data_url,
    decode_upload,
    resolve_under,
    run_name,
    token_ok,
)
from .training import Trainer

log = logging.getLogger("torchdiffusion.studio")
STATIC = Path(__file__).parent / "static"
SERVED = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".json": "application/json",
    ".mp4": "video/mp4",
    ".csv": "text/csv; charset=utf-8",  # a table run's samples
    ".txt": "text/plain; charset=utf-8",  # a sequence run's
}
MAX_UPLOADS = 8  # pictures in one request
KEEP_UPLOADS = 200  # saved uploads per run folder (oldest removed)
EVENT_SECONDS = 1800  # an event stream ends after this
EVENT_POLL = 0.04  # seconds between looks at a job's state


class Forbidden(Exception):
    """An action the studio was not started for (training without --allow-train): 403."""


def jsonable(obj):
    """``obj`` with every non-finite float written as a string ("inf", "nan"): JSON has no such numbers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def describe(e: BaseException) -> str | None:
    """One line for a failure the user can act on (the CLI's rules), None for a bug."""
    from ..cli import classify

    known = classify(e)
    return known[0] if known else None


def relative_paths(line: str | None, root: Path) -> str | None:
    """A message with the runs folder's paths written relative to it (the page names runs so; the server's own
    folders are not the page's business)."""
    return line.replace(f"{root}/", "") if line else line


def create_app(
    root: str | Path, *, token: str | None = None, allow_train: bool = False, max_pending: int = 32
) -> FastAPI:
    """The studio over the run folders under ``root``; ``token`` (when not None) is required on every request."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"runs folder {root} does not exist")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.queue = JobQueue(lambda e: relative_paths(describe(e), root), max_pending=max_pending)
        yield
        await asyncio.to_thread(app.state.queue.close)  # cancel and wait: no half-written file
        await asyncio.to_thread(app.state.trainer.close)  # SIGTERM: each trainer checkpoints

    app = FastAPI(title="torchdiffusion studio", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.root, app.state.token, app.state.allow_train = root, token, allow_train
    app.state.trainer = Trainer(root)
    _guard(app)
    _errors(app)
    _pages(app)
    _run_routes(app)
    _job_routes(app)
    _train_routes(app)
    return app


def _guard(app: FastAPI) -> None:
    """Host check on 127.0.0.1 (against DNS rebinding), the token elsewhere, same-origin writes (against
    cross-site requests), and the request size limit."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        token = app.state.token
        if token is None and request.url.hostname not in LOCAL_HOSTS:
            return JSONResponse({"error": "the studio answers only at 127.0.0.1 or localhost"}, status_code=403)
        given = (
            request.query_params.get(TOKEN_PARAM)
            or request.headers.get(TOKEN_HEADER)
            or request.cookies.get(TOKEN_PARAM)
        )
        if not token_ok(token, given):
            return JSONResponse({"error": "access token missing or wrong (see the studio's start line)"}, 401)
        origin = request.headers.get("origin")
        if request.method != "GET" and origin and urlsplit(origin).netloc != request.headers.get("host"):
            return JSONResponse({"error": "cross-site requests are refused"}, status_code=403)  # CSRF
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            return JSONResponse({"error": f"request body over {MAX_BODY_BYTES // 2**20} MB"}, status_code=413)
        response = await call_next(request)
        if token is not None and request.query_params.get(TOKEN_PARAM) == token:
            response.set_cookie(TOKEN_PARAM, token, httponly=True, samesite="strict")
        return response


def _errors(app: FastAPI) -> None:
    def one_line(e: BaseException) -> str:
        from ..cli import first_line

        return relative_paths(first_line(e), app.state.root)[:500]

    @app.exception_handler(QueueFull)
    async def busy(request: Request, e: QueueFull):
        return JSONResponse({"error": one_line(e)}, status_code=429)

    @app.exception_handler(FileNotFoundError)
    async def not_found(request: Request, e: FileNotFoundError):
        return JSONResponse({"error": one_line(e)}, status_code=404)

    @app.exception_handler(ValueError)  # ParamError, ConfigError, RunError, PathRefused, UploadRefused, ...
    async def refused(request: Request, e: ValueError):
        return JSONResponse({"error": one_line(e)}, status_code=400)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, e: Forbidden):
        return JSONResponse({"error": one_line(e)}, status_code=403)

    @app.exception_handler(OSError)  # what the CLI says of it: a path (400) or a refusal of the machine (507)
    async def os_error(request: Request, e: OSError):
        known = relative_paths(describe(e), app.state.root) or one_line(e)
        return JSONResponse({"error": known}, status_code=507 if "space" in known or "quota" in known else 400)

    @app.exception_handler(ClientDisconnect)  # the browser went away mid-request: nobody to answer, nothing wrong
    async def gone(request: Request, e: ClientDisconnect):
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.exception("studio: unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(e).__name__})"}, status_code=500)


async def read_json(request: Request) -> dict:
    """The request body as a JSON object, read up to MAX_BODY_BYTES (also without a Content-Length). The content
    type must say JSON: a cross-site form cannot send that without the browser asking first."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ParamError("send the body as application/json")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ParamError(f"request body over {MAX_BODY_BYTES // 2**20} MB")
    try:
        data = json.loads(bytes(body) or b"{}")
    except (ValueError, RecursionError):
        raise ParamError("the request body is not JSON") from None
    if not isinstance(data, dict):
        raise ParamError("the request body must be a JSON object")
    return data


def refuse_unread(body: dict, keys: set[str], what: str) -> None:
    """A 400 naming the first key of ``body`` the route does not read (a misspelt key is never dropped)."""
    unknown = sorted(set(body) - keys)
    if unknown:
        takes = f"takes {', '.join(sorted(keys))}" if keys else "takes no keys"
        raise ParamError(f"unknown key {unknown[0]!r}; {what} {takes}")


def _pages(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info():
        from .. import __version__
        from ..presets import PRESETS
        from ..samplers import SAMPLERS, sampler_settings

        samplers = {name: sampler_settings(name) for name in SAMPLERS}
        return jsonable(
            {
                "version": __version__,
                "root": app.state.root.name,
                "samplers": samplers,
                "presets": list(PRESETS),
                "allow_train": app.state.allow_train,
                "commands": list(COMMANDS),
            }
        )

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)


def _run_routes(app: FastAPI) -> None:
    root = app.state.root

    @app.get("/api/runs")
    def runs():
        return {"runs": list_runs(root)}

    @app.get("/api/run")
    def run(name: str = ""):
        return jsonable(details(root, name))

    @app.get("/api/example")
    def example(run: str = "", index: str = "0"):
        if not (index.isascii() and index.isdigit()) or int(index) > 10**7:  # ASCII: "１" is a digit to isdigit
            raise ParamError(f"index: expected a non-negative integer, got {index[:20]!r}")
        return Response(data_example(root, run, int(index)), media_type="image/png")

    @app.get("/api/file")
    def file(path: str = "", download: str = ""):
        p = resolve_under(root, path)
        if p.suffix.lower() not in SERVED:
            raise PathRefused(f"only {', '.join(SERVED)} files are served")
        if not p.is_file():
            raise FileNotFoundError(f"no file {path!r} under the runs folder")
        name = p.name if download else None
        return FileResponse(p, media_type=SERVED[p.suffix.lower()], filename=name)


def decode_upload_png(data_url, what: str) -> bytes:
    """A data-URL picture decoded with limits and encoded as PNG (a mask: its alpha, or its grey levels)."""
    import io

    img = decode_upload(decode_data_url(data_url))
    if what == "mask":  # white (or painted, opaque) = repaint
        img = img.getchannel("A") if "A" in img.getbands() else img.convert("L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def upload_path(run_dir: Path, data: bytes, what: str) -> Path:
    """Where a decoded upload is kept: RUN/studio/uploads/<what>-<sha256>.png (the same picture, the same file)."""
    return run_dir / "studio" / "uploads" / f"{what}-{hashlib.sha256(data).hexdigest()[:20]}.png"


def save_upload(path: Path, data: bytes) -> bool:
    """Write an upload at ``path`` unless it is there already (then False); keep the KEEP_UPLOADS newest."""
    from ..io import atomic_write

    if path.is_file():
        return False
    atomic_write(path, data)
    olds = sorted(path.parent.glob("*.png"), key=lambda p: p.stat().st_mtime)
    for p in olds[: max(0, len(olds) - KEEP_UPLOADS)]:
        p.unlink(missing_ok=True)
    return True


MAX_NAME_CHARS = 200  # an upload's file name as the page sends it


def upload_names(images, names) -> list[str]:
    """What a refusal calls each uploaded image: the file name the page sends for it (``names``, one per image:
    the file the user picked), else its place in the request ("uploaded image 2") - never the studio's own copy
    under RUN/studio/uploads, which the user has never seen."""
    count = len(images) if isinstance(images, list) else 0
    if names is None:
        return [f"uploaded image {k}" for k in range(1, count + 1)]
    if not isinstance(names, list) or len(names) != count or not all(isinstance(n, str) for n in names):
        raise ParamError(f"names: one file name per uploaded image ({count} in this request)")
    for n in names:
        if not 0 < len(n) <= MAX_NAME_CHARS or any(ord(ch) < 32 or ord(ch) == 127 for ch in n):
            raise ParamError(f"names: a file name of at most {MAX_NAME_CHARS} characters, no control characters")
    return names


def _uploads(body: dict, run_dir: Path) -> tuple[dict[Path, bytes], dict, dict[Path, str]]:
    """The request's pictures decoded in memory (nothing written yet): their path -> PNG bytes, the ``files``
    parse_command passes on as --images and --mask, and the name each image's path is shown by (upload_names)."""
    images, mask = body.get("images"), body.get("mask")
    takes = command_parser(body["command"])._option_string_actions
    for key, value in (("images", images), ("mask", mask)):
        action = takes.get(f"--{key}")
        if value is not None and (action is None or action.type is not None):  # explain's --images is a count
            raise ParamError(f"{body['command']} takes no uploaded {key}")
    if images is not None and (not isinstance(images, list) or not 1 <= len(images) <= MAX_UPLOADS):
        raise ParamError(f"images: a list of 1 to {MAX_UPLOADS} data: URLs")
    shown = upload_names(images, body.get("names"))
    pictures, files, names = {}, {}, {}
    if images is not None:
        files["images"] = []
        for im, name in zip(images, shown):
            data = decode_upload_png(im, "image")
            files["images"].append(upload_path(run_dir, data, "image"))
            pictures[files["images"][-1]] = data
            names[files["images"][-1]] = name
    if mask is not None:
        data = decode_upload_png(mask, "mask")
        files["mask"] = upload_path(run_dir, data, "mask")
        pictures[files["mask"]] = data
    return pictures, files, names


def _out_suffix(command: str, run_dir: Path) -> str:
    """What a job writes: a PNG, but the rows of a table run's samples (CSV) and the lines of a sequence run's
    (text), which ``sample`` draws as a PNG beside them (the picture the page shows)."""
    if command != "sample":
        return ".png"
    kind = (read_object(run_dir / "run.json") or {}).get("kind")  # (load_run says what is wrong with a bad one)
    return {"table": ".csv", "sequence": ".txt"}.get(kind, ".png")


JOB_KEYS = frozenset({"command", "run", "params", "what", "images", "names", "mask"})  # what POST /api/jobs reads


def new_job(root: Path, body: dict) -> Job:
    """A job from a request body {command, run, params, what?, images?, names?, mask?}, validated now."""
    unknown = sorted(set(body) - JOB_KEYS)
    if unknown:
        raise ParamError(f"unknown key {unknown[0]!r}; a job takes {', '.join(sorted(JOB_KEYS))}")
    command = body.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        raise ParamError(f"command: one of {', '.join(COMMANDS)}")
    name = run_name(body.get("run"))
    run_dir = resolve_under(root, name)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"no run named {name!r} under the runs folder")
    params = body.get("params", {})
    if command != "explain" and "what" in body:
        raise ParamError(f"unknown key 'what' for {command}; only explain takes one")
    what = body.get("what") if command == "explain" else None
    job = Job(command=command, label=name, work=lambda: [])
    stem = f"{command}-{what}-{job.id}" if what else f"{command}-{job.id}"
    out = run_dir / "studio" / f"{stem}{_out_suffix(command, run_dir)}"
    # everything that can be checked is checked before an upload is written, and a refusal after that (the check
    # of a painted mask reads its file) removes what this request wrote: a refused request leaves nothing
    parse_command(command, run_dir, params, out=out, what=what)
    pictures, files, names = _uploads(body, run_dir)
    args = parse_command(command, run_dir, params, out=out, what=what, files=files)
    folders = {d for path in pictures for d in path.parents if run_dir in d.parents and not d.exists()}
    written = [path for path, data in pictures.items() if save_upload(path, data)]
    try:
        precheck(args, run_dir, names)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for d in sorted(folders, key=lambda d: len(d.parts), reverse=True):  # the folders it made (studio/uploads)
            with suppress(OSError):  # (one a job of another request has written into since: kept)
                d.rmdir()
        raise

    def work() -> list[str]:
        from ..provenance import recording

        module = COMMANDS[command]
        if getattr(module, "MANIFESTS", False):  # as the CLI does: a manifest beside each file written
            with recording(command, args.argv):
                module.run(args)
        else:
            module.run(args)
        return [p.relative_to(root).as_posix() for p in sorted(out.parent.glob(f"{stem}.*")) if p.suffix in SERVED]

    job.work = work
    return job


def _job_routes(app: FastAPI) -> None:
    @app.post("/api/jobs", status_code=202)
    async def submit(request: Request):
        body = await read_json(request)
        job = await asyncio.to_thread(new_job, app.state.root, body)
        app.state.queue.submit(job)
        return job.public(app.state.queue.position(job))

    @app.get("/api/jobs")
    def queue():
        return app.state.queue.snapshot()

    def find(job_id: str) -> Job:
        job = app.state.queue.get(job_id)
        if job is None:
            raise FileNotFoundError(f"no job {job_id[:20]!r}")
        return job

    @app.get("/api/jobs/{job_id}")
    def status(job_id: str, preview: str = ""):
        job = find(job_id)
        out = job.public(app.state.queue.position(job))
        if preview:
            out["preview"] = job.preview
        return out

    @app.post("/api/jobs/{job_id}/cancel")
    async def cancel(job_id: str, request: Request):
        if await request.body():  # the page sends {}: a key in it would be one this route does not read
            refuse_unread(await read_json(request), set(), "a cancel")
        find(job_id)
        job = app.state.queue.cancel(job_id)
        return job.public(app.state.queue.position(job))

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request):
        job = find(job_id)
        return StreamingResponse(_event_stream(app, job, request), media_type="text/event-stream")


async def _event_stream(app: FastAPI, job: Job, request: Request):
    """Server-sent events: one ``data:`` line per preview (every step's, unless the client lags more than
    RECENT_PREVIEWS behind; each with the step, steps and sigma it was taken at) and per change of state, until
    the job ends, the client leaves, or EVENT_SECONDS pass. A terminal state (done, failed, cancelled) is sent
    once, in the last message, after every preview: the page stops reading at the first message that carries
    one. The worker thread changes the job while this reads it, so ``done`` is read before the state and the
    previews: once it is seen, both are complete."""
    seq, sent, t_end = -1, 0, time.monotonic() + EVENT_SECONDS
    while time.monotonic() < t_end:
        if job.seq != seq:
            seq = job.seq
            done = job.done
            state = job.public(app.state.queue.position(job))
            new = [entry for entry in list(job.recent) if entry[0] > sent]
            running = {**state, "state": "running"} if done else state  # a preview was taken while running
            for k, preview, at in new:  # each at the step it was taken at, however late the stream reads it
                sent = k
                yield f"data: {json.dumps({**running, **at, 'preview': preview, 'preview_index': k})}\n\n"
            if not new or done:
                yield f"data: {json.dumps(state)}\n\n"
            if done:
                return
        elif await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL)


def _train_routes(app: FastAPI) -> None:
    def allowed() -> Trainer:
        if not app.state.allow_train:
            raise Forbidden("training from the studio is off; start it with --allow-train")
        return app.state.trainer

    @app.get("/api/train")
    def trainings():
        return {"allowed": app.state.allow_train, "trainings": app.state.trainer.all()}

    @app.post("/api/train", status_code=202)
    async def start(request: Request):
        trainer = allowed()
        body = await read_json(request)
        name = await asyncio.to_thread(trainer.start, body)
        return trainer.status(name)

    @app.post("/api/train/stop")
    async def stop(request: Request):
        trainer = allowed()
        body = await read_json(request)
        refuse_unread(body, {"name"}, "a stop")
        return await asyncio.to_thread(trainer.stop, run_name(body.get("name")), 60.0)
