// Audio in: upload or drop a file (or take the shown result), choose variation / inpaint /
// extend, mark regions on the waveform, run it as a job (POST /jobs/{variations|inpaint|continue})
// and see the result beside the source. Uses app.js's helpers ($, apiKey, errorOf, drawWaveform,
// mix, toEntry, addHistory, state, follow).
"use strict";

const A2A = {
  source: null,   // { blob, name, samples: Float32Array (mono mix), rate, seconds }
  regions: [],    // [[start, end], ...] seconds
  drag: null,     // the region being drawn: { from, to }
  resultUrl: null,
  sourceUrl: null,
  busy: false,
};
const A2A_ROUTES = { variation: "variations", inpaint: "inpaint", extend: "continue" };
const A2A_LABELS = { variation: "Make a variation", inpaint: "Replace the marked regions", extend: "Extend" };
const a2aMode = () => document.querySelector("input[name=a2a_mode]:checked")?.value || "variation";

async function a2aFetch(path, init = {}) {
  const headers = {};
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  let res;
  try {
    res = await fetch(new URL(path, BASE), { ...init, headers });
  } catch {
    throw new ApiError(0, "The server cannot be reached. Is it running?");
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

function a2aError(err) {
  const box = $("a2a-error");
  box.textContent = err ? (err.message || String(err)) : "";
  box.hidden = !err;
}

async function decodeMono(blob) {
  const ctx = new OfflineAudioContext(1, 1, 44100);
  const audio = await ctx.decodeAudioData(await blob.arrayBuffer());
  return { samples: mix(audio), rate: audio.sampleRate, seconds: audio.duration };
}

async function a2aSetSource(blob, name) {
  a2aError(null);
  let decoded;
  try {
    decoded = await decodeMono(blob);
  } catch {
    // The server decodes more formats than a browser: keep the file, show no waveform.
    decoded = { samples: null, rate: 44100, seconds: null };
  }
  A2A.source = { blob, name, ...decoded };
  A2A.regions = [];
  if (A2A.sourceUrl) URL.revokeObjectURL(A2A.sourceUrl);
  A2A.sourceUrl = URL.createObjectURL(blob);
  $("a2a-source-player").src = A2A.sourceUrl;
  $("a2a-source-box").hidden = false;
  const length = decoded.seconds == null ? "length unknown to this browser" : `${decoded.seconds.toFixed(2)} s`;
  $("a2a-source-info").textContent = `${name} · ${length} · ${(blob.size / 1024).toFixed(0)} KB`;
  if (decoded.seconds != null && !$("a2a-target").dataset.touched) {
    $("a2a-target").value = (decoded.seconds * 2).toFixed(1);
  }
  a2aDrawSource();
  a2aRenderRegions();
  a2aUpdate();
}

// ------------------------------------------------------------------ waveform and regions
function a2aDrawRegions(canvas, seconds) {
  if (!seconds) return;
  const g = canvas.getContext("2d");
  g.fillStyle = "rgba(245, 125, 21, 0.35)";
  const spans = A2A.drag ? [...A2A.regions, [Math.min(A2A.drag.from, A2A.drag.to), Math.max(A2A.drag.from, A2A.drag.to)]] : A2A.regions;
  for (const [s, e] of spans) {
    g.fillRect((s / seconds) * canvas.width, 0, ((e - s) / seconds) * canvas.width, canvas.height);
  }
}

function a2aDrawSource() {
  const canvas = $("a2a-source");
  if (!A2A.source?.samples) return;
  drawWaveform(canvas, A2A.source.samples);
  if (a2aMode() === "inpaint") a2aDrawRegions(canvas, A2A.source.seconds);
  canvas.dataset.regions = String(A2A.regions.length);
}

function a2aSecondsAt(event) {
  const r = $("a2a-source").getBoundingClientRect();
  const f = Math.min(1, Math.max(0, (event.clientX - r.left) / r.width));
  return f * (A2A.source?.seconds || 0);
}

function a2aAddRegion(start, end) {
  const s = Math.max(0, Math.min(start, end)), e = Math.min(A2A.source?.seconds ?? Infinity, Math.max(start, end));
  if (!(e - s >= 0.05)) return false;
  A2A.regions = [...A2A.regions, [s, e]].sort((a, b) => a[0] - b[0]);
  a2aRenderRegions();
  a2aDrawSource();
  a2aUpdate();
  return true;
}

function a2aRenderRegions() {
  const list = $("a2a-regions");
  list.replaceChildren();
  A2A.regions.forEach(([s, e], i) => {
    const li = document.createElement("li");
    li.textContent = `${s.toFixed(2)}–${e.toFixed(2)} s `;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "ghost small";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove region ${s.toFixed(2)} to ${e.toFixed(2)} seconds`);
    remove.onclick = () => { A2A.regions.splice(i, 1); a2aRenderRegions(); a2aDrawSource(); a2aUpdate(); };
    li.append(remove);
    list.append(li);
  });
}

function a2aUpdate() {
  const mode = a2aMode();
  for (const el of document.querySelectorAll("[data-a2a-mode]")) el.hidden = el.dataset.a2aMode !== mode;
  $("a2a-run").textContent = A2A_LABELS[mode];
  const ready = A2A.source && (mode !== "inpaint" || A2A.regions.length > 0);
  $("a2a-run").disabled = !ready || A2A.busy;
  $("a2a-strength-value").textContent = Number($("a2a-strength").value).toFixed(2);
  a2aDrawSource();
}

// ------------------------------------------------------------------------------ running
function a2aForm() {
  const mode = a2aMode();
  const form = new FormData();
  form.append("audio", A2A.source.blob, A2A.source.name);
  form.append("prompt", $("a2a-prompt").value.trim() || $("prompt").value.trim());
  if ($("model").value) form.append("model", $("model").value);
  if ($("steps").value) form.append("steps", $("steps").value);
  if ($("seed").value) form.append("seed", $("seed").value);
  if (mode === "variation") form.append("init_noise_level", $("a2a-strength").value);
  if (mode === "inpaint") {
    form.append("inpaint_start_seconds", JSON.stringify(A2A.regions.map((r) => +r[0].toFixed(3))));
    form.append("inpaint_end_seconds", JSON.stringify(A2A.regions.map((r) => +r[1].toFixed(3))));
  }
  if (mode === "extend") form.append("duration", $("a2a-target").value);
  return form;
}

async function a2aRun() {
  if (!A2A.source || A2A.busy) return;
  a2aError(null);
  if (!($("a2a-prompt").value.trim() || $("prompt").value.trim())) {
    a2aError(new Error("Write a prompt for the new audio."));
    $("a2a-prompt").focus();
    return;
  }
  A2A.busy = true;
  a2aUpdate();
  const progress = $("a2a-progress");
  progress.hidden = false;
  progress.value = 0;
  try {
    const route = A2A_ROUTES[a2aMode()];
    let job = await (await a2aFetch(`jobs/${route}`, { method: "POST", body: a2aForm() })).json();
    $("a2a-status").textContent = "Queued…";
    job = await follow(job, (now) => {
      const { step = 0, total = 0 } = now.progress || {};
      progress.value = total ? step / total : 0;
      $("a2a-status").textContent = now.status === "running" ? `Step ${step} of ${total}` : "Queued…";
    });
    if (job.status !== "succeeded") throw new Error(`The job ${job.status}: ${job.error || "no audio"}`);
    const blob = await (await a2aFetch(`jobs/${job.id}/audio`)).blob();
    await a2aShowResult(blob, job);
    try { addHistory(toEntry(job)); } catch { /* history is a convenience */ }
    $("a2a-status").textContent = `Done: ${job.mode}, seed ${job.seed}.`;
  } catch (err) {
    a2aError(err);
    $("a2a-status").textContent = "";
  } finally {
    progress.hidden = true;
    A2A.busy = false;
    a2aUpdate();
  }
}

async function a2aShowResult(blob, job) {
  if (A2A.resultUrl) URL.revokeObjectURL(A2A.resultUrl);
  A2A.resultUrl = URL.createObjectURL(blob);
  $("a2a-result-box").hidden = false;
  $("a2a-result-box").dataset.jobId = job.id;
  $("a2a-player").src = A2A.resultUrl;
  $("a2a-download").href = A2A.resultUrl;
  $("a2a-download").download = `stable-audio-${job.mode}-${job.seed}.${job.response_format || "wav"}`;
  const canvas = $("a2a-result");
  try {
    const decoded = await decodeMono(blob);
    drawWaveform(canvas, decoded.samples);
    if (job.mode === "inpainting") a2aDrawRegions(canvas, decoded.seconds);
    $("a2a-result-info").textContent = `${decoded.seconds.toFixed(2)} s`;
  } catch {
    $("a2a-result-info").textContent = "This browser cannot draw this format; download it to listen.";
  }
}

// -------------------------------------------------------------------------------- wiring
function a2aInit() {
  if (!$("a2a")) return;
  const drop = $("a2a-drop");
  $("a2a-file").addEventListener("change", (e) => {
    const file = e.target.files?.[0];
    if (file) a2aSetSource(file, file.name);
  });
  drop.addEventListener("click", (e) => { if (e.target === drop) $("a2a-file").click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("a2a-file").click(); } });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer?.files?.[0];
    if (file) a2aSetSource(file, file.name);
  });
  $("a2a-reuse").addEventListener("click", async () => {
    if (!state.url?.file) { a2aError(new Error("Generate or open a result from the history first.")); return; }
    const blob = await (await fetch(state.url.file)).blob();
    a2aSetSource(blob, `result-${$("result").dataset.jobId || "shown"}.${blob.type.split("/")[1] || "wav"}`);
  });
  for (const radio of document.querySelectorAll("input[name=a2a_mode]")) radio.addEventListener("change", a2aUpdate);
  $("a2a-strength").addEventListener("input", a2aUpdate);
  $("a2a-target").addEventListener("input", (e) => { e.target.dataset.touched = "1"; });
  $("a2a-add").addEventListener("click", () => {
    if (!a2aAddRegion(Number($("a2a-start").value), Number($("a2a-end").value))) {
      a2aError(new Error("A region needs an end after its start (at least 0.05 s), inside the source."));
    } else a2aError(null);
  });
  $("a2a-clear").addEventListener("click", () => { A2A.regions = []; a2aRenderRegions(); a2aUpdate(); });
  const canvas = $("a2a-source");
  canvas.addEventListener("pointerdown", (e) => {
    if (a2aMode() !== "inpaint" || !A2A.source?.seconds) return;
    canvas.setPointerCapture(e.pointerId);
    A2A.drag = { from: a2aSecondsAt(e), to: a2aSecondsAt(e) };
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!A2A.drag) return;
    A2A.drag.to = a2aSecondsAt(e);
    a2aDrawSource();
  });
  canvas.addEventListener("pointerup", () => {
    if (!A2A.drag) return;
    const { from, to } = A2A.drag;
    A2A.drag = null;
    if (!a2aAddRegion(from, to)) a2aDrawSource();
  });
  $("a2a-run").addEventListener("click", a2aRun);
  window.addEventListener("resize", () => a2aDrawSource());
  a2aUpdate();
}

document.addEventListener("DOMContentLoaded", a2aInit);
