"""The studio in a real browser: Playwright drives Debian's Chromium (headless) against `torchdiffusion studio`
served by uvicorn on a free 127.0.0.1 port, over a tiny run trained here. Open the page, pick the run, sample
(the live preview updates at every step, then the grid), download the PNG and its manifest; paint a mask and
inpaint. With TORCHDIFFUSION_SCREENSHOTS=DIR each screen is saved as DIR/studio-<screen>.png (docs/studio.md)."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyruns import train_text_run
from torchdiffusion.cli import main

CHROMIUM = os.environ.get("TORCHDIFFUSION_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("TORCHDIFFUSION_SCREENSHOTS")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install '.[studio]'")
pytest.importorskip("fastapi", reason="the studio extra is not installed: pip install '.[studio]'")
if not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (make test does)", allow_module_level=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/digits: a tiny MNIST model trained for 128 images (seconds), or a copy of the MNIST run folder named by
    TORCHDIFFUSION_STUDIO_RUN (for screenshots of a model that draws digits)."""
    root = tmp_path_factory.mktemp("studio-browser") / "runs"
    given = os.environ.get("TORCHDIFFUSION_STUDIO_RUN")
    if given:
        shutil.copytree(given, root / "digits", ignore=shutil.ignore_patterns("checkpoints", "studio", "edits"))
        train_text_run(root / "text")
        return root
    sets = ["data.source=mnist5k", "data.limit=128", "data.holdout=16", "train.images=128", "train.batch_size=32"]
    sets += ["sample.steps=8", "sample.sampler=euler", "train.sample_every_images=0", "train.log_every_images=32"]
    args = [a for s in sets for a in ("--set", s)]
    assert main(["train", "--preset", "digits-test", *args, "--no-progress", "--out", str(root / "digits")]) == 0
    train_text_run(root / "text")  # a sequence run: the page offers it no sampler
    train_scaled_run(root / "scaled")
    latent_outline(root / "latent")
    return root


