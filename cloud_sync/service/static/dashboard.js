// The fleet dashboard: plain JavaScript and inline SVG over the JSON API, no build step and
// nothing fetched from outside. The admin token comes from the URL fragment (#token=..., never
// sent to the server in a URL) or the form, and is kept in sessionStorage for this tab only.
"use strict";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
                "#ea580c", "#4f46e5", "#0d9488", "#a16207", "#9ca3af"];
const SVG = "http://www.w3.org/2000/svg";

function token() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("edgeToken", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
  }
  return sessionStorage.getItem("edgeToken");
}

function el(tag, attrs = {}, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmt(v, digits = 1) {
  return v === null || v === undefined ? "–" : (typeof v === "number" ? v.toFixed(digits) : String(v));
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function renderFleet(devices) {
  const body = document.querySelector("#fleet tbody");
  body.replaceChildren();
  if (!devices.length) {
    body.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "no devices yet")));
    return;
  }
  for (const d of devices) {
    const state = d.revoked ? "revoked" : (d.status || "unknown");
    body.append(el("tr", { "data-device": d.id },
      el("td", {}, d.id + (d.name && d.name !== d.id ? ` (${d.name})` : "") + (d.registered ? "" : " — unregistered")),
      el("td", { class: state, "data-field": "status" }, state),
      el("td", { "data-field": "model" }, d.model || "–"),
      el("td", { "data-field": "channel" }, d.channel || "–"),
      el("td", { class: "num", "data-field": "model_version" }, d.model_version === null ? "–" : `v${d.model_version}`),
      el("td", { "data-field": "last_seen", title: d.last_seen || "" }, ago(d.last_seen)),
      el("td", { class: "num", "data-field": "outbox_depth" }, fmt(d.outbox_depth, 0)),
      el("td", { class: "num", "data-field": "latency_ms" }, fmt(d.latency_ms)),
      el("td", { class: "num", "data-field": "fps" }, fmt(d.fps))));
  }
}

