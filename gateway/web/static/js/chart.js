// Readings of a work order's device around the incident, drawn as a small inline SVG chart.
import { api, seg, withQuery } from "./api.js";
import { fmtClock, h, note, put, s } from "./dom.js";
import { t } from "./i18n.js";

const BEFORE_MS = 30 * 60 * 1000; // context shown before the incident
const MAX_MINUTES = 7 * 24 * 60; // the readings route's limit
const SKIP = new Set(["time", "seq"]);
const MAX_POINTS = 400;
const W = 640;
const H = 220;
const PAD = { left: 54, right: 16, top: 16, bottom: 28 };

/** Numeric fields of `points`, those of the order's last reading first. */
export function numericFields(points, preferred) {
  const found = new Set();
  for (const point of points) {
    for (const [key, value] of Object.entries(point)) {
      if (!SKIP.has(key) && typeof value === "number" && Number.isFinite(value)) found.add(key);
    }
  }
  const first = Object.keys(preferred || {}).filter((key) => found.has(key));
  return [...first, ...[...found].filter((key) => !first.includes(key)).sort()];
}

function thin(points) {
  if (points.length <= MAX_POINTS) return points;
  const step = points.length / MAX_POINTS;
  return Array.from({ length: MAX_POINTS }, (_, i) => points[Math.floor(i * step)]);
}

function niceRange(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) {
    lo -= Math.abs(lo) * 0.1 || 1;
    hi += Math.abs(hi) * 0.1 || 1;
  }
  const pad = (hi - lo) * 0.08;
  const floor = lo >= 0 && lo - pad < 0 ? 0 : lo - pad; // readings that cannot be negative
  return [floor, hi + pad];
}

function marker(x, label, cls) {
  const right = x > W * 0.7; // label on the inner side of the line
  const anchor = right ? "end" : "start";
  return s("g", { class: `marker ${cls}` },
    s("line", { x1: x, x2: x, y1: PAD.top, y2: H - PAD.bottom }),
    s("text", { x: right ? x - 4 : x + 4, y: PAD.top + 10, "text-anchor": anchor, text: label }));
}

/** An SVG line chart of `field` over `series` ([{ms, value}]), with incident markers. */
export function lineChart(series, field, marks) {
  const t0 = Math.min(series[0].ms, ...marks.map((m) => m.ms));
  const last = Math.max(series[series.length - 1].ms, ...marks.map((m) => m.ms), t0 + 60000);
  const t1 = last + (last - t0) * 0.04;
  const [lo, hi] = niceRange(series.map((p) => p.value));
  const x = (ms) => PAD.left + ((ms - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);
  const path = series.map((p, i) => `${i ? "L" : "M"}${x(p.ms).toFixed(1)},${y(p.value).toFixed(1)}`);
  const ticks = [0, 1, 2, 3].map((i) => lo + ((hi - lo) * i) / 3);
  const step = (hi - lo) / 3;
  const digits = Math.max(0, Math.min(4, 1 - Math.floor(Math.log10(step || 1))));
  const fmt = (v) => v.toFixed(digits);
  return s("svg", {
    class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": t("chart.label", { field, n: series.length }),
  },
  s("title", { text: t("chart.label", { field, n: series.length }) }),
  ticks.map((v) => s("g", { class: "tick" },
    s("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
    s("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", text: fmt(v) }))),
  s("text", { class: "axis", x: PAD.left, y: H - 8, text: fmtClock(t0) }),
  s("text", { class: "axis", x: W - PAD.right, y: H - 8, "text-anchor": "end", text: fmtClock(t1) }),
  marks.filter((m) => m.ms >= t0 && m.ms <= t1).map((m) => marker(x(m.ms), m.label, m.cls)),
  s("path", { class: "line", d: path.join(" ") }),
  series.length <= 60 ? series.map((p) => s("circle", { cx: x(p.ms), cy: y(p.value), r: 2.5 })) : null);
}

/** When the incident began: the first occurrence, else the order's creation. */
export function incidentTime(order) {
  const times = (order.occurrences || []).map((o) => Date.parse(o.at));
  return Math.min(Date.parse(order.created_at), ...times);
}

function marksOf(order) {
  const marks = [{ ms: incidentTime(order), label: t("chart.incident"), cls: "incident" }];
  if (order.resolved_at) {
    marks.push({ ms: Date.parse(order.resolved_at), label: t("chart.resolved"), cls: "resolved" });
  }
  return marks;
}

function draw(body, points, order, field) {
  const from = incidentTime(order) - BEFORE_MS;
  const series = thin(points
    .map((p) => ({ ms: Date.parse(p.time), value: p[field] }))
    .filter((p) => Number.isFinite(p.ms) && p.ms >= from && typeof p.value === "number"));
  if (series.length === 0) return put(body, note("info", t("chart.no_points")));
  return put(body, lineChart(series, field, marksOf(order)));
}

/** The readings panel of a sensor order: loads, draws, lets the user pick a field. */
export function readingsPanel(order) {
  const body = h("div", { class: "chart-body" }, h("p", { class: "loading", text: t("loading") }));
  const picker = h("div", { class: "chips" });
  const el = h("section", { class: "card readings" },
    h("h3", { text: t("chart.title") }), picker, body);
  if (!order.device_id) {
    put(body, note("info", t("chart.no_device")));
    return el;
  }
  const ageMs = Date.now() - incidentTime(order) + BEFORE_MS;
  const minutes = Math.max(60, Math.ceil(ageMs / 60000));
  if (minutes > MAX_MINUTES) {
    put(body, note("info", t("chart.too_old")));
    return el;
  }
  const path = withQuery(`/devices/${seg(order.device_id)}/readings`, { minutes });
  api(path).then((answer) => {
    const fields = numericFields(answer.points, order.last_values);
    if (fields.length === 0) return put(body, note("info", t("chart.no_points")));
    const choose = (field) => {
      for (const chip of picker.children) chip.classList.toggle("on", chip.dataset.field === field);
      draw(body, answer.points, order, field);
    };
    put(picker, fields.map((field) => h("button", {
      type: "button", class: "chip", dataset: { field }, text: field, onclick: () => choose(field),
    })));
    return choose(fields[0]);
  }).catch((err) => {
    const key = err.status === 503 ? "chart.unavailable" : "chart.failed";
    put(body, note(err.status === 503 ? "warn" : "error", `${t(key)} (${err.detail})`));
  });
  return el;
}
