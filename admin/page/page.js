// berth's rollout page: signs in with a token (typed, or from the URL fragment), shows the
// services and one service's symbols, instances, traffic, propagation and history, and
// changes the policy with If-Match. Live: the service is read again every 2 s and at once on
// every event of GET /api/v1/events. No cookies: the token lives in sessionStorage.
"use strict";

const KEY = "berth.token";
const $ = (id) => document.getElementById(id);
const state = { token: null, role: null, service: null, view: null, events: [], stream: null };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) e.append(c);
  return e;
}

function say(text) { $("status").textContent = text; }

function alarm(text) {
  const a = $("alert");
  a.textContent = text;
  a.hidden = !text;
}

const pct = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%");
const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " ms");

// === the API ===

async function api(method, path, body, ifMatch) {
  const headers = { Authorization: "Bearer " + state.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch !== undefined) headers["If-Match"] = '"' + ifMatch + '"';
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store", credentials: "omit" });
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { json = { detail: text }; }
  if (resp.status === 401) signOut("The token was refused: sign in again.");
  return { status: resp.status, body: json };
}

const servicePath = (rest) => "/api/v1/services/" + encodeURIComponent(state.service) + (rest || "");

// A change: sent with the version on screen; a conflict says so and shows the new state.
async function change(method, rest, body, what) {
  alarm("");
  const r = await api(method, servicePath(rest), body, state.view && state.view.version);
  if (r.status === 200) {
    const b = r.body;
    say(b.changed === false ? what + ": nothing to change (still version " + b.version + ")" : what + ": version " + b.version + " written — " + b.summary);
    if (b.warning) alarm("Warning: " + b.warning);
  } else if (r.status === 412) {
    alarm("Conflict: the policy changed to version " + r.body.current_version + " since this page read it. The page now shows the new version; check it and apply again.");
  } else {
    alarm(what + " refused (" + r.status + " " + (r.body.error || "") + "): " + (r.body.detail || ""));
  }
  await refresh();
  return r;
}

// === sign-in ===

function signOut(why) {
  sessionStorage.removeItem(KEY);
  state.token = state.role = null;
  if (state.stream) state.stream.abort();
  $("app").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  if (why) alarm(why);
}

async function signIn(token) {
  state.token = token;
  const r = await api("GET", "/api/v1/whoami");
  if (r.status !== 200) return signOut(r.status === 401 ? "Unknown token." : "Cannot sign in: " + r.body.detail);
  sessionStorage.setItem(KEY, token);
  state.role = r.body.role;
  $("who-name").textContent = r.body.name;
  $("who-role").textContent = r.body.role === "write" ? "may change" : "read only";
  $("who").hidden = false;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  alarm("");
  const readOnly = state.role !== "write";
  $("controls").disabled = readOnly;
  $("read-only").hidden = !readOnly;
  // Draw the service again at once: its buttons follow the role.
  state.view = null;
  await loadServices();
  await refresh();
  listen();
}

// === services ===

async function loadServices() {
  const r = await api("GET", "/api/v1/services");
  if (r.status !== 200) return;
  const list = $("services");
  list.replaceChildren();
  for (const s of r.body.services) {
    const counts = Object.entries(s.symbols).map(([k, v]) => k + " " + v).join(", ");
    const b = el("button", { type: "button", "data-service": s.name, "aria-current": s.name === state.service ? "true" : false, onclick: () => select(s.name) },
      el("span", { class: "name", text: s.name }), el("span", { class: "note", text: s.instances + " instance(s): " + counts }));
    list.append(el("li", {}, b));
  }
  const wanted = new URLSearchParams(location.search).get("service");
  if (!state.service && r.body.services.length) select(wanted || r.body.services[0].name);
}

async function select(name) {
  state.service = name;
  history.replaceState(null, "", "?service=" + encodeURIComponent(name));
  for (const b of document.querySelectorAll("#services button")) {
    if (b.dataset.service === name) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
  }
  state.view = null;
  await refresh();
}

async function refresh() {
  if (!state.service || !state.token) return;
  const [show, history, traffic] = await Promise.all([api("GET", servicePath()), api("GET", servicePath("/history")), api("GET", servicePath("/traffic"))]);
  if (show.status !== 200) { alarm("Cannot read " + state.service + ": " + show.body.detail); return; }
  const first = !state.view || state.view.version !== show.body.version;
  state.view = show.body;
  renderService(show.body, first);
  if (history.status === 200) renderHistory(history.body.entries, traffic.status === 200 ? traffic.body.series : []);
}

// === one service ===

