// The Videos page: plain JavaScript, no build step. It talks to its own app (api/...), to
// Airflow's REST API (re-style: the same call the trigger form makes) and, for uploads and
// playback, to storage through the one-blob links the app hands out. The sign-in is Airflow's
// cookie, sent by the browser on every same-origin request.
"use strict";

const AIRFLOW = new URL("../", location.href); // Airflow's root, wherever it is served
const $ = (sel) => document.querySelector(sel);
const ACTIVE = new Set(["queued", "running"]);
let cursor = 0, refreshTimer = null, following = null, styles = [];

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, {credentials: "same-origin", ...options,
    headers: {"Content-Type": "application/json", Accept: "application/json", ...(options.headers || {})}});
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { location.reload(); throw new Error("signed out"); }
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    throw new Error(detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
}

function took(seconds) {
  if (seconds == null) return "";
  if (seconds < 90) return `${seconds.toFixed(0)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function runLink(runId) {
  return runId ? new URL(`dags/video_stylize/runs/${encodeURIComponent(runId)}`, AIRFLOW).href : null;
}

function styleLabel(style) {
  // An uploaded checkpoint by its file name (the full wasb:// address shows on hover).
  return style.startsWith("wasb://") ? style.split("/").pop().replace(/\.pth$/, "") : style;
}

function size(bytes) {
  return bytes < 2 ** 20 ? `${Math.max(1, Math.round(bytes / 1024))} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

function stateBadge(out) {
  let text = out.state;
  if (out.state === "running" && out.chunks && out.chunks.total) text += ` ${out.chunks.done}/${out.chunks.total}`;
  return `<span class="state ${esc(out.state)}" data-state="${esc(out.state)}">${esc(text)}</span>`;
}

function outputLine(out) {
  const link = runLink(out.run_id);
  const variant = [out.output_height ? `${out.output_height}p` : "", out.crf !== 18 ? `CRF ${out.crf}` : ""]
    .filter(Boolean).join(", ");
  return `<div class="out">${stateBadge(out)} <b title="${esc(out.style)}">${esc(styleLabel(out.style))}</b>${variant ? ` <span class="muted">${esc(variant)}</span>` : ""}
    ${out.seconds != null ? `<span class="muted">took ${took(out.seconds)}</span>` : ""}
    ${link ? `<a href="${esc(link)}" target="_top">run</a>` : ""}</div>`;
}

// ---- the list ----

async function loadList(reset = true) {
  if (reset) cursor = 0;
  const params = new URLSearchParams({cursor, limit: 20});
  if ($("#filter-state").value) params.set("state", $("#filter-state").value);
  if ($("#filter-style").value) params.set("style", $("#filter-style").value);
  const page = await api(`api/videos?${params}`);
  const body = $("#videos tbody");
  if (reset) body.innerHTML = "";
  for (const v of page.videos) {
    const row = document.createElement("tr");
    row.dataset.videoId = v.video_id;
    row.innerHTML = `<td><a href="#/video/${esc(v.video_id)}">${esc(v.name)}</a></td><td>${esc(when(v.arrived))}</td>
      <td>${v.outputs.map(outputLine).join("") || '<span class="state queued" data-state="queued">queued</span>'}</td>`;
    body.appendChild(row);
  }
  cursor = page.next_cursor;
  $("#more").hidden = page.next_cursor == null;
  $("#empty").hidden = body.children.length > 0;
  $("#count").textContent = `${page.total} video${page.total === 1 ? "" : "s"} in all`;
  const busy = page.videos.some((v) => v.outputs.some((o) => ACTIVE.has(o.state)));
  schedule(busy || following ? 3000 : 15000, () => !$("#list-view").hidden && loadList(true));
}

function schedule(ms, fn) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => Promise.resolve().then(fn).catch(() => {}), ms);
}

// ---- one video ----

