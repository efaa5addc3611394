// torchdiffusion studio: the page's behaviour, plain JavaScript, no libraries.
// Every action posts a job (/api/jobs) that the server runs with the command line's own command, then follows
// its server-sent events (/api/jobs/ID/events): queue position, steps, and previews of x_t and x0_hat.
"use strict";

const $ = (id) => document.getElementById(id);
// jobs: the jobs this page follows (id -> job), the running one and those it queued: Cancel stops them all
const state = { info: null, run: null, runDetails: null, jobs: new Map(), source: null, sourceIndex: null };

function say(text) { $("message").textContent = text || ""; }

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function fileUrl(path, download) {
  return `/api/file?path=${encodeURIComponent(path)}` + (download ? "&download=1" : "");
}

// Tabs

function showTab(name) {
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((s) => { s.hidden = s.id !== `tab-${name}`; });
  if (name === "runs") loadRun();
}

// Runs: summary, curves, pictures

async function loadRuns() {
  const { runs } = await api("/api/runs");
  const sel = $("run");
  const keep = sel.value;
  sel.innerHTML = "";
  for (const r of runs) {
    const o = document.createElement("option");
    o.value = r.name;
    o.textContent = r.name + (r.ready ? "" : " (training)");
    sel.appendChild(o);
  }
  if (keep && runs.some((r) => r.name === keep)) sel.value = keep;
  state.run = sel.value || null;
}