function renderService(v, fresh) {
  $("service").hidden = false;
  $("service-title").textContent = v.service;
  const p = v.propagation;
  const applied = p.consumers === 0 ? "no consumer sidecar follows it" : "applied by " + p.applied + " of " + p.consumers + " consumer sidecars";
  const policy = v.policy || {};
  $("policy-line").textContent = "Policy version " + v.version + " (" + v.policy_source + "), default symbol " + (policy.default || "?") + " — " + applied + ".";
  $("policy-line").dataset.version = v.version;
  $("lagging").replaceChildren(...p.lagging.map((l) => el("li", { text: "Lagging: " + l.service + " " + l.instance + " — " + l.reason })));
  const symbols = new Set([...Object.keys(v.symbols), ...Object.keys(policy.weights || {}), ...Object.keys(v.traffic.symbols)]);
  if (policy.default) symbols.add(policy.default);
  const sorted = [...symbols].sort();
  // The cards are drawn anew on every refresh: keep the keyboard's place.
  const focused = document.activeElement && document.activeElement.id;
  $("symbols").replaceChildren(...sorted.map((s) => card(s, v, policy)));
  if (focused && $(focused) && document.activeElement !== $(focused)) $(focused).focus();
  if (fresh) fillControls(sorted, v, policy);
}

function card(symbol, v, policy) {
  const t = v.traffic.symbols[symbol] || { target_share: 0 };
  const isDefault = symbol === policy.default;
  const write = state.role === "write";
  const instances = v.symbols[symbol] || [];
  const rows = instances.map((i) => {
    const st = i.state + (i.warmup_progress !== undefined ? " " + Math.round(i.warmup_progress * 100) + "%" : "");
    return el("tr", { "data-address": i.address },
      el("td", { text: i.address + (i.overridden ? " (override)" : "") }),
      el("td", {}, el("span", { class: "state state-" + i.state, text: st })),
      el("td", { text: i.age_seconds === null ? "–" : i.age_seconds + " s" }),
      el("td", { text: i.version || "–" }));
  });
  const table = el("table", { class: "instances" },
    el("caption", { text: instances.length + " instance(s)" }),
    el("thead", {}, el("tr", {}, ...["Instance", "State", "Age", "Version"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows));
  const share = (label, value) => el("div", { class: "share" },
    el("span", { text: label + " " + pct(value) }),
    el("meter", { min: "0", max: "1", value: String(value || 0), "aria-label": label + " share of " + symbol }));
  const buttons = isDefault ? [] : [
    el("button", { type: "button", id: "promote-" + symbol, disabled: !write, onclick: () => promote(symbol) }, "Promote " + symbol),
    el("button", { type: "button", id: "retire-" + symbol, class: "quiet", disabled: !write, onclick: () => retire(symbol) }, "Retire " + symbol),
  ];
  return el("article", { class: "card", "data-symbol": symbol, "aria-label": "symbol " + symbol },
    el("h3", {}, symbol, isDefault ? el("span", { class: "badge", text: "default" }) : ""),
    share("target", t.target_share), share("observed", t.observed_share),
    el("p", { class: "numbers", text: (t.rps || 0).toFixed(1) + " req/s · success " + pct(t.success_rate) + " · p50 " + ms(t.p50_ms) + " · p99 " + ms(t.p99_ms) }),
    table, el("div", { class: "row" }, ...buttons));
}

function fillControls(symbols, v, policy) {
  const weights = policy.weights || {};
  const box = $("weights-inputs");
  box.replaceChildren(...symbols.map((s) => {
    const id = "weight-" + s;
    const value = Object.keys(weights).length ? (weights[s] || 0) : (s === policy.default ? 100 : 0);
    return el("div", { class: "weight" }, el("label", { for: id, text: s + " (%)" }),
      el("input", { id, type: "number", min: "0", max: "100", step: "1", value: String(value), "data-symbol": s, oninput: sumWeights }));
  }));
  sumWeights();
  $("rules").value = JSON.stringify(policy.rules || [], null, 1);
  const all = Object.values(v.symbols).flat().filter((i) => i.registered);
  $("override-address").replaceChildren(...all.map((i) => el("option", { value: i.address, text: i.address + " (" + i.symbol + ")" })));
  $("rollback").textContent = v.version > 0 ? "Roll back to version " + (v.version - 1) : "Roll back";
  $("rollback").disabled = v.version === 0;
}

function sumWeights() {
  const sum = [...document.querySelectorAll("#weights-inputs input")].reduce((a, i) => a + (Number(i.value) || 0), 0);
  $("weights-sum").textContent = "Sum: " + sum + "%" + (sum === 100 ? "" : " (must be 100)");
}

function promote(symbol) { return change("POST", "/promote", { symbol }, "Promote " + symbol); }

function retire(symbol) {
  return change("POST", "/symbols/" + encodeURIComponent(symbol) + "/retire", {}, "Retire " + symbol);
}

// === history over the error rate ===

function renderHistory(entries, series) {
  $("history").tBodies[0].replaceChildren(...entries.map((e) => el("tr", { "data-version": e.version },
    el("td", { text: String(e.version) }), el("td", { text: e.at }), el("td", { text: e.author }), el("td", { text: e.summary }))));
  const W = 640, H = 140, NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Error rate over time with policy versions");
  const now = Date.now();
  const times = entries.map((e) => Date.parse(e.at)).concat(series.map((p) => p.at_ms));
  const start = Math.min(now - 2 * 60000, ...times), span = Math.max(1, now - start);
  const top = Math.max(0.05, ...series.map((p) => p.error_rate));
  const x = (t) => 30 + ((t - start) / span) * (W - 40), y = (r) => H - 20 - (r / top) * (H - 40);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text) n.textContent = text;
    svg.append(n);
    return n;
  };
  add("line", { x1: 30, y1: H - 20, x2: W - 10, y2: H - 20, class: "axis" });
  add("text", { x: 2, y: y(top) + 4, class: "label" }, pct(top));
  add("text", { x: 2, y: H - 16, class: "label" }, "0%");
  if (series.length) add("polyline", { points: series.map((p) => x(p.at_ms) + "," + y(p.error_rate)).join(" "), class: "rate" });
  entries.forEach((e, n) => {
    const t = Date.parse(e.at);
    const g = add("line", { x1: x(t), y1: 10, x2: x(t), y2: H - 20, class: "version" });
    add("title", {}, "v" + e.version + " by " + e.author + ": " + e.summary);
    g.append(svg.lastChild);
    // Labels of versions written close together are stacked, not drawn over each other.
    const right = x(t) > W - 120;
    add("text", { x: x(t) + (right ? -3 : 3), y: 18 + (n % 5) * 12, "text-anchor": right ? "end" : "start", class: "label" }, "v" + e.version + " " + e.author);
  });
  $("chart").replaceChildren(svg);
}

