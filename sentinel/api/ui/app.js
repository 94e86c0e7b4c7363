// Sentinel's web UI: plain JavaScript over the REST API (/api/v1), no build step, nothing
// loaded from elsewhere. Every string from the API reaches the page through textContent or
// an attribute, never innerHTML. Write actions send the API token, asked once per tab and
// kept in sessionStorage.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "sentinel.token";
const REFRESH_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";

let timer = null;
let shown = ""; // the data the current view was drawn from: redraw only when it changes

// -- small helpers ------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function num(x, digits = 3) {
  return x === null || x === undefined ? "—" : Number(x).toPrecision(digits);
}

function badge(text) {
  return el("span", { class: `badge ${text}` }, text.replace("_", " "));
}

function deviceLink(stream, device) {
  const href = `#/device/${encodeURIComponent(stream)}/${encodeURIComponent(device)}`;
  return el("a", { href }, device);
}

function showError(message, from = "action") {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
  box.dataset.from = from;
}

async function api(path, options = {}) {
  const reply = await fetch(API + path, options);
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    const error = new Error(body.detail || `${reply.status} ${reply.statusText}`);
    error.status = reply.status;
    throw error;
  }
  return body;
}

// -- the token and write actions -----------------------------------------------------------

function askToken() {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  input.value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "save" && input.value ? input.value : null),
      { once: true },
    );
    dialog.showModal();
  });
}

async function write(path, body) {
  let token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    token = await askToken();
    if (!token) return null;
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  try {
    const answer = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(body || {}),
    });
    showError("");
    return answer;
  } catch (error) {
    if (error.status === 401) sessionStorage.removeItem(TOKEN_KEY); // ask again next time
    throw error;
  }
}

function action(label, run, cls) {
  const button = el("button", { class: cls, type: "button" }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      if ((await run()) !== null) await render(true);
    } catch (error) {
      showError(`${label}: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

// -- alerts -----------------------------------------------------------------------------------

const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };

function why(alert) {
  // The checks that flagged it first, then the score against the device's threshold.
  const r = alert.reason || {};
  const parts = [];
  const checks = [
    ["spike", r.spike_feature, r.spike_z !== undefined ? `z ${num(r.spike_z, 2)}` : ""],
    ["level", r.level_feature, r.level_z !== undefined ? `z ${num(r.level_z, 2)}` : ""],
    ["constant", r.constant_feature, r.constant_value !== undefined ? `${num(r.constant_value)} ≠ ${num(r.constant_expected)}` : ""],
    ["stuck", r.stuck_feature, r.stuck_run !== undefined ? `${r.stuck_run} identical readings` : ""],
    ["relation", r.relation_feature, r.relation_z !== undefined ? `residual ${num(r.relation_z, 2)} σ` : ""],
    ["noise", r.noise_feature, r.noise_ratio !== undefined ? `${num(r.noise_ratio, 2)} x training's roughest` : ""],
    ["period", r.period_feature, r.period_ratio !== undefined ? `${num(r.period_ratio, 2)} x training's most unusual period` : ""],
  ];
  for (const [check, feature, detail] of checks) {
    if (feature) parts.push(`${check} check: ${feature}${detail ? " " + detail : ""}`);
  }
  if (alert.peak_score !== null && alert.threshold) {
    const ratio = alert.peak_score / alert.threshold;
    const vs = `${num(alert.peak_score)} vs ${num(alert.threshold)}`;
    parts.push(ratio > 1 ? `score ${num(ratio, 2)}× threshold (${vs})` : `score under threshold (${vs})`);
  }
  if (r.threshold_method && !r.threshold_warm) parts.push("threshold still warming up");
  const features = (alert.top_features || [])
    .slice(0, 3)
    .map((f) => `${f.feature} ${Math.round(f.share * 100)}%`);
  if (features.length) parts.push(`error from ${features.join(", ")}`);
  return parts.join("; ");
}

function alertCard(alert) {
  const live = alert.status === "open" || alert.status === "acknowledged";
  return el(
    "article",
    { class: `card ${alert.severity}`, "data-alert": alert.id, "data-status": alert.status },
    el(
      "div",
      { class: "head" },
      el("strong", {}, deviceLink(alert.stream, alert.device), " ", el("span", { class: "muted" }, alert.stream)),
      el("span", {}, badge(alert.severity), " ", badge(alert.status)),
    ),
    el("p", { class: "why" }, why(alert)),
    el(
      "p",
      { class: "muted" },
      `since ${when(alert.started_at)} · ${alert.windows} windows · model ${alert.model_version}`,
      alert.ack_note ? ` · note: ${alert.ack_note}` : "",
    ),
    live
      ? el(
          "div",
          { class: "actions" },
          alert.status === "open"
            ? action("Acknowledge", () => write(`/alerts/${alert.id}/ack`))
            : null,
          action("Resolve", () => write(`/alerts/${alert.id}/resolve`), "secondary"),
        )
      : null,
  );
}

async function alertsView() {
  const [open, acked, recent] = await Promise.all([
    api("/alerts?status=open&limit=200"),
    api("/alerts?status=acknowledged&limit=200"),
    api("/alerts?limit=30"),
  ]);
  const live = [...open.items, ...acked.items].sort(
    (a, b) =>
      (a.status === "open" ? 0 : 1) - (b.status === "open" ? 0 : 1) ||
      SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity] ||
      b.started_at.localeCompare(a.started_at),
  );
  const past = recent.items.filter((a) => a.status === "closed" || a.status === "resolved");
  return [
    { open: open.items.length, acked: acked.items.length, live, past },
    (data) => [
      el("h1", {}, `Open alerts (${data.open} open, ${data.acked} acknowledged)`),
      data.live.length
        ? el("section", { class: "cards", id: "open-alerts" }, data.live.map(alertCard))
        : el("p", { class: "muted", id: "open-alerts" }, "No open alerts."),
      el("h2", {}, "Recently closed"),
      data.past.length
        ? el("section", { class: "cards" }, data.past.map(alertCard))
        : el("p", { class: "muted" }, "None."),
    ],
  ];
}