function figuresInWords(m) {
  if (!m) return "The manifest is not there (yet).";
  const parts = [`${m.frames} frames, ${Number(m.duration).toFixed(1)} s at ${Number(m.fps).toFixed(2)} fps`];
  const s = m.scoring || {};
  if (s.frames_per_second) parts.push(`styled at ${s.frames_per_second} frames per second over ${m.chunks.length} chunk${m.chunks.length === 1 ? "" : "s"} (${s.chunk_seconds} s of scoring)`);
  if (m.output && m.output.width) parts.push(`the result is ${m.output.width}×${m.output.height}`);
  const f = m.flicker;
  if (f) parts.push(`flicker: warping error ${Number(f.warping_error).toPrecision(3)} against the source's own ${Number(f.source_warping_error).toPrecision(3)} (ratio ${f.ratio}) over ${f.pairs} frame pairs`);
  const a = m.azureml;
  if (a) {
    const cost = a.cost != null ? `at least ${a.cost.toFixed(4)} in the set prices` : "cost unknown (no azureml_prices set)";
    parts.push(`Azure ML: ${a.jobs} job${a.jobs === 1 ? "" : "s"} on ${a.vm_size}, ${Math.round(a.gpu_seconds || 0)} GPU-seconds, ${cost}`);
  } else {
    parts.push("scored on the workers (no Azure ML cost)");
  }
  return parts.join("; ") + ".";
}

function chunkChart(chunks) {
  if (!chunks || !chunks.length) return "";
  const w = 560, h = 120, pad = 24, bw = Math.max(4, Math.min(40, (w - pad) / chunks.length - 4));
  const max = Math.max(...chunks.map((c) => c.total_seconds || c.seconds || 0), 0.001);
  const bars = chunks.map((c, i) => {
    const secs = c.total_seconds || c.seconds || 0, bh = (h - pad) * secs / max, x = pad + i * (bw + 4);
    return `<rect x="${x}" y="${h - 14 - bh}" width="${bw}" height="${bh}" fill="#017cee"><title>chunk ${c.chunk}: ${c.frames} frames in ${secs} s (${c.fps} fps on ${esc(c.device)})</title></rect>
      <text x="${x}" y="${h - 2}">${c.chunk}</text>`;
  }).join("");
  return `<figure><svg class="chart" width="${w}" height="${h}" role="img" aria-label="seconds per chunk">
    <text x="0" y="10">${max.toFixed(1)} s</text>${bars}</svg><figcaption class="muted">Seconds per chunk (hover a bar for its figures)</figcaption></figure>`;
}

function outputCard(v, out) {
  let body = "";
  if (out.state === "done" && out.links) {
    body = `<div class="media">
      <figure><img class="preview" src="${esc(out.links.preview)}" alt="before and after"><figcaption>Before and after (one frame)</figcaption></figure>
      <figure><video class="styled" controls preload="metadata" src="${esc(out.links.video)}"></video><figcaption>The styled video</figcaption></figure>
    </div><p class="figures">${esc(figuresInWords(out.manifest))}</p>${chunkChart(out.manifest && out.manifest.chunks)}`;
  } else if (out.state === "done") {
    body = `<p class="muted">${esc(v.links_unavailable || "")}</p>`;
  } else if (out.state === "failed") {
    body = `<p class="failure error">${esc(out.failure)}</p>`;
  } else if (out.state === "running") {
    body = out.chunks && out.chunks.total ? `<p>${out.chunks.done} of ${out.chunks.total} chunks styled.</p>` : "<p>Preparing the chunks.</p>";
  } else if (out.state === "superseded") {
    body = `<p class="muted">${esc(out.error || "A newer upload of this video replaced it.")}</p>`;
  }
  return `<div class="card output" data-style="${esc(out.style)}" data-state="${esc(out.state)}">
    ${outputLine(out)}${body}</div>`;
}

async function loadVideo(id) {
  const v = await api(`api/videos/${encodeURIComponent(id)}`);
  $("#video-name").textContent = v.name;
  $("#video-meta").textContent = `${v.blob} · arrived ${when(v.arrived)} · ${size(v.size)}`;
  const container = $("#outputs");
  // Keep a playing video where it is: only redraw when something changed.
  const html = v.outputs.map((o) => outputCard(v, o)).join("");
  const signature = JSON.stringify(v.outputs.map((o) => [o.key, o.state, o.chunks, o.run_id]));
  if (container.dataset.signature !== signature) {
    container.innerHTML = html;
    container.dataset.signature = signature;
  }
  $("#restyle").dataset.blob = v.blob;
  $("#restyle").dataset.version = v.version;
  const busy = v.outputs.some((o) => ACTIVE.has(o.state)) || $("#restyle").dataset.pending;
  schedule(busy ? 3000 : 20000, () => !$("#video-view").hidden && loadVideo(id));
}

