"""``torchdiffusion studio RUNS --check``: start the studio on a free 127.0.0.1 port, list the runs, sample 4 images
of the first ready image run through the HTTP API with a progress bar fed by the job's event stream, print the
files it wrote, and stop - the studio end to end, in seconds, as a command (the CLI tests run it)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

CHECK_IMAGES = 4
START_SECONDS = 60


def _get(url: str, data: dict | None = None, timeout: float = 60):
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


def refusal(e: urllib.error.HTTPError) -> str:
    """The server's one line of a refused request (the "error" of its JSON body), else the HTTP status."""
    try:
        reason = json.loads(e.read().decode())["error"]
    except (OSError, ValueError, KeyError, TypeError):
        reason = None
    return reason if isinstance(reason, str) and reason else f"HTTP {e.code} {e.reason}"


def _first_run(base: str) -> str:
    from ..generate import RunError

    with _get(base + "/api/runs") as r:
        runs = json.load(r)["runs"]
    ready = [r["name"] for r in runs if r["ready"] and r["kind"] in ("image", None) and len(r["data_shape"]) == 3]
    if not ready:
        raise RunError("no trained image run under the runs folder to check the studio with")
    return ready[0]


def _follow(base: str, job: dict) -> dict:
    """Read the job's server-sent events with a progress bar over its sampler steps; the final event."""
    from ..progress import step_bar

    last = job
    with _get(f"{base}/api/jobs/{job['id']}/events", timeout=600) as stream, step_bar(None, "studio check") as bar:
        for raw in stream:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            last = json.loads(line[5:])
            bar.n = last["steps"]
            bar.refresh()
            if last["state"] in ("done", "failed", "cancelled"):
                break
    return last


def check(root, create_app, uvicorn, bind, server) -> int:
    from ..generate import RunError
    from ..progress import release_bar_lock

    sock = bind("127.0.0.1", 0)
    srv = server(create_app(root), uvicorn)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, name="studio-server", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while not srv.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        name = _first_run(base)
        try:
            with _get(base + "/api/jobs", {"command": "sample", "run": name, "params": {"n": CHECK_IMAGES}}) as r:
                job = json.load(r)
        except urllib.error.HTTPError as e:  # a 400: the server's reason, and the run it was about
            raise RunError(f"studio check: sampling {name} was refused: {refusal(e)}") from None
        final = _follow(base, job)
        if final["state"] != "done":
            raise RunError(f"studio check: sampling {name} ended {final['state']}: {final.get('error')}")
        print(f"studio check: {name}: {final['steps']} steps streamed, {final['previews']} previews, wrote:")
        print("\n".join(str(root / f) for f in final["files"]))
    finally:
        # a stop raised while the check's bar was drawn leaves tqdm's lock held by this thread, and the server's
        # worker (a sample job draws a bar) would wait for it until the join below gives up
        release_bar_lock()
        srv.should_exit = True
        thread.join(120)
        sock.close()
    return 0
