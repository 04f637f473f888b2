// Stable Audio playground: one form over POST /jobs, following GET /jobs/{id}/events (SSE);
// no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const BASE = new URL("../", location.href); // the API lives one level above /ui/
const KEY = "stable-audio.api-key";
const HISTORY = "stable-audio.history";
const HISTORY_MAX = 20;
const POLL_MS = 300;
const TERMINAL = new Set(["succeeded", "failed", "canceled", "expired"]);
const state = { models: {}, formats: {}, job: null, shown: null, samples: null, url: null };

// ------------------------------------------------------------------------ storage
function load(name, fallback) {
  try { return JSON.parse(localStorage.getItem(name)) ?? fallback; } catch { return fallback; }
}
function save(name, value) {
  try { localStorage.setItem(name, JSON.stringify(value)); } catch { /* private mode: keep going */ }
}
const apiKey = () => load(KEY, "");
const format = () => $("form").elements.response_format?.value || "wav";

// ---------------------------------------------------------------------------- API
class ApiError extends Error {
  constructor(status, message, param) { super(message); this.status = status; this.param = param; }
}

async function call(path, init = {}) {
  const headers = { ...(init.headers || {}) };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  if (init.body) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(new URL(path, BASE), { ...init, headers });
  } catch {
    throw new ApiError(0, "The server cannot be reached. Is it running?");
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

// The error envelope ({"error": {message, param}}) or pydantic's 422 {"detail": [...]}.
async function errorOf(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (body?.error?.message) return new ApiError(res.status, body.error.message, body.error.param);
  if (Array.isArray(body?.detail)) {
    const parts = body.detail.map((d) => {
      const loc = (d.loc || []).filter((p) => p !== "body").join(".");
      return loc ? `${loc}: ${d.msg}` : d.msg;
    });
    const first = body.detail[0]?.loc?.filter((p) => p !== "body")[0];
    return new ApiError(res.status, parts.join("; "), first);
  }
  if (typeof body?.detail === "string") return new ApiError(res.status, body.detail);
  return new ApiError(res.status, `The server answered ${res.status} ${res.statusText}.`);
}

// ------------------------------------------------------------------------ errors
function showError(err) {
  const box = $("error");
  let text = err.message || String(err);
  if (err.status === 401) {
    text += apiKey() ? " The saved API key was not accepted." : " This server needs an API key: enter it under “API key”.";
    $("auth").open = true;
  }
  box.textContent = text;
  box.hidden = false;
  const field = err.param && document.querySelector(`#form [name="${err.param}"]`);
  if (field) { field.setAttribute("aria-invalid", "true"); field.setAttribute("aria-errormessage", "error"); field.focus(); }
  else if (err.status === 401) $("api_key").focus();
}
function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
  for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

// ------------------------------------------------------------------------ models
function describeModel(m) {
  const bits = [];
  if (m.sample_rate) bits.push(`${m.sample_rate / 1000} kHz ${m.channels === 1 ? "mono" : "stereo"}`);
  if (m.max_seconds) bits.push(`up to ${m.max_seconds.toFixed(2)} s`);
  if (m.steps) bits.push(`${m.steps} steps`);
  if (m.cfg_scale != null) bits.push(`CFG ${m.cfg_scale}`);
  if (m.sampler) bits.push(m.sampler);
  return bits.join(" · ");
}

function applyModel() {
  const m = state.models[$("model").value];
  if (!m) return;
  $("model-info").textContent = describeModel(m);
  const max = Math.min(m.max_seconds || Infinity, state.limits?.max_duration || Infinity);
  if (Number.isFinite(max)) {
    $("duration").max = String(Math.floor(max * 100) / 100);
    if (Number($("duration").value) > max) $("duration").value = String(Math.floor(max));
  }
  renderLoras(m.name);
  $("steps").placeholder = m.steps ? String(m.steps) : "default";
  $("cfg_scale").placeholder = m.cfg_scale != null ? String(m.cfg_scale) : "default";
}

// The LoRAs of the chosen model, each with a switch and a strength slider (0-2).
function renderLoras(model) {
  const list = $("lora-list");
  const loras = (state.loras || {})[model] || [];
  list.replaceChildren();
  $("loras").hidden = loras.length === 0;
  for (const lora of loras) {
    const row = document.createElement("div");
    row.className = "lora";
    const on = document.createElement("input");
    on.type = "checkbox";
    on.id = `lora-on-${lora.name}`;
    on.dataset.lora = lora.name;
    const label = document.createElement("label");
    label.htmlFor = on.id;
    label.textContent = lora.name;
    label.title = `${lora.adapter_type}, rank ${lora.rank}`;
    const slider = document.createElement("input");
    slider.type = "range";
    slider.min = "0";
    slider.max = "2";
    slider.step = "0.05";
    slider.value = "1";
    slider.id = `lora-strength-${lora.name}`;
    slider.setAttribute("aria-label", `${lora.name} strength`);
    const shown = document.createElement("output");
    shown.htmlFor = slider.id;
    shown.textContent = "1.00";
    slider.addEventListener("input", () => { shown.textContent = Number(slider.value).toFixed(2); });
    row.append(on, label, slider, shown);
    list.append(row);
  }
}

function chosenLoras() {
  return [...document.querySelectorAll("#lora-list input[type=checkbox]:checked")].map((on) => ({
    name: on.dataset.lora,
    strength: Number($(`lora-strength-${on.dataset.lora}`).value),
  }));
}

async function loadHealth() {
  const pill = $("server");
  try {
    const health = await (await call("health")).json();
    state.limits = health.limits || {};
    state.loras = health.loras || {};
    const select = $("model");
    select.replaceChildren();
    renderFormats(health.formats || []);
    // The rich per-model records are under "models"; "available_models" is the names only.
    for (const m of health.models || []) {
      state.models[m.name] = m;
      const option = new Option(m.name, m.name, false, m.name === health.default_model);
      if (m.aliases?.length) option.title = `Also called ${m.aliases.join(", ")}`;
      select.add(option);
    }
    if (health.limits?.max_steps) $("steps").max = String(health.limits.max_steps);
    applyModel();
    const ready = health.status === "ok";
    pill.textContent = (ready ? "Online" : "Starting") + (health.auth ? " · API key required" : "");
    pill.className = `pill ${ready ? "ok" : "warn"}`;
    if (health.auth && !apiKey()) $("auth").open = true;
    updateKeyState(health.auth);
  } catch (err) {
    pill.textContent = "Offline";
    pill.className = "pill err";
    showError(err);
  }
}

// ------------------------------------------------------------------------ formats
// The radios come from the server's format registry, in its order; the first is the default.
function renderFormats(formats) {
  const box = $("formats");
  const chosen = format();
  box.replaceChildren();
  formats.forEach((f, i) => {
    state.formats[f.name] = f;
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"), { type: "radio", name: "response_format", value: f.name });
    input.checked = chosen ? f.name === chosen : i === 0;
    input.addEventListener("change", formatHint);
    const span = document.createElement("span");
    span.textContent = f.name.toUpperCase();
    label.append(input, span);
    box.append(label);
  });
  if (!box.querySelector("input:checked") && box.querySelector("input")) box.querySelector("input").checked = true;
  formatHint();
}

function formatHint() {
  const f = state.formats[format()];
  let text = f ? f.description : "";
  if (f?.sample_rate) text += ` (always ${f.sample_rate / 1000} kHz)`;
  if (f?.name === "pcm") text += "; the page adds a WAV header only to preview it";
  $("format-hint").textContent = text ? `${text[0].toUpperCase()}${text.slice(1)}.` : "";
}

// ------------------------------------------------------------------------ API key
function updateKeyState(required) {
  if (required !== undefined) state.authRequired = required;
  const text = apiKey() ? "saved" : state.authRequired ? "required by this server" : "not set";
  $("key-state").textContent = `· ${text}`;
}
function saveKey() {
  save(KEY, $("api_key").value.trim());
  updateKeyState();
  clearError();
}

// ------------------------------------------------------------------------ the form
function readForm() {
  const body = { prompt: $("prompt").value.trim(), response_format: format() };
  if ($("model").value) body.model = $("model").value;
  const negative = $("negative_prompt").value.trim();
  if (negative) body.negative_prompt = negative;
  for (const name of ["duration", "steps", "cfg_scale"]) {
    const el = $(name);
    // A number input reads "" for text it cannot parse: send it on, so the server's
    // validation names the field instead of the value silently becoming the default.
    if (el.value !== "") body[name] = Number(el.value);
    else if (el.validity.badInput) body[name] = "not a number";
  }
  body.seed = $("seed").value === "" ? -1 : Number($("seed").value);
  const loras = chosenLoras();
  if (loras.length) body.loras = loras;
  return body;
}

function setBusy(busy) {
  const focused = document.activeElement;
  $("submit").disabled = busy;
  $("submit").textContent = busy ? "Generating…" : "Generate";
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
  $("form").setAttribute("aria-busy", String(busy));
  // Keyboard focus follows the button that replaced the one it was on (a disabled or
  // hidden button drops it); focus elsewhere, e.g. in a field, stays where it is.
  if (busy && focused === $("submit")) $("cancel").focus();
  if (!busy && (focused === $("cancel") || focused === document.body)) $("submit").focus();
}

function showProgress(job, started) {
  $("progress-box").hidden = false;
  const { step = 0, total = 0 } = job.progress || {};
  const bar = $("progress");
  bar.max = Math.max(total, 1);
  bar.value = Math.min(step, bar.max);
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  let text;
  if (job.status === "queued") {
    text = job.queue_position > 1 ? `Queued (position ${job.queue_position})… ${secs} s` : `Queued… ${secs} s`;
  }
  else if (job.status === "running") text = `Step ${step} of ${total} · ${secs} s`;
  else if (job.status === "succeeded") text = `Done in ${secs} s`;
  else if (job.status === "canceled") text = "Canceled.";
  else if (job.status === "expired") text = "Expired: not started in time.";
  else text = "Failed.";
  if (job.cancel_requested && !TERMINAL.has(job.status)) text = `Canceling… step ${step} of ${total}`;
  $("progress-text").textContent = text;
  // Screen readers hear the changes of state, not every tick of the counter.
  if ($("progress-box").dataset.status !== job.status) announce(job.status === "running" ? "Generating…" : text);
  $("progress-box").dataset.status = job.status;
}

function announce(text) {
  $("live").textContent = text;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Follow a job through GET jobs/{id}/events (Server-Sent Events) until it ends; return its final
// record. fetch, not EventSource, so that the API key goes in the Authorization header. A
// dropped stream is resumed from the last event id (Last-Event-ID); onUpdate sees the record
// as the events change it.
async function follow(job, onUpdate) {
  let last = null;
  let misses = 0;
  job = { ...job, progress: { ...(job.progress || {}) } };
  for (;;) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (last) headers["Last-Event-ID"] = last;
      const res = await call(`jobs/${job.id}/events`, { headers });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = { type: "message", data: "" };
          for (const line of block.split("\n")) {
            const colon = line.indexOf(":");
            if (colon <= 0) continue; // a comment (keep-alive) or nothing
            const field = line.slice(0, colon);
            const text = line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") event.type = text;
            else if (field === "data") event.data += text;
            else if (field === "id") last = text;
          }
          if (!event.data) continue;
          const data = JSON.parse(event.data);
          misses = 0;
          if (event.type === "done") return data;
          if (event.type === "status") job = { ...job, status: data.status, error: data.error ?? job.error };
          else if (event.type === "progress") job = { ...job, progress: { step: data.step, total: data.total } };
          else if (event.type === "queue") job = { ...job, queue_position: data.position };
          onUpdate(job);
        }
      }
    } catch (err) {
      if (err.status || ++misses > 10) throw err; // a brief network blip is retried
    }
    await sleep(POLL_MS); // the stream ended without "done": resume from the last event
  }
}