// -- fleet ------------------------------------------------------------------------------------

async function fleetView() {
  const devices = await api("/devices?limit=1000");
  return [
    devices,
    (data) => [
      el("h1", {}, `Fleet (${data.items.length} devices${data.next_offset !== null ? "+" : ""})`),
      el(
        "div",
        { class: "scroll" },
        el(
          "table",
          { id: "fleet" },
          el(
            "thead",
            {},
            el(
              "tr",
              {},
              el("th", {}, "Device"),
              el("th", { class: "wide" }, "Stream"),
              el("th", {}, "State"),
              el("th", {}, "Open alerts"),
              el("th", { class: "wide" }, "Last reading"),
              el("th", { class: "wide" }, "Threshold"),
            ),
          ),
          el(
            "tbody",
            {},
            data.items.map((d) =>
              el(
                "tr",
                {},
                el("td", {}, deviceLink(d.stream, d.device)),
                el("td", { class: "wide" }, d.stream),
                el("td", {}, badge(d.state)),
                el("td", {}, d.open_alerts),
                el("td", { class: "wide" }, when(d.last_reading_at)),
                el("td", { class: "wide" }, d.threshold ? num(d.threshold.value) : "—"),
              ),
            ),
          ),
        ),
      ),
    ],
  ];
}

// -- one device: score vs threshold ---------------------------------------------------------

const RANGES = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3 };

const MINUTE = 60e3;
const TICK_MINUTES = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360];

