"""The studio (torchdiffusion studio): paths stay under the runs root, parameters pass the CLI's own checks,
uploads are decoded with limits, the one worker runs and cancels jobs, a sampling job writes what `sample`
writes, and a fuzz of hostile requests gets no 5xx and touches nothing outside the root."""

import base64
import hashlib
import io
import json
import os
import struct
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the studio extra is not installed: pip install '.[studio]'")

from fastapi.testclient import TestClient  # noqa: E402

from tinyruns import write_run  # noqa: E402
from torchdiffusion.progress import observe_steps, step_bar  # noqa: E402
from torchdiffusion.studio.app import create_app  # noqa: E402
from torchdiffusion.studio.jobs import Job, JobQueue  # noqa: E402
from torchdiffusion.studio.params import ParamError, parse_command  # noqa: E402
from torchdiffusion.studio.security import PathRefused, UploadRefused, decode_upload, resolve_under  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """runs/ with a tiny 8x8 digits run (random weights) and, beside it, a sentinel folder outside the root."""
    top = tmp_path_factory.mktemp("studio")
    root = top / "runs"
    write_run(root / "tiny", "digits-test", ["sample.steps=4", "sample.n=4", "data.limit=64", "data.holdout=8"])
    (root / "notarun").mkdir()
    sentinel = top / "sentinel"
    sentinel.mkdir()
    (sentinel / "secret.txt").write_text("outside the runs root\n")
    (root / "escape").symlink_to(sentinel)
    (root / "tiny" / "inside").symlink_to(root / "tiny" / "config.json")
    return top


