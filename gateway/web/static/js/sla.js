// SLA deadlines of work orders: which one applies, and live countdowns that tick every second.
import { fmtDuration, h } from "./dom.js";
import { t } from "./i18n.js";

/** States in which an order's deadlines run. */
export const ACTIVE_STATES = ["open", "dispatched", "in_progress"];

/** The deadline that applies now: ack until acknowledged, then resolve; null when none. */
export function slaOf(order) {
  if (!ACTIVE_STATES.includes(order.state)) return null;
  if (!order.acked_at && order.ack_due) return { kind: "ack", due: order.ack_due };
  if (order.resolve_due) return { kind: "resolve", due: order.resolve_due };
  return null;
}

/** Whether an order is past its deadline (the API's mark, or the browser's clock). */
export function isOverdue(order) {
  const sla = slaOf(order);
  return Boolean(order.overdue || (sla && Date.parse(sla.due) <= Date.now()));
}

function update(el) {
  const left = Date.parse(el.dataset.due) - Date.now();
  const late = left <= 0 || el.dataset.flagged === "1";
  const label = t(el.dataset.kind === "ack" ? "sla.ack" : "sla.resolve");
  if (!late) el.textContent = t("sla.left", { what: label, d: fmtDuration(left) });
  else if (left <= 0) el.textContent = t("sla.overdue", { what: label, d: fmtDuration(-left) });
  else el.textContent = t("sla.late", { what: label }); // the server's clock says so
  el.classList.toggle("overdue", late);
  const card = el.closest("[data-order-id]");
  if (card) card.classList.toggle("overdue", late);
}

/** A countdown element for `order`'s current deadline, or null when none runs. */
export function countdown(order) {
  const sla = slaOf(order);
  if (!sla) return null;
  const el = h("span", {
    class: "countdown",
    dataset: { due: sla.due, kind: sla.kind, flagged: order.overdue ? "1" : "0" },
  });
  update(el);
  return el;
}

/** Refresh every countdown under `root` (called once a second). */
export function tick(root) {
  for (const el of root.querySelectorAll(".countdown[data-due]")) update(el);
}
