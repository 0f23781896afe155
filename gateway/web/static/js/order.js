// One work order: facts, SLA, occurrences, readings chart, audit trail and the actions.
import { actionsPanel } from "./actions.js";
import { api, seg } from "./api.js";
import { debounce, fmtTime, fmtValues, h, note, put, severityBadge, stateBadge } from "./dom.js";
import { readingsPanel } from "./chart.js";
import { t } from "./i18n.js";
import { message } from "./inbox.js";
import { countdown } from "./sla.js";

/**
 * Who the token may dispatch `order` to: the staff of the owning node when it is in scope,
 * else (an order escalated above the token, or owned by a grid above a compound manager)
 * the staff of the nodes of the order's path inside the token's scope.
 */
export async function staffFor(ctx, order) {
  const read = (code) => api(`/nodes/${seg(code)}/staff`).catch(() => []);
  if (order.node) {
    const owners = await read(order.node);
    if (owners.length) return owners;
  }
  const path = order.path || [];
  const from = path.indexOf(ctx.who.scope);
  const codes = from >= 0 ? path.slice(from) : path;
  const lists = await Promise.all([...codes].reverse().map(read));
  return lists.flat();
}

function row(label, ...value) {
  return [h("dt", { text: label }), h("dd", {}, ...value)];
}

function assigneeText(order, staff) {
  if (!order.assignee) return "—";
  const person = staff.find((p) => p.id === order.assignee);
  return person ? `${person.name} (${person.node})` : `#${order.assignee}`;
}

function sensorText(order) {
  if (!order.sensor_state) return "—";
  const since = order.sensor_normal_since;
  const tail = since ? ` · ${t("order.normal_since", { at: fmtTime(since) })}` : "";
  return t(`sensor.${order.sensor_state}`) + tail;
}

function deadlines(order) {
  const both = `${t("sla.ack")} ${fmtTime(order.ack_due)} · ${t("sla.resolve")} ${fmtTime(order.resolve_due)}`;
  return [countdown(order) || "—", h("br"), h("small", { class: "muted", text: both })];
}

function facts(order, staff) {
  const source = t(`source.${order.source}`, {}, order.source);
  const kind = `${source} · ${t(`category.${order.category}`, {}, order.category)}`;
  const escalated = order.escalation_level ? ` · ${t("order.escalated", { n: order.escalation_level })}` : "";
  const stars = order.rating ? `${"★".repeat(order.rating)} ${order.rating_comment || ""}` : null;
  return h("section", { class: "card facts" }, h("dl", {},
    row(t("order.source"), kind),
    row(t("order.place"), (order.path || []).join(" › ") || "—"),
    row(t("order.owner_node"), (order.node || "—") + escalated),
    row(t("order.assignee"), assigneeText(order, staff)),
    row(t("order.device"), order.device_id || "—"),
    row(t("order.created"), fmtTime(order.created_at)),
    row(t("order.deadlines"), ...deadlines(order)),
    row(t("order.sensor"), sensorText(order)),
    row(t("order.last_values"), fmtValues(order.last_values) || "—"),
    stars ? row(t("order.rating"), stars) : null));
}

function occurrence(order, item) {
  return h("li", {}, h("time", { datetime: item.at, text: fmtTime(item.at) }),
    h("span", { text: message({ title: order.title, message: item.message }) }),
    h("small", { class: "muted", text: fmtValues(item.values) }));
}

function occurrences(order) {
  const items = [...(order.occurrences || [])].reverse();
  const count = h("span", { class: "count", text: String(order.occurrence_count) });
  return h("section", { class: "card occurrences" }, h("h3", {}, t("order.occurrences"), count),
    items.length === 0
      ? h("p", { class: "muted", text: t("order.none") })
      : h("ol", { class: "timeline" }, items.map((item) => occurrence(order, item))));
}

function auditEntry(entry) {
  const moved = entry.to_state && entry.to_state !== entry.from_state;
  const photo = entry.photo_url && /^https?:\/\//.test(entry.photo_url);
  return h("li", { dataset: { action: entry.action } },
    h("time", { datetime: entry.at, text: fmtTime(entry.at) }),
    h("span", {}, h("strong", { text: entry.actor }), " ",
      t(`audit.${entry.action}`, {}, entry.action), moved ? ` → ${t(`state.${entry.to_state}`)}` : ""),
    entry.note ? h("span", { class: "note-text", text: entry.note }) : null,
    entry.override_reason
      ? h("span", { class: "override", text: t("order.override", { reason: entry.override_reason }) })
      : null,
    photo
      ? h("a", { href: entry.photo_url, target: "_blank", rel: "noopener noreferrer", text: t("order.photo") })
      : null);
}

function trail(order) {
  return h("section", { class: "card trail" }, h("h3", { text: t("order.trail") }),
    h("ol", { class: "timeline" }, order.history.map(auditEntry)));
}

/** The order detail view for `orderId`. */
export function orderView(ctx, orderId) {
  const body = h("div", { class: "order-body" }, h("p", { class: "loading", text: t("loading") }));
  const el = h("section", { class: "view order-view" },
    h("a", { href: "#/board", class: "back", text: t("order.back") }), body);
  let alive = true;
  let staff = null;
  let staffOf = null; // the owner the staff list was read for (escalation changes it)
  let chart = null;
  let shown = null; // the JSON of the order on screen: a reload that changes nothing keeps forms

  function draw(order) {
    shown = JSON.stringify(order);
    // The chart keeps its loaded readings across redraws of the same order.
    chart = chart || readingsPanel(order);
    const actions = ctx.can("work_orders:write")
      ? actionsPanel(ctx, order, staff, (next, text) => {
        ctx.toast(text, "ok");
        draw(next);
      })
      : note("info", t("order.read_only"));
    put(body,
      h("header", { class: "order-title", dataset: { orderId: order.id, state: order.state } },
        h("h2", { text: order.title }),
        h("div", { class: "badges" }, stateBadge(order.state), severityBadge(order.severity),
          h("span", { class: "order-id", text: `#${order.id}` }))),
      h("div", { class: "detail-grid" },
        h("div", { class: "col" }, facts(order, staff), actions),
        h("div", { class: "col" }, chart, occurrences(order), trail(order))));
  }

  async function load() {
    try {
      const order = await api(`/work-orders/${seg(orderId)}`);
      if (staffOf !== order.node) {
        staff = await staffFor(ctx, order);
        staffOf = order.node;
      }
      if (alive && JSON.stringify(order) !== shown) draw(order);
    } catch (err) {
      if (!alive) return;
      const text = err.status === 404 ? t("order.not_found", { id: orderId }) : err.detail;
      put(body, note("error", text));
    }
  }

  // A change made elsewhere waits while the user types in a form of this order.
  const typing = () => el.contains(document.activeElement)
    && ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
  const reloadSoon = debounce(() => (typing() ? reloadSoon() : load()), 300);
  load();
  return {
    el,
    onEvent(type, data) {
      const id = data && data.order ? data.order.id : null;
      if (type.startsWith("workorder.") && id === orderId) reloadSoon();
    },
    refresh: reloadSoon,
    dispose() {
      alive = false;
      reloadSoon.cancel();
    },
  };
}
