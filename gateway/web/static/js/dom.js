// Small DOM helpers: elements are built with text nodes only (never innerHTML), so nothing
// the API returns can inject markup.
import { getLang, t } from "./i18n.js";

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("p", {class: "x"}, "text", otherNode). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as h(). */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Wait before running fn again; calls within `ms` collapse into one. */
export function debounce(fn, ms) {
  let timer = null;
  const run = () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
  run.cancel = () => clearTimeout(timer);
  return run;
}

function locale() {
  return getLang() === "zh" ? "zh-CN" : "en-GB";
}

/** A timestamp as local date and time. */
export function fmtTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(locale(), {
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** A clock time (HH:MM) for chart axes. */
export function fmtClock(ms) {
  return new Date(ms).toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit" });
}

/** A duration in ms as "2 h 5 min", "4 min 10 s" or "9 s". */
export function fmtDuration(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  const d = Math.floor(total / 86400);
  const hrs = Math.floor((total % 86400) / 3600);
  const min = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (d > 0) return t("dur.dh", { d, h: hrs });
  if (hrs > 0) return t("dur.hm", { h: hrs, m: min });
  if (min > 0) return t("dur.ms", { m: min, s: sec });
  return t("dur.s", { s: sec });
}

/** "3 min ago" for a past timestamp (one unit: seconds, minutes, hours or days). */
export function fmtAgo(iso) {
  if (!iso) return "—";
  const sec = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (sec < 10) return t("time.now");
  if (sec < 60) return t("ago.s", { n: sec });
  if (sec < 3600) return t("ago.m", { n: Math.floor(sec / 60) });
  if (sec < 86400) return t("ago.h", { n: Math.floor(sec / 3600) });
  return t("ago.d", { n: Math.floor(sec / 86400) });
}

/** Readings as "smoke 0.3 · state alarm". */
export function fmtValues(values) {
  const parts = Object.entries(values || {}).map(([key, value]) => {
    const shown = typeof value === "number" ? +value.toFixed(3) : String(value);
    return `${key} ${shown}`;
  });
  return parts.join(" · ");
}

/** A badge for a severity, coloured by CSS class. */
export function severityBadge(severity) {
  return h("span", { class: `badge sev-${severity}`, text: t(`sev.${severity}`) });
}

/** A badge for a work-order state. */
export function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, text: t(`state.${state}`) });
}

/** A note box: kind is "info", "warn" or "error". */
export function note(kind, text) {
  return h("p", { class: `note note-${kind}`, role: kind === "error" ? "alert" : null }, text);
}

/** A "loading…" placeholder. */
export function loading() {
  return h("p", { class: "loading", text: t("loading") });
}

/** Replace the children of `el`. */
export function put(el, ...children) {
  el.replaceChildren();
  fill(el, {}, children);
  return el;
}