async function generate(event) {
  event.preventDefault();
  if (state.job) return;
  clearError();
  setBusy(true);
  delete $("progress-box").dataset.status;
  const started = performance.now();
  try {
    let job = await (await call("jobs", { method: "POST", body: JSON.stringify(readForm()) })).json();
    state.job = job.id;
    showProgress(job, started);
    job = await follow(job, (now) => showProgress(now, started));
    showProgress(job, started);
    if (job.status === "succeeded") {
      const entry = toEntry(job);
      addHistory(entry);
      await showResult(entry);
      announce(`Ready: ${entry.prompt}, seed ${entry.seed}.`);
    } else if (job.status === "failed") {
      showError(new ApiError(500, `Generation failed: ${job.error || "unknown error"}`));
    }
  } catch (err) {
    $("progress-box").hidden = true;
    showError(err);
  } finally {
    state.job = null;
    setBusy(false);
  }
}

async function cancel() {
  if (!state.job) return;
  $("cancel").disabled = true;
  $("progress-text").textContent = "Canceling…";
  try { await call(`jobs/${state.job}/cancel`, { method: "POST" }); } catch (err) { showError(err); }
}

// ------------------------------------------------------------------------ results
function toEntry(job) {
  const req = job.request || {};
  return {
    id: job.id, prompt: req.prompt, negative_prompt: req.negative_prompt, model: job.model,
    seed: job.seed, format: job.response_format, duration: job.duration, steps: job.progress?.total,
    cfg_scale: req.cfg_scale ?? state.models[job.model]?.cfg_scale, sample_rate: job.sample_rate,
    channels: state.models[job.model]?.channels || 2, url: job.download_url, created: job.finished_at,
  };
}

