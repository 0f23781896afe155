// Actions on a work order: dispatch, start, resolve (with the sensor-verified refusal and an
// override with reason), close, reopen, comment and rate. Every action posts to the API and
// hands the returned order back through `done(order, message)`.
import { api, seg } from "./api.js";
import { h, note, put } from "./dom.js";
import { t } from "./i18n.js";

/** Actions allowed from each state (the API has the final word). */
export const ACTIONS_FROM = {
  open: ["dispatch"],
  dispatched: ["dispatch", "start", "reopen"],
  in_progress: ["resolve", "reopen"],
  resolved: ["close", "reopen"],
  closed: ["reopen"],
};

function field(label, control) {
  return h("label", { class: "field" }, h("span", { text: label }), control);
}

function textInput(name, placeholder) {
  return h("input", { type: "text", name, placeholder, autocomplete: "off" });
}

function assigneePicker(order, staff) {
  const select = h("select", { name: "assignee" },
    h("option", { value: "", text: t("act.pick") }),
    staff.map((person) => h("option", {
      value: person.id,
      text: `${person.name} · ${t(`staffrole.${person.role}`, {}, person.role)} · ${person.node}`,
      selected: person.id === order.assignee,
    })));
  return select;
}

/**
 * The actions panel of `order`. `staff` are the people the token may dispatch to;
 * `done(order, message)` is called with the API's answer after each successful action.
 */
export function actionsPanel(ctx, order, staff, done) {
  const status = h("div", { class: "action-status", "aria-live": "polite" });
  const noteInput = textInput("note", t("act.note_hint"));
  const photoInput = h("input", { type: "url", name: "photo_url", placeholder: "https://…" });
  const allowed = ACTIONS_FROM[order.state] || [];
  const picker = allowed.includes("dispatch") ? assigneePicker(order, staff) : null;

  async function post(path, body, message, button) {
    for (const b of el.querySelectorAll("button")) b.disabled = true;
    put(status);
    try {
      done(await api(path, { method: "POST", body }), message);
    } catch (err) {
      for (const b of el.querySelectorAll("button")) b.disabled = false;
      if (err.status === 409 && body.action === "resolve" && !body.override_reason) {
        put(status, overrideBox(err.detail, body));
      } else {
        put(status, note("error", err.detail));
      }
      if (button) button.focus();
    }
  }

  function move(action, extra = {}) {
    const body = { action, note: noteInput.value.trim(), ...extra };
    if (photoInput.value.trim()) body.photo_url = photoInput.value.trim();
    return body;
  }

  function overrideBox(detail, body) {
    const hint = t("act.reason_hint");
    const reason = h("textarea", { name: "override_reason", rows: 2, placeholder: hint });
    const go = h("button", { type: "button", class: "danger", text: t("act.override") });
    go.addEventListener("click", () => {
      if (!reason.value.trim()) return reason.focus();
      return post(`/work-orders/${seg(order.id)}/transitions`,
        { ...body, override_reason: reason.value.trim() }, t("done.resolve"), go);
    });
    return h("div", { class: "refusal" }, note("warn", detail),
      h("p", { text: t("act.override_help") }), field(t("act.reason"), reason), go);
  }

  const buttons = allowed.map((action) => {
    const cls = action === "reopen" ? "ghost" : "primary";
    const label = t(`act.${action}`);
    const button = h("button", { type: "button", class: cls, dataset: { action }, text: label });
    button.addEventListener("click", () => {
      const extra = {};
      if (action === "dispatch") {
        if (!picker.value) {
          put(status, note("error", t("act.pick_first")));
          return picker.focus();
        }
        extra.assignee = Number(picker.value);
      }
      return post(`/work-orders/${seg(order.id)}/transitions`, move(action, extra),
        t(`done.${action}`), button);
    });
    return button;
  });

  const el = h("section", { class: "card actions" },
    h("h3", { text: t("act.title") }),
    picker ? field(t("act.assignee"), staff.length ? picker : note("warn", t("act.no_staff"))) : null,
    field(t("act.note"), noteInput),
    field(t("act.photo"), photoInput),
    h("div", { class: "buttons" }, buttons),
    status,
    commentForm(order, post),
    order.state === "closed" ? ratingForm(order, post) : null);
  return el;
}

function commentForm(order, post) {
  const text = h("textarea", { name: "comment", rows: 2, placeholder: t("act.comment_hint") });
  const button = h("button", { type: "button", class: "ghost", text: t("act.comment") });
  button.addEventListener("click", () => {
    if (!text.value.trim()) return text.focus();
    return post(`/work-orders/${seg(order.id)}/comments`, { note: text.value.trim() },
      t("done.comment"), button);
  });
  return h("div", { class: "subform" }, field(t("act.comment_label"), text), button);
}

function ratingForm(order, post) {
  const stars = h("div", { class: "stars", role: "radiogroup", "aria-label": t("act.rating") });
  let score = order.rating || 0;
  const paint = () => {
    for (const star of stars.children) star.classList.toggle("on", Number(star.dataset.score) <= score);
  };
  for (let n = 1; n <= 5; n += 1) {
    stars.append(h("button", {
      type: "button", class: "star", role: "radio", dataset: { score: n },
      "aria-label": t("act.stars", { n }), text: "★",
      onclick: () => { score = n; paint(); },
    }));
  }
  paint();
  const comment = textInput("rating_comment", t("act.rating_hint"));
  const button = h("button", { type: "button", class: "primary", text: t("act.rate") });
  button.addEventListener("click", () => {
    if (!score) return stars.firstChild.focus();
    return post(`/work-orders/${seg(order.id)}/rating`, { score, comment: comment.value.trim() },
      t("done.rate"), button);
  });
  return h("div", { class: "subform" }, field(t("act.rating"), stars), comment, button);
}
