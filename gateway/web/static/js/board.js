// Work-order board: one column per state, SLA countdowns, overdue marking; live.
import { api, withQuery } from "./api.js";
import { debounce, h, note, put, severityBadge } from "./dom.js";
import { t } from "./i18n.js";
import { SEVERITIES } from "./inbox.js";
import { countdown, isOverdue } from "./sla.js";

/** Order states in lifecycle order (the board's columns). */
export const ORDER_STATES = ["open", "dispatched", "in_progress", "resolved", "closed"];
const PER_COLUMN = 100;

function card(order) {
  const late = isOverdue(order);
  const what = order.device_id
    ? h("strong", { text: order.device_id })
    : t(`source.${order.source}`, {}, order.source);
  const escalated = order.escalation_level > 0
    ? h("span", { class: "badge escalated", text: t("order.escalated", { n: order.escalation_level }) })
    : null;
  return h(
    "a",
    {
      href: `#/orders/${order.id}`,
      class: `order sev-${order.severity}${late ? " overdue" : ""}`,
      dataset: { orderId: order.id, state: order.state },
    },
    h("div", { class: "order-head" }, severityBadge(order.severity),
      h("span", { class: "order-id", text: `#${order.id}` }), escalated),
    h("h3", { text: order.title }),
    h("p", { class: "meta" }, what, " · ", t("order.at", { place: order.origin || "—" }),
      " · ", t("order.owner", { node: order.node || "—" })),
    order.sensor_state
      ? h("p", { class: `sensor sensor-${order.sensor_state}`, text: t(`sensor.${order.sensor_state}`) })
      : null,
    countdown(order),
    order.state === "closed" && order.rating
      ? h("p", { class: "rating", text: "★".repeat(order.rating) + "☆".repeat(5 - order.rating) })
      : null,
  );
}

/** Overdue orders first, then by severity; the API's newest-first order otherwise. */
export function boardOrder(orders) {
  const rank = (order) => SEVERITIES.indexOf(order.severity);
  return [...orders].sort((a, b) => isOverdue(b) - isOverdue(a) || rank(a) - rank(b));
}

function column(state, page, overdueOnly) {
  const items = boardOrder(overdueOnly ? page.items.filter(isOverdue) : page.items);
  const more = page.total > page.items.length
    ? h("p", { class: "muted more", text: t("board.more", { n: page.total - page.items.length }) })
    : null;
  return h(
    "section",
    { class: `column col-${state}`, dataset: { column: state } },
    h("h3", { class: "column-head" }, t(`state.${state}`),
      h("span", { class: "count", text: String(page.total) })),
    h("div", { class: "cards" },
      items.length ? items.map(card) : h("p", { class: "empty", text: t("board.empty") })),
    more,
  );
}

/** The board view. */
export function boardView(ctx) {
  const columns = h("div", { class: "board" });
  const toggle = h("input", { type: "checkbox", id: "overdue-only" });
  const lateCount = h("span", { class: "pill late-count" });
  const el = h("section", { class: "view board-view" },
    h("div", { class: "view-head" }, h("h2", { text: t("board.title") }), lateCount,
      h("label", { class: "toggle", for: "overdue-only" }, toggle, t("board.overdue_only"))),
    columns);
  let pages = null;
  let alive = true;

  function draw() {
    if (!pages) return;
    const late = pages.reduce((n, page) => n + page.items.filter(isOverdue).length, 0);
    lateCount.textContent = t("board.overdue_count", { n: late });
    lateCount.classList.toggle("is-late", late > 0);
    put(columns, ORDER_STATES.map((state, i) => column(state, pages[i], toggle.checked)));
  }

  async function load() {
    try {
      const query = (state) => withQuery("/work-orders", { state, limit: PER_COLUMN });
      const loaded = await Promise.all(ORDER_STATES.map((state) => api(query(state))));
      if (!alive) return;
      pages = loaded;
      draw();
    } catch (err) {
      if (alive) put(columns, note("error", err.detail));
    }
  }

  toggle.addEventListener("change", draw);
  const reloadSoon = debounce(load, 150);
  put(columns, h("p", { class: "loading", text: t("loading") }));
  load();
  return {
    el,
    onEvent(type) {
      if (type.startsWith("workorder.") || type === "alert.acknowledged") reloadSoon();
    },
    refresh: reloadSoon,
    dispose() {
      alive = false;
      reloadSoon.cancel();
    },
  };
}