function wavFromPcm(pcm, rate, channels) {
  const h = new DataView(new ArrayBuffer(44));
  const tag = (at, s) => [...s].forEach((c, i) => h.setUint8(at + i, c.charCodeAt(0)));
  tag(0, "RIFF"); h.setUint32(4, 36 + pcm.byteLength, true); tag(8, "WAVE"); tag(12, "fmt ");
  h.setUint32(16, 16, true); h.setUint16(20, 1, true); h.setUint16(22, channels, true);
  h.setUint32(24, rate, true); h.setUint32(28, rate * channels * 2, true);
  h.setUint16(32, channels * 2, true); h.setUint16(34, 16, true); tag(36, "data");
  h.setUint32(40, pcm.byteLength, true);
  return new Blob([h, pcm], { type: "audio/wav" });
}

function metaRow(dl, label, value, id) {
  const row = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = label;
  dd.textContent = value;
  if (id) dd.id = id;
  row.append(dt, dd);
  dl.append(row);
}

async function showResult(entry, play = false) {
  const bytes = await (await call(entry.url)).arrayBuffer();
  if (state.url) Object.values(state.url).forEach((u) => URL.revokeObjectURL(u));
  const type = entry.format === "pcm" ? "application/octet-stream" : state.formats[entry.format]?.media_type;
  const file = new Blob([bytes], type ? { type } : {});
  const playable = entry.format === "pcm" ? wavFromPcm(bytes, entry.sample_rate || 44100, entry.channels) : file;
  state.url = { file: URL.createObjectURL(file), play: URL.createObjectURL(playable) };
  state.shown = entry.id;

  $("empty").hidden = true;
  const section = $("result");
  section.hidden = false;
  section.dataset.jobId = entry.id;
  $("result-prompt").textContent = entry.prompt;
  const dl = $("result-meta");
  dl.replaceChildren();
  metaRow(dl, "Seed", String(entry.seed), "result-seed");
  if (entry.duration != null) metaRow(dl, "Length", `${Number(entry.duration).toFixed(2)} s`);
  metaRow(dl, "Format", entry.format.toUpperCase());
  if (entry.steps) metaRow(dl, "Steps", String(entry.steps));
  if (entry.cfg_scale != null) metaRow(dl, "CFG", String(entry.cfg_scale));
  metaRow(dl, "Model", entry.model);
  const link = $("download");
  link.href = state.url.file;
  link.download = `stable-audio-${entry.seed}.${entry.format}`;
  const player = $("player");
  player.src = state.url.play;
  $("audio-note").hidden = entry.format !== "pcm";
  $("audio-note").textContent = "Previewed with a WAV header added in the browser; the download is the raw PCM.";
  renderHistory();

  for (const c of [$("waveform"), $("spectrogram")]) delete c.dataset.drawn;
  try {
    const ctx = new OfflineAudioContext(1, 1, entry.sample_rate || 44100);
    const audio = await ctx.decodeAudioData(await playable.arrayBuffer());
    state.samples = { data: mix(audio), rate: audio.sampleRate };
    draw();
  } catch {
    state.samples = null;
    $("audio-note").hidden = false;
    $("audio-note").textContent = `This browser cannot decode ${entry.format.toUpperCase()}; download the file to listen.`;
  }
  if (play) player.play().catch(() => {});
}

