// The page: sign-in, header, hash routing between the views, live events, language switch.
import { api, clearToken, getToken, seg, setToken, withQuery } from "./api.js";
import { boardView } from "./board.js";
import { communityView } from "./community.js";
import { debounce, h, note, put } from "./dom.js";
import { applyStatic, getLang, setLang, t } from "./i18n.js";
import { inboxView } from "./inbox.js";
import { connect, disconnect } from "./live.js";
import { orderView } from "./order.js";
import { tick } from "./sla.js";

const main = document.getElementById("main");
const tabs = document.getElementById("tabs");
const who = document.getElementById("who");
const live = document.getElementById("live");
const signOut = document.getElementById("signout");
const langButton = document.getElementById("lang");
const toastBox = document.getElementById("toast");
const inboxCount = document.getElementById("inbox-count");

let ctx = null; // set while signed in
let view = null;
let streamOpened = false; // the live stream was open before: a new "open" is a reconnect

const decode = (part) => (part === undefined ? undefined : decodeURIComponent(part));
const ROUTES = [
  [/^#\/inbox$/, "inbox", () => inboxView(ctx)],
  [/^#\/board$/, "board", () => boardView(ctx)],
  [/^#\/orders\/(\d+)$/, "board", (m) => orderView(ctx, Number(m[1]))],
  [/^#\/community(?:\/([^/]+))?(?:\/([^/]+))?$/, "community",
    (m) => communityView(ctx, decode(m[1]), decode(m[2]))],
];

const TOAST_MS = { error: 8000, alarm: 6000, ok: 2500, info: 3500 };

function toast(message, kind = "info") {
  const role = kind === "error" ? "alert" : "status";
  const item = h("div", { class: `toast toast-${kind}`, role, text: message });
  toastBox.append(item);
  while (toastBox.children.length > 2) toastBox.firstChild.remove();
  setTimeout(() => item.remove(), TOAST_MS[kind] || 3500);
}

function mount(next, tab) {
  if (view) view.dispose();
  view = next;
  put(main, next.el);
  for (const link of tabs.querySelectorAll("a")) {
    link.classList.toggle("on", link.dataset.view === tab);
    link.toggleAttribute("aria-current", link.dataset.view === tab);
  }
}

function route() {
  if (!ctx) return;
  const hash = location.hash || "#/inbox";
  for (const [pattern, tab, make] of ROUTES) {
    const match = hash.match(pattern);
    if (match) {
      mount(make(match), tab);
      return;
    }
  }
  location.replace("#/inbox");
}

const refreshCount = debounce(async () => {
  try {
    const page = await api(withQuery("/alerts", { state: "firing", limit: 1 }));
    inboxCount.textContent = page.total ? String(page.total) : "";
  } catch (err) {
    inboxCount.textContent = "";
  }
}, 250);

function onEvent(type, data) {
  if (view) view.onEvent(type, data);
  if (type.startsWith("alert.")) refreshCount();
  const alert = data && data.alert;
  if (type === "alert.firing" && alert && ["critical", "major"].includes(alert.severity)) {
    toast(t("live.new_alert", { title: alert.title, device: alert.device_id }), "alarm");
  }
}

function onLiveState(state) {
  live.dataset.live = state;
  live.textContent = t(`live.${state}`);
  if (state !== "open") return;
  if (streamOpened && view) view.refresh(); // catch up after a reconnect
  streamOpened = true;
}

function drawHeader() {
  const signedIn = Boolean(ctx);
  tabs.hidden = !signedIn;
  signOut.hidden = !signedIn;
  live.hidden = !signedIn;
  langButton.textContent = getLang() === "zh" ? "EN" : "中文";
  if (!signedIn) return put(who);
  const place = ctx.scopeNode ? `${ctx.scopeNode.name} (${ctx.who.scope})` : ctx.who.scope;
  return put(who, h("span", { class: "who-name", text: ctx.who.name }),
    h("span", { class: "who-role", text: t(`role.${ctx.who.role}`, {}, ctx.who.role) }),
    h("span", { class: "who-scope", "data-scope": ctx.who.scope, text: place }));
}

function showSignIn(message) {
  disconnect();
  if (view) view.dispose();
  view = null;
  ctx = null;
  drawHeader();
  const input = h("input", {
    type: "password", id: "token-input", name: "token", autocomplete: "off",
    spellcheck: "false", placeholder: "scc_…", required: true,
  });
  const error = h("div", { class: "signin-error" }, message ? note("error", message) : null);
  const button = h("button", { type: "submit", class: "primary", text: t("signin.submit") });
  const form = h("form", { class: "card signin" },
    h("h2", { text: t("signin.title") }), h("p", { class: "muted", text: t("signin.help") }),
    h("label", { for: "token-input", text: t("signin.token") }), input, button, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    const failure = await signIn(input.value.trim());
    button.disabled = false;
    if (failure) put(error, note("error", failure));
  });
  put(main, form);
  input.focus();
}

function makeContext(whoami, scopeNode) {
  let tree = null;
  return {
    who: whoami,
    scopeNode,
    can: (permission) => whoami.permissions.includes(permission),
    go: (hash) => { location.hash = hash; },
    toast,
    tree: () => {
      tree = tree || api("/nodes").catch((err) => { tree = null; throw err; });
      return tree;
    },
  };
}

/** Sign in with `token`; returns an error text, or null when signed in. */
async function signIn(token) {
  if (!token) return t("signin.empty");
  setToken(token);
  let whoami;
  try {
    whoami = await api("/auth/whoami");
  } catch (err) {
    clearToken();
    return err.status === 401 ? t("signin.invalid") : err.detail;
  }
  const scopeNode = await api(`/nodes/${seg(whoami.scope)}`).catch(() => null);
  ctx = makeContext(whoami, scopeNode);
  drawHeader();
  streamOpened = false;
  connect(token, onEvent, onLiveState);
  refreshCount();
  route();
  return null;
}

langButton.addEventListener("click", () => {
  setLang(getLang() === "zh" ? "en" : "zh");
  applyStatic(document);
  drawHeader();
  if (ctx) {
    live.textContent = t(`live.${live.dataset.live || "connecting"}`);
    route();
  } else showSignIn();
});
signOut.addEventListener("click", () => {
  clearToken();
  history.replaceState(null, "", location.pathname);
  showSignIn();
});
window.addEventListener("hashchange", route);
window.addEventListener("scc:unauthorized", () => {
  if (ctx) {
    clearToken();
    showSignIn(t("signin.expired"));
  }
});
setInterval(() => tick(main), 1000);

applyStatic(document);
drawHeader();
if (getToken()) {
  signIn(getToken()).then((failure) => {
    if (failure) showSignIn(failure);
  });
} else showSignIn();
