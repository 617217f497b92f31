// The dashboard's entry: header (navigation, connection state, role,
// logout), the hash router (#/servers, #/containers, #/logs?c=...,
// #/charts/<server>, #/alerts, #/commands, #/login), and the sync with the
// daemon: what the page asks for after every (re)connect, and where each
// message goes.

import * as api from "./api.js";
import { clearToasts, h, replace, toast } from "./dom.js";
import { Socket } from "./socket.js";
import { apply, applyCommandReply, commandSent, emit, isAdmin, on, store } from "./store.js";
import * as alertsView from "./views/alerts.js";
import * as chartsView from "./views/charts.js";
import * as commandsView from "./views/commands.js";
import * as containersView from "./views/containers.js";
import * as loginView from "./views/login.js";
import * as logsView from "./views/logs.js";
import * as serversView from "./views/servers.js";

const VIEWS = {
  servers: { mod: serversView, title: "Servers" },
  containers: { mod: containersView, title: "Containers" },
  logs: { mod: logsView, title: "Logs" },
  charts: { mod: chartsView, title: "Charts" },
  alerts: { mod: alertsView, title: "Alerts" },
  commands: { mod: commandsView, title: "Commands", admin: true },
  login: { mod: loginView, title: "Log in", hidden: true },
};

// ---- the socket and what the page asks after each connect --------------------
/** Per connection: servers whose containers / metrics we subscribed to. */
let subscribed = new Set();
let metricsSubscribed = new Set();

const sock = new Socket("/api/v1/ws", {
  onState(state, detail) {
    store.conn = { state, detail };
    emit("conn");
  },
  onReady() {
    subscribed = new Set();
    metricsSubscribed = new Set();
    if (store.features.list_servers !== false) sock.request({ type: "list_servers" });
    logsView.resync();
  },
  onDown() {
    for (const s of store.servers.values()) if (s.local) s.online = false;
    emit("servers");
  },
  onAuthRequired() {
    needLogin();
  },
  onMessage(msg) {
    if (apply(msg)) {
      if (msg.type === "servers" || msg.type === "server_state_change") subscribeRemotes();
      return;
    }
    if (logsView.handle(msg)) return;
    if (applyCommandReply(msg)) return;
    if (msg.type === "error") onError(msg);
  },
});

/**
 * Containers of every online server (SPEC section 6), the local one's too:
 * its table comes unasked (`initial_state` on connect), but its
 * `container_stats` only to subscribers. Metrics of every remote server,
 * online or not: that topic also carries the server's `alert` changes
 * (docs/alerts.md), and an offline agent's `agent_offline` fires and
 * resolves (the moment it connects, before any `server_state_change` could
 * make the page subscribe) while it is offline. Local metrics and alerts
 * come unasked.
 */
function subscribeRemotes() {
  for (const s of store.servers.values()) {
    if (!s.local && !metricsSubscribed.has(s.server_id)) {
      metricsSubscribed.add(s.server_id);
      sock.send({ type: "subscribe_metrics", server_id: s.server_id });
    }
    if (!s.online) continue;
    const docker = !Array.isArray(s.capabilities) || !s.capabilities.length || s.capabilities.includes("docker");
    if (docker && !subscribed.has(s.server_id) && store.features.subscribe_containers !== false) {
      subscribed.add(s.server_id);
      sock.request({ type: "subscribe_containers", server_id: s.server_id });
    }
  }
}

/** Errors nobody asked for: a daemon without a newer message is not a fault. */
function onError(msg) {
  const text = String(msg.message || "");
  const unknown = /unknown message type "([a-z_]+)"/.exec(text);
  if (unknown) {
    if (unknown[1] in store.features) store.features[unknown[1]] = false;
    emit("servers");
    return;
  }
  if (/^no log stream for/i.test(text)) return;
  toast(text, "error");
}

