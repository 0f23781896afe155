// Alert inbox: firing alerts inside the token's scope, critical first, live, with acknowledge.
import { api, seg, withQuery } from "./api.js";
import { debounce, fmtAgo, fmtTime, fmtValues, h, note, put, severityBadge } from "./dom.js";
import { t } from "./i18n.js";

/** Severities from worst to mildest. */
export const SEVERITIES = ["critical", "major", "warning", "info"];

function rank(severity) {
  const at = SEVERITIES.indexOf(severity);
  return at < 0 ? SEVERITIES.length : at;
}

/** Alerts sorted critical first, then newest first. */
export function bySeverity(alerts) {
  const time = (alert) => Date.parse(alert.fired_at || alert.first_at);
  return [...alerts].sort((a, b) => rank(a.severity) - rank(b.severity) || time(b) - time(a));
}

/** The alert's message without the "<rule title>: " the rules engine puts in front. */
export function message(alert) {
  const prefix = `${alert.title}: `;
  return alert.message.startsWith(prefix) ? alert.message.slice(prefix.length) : alert.message;
}

async function openOrderOf(ctx, alert, button) {
  button.disabled = true;
  try {
    const query = { device_id: alert.device_id, limit: 20 };
    const page = await api(withQuery("/work-orders", query));
    const order = page.items.find((item) => item.alert_id === alert.id);
    if (order) ctx.go(`#/orders/${order.id}`);
    else ctx.toast(t("inbox.no_order"), "info");
  } catch (err) {
    ctx.toast(err.detail, "error");
  } finally {
    button.disabled = false;
  }
}

function ackArea(ctx, alert, reload) {
  if (alert.acked_at) {
    return h("span", { class: "acked" }, t("inbox.acked", { who: alert.acked_by || "?" }), " · ",
      h("time", { datetime: alert.acked_at, text: fmtTime(alert.acked_at) }));
  }
  if (!ctx.can("alerts:write")) return h("span", { class: "muted", text: t("inbox.unacked") });
  const button = h("button", { type: "button", class: "primary ack", text: t("inbox.ack") });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/alerts/${seg(alert.id)}/ack`, { method: "POST" });
      ctx.toast(t("inbox.ack_done"), "ok");
      reload();
    } catch (err) {
      button.disabled = false;
      ctx.toast(err.detail, "error");
    }
  });
  return button;
}

function card(ctx, alert, fresh, reload) {
  const orderButton = h("button", { type: "button", class: "ghost", text: t("inbox.order") });
  orderButton.addEventListener("click", () => openOrderOf(ctx, alert, orderButton));
  const since = alert.fired_at || alert.first_at;
  return h(
    "li",
    {
      class: `alert sev-${alert.severity}${fresh ? " fresh" : ""}${alert.acked_at ? " is-acked" : ""}`,
      dataset: { alertId: alert.id, device: alert.device_id },
    },
    h("div", { class: "alert-head" }, severityBadge(alert.severity),
      h("h3", { text: alert.title }),
      h("time", { class: "ago", datetime: since, title: fmtTime(since), text: fmtAgo(since) })),
    h("p", { class: "meta" }, h("strong", { text: alert.device_id }), " · ",
      t(`kind.${alert.kind}`, {}, alert.kind), " · ", (alert.path || []).join(" › ")),
    message(alert) ? h("p", { class: "message", text: message(alert) }) : null,
    h("p", { class: "values", text: fmtValues(alert.values) }),
    h("div", { class: "alert-foot" },
      h("span", { class: "muted", text: t("inbox.times", { n: alert.occurrences }) }),
      h("span", { class: "spacer" }), orderButton, ackArea(ctx, alert, reload)),
  );
}

/** The inbox view. */
export function inboxView(ctx) {
  const list = h("ul", { class: "alerts", "aria-live": "polite" });
  const summary = h("p", { class: "summary" });
  const el = h("section", { class: "view inbox" },
    h("div", { class: "view-head" }, h("h2", { text: t("inbox.title") }), summary), list);
  let known = null; // alert ids shown so far; null before the first load
  let alive = true;

  async function load() {
    let page;
    try {
      page = await api(withQuery("/alerts", { state: "firing", limit: 500 }));
    } catch (err) {
      if (alive) put(list, h("li", {}, note("error", err.detail)));
      return;
    }
    if (!alive) return;
    const alerts = bySeverity(page.items);
    const counts = SEVERITIES.map((sev) => [sev, alerts.filter((a) => a.severity === sev).length]);
    put(summary, counts.filter(([, n]) => n > 0)
      .map(([sev, n]) => h("span", { class: `pill sev-${sev}`, text: `${t(`sev.${sev}`)} ${n}` })));
    const fresh = (alert) => known !== null && !known.has(alert.id);
    put(list, alerts.length === 0
      ? h("li", { class: "empty", text: t("inbox.empty") })
      : alerts.map((alert) => card(ctx, alert, fresh(alert), reloadSoon)));
    known = new Set(alerts.map((alert) => alert.id));
  }

  const reloadSoon = debounce(load, 150);
  put(list, h("li", { class: "loading", text: t("loading") }));
  load();
  return {
    el,
    onEvent(type) {
      if (type.startsWith("alert.") || type === "workorder.acknowledged") reloadSoon();
    },
    refresh: reloadSoon,
    dispose() {
      alive = false;
      reloadSoon.cancel();
    },
  };
}
