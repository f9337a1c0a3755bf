// p13n profile inspector (serving/inspector.py serves it). No framework, no build step.
// Safety: every string that comes from the API goes into the page through textContent or an SVG
// <text> node's textContent, never through innerHTML; the page's CSP forbids inline script anyway.
// The API key lives in sessionStorage (this tab only) and travels only in the Authorization header.
"use strict";

const KEY_STORE = "p13n-api-key";
const SVG = "http://www.w3.org/2000/svg";
const PREFIX = "/ui/users/";
const userId = decodeURIComponent(location.pathname.slice(PREFIX.length));
let profile = null;

function $(id) { return document.getElementById(id); }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

function status(text, isError) {
  const node = $("status");
  node.textContent = text || "";
  node.className = isError ? "status error" : "status";
}

function age(ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 129600) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function apiKey() { return sessionStorage.getItem(KEY_STORE); }

async function call(method, path, body) {
  const headers = { "authorization": `Bearer ${apiKey()}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                       cache: "no-store", credentials: "omit" });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("profile").hidden = true;
  $("forget").hidden = true;
  status(message || "Enter an API key of this user's tenant.", Boolean(message));
  $("key").focus();
}

async function load() {
  if (!apiKey()) { askForKey(); return; }
  $("key-form").hidden = true;
  $("forget").hidden = false;
  status("loading…");
  try {
    profile = await call("GET", `/v1/users/${encodeURIComponent(userId)}`);
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      sessionStorage.removeItem(KEY_STORE);
      askForKey(`${error.message} (HTTP ${error.status})`);
    } else {
      status(`${error.message}${error.status ? ` (HTTP ${error.status})` : ""}`, true);
    }
    return;
  }
  render(profile);
  status("");
}

function render(p) {
  $("who").textContent = `${p.user_id} · tenant ${p.tenant} · ${p.events_applied} events applied · as of ` +
    new Date(p.as_of_ms).toISOString().replace(".000Z", "Z");
  renderCounts(p.event_counts, p.horizons);
  renderTexts($("preferences"), p.preferences.slice().reverse(), (x) => [age(p.as_of_ms - x.ts_ms)], "no standing preferences");
  renderTexts($("memories"), p.memories, (x) => [x.role, age(p.as_of_ms - x.timestamp)], "no memories");
  renderHistory(p.history, p.as_of_ms);
  const ids = [];
  for (const h of p.history.slice().reverse()) if (!ids.includes(h.item_id)) ids.push(h.item_id);
  $("try-input").dataset.score = ids.slice(0, 20).join("\n");
  $("try-input").dataset.rewrite = "What should I pick for this weekend?";
  switchTry();
  $("profile").hidden = false;
  renderAttributes(p.attribute_horizons);  // once shown: the charts take the width they are given
  renderClock(p.interest_clock_utc);
}

// Two bars per attribute: short horizon above long, each scaled to its own column's largest magnitude.
function renderAttributes(view) {
  const chart = $("attributes");
  clear(chart);
  const legend = $("attr-legend");
  clear(legend);
  legend.append("(", el("span", `${view.short.horizon} τ=${age(view.short.tau_s * 1000)}`, "legend-short"), " and ",
                el("span", `${view.long.horizon} τ=${age(view.long.tau_s * 1000)}`, "legend-long"),
                "; each bar scaled to its horizon's largest)");
  const rows = view.top;
  if (!rows.length) { chart.setAttribute("height", 24); chart.append(svg("text", { x: 0, y: 16 }, "no attributes yet")); return; }
  const width = Math.max(chart.clientWidth, 480), labelW = Math.min(260, width / 3), valueW = 60, rowH = 30, barH = 11;
  const maxShort = Math.max(...rows.map((r) => Math.abs(r.short)), 1e-9);
  const maxLong = Math.max(...rows.map((r) => Math.abs(r.long)), 1e-9);
  const span = width - labelW - valueW;
  chart.setAttribute("viewBox", `0 0 ${width} ${rows.length * rowH}`);
  chart.setAttribute("height", rows.length * rowH);
  rows.forEach((r, i) => {
    const y = i * rowH;
    chart.append(svg("text", { x: 0, y: y + 18 }, r.attribute));
    for (const [which, value, max, dy] of [["short", r.short, maxShort, 3], ["long", r.long, maxLong, 3 + barH + 2]]) {
      const w = Math.abs(value) / max * span;
      const bar = svg("rect", { x: labelW, y: y + dy, width: w.toFixed(2), height: barH,
                                class: `bar ${which}${value < 0 ? " negative" : ""}` });
      bar.append(svg("title", {}, `${r.attribute} · ${which}: ${value}`));
      chart.append(bar);
      chart.append(svg("text", { x: labelW + w + 4, y: y + dy + barH - 1 }, value.toFixed(2)));
    }
  });
}

function renderClock(shares) {
  const chart = $("clock");
  clear(chart);
  const width = Math.max(chart.clientWidth, 240), height = 150, bottom = 18, slot = width / 24;
  const max = Math.max(...shares, 1e-9);
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.setAttribute("height", height);
  chart.append(svg("line", { x1: 0, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }));
  shares.forEach((share, hour) => {
    const h = share / max * (height - bottom - 6);
    const bar = svg("rect", { x: (hour * slot + 2).toFixed(2), y: (height - bottom - h).toFixed(2), width: (slot - 4).toFixed(2),
                              height: h.toFixed(2), class: "bar hour" });
    bar.append(svg("title", {}, `${String(hour).padStart(2, "0")}:00 UTC · ${(share * 100).toFixed(1)}%`));
    chart.append(bar);
    if (hour % 3 === 0) chart.append(svg("text", { x: hour * slot + 2, y: height - 4 }, String(hour).padStart(2, "0")));
  });
}

function renderCounts(counts, horizons) {
  const body = $("counts").tBodies[0];
  clear(body);
  for (const [type, weight] of Object.entries(counts).sort((a, b) => b[1] - a[1])) {
    const row = body.insertRow();
    row.append(el("td", type), el("td", weight.toFixed(2), "num"));
  }
  $("horizons").textContent = "embeddings: " + Object.entries(horizons)
    .map(([name, h]) => `${name} ${h.active ? "active" : "empty"}`).join(", ");
}

function renderTexts(list, entries, tags, empty) {
  clear(list);
  if (!entries.length) { list.append(el("li", empty, "muted")); return; }
  for (const entry of entries) {
    const item = el("li");
    for (const tag of tags(entry)) item.append(el("span", tag, "tag"));
    item.append(el("span", entry.text, "text"));
    list.append(item);
  }
}

function renderHistory(history, asOf) {
  const body = $("history").tBodies[0];
  clear(body);
  for (const h of history.slice().reverse()) {
    const row = body.insertRow();
    const type = el("td");
    type.append(el("span", h.type, ["dislike", "skip"].includes(h.type) ? "tag bad" : "tag"));
    row.append(el("td", age(asOf - h.ts_ms), "num"), type, el("td", h.item_id), el("td", h.text || ""));
  }
}

function endpoint() { return document.querySelector("input[name=endpoint]:checked").value; }

function switchTry() {
  const input = $("try-input");
  const which = endpoint();
  $("try-label").textContent = which === "score" ? "candidate item ids, one per line" : "prompt";
  input.value = input.dataset[which] || "";
}

async function runTry(event) {
  event.preventDefault();
  const which = endpoint();
  const input = $("try-input");
  input.dataset[which] = input.value;
  const body = { user_id: userId };
  const budget = parseFloat($("budget").value);
  if (budget > 0) body.budget_ms = budget;
  if (which === "score") {
    body.candidates = input.value.split(/[\n,]+/).map((s) => s.trim()).filter(Boolean).map((id) => ({ item_id: id }));
    body.explain = true;
  } else {
    body.prompt = input.value;
  }
  $("try-run").disabled = true;
  status(`POST /v1/${which}…`);
  try {
    showResult(which, await call("POST", `/v1/${which}`, body));
    status("");
  } catch (error) {
    status(`${error.message}${error.status ? ` (HTTP ${error.status})` : ""}`, true);
  } finally {
    $("try-run").disabled = false;
  }
}

function showResult(which, answer) {
  const degraded = $("try-degraded");
  clear(degraded);
  if (answer.degraded.length) for (const reason of answer.degraded) degraded.append(el("span", reason, "tag bad"));
  else degraded.append(el("span", "none (the full path ran)", "tag good"));
  const timings = $("try-timings").tBodies[0];
  clear(timings);
  for (const [stage, ms] of Object.entries(answer.timings_ms)) {
    timings.insertRow().append(el("td", stage), el("td", Number(ms).toFixed(2), "num"));
  }
  const out = $("try-answer");
  clear(out);
  if (which === "score") {
    const table = el("table");
    table.id = "try-items";
    const head = table.createTHead().insertRow();
    for (const title of ["#", "item", "score"]) head.append(el("th", title));
    const body = table.createTBody();
    answer.items.forEach((item, i) => {
      body.insertRow().append(el("td", i + 1, "num"), el("td", item.item_id), el("td", item.score.toFixed(4), "num"));
    });
    out.append(table);
  } else {
    for (const message of answer.messages) {
      const box = el("div", null, "message");
      box.append(el("span", message.role, "tag"), el("span", typeof message.content === "string"
        ? message.content : JSON.stringify(message.content)));
      out.append(box);
    }
  }
  $("try-raw").textContent = JSON.stringify(answer, null, 2);
  $("try-result").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key").value.trim());
    $("key").value = "";
    load();
  });
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); askForKey(); });
  for (const radio of document.querySelectorAll("input[name=endpoint]")) radio.addEventListener("change", switchTry);
  $("try-form").addEventListener("submit", runTry);
  load();
});