def png_bytes(size=(8, 8), mode="L", value=128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims width x height (a decompression bomb's header, a few bytes)."""
    data = png_bytes((1, 1))
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


# Paths


@pytest.mark.parametrize(
    "rel",
    ["../sentinel/secret.txt", "tiny/../../sentinel", "/etc/passwd", "~/x", "C:/x", "a\\..\\b", "tiny/\x00", "", "."]
    + ["escape/secret.txt", "tiny/.hidden", ".git/config", "x" * 600],
)
def test_paths_outside_the_root_or_hidden_are_refused(world, rel):
    with pytest.raises(PathRefused):
        p = resolve_under((world / "runs").resolve(), rel)
        assert p == (world / "runs").resolve()  # "." is the root itself: refused below as "give a path"
        raise PathRefused("root")


def test_paths_inside_the_root_resolve_there(world):
    root = (world / "runs").resolve()
    assert resolve_under(root, "tiny/config.json") == root / "tiny" / "config.json"
    assert resolve_under(root, "tiny//./inside") == root / "tiny" / "config.json"  # a symlink inside the root


# Parameters: the CLI's parser and bounds


def test_parameters_go_through_the_command_line_parser(world):
    run = world / "runs" / "tiny"
    args = parse_command("sample", run, {"sampler": "heun", "steps": 7, "n": 4, "eta": 0.5}, out=run / "x.png")
    assert (args.sampler, args.steps, args.n, args.setting_eta, args.out) == ("heun", 7, 4, "0.5", str(run / "x.png"))
    bad = [
        {"steps": 0},
        {"steps": "many"},
        {"steps": float("nan")},
        {"guidance": float("inf")},
        {"n": 10**12},
        {"n": 65},  # the studio's bound (the CLI allows a million)
        {"out": "/tmp/x.png"},
        {"classifier": "../x"},
        {"steps": True},
        {"steps": [1, 2]},
        {"nope": 1},
        {"--steps": 3},
        {"prompt": ["x" * 400]},
        {"seed": -1},
        {"set": "sample.n=200"},  # the studio's bounds hold through --set too
        {"set": ["sample.steps=100000"]},
        {"set": "sample.batch_size=1000"},
        {"sampler": "langevin", "set": "sample.settings.steps_per_level=10000"},
        # as a parameter too: the setting stayed text and passed the bound (a job that held the worker for good)
        {"sampler": "pc", "corrector_steps": 100000},
        {"sampler": "langevin", "steps_per_level": "1000000"},
        {"sampler": "pc", "corrector_steps": 21},
        {"save_tiff": True},  # a file the studio would not serve
        {"class": ""},  # an empty value is refused as the command line refuses it
        {"sampler": " "},
        {"guidance": 1e39},
    ]
    for params in bad:
        with pytest.raises(ParamError):
            parse_command("sample", run, params, out=run / "x.png")
    # the command's own checks of which options were given see them, as on the command line (they saw none)
    from torchdiffusion.commands.common import given_options

    args = parse_command("inpaint", run, {"steps": 5, "jump": 3}, out=run / "x.png")
    assert given_options(args) == {"steps": "--steps", "jump": "--jump", "out": "--out"}  # --out: the studio's
    with pytest.raises(ParamError):
        parse_command("inpaint", run, {"mask": "../../sentinel/m.png"}, out=run / "x.png")
    painted = {"mask": run / "studio" / "uploads" / "mask-0.png"}
    assert parse_command("inpaint", run, {}, out=run / "x.png", files=painted).mask == str(painted["mask"])
    with pytest.raises(ParamError, match="as a parameter and as an upload"):  # the spec was dropped for the picture
        parse_command("inpaint", run, {"mask": "centre"}, out=run / "x.png", files=painted)
    with pytest.raises(ParamError):
        parse_command("rm", run, {}, out=run / "x.png")
    # explain's list of schedule names and its --T reach the command as on the command line
    args = parse_command(
        "explain", run, {"schedules": ["linear", "cosine"], "T": 500}, out=run / "x.png", what="schedules"
    )
    assert (args.schedules, args.T) == (["linear", "cosine"], 500)
    for params in ({"schedules": [1, 2]}, {"schedules": ["--t", "3"]}, {"T": 10**6}, {"schedules": []}):
        with pytest.raises(ParamError):
            parse_command("explain", run, params, out=run / "x.png", what="schedules")


def test_every_option_naming_a_file_is_refused(world):
    """An option whose value could name a file or folder is refused unless it is known to name none: outpaint's
    --series read any file on the machine. Every free-text option of the studio's commands is sorted into
    params.BLOCKED or params.TEXT_OPTIONS; one that is not (a new option of the CLI) is refused."""
    import argparse

    from torchdiffusion.studio import params as studio_params

    run = world / "runs" / "tiny"
    outside = world / "sentinel" / "series.npy"
    for command, params in [
        ("outpaint", {"series": str(outside), "right": 4}),
        ("outpaint", {"series": "tiny/config.json"}),
        ("explain", {"data": str(outside)}),
        ("sample", {"classifier": "tiny"}),
    ]:
        with pytest.raises(ParamError, match="takes no parameter"):
            parse_command(command, run, params, out=run / "x.png", what="forward")
    for command in studio_params.COMMANDS:
        parser = studio_params.command_parser(command)
        for action in parser._actions:
            flags = set(action.option_strings)
            if flags and studio_params.takes_text(action):
                assert flags & (studio_params.BLOCKED | studio_params.TEXT_OPTIONS), (command, flags)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--reference", help="a picture to follow")  # a file option the studio has not sorted
    with pytest.raises(ParamError, match="takes no parameter 'reference'"):
        studio_params._option(parser, "reference")


# Uploads


def test_uploads_are_decoded_with_limits():
    assert decode_upload(png_bytes((5, 3))).size == (5, 3)
    for data in (bomb_png(100_000, 100_000), bomb_png(5000, 5000), b"\x89PNG\r\n\x1a\n" + b"0" * 50, b"GIF87a", b""):
        with pytest.raises(UploadRefused):
            decode_upload(data)
    noise = Image.frombytes("L", (64, 64), bytes(torch.randint(0, 256, (64 * 64,), dtype=torch.uint8).tolist()))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    with pytest.raises(UploadRefused):
        decode_upload(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated


# The worker


def fake_step(i, n=5):
    from torchdiffusion.types import StepInfo

    x = torch.zeros(2, 1, 4, 4)
    return StepInfo(i=i, n=n, sigma=1.0, sigma_next=0.5, x=x, denoised=x)


def test_observe_steps_sees_every_bar_step_and_can_stop_the_work():
    seen = []
    with observe_steps(lambda info: seen.append(info.i)), step_bar(3, show=False) as bar:
        for i in range(3):
            bar.step(fake_step(i))
    assert seen == [0, 1, 2]
    with step_bar(3, show=False) as bar:  # outside the block: no observer
        bar.step(fake_step(0))
    assert seen == [0, 1, 2]


def test_one_worker_runs_jobs_in_order_and_cancels_at_the_next_step():
    order, gate = [], threading.Event()

    def work(tag, steps):
        def run():
            with step_bar(steps, show=False) as bar:
                for i in range(steps):
                    gate.wait(5)
                    order.append(tag)
                    bar.step(fake_step(i, steps))
            return []

        return run

    q = JobQueue(lambda e: None)
    a = q.submit(Job(command="t", label="a", work=work("a", 3)))
    b = q.submit(Job(command="t", label="b", work=work("b", 1000)))
    c = q.submit(Job(command="t", label="c", work=work("c", 1)))
    time.sleep(0.1)
    assert q.position(b) == 0 and q.position(c) == 1  # a runs, b is next
    q.cancel(c.id)
    assert c.state == "cancelled" and q.position(c) is None
    gate.set()
    t0 = time.monotonic()
    while b.steps < 5 and time.monotonic() - t0 < 10:
        time.sleep(0.01)
    q.cancel(b.id)
    q.close(10)
    assert a.state == "done" and a.previews == 3 and b.state == "cancelled"
    assert order[:3] == ["a"] * 3 and "c" not in order and order.count("b") < 1000


def test_a_finished_job_is_never_still_named_running():
    """The job's last state and the queue's running slot change in one step: a client that sees the job finished
    and asks for the queue gets it idle. The test holds the queue's lock while the job returns, the moment a worker
    that set the state first and cleared the slot after would be caught between the two."""
    gate = threading.Event()
    q = JobQueue(lambda e: None)
    job = q.submit(Job(command="t", label="a", work=lambda: (gate.wait(5), [])[1]))
    t0 = time.monotonic()
    while job.state != "running" and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    with q.lock:
        gate.set()
        t0 = time.monotonic()
        while not job.done and time.monotonic() - t0 < 0.5:
            time.sleep(0.01)
        assert not job.done or q.snapshot()["running"] is None
    t0 = time.monotonic()
    while not job.done and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert job.state == "done" and q.snapshot() == {"running": None, "waiting": []}
    q.close(5)


# The app in-process


def client(root, **kw):
    return TestClient(create_app(root, **kw), base_url="http://127.0.0.1", raise_server_exceptions=False)


def wait_job(c, job_id, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        j = c.get(f"/api/jobs/{job_id}").json()
        if j["state"] in ("done", "failed", "cancelled"):
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_sampling_job_streams_previews_and_writes_what_sample_writes(world):
    root = world / "runs"
    with client(root) as c:
        r = c.post("/api/jobs", json={"command": "sample", "run": "tiny", "params": {"n": 4, "steps": 4, "seed": 3}})
        assert r.status_code == 202, r.text
        job = r.json()
        events = []
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as s:
            for line in s.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
        final = events[-1]
        assert final["state"] == "done", final
        assert [e["preview_index"] for e in events if "preview" in e] == [1, 2, 3, 4]  # every step, in order
        assert final["previews"] == 4 and final["steps"] == 4
        png = next(f for f in final["files"] if f.endswith(".png"))
        settings = c.get("/api/file", params={"path": png[: -len(".png")] + ".json"}).json()  # what `sample` writes
        assert settings["seeds"] == [3, 6] and settings["sample"]["steps"] == 4
        assert settings["files"][0] == Path(png).name
        manifest = c.get("/api/file", params={"path": png + ".manifest.json"}).json()  # provenance, as the CLI's
        assert png + ".manifest.json" in final["files"]
        data = c.get("/api/file", params={"path": png, "download": "1"}).content
        assert manifest["artefact"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["sampling"][0]["seeds"] == [[3, 6]] and manifest["sampling"][0]["steps"] == 4
        assert manifest["command"]["argv"][:2] == ["sample", str((root / "tiny").resolve())]
        img = Image.open(io.BytesIO(data))
        assert img.format == "PNG" and img.size[0] > 8
        # the same settings through the command line give the same picture
        from torchdiffusion.cli import main

        out = world / "cli.png"
        assert main(["sample", str(root / "tiny"), "--n", "4", "--steps", "4", "--seed", "3", "--out", str(out)]) == 0
        assert Image.open(out).tobytes() == img.tobytes()


def test_a_sampling_job_of_a_table_run_writes_its_rows_and_their_picture(tmp_path):
    """A table run's samples are rows (a CSV, as `sample` writes them) with their marginals drawn beside as the
    PNG the page shows; a trajectory is refused in the command's one line."""
    from tinyruns import cli

    rows = "\n".join(f"{(i % 3) + 0.1 * (i % 7):.2f},{-(i % 3):.1f},c{i % 3}" for i in range(90))
    (tmp_path / "t.csv").write_text("u,v,kind\n" + rows + "\n")
    settings = ["data.source=csv", f"data.path={tmp_path / 't.csv'}", "data.target=kind", "data.holdout=10"]
    settings += ["train.images=64", "model.mlp_width=16", "model.mlp_depth=1", "sample.steps=2", "sample.n=4"]
    root = tmp_path / "runs"
    rc, _, err = cli("train", "--preset", "table-iris", "--out", root / "table", "--no-progress",
                     *[f"--set={a}" for a in settings])  # fmt: skip
    assert rc == 0, err
    with client(root) as c:
        r = c.post("/api/jobs", json={"command": "sample", "run": "table", "params": {"n": 3}})
        assert r.status_code == 202, r.text
        final = wait_job(c, r.json()["id"])
        assert final["state"] == "done", final
        png = next(f for f in final["files"] if f.endswith(".png"))
        lines = (root / png).with_suffix(".csv").read_text().splitlines()
        assert lines[0] == "u,v,kind" and len(lines) == 4
        csv = (
            Path(png).with_suffix(".csv").as_posix()
        )  # the rows themselves: listed and served, not only their manifest
        assert csv in final["files"]
        r = c.get("/api/file", params={"path": csv})
        assert (
            r.status_code == 200 and r.text.splitlines() == lines and r.headers["content-type"].startswith("text/csv")
        )
        assert Image.open(root / png).format == "PNG"
        r = c.post("/api/jobs", json={"command": "explain", "run": "table", "what": "trajectory", "params": {}})
        assert r.status_code == 400 and "holds table data" in r.json()["error"], r.text  # refused, not a failed job


def test_a_sampling_option_the_kind_of_run_does_not_read_is_refused_before_the_job(tmp_path):
    """--gif or a guidance scale of a table run, --given of an image run: `sample` refuses them in one line
    (sample.refuse_options_of_other_kinds) once it has loaded the run; the studio answered 202 and the job failed.
    Now a 400 with the same line before any job."""
    root = tmp_path / "runs"
    write_run(root / "tiny", "digits-test", ["sample.steps=4"])
    write_run(root / "table", "digits-test", ["sample.steps=4"])  # run.json says table: the check reads it alone
    info = json.loads((root / "table" / "run.json").read_text())
    (root / "table" / "run.json").write_text(json.dumps({**info, "kind": "table", "data_shape": [3]}))
    with client(root) as c:
        for run, params, needle in [
            ("table", {"gif": True}, "--gif does not apply to table runs"),
            ("table", {"guidance": 2}, "--guidance does not apply to table runs"),
            ("tiny", {"given": "kind=c1"}, "--given fixes cells of a table; tiny holds image data"),
        ]:
            r = c.post("/api/jobs", json={"command": "sample", "run": run, "params": params})
            assert r.status_code == 400 and r.json()["error"] == needle, r.text
        assert not c.app.state.queue.jobs


@pytest.mark.parametrize("command", ["sample", "img2img", "inpaint", "outpaint"])
def test_a_class_without_training_examples_or_an_interval_off_the_grid_is_refused_before_the_job(tmp_path, command):
    """--class of a class no training example had (run.json: the data held classes 0-4 of the network's 10), and
    sample's guidance interval that holds no level of its grid: the commands refuse them in one line
    (common.refuse_untrained_classes, sample.refuse_interval_off_plan) once the run is loaded; the studio answered
    202 and the job failed, its upload kept. Now a 400 with the same line, nothing kept."""
    root = tmp_path / "runs"
    run = write_run(root / "cls", "digits-test", ["model.num_classes=10", "sample.steps=4"])
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "num_classes": 5}))
    extra = {"images": [data_url(png_bytes(value=90))]} if command != "sample" else {}
    sized = {"right": 2} if command == "outpaint" else {}
    cases = [({"class": "7"}, "--class 7: no training example had that class; the data of cls hold classes 0-4")]
    if command == "sample":
        cases.append(({"class": "3", "guidance": 2, "guidance_interval": "90,100"}, "holds no noise level of the"))
    with client(root) as c:
        for params, needle in cases:
            r = c.post("/api/jobs", json={"command": command, "run": "cls", "params": {**sized, **params}, **extra})
            assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert not c.app.state.queue.jobs
    assert not (run / "studio").exists()  # no upload, and no folder made for one


def _at(k: int) -> dict:
    """What Job.observe records beside the preview of step k of 4."""
    return {"steps": k, "step": [k, 4], "sigma": 4.0 - k}


class _FinishesWhileRead(Job):
    """A job the worker finishes between two reads of the event stream: the first ``public()`` sees it running
    at step 2, then step 3's preview lands and the job ends before the stream looks at the previews."""

    def public(self, position=None):
        state = super().public(position)
        if self.state == "running":
            self.recent.append((3, {"x": "c", "x0": "c"}, _at(3)))
            self.previews, self.state, self.seq = 3, "done", self.seq + 2
        return state


@pytest.mark.parametrize("race", [False, True], ids=["finished before the stream", "finishes while it reads"])
def test_the_event_stream_ends_with_one_final_state_after_every_preview(race):
    """The page stops at the first message with a final state, so a job that ended while previews were still
    unsent must get them first, each marked running, then exactly one final message."""
    import asyncio
    from types import SimpleNamespace

    from torchdiffusion.studio.app import _event_stream

    job = (_FinishesWhileRead if race else Job)(command="sample", label="tiny", work=lambda: [])
    job.recent.extend([(1, {"x": "a", "x0": "a"}, _at(1)), (2, {"x": "b", "x0": "b"}, _at(2))])
    job.previews, job.state, job.seq = 2, "running" if race else "done", 5
    job.steps, job.step, job.sigma = 4, (4, 4), 0.0  # the job has gone on past every preview the stream replays
    if not race:
        job.recent.append((3, {"x": "c", "x0": "c"}, _at(3)))
        job.previews = 3
    app = SimpleNamespace(state=SimpleNamespace(queue=SimpleNamespace(position=lambda j: None)))

    async def connected():
        return False

    async def collect():
        request = SimpleNamespace(is_disconnected=connected)
        return [json.loads(m[len("data: ") :]) async for m in _event_stream(app, job, request)]

    events = asyncio.run(asyncio.wait_for(collect(), 10))
    assert [e["preview_index"] for e in events if "preview" in e] == [1, 2, 3]
    # each replayed preview says the step it shows, not the step the job had reached when the stream read it
    assert [(e["steps"], e["step"], e["sigma"]) for e in events if "preview" in e] == [
        (k, [k, 4], 4.0 - k) for k in (1, 2, 3)
    ]
    final = [k for k, e in enumerate(events) if e["state"] in ("done", "failed", "cancelled")]
    assert final == [len(events) - 1], [e["state"] for e in events]  # one final state, the last message
    assert events[-1]["previews"] == 3


def test_inpaint_with_a_painted_mask_keeps_the_known_region(world):
    root = world / "runs"
    mask = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    mask.paste((255, 0, 0, 255), (0, 4, 8, 8))  # paint the lower half
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    with client(root) as c:
        for params in ({"run": "nope", "index": "0"}, {"run": "tiny", "index": "\uff11"}):  # a missing run, a "１"
            r = c.get("/api/example", params=params)
            assert r.status_code in (400, 404) and str(root) not in r.text, r.text  # no server path in the answer
        src = c.get("/api/example", params={"run": "tiny", "index": "2"}).content
        body = {"command": "inpaint", "run": "tiny", "params": {"steps": 3}, "images": [data_url(src)]}
        r = c.post("/api/jobs", json={**body, "mask": data_url(buf.getvalue())})
        assert r.status_code == 202, r.text
        final = wait_job(c, r.json()["id"])
        assert final["state"] == "done", final
        grid = Image.open(io.BytesIO(c.get("/api/file", params={"path": final["files"][0]}).content)).convert("L")
    rows = torch.from_numpy(np.asarray(grid, dtype=np.float32))
    scale = grid.size[0] // 12  # one 8x8 image, 2-pixel padding, upscaled
    tile = lambda r: rows[(2 + r * 10) * scale : (10 + r * 10) * scale : scale, 2 * scale : 10 * scale : scale]
    original, result = tile(0), tile(2)
    assert torch.equal(original[:4], result[:4])  # the unpainted (known) upper half is kept exactly
    assert not torch.equal(original[4:], result[4:])


def test_conditioning_the_run_does_not_take_is_refused_before_the_job(world):
    """--class on an unconditional run, a prompt to a run without text, a guidance scale with nothing to guide
    toward: a 400 with the CLI's one line, not a job accepted (202) that then fails."""
    with client(world / "runs") as c:
        for params, needle in [
            ({"class": 3}, "not class-conditional"),
            ({"prompt": "a"}, "not text-conditioned"),
            ({"guidance": 3}, "--guidance changes nothing: sample.guidance is read only by a class-"),
        ]:
            r = c.post("/api/jobs", json={"command": "sample", "run": "tiny", "params": {"steps": 2, **params}})
            assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert not c.app.state.queue.jobs  # no job was made


def test_guidance_interval_and_rescale_with_a_guidance_scale_pass_the_check_as_on_the_command_line(tmp_path):
    """The check before a job applies --guidance with --guidance-interval / --guidance-rescale as ``sample`` does
    (it refused them, reading the run's guidance 1); without a guidance scale they still change nothing."""
    from torchdiffusion.studio.params import precheck

    run = write_run(tmp_path / "runs" / "cls", "digits-test", ["model.num_classes=10", "sample.guidance=1.0"])
    out = run / "studio" / "x.png"
    for extra in ({"guidance_interval": "0.1,10"}, {"guidance_rescale": 0.5}):
        args = parse_command("sample", run, {"n": 4, "steps": 4, "class": "7", "guidance": 2, **extra}, out=out)
        precheck(args, run)  # accepted, as `sample RUN --class 7 --guidance 2 --guidance-interval 0.1,10` is
        args = parse_command("sample", run, {"n": 4, "steps": 4, "class": "7", **extra}, out=out)
        with pytest.raises(ValueError, match="changes nothing"):
            precheck(args, run)


def test_a_picture_or_mask_the_run_cannot_give_is_refused_before_the_job(world):
    """explain field of an image run, the table or volume forward process of one, a mask box outside its 8 x 8
    images: a 400 with the command's one line, not a job accepted (202) that then fails."""
    with client(world / "runs") as c:
        for body, needle in [
            ({"command": "explain", "what": "field"}, "the field picture needs a 2-D run"),
            ({"command": "explain", "what": "table-forward"}, "draws table data; tiny holds image data"),
            ({"command": "explain", "what": "volume-forward"}, "draws volume data"),
            ({"command": "explain", "what": "sequence-forward"}, "needs a masked-diffusion sequence run"),
            ({"command": "inpaint", "params": {"mask": "box:0,0,9,4"}}, "box"),
        ]:
            r = c.post("/api/jobs", json={"run": "tiny", **body})
            assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert not c.app.state.queue.jobs  # no job was made


def test_a_key_the_api_does_not_read_is_refused(world):
    """A misspelt top-level key ("param" for "params") was dropped: the job ran with defaults. A 400 naming it."""
    with client(world / "runs") as c:
        r = c.post("/api/jobs", json={"command": "sample", "run": "tiny", "param": {"steps": 2}})
        assert r.status_code == 400 and "unknown key 'param'" in r.json()["error"], r.text
        # 'what' is read by explain only: on another command it was dropped too
        r = c.post("/api/jobs", json={"command": "sample", "run": "tiny", "what": "x", "params": {"steps": 2}})
        assert r.status_code == 400 and "unknown key 'what'" in r.json()["error"], r.text
        assert not c.app.state.queue.jobs
        r = c.post("/api/jobs/nosuchjob/cancel", json={"force": True})
        assert r.status_code == 400 and "unknown key 'force'" in r.json()["error"], r.text
        assert c.post("/api/jobs/nosuchjob/cancel", json={}).status_code == 404  # the page sends {}: no key
        r = c.post("/api/train", json={"preset": "toy-2d", "name": "new", "epochs": 3})
        assert r.status_code == 403  # the training routes check their keys once training is allowed:
    with client(world / "runs", allow_train=True) as c:
        r = c.post("/api/train", json={"preset": "toy-2d", "name": "new", "epochs": 3})
        assert r.status_code == 400 and "unknown key 'epochs'" in r.json()["error"], r.text
        r = c.post("/api/train/stop", json={"name": "x", "foo": 1})
        assert r.status_code == 400 and "unknown key 'foo'" in r.json()["error"], r.text
        assert not (world / "runs" / "new").exists()


def test_an_upload_the_command_does_not_take_is_refused_before_anything_is_written(world):
    """explain's --images is a count, not files: the upload was saved, then refused with argparse's line about an
    integer. Now a 400 saying so and no file written; a refusal after the uploads are decoded leaves none either."""
    uploads = world / "runs" / "tiny" / "studio" / "uploads"
    before = sorted(uploads.glob("*")) if uploads.is_dir() else []
    picture = data_url(png_bytes(value=77))
    with client(world / "runs") as c:
        for body, needle in [
            ({"command": "explain", "what": "trajectory", "images": [picture]}, "explain takes no uploaded images"),
            ({"command": "sample", "mask": picture}, "sample takes no uploaded mask"),
            ({"command": "img2img", "images": [picture], "params": {"steps": 0}}, "--steps"),
            ({"command": "img2img", "images": [picture], "params": {"set": "sample.sampler=nope"}}, "nope"),
            (
                {
                    "command": "inpaint",
                    "images": [picture],
                    "mask": data_url(png_bytes(value=200)),
                    "params": {"set": "sample.sampler=nope"},
                },
                "nope",
            ),
        ]:
            r = c.post("/api/jobs", json={"run": "tiny", "params": {}, **body})
            assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert not c.app.state.queue.jobs
    assert (sorted(uploads.glob("*")) if uploads.is_dir() else []) == before


def test_messages_name_runs_relative_to_the_runs_folder(tmp_path):
    """A job's failure named the run by the server's absolute path ('editing needs an image run; /tmp/.../runs/toy
    holds vector data'); the page names runs relative to the runs folder, and so do the messages now."""
    root = tmp_path / "runs"
    write_run(root / "toy", "toy-2d", [], data_shape=(2,))
    with client(root) as c:
        r = c.post("/api/jobs", json={"command": "img2img", "run": "toy", "params": {"steps": 2}})
        assert r.status_code == 400, r.text  # refused before the job (it was a failed job)
        error = r.json()["error"]
    assert error == "editing needs an image run; toy holds vector data", error


@pytest.mark.parametrize("command", ["img2img", "inpaint", "outpaint"])
def test_an_edit_of_a_run_that_is_no_image_run_is_refused_and_leaves_no_upload(tmp_path, command):
    """An edit of a table or vector run with an uploaded picture was answered 202 and failed as a job, its upload
    kept in RUN/studio/uploads (docs/studio.md: a refused request leaves no upload behind); now a 400, nothing kept."""
    root = tmp_path / "runs"
    write_run(root / "toy", "toy-2d", [], data_shape=(2,))
    body = {"command": command, "run": "toy", "params": {"steps": 2}, "images": [data_url(png_bytes(value=90))]}
    if command == "inpaint":
        body["mask"] = data_url(png_bytes(value=255))
    with client(root) as c:
        r = c.post("/api/jobs", json=body)
        assert r.status_code == 400 and r.json()["error"] == "editing needs an image run; toy holds vector data", r.text
        assert not c.app.state.queue.jobs
    assert not (root / "toy" / "studio").exists()  # no upload, and no folder made for one


@pytest.mark.parametrize(
    "command, params",
    [
        ("img2img", {"strength": [0.5], "set": ["sample.guidance=2", "sample.guidance_interval=2,100"]}),
        ("img2img", {"strength": [1.0, 0.5], "set": ["sample.guidance=2", "sample.guidance_interval=2,100"]}),
        ("inpaint", {"set": ["sample.guidance=2", "sample.guidance_interval=90,100"]}),
        ("outpaint", {"right": 2, "set": ["sample.guidance=2", "sample.guidance_interval=90,100"]}),
    ],
)
def test_a_guidance_interval_off_the_walk_of_an_edit_is_refused_before_the_job(tmp_path, command, params):
    """A guidance interval holding no noise level the edit walks (img2img: the tail of the grid its strength keeps)
    was answered 202 and failed as a job, its upload kept; now a 400 with the command's one line, nothing kept."""
    root = tmp_path / "runs"
    write_run(root / "cls", "digits-test", ["model.num_classes=10", "sample.steps=4"])
    body = {"command": command, "run": "cls", "params": {"class": "3", **params}}
    body["images"] = [data_url(png_bytes(value=90))]
    with client(root) as c:
        r = c.post("/api/jobs", json=body)
        assert r.status_code == 400 and "sample.guidance_interval" in r.json()["error"], r.text
        assert "changes nothing" in r.json()["error"], r.text
        assert not c.app.state.queue.jobs
        if command == "img2img":  # walked at strength 1 (the whole grid): the strength that walks none is named
            assert "at --strength 0.5" in r.json()["error"], r.text
    assert not (root / "cls" / "studio").exists()  # no upload, and no folder made for one


def test_an_edit_with_a_guidance_interval_on_its_walk_passes_the_check(tmp_path):
    """The check before the job walks the grid the command walks: an interval holding a level of it is accepted."""
    from torchdiffusion.studio.params import precheck

    run = write_run(tmp_path / "runs" / "cls", "digits-test", ["model.num_classes=10", "sample.steps=4"])
    out = run / "studio" / "x.png"
    sets = ["sample.guidance=2", "sample.guidance_interval=0.001,100"]
    for command, extra in [("img2img", {"strength": [0.5]}), ("inpaint", {}), ("outpaint", {"right": 2})]:
        precheck(parse_command(command, run, {"class": "3", "set": sets, **extra}, out=out), run)
    precheck(parse_command("interpolate", run, {"method": "heun"}, out=out), run)  # its --method's grid


@pytest.mark.parametrize("command", ["sample", "img2img", "inpaint", "outpaint", "interpolate"])
def test_autoguidance_of_a_run_without_its_guide_model_is_refused_before_the_job(tmp_path, command):
    """sample.autoguidance on a run that was to keep a guide model (train.guide_at > 0) but has none yet (training
    stopped before guide_at) was answered 202 and failed as a job, its upload kept; now a 400 with the command's
    one line (generate.required_guide's), nothing kept. A run whose run.json records the guide passes."""
    from torchdiffusion.studio.params import precheck

    root = tmp_path / "runs"
    run = write_run(root / "early", "digits-test", ["train.guide_at=0.5", "sample.steps=4"])
    params = {"set": ["sample.autoguidance=2"], **({"right": 2} if command == "outpaint" else {})}
    body = {"command": command, "run": "early", "params": params}
    if command in ("img2img", "inpaint", "outpaint"):
        body["images"] = [data_url(png_bytes(value=90))]
    with client(root) as c:
        r = c.post("/api/jobs", json=body)
        assert r.status_code == 400 and "sample.autoguidance=2 needs the run's guide model" in r.json()["error"], r.text
        assert not c.app.state.queue.jobs
    assert not (run / "studio").exists()  # no upload, and no folder made for one
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "weights_sha256": {"guide.safetensors": "0" * 64}}))
    precheck(parse_command(command, run, params, out=run / "studio" / "x.png"), run)  # the guide is there