function renderChannels(models) {
  const body = document.querySelector("#channels tbody");
  body.replaceChildren();
  for (const m of models) {
    const chans = Object.entries(m.channels);
    if (!chans.length) chans.push(["–", null]);
    for (const [ch, v] of chans.sort()) {
      body.append(el("tr", { "data-model": m.name, "data-channel": ch },
        el("td", {}, m.name), el("td", {}, ch), el("td", { class: "num" }, v === null ? "–" : `v${v}`),
        el("td", { class: "num" }, `v${m.latest}`)));
    }
  }
  if (!models.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no models yet")));
}

// A line chart of one or more series over time: [{name, color, points: [[tMillis, value], ...]}]
function lineChart(title, series, unit) {
  const W = 360, H = 130, L = 40, R = 8, T = 16, B = 18;
  const pts = series.flatMap((s) => s.points);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, "data-chart": title,
                              "data-points": String(pts.length) });
  svg.append(el("svg:text", { x: L, y: 11, "font-size": 11, fill: "#6b7280" }, `${title} (${unit})`));
  if (!pts.length) {
    svg.append(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#9ca3af" }, "no data"));
    return svg;
  }
  const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
  const vmax = Math.max(...pts.map((p) => p[1])) * 1.1 || 1;
  const x = (t) => L + (t1 === t0 ? (W - L - R) / 2 : ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  for (const f of [0, 0.5, 1]) {
    svg.append(el("svg:line", { x1: L, x2: W - R, y1: y(vmax * f), y2: y(vmax * f), stroke: "#e5e7eb" }));
    svg.append(el("svg:text", { x: L - 4, y: y(vmax * f) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7280" },
      fmt(vmax * f, vmax < 10 ? 1 : 0)));
  }
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    svg.append(el("svg:path", { d, fill: "none", stroke: s.color, "stroke-width": 1.8, "data-series": s.name }));
    for (const p of s.points) svg.append(el("svg:circle", { cx: x(p[0]), cy: y(p[1]), r: 2, fill: s.color }));
  }
  const fmtT = (t) => new Date(t).toISOString().slice(11, 16);
  svg.append(el("svg:text", { x: L, y: H - 4, "font-size": 10, fill: "#6b7280" }, fmtT(t0)));
  svg.append(el("svg:text", { x: W - R, y: H - 4, "font-size": 10, fill: "#6b7280", "text-anchor": "end" }, fmtT(t1)));
  return svg;
}

function renderDevices(series) {
  const box = document.querySelector("#devices");
  box.replaceChildren();
  const ids = Object.keys(series).sort();
  if (!ids.length) box.append(el("p", { class: "muted" }, "no metrics in this window"));
  for (const id of ids) {
    const pts = series[id];
    const at = (k) => pts.filter((p) => p[k] !== null && p.ts).map((p) => [Date.parse(p.ts), p[k]]);
    box.append(el("div", { class: "card", "data-device": id }, el("h3", {}, id),
      lineChart("latency", [{ name: "p50", color: COLORS[0], points: at("latency_ms") },
                            { name: "p99", color: COLORS[1], points: at("latency_p99_ms") }], "ms"),
      lineChart("fps", [{ name: "fps", color: COLORS[2], points: at("fps") }], "frames/s")));
  }
}

// Stacked bars: one bar per time bucket, one colour per label. The same chart draws predictions
// per label (#labels) and detected objects per label (#objects).
const PREDICTIONS = { box: "#labels", chart: "labels", legend: "label-legend", title: "predictions per label",
                      empty: "no predictions in this window" };
const OBJECTS = { box: "#objects", chart: "objects", legend: "object-legend", title: "objects per label",
                  empty: "no detected objects in this window" };

function renderLabels(labels, bucketSeconds, window, opts = PREDICTIONS) {
  const box = document.querySelector(opts.box);
  box.replaceChildren();
  const names = Object.keys(labels.totals);
  if (labels.buckets.some((b) => "other" in b.counts)) names.push("other");
  if (!labels.buckets.length) {
    box.append(el("p", { class: "muted" }, opts.empty));
    return;
  }
  const W = 900, H = 200, L = 40, R = 8, T = 10, B = 20;
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title,
                              "data-chart": opts.chart, "data-buckets": String(labels.buckets.length) });
  // the x axis spans the whole window, so bars sit where they happened in time
  const t1 = Math.ceil(Date.parse(window.generatedAt) / (bucketSeconds * 1000)) * bucketSeconds * 1000;
  const t0 = Math.min(t1 - window.hours * 3600 * 1000, ...labels.buckets.map((b) => Date.parse(b.t)));
  const vmax = Math.max(...labels.buckets.map((b) => Object.values(b.counts).reduce((a, c) => a + c, 0)));
  const x = (t) => L + ((t - t0) / (t1 - t0 || 1)) * (W - L - R);
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  const bw = Math.max(2, x(t0 + bucketSeconds * 1000) - x(t0) - 2);
  svg.append(el("svg:text", { x: L - 4, y: y(vmax) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7280" }, vmax));
  svg.append(el("svg:line", { x1: L, x2: W - R, y1: y(0), y2: y(0), stroke: "#9ca3af" }));
  for (const b of labels.buckets) {
    let acc = 0;
    names.forEach((n, i) => {
      const c = b.counts[n] || 0;
      if (!c) return;
      const top = y(acc + c), h = y(acc) - top;
      acc += c;
      svg.append(el("svg:rect", { x: x(Date.parse(b.t)) + 1, y: top, width: bw, height: h, fill: COLORS[i % COLORS.length],
                                  "data-label": n, "data-count": c }, el("svg:title", {}, `${b.t} ${n}: ${c}`)));
    });
  }
  const fmtT = (t) => new Date(t).toISOString().replace("T", " ").slice(0, 16);
  svg.append(el("svg:text", { x: L, y: H - 5, "font-size": 10, fill: "#6b7280" }, fmtT(t0)));
  svg.append(el("svg:text", { x: W - R, y: H - 5, "font-size": 10, fill: "#6b7280", "text-anchor": "end" }, fmtT(t1)));
  box.append(svg);
  const legend = el("div", { class: "legend", id: opts.legend });
  names.forEach((n, i) => {
    const total = labels.totals[n] ?? labels.buckets.reduce((a, b) => a + (b.counts[n] || 0), 0);
    legend.append(el("span", { "data-label": n, "data-total": total }, el("i", { style: `background:${COLORS[i % COLORS.length]}` }),
      `${n}: ${total}`));
  });
  box.append(legend);
}

async function refresh() {
  const t = token();
  const status = document.querySelector("#status");
  if (!t) {
    document.querySelector("#login").hidden = false;
    status.textContent = "enter the admin token";
    return;
  }
  const hours = document.querySelector("#hours").value;
  try {
    const r = await fetch(`/api/v1/dashboard?hours=${hours}`, { headers: { Authorization: `Bearer ${t}` } });
    const body = await r.json();
    if (!r.ok) {
      status.textContent = `error: ${body.error ? body.error.message : r.status}`;
      status.className = "error";
      if (r.status === 401) {
        sessionStorage.removeItem("edgeToken");
        document.querySelector("#login").hidden = false;
      }
      return;
    }
    renderFleet(body.devices);
    renderChannels(body.models);
    renderLabels(body.labels, body.bucket_seconds, { generatedAt: body.generated_at, hours: body.window_hours });
    renderLabels(body.objects, body.bucket_seconds, { generatedAt: body.generated_at, hours: body.window_hours },
                 OBJECTS);
    renderDevices(body.series);
    status.className = "muted";
    status.textContent = `${body.devices.length} device(s), updated ${new Date(body.generated_at).toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (e) {
    status.textContent = `cannot reach the service (${e})`;
    status.className = "error";
  }
}

document.querySelector("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("edgeToken", document.querySelector("#token").value);
  document.querySelector("#login").hidden = true;
  refresh();
});
document.querySelector("#hours").addEventListener("change", refresh);
refresh();
setInterval(refresh, 10000);