function mix(buffer) {
  const out = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const ch = buffer.getChannelData(c);
    for (let i = 0; i < ch.length; i++) out[i] += ch[i] / buffer.numberOfChannels;
  }
  return out;
}

// ------------------------------------------------------------------------ drawing
function canvas2d(canvas) {
  const r = canvas.getBoundingClientRect();
  const dpr = Math.min(window.devicePixelRatio || 1, 2);
  canvas.width = Math.max(1, Math.round(r.width * dpr));
  canvas.height = Math.max(1, Math.round(r.height * dpr));
  return canvas.getContext("2d");
}
const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function draw() {
  if (!state.samples) return;
  drawWaveform($("waveform"), state.samples.data);
  drawSpectrogram($("spectrogram"), state.samples.data, state.samples.rate);
}

function drawWaveform(canvas, x) {
  const g = canvas2d(canvas);
  const { width: w, height: h } = canvas;
  const mid = h / 2;
  const per = x.length / w;
  let peak = 0;
  for (let i = 0; i < x.length; i++) peak = Math.max(peak, Math.abs(x[i]));
  const scale = (mid * 0.92) / Math.max(peak, 1e-4);
  const soft = cssVar("--wave-soft"), strong = cssVar("--wave");
  g.fillStyle = cssVar("--line");
  g.fillRect(0, Math.floor(mid), w, 1);
  for (let px = 0; px < w; px++) {
    const a = Math.floor(px * per), b = Math.min(x.length, Math.max(a + 1, Math.floor((px + 1) * per)));
    let lo = Infinity, hi = -Infinity, sum = 0, sq = 0;
    for (let i = a; i < b; i++) { const v = x[i]; lo = Math.min(lo, v); hi = Math.max(hi, v); sum += v; sq += v * v; }
    if (b <= a) continue;
    // The peak envelope, and inside it the body of the signal: mean ± standard deviation
    // (the usual ±RMS for centred audio, and still where the signal is if it has a DC offset).
    const mean = sum / (b - a), sd = Math.sqrt(Math.max(0, sq / (b - a) - mean * mean));
    g.fillStyle = soft;
    g.fillRect(px, mid - hi * scale, 1, Math.max(1, (hi - lo) * scale));
    const top = Math.min(hi, mean + sd), bottom = Math.max(lo, mean - sd);
    g.fillStyle = strong;
    g.fillRect(px, mid - top * scale, 1, Math.max(1, (top - bottom) * scale));
  }
  const db = peak > 0 ? (20 * Math.log10(peak)).toFixed(1) : "-inf";
  canvas.setAttribute("aria-label", `Waveform: ${(x.length / (state.samples?.rate || 44100)).toFixed(1)} s, peak ${db} dBFS`);
  canvas.dataset.drawn = "1";
}