@pytest.mark.parametrize("command", ["sample", "img2img", "inpaint", "outpaint", "interpolate"])
@pytest.mark.parametrize(
    "run, params, needle",
    [
        ("cls", {"class": "3", "set": ["sample.guidance_rescale=0.5"]}, "--set sample.guidance_rescale=0.5 changes"),
        ("tiny", {"grid": "exponential", "set": ["sample.rho=3"]}, "--set sample.rho=3 changes nothing"),
        ("tiny", {"grid": "exponential", "rho": 3}, "--rho shapes the karras grid; this sampling uses the exp"),
        ("tiny", {"spacing": "leading"}, "--spacing places the uniform_t grid's timesteps"),
        ("tiny", {"sampler": "adaptive", "steps": 3}, "--steps changes nothing: the adaptive solver"),
        ("toy", {"set": ["sample.clip_denoised=false"]}, "--set sample.clip_denoised=false changes nothing"),
    ],
    ids=["rescale-at-guidance-1", "set-rho-off-karras", "rho-off-karras", "spacing", "adaptive-steps", "clip-toy"],
)
def test_settings_the_run_does_not_read_are_refused_before_the_job(tmp_path, command, run, params, needle):
    """A setting the run would not read (the command refuses it once it has loaded the run: a rescale at guidance
    1, --rho off the karras grid, --steps of the adaptive solver, clamping of vectors) was answered 202 and failed
    as a job, its upload kept; now a 400 with the command's one line, nothing kept. interpolate refuses a sampler
    and anything of a run that holds no images first, as its command does."""
    root = tmp_path / "runs"
    write_run(root / "tiny", "digits-test", ["sample.steps=4"])
    write_run(root / "cls", "digits-test", ["model.num_classes=10", "sample.steps=4"])
    write_run(root / "toy", "toy-2d", ["sample.steps=4"], data_shape=(2,))
    if command == "interpolate" and "class" in params:
        needle = "torchdiffusion interpolate takes no parameter 'class'"
    if command in ("img2img", "inpaint", "outpaint") and run == "toy":
        needle = "editing needs an image run; toy holds vector data"
    if command == "interpolate" and run == "toy":
        needle = "interpolate draws image rows; toy holds vector data"
    elif command == "interpolate" and "sampler" in params:
        needle = "--sampler changes nothing in interpolate"
    body = {"command": command, "run": run, "params": {**params, **({"right": 2} if command == "outpaint" else {})}}
    if command in ("img2img", "inpaint", "outpaint"):
        body["images"] = [data_url(png_bytes(value=90))]
    with client(root) as c:
        r = c.post("/api/jobs", json=body)
        assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert not c.app.state.queue.jobs
    assert not (root / run / "studio").exists()  # no upload, and no folder made for one


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"command": "img2img", "params": {"n": 3}}, "--n picks examples of the run's data; with --images the files"),
        ({"command": "inpaint", "params": {"jump": 3, "mask": "centre"}}, "--jump is RePaint's jump length"),
        ({"command": "outpaint", "params": {"right": 2, "samples": 3}}, "--samples is an option of the other kind"),
        ({"command": "outpaint", "params": {"right": 2, "index": 1}}, "--index picks examples of the run's data"),
        ({"command": "explain", "what": "forward", "params": {"steps": 3}}, "'explain forward' does not read --steps"),
        (
            {"command": "explain", "what": "trajectory", "params": {"set": "sample.batch_size=2"}},
            "--set sample.batch_size changes nothing: 'explain trajectory' draws its images in one batch",
        ),
    ],
    ids=["img2img-n", "inpaint-jump", "outpaint-signal-option", "outpaint-index", "explain-steps", "explain-batch"],
)
def test_an_option_the_command_does_not_read_is_refused_before_the_job(tmp_path, body, needle):
    """An edit's option that nothing reads (--n beside uploaded images, --jump without RePaint passes, a signal
    forecast's --samples when outpainting an image) and an option the explain picture does not read: the command's
    own refusals (inpaint.check_edit_options, outpaint.check_kind_options, explain.refuse_unread) were made only
    when the job ran (202, then failed, the upload kept); now a 400 with the same line, nothing kept."""
    root = tmp_path / "runs"
    write_run(root / "tiny", "digits-test", ["sample.steps=4"])
    if body["command"] != "explain":
        body = {**body, "images": [data_url(png_bytes(value=90))]}
    with client(root) as c:
        r = c.post("/api/jobs", json={"run": "tiny", **body})
        assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert not c.app.state.queue.jobs
    assert not (root / "tiny" / "studio").exists()  # no upload, and no folder made for one


