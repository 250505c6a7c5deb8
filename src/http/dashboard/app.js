// The AEX dashboard: polls GET /admin/metrics every two seconds with the admin token kept in
// session storage, and renders it. Every value reaches the page through textContent or an
// attribute, never as HTML, so names such as "<img src=x onerror=...>" show as text.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "aex.dashboard.token";
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  token: null,
  paused: false,
  timer: null,
  data: null,
  sort: { key: "burn", dir: -1 },
  timelineFor: null,
};

const $ = (id) => document.getElementById(id);

// ---------- building DOM without HTML strings ----------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function setText(node, text) {
  node.textContent = text === null || text === undefined ? "" : String(text);
}

// ---------- formatting ----------

// Money arrives as integer micro-USD; it is shown in dollars without going through floats for
// the digits.
function usd(micro) {
  if (micro === null || micro === undefined) return "–";
  const negative = micro < 0;
  const abs = Math.abs(Math.trunc(micro));
  const whole = Math.floor(abs / 1e6);
  let frac = String(abs % 1e6).padStart(6, "0").replace(/0+$/, "");
  if (frac.length < 2) frac = frac.padEnd(2, "0");
  return (negative ? "-$" : "$") + whole.toLocaleString("en-US") + "." + frac;
}

function count(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "not spending";
  if (seconds <= 0) return "exhausted";
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  if (d > 365) return "> 1 year";
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m`;
  return `${Math.max(1, Math.floor(seconds))}s`;
}

function time(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString();
}

function shortId(id) {
  const s = String(id || "");
  return s.length > 18 ? s.slice(0, 8) + "…" + s.slice(-6) : s;
}

function stateClass(s) {
  return "badge state-" + String(s || "unknown").toLowerCase().replace(/[^a-z_]/g, "");
}

// ---------- token and session ----------

function takeFragmentToken() {
  const hash = window.location.hash;
  if (!hash.startsWith("#token=")) return null;
  const token = decodeURIComponent(hash.slice("#token=".length));
  // The fragment never reaches the server; drop it from the address bar and history too.
  history.replaceState(null, "", window.location.pathname + window.location.search);
  return token || null;
}

function login(token) {
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("board").hidden = false;
  $("pause").hidden = false;
  $("logout").hidden = false;
  setLive("connecting", "connecting…");
  poll();
}

function logout(message) {
  state.token = null;
  state.data = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(state.timer);
  $("board").hidden = true;
  $("pause").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  setText($("login-error"), message || "");
  setText($("scope"), "");
  setLive("idle", "not connected");
  $("token").value = "";
  $("token").focus();
}

function setLive(kind, text) {
  $("live").dataset.state = kind;
  setText($("live-text"), text);
}

async function api(path, method = "GET") {
  const response = await fetch(path, {
    method,
    headers: { Authorization: "Bearer " + state.token, Accept: "application/json" },
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403) {
    const err = new Error("unauthorized");
    err.unauthorized = true;
    try {
      const body = await response.json();
      err.message = (body.error && body.error.message) || err.message;
    } catch (_) {
      // keep the generic message
    }
    throw err;
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

// ---------- polling ----------

async function poll() {
  clearTimeout(state.timer);
  if (!state.token || state.paused) return;
  try {
    const [data, alerts] = await Promise.all([api("/admin/metrics"), api("/admin/alerts?status=open&limit=20")]);
    if (!state.token) return;
    state.data = data;
    render(data);
    renderAlerts(alerts);
    const now = new Date();
    const stamp = $("last-update");
    setText(stamp, now.toLocaleTimeString());
    stamp.setAttribute("datetime", now.toISOString());
    setLive("live", "live");
  } catch (err) {
    if (err.unauthorized) {
      logout("The token was refused: " + err.message);
      return;
    }
    setLive("error", "connection lost, retrying");
  }
  if (!state.paused && state.token) state.timer = setTimeout(poll, POLL_MS);
}

function togglePause() {
  state.paused = !state.paused;
  const button = $("pause");
  button.setAttribute("aria-pressed", String(state.paused));
  setText(button, state.paused ? "Resume" : "Pause");
  if (state.paused) {
    clearTimeout(state.timer);
    setLive("paused", "paused");
  } else {
    poll();
  }
}

// ---------- rendering ----------

function render(d) {
  setText($("scope"), d.tenant_id ? "tenant " + d.tenant_id : "all tenants");
  renderKpis(d);
  renderChart($("rate-chart"), d.per_minute, (b) => time(b.start));
  renderAgents(d);
  renderExecutions(d.recent_executions);
  renderDay(d);
  renderLedger(d.ledger);
}

function kpi(id, value, sub) {
  const card = $(id);
  setText(card.querySelector(".value"), value);
  if (sub !== undefined) setText(card.querySelector(".sub"), sub);
  return card;
}

function renderKpis(d) {
  const t = d.totals;
  kpi("kpi-requests", count(t.requests_24h), count(t.requests_total) + " since start");
  const denials = kpi("kpi-denials", count(t.denied_24h));
  denials.querySelector(".reasons").replaceChildren(
    ...d.denials.map((r) => el("li", {}, el("span", { class: "reason" }, r.reason), " ", count(r.count)))
  );
  kpi("kpi-spend", usd(t.spent_micro_usd), usd(t.spent_24h_micro_usd) + " in 24 h, budget " + usd(t.budget_micro_usd));
  kpi("kpi-reserved", usd(t.reserved_micro_usd), usd(t.remaining_micro_usd) + " remaining");
  const stale = kpi("kpi-stale", count(t.stale_reservations), count(t.exhausted_agents) + " agents exhausted");
  stale.classList.toggle("alert", t.stale_reservations > 0);
  const check = d.ledger.last_verification;
  const ledger = $("kpi-ledger");
  ledger.classList.toggle("alert", Boolean(check && !check.ok));
  ledger.classList.toggle("good", Boolean(check && check.ok));
  if (!check) kpi("kpi-ledger", "not verified yet", "");
  else if (check.ok) kpi("kpi-ledger", "verified", "checked " + time(check.checked_at) + ": " + count(check.events) + " events");
  else kpi("kpi-ledger", "NOT VERIFIED", "bad event " + (check.first_bad_event ? check.first_bad_event.id : "?"));
}

function renderChart(node, buckets, label) {
  const width = 600;
  const height = 120;
  const max = Math.max(1, ...buckets.map((b) => b.requests));
  const w = width / buckets.length;
  node.setAttribute("viewBox", `0 0 ${width} ${height}`);
  node.setAttribute("preserveAspectRatio", "none");
  const parts = [svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" })];
  buckets.forEach((b, i) => {
    const h = (b.requests / max) * (height - 14);
    const d = (b.denied / max) * (height - 14);
    const bar = svg("rect", { x: i * w + 1, y: height - h, width: Math.max(1, w - 2), height: h, class: "bar" });
    const title = svg("title");
    title.textContent = `${label(b)}: ${b.requests} requests, ${b.denied} denied, ${usd(b.spent_micro_usd)}`;
    bar.append(title);
    parts.push(bar);
    if (d > 0) parts.push(svg("rect", { x: i * w + 1, y: height - d, width: Math.max(1, w - 2), height: d, class: "bar denied" }));
  });
  const peak = svg("text", { x: 4, y: 11, class: "peak" });
  peak.textContent = "peak " + max;
  parts.push(peak);
  node.replaceChildren(...parts);
}

const sorters = {
  name: (a) => a.name.toLowerCase(),
  state: (a) => a.state,
  used: (a) => (a.budget_micro_usd > 0 ? (a.spent_micro_usd + a.reserved_micro_usd) / a.budget_micro_usd : Infinity),
  remaining: (a) => a.remaining_micro_usd,
  burn: (a) => a.burn_rate.last_15m_micro_usd_per_hour,
  exhaustion: (a) => (a.seconds_to_exhaustion === null ? Infinity : a.seconds_to_exhaustion),
  requests: (a) => a.requests_total,
};

function sortAgents(agents) {
  const key = sorters[state.sort.key] || sorters.name;
  const dir = state.sort.dir;
  return [...agents].sort((a, b) => {
    const x = key(a);
    const y = key(b);
    if (x < y) return -dir;
    if (x > y) return dir;
    return a.name.localeCompare(b.name);
  });
}

function budgetBar(a) {
  const budget = Math.max(0, a.budget_micro_usd);
  const pct = (v) => (budget > 0 ? Math.min(100, (Math.max(0, v) / budget) * 100) : v > 0 ? 100 : 0);
  const spent = el("span", { class: "spent" });
  spent.style.width = pct(a.spent_micro_usd) + "%";
  const held = el("span", { class: "held" });
  held.style.width = Math.min(100 - pct(a.spent_micro_usd), pct(a.reserved_micro_usd)) + "%";
  const used = a.spent_micro_usd + a.reserved_micro_usd;
  const bar = el("div", { class: "bar-track" + (a.remaining_micro_usd <= 0 ? " over" : ""),
    role: "meter", "aria-valuemin": 0, "aria-valuemax": budget, "aria-valuenow": Math.min(used, budget) },
  spent, held);
  return el("div", { class: "budget" }, bar,
    el("span", { class: "bar-label" }, usd(a.spent_micro_usd), " + ", usd(a.reserved_micro_usd), " held of ", usd(a.budget_micro_usd)));
}

function renderAgents(d) {
  const rows = sortAgents(d.agents).map((a) =>
    el("tr", { "data-agent-id": a.id },
      el("td", { class: "name", title: a.name }, a.name),
      el("td", {}, el("span", { class: "badge agent-" + a.state.toLowerCase() }, a.state)),
      el("td", { class: "wide" }, budgetBar(a)),
      el("td", { class: "num" + (a.remaining_micro_usd <= 0 ? " negative" : "") }, usd(a.remaining_micro_usd)),
      el("td", { class: "num", title: `1 m: ${usd(a.burn_rate.last_1m_micro_usd_per_hour)}/h, 1 h: ${usd(a.burn_rate.last_1h_micro_usd_per_hour)}/h` },
        usd(a.burn_rate.last_15m_micro_usd_per_hour) + "/h"),
      el("td", { class: "num" }, duration(a.seconds_to_exhaustion)),
      el("td", { class: "num" }, count(a.requests_total))
    )
  );
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No agents yet.")));
  $("agents").tBodies[0].replaceChildren(...rows);
  setText($("agents-note"), d.agents_truncated ? `(top ${d.agents.length} of ${d.totals.agents} by spend)` : "");
  for (const th of $("agents").tHead.rows[0].cells) {
    const active = th.dataset.sort === state.sort.key;
    th.setAttribute("aria-sort", active ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

function sortBy(key) {
  if (state.sort.key === key) state.sort.dir = -state.sort.dir;
  else state.sort = { key, dir: key === "name" || key === "state" || key === "exhaustion" ? 1 : -1 };
  if (state.data) renderAgents(state.data);
}

function renderExecutions(executions) {
  const rows = executions.map((e) => {
    const row = el("tr", {
      "data-execution-id": e.execution_id,
      "data-tenant-id": e.tenant_id,
      "data-state": e.state,
      tabindex: 0,
      class: "clickable" + (state.timelineFor && state.timelineFor.id === e.execution_id ? " selected" : ""),
      title: "Show the ledger timeline",
    },
    el("td", {}, time(e.created_at)),
    el("td", { class: "name" }, e.agent),
    el("td", {}, e.model || "–"),
    el("td", {}, el("span", { class: stateClass(e.state), title: e.reason || "" }, e.state)),
    el("td", { class: "num cost-reserved" }, usd(e.reserved_micro_usd)),
    el("td", { class: "num cost-actual" }, e.actual_micro_usd === null ? "–" : usd(e.actual_micro_usd)),
    el("td", { class: "mono" }, shortId(e.execution_id)));
    return row;
  });
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No executions yet.")));
  $("executions").tBodies[0].replaceChildren(...rows);
}

function renderDay(d) {
  renderChart($("hourly-chart"), d.hourly, (b) => new Date(b.start).toLocaleString());
  const models = d.top_models.map((m) =>
    el("li", {}, el("span", { class: "name" }, m.model), " ", count(m.requests), " requests, ", usd(m.spent_micro_usd)));
  $("top-models").replaceChildren(...(models.length ? models : [el("li", { class: "muted" }, "none")]));
  const states = Object.entries(d.execution_states).map(([s, n]) =>
    el("li", {}, el("span", { class: stateClass(s) }, s), " ", count(n)));
  $("states").replaceChildren(...(states.length ? states : [el("li", { class: "muted" }, "none")]));
}

function renderAlerts(page) {
  const s = page.summary;
  setText($("alerts-summary"), `(${count(s.open)} open: ${count(s.critical)} critical, ${count(s.warning)} warning, ${count(s.info)} info)`);
  $("alerts-panel").classList.toggle("alert", s.critical > 0);
  const items = page.alerts.map((a) =>
    el("li", { "data-alert-id": String(a.id), class: "severity-" + a.severity },
      el("time", { datetime: a.created_at }, time(a.created_at)), " ",
      el("span", { class: "severity" }, a.severity), " ",
      el("span", { class: "event-type" }, a.kind), " ",
      el("span", { class: "message" }, a.message), " ",
      el("button", { type: "button", class: "small ack", "data-ack": String(a.id) }, "Acknowledge")));
  $("alerts").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "no open alerts")]));
}

async function acknowledge(id) {
  try {
    await api("/admin/alerts/" + encodeURIComponent(id) + "/ack", "POST");
  } catch (err) {
    setLive("error", "could not acknowledge: " + err.message);
  }
  poll();
}

function renderLedger(ledger) {
  const check = ledger.last_verification;
  const status = $("ledger-status");
  if (!check) setText(status, "Not verified yet.");
  else if (check.ok) setText(status, `Verified: ${count(check.chains)} chains, ${count(check.events)} events at ${time(check.checked_at)} (${check.elapsed_ms} ms).`);
  else setText(status, `Verification FAILED at event ${check.first_bad_event ? check.first_bad_event.id : "?"}: ${check.first_bad_event ? check.first_bad_event.problem : ""}`);
  status.className = check ? (check.ok ? "good" : "error") : "muted";
  const items = ledger.recent_events.map((e) =>
    el("li", {},
      el("time", { datetime: e.ts }, time(e.ts)), " ",
      el("span", { class: "event-type" }, e.event_type), " ",
      e.agent ? el("span", { class: "name" }, e.agent) : null, " ",
      e.execution_id ? el("span", { class: "mono" }, shortId(e.execution_id)) : null));
  $("ledger-feed").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "no events")]));
}

// ---------- execution timeline ----------

const TIMELINE_FIELDS = [
  "attempt", "model", "provider", "estimate_micro_usd", "actual_micro_usd", "overrun_micro_usd",
  "prompt_tokens", "completion_tokens", "usage", "output_cap", "reason", "code", "status",
  "execution_state", "upstream_status", "remaining_micro_usd",
];

function payloadSummary(payload) {
  const list = el("dl", { class: "payload" });
  for (const key of TIMELINE_FIELDS) {
    if (!payload || payload[key] === undefined || payload[key] === null) continue;
    const value = key.endsWith("_micro_usd") ? usd(payload[key]) : payload[key];
    list.append(el("dt", {}, key.replace(/_micro_usd$/, "")), el("dd", {}, value));
  }
  return list;
}

async function openTimeline(executionId, tenantId) {
  state.timelineFor = { id: executionId, tenant: tenantId };
  const panel = $("timeline");
  panel.hidden = false;
  setText($("timeline-id"), executionId);
  setText($("timeline-error"), "");
  $("timeline-events").replaceChildren(el("li", { class: "muted" }, "loading…"));
  for (const row of $("executions").tBodies[0].rows) {
    row.classList.toggle("selected", row.dataset.executionId === executionId);
  }
  const query = new URLSearchParams({ execution_id: executionId });
  if (tenantId) query.set("tenant_id", tenantId);
  try {
    const events = await api("/admin/replay?" + query.toString());
    if (!state.timelineFor || state.timelineFor.id !== executionId) return;
    $("timeline-events").replaceChildren(...events.map((e) =>
      el("li", { "data-event-type": e.event_type },
        el("div", { class: "when" }, el("time", { datetime: e.ts }, new Date(e.ts).toLocaleString()),
          " ", el("span", { class: "muted" }, `${e.chain_id} #${e.seq}`)),
        el("div", { class: "event-type" }, e.event_type),
        payloadSummary(e.payload),
        el("div", { class: "mono muted hash", title: e.event_hash }, "hash " + e.event_hash.slice(0, 16) + "…"))));
  } catch (err) {
    if (err.unauthorized) return logout("The token was refused: " + err.message);
    $("timeline-events").replaceChildren();
    setText($("timeline-error"), "Could not load the timeline: " + err.message);
  }
  panel.scrollIntoView({ block: "nearest" });
}

function closeTimeline() {
  state.timelineFor = null;
  $("timeline").hidden = true;
  for (const row of $("executions").tBodies[0].rows) row.classList.remove("selected");
}

// ---------- wiring ----------

function start() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) login(token);
  });
  $("logout").addEventListener("click", () => logout(""));
  $("pause").addEventListener("click", togglePause);
  $("timeline-close").addEventListener("click", closeTimeline);
  for (const th of $("agents").tHead.rows[0].cells) {
    th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.sort));
  }
  const executions = $("executions").tBodies[0];
  const open = (event) => {
    const row = event.target.closest("tr[data-execution-id]");
    if (row) openTimeline(row.dataset.executionId, row.dataset.tenantId);
  };
  executions.addEventListener("click", open);
  $("alerts").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-ack]");
    if (button) acknowledge(button.dataset.ack);
  });
  executions.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open(event);
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.token && !state.paused) poll();
  });
  const token = takeFragmentToken() || sessionStorage.getItem(TOKEN_KEY);
  if (token) login(token);
  else logout("");
}

start();