// === live: events ===

// Server-sent events read with fetch, which (unlike EventSource) can send the token header.
async function listen() {
  if (state.stream) state.stream.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  try {
    const resp = await fetch("/api/v1/events", { headers: { Authorization: "Bearer " + state.token }, signal: ctl.signal, credentials: "omit" });
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
  } catch (_) { /* aborted or cut: retried below */ }
  if (state.stream === ctl && !ctl.signal.aborted) setTimeout(listen, 2000);
}

function describe(e) {
  const d = e.data || {};
  if (e.type === "policy.changed") return "version " + d.version + (d.author ? " by " + d.author : "") + ": " + (d.summary || "");
  return [d.instance, d.symbol && !d.instance ? d.symbol : null, d.reason].filter(Boolean).join(" — ");
}

function onEvent(e) {
  state.events.unshift(e);
  state.events.length = Math.min(state.events.length, 30);
  $("events").replaceChildren(...state.events.map((x) => el("li", { "data-type": x.type },
    el("time", { text: x.at.slice(11, 19) }), " " + x.service + " ", el("strong", { text: x.type }), " " + describe(x))));
  if (e.service === state.service) refresh();
  if (e.type.startsWith("instance.")) loadServices();
}

// === wiring ===

function wire() {
  $("sign-in-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("token").value.trim()); $("token").value = ""; });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("weights-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = {};
    for (const i of document.querySelectorAll("#weights-inputs input")) if (Number(i.value) > 0) body[i.dataset.symbol] = Number(i.value);
    change("PUT", "/weights", body, "Weights");
  });
  $("rules-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    let rules;
    try { rules = JSON.parse($("rules").value || "[]"); } catch (e) { return alarm("The rules are not JSON: " + e.message); }
    change("PUT", "/rules", rules, "Rules");
  });
  $("override-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const symbol = $("override-symbol").value.trim();
    change("PUT", "/symbols/" + encodeURIComponent($("override-address").value), { symbol: symbol || null }, "Override");
  });
  $("rollback").addEventListener("click", () => change("POST", "/rollback", {}, "Rollback"));
  setInterval(() => { if (!document.hidden) refresh(); }, 2000);
  // A token in the fragment (a link from a release platform) is taken and removed at once.
  const m = location.hash.match(/^#token=(.+)$/);
  if (m) {
    history.replaceState(null, "", location.pathname + location.search);
    return signIn(decodeURIComponent(m[1]));
  }
  const kept = sessionStorage.getItem(KEY);
  if (kept) signIn(kept);
}

document.addEventListener("DOMContentLoaded", wire);