def test_a_data_example_of_a_run_without_run_json_says_the_run_is_incomplete(tmp_path):
    """A run folder without run.json (still starting to train) was 'editing needs an image run; X holds image
    data'; now what sampling it says."""
    root = tmp_path / "runs"
    write_run(root / "new", "digits-test", [])
    (root / "new" / "run.json").unlink()
    with client(root) as c:
        r = c.get("/api/example", params={"run": "new", "index": "0"})
    assert r.status_code == 400 and r.json()["error"] == "new is not a complete run folder: run.json is missing", r.text


def test_studio_check_says_why_the_server_refused_and_which_run(tmp_path, capsys):
    """A 400 of the check's sampling request was 'studio check: ... HTTP Error 400: Bad Request': the server's
    reason and the run were lost."""
    from torchdiffusion.cli import main

    root = tmp_path / "runs"
    run = write_run(root / "odd", "digits-test", ["sample.steps=2"])
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "bogus_key": 1}))
    assert main(["studio", str(root), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "studio check: sampling odd was refused: " in err[0], err
    assert "bogus_key" in err[0] and "HTTP Error" not in err[0], err


def test_token_host_and_training_switch(world):
    root = world / "runs"
    with client(root, token="s3cret") as c:
        assert c.get("/api/runs").status_code == 401
        assert c.get("/api/runs", headers={"x-studio-token": "wrong"}).status_code == 401
        r = c.get("/", params={"token": "s3cret"})
        assert r.status_code == 200 and "studio" in r.text
        assert c.get("/api/runs").status_code == 200  # the cookie set by the first page load
    with client(root) as c:
        assert c.get("/api/runs", headers={"host": "evil.example:8765"}).status_code == 403  # DNS rebinding
        assert [r["name"] for r in c.get("/api/runs").json()["runs"]] == ["tiny"]
        assert c.post("/api/train", json={"preset": "toy-2d", "name": "t"}).status_code == 403
        job = {"command": "sample", "run": "tiny", "params": {"steps": 0}}
        assert c.post("/api/jobs", json=job, headers={"origin": "https://evil.example"}).status_code == 403  # CSRF
        assert c.post("/api/jobs", content=json.dumps(job), headers={"content-type": "text/plain"}).status_code == 400
        assert c.get("/static/app.js").status_code == 200 and c.get("/static/../app.py").status_code == 404


def snapshot(folder: Path, skip: Path) -> dict:
    out = {}
    for dirpath, _, filenames in os.walk(folder):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for f in filenames:
            p = Path(dirpath) / f
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def hostile_requests(rng) -> list[tuple[str, str, dict]]:
    """(method, path, kwargs) of malformed and hostile requests over every endpoint (>= 300)."""
    traversal = ["../sentinel/secret.txt", "/etc/passwd", "escape/secret.txt", "..%2fsentinel", "tiny/../../x", "\x00"]
    values = [0, -1, 10**30, 1e308, float("nan"), "nan", "inf", "", "x" * 5000, [], {}, None, True, [1] * 100, "-1"]
    keys = ["steps", "n", "seed", "guidance", "sampler", "eta", "batch_size", "class", "prompt", "strength", "mask"]
    keys += ["frames", "seeds", "left", "out", "images", "grid", "s_churn", "set", "index", "what", "__proto__"]
    uploads = [data_url(bomb_png(60000, 60000)), "data:image/png;base64,!!!", data_url(b"notapng"), 7, "x" * 10]
    reqs = []
    for t in traversal:
        reqs += [("GET", "/api/file", {"params": {"path": t}}), ("GET", "/api/run", {"params": {"name": t}})]
        reqs += [("GET", "/api/example", {"params": {"run": t, "index": "0"}})]
        reqs += [("POST", "/api/jobs", {"json": {"command": "sample", "run": t, "params": {}}})]
        reqs += [("POST", "/api/train", {"json": {"preset": "toy-2d", "name": t, "data": t}})]
        q = quote(t)
        reqs += [("GET", f"/static/{q}", {}), ("GET", f"/api/jobs/{q}", {}), ("POST", f"/api/jobs/{q}/cancel", {})]
    for command in (
        "sample",
        "inpaint",
        "outpaint",
        "img2img",
        "interpolate",
        "explain",
        "train",
        3,
        None,
        ["sample"],
        {"a": 1},
    ):
        for _ in range(25):
            params = {keys[int(rng.integers(len(keys)))]: values[int(rng.integers(len(values)))] for _ in range(2)}
            reqs.append(("POST", "/api/jobs", {"json": {"command": command, "run": "tiny", "params": params}}))
    for up in uploads:
        for command in ("inpaint", "img2img", "interpolate"):
            body = {"command": command, "run": "tiny", "params": {"steps": 2}, "images": [up], "mask": up}
            reqs.append(("POST", "/api/jobs", {"json": body}))
    bodies = [b"{", b"[]", b"null", b'"x"', b"\xff\xfe", b"{" * 10000, b'{"command": "sample"}' + b" " * 10]
    for b in bodies:
        for path in ("/api/jobs", "/api/train", "/api/train/stop"):
            reqs.append(("POST", path, {"content": b, "headers": {"content-type": "application/json"}}))
    reqs.append(("POST", "/api/jobs", {"content": b"x" * (13 * 2**20)}))  # over the body limit
    reqs.append(("POST", "/api/jobs", {"content": b"{}", "headers": {"content-length": "-5"}}))
    for q in ("index=-1", "index=1e9", "index=abc", "index=99999", "run=notarun&index=0", "run=tiny&index=999999"):
        reqs.append(("GET", "/api/example?" + q, {}))
    for name in ("notarun", "tiny/config.json", "", "a" * 300, "tiny\n"):
        reqs.append(("GET", "/api/run", {"params": {"name": name}}))
    valid = [{"command": "sample", "params": {"n": 1, "steps": 2}}, {"command": "explain", "what": "schedules"}]
    valid += [{"command": "interpolate", "params": {"frames": 2, "steps": 2}}]
    valid += [{"command": "img2img", "params": {"steps": 2, "strength": [0.5]}, "images": [data_url(png_bytes())]}]
    reqs += [("POST", "/api/jobs", {"json": {**v, "run": "tiny"}}) for v in valid * 3]
    for m, p in [("DELETE", "/api/jobs"), ("PUT", "/api/run"), ("GET", "/api/nothing"), ("GET", "/docs")]:
        reqs.append((m, p, {}))
    return reqs


def test_fuzz_hostile_requests_get_no_5xx_and_touch_nothing_outside_the_root(world, tmp_path, monkeypatch):
    root = world / "runs"
    monkeypatch.chdir(tmp_path)
    before = snapshot(world, skip=root) | snapshot(tmp_path, skip=root)
    reqs = hostile_requests(np.random.default_rng(0))
    assert len(reqs) >= 300
    codes = []
    with client(root) as c:
        for method, path, kw in reqs:
            if "json" in kw:  # NaN and infinities too, as Python's json writes them
                kw = {"content": json.dumps(kw["json"]), "headers": {"content-type": "application/json"}}
            codes.append(c.request(method, path, **kw).status_code)
        jobs = c.get("/api/jobs").json()
        t0 = time.monotonic()
        while (jobs["running"] or jobs["waiting"]) and time.monotonic() - t0 < 60:
            time.sleep(0.1)
            jobs = c.get("/api/jobs").json()
        internal = [j for j in c.app.state.queue.jobs.values() if (j.error or "").startswith("internal")]
    after = snapshot(world, skip=root) | snapshot(tmp_path, skip=root)
    touched = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    print(f"fuzz: {len(codes)} requests, {sum(c < 300 for c in codes)} 2xx, {sum(400 <= c < 500 for c in codes)} 4xx,")
    print(f"  {sum(c >= 500 for c in codes)} 5xx, {len(touched)} files outside the root touched")
    assert [c for c in codes if c >= 500] == [], sorted(set(codes))
    assert after == before  # nothing outside the runs root created or modified
    assert internal == []  # every job that failed failed with the CLI's one line
    assert sum(400 <= c < 500 for c in codes) >= 0.9 * len(codes)


def test_stopping_the_server_while_sampling_cancels_the_job_and_leaves_no_partial_file(world):
    root = world / "runs"
    with client(root) as c:
        r = c.post("/api/jobs", json={"command": "sample", "run": "tiny", "params": {"n": 64, "steps": 500}})
        job = c.app.state.queue.get(r.json()["id"])
        t0 = time.monotonic()
        while job.steps < 3 and time.monotonic() - t0 < 60:
            time.sleep(0.01)
        assert job.state == "running"
    # leaving the block is the server's shutdown: the job stops at its next step, the worker is joined
    assert job.state == "cancelled" and not c.app.state.queue.thread.is_alive()
    studio = root / "tiny" / "studio"
    assert not list(studio.glob(f"*{job.id}*")), list(studio.iterdir())  # no grid, no manifest
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]  # no half-written file


def test_trainings_are_checked_by_the_train_command_before_they_start(world):
    from torchdiffusion.config import ConfigError
    from torchdiffusion.studio.training import Trainer

    root = (world / "runs").resolve()
    t = Trainer(root)
    name, argv = t.argv({"preset": "toy-2d", "name": "new-run", "images": 1000})
    assert name == "new-run" and argv[:3] == ["--preset=toy-2d", "--set", "train.images=1000"]
    assert argv[argv.index("--out") + 1] == str(root / "new-run")
    refused = [
        ({"preset": "nope", "name": "x"}, ConfigError),
        ({"preset": "toy-2d", "name": "tiny"}, ParamError),  # exists already
        ({"preset": "toy-2d", "name": "../x"}, PathRefused),
        ({"preset": "toy-2d", "name": "x", "data": "escape"}, PathRefused),
        ({"preset": "toy-2d", "name": "x", "images": True}, ParamError),
        ({"preset": "toy-2d", "name": "x", "images": 0}, ParamError),
        ({"preset": "mnist-cpu-uncond", "name": "x", "data": "."}, ConfigError),  # the new run inside its data
        ({"preset": "toy-2d", "name": "x", "image": 1000}, ParamError),  # a key the trainer does not read
        ({"preset": "toy-2d", "name": "a/b/c"}, ParamError),  # deeper than the page lists runs
        ({"preset": "toy-2d", "name": "x", "data": "no-pictures"}, ParamError),  # started, then stopped at its data
    ]
    (root / "no-pictures").mkdir()
    (root / "no-pictures" / "notes.txt").write_text("no images here\n")
    try:
        for params, error in refused:
            with pytest.raises(error):
                t.argv(params)
    finally:
        (root / "no-pictures" / "notes.txt").unlink()
        (root / "no-pictures").rmdir()
    with client(root, allow_train=True) as c:
        r = c.post("/api/train", json={"preset": "toy-2d", "name": "x", "data": "../sentinel"})
        assert r.status_code == 400 and "'..'" in r.json()["error"]


def test_a_client_gone_mid_request_is_no_internal_error(world, caplog):
    """A browser that closes the connection while sending a body raised ClientDisconnect into the handler for
    unexpected errors (logged with a traceback as an internal error); it is answered quietly now."""
    import asyncio

    from starlette.requests import ClientDisconnect

    app = create_app(world / "runs")
    handler = app.exception_handlers[ClientDisconnect]
    with caplog.at_level("ERROR"):
        response = asyncio.run(handler(None, ClientDisconnect()))
    assert response.status_code == 499 and not caplog.records


def test_the_live_preview_shows_the_batch_being_sampled_as_the_docs_say(world):
    """docs/studio.md said the previews show the first 16 images; they show the batch being sampled (n 16 with
    batch 4: 4 images). The page shows the images at the step and sigma it names; the docs now say so."""
    docs = (Path(__file__).parents[1] / "docs" / "studio.md").read_text()
    assert "x̂₀ of the batch being sampled at every step, at most its first 16 images" in docs
    with client(world / "runs") as c:
        params = {"n": 8, "batch_size": 4, "steps": 2, "sampler": "euler"}
        r = c.post("/api/jobs", json={"command": "sample", "run": "tiny", "params": params})
        job = wait_job(c, r.json()["id"])
        assert job["state"] == "done" and job["previews"] == 4  # one per step of each batch
        preview = c.get(f"/api/jobs/{job['id']}?preview=1").json()["preview"]
    grid = Image.open(io.BytesIO(base64.b64decode(preview["x0"])))
    from torchdiffusion.viz import make_grid

    assert grid.size[::-1] == tuple(make_grid(torch.zeros(4, 1, 8, 8)).shape[:2])  # the 4 images of one batch


def scale_run(root: Path, depth: str) -> Path:
    """A data.scale run of a picture folder whose files stored ``depth`` pixels (run.json's stored_depth)."""
    run = write_run(root / "f16", "digits-test", ["data.source=folder", f"data.path={root}", "data.scale=minmax"])
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"].update(scale_lo=[0.0], scale_hi=[65535.0 if depth != "8-bit" else 255.0])
    (run / "config.json").write_text(json.dumps(cfg))
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "stored_depth": depth}))
    return run