// ---- commands --------------------------------------------------------------
const ctx = {
  sock,
  dockerCommand(serverId, action, c) {
    if (!isAdmin()) return;
    const msg = { type: "docker_command", server_id: serverId, action, container_id: c.id };
    const rid = sock.request(msg);
    if (!rid) return toast("Not connected: the command was not sent.", "error");
    commandSent(rid, { kind: "docker", server_id: serverId, action, container_id: c.id, label: `${action} ${c.name}` });
  },
  relayCommand(serverId, command) {
    if (!isAdmin()) return;
    const rid = sock.request({ type: "command", server_id: serverId, command });
    if (!rid) return toast("Not connected: the command was not sent.", "error");
    commandSent(rid, { kind: "command", server_id: serverId, command });
  },
  loggedIn() {
    store.session = true;
    renderHeader();
    sock.start();
    location.hash = lastView && lastView !== "#/login" ? lastView : "#/containers";
  },
};

// Commands nobody answered: the daemon's own timeout is 30 s.
setInterval(() => {
  for (const c of store.commands.values()) {
    if ((c.state === "sent" || c.state === "accepted") && Date.now() - c.sentAt > 35000) {
      c.state = "failed";
      c.output = "no answer";
      emit("commands", c.request_id);
    }
  }
}, 5000);

// ---- auth --------------------------------------------------------------------
let lastView = null;

function needLogin() {
  sock.stop();
  clearToasts();
  store.authMode = "on";
  store.role = "viewer";
  store.session = false;
  store.conn = { state: "auth", detail: "log in to continue" };
  renderHeader();
  if (!location.hash.startsWith("#/login")) {
    lastView = location.hash;
    location.hash = "#/login";
  } else route();
}
on("auth", needLogin);

// ---- header and router -----------------------------------------------------------
const header = h("header", { class: "top" });
const main = h("main", { id: "main" });
let unmount = null;

function connLabel() {
  const { state, detail } = store.conn;
  const text = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…", down: "disconnected", auth: "login needed", idle: "offline" }[state] || state;
  return h(
    "span",
    { class: `conn ${state}`, id: "conn-state", title: detail || text, dataset: { state } },
    h("span", { class: "dot" }),
    text,
    state === "down" ? h("span", { class: "muted small" }, ` (${detail})`) : null,
    state === "down" ? h("button", { class: "small", onclick: () => sock.retryNow() }, "retry now") : null,
  );
}

function renderHeader() {
  const current = (location.hash.slice(2).split(/[/?]/)[0] || "containers").toLowerCase();
  // Before a login: no menu, no role, no logout.
  const out = store.authMode === "on" && !store.session;
  const links = Object.entries(VIEWS)
    .filter(([, v]) => !out && !v.hidden && (!v.admin || isAdmin()))
    .map(([k, v]) => h("a", { href: `#/${k}`, class: k === current ? "active" : "", id: `nav-${k}` }, v.title));
  replace(
    header,
    h("span", { class: "brand" }, "dockwire"),
    h("nav", null, ...links),
    h("span", { class: "spacer" }),
    connLabel(),
    out ? null : h("span", { class: `role ${store.role}`, id: "role" }, store.authMode === "off" ? "admin (auth off)" : store.role),
    store.authMode === "on" && !out
      ? h(
          "button",
          {
            class: "small",
            id: "logout",
            onclick: async () => {
              await api.logout();
              needLogin();
            },
          },
          "Log out",
        )
      : null,
  );
}

function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [pathPart, query = ""] = raw.split("?");
  const [name, ...rest] = pathPart.split("/");
  let key = VIEWS[name] ? name : "containers";
  if (VIEWS[key].admin && !isAdmin()) key = "containers";
  if (key !== "login" && store.conn.state === "auth") key = "login";
  if (unmount) unmount();
  replace(main);
  unmount = VIEWS[key].mod.mount(main, new URLSearchParams(query), ctx, rest.join("/")) || null;
  document.title = `${VIEWS[key].title} · dockwire`;
  renderHeader();
}

on("conn", renderHeader);

async function boot() {
  document.body.append(header, main);
  logsView.init(sock);
  window.__dockwire = { store, logs: logsView.logs, inject: logsView.inject, sock };
  renderHeader();
  const auth = await api.probeAuth();
  store.session = auth === "session";
  window.addEventListener("hashchange", route);
  if (auth === "login") {
    needLogin();
    return;
  }
  if (!location.hash || location.hash === "#/" || location.hash.startsWith("#/login")) history.replaceState(null, "", "#/containers");
  route();
  sock.start();
}

boot();