async function loadRun() {
  if (!state.run) return;
  const d = await api(`/api/run?name=${encodeURIComponent(state.run)}`);
  state.runDetails = d;
  const rows = [["preset", d.preset], ["data", `${d.source} (${d.kind}, ${JSON.stringify(d.data_shape)})`],
    ["classes", d.num_classes], ["ready", d.ready], ["finished", d.finished],
    ["images seen", d.metrics.length ? d.metrics[d.metrics.length - 1].images_seen : "-"]];
  $("run-summary").innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${escapeHtml(String(v))}</td></tr>`).join("");
  $("run-config").textContent = JSON.stringify(d.config, null, 2);
  $("run-report").textContent = d.report ? JSON.stringify(d.report, null, 2) : "none";
  plotLoss(d.metrics);
  plotSigma(d.metrics, d.info);
  $("gallery").innerHTML = d.pictures.slice(0, 40).map((p) =>
    `<figure><img src="${fileUrl(p)}" loading="lazy" alt=""><figcaption>${escapeHtml(p)}</figcaption></figure>`).join("");
  document.querySelectorAll(".cond").forEach((l) => { l.hidden = !(d.num_classes || d.context_dim || d.text_dim); });
  // a sequence run takes its process's own reverse steps: no sampler or grid to choose (sample refuses them)
  document.querySelectorAll(".grid-opt").forEach((l) => { l.hidden = d.kind === "sequence"; });
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function plotLine(canvas, xs, ys, label) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, m = 36;
  ctx.clearRect(0, 0, W, H);
  ctx.strokeStyle = "#999"; ctx.strokeRect(m, 8, W - m - 8, H - m - 8);
  if (!ys.length) { ctx.fillText("no metrics yet", m + 10, H / 2); return; }
  const finite = ys.filter(Number.isFinite);
  const lo = Math.min(...finite), hi = Math.max(...finite), x0 = Math.min(...xs), x1 = Math.max(...xs);
  const px = (x) => m + (W - m - 8) * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
  const py = (y) => H - m - (H - m - 16) * (hi > lo ? (y - lo) / (hi - lo) : 0.5);
  ctx.strokeStyle = "#1565c0"; ctx.beginPath();
  xs.forEach((x, k) => { if (Number.isFinite(ys[k])) (k ? ctx.lineTo(px(x), py(ys[k])) : ctx.moveTo(px(x), py(ys[k]))); });
  ctx.stroke();
  ctx.fillStyle = "#333";
  ctx.fillText(hi.toPrecision(3), 2, 16); ctx.fillText(lo.toPrecision(3), 2, H - m);
  ctx.fillText(label, m + 4, H - 8);
}

function plotLoss(metrics) {
  const rows = metrics.filter((r) => typeof r.loss === "number");
  plotLine($("loss-plot"), rows.map((r) => r.images_seen), rows.map((r) => r.loss), "images seen");
}

// the buckets' unit ("t" for a discrete run, "log_sigma" else) is run.json's loss_by_sigma.unit; the metrics
// write it in their first row only (training/callbacks.py), not in the latest
function plotSigma(metrics, info) {
  const last = [...metrics].reverse().find((r) => Array.isArray(r.loss_by_sigma));
  const ys = last ? last.loss_by_sigma : [];
  const first = metrics.find((r) => typeof r.loss_by_sigma_unit === "string");
  const unit = (info && info.loss_by_sigma && info.loss_by_sigma.unit) || (first && first.loss_by_sigma_unit);
  plotLine($("sigma-plot"), ys.map((_, k) => k), ys, last ? `noise-level bucket${unit ? ` (${unit})` : ""}` : "");
}

// Jobs: submit, follow, cancel

function follow(job, onEvent) {
  return new Promise((resolve) => {
    const es = new EventSource(`/api/jobs/${job.id}/events`);
    es.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      onEvent(ev);
      if (["done", "failed", "cancelled"].includes(ev.state)) { es.close(); resolve(ev); }
    };
    es.onerror = async () => {  // the stream broke before a final state: ask for the job's state once
      es.close();
      try {
        const r = await fetch(`/api/jobs/${job.id}`);
        const j = r.ok ? await r.json() : null;
        if (j && ["done", "failed", "cancelled"].includes(j.state)) { onEvent(j); resolve(j); return; }
      } catch (e) { /* the server is gone */ }
      resolve({ state: "failed", error: "the event stream closed before the job ended" });
    };
  });
}

function describeJob(ev) {
  if (ev.state === "queued") return `queued: position ${ev.position + 1}`;
  if (ev.state === "running") return `running: step ${ev.step[0]}/${ev.step[1]} (${ev.steps} steps), sigma ${ev.sigma ? ev.sigma.toPrecision(3) : "-"}`;
  if (ev.state === "failed") return `failed: ${ev.error}`;
  return ev.state;
}

async function runJob(body, opts) {
  say("");
  let job;
  try { job = await api("/api/jobs", body); } catch (e) { say(e.message); return null; }
  return watchJob(job, opts);
}

// Follow a job to its end (its status line, previews); Cancel is enabled while the page follows any job
async function watchJob(job, { status, onPreview }) {
  state.jobs.set(job.id, job);
  $("cancel-btn").disabled = false;
  refreshQueue();  // the header shows the new job at once, not at the next poll
  const final = await follow(job, (ev) => {
    $(status).textContent = describeJob(ev);
    if (ev.preview && onPreview) onPreview(ev.preview, ev);
  });
  state.jobs.delete(job.id);
  $("cancel-btn").disabled = state.jobs.size === 0;
  refreshQueue();  // ... and its end
  if (final.state !== "done") say(final.error || final.state);
  return final;
}

// Sample

function formParams(form) {
  const p = {};
  for (const el of form.elements) {
    if (!el.name || el.closest("[hidden]")) continue;
    const v = el.type === "number" ? numberOf(el, el.name) : el.value;
    if (v === undefined || v === "") continue;
    p[el.name] = el.name === "prompt" ? [v] : v;
  }
  return p;
}

// the adaptive solver takes its own steps (sample refuses a step count it would not read)
function forSampler(p) {
  if (p.sampler === "adaptive") delete p.steps;
  return p;
}

function showResult(final, img, png, json) {
  const pngFile = final.files.find((f) => f.endsWith(".png"));
  const jsonFile = final.files.find((f) => f.endsWith(".manifest.json")) || final.files.find((f) => f.endsWith(".json"));
  if (pngFile) { $(img).src = fileUrl(pngFile); if (png) { $(png).href = fileUrl(pngFile, true); $(png).hidden = false; } }
  if (jsonFile && json) { $(json).href = fileUrl(jsonFile, true); $(json).hidden = false; }
}

function sampleView() {
  let count = 0;
  return {
    status: "job-status",
    onPreview: (p) => {
      $("preview-x").src = `data:image/png;base64,${p.x}`;
      $("preview-x0").src = `data:image/png;base64,${p.x0}`;
      $("preview-count").textContent = String(++count);
    },
  };
}

async function sample(ev) {
  ev.preventDefault();
  let body;
  try { body = { command: "sample", run: state.run, params: forSampler(formParams($("sample-form"))) }; } catch (e) { say(e.message); return; }
  $("sample-btn").disabled = true;
  const final = await runJob(body, sampleView());
  $("sample-btn").disabled = false;
  if (final && final.state === "done") { showResult(final, "result-img", "download-png", "download-json"); loadRun(); }
}

// A page loaded while jobs run or wait (a reload mid-job) follows them: their status, and Cancel
async function reattach() {
  const q = await api("/api/jobs");
  for (const job of [q.running, ...q.waiting].filter(Boolean)) {
    const view = job.command === "sample" ? sampleView() : { status: job.command === "explain" ? "explain-status" : "edit-status" };
    watchJob(job, view).then((final) => {
      if (final.state === "done" && job.command === "sample") showResult(final, "result-img", "download-png", "download-json");
    });
  }
}

async function compare() {
  let params;
  try { params = forSampler({ ...formParams($("sample-form")), sampler: $("compare-sampler").value }); } catch (e) { say(e.message); return; }
  $("compare-card").hidden = false;
  $("compare-title").textContent = `${params.sampler}, same seed`;
  const final = await runJob({ command: "sample", run: state.run, params }, { status: "job-status" });
  if (final && final.state === "done") showResult(final, "compare-img");
}

// Cancel stops the running job and every job the page queued (a Compare queued behind a Sample included)
async function cancel() {
  const ids = [...state.jobs.keys()];
  await Promise.all(ids.map((id) => api(`/api/jobs/${id}/cancel`, {}).catch((e) => say(e.message))));
}

// Edit: source picture, mask painting, the four edits

// Python's round(): halves to even (the command's sizes below are computed with it)
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 ? r - 1 : r;
}

// The picture as the command will read it (data/base.py resize_crop): scaled to cover the run's H x W with its
// aspect ratio kept, then centre-cropped, transparency over white; the mask is painted over exactly that. The
// server gets the file itself (dataUrl), which the command's own reading scales and crops; a data example
// (``index``) is sent as its index instead, which the command reads from the run's data exactly (the PNG shown
// is its picture in model units, which a data.scale run would map by its bounds as numbers stored in a file).
function drawSource(img, dataUrl, name, index = null) {
  // a latent run's pictures are its autoencoder's images (run.json's image_shape), not its latents' grid
  const d = state.runDetails, [, H, W] = (d.info && d.info.image_shape) || d.data_shape;
  for (const id of ["edit-canvas", "mask-canvas"]) { $(id).width = W; $(id).height = H; }
  const s = Math.max(H / img.height, W / img.width);
  const nh = Math.max(H, roundHalfEven(img.height * s)), nw = Math.max(W, roundHalfEven(img.width * s));
  const ctx = $("edit-canvas").getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  ctx.drawImage(img, -Math.floor((nw - W) / 2), -Math.floor((nh - H) / 2), nw, nh);
  state.source = dataUrl;
  state.sourceIndex = index;
  // what the server's refusals call it (at most app.MAX_NAME_CHARS, no control characters)
  state.sourceName = name.replace(/[\x00-\x1f\x7f]/g, "?").slice(0, 200);
  $("edit-canvas").dataset.loaded = String(Number($("edit-canvas").dataset.loaded || 0) + 1);
}

function dataUrlOf(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("could not read the picture"));
    reader.readAsDataURL(blob);
  });
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not load the picture"));
    img.src = src;
  });
}

// Editing a picture needs an image run: for another kind, the one line said before anything is loaded or sent
function notAnImageRun() {
  const d = state.runDetails;
  if (d && (d.kind || "image") === "image" && Array.isArray(d.data_shape) && d.data_shape.length === 3) return null;
  return `editing needs an image run; ${state.run} holds ${d ? d.kind : "unknown"} data`;
}

async function loadExample() {
  const why = notAnImageRun();
  say(why);
  if (why) return;
  let index;
  try { index = numberField("edit-index", "data example"); } catch (e) { say(e.message); return; }
  const r = await fetch(`/api/example?run=${encodeURIComponent(state.run)}&index=${index === undefined ? 0 : index}`);
  if (!r.ok) { say((await r.json()).error); return; }
  const url = await dataUrlOf(await r.blob());
  const example = index === undefined ? 0 : index;
  drawSource(await loadImage(url), url, `data example ${example} of ${state.run}`, example);
}

function uploadSource(ev) {
  const f = ev.target.files[0];
  if (!f) return;
  const why = notAnImageRun();
  say(why);
  if (why) { ev.target.value = ""; return; }
  const reader = new FileReader();
  reader.onload = async () => {
    try { drawSource(await loadImage(reader.result), reader.result, f.name); } catch (e) { say(`${f.name} is not a picture the page can read`); }
  };
  reader.onerror = () => say(`could not read ${f.name}`);
  reader.readAsDataURL(f);
}

function paintAt(ev) {
  const c = $("mask-canvas"), rect = c.getBoundingClientRect();
  const x = ((ev.clientX - rect.left) / rect.width) * c.width, y = ((ev.clientY - rect.top) / rect.height) * c.height;
  const ctx = c.getContext("2d");
  const eraser = document.querySelector("input[name=tool]:checked").value === "eraser";
  ctx.globalCompositeOperation = eraser ? "destination-out" : "source-over";
  ctx.fillStyle = "#ff3030";
  ctx.beginPath(); ctx.arc(x, y, Number($("brush-size").value) / 2, 0, 2 * Math.PI); ctx.fill();
}

function setupMask() {
  const c = $("mask-canvas");
  let down = false;
  c.addEventListener("pointerdown", (e) => { down = true; c.setPointerCapture(e.pointerId); paintAt(e); });
  c.addEventListener("pointermove", (e) => { if (down) paintAt(e); });
  c.addEventListener("pointerup", () => { down = false; });
  $("mask-clear").onclick = () => c.getContext("2d").clearRect(0, 0, c.width, c.height);
  $("mask-invert").onclick = () => {
    const ctx = c.getContext("2d"), d = ctx.getImageData(0, 0, c.width, c.height);
    for (let k = 0; k < d.data.length; k += 4) {
      const on = d.data[k + 3] >= 128;
      d.data[k] = 255; d.data[k + 1] = 48; d.data[k + 2] = 48; d.data[k + 3] = on ? 0 : 255;
    }
    ctx.putImageData(d, 0, 0);
  };
}

// a number field's value, or undefined when it is empty: the parameter is left out (the command's default), as
// the Sample form leaves it out (Number("") would send 0). Text the browser cannot read as a number ("1e", "-")
// reads as "" too: it is refused here, in one line, not dropped (the job would run with the default and say done)
function numberOf(el, name) {
  if (el.validity.badInput) throw new Error(`${name}: not a number`);
  return el.value === "" ? undefined : Number(el.value);
}

function numberField(id, name) { return numberOf($(id), name); }

function editRequest() {
  const mode = $("edit-mode").value;
  const params = { steps: numberField("edit-steps", "steps"), seed: numberField("edit-seed", "seed") };
  const body = { command: mode, run: state.run, params };
  if (mode === "interpolate") {  // its two noises are the seeds A and B; it reads no --seed
    delete params.seed;
    const seeds = [numberField("seed-a", "seed A"), numberField("seed-b", "seed B")];
    if (seeds.some((v) => v === undefined) && seeds.some((v) => v !== undefined)) throw new Error("give both seeds A and B, or neither");
    if (seeds[0] !== undefined) params.seeds = seeds;
    params.frames = numberField("frames", "frames");
  } else {
    const why = notAnImageRun();
    if (why) throw new Error(why);
    if (!state.source) throw new Error("load a data example or upload a picture first");
    if (state.sourceIndex !== null) {  // the example itself, as the command line's --index 3 --n 1 reads it
      params.index = state.sourceIndex;
      params.n = 1;
    } else {
      body.images = [state.source];
      body.names = [state.sourceName];
    }
    if (mode === "inpaint") body.mask = $("mask-canvas").toDataURL("image/png");
    if (mode === "outpaint") for (const s of ["left", "right", "top", "bottom"]) params[s] = numberField(`out-${s}`, s);
    if (mode === "img2img") params.strength = [Number($("strength").value)];
  }
  for (const k of Object.keys(params)) if (params[k] === undefined) delete params[k];
  return body;
}

async function runEdit() {
  let body;
  try { body = editRequest(); } catch (e) { say(e.message); return; }
  $("edit-btn").disabled = true;
  const final = await runJob(body, {
    status: "edit-status",
    onPreview: (p) => { $("edit-preview").src = `data:image/png;base64,${p.x0}`; },
  });
  $("edit-btn").disabled = false;
  if (final && final.state === "done") showResult(final, "edit-result", "edit-download");
}

function showEditMode() {
  const mode = $("edit-mode").value;
  for (const m of ["inpaint", "outpaint", "img2img", "interpolate"]) {
    document.querySelectorAll(`.mode-${m}`).forEach((el) => { el.hidden = m !== mode; });
  }
  $("mask-canvas").hidden = mode !== "inpaint";
}

// Explain

// the pictures that read --steps (the sampler's, of the trajectory and of the field's paths); the field is shown
// for them only, and left out when empty (the run's own steps)
const EXPLAIN_STEPS = ["trajectory", "field"];

function explainRequest() {
  const what = $("explain-what").value;
  const body = { command: "explain", what, run: state.run, params: {} };
  const steps = EXPLAIN_STEPS.includes(what) ? numberField("explain-steps", "steps") : undefined;
  if (steps !== undefined) body.params.steps = steps;
  return body;
}

function showExplainWhat() {
  $("explain-steps").closest("label").hidden = !EXPLAIN_STEPS.includes($("explain-what").value);
}

async function explain() {
  let body;
  try { body = explainRequest(); } catch (e) { say(e.message); return; }
  $("explain-btn").disabled = true;
  const final = await runJob(body, { status: "explain-status" });
  $("explain-btn").disabled = false;
  if (final && final.state === "done") {
    $("explain-out").innerHTML = final.files.filter((f) => /\.(png|gif)$/.test(f)).map((f) =>
      `<figure><img src="${fileUrl(f)}" alt=""><figcaption>${escapeHtml(f)}</figcaption></figure>`).join("");
  }
}

// Train

async function startTraining() {
  const body = { preset: $("train-preset").value, name: $("train-name").value };
  if ($("train-data").value) body.data = $("train-data").value;
  try {
    const images = numberField("train-images", "images");
    if (images !== undefined) body.images = images;
    await api("/api/train", body);
    say("");
  } catch (e) { say(e.message); }
  refreshTrainings();
}

async function refreshTrainings() {
  const { trainings } = await api("/api/train");
  $("trainings").innerHTML = trainings.map((t) => `<div class="card"><b>${escapeHtml(t.name)}</b>
    ${t.running ? `running <button data-stop="${escapeHtml(t.name)}">Stop (checkpoint)</button>` : `exit code ${t.exit_code}`}
    <pre>${escapeHtml(t.log.join("\n"))}</pre></div>`).join("");
  document.querySelectorAll("[data-stop]").forEach((b) => {
    b.onclick = async () => { b.disabled = true; await api("/api/train/stop", { name: b.dataset.stop }).catch((e) => say(e.message)); refreshTrainings(); };
  });
}

// Start

async function refreshQueue() {
  try {
    const q = await api("/api/jobs");
    $("queue").textContent = q.running ? `busy: ${q.running.command} on ${q.running.run}, ${q.waiting.length} waiting` : `idle, ${q.waiting.length} waiting`;
  } catch (e) { $("queue").textContent = ""; }
}

async function start() {
  state.info = await api("/api/info");
  const names = Object.keys(state.info.samplers);
  for (const id of ["sampler", "compare-sampler"]) {
    $(id).innerHTML = (id === "sampler" ? `<option value="">run's</option>` : "") + names.map((n) => `<option>${n}</option>`).join("");
  }
  $("compare-sampler").value = names.includes("heun") ? "heun" : names[0];
  $("train-preset").innerHTML = state.info.presets.map((n) => `<option>${n}</option>`).join("");
  $("train-tab").hidden = !state.info.allow_train;
  document.querySelectorAll("#tabs button").forEach((b) => { b.onclick = () => showTab(b.dataset.tab); });
  $("run").onchange = () => { state.run = $("run").value; state.source = null; loadRun(); };
  $("sample-form").onsubmit = sample;
  $("cancel-btn").onclick = cancel;
  $("compare-btn").onclick = compare;
  $("edit-load").onclick = loadExample;
  $("edit-file").onchange = uploadSource;
  $("edit-btn").onclick = runEdit;
  $("edit-mode").onchange = showEditMode;
  $("strength").oninput = () => { $("strength-value").textContent = $("strength").value; };
  $("explain-btn").onclick = explain;
  $("explain-what").onchange = showExplainWhat;
  $("train-btn").onclick = startTraining;
  setupMask();
  showEditMode();
  showExplainWhat();
  await loadRuns();
  await loadRun();
  await reattach();
  setInterval(refreshQueue, 2000);
  setInterval(() => {
    if (!$("tab-runs").hidden) loadRuns().then(loadRun).catch(() => {});
    if (state.info.allow_train && !$("tab-train").hidden) refreshTrainings().catch(() => {});
  }, 5000);
  document.body.dataset.ready = "1";
}

start().catch((e) => say(e.message));