async function restyle(event) {
  event.preventDefault();
  const form = $("#restyle"), status = $("#restyle-status");
  const conf = {video_blob: form.dataset.blob, video_version: form.dataset.version, style: $("#restyle-style").value,
                output_height: Number($("#restyle-height").value), crf: Number($("#restyle-crf").value)};
  status.textContent = "Starting…";
  try {
    // Airflow's own endpoint and checks: the trigger form's params, validated by the DAG's schema.
    const run = await api(new URL("api/v2/dags/video_stylize/dagRuns", AIRFLOW).href,
                          {method: "POST", body: JSON.stringify({logical_date: null, conf})});
    status.innerHTML = `Started <a href="${esc(runLink(run.dag_run_id))}" target="_top">${esc(run.dag_run_id)}</a>.`;
    status.dataset.runId = run.dag_run_id;
    form.dataset.pending = "1";
    setTimeout(() => delete form.dataset.pending, 120000);
  } catch (e) {
    status.textContent = `Not started: ${e.message}`;
  }
}

// ---- uploads: straight to storage, in blocks, through a create/write-only link ----

function putBlock(url, data, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => (xhr.status < 300 ? resolve() : reject(new Error(`storage answered ${xhr.status}`)));
    xhr.onerror = () => reject(new Error("storage could not be reached (CORS on the blob service?)"));
    xhr.send(data);
  });
}

async function upload(file) {
  const status = $("#upload-status"), bar = $("#upload-progress");
  showError("");
  try {
    status.textContent = `Asking for a link for ${file.name}…`;
    const link = await api("api/uploads", {method: "POST", body: JSON.stringify({name: file.name, size: file.size})});
    bar.hidden = false; bar.value = 0;
    const ids = [], size = link.block_bytes;
    let sent = 0;
    for (let start = 0, i = 0; start < file.size || i === 0; start += size, i++) {
      const id = btoa(String(i).padStart(6, "0"));
      const piece = file.slice(start, start + size);
      await putBlock(`${link.url}&comp=block&blockid=${encodeURIComponent(id)}`, piece, (loaded) => {
        bar.value = Math.round(100 * (sent + loaded) / Math.max(1, file.size));
        status.textContent = `Uploading ${file.name}: ${bar.value}%`;
      });
      sent += piece.size;
      ids.push(id);
    }
    const list = `<?xml version="1.0" encoding="utf-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join("")}</BlockList>`;
    await new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", `${link.url}&comp=blocklist`);
      xhr.setRequestHeader("x-ms-blob-content-type", file.type || "application/octet-stream");
      xhr.onload = () => (xhr.status < 300 ? resolve() : reject(new Error(`storage answered ${xhr.status}`)));
      xhr.onerror = () => reject(new Error("storage could not be reached"));
      xhr.send(list);
    });
    bar.value = 100;
    const done = await api("api/uploads/done", {method: "POST", body: JSON.stringify({blob: link.blob})});
    following = done.video_id;
    status.innerHTML = `Uploaded <a href="#/video/${esc(done.video_id)}">${esc(file.name)}</a>: it shows below once the pipeline picks it up.`;
    status.dataset.videoId = done.video_id;
    await loadList(true);
  } catch (e) {
    status.textContent = "";
    showError(`Upload of ${file.name} failed: ${e.message}`);
  } finally {
    $("#file").value = "";
  }
}

function setupUpload() {
  const drop = $("#drop");
  $("#file").addEventListener("change", (e) => e.target.files[0] && upload(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
  });
}

// ---- routing ----

async function route() {
  showError("");
  clearTimeout(refreshTimer);
  const match = location.hash.match(/^#\/video\/([A-Za-z0-9-]+)$/);
  $("#list-view").hidden = !!match;
  $("#video-view").hidden = !match;
  try {
    if (match) { $("#outputs").dataset.signature = ""; $("#restyle-status").textContent = ""; await loadVideo(match[1]); }
    else await loadList(true);
  } catch (e) {
    showError(e.message);
  }
}

async function init() {
  setupUpload();
  $("#filter-state").addEventListener("change", () => loadList(true).catch((e) => showError(e.message)));
  $("#filter-style").addEventListener("change", () => loadList(true).catch((e) => showError(e.message)));
  $("#more").addEventListener("click", () => loadList(false).catch((e) => showError(e.message)));
  $("#restyle").addEventListener("submit", restyle);
  window.addEventListener("hashchange", route);
  try {
    const s = await api("api/styles");
    styles = s.styles;
    for (const sel of [$("#filter-style"), $("#restyle-style")]) {
      for (const st of styles) sel.add(new Option(`${st.label} (${st.kind})`, st.style));
    }
  } catch (e) { showError(e.message); }
  await route();
}

init();
