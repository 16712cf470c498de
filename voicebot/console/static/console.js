// Operator console: plain browser JavaScript, no build step, nothing loaded from other hosts.
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

async function api(path, options = {}) {
  const response = await fetch("/console/api/" + path, { credentials: "same-origin", ...options });
  if (response.status === 401) { showLogin(); throw new Error("unauthorised"); }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showLogin() {
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login-panel").hidden = false;
}

async function showApp() {
  $("#login-panel").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  await Promise.allSettled([loadPacks(), loadConversations(), loadMetrics()]);
}

const fmt = (value) => (value === undefined ? "–" : value === null ? "n/a" : Number(value).toFixed(2));

async function loadPacks() {
  const { packs } = await api("packs");
  const body = $("#packs tbody");
  body.replaceChildren();
  const select = $("#try-lang");
  const chosen = select.value;
  select.replaceChildren();
  for (const p of packs) {
    const q = p.quality || {};
    const t = q.thresholds || {};
    const gate = el("td", { class: p.gate === "pass" ? "pass" : p.gate === "fail" ? "fail" : "no" }, p.gate);
    if (q.failures && q.failures.length) gate.title = q.failures.join("; ");
    body.append(el("tr", { "data-code": p.code },
      el("td", {}, p.code), el("td", {}, p.name),
      el("td", { class: p.enabled === "yes" ? "" : "no" }, p.enabled), el("td", {}, p.digit),
      el("td", { class: p.asr.startsWith("yes") ? "" : "no" }, p.asr), el("td", {}, p.tts),
      el("td", {}, p.mt), el("td", { class: "num" }, p.kb),
      el("td", { class: "num" }, `${fmt(q.asr_cer)} ≤ ${fmt(t.asr_cer_max)}`),
      el("td", { class: "num" }, `${fmt(q.answer_accuracy)} ≥ ${fmt(t.answer_accuracy_min)}`),
      el("td", { class: "num" }, `${fmt(q.text_accuracy)} ≥ ${fmt(t.text_accuracy_min)}`),
      el("td", { class: "num" }, `${fmt(q.tts_cer)} ≤ ${fmt(t.tts_cer_max)}`),
      gate));
    select.append(el("option", { value: p.code }, `${p.code} · ${p.name}`));
  }
  select.value = chosen || "en";
}

async function loadConversations() {
  const { conversations } = await api("conversations?limit=50");
  const body = $("#conversations tbody");
  body.replaceChildren();
  for (const c of conversations) {
    body.append(el("tr", {},
      el("td", {}, new Date(c.ts * 1000).toLocaleString()), el("td", {}, c.channel),
      el("td", {}, c.user), el("td", {}, c.lang), el("td", { class: "question" }, c.question),
      el("td", {}, (c.sources || []).join(", ")), el("td", { class: "num" }, Math.round(c.latency_ms)),
      el("td", {}, c.outcome)));
  }
  if (!conversations.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "no" }, "No conversations yet.")));
}

async function loadMetrics() {
  const m = await api("metrics");
  const tiles = [["ready", m.ready ? "yes" : "loading"], ["uptime", `${m.uptime_s} s`]];
  const requests = Object.entries(m.counters).filter(([k]) => k === "voicebot_http_requests_total");
  if (requests.length) tiles.push(["HTTP requests", requests[0][1]]);
  const errors = Object.values(m.errors).reduce((a, b) => a + b, 0);
  tiles.push(["errors", errors]);
  for (const [stage, s] of Object.entries(m.stages)) tiles.push([`${stage} (${s.count})`, `${s.mean_ms} ms`]);
  $("#metrics").replaceChildren(...tiles.map(([label, value]) =>
    el("div", { class: "tile" }, el("b", {}, value), el("span", {}, label))));
}

function showResult(r) {
  $("#try-result").hidden = false;
  $("#r-transcript").textContent = r.transcript ?? "(typed question — no speech recognition)";
  $("#r-translation").textContent = r.translation ?? "(none: answered from reviewed translations)";
  const list = $("#r-sources");
  list.replaceChildren();
  for (const s of r.sources) {
    list.append(el("li", {}, el("a", { href: s.url, target: "_blank", rel: "noopener noreferrer", class: "source" }, s.title),
      ` · as of ${s.as_of}`));
  }
  if (!r.sources.length) list.append(el("li", { class: "no" }, "no sources (the bot abstained)"));
  $("#r-answer").textContent = r.answer;
  const audio = $("#r-audio");
  if (r.audio) { audio.src = r.audio; audio.hidden = false; } else { audio.removeAttribute("src"); audio.hidden = true; }
  $("#r-timings").textContent = Object.entries(r.timings_ms).map(([k, v]) => `${k} ${Math.round(v)} ms`).join(" · ");
}

async function ask(body, headers = {}) {
  $("#try-status").textContent = "Answering…";
  $("#try-status").className = "";
  try {
    showResult(await api("try", { method: "POST", body, headers }));
    $("#try-status").textContent = "Done.";
    loadConversations().catch(() => {});
    loadMetrics().catch(() => {});
  } catch (err) {
    $("#try-status").textContent = `Failed: ${err.message}`;
    $("#try-status").className = "error";
  }
}

let recorder = null;
async function toggleRecording() {
  const button = $("#try-record");
  if (recorder) { recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    $("#try-status").textContent = "Recording is not available in this browser (needs HTTPS or localhost).";
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    button.classList.remove("recording");
    button.textContent = "● Record";
    const form = new FormData();
    form.append("lang", $("#try-lang").value);
    form.append("audio", new Blob(chunks, { type: chunks[0]?.type || "audio/webm" }), "question.webm");
    ask(form);
  };
  recorder.start();
  button.classList.add("recording");
  button.textContent = "■ Stop";
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const response = await fetch("/console/api/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: $("#token").value }),
    });
    if (response.ok) { $("#token").value = ""; $("#login-error").textContent = ""; showApp(); }
    else $("#login-error").textContent = "Wrong token.";
  });
  $("#logout").addEventListener("click", async () => {
    await fetch("/console/api/logout", { method: "POST", credentials: "same-origin" });
    showLogin();
  });
  $("#try-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("#try-text").value.trim();
    if (!text) return;
    ask(JSON.stringify({ lang: $("#try-lang").value, text }), { "Content-Type": "application/json" });
  });
  $("#try-record").addEventListener("click", () => toggleRecording().catch((err) => {
    $("#try-status").textContent = `Recording failed: ${err.message}`;
  }));
  $("#conv-refresh").addEventListener("click", () => loadConversations());
  setInterval(() => { if (!$("#app").hidden) loadMetrics().catch(() => {}); }, 5000);
  api("session").then(showApp, () => {});
});