// In-place iterative radix-2 FFT (re, im: Float32Array of a power-of-two length).
function fft(re, im) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = (-2 * Math.PI) / len, wr = Math.cos(ang), wi = Math.sin(ang);
    for (let i = 0; i < n; i += len) {
      let cr = 1, ci = 0;
      for (let k = 0; k < len / 2; k++) {
        const a = i + k, b = a + len / 2;
        const tr = re[b] * cr - im[b] * ci, ti = re[b] * ci + im[b] * cr;
        re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
        const t = cr * wr - ci * wi; ci = cr * wi + ci * wr; cr = t;
      }
    }
  }
}

// Magma-like colour ramp, 256 entries of [r, g, b].
const RAMP = (() => {
  const stops = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]];
  return Array.from({ length: 256 }, (_, i) => {
    const t = (i / 255) * (stops.length - 1), k = Math.min(Math.floor(t), stops.length - 2), f = t - k;
    return stops[k].map((v, c) => Math.round(v + (stops[k + 1][c] - v) * f));
  });
})();

function drawSpectrogram(canvas, x, rate) {
  const g = canvas2d(canvas);
  const { width: w, height: h } = canvas;
  const n = 2048, bins = n / 2, nyquist = rate / 2, fmin = 20;
  const win = Float32Array.from({ length: n }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)));
  // Rows on a log-frequency axis: the bin range each pixel row covers (top row = Nyquist).
  const lo = new Uint16Array(h), hi = new Uint16Array(h);
  for (let y = 0; y < h; y++) {
    const f0 = fmin * (nyquist / fmin) ** ((h - 1 - y) / h), f1 = fmin * (nyquist / fmin) ** ((h - y) / h);
    lo[y] = Math.min(bins - 1, Math.max(1, Math.floor((f0 / nyquist) * bins)));
    hi[y] = Math.min(bins - 1, Math.max(lo[y], Math.ceil((f1 / nyquist) * bins) - 1));
  }
  const hop = Math.max(1, (x.length - n) / Math.max(1, w - 1));
  const db = new Float32Array(w * h);
  const re = new Float32Array(n), im = new Float32Array(n), mag = new Float32Array(bins);
  let top = -Infinity;
  for (let col = 0; col < w; col++) {
    const start = Math.round(col * hop);
    let mean = 0; // remove DC per frame so an offset does not swamp the lowest rows
    for (let i = 0; i < n; i++) mean += x[start + i] || 0;
    mean /= n;
    for (let i = 0; i < n; i++) { re[i] = ((x[start + i] || 0) - mean) * win[i]; im[i] = 0; }
    fft(re, im);
    for (let k = 0; k < bins; k++) mag[k] = re[k] * re[k] + im[k] * im[k];
    for (let y = 0; y < h; y++) {
      let m = 0;
      for (let k = lo[y]; k <= hi[y]; k++) m = Math.max(m, mag[k]);
      const v = 10 * Math.log10(m + 1e-12);
      db[y * w + col] = v;
      if (v > top) top = v;
    }
  }
  const range = 90;
  const img = g.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const t = Math.max(0, Math.min(1, (db[i] - top + range) / range));
    const [r, gg, b] = RAMP[Math.round(t * 255)];
    img.data[4 * i] = r; img.data[4 * i + 1] = gg; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  canvas.dataset.drawn = "1";
}