@pytest.mark.parametrize("command", ["img2img", "inpaint", "outpaint", "interpolate"])
@pytest.mark.parametrize("named", [True, False])
def test_an_upload_of_another_bit_depth_than_a_scale_run_is_refused_before_the_job(tmp_path, command, named):
    """An 8-bit upload to an edit of a data.scale run of 16-bit pictures was answered 202, then the job failed
    naming the studio's own file ('f16/studio/uploads/image-....png holds 8-bit pixels') and the upload stayed.
    Now the command's own depth check refuses it before the job (a 400, nothing kept), naming the file as the user
    uploaded it (or its place in the request) and saying what to do: the studio keeps every upload as 8-bit."""
    root = tmp_path / "runs"
    run = scale_run(root, "16-bit or wider integer")
    deep = io.BytesIO()  # a 16-bit file, as the run's were: the studio keeps it as an 8-bit picture all the same
    Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(deep, format="PNG")
    ups = [deep.getvalue() if named else png_bytes(value=90), png_bytes(value=200)][
        : 2 if command == "interpolate" else 1
    ]
    body = {"command": command, "run": "f16", "params": {"steps": 2}, "images": [data_url(u) for u in ups]}
    if named:
        body["names"] = ["digit.png", "other.png"][: len(ups)]
    if command == "inpaint":
        body["mask"] = data_url(png_bytes(value=255))
    with client(root) as c:
        r = c.post("/api/jobs", json=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert not c.app.state.queue.jobs
    shown = "digit.png" if named else "uploaded image 1"
    kept = "(the studio keeps every upload as an 8-bit picture)"
    assert error.startswith(f"{shown} {kept} holds 8-bit pixels, and f16 maps the numbers stored in the 16-bit"), error
    assert "uploads/" not in error, error
    assert f"torchdiffusion {command} f16 --images" in error, error
    assert not (run / "studio").exists()  # no upload, and no folder made for one


def test_an_upload_to_a_scale_run_of_8_bit_pictures_passes_the_depth_check(tmp_path):
    """The studio's 8-bit uploads are the depth an 8-bit data.scale run maps: checked, and taken."""
    root = tmp_path / "runs"
    scale_run(root, "8-bit")
    body = {"command": "img2img", "run": "f16", "params": {"steps": 2}, "images": [data_url(png_bytes(value=90))]}
    with client(root) as c:
        r = c.post("/api/jobs", json={**body, "names": ["digit.png"]})
        assert r.status_code == 202, r.text
        assert wait_job(c, r.json()["id"])["state"] == "done"


@pytest.mark.parametrize(
    "names, needle",
    [
        (["a.png", "b.png"], "names: one file name per uploaded image"),
        ("a.png", "names: one file name per uploaded image"),
        ([7], "names: one file name per uploaded image"),
        (["a\nb.png"], "names: a file name of at most"),
    ],
)
def test_names_of_uploads_are_checked(tmp_path, names, needle):
    root = tmp_path / "runs"
    run = scale_run(root, "16-bit or wider integer")
    body = {"command": "img2img", "run": "f16", "images": [data_url(png_bytes(value=90))], "names": names}
    with client(root) as c:
        r = c.post("/api/jobs", json=body)
    assert r.status_code == 400 and needle in r.json()["error"], r.text
    assert not (run / "studio").exists()


@pytest.mark.parametrize(
    "command, params, uploads, needle",
    [
        (
            "img2img",
            {"class": "0,1"},
            1,
            "2 --class classes for 1 image: image k takes item k mod 2, so 1 would make "
            "none; upload at least 2 images or give fewer",
        ),
        ("inpaint", {"class": "0,1,2"}, 2, "3 --class classes for 2 images"),
        ("outpaint", {"class": "0,1", "right": 2}, 1, "2 --class classes for 1 image"),
        (
            "img2img",
            {"class": "0,1,2", "n": 2, "index": 3},
            0,
            "3 --class classes for 2 images: image k takes item "
            "k mod 3, so 1 would make none; ask for at least 3 images (--n) or give fewer",
        ),
        ("inpaint", {"class": ",".join("0" * 9)}, 0, "9 --class classes for 8 images"),  # the default n: at most 8
        ("sample", {"context": "1,0,0;0,1,0;0,0,1", "n": 2}, 0, "3 --context vectors for 2 images"),
        ("sample", {"context": "1,0", "n": 2}, 0, "a context vector has 2 entries; this model needs 3"),
        ("sample", {"context": "1,0,0", "negative_context": "1,0", "guidance": 2}, 0, "a context vector has 2"),
        (
            "sample",
            {"context": "1,0,0", "negative_context": "1,0,0;0,1,0;0,0,1", "n": 2, "guidance": 2},
            0,
            "3 --negative-context vectors for 2 images",
        ),
    ],
)
def test_more_conditioning_than_the_images_a_request_fixes_is_refused_before_the_job(
    tmp_path, command, params, uploads, needle
):
    """More classes than an edit's uploads (or its n examples of the run's data), more context vectors than a
    draw's images, or a context vector of the wrong length: the commands refuse them in one line (cond.cycled,
    cond.build_cond); the studio counted an edit's images as its classes and never checked contexts, so it answered
    202, the job failed and the uploads were kept. Now a 400 with the command's line, nothing kept."""
    root = tmp_path / "runs"
    run = write_run(root / "cc", "digits-test", ["model.num_classes=10", "model.context_dim=3", "sample.steps=4"])
    body = {"command": command, "run": "cc", "params": {"steps": 4, **params}}
    if uploads:
        body["images"] = [data_url(png_bytes(value=90 + k)) for k in range(uploads)]
    with client(root) as c:
        r = c.post("/api/jobs", json=body)
        assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert not c.app.state.queue.jobs
    assert not (run / "studio").exists()  # no upload, and no folder made for one


def test_a_context_to_a_run_that_takes_none_is_refused_before_the_job(world):
    """--context of a run without context vectors was accepted (202) and failed as a job; now the CLI's line, a 400."""
    with client(world / "runs") as c:
        for key, flag in (("context", "--context"), ("negative_context", "--negative-context")):
            r = c.post("/api/jobs", json={"command": "sample", "run": "tiny", "params": {"steps": 2, key: "1,0"}})
            needle = f"this model takes no context vectors (model.context_dim = 0); drop {flag}"
            assert r.status_code == 400 and r.json()["error"] == needle, r.text
        assert not c.app.state.queue.jobs


def test_an_edit_with_as_many_classes_as_images_passes_the_check(tmp_path):
    """The count an edit's classes are checked against is the images it makes: n, or at most 8 without it."""
    root = tmp_path / "runs"
    write_run(root / "cls", "digits-test", ["model.num_classes=10", "sample.steps=4"])
    from torchdiffusion.studio.params import precheck

    for params in ({"class": "0,1", "n": 2}, {"class": "0,1,2,3,4,5,6,7"}):
        args = parse_command("img2img", root / "cls", {"steps": 2, **params}, out=root / "cls" / "x.png")
        precheck(args, root / "cls")
