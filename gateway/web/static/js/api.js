// Calls to the gateway's REST API with the signed-in token; errors carry the API's detail.
import { t } from "./i18n.js";

const TOKEN_KEY = "scc.token";

/** The API token of this tab (sessionStorage: gone when the tab closes). */
export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** A refused or failed call: `status` (0 when the network failed) and the API's `detail`. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

/** A path with query parameters; null and undefined values are left out. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined) query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** Path segment escaping for codes and ids taken from API answers. */
export function seg(value) {
  return encodeURIComponent(String(value));
}

/**
 * Call the API: JSON in, JSON out. A 401 also fires "scc:unauthorized" on window so the
 * app can return to the sign-in form.
 */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${getToken() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, t("error.network"));
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : response.statusText;
    if (response.status === 401) window.dispatchEvent(new CustomEvent("scc:unauthorized"));
    throw new ApiError(response.status, detail || `HTTP ${response.status}`);
  }
  return data;
}

/** Run `worker(item)` over `items`, at most `limit` at a time; stops early when `alive()` is false. */
export async function eachLimited(items, limit, worker, alive = () => true) {
  let next = 0;
  const lane = async () => {
    while (next < items.length && alive()) {
      const item = items[next];
      next += 1;
      await worker(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}