// ------------------------------------------------------------------------ history
const saved = () => load(HISTORY, []);

function addHistory(entry) {
  save(HISTORY, [entry, ...saved().filter((e) => e.id !== entry.id)].slice(0, HISTORY_MAX));
  renderHistory();
}

function button(text, label, onClick, cls = "ghost small") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

async function downloadEntry(entry) {
  try {
    const blob = await (await call(entry.url)).blob();
    const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: `stable-audio-${entry.seed}.${entry.format}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  } catch (err) { showError(expired(err)); }
}

function expired(err) {
  return err.status === 404 ? new ApiError(404, "That output is no longer on the server (outputs are kept for a limited time).") : err;
}

function renderHistory() {
  const list = $("history");
  const entries = saved();
  list.replaceChildren();
  $("history-empty").hidden = entries.length > 0;
  $("history-clear").hidden = entries.length === 0;
  for (const e of entries) {
    const li = document.createElement("li");
    li.dataset.jobId = e.id;
    if (e.id === state.shown) li.setAttribute("aria-current", "true");
    const text = document.createElement("div");
    text.className = "h-text";
    const p = document.createElement("p");
    p.className = "h-prompt";
    p.textContent = e.prompt;
    const meta = document.createElement("p");
    meta.className = "h-meta";
    const when = e.created ? new Date(e.created).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
    meta.textContent = [`seed ${e.seed}`, e.duration != null ? `${Number(e.duration).toFixed(1)} s` : "", e.format, when].filter(Boolean).join(" · ");
    text.append(p, meta);
    const acts = document.createElement("div");
    acts.className = "h-acts";
    acts.append(
      button("Play", `Play “${e.prompt}”`, () => showResult(e, true).catch((err) => showError(expired(err)))),
      button("Download", `Download “${e.prompt}”`, () => downloadEntry(e)),
    );
    li.append(text, acts);
    list.append(li);
  }
}

// ------------------------------------------------------------------------ wiring
function init() {
  $("form").addEventListener("submit", generate);
  $("form").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("form").requestSubmit(); }
  });
  $("cancel").addEventListener("click", cancel);
  $("model").addEventListener("change", applyModel);
  $("seed-random").addEventListener("click", () => { $("seed").value = ""; $("seed").focus(); });
  $("seed-reuse").addEventListener("click", () => {
    const last = saved()[0];
    if (last) $("seed").value = String(last.seed);
    else showError(new ApiError(0, "There is no earlier generation to take a seed from."));
  });
  $("api_key").value = apiKey();
  $("api_key").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); saveKey(); } });
  $("key-save").addEventListener("click", saveKey);
  $("key-forget").addEventListener("click", () => { $("api_key").value = ""; saveKey(); });
  $("history-clear").addEventListener("click", () => { save(HISTORY, []); renderHistory(); });
  let timer;
  window.addEventListener("resize", () => {
    clearTimeout(timer);
    if (state.samples) for (const c of [$("waveform"), $("spectrogram")]) delete c.dataset.drawn;
    timer = setTimeout(draw, 150);
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", draw);
  renderHistory();
  updateKeyState();
  loadHealth();
}

init();