function chart(history, alerts, from, to) {
  const W = 720, H = 260, L = 48, R = 10, T = 10, B = 24;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", id: "score-chart" });
  const title = svg("title");
  title.textContent = "Highest score and its threshold per minute; shaded: alerts";
  root.append(title);
  // Each minute drawn at its middle; the x axis spans the minutes that hold any.
  const points = history.map((m) => ({ t: Date.parse(m.start) + MINUTE / 2, s: m.max_score, h: m.threshold, a: m.anomalous }));
  from = Math.max(from, points[0].t - MINUTE / 2);
  to = Math.min(to, points[points.length - 1].t + MINUTE / 2);
  const top = Math.max(1e-9, ...points.map((p) => Math.max(p.s, p.h))) * 1.1;
  const x = (t) => L + ((t - from) / (to - from)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  for (const alert of alerts) {
    const start = Math.max(from, Date.parse(alert.started_at));
    const end = Math.min(to, alert.ended_at ? Date.parse(alert.ended_at) : to);
    if (end <= start) continue;
    root.append(svg("rect", { class: "span", x: x(start), y: T, width: Math.max(2, x(end) - x(start)), height: H - T - B }));
  }
  for (let i = 0; i <= 4; i++) {
    const v = (top / 4) * i;
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    const label = svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = num(v, 2);
    root.append(label);
  }
  // Time ticks on whole minutes, at most about six of them.
  const step = (TICK_MINUTES.find((m) => (to - from) / (m * MINUTE) <= 6) || 720) * MINUTE;
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) {
    root.append(svg("line", { class: "axis", x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4 }));
    const anchor = x(t) > W - R - 20 ? "end" : x(t) < L + 20 ? "start" : "middle";
    const label = svg("text", { x: x(t), y: H - 6, "text-anchor": anchor });
    label.textContent = new Date(t).toISOString().slice(11, 16);
    root.append(label);
  }
  const path = (key) => points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join("");
  root.append(svg("path", { class: "threshold", d: path("h") }));
  root.append(svg("path", { class: "score", d: path("s") }));
  for (const p of points.filter((p) => p.a > 0)) root.append(svg("circle", { class: "hit", cx: x(p.t), cy: y(p.s), r: 2.2 }));
  return root;
}

async function deviceView(stream, device, range) {
  const path = `/devices/${encodeURIComponent(stream)}/${encodeURIComponent(device)}`;
  const info = await api(path);
  // Event time: the chart ends at the device's newest reading, not at the wall clock.
  const to = info.last_reading_at ? Date.parse(info.last_reading_at) + MINUTE : Date.now();
  const from = to - RANGES[range];
  const query = `since=${new Date(from).toISOString()}&until=${new Date(to).toISOString()}`;
  const [history, alerts] = await Promise.all([
    api(`${path}/history?${query}`),
    api(`/alerts?stream=${encodeURIComponent(stream)}&device=${encodeURIComponent(device)}&limit=200`),
  ]);
  const th = info.threshold;
  return [
    { info, history, alerts: alerts.items },
    (data) => [
      el("h1", {}, `${device} `, el("span", { class: "muted" }, stream), " ", badge(info.state)),
      el(
        "dl",
        { class: "facts" },
        el("dt", {}, "Last reading"), el("dd", {}, when(info.last_reading_at)),
        el("dt", {}, "Readings"), el("dd", {}, info.readings),
        el("dt", {}, "Threshold"),
        el("dd", {}, th ? `${num(th.value)} (${th.method}${th.warm ? "" : ", warming up"}, ${th.history} windows)` : "—"),
        el("dt", {}, "Model"), el("dd", {}, info.model_version || "—"),
        el("dt", {}, "Open alerts"), el("dd", {}, info.open_alerts),
      ),
      el(
        "div",
        { class: "range" },
        Object.keys(RANGES).map((r) =>
          el("a", { href: `#/device/${encodeURIComponent(stream)}/${encodeURIComponent(device)}/${r}` },
            r === range ? el("strong", {}, r) : r),
        ),
      ),
      el(
        "div",
        { class: "chart" },
        data.history.items.length
          ? chart(data.history.items, data.alerts, from, to)
          : el("p", { class: "muted" }, "No scored minutes in this range."),
        el(
          "div",
          { class: "legend" },
          el("span", {}, "— max score per minute"),
          el("span", {}, "- - threshold"),
          el("span", {}, "● anomalous minute"),
          el("span", {}, "▒ alert"),
        ),
      ),
      el("h2", {}, "Alerts"),
      data.alerts.length
        ? el("section", { class: "cards" }, data.alerts.map(alertCard))
        : el("p", { class: "muted" }, "None."),
    ],
  ];
}