def latent_outline(folder: Path) -> Path:
    """What the page reads of a latent run (config.json, run.json): 1x8x8 images diffused as 2x4x4 latents."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"preset": "digits-test", "data": {"source": "folder"}}))
    info = {"data_shape": [2, 4, 4], "kind": "image", "image_shape": [1, 8, 8], "latents_of": {"relative": "ae"}}
    (folder / "run.json").write_text(json.dumps(info))
    return folder


def train_scaled_run(folder: Path) -> Path:
    """An 8-bit folder run whose pictures span 10..200, mapped to model units by data.scale=minmax (seconds)."""
    pictures = folder.parent.parent / "scaled-pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for k in range(32):
        Image.fromarray(rng.integers(10, 201, (8, 8), dtype=np.uint8)).save(pictures / f"{k:02d}.png")
    sets = ["data.source=folder", f"data.path={pictures}", "data.scale=minmax", "train.images=32"]
    sets += ["train.batch_size=32", "sample.steps=2", "train.sample_every_images=0"]
    args = [a for s in sets for a in ("--set", s)]
    assert main(["train", "--preset", "digits-test", *args, "--no-progress", "--out", str(folder)]) == 0
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(runs):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHDIFFUSION_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torchdiffusion", "studio", str(runs), "--port", str(port)]
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a pipe read only at the end can fill and block the server

    def output() -> str:
        log.flush()
        log.seek(0)
        return log.read()

    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        try:
            urllib.request.urlopen(url + "/api/info", timeout=2).close()
            break
        except OSError:
            assert proc.poll() is None, output()
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=60)
    out = output()
    assert proc.returncode == 143, out  # SIGTERM: a clean stop
    assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        pg.set_default_timeout(60_000)
        pg.goto(server + "/")
        pg.wait_for_selector("body[data-ready='1']")
        yield pg
        browser.close()


def wait_image(page, selector: str, status: str) -> None:
    """Until the job whose state the page shows in ``status`` has ended (it must end done: else the page's
    message is the failure) and the <img> shows a file of the studio (loaded, not just requested)."""
    page.wait_for_function(
        f"['done', 'cancelled'].includes(document.querySelector('{status}').textContent)"
        f" || document.querySelector('{status}').textContent.startsWith('failed')"
    )
    assert page.text_content(status) == "done", (page.text_content(status), page.text_content("#message"))
    # the header stops saying busy when the job ends, not at its next poll (every 2 s)
    page.wait_for_function("document.querySelector('#queue').textContent.startsWith('idle')", timeout=1000)
    page.wait_for_function(
        f"(() => {{ const i = document.querySelector('{selector}');"
        " return i.src.includes('/api/file') && i.complete && i.naturalWidth > 0; })()"
    )


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"studio-{name}.png"), full_page=True)


def test_runs_screen_shows_the_run(page):
    assert page.input_value("#run") == "digits"
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('mnist5k')")
    assert page.locator("#gallery img").count() >= 1  # the end-of-training grid
    shot(page, "runs")


def test_sample_with_live_preview_then_download_png_and_manifest(page, tmp_path):
    page.click("#tabs button[data-tab=sample]")
    page.fill("#sample-form input[name=steps]", "12")
    page.fill("#sample-form input[name=n]", "16")
    page.fill("#sample-form input[name=seed]", "5")
    seen = page.evaluate_handle(
        "() => { const s = new Set(); const img = document.querySelector('#preview-x0');"
        " new MutationObserver(() => s.add(img.src)).observe(img, {attributes: true}); return s; }"
    )
    page.click("#sample-btn")
    wait_image(page, "#result-img", "#job-status")
    previews = page.evaluate("(s) => s.size", seen)
    assert previews >= 3, previews  # the live view changed at least three times
    assert int(page.text_content("#preview-count")) == 12  # one preview per step
    assert page.text_content("#job-status") == "done"
    shot(page, "sample")
    with page.expect_download() as d:
        page.click("#download-png")
    png = tmp_path / d.value.suggested_filename
    d.value.save_as(png)
    with page.expect_download() as d:
        page.click("#download-json")
    manifest = json.loads(Path(d.value.path()).read_text())  # the provenance manifest beside the grid
    img = Image.open(png)
    assert img.format == "PNG" and img.size[0] >= 4 * 28
    assert manifest["artefact"]["name"] == png.name
    assert manifest["artefact"]["sha256"] == hashlib.sha256(png.read_bytes()).hexdigest()
    assert manifest["sampling"][0]["seeds"] == [[5, 20]] and manifest["sampling"][0]["steps"] == 12


def test_paint_a_mask_and_inpaint(page):
    page.click("#tabs button[data-tab=edit]")
    page.select_option("#edit-mode", "inpaint")
    page.fill("#edit-steps", "8")
    page.click("#edit-load")
    page.wait_for_selector("#edit-canvas[data-loaded='1']", state="attached")
    page.eval_on_selector("#brush-size", "(e) => { e.value = 4; }")
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + box["height"] * 0.75)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 10, box["y"] + box["height"] * 0.75, steps=30)  # across the lower half
    page.mouse.up()
    painted = page.evaluate(
        "() => { const c = document.querySelector('#mask-canvas'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let k = 3; k < d.length; k += 4) n += d[k] > 127;"
        " return n; }"
    )
    assert painted > 20, painted
    page.click("#edit-btn")
    wait_image(page, "#edit-result", "#edit-status")
    assert page.text_content("#edit-status") == "done"
    shot(page, "inpaint")
    src = page.get_attribute("#edit-result", "src")
    grid = np.asarray(Image.open(urllib.request.urlopen(page.url.rstrip("/") + src)).convert("L"), dtype=np.int16)
    s = grid.shape[1] // 32  # one 28x28 image per row, 2-pixel padding, upscaled by s
    rows = [
        grid[(2 + r * 30) * s : (30 + r * 30) * s : s, 2 * s : 30 * s : s] for r in range(3)
    ]  # original, input, result
    changed = np.abs(rows[0] - rows[2]) > 0
    assert changed.any() and not changed[:14].any()  # only the painted lower part was repainted


def test_explain_draws_a_trajectory(page):
    page.click("#tabs button[data-tab=explain]")
    page.select_option("#explain-what", "trajectory")
    page.fill("#explain-steps", "6")
    page.click("#explain-btn")
    page.wait_for_selector("#explain-out img")
    page.wait_for_function("[...document.querySelectorAll('#explain-out img')].every((i) => i.complete)")
    assert page.text_content("#explain-status") == "done"
    shot(page, "explain")


def test_a_sequence_run_is_sampled_without_sampler_controls(page):
    """A sequence takes its process's own reverse steps: the sampler, grid and compare controls are hidden (the
    command would refuse them), the rest samples it; back on the image run they are offered again."""
    page.click("#tabs button[data-tab=sample]")
    page.select_option("#run", "text")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('sequence')")
    assert page.locator("#sampler").is_hidden() and page.locator("#compare-btn").is_hidden()
    assert page.locator("#sample-form select[name=grid]").is_hidden()
    page.fill("#sample-form input[name=steps]", "4")
    page.fill("#sample-form input[name=n]", "3")
    page.evaluate("document.querySelector('#job-status').textContent = ''")  # not the last job's 'done'
    page.click("#sample-btn")
    wait_image(page, "#result-img", "#job-status")  # the text lines, drawn as a picture beside them
    page.select_option("#run", "digits")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('mnist5k')")
    assert page.locator("#sampler").is_visible() and page.locator("#compare-btn").is_visible()


def test_number_fields_take_every_value_the_command_line_takes(page):
    """The guidance field took only multiples of 0.1 (2.25 made the form invalid, so Sample did nothing) and the
    strength slider only multiples of 0.05; a field that takes reals takes any real."""
    for selector, value in (("#sample-form input[name=guidance]", "2.25"), ("#strength", "0.33")):
        valid = page.eval_on_selector(
            selector,
            "(e, v) => { e.value = v; const ok = e.checkValidity() && e.value === v; e.value = ''; return ok; }",
            value,
        )
        assert valid, selector
    assert page.eval_on_selector("#sample-form", "(f) => f.checkValidity()")


def test_empty_edit_fields_are_left_out_not_sent_as_zero(page):
    """An empty number field of the Edit tab leaves its parameter out (the command's default), as the Sample form
    does; it was sent as 0 (an empty frames field: 'argument --frames: ... got 0', an empty margin: 0)."""
    page.click("#tabs button[data-tab=edit]")
    page.select_option("#run", "digits")
    page.click("#edit-load")
    page.wait_for_function("state.source !== null")
    for field in ("#edit-steps", "#frames", "#out-right", "#seed-a", "#seed-b"):
        page.eval_on_selector(field, "(e) => { e.dataset.was = e.value; e.value = ''; }")
    try:
        page.select_option("#edit-mode", "interpolate")
        assert page.evaluate("editRequest().params") == {}  # the command's own steps, seeds and frames
        page.select_option("#edit-mode", "outpaint")
        params = page.evaluate("editRequest().params")
        assert "right" not in params and "steps" not in params and params["bottom"] == 8, params
    finally:
        for field in ("#edit-steps", "#frames", "#out-right", "#seed-a", "#seed-b"):
            page.eval_on_selector(field, "(e) => { e.value = e.dataset.was; }")
        page.select_option("#edit-mode", "inpaint")


def type_into(page, selector: str, text: str) -> None:
    """Type ``text`` into a field as a person does (a number field keeps text it cannot read: its badInput)."""
    page.focus(selector)
    page.keyboard.press("Control+A")
    page.keyboard.press("Backspace")
    page.keyboard.type(text)


def refused_without_a_job(page, button: str, status: str) -> str:
    """Press ``button`` and return the page's message; no job may have been sent (``status`` stays empty)."""
    page.evaluate(
        f"document.querySelector('#message').textContent = ''; document.querySelector('{status}').textContent = ''"
    )
    page.click(button)
    page.wait_for_function("document.querySelector('#message').textContent !== ''")
    assert page.text_content(status) == "", page.text_content(status)
    return page.text_content("#message")


def test_text_that_is_no_number_in_a_number_field_is_refused_not_dropped(page):
    """'1e' typed into the Edit tab's steps ('-' into its seed, '1e' into frames) read as an empty field: the
    parameter was left out and the job ran with the command's default and said done. The Edit and Explain
    controls are in no form the browser checks, and Compare bypasses the Sample form's check: each says so now."""
    page.click("#tabs button[data-tab=edit]")
    page.select_option("#run", "digits")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('mnist5k')")
    page.click("#edit-load")
    page.wait_for_function("state.source !== null")
    cases = [("inpaint", "#edit-steps", "1e", "steps"), ("inpaint", "#edit-seed", "-", "seed")]
    cases += [("interpolate", "#frames", "1e", "frames"), ("interpolate", "#seed-b", "-", "seed B")]
    cases += [("outpaint", "#out-left", "1e", "left")]
    for mode, field, text, name in cases:
        page.select_option("#edit-mode", mode)
        was = page.input_value(field)
        type_into(page, field, text)
        assert page.eval_on_selector(field, "(e) => e.validity.badInput"), field
        assert refused_without_a_job(page, "#edit-btn", "#edit-status") == f"{name}: not a number"
        page.fill(field, was)
    page.select_option("#edit-mode", "inpaint")
    page.click("#tabs button[data-tab=explain]")
    page.select_option("#explain-what", "trajectory")
    type_into(page, "#explain-steps", "1e")
    assert refused_without_a_job(page, "#explain-btn", "#explain-status") == "steps: not a number"
    page.fill("#explain-steps", "12")
    page.click("#tabs button[data-tab=sample]")
    type_into(page, "#sample-form input[name=steps]", "-")
    assert refused_without_a_job(page, "#compare-btn", "#job-status") == "steps: not a number"
    page.fill("#sample-form input[name=steps]", "12")


def test_explain_sends_steps_only_to_the_pictures_that_read_them(page):
    """An empty steps field was sent as 0 ('argument --steps: must be an integer in [1, 100000], got 0'), and the
    field showed for pictures that never send it."""
    page.click("#tabs button[data-tab=explain]")
    for what in ("forward", "schedules", "loss"):
        page.select_option("#explain-what", what)
        assert page.locator("#explain-steps").is_hidden(), what
        assert page.evaluate("explainRequest().params") == {}, what
    for what in ("trajectory", "field"):  # the sampler's steps; the field's Heun paths
        page.select_option("#explain-what", what)
        assert page.locator("#explain-steps").is_visible(), what
        page.fill("#explain-steps", "")
        assert page.evaluate("explainRequest().params") == {}, what  # the run's own steps
        page.fill("#explain-steps", "6")
        assert page.evaluate("explainRequest().params") == {"steps": 6}, what
    page.fill("#explain-steps", "12")
    page.select_option("#explain-what", "trajectory")


def test_the_loss_by_noise_level_plot_names_the_unit_of_its_buckets(page, runs):
    """The unit of the buckets ('t' for a discrete run) is in the first metrics row only: the plot read the latest
    and labelled every run's buckets 'sigma'. It is run.json's."""
    unit = json.loads((runs / "digits" / "run.json").read_text())["loss_by_sigma"]["unit"]
    rows = [json.loads(line) for line in (runs / "digits" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_by_sigma" in r]
    assert len(rows) > 1 and "loss_by_sigma_unit" not in rows[-1]  # the case: the latest row does not say it
    page.click("#tabs button[data-tab=runs]")
    page.select_option("#run", "digits")
    labels = page.evaluate(
        "async () => { const ctx = document.querySelector('#sigma-plot').getContext('2d'), seen = [];"
        " const f = ctx.fillText; ctx.fillText = function (t, ...a) { seen.push(t); return f.call(this, t, ...a); };"
        " try { await loadRun(); } finally { ctx.fillText = f; } return seen; }"
    )
    assert f"noise-level bucket ({unit})" in labels, labels


def test_uploading_a_file_that_is_no_picture_says_so_in_one_line(page, tmp_path):
    """A text file named .png threw an uncaught error and the page said nothing."""
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.click("#tabs button[data-tab=edit]")
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture\n")
    page.set_input_files("#edit-file", str(fake))
    page.wait_for_function("document.querySelector('#message').textContent !== ''")
    assert page.text_content("#message") == "notes.png is not a picture the page can read"
    assert not errors, errors
    page.set_input_files("#edit-file", [])


def test_an_uploaded_picture_is_sent_as_its_file_and_shown_as_the_command_reads_it(page, runs, tmp_path):
    """A 40 x 10 upload was stretched to the run's 28 x 28 by the page and that canvas sent; the command line
    scales to cover and centre-crops the file. Now the file itself is sent, and the canvas the mask is painted on
    shows what the command reads (its middle: black here; the stretched picture was white on the right)."""
    import base64

    from torchdiffusion.data import read_image

    picture = tmp_path / "wide.png"
    a = np.zeros((10, 40), np.uint8)
    a[:, 28:] = 255  # white only outside (and 3 columns off) the 10 middle columns the command keeps
    Image.fromarray(a).save(picture)
    page.click("#tabs button[data-tab=edit]")
    page.select_option("#run", "digits")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('mnist5k')")
    loaded = int(page.get_attribute("#edit-canvas", "data-loaded") or 0)
    page.set_input_files("#edit-file", str(picture))
    page.wait_for_selector(f"#edit-canvas[data-loaded='{loaded + 1}']", state="attached")
    sent = page.evaluate("editRequest().images[0]")
    assert base64.b64decode(sent.split(",", 1)[1]) == picture.read_bytes()
    assert page.evaluate("editRequest().names") == ["wide.png"]  # what the server's refusals call it
    shown = page.evaluate(
        "() => { const c = document.querySelector('#edit-canvas'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; return Array.from(d.filter((_, k) => k % 4 === 0)); }"
    )
    shown = np.array(shown, np.float64).reshape(28, 28) / 255
    read = (read_image(picture, size=(28, 28), channels=1)[0].numpy() + 1) / 2  # what inpaint --images reads
    assert np.abs(shown - read).max() < 0.1, np.abs(shown - read).max()
    page.set_input_files("#edit-file", [])


def test_a_data_example_is_edited_as_the_run_holds_it(page, runs):
    """The page sent a loaded data example as the PNG it shows (the example in model units, 0..255), which the
    command read as the numbers stored in a file and mapped by a data.scale run's bounds (10..200 here): the edit
    started from another picture. Now the page sends the example's index (--index I --n 1), which the command
    reads from the run's data exactly: at strength 0 the edit's original row is the example the page showed."""
    page.click("#tabs button[data-tab=edit]")
    page.select_option("#run", "scaled")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('folder')")
    page.select_option("#edit-mode", "img2img")
    page.fill("#edit-steps", "2")
    page.fill("#edit-index", "3")
    page.eval_on_selector("#strength", "(e) => { e.value = 0; e.dispatchEvent(new Event('input')); }")
    loaded = int(page.get_attribute("#edit-canvas", "data-loaded") or 0)
    page.click("#edit-load")
    page.wait_for_selector(f"#edit-canvas[data-loaded='{loaded + 1}']", state="attached")
    page.fill("#edit-index", "5")  # the field changed after loading: the example loaded is the one edited
    body = page.evaluate("editRequest()")
    assert "images" not in body and (body["params"]["index"], body["params"]["n"]) == (3, 1), body
    page.click("#edit-btn")
    wait_image(page, "#edit-result", "#edit-status")
    base = page.url.split("?")[0].rstrip("/")
    grid = np.asarray(Image.open(urllib.request.urlopen(base + page.get_attribute("#edit-result", "src"))))
    s = grid.shape[1] // 12  # one 8x8 image per row, 2-pixel padding, upscaled by s
    original = grid[2 * s : 10 * s : s, 2 * s : 10 * s : s]
    example = np.asarray(Image.open(urllib.request.urlopen(f"{base}/api/example?run=scaled&index=3")))
    assert np.array_equal(original, example), np.abs(original.astype(int) - example).max()
    page.fill("#edit-index", "")
    page.select_option("#run", "digits")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('mnist5k')")


def test_the_edit_canvas_of_a_latent_run_is_its_images_size_not_its_latents(page, tmp_path):
    """The canvas (the picture as the command reads it, the mask painted over it) took the run's data_shape:
    for a latent run, its latents' 4x4 grid, where the command reads the picture and the mask at the 8x8 of the
    images its autoencoder maps (run.json's image_shape). Now the canvas is the images' size."""
    picture = tmp_path / "eight.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(picture)
    page.click("#tabs button[data-tab=edit]")
    page.select_option("#run", "latent")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('[2,4,4]')")
    loaded = int(page.get_attribute("#edit-canvas", "data-loaded") or 0)
    page.set_input_files("#edit-file", str(picture))
    page.wait_for_selector(f"#edit-canvas[data-loaded='{loaded + 1}']", state="attached")
    for canvas in ("#edit-canvas", "#mask-canvas"):
        size = page.eval_on_selector(canvas, "(c) => [c.height, c.width]")
        assert size == [8, 8], (canvas, size)
    page.set_input_files("#edit-file", [])
    page.select_option("#run", "digits")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('mnist5k')")


def test_editing_a_run_that_is_no_image_run_says_so_before_any_upload(page, tmp_path):
    """The page read a non-image run's data_shape as C, H, W and sent a broken picture: 'not a readable picture'.
    Now one line naming the run as the page lists it, and nothing sent."""
    picture = tmp_path / "p.png"
    Image.new("L", (28, 28), 128).save(picture)
    page.click("#tabs button[data-tab=edit]")
    page.select_option("#run", "text")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('sequence')")
    page.evaluate("document.querySelector('#message').textContent = ''")
    page.evaluate("document.querySelector('#edit-status').textContent = ''")  # not the last edit's 'done'
    page.set_input_files("#edit-file", str(picture))
    page.wait_for_function("document.querySelector('#message').textContent !== ''")
    assert page.text_content("#message") == "editing needs an image run; text holds sequence data"
    page.click("#edit-btn")
    assert page.text_content("#message") == "editing needs an image run; text holds sequence data"
    assert page.text_content("#edit-status") == ""  # no job was sent
    page.select_option("#run", "digits")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('mnist5k')")


def job_states(page) -> dict:
    return page.evaluate(
        "async () => { const q = await (await fetch('/api/jobs')).json();"
        " return Object.fromEntries([q.running, ...q.waiting].filter(Boolean).map((j) => [j.id, j.state])); }"
    )


def test_cancel_stops_the_running_job_and_the_one_queued_behind_it(page):
    """Compare pressed while Sample ran replaced the job the page followed: Cancel cancelled the queued one and
    the running Sample could no longer be cancelled (Cancel and Sample disabled)."""
    page.click("#tabs button[data-tab=sample]")
    page.select_option("#run", "digits")
    page.wait_for_function("document.querySelector('#run-summary').textContent.includes('mnist5k')")
    page.fill("#sample-form input[name=steps]", "500")
    page.fill("#sample-form input[name=n]", "64")
    page.click("#sample-btn")
    page.wait_for_function("document.querySelector('#job-status').textContent.startsWith('running')")
    page.click("#compare-btn")
    page.wait_for_function("document.querySelector('#queue').textContent.includes('1 waiting')")
    ids = list(job_states(page))
    assert len(ids) == 2
    page.click("#cancel-btn")
    for job_id in ids:
        page.wait_for_function(
            f"fetch('/api/jobs/{job_id}').then((r) => r.json()).then((j) => j.state === 'cancelled')", polling=200
        )
    page.wait_for_function("document.querySelector('#cancel-btn').disabled")
    assert page.is_enabled("#sample-btn")
    page.fill("#sample-form input[name=steps]", "12")
    page.fill("#sample-form input[name=n]", "16")


def test_a_page_reloaded_mid_job_follows_it_and_can_cancel_it(page):
    """After a reload the header said 'busy: sample on digits' with no status and Cancel disabled."""
    job = page.evaluate("api('/api/jobs', {command: 'sample', run: 'digits', params: {steps: 500, n: 64}})")
    page.wait_for_function(f"fetch('/api/jobs/{job['id']}').then((r) => r.json()).then((j) => j.state === 'running')")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function("document.querySelector('#job-status').textContent.startsWith('running')")
    assert page.is_enabled("#cancel-btn")
    page.click("#tabs button[data-tab=sample]")
    page.click("#cancel-btn")
    page.wait_for_function("document.querySelector('#job-status').textContent === 'cancelled'")
    page.wait_for_function("document.querySelector('#cancel-btn').disabled")
