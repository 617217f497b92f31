// HTTP calls to the daemon (same origin only): the auth probe, login and
// logout, metrics history, alerts history. A 401 anywhere means "log in".

import { emit, store } from "./store.js";

const ROLE_KEY = "dockwire.role";

/** GET `path` as JSON; returns {status, body} (body null unless 2xx JSON). */
export async function getJson(path, { credentials = "same-origin" } = {}) {
  const res = await fetch(path, { credentials, cache: "no-store", headers: { Accept: "application/json" } });
  let body = null;
  if (res.ok) {
    try {
      body = await res.json();
    } catch {
      body = null;
    }
  }
  if (res.status === 401 && credentials !== "omit") emit("auth", "required");
  return { status: res.status, body };
}

/**
 * Finds out whether auth is on, and whether this browser has a session.
 * Auth off (the list answers without credentials): every browser is an admin.
 * Auth on: the role is the one the login reply gave (kept in sessionStorage
 * as a hint, never a token); without the hint, viewer.
 * Returns "off", "session", "login" (a session is needed) or "unreachable".
 */
export async function probeAuth() {
  let open;
  try {
    open = await fetch("/api/v1/containers", { credentials: "omit", cache: "no-store" });
  } catch {
    return "unreachable";
  }
  if (open.ok) {
    store.authMode = "off";
    store.role = "admin";
    return "off";
  }
  store.authMode = "on";
  if (open.status !== 401) return "unreachable";
  const withCookie = await fetch("/api/v1/containers", { credentials: "same-origin", cache: "no-store" });
  if (withCookie.ok) {
    store.role = sessionStorage.getItem(ROLE_KEY) === "admin" ? "admin" : "viewer";
    return "session";
  }
  return "login";
}

/**
 * POST /api/v1/login. Returns {ok, role, message}; the session cookie is set
 * by the daemon (HttpOnly), the page keeps only the role hint.
 */
export async function login(username, password) {
  let res;
  try {
    res = await fetch("/api/v1/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
  } catch {
    return { ok: false, message: "The daemon is not reachable." };
  }
  if (res.ok) {
    let body = {};
    try {
      body = await res.json();
    } catch {
      body = {};
    }
    const role = body.role === "admin" ? "admin" : "viewer";
    sessionStorage.setItem(ROLE_KEY, role);
    store.role = role;
    store.features.login = true;
    return { ok: true, role, expires_at: body.expires_at };
  }
  if (res.status === 401) return { ok: false, message: "Wrong user name or password." };
  if (res.status === 429) return { ok: false, message: "Too many attempts: wait a minute and try again." };
  if (res.status === 404 || res.status === 405) {
    store.features.login = false;
    return { ok: false, message: "This daemon has no user logins ([[users]]); it needs a token client." };
  }
  return { ok: false, message: `Login failed (HTTP ${res.status}).` };
}

export async function logout() {
  sessionStorage.removeItem(ROLE_KEY);
  store.role = "viewer";
  try {
    await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin" });
  } catch {
    // The cookie expires by itself; the form is shown either way.
  }
}

/**
 * Metrics history of one server (SPEC section 7). Returns the samples, or
 * null when this daemon has no history endpoint (404: charts use live data).
 */
export async function metricsHistory(serverId, range) {
  if (store.features.history === false) return null;
  try {
    const { status, body } = await getJson(`/api/v1/servers/${encodeURIComponent(serverId)}/metrics?range=${range}`);
    if (status === 404) {
      store.features.history = false;
      return null;
    }
    if (!body || !Array.isArray(body.samples)) return null;
    store.features.history = true;
    return body;
  } catch {
    return null;
  }
}

/** GET /api/v1/alerts → {firing, recent}, or null without that endpoint. */
export async function alertsHistory() {
  if (store.features.alerts_api === false) return null;
  try {
    const { status, body } = await getJson("/api/v1/alerts");
    if (status === 404) {
      store.features.alerts_api = false;
      return null;
    }
    if (!body) return null;
    store.features.alerts_api = true;
    return body;
  } catch {
    return null;
  }
}
