// The page: upload, streamed steps, the answer, the map, chat, trace and batch tabs.
// Every piece of text from the server (model text included) is inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const STEPS = ["perceive", "retrieve", "reason", "verify", "decide"];
let current = null; // the session shown
let busy = false;
let photoMap = null;
let batchMap = null;
let batchRows = [];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const fmt = (value, digits) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function setBusy(on) {
  busy = on;
  document.body.classList.toggle("busy", on);
  $("send").disabled = on;
  $("photo-input").disabled = on;
}

// -- server-sent events over fetch (POST bodies) -----------------------------------------------

async function streamTurn(response, onEvent) {
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error || message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

// -- steps -------------------------------------------------------------------------------------

function resetSteps() {
  const list = $("steps");
  list.replaceChildren(...STEPS.map((step) => el("li", { "data-step": step, class: "pending" }, step)));
}

function stepItem(step) {
  let item = $("steps").querySelector(`[data-step="${step}"]`);
  if (!item) {
    item = el("li", { "data-step": step });
    $("steps").append(item);
  }
  return item;
}

// The step in progress, as the server measured it: "reason: 120 tokens at 14.8 tokens/s, at most 12 s left".
function showLive(report) {
  const item = stepItem(report.step);
  item.className = "running";
  if (report.tokens !== null) item.dataset.tokens = String(report.tokens);
  item.replaceChildren(el("strong", null, report.step), el("span", { class: "live" }, ` ${report.text}`));
}

function showStep(report) {
  const item = stepItem(report.step);
  item.className = report.error ? "failed" : "done";
  const time = report.duration_s === null ? "" : ` ${report.duration_s.toFixed(2)} s`;
  // A VLM step keeps the count of tokens it generated (the last live report's).
  const tokens = item.dataset.tokens ? ` · ${item.dataset.tokens} tokens` : "";
  item.replaceChildren(...[
    el("strong", null, report.step), el("span", { class: "time" }, time),
    report.summary ? el("span", { class: "summary" }, ` — ${report.summary}`) : null,
    tokens ? el("span", { class: "tokens" }, tokens) : null,
    report.error ? el("span", { class: "step-error" }, ` — ${report.error}`) : null,
  ].filter((node) => node !== null));
}

// -- rendering a session -----------------------------------------------------------------------

function renderAnswer(view) {
  const p = view.prediction;
  $("answer").hidden = !p;
  $("details").hidden = !p;
  $("chat").hidden = false;
  $("session-id").textContent = `session ${view.session_id} · resume in the terminal: geosleuth chat --resume ${view.session_id}`;
  $("photo").src = `/api/sessions/${encodeURIComponent(view.session_id)}/image`;
  if (p) {
    $("status").textContent = p.status;
    $("status").className = `badge status-${p.status}`;
    $("place").textContent = p.ok ? (p.place ? p.place.hierarchy : "unknown place") : "no answer";
    $("coordinate").textContent = p.ok ? `${fmt(p.lat, 4)}, ${fmt(p.lon, 4)}` : `why: ${p.failure_reason}`;
    const what = p.levels ? "confidence (P within 25 km)" : "confidence";
    $("confidence").textContent = (p.confidence === null ? "" : `${what} ${fmt(p.confidence, 2)} · `) +
      `sources: ${p.sources_used.join(", ") || "none"}` +
      (p.missing_stages.length ? ` · missing: ${p.missing_stages.join(", ")}` : "");
    $("levels").hidden = !p.levels;
    $("levels").tBodies[0].replaceChildren(...(p.levels ? [
      el("tr", null, ...p.levels.probabilities.map((l) => el("th", null, l.level))),
      el("tr", null, ...p.levels.probabilities.map((l) => el("td", { "data-level": l.level }, fmt(l.p, 2)))),
      el("tr", null, el("td", { colspan: String(p.levels.probabilities.length), class: "hint" },
        `calibration ${p.levels.calibration}`)),
    ] : []));
    $("failures").replaceChildren(...p.failures.map((f) => el("li", null, `${f.step}: ${f.error}`)));
    $("more").tBodies[0].replaceChildren(...Object.entries(p.more).map(([key, value]) =>
      el("tr", null, el("th", null, key), el("td", null, typeof value === "object" ? JSON.stringify(value) : value))));
  }
  const exif = view.exif;
  $("exif").textContent = exif
    ? `EXIF GPS in the file: ${fmt(exif.lat, 4)}, ${fmt(exif.lon, 4)}` +
      (exif.distance_km === null ? "" : ` — ${fmt(exif.distance_km, 1)} km from the answer`)
    : "no EXIF GPS in the file";
  $("alternatives").tBodies[0].replaceChildren(...view.alternatives.map((a) => el("tr", null,
    el("td", null, a.rank), el("td", null, a.place || "–"), el("td", null, fmt(a.lat, 4)), el("td", null, fmt(a.lon, 4)),
    el("td", null, a.source), el("td", null, fmt(a.score, 3)), el("td", null, fmt(a.confidence, 3)))));
  $("clues").replaceChildren(...view.clues.map((c) => el("li", null, el("strong", null, c.observation), ` → ${c.implication}`)));
  if (!view.clues.length) $("clues").append(el("li", { class: "hint" }, "none recorded"));
  const text = p ? p.text : null;
  $("text-summary").textContent = text ? text.summary : "not read (OCR is off: text.ocr)";
  $("text-places").replaceChildren(...(text ? text.places.map((m) => el("li", null,
    el("strong", null, `“${m.read}”`), ` → ${m.name} (${m.country_code}), population ${m.population.toLocaleString()}` +
    (m.similarity < 1 ? `, fuzzy match ${fmt(m.similarity, 2)}` : ""))) : []));
  $("hypotheses").tBodies[0].replaceChildren(...view.hypotheses.map((h) => el("tr", null,
    el("td", null, `${h.variant}#${h.sample}`), el("td", null, h.place || "–"), el("td", null, fmt(h.lat, 4)),
    el("td", null, fmt(h.lon, 4)), el("td", null, fmt(h.confidence, 2)), el("td", null, `${h.model} (${h.template})`))));
  if (!view.hypotheses.length) {
    $("hypotheses").tBodies[0].append(el("tr", null, el("td", { colspan: "6", class: "hint" }, "no usable VLM answer")));
  }
  $("hints").textContent = view.constraints.length
    ? `active hints: ${view.constraints.map((c) => c.label).join("; ")}` : "";
  photoMap.setLayers(view.layers);
  photoMap.fit();
}

function renderHistory(history) {
  $("history").replaceChildren(...history.map((turn) => el("div", { class: `turn turn-${turn.kind}` },
    turn.user ? el("p", { class: "you" }, el("strong", null, "you: "), turn.user) : null,
    el("p", { class: "reply" }, el("strong", null, "geosleuth: "), turn.reply))));
  $("history").scrollTop = $("history").scrollHeight;
}

function renderSession(view) {
  current = view;
  renderAnswer(view);
  renderHistory(view.history);
  const id = encodeURIComponent(view.session_id);
  $("download-trace").href = `/api/sessions/${id}/trace.json`;
  $("download-prediction").href = `/api/sessions/${id}/prediction.json`;
  if (!$("tab-trace").hidden) loadTrace();
  if (location.hash !== `#session=${view.session_id}`) history.replaceState(null, "", `#session=${id}`);
}

function loadTrace() {
  if (!current) return;
  const url = `/api/sessions/${encodeURIComponent(current.session_id)}/trace.html`;
  if ($("trace-frame").getAttribute("src") !== url) $("trace-frame").setAttribute("src", url);
}

// -- actions -----------------------------------------------------------------------------------

function onTurnEvent(event, data) {
  if (event === "progress") showLive(data);
  else if (event === "step") showStep(data);
  else if (event === "result") {
    renderSession(data.session);
    refreshSessions();
  } else if (event === "error") showError(data.message);
}

async function upload(file) {
  if (busy || !file) return;
  showError("");
  setBusy(true);
  resetSteps();
  try {
    const response = await fetch(`/api/sessions?name=${encodeURIComponent(file.name)}`, {
      method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
    });
    await streamTurn(response, onTurnEvent);
  } catch (error) {
    showError(error.message);
  } finally {
    setBusy(false);
    $("photo-input").value = "";
  }
}

async function send(text) {
  if (busy || !current || !text.trim()) return;
  showError("");
  setBusy(true);
  renderHistory([...current.history, { user: text, reply: "…", kind: "pending" }]);
  try {
    const response = await fetch(`/api/sessions/${encodeURIComponent(current.session_id)}/messages`, {
      method: "POST", body: JSON.stringify({ text }), headers: { "Content-Type": "application/json" },
    });
    await streamTurn(response, onTurnEvent);
    $("message").value = "";
  } catch (error) {
    showError(error.message);
    renderHistory(current.history);
  } finally {
    setBusy(false);
  }
}

async function openSession(id) {
  showError("");
  const response = await fetch(`/api/sessions/${encodeURIComponent(id)}`);
  const body = await response.json();
  if (!response.ok) {
    showError(body.error);
    return;
  }
  resetSteps();
  for (const step of body.steps) showStep({ ...step, summary: "" });
  renderSession(body);
}

async function refreshSessions() {
  const response = await fetch("/api/sessions");
  if (!response.ok) return;
  const { sessions } = await response.json();
  $("sessions").replaceChildren(...sessions.map((s) => {
    const link = el("a", { href: `#session=${encodeURIComponent(s.session_id)}`, "data-session": s.session_id },
      el("strong", null, s.image_name), el("br"), el("small", null, `${s.place || "not located"} · ${s.turns} turns · ${s.session_id}`));
    return el("li", current && current.session_id === s.session_id ? { class: "current" } : null, link);
  }));
}

function sessionFromHash() {
  const match = location.hash.match(/^#session=([^&]+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

// -- batch -------------------------------------------------------------------------------------

async function loadBatch(file) {
  showError("");
  const response = await fetch(`/api/batch?name=${encodeURIComponent(file.name)}`, {
    method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
  });
  const body = await response.json();
  if (!response.ok) {
    showError(body.error);
    return;
  }
  batchRows = body.rows;
  const statuses = [...new Set(batchRows.map((r) => r.status))].sort();
  $("batch-statuses").replaceChildren(...statuses.map((status) => el("label", null,
    el("input", { type: "checkbox", "data-status": status, checked: "" }), ` ${status}`)));
  drawBatch();
}

function drawBatch() {
  const minimum = Number($("batch-min-conf").value);
  $("batch-min-conf-value").textContent = minimum.toFixed(2);
  const wanted = new Set([...$("batch-statuses").querySelectorAll("input:checked")].map((i) => i.dataset.status));
  const shown = batchRows.filter((r) => wanted.has(r.status) && (minimum === 0 || (r.confidence ?? 0) >= minimum));
  $("batch-count").textContent = `${shown.length} of ${batchRows.length} shown`;
  $("batch-table").tBodies[0].replaceChildren(...shown.map((r) => el("tr", { class: `status-${r.status}` },
    el("td", null, r.id), el("td", null, r.status), el("td", null, r.place || "–"), el("td", null, fmt(r.lat, 4)),
    el("td", null, fmt(r.lon, 4)), el("td", null, fmt(r.confidence, 2)), el("td", null, r.error || ""))));
  const layers = {};
  for (const r of shown) {
    if (r.lat === null) continue;
    (layers[r.status] = layers[r.status] || []).push({ lat: r.lat, lon: r.lon,
      label: `${r.id}: ${r.place || ""} (confidence ${fmt(r.confidence, 2)})` });
  }
  batchMap.setLayers(layers);
  batchMap.fit();
}

// -- wiring ------------------------------------------------------------------------------------

function showTab(name) {
  for (const button of $("tabs").querySelectorAll("button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const tab of ["photo", "trace", "batch"]) $(`tab-${tab}`).hidden = tab !== name;
  if (name === "trace") loadTrace();
  if (name === "batch") {
    if (!batchMap) {
      batchMap = new GeoMap("batch-map");
      batchMap.setTiles($("osm-tiles").checked);
    }
    batchMap.fit();
  }
  if (name === "photo") photoMap.fit();
}

function main() {
  photoMap = new GeoMap("map");
  for (const button of $("tabs").querySelectorAll("button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  $("osm-tiles").addEventListener("change", (e) => {
    photoMap.setTiles(e.target.checked);
    if (batchMap) batchMap.setTiles(e.target.checked);
  });
  $("photo-input").addEventListener("change", (e) => upload(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    upload(e.dataTransfer.files[0]);
  });
  $("message-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send($("message").value);
  });
  $("resume-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("resume-id").value.trim();
    if (id) location.hash = `#session=${encodeURIComponent(id)}`;
  });
  $("photo").addEventListener("error", () => { $("photo").hidden = true; });
  $("photo").addEventListener("load", () => { $("photo").hidden = false; });
  $("batch-file").addEventListener("change", (e) => e.target.files[0] && loadBatch(e.target.files[0]));
  $("batch-min-conf").addEventListener("input", drawBatch);
  $("batch-statuses").addEventListener("change", drawBatch);
  window.addEventListener("hashchange", () => {
    const id = sessionFromHash();
    if (id && (!current || current.session_id !== id)) openSession(id);
  });
  resetSteps();
  refreshSessions();
  const id = sessionFromHash();
  if (id) openSession(id);
  document.body.dataset.ready = "1";
}

main();
