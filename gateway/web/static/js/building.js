// One building's devices: kind, place, open alert, status, battery and last seen.
import { api, eachLimited, seg, withQuery } from "./api.js";
import { debounce, fmtAgo, fmtTime, h, note, put, severityBadge } from "./dom.js";
import { t } from "./i18n.js";
import { SEVERITIES } from "./inbox.js";

const PAGE = 1000;
const DETAIL_LANES = 4; // parallel detail requests (browsers allow ~6 per host)

function findNode(tree, code) {
  if (tree.code === code) return tree;
  for (const child of tree.children || []) {
    const found = findNode(child, code);
    if (found) return found;
  }
  return null;
}

async function allDevices(code) {
  const items = [];
  for (let offset = 0; ; offset += PAGE) {
    const page = await api(withQuery("/devices", { node: code, limit: PAGE, offset }));
    items.push(...page.items);
    if (items.length >= page.total || page.items.length === 0) return items;
  }
}

function worstByDevice(alerts) {
  const worst = new Map();
  const rank = (sev) => SEVERITIES.indexOf(sev);
  for (const alert of alerts) {
    const seen = worst.get(alert.device_id);
    if (!seen || rank(alert.severity) < rank(seen)) worst.set(alert.device_id, alert.severity);
  }
  return worst;
}

function statusCell(device, detail) {
  const cell = (cls, text) => h("span", { class: `status ${cls}`, text });
  if (device.status === "decommissioned") return cell("off", t("device.decommissioned"));
  if (!detail) return cell("unknown", "…");
  if (detail.online === true) return cell("online", t("device.online"));
  if (detail.online === false) return cell("offline", t("device.offline"));
  return cell("unknown", t("device.unknown"));
}

function batteryCell(detail) {
  if (!detail || typeof detail.battery !== "number") return h("span", { class: "muted", text: "—" });
  const pct = Math.max(0, Math.min(100, Math.round(detail.battery)));
  const fill = h("span", { class: "battery-fill" });
  fill.style.width = `${pct}%`; // CSSOM, which the page's CSP allows (style attributes it does not)
  return h("span", { class: `battery${pct < 20 ? " low" : ""}`, title: `${pct}%` },
    h("span", { class: "battery-bar" }, fill), `${pct}%`);
}

function deviceRow(device, severity, detail) {
  const seen = detail && detail.last_seen;
  const place = [device.node, device.location].filter(Boolean).join(" · ");
  const cls = `device${severity ? ` sev-${severity}` : ""}`;
  return h("li", { class: cls, dataset: { deviceId: device.device_id } },
    h("span", { class: "device-id" }, h("strong", { text: device.device_id }),
      severity ? severityBadge(severity) : null),
    h("span", { class: "device-kind", text: t(`kind.${device.kind}`, {}, device.kind) }),
    h("span", { class: "device-place", text: place }),
    h("span", { class: "device-status" }, statusCell(device, detail)),
    h("span", { class: "device-battery" }, batteryCell(detail)),
    h("span", { class: "device-seen", title: seen ? fmtTime(seen) : "" }, seen ? fmtAgo(seen) : "—"));
}

/** The devices of building `code` (its compound chosen in the tiles view is `compoundCode`). */
export function buildingView(ctx, tree, compoundCode, code) {
  const node = findNode(tree, code);
  const list = h("ul", { class: "devices" }, h("li", { class: "loading", text: t("loading") }));
  const kinds = h("div", { class: "chips" });
  const back = compoundCode ? `#/community/${seg(compoundCode)}` : "#/community";
  const el = h("section", { class: "view building" },
    h("a", { href: back, class: "back", text: t("building.back") }),
    h("div", { class: "view-head" },
      h("h2", { text: node ? node.name : code }), h("span", { class: "muted", text: code })),
    kinds,
    h("div", { class: "device-header", "aria-hidden": "true" },
      ["device.id", "device.kind", "device.place", "device.status", "device.battery", "device.seen"]
        .map((key) => h("span", { text: t(key) }))),
    list);
  let alive = true;
  let devices = [];
  let worst = new Map();
  const details = new Map();
  let kind = null;

  function draw() {
    const counts = new Map();
    for (const d of devices) counts.set(d.kind, (counts.get(d.kind) || 0) + 1);
    put(kinds, [[null, devices.length], ...counts].map(([k, n]) => h("button", {
      type: "button", class: `chip${k === kind ? " on" : ""}`,
      text: `${k ? t(`kind.${k}`, {}, k) : t("building.all")} ${n}`,
      onclick: () => { kind = k; draw(); },
    })));
    const rank = (d) => (worst.has(d.device_id) ? SEVERITIES.indexOf(worst.get(d.device_id)) : 9);
    const byId = (a, b) => a.device_id.localeCompare(b.device_id, undefined, { numeric: true });
    const shown = devices.filter((d) => !kind || d.kind === kind)
      .sort((a, b) => rank(a) - rank(b) || byId(a, b));
    put(list, shown.length ? shown.map(rowOf) : h("li", { class: "empty", text: t("building.empty") }));
  }

  function rowOf(device) {
    return deviceRow(device, worst.get(device.device_id), details.get(device.device_id));
  }

  function redrawRow(device) {
    const old = list.querySelector(`li[data-device-id="${CSS.escape(device.device_id)}"]`);
    if (old) old.replaceWith(rowOf(device));
  }

  async function loadAlerts() {
    const page = await api(withQuery("/alerts", { state: "firing", node: code, limit: 1000 }));
    worst = worstByDevice(page.items);
  }

  async function load() {
    try {
      [devices] = await Promise.all([allDevices(code), loadAlerts()]);
    } catch (err) {
      if (alive) put(list, h("li", {}, note("error", err.detail)));
      return;
    }
    if (!alive) return;
    draw();
    await eachLimited(devices, DETAIL_LANES, async (device) => {
      try {
        details.set(device.device_id, await api(`/devices/${seg(device.device_id)}`));
        if (alive) redrawRow(device);
      } catch (err) {
        // one missing detail leaves its row with "…"; the list itself is correct
      }
    }, () => alive);
  }

  const realert = debounce(async () => {
    try {
      await loadAlerts();
      if (alive) draw();
    } catch (err) {
      // keep what is shown; the next event tries again
    }
  }, 300);
  load();
  return {
    el,
    onEvent(type) {
      if (type.startsWith("alert.")) realert();
    },
    refresh: realert,
    dispose() {
      alive = false;
      realert.cancel();
    },
  };
}