// -- models -----------------------------------------------------------------------------------

async function modelsView() {
  const models = await api("/models?limit=1000");
  const streams = [...new Set(models.items.map((m) => m.stream))];
  return [
    models,
    (data) => [
      el("h1", {}, "Models"),
      streams.map((stream) => {
        const rows = data.items.filter((m) => m.stream === stream);
        const previous = rows.find((m) => m.role === "previous");
        return [
          el(
            "h2",
            {},
            `${stream} `,
            previous
              ? action(`Roll back to ${previous.version}`, () =>
                  confirm(`Roll ${stream} back to ${previous.version}?`) ? write(`/models/${encodeURIComponent(stream)}/rollback`) : null,
                "secondary")
              : null,
          ),
          el(
            "div",
            { class: "scroll" },
            el(
              "table",
              {},
              el("thead", {}, el("tr", {},
                el("th", {}, "Version"), el("th", {}, "Role"), el("th", { class: "wide" }, "Status"),
                el("th", { class: "wide" }, "Trained on"), el("th", { class: "wide" }, "Merit"), el("th", {}, ""))),
              el(
                "tbody",
                {},
                rows.map((m) =>
                  el(
                    "tr",
                    {},
                    el("td", {}, m.version),
                    el("td", {}, m.role ? badge(m.role) : ""),
                    el("td", { class: "wide" }, m.status),
                    el("td", { class: "wide" }, m.rows !== null ? `${m.rows} readings to ${when(m.data_to)}` : "—"),
                    el("td", { class: "wide" }, num(m.merit)),
                    el(
                      "td",
                      {},
                      m.role === "active"
                        ? ""
                        : action("Activate", () =>
                            confirm(`Activate ${m.version} for ${stream}?`)
                              ? write(`/models/${encodeURIComponent(stream)}/${encodeURIComponent(m.version)}/activate`)
                              : null,
                          "secondary"),
                    ),
                  ),
                ),
              ),
            ),
          ),
        ];
      }),
      streams.length ? null : el("p", { class: "muted" }, "No models yet."),
    ],
  ];
}

// -- routing ----------------------------------------------------------------------------------

function route() {
  const decode = (part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return ""; // a malformed link: the route falls back to a list
    }
  };
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decode);
  switch (parts[0]) {
    case "fleet":
      return ["fleet", () => fleetView()];
    case "models":
      return ["models", () => modelsView()];
    case "device":
      if (parts[1] && parts[2]) {
        const range = RANGES[parts[3]] ? parts[3] : "1h";
        return ["fleet", () => deviceView(parts[1], parts[2], range)];
      }
      return ["fleet", () => fleetView()];
    default:
      return ["alerts", () => alertsView()];
  }
}

async function render(force) {
  const [name, load] = route();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.dataset.route === name);
  }
  try {
    const [data, draw] = await load();
    const key = location.hash + JSON.stringify(data);
    if (force || key !== shown) {
      shown = key;
      document.getElementById("view").replaceChildren(...draw(data).flat(2).filter(Boolean));
    }
    if (document.getElementById("error").dataset.from === "load") showError("");
  } catch (error) {
    showError(`Could not load: ${error.message}`, "load");
  }
}

function start() {
  clearInterval(timer);
  shown = "";
  render(true);
  // Refresh while the page is open; a redraw happens only when the data changed, so a
  // button under the pointer is not replaced while nothing moves.
  timer = setInterval(() => {
    if (!document.hidden && !document.getElementById("token-dialog").open) render(false);
  }, REFRESH_MS);
}

window.addEventListener("hashchange", start);
document.addEventListener("DOMContentLoaded", start);
