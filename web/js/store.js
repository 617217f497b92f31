// The page's state, fed by WebSocket messages (apply) and HTTP answers:
// servers, every server's containers and their usage, host metrics history,
// alerts, pending commands, and what this daemon supports. Views read it and
// listen for changes with on(topic, fn); nothing here touches the DOM.
//
// Topics: "servers", "containers", "metrics" (server id), "alerts",
// "commands", "conn", "auth", "logs" (the raw message).

const listeners = new Map();

export function on(topic, fn) {
  if (!listeners.has(topic)) listeners.set(topic, new Set());
  listeners.get(topic).add(fn);
  return () => listeners.get(topic).delete(fn);
}

export function emit(topic, arg) {
  for (const fn of listeners.get(topic) || []) {
    try {
      fn(arg);
    } catch (e) {
      // A view's bug must not stop the others; report it like the browser would.
      setTimeout(() => {
        throw e;
      });
    }
  }
}

/** Live samples kept per server for the charts (about 2 h at 1 s). */
const MAX_SAMPLES = 7200;
const MAX_RECENT = 1000;

export const store = {
  localId: null,
  /** server_id -> {server_id, name, online, last_seen, capabilities, hub, local, metrics, metricsAt} */
  servers: new Map(),
  /** server_id -> Map(container id -> Container) */
  containers: new Map(),
  /** server_id -> Map(container id -> {cpu_percent, memory_used, memory_limit, ...}) */
  stats: new Map(),
  /** server_id -> [{t, cpu, mem, memUsed, disk, rx, tx}] (rx/tx: bytes/s) */
  samples: new Map(),
  /** "server|rule|container" -> {server_id, data} */
  firing: new Map(),
  recent: [],
  role: "viewer",
  /** "unknown" | "off" | "on" */
  authMode: "unknown",
  /** Auth on: this browser has a working session. */
  session: false,
  conn: { state: "idle", detail: "" },
  /** Features this daemon has, learnt as it answers: null unknown, true, false. */
  features: { list_servers: null, subscribe_containers: null, history: null, alerts_api: null, login: null },
  /** request_id -> pending command {kind, server_id, label, state, output, sentAt} */
  commands: new Map(),
  commandOrder: [],
};

export function isAdmin() {
  return store.role === "admin";
}

export function serverName(id) {
  const s = store.servers.get(id);
  return s ? s.name || id : id || "?";
}

/** The local server's entry (created when the daemon greets us). */
function ensureServer(id, extra) {
  let s = store.servers.get(id);
  if (!s) {
    s = { server_id: id, name: id, online: true, last_seen: null, capabilities: [], local: false, metrics: null };
    store.servers.set(id, s);
  }
  Object.assign(s, extra);
  return s;
}

function sid(msg) {
  return msg.server_id || store.localId;
}

export function containersOf(serverId) {
  let m = store.containers.get(serverId);
  if (!m) {
    m = new Map();
    store.containers.set(serverId, m);
  }
  return m;
}

/** Finds a container of `serverId` by full id, name or id prefix. */
export function findContainer(serverId, ref) {
  const m = store.containers.get(serverId);
  if (!m || !ref) return null;
  if (m.has(ref)) return m.get(ref);
  const name = ref.replace(/^\//, "");
  for (const c of m.values()) if (c.name === name) return c;
  if (/^[0-9a-f]{4,}$/.test(ref)) {
    const hits = [...m.values()].filter((c) => c.id.startsWith(ref));
    if (hits.length === 1) return hits[0];
  }
  return null;
}

function numberOrNull(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** One host metrics sample into the chart series (network as a rate). */
export function addSample(serverId, data, into = null) {
  const t = Date.parse(data.timestamp) || Date.now();
  const list = into || store.samples.get(serverId) || [];
  if (!into && !store.samples.has(serverId)) store.samples.set(serverId, list);
  const prev = list[list.length - 1];
  if (prev && t <= prev.t) return list;
  let rxTotal = 0;
  let txTotal = 0;
  for (const n of Array.isArray(data.network) ? data.network : []) {
    if (n.interface === "lo") continue;
    rxTotal += numberOrNull(n.rx_bytes) || 0;
    txTotal += numberOrNull(n.tx_bytes) || 0;
  }
  let rx = null;
  let tx = null;
  if (prev && prev.rxTotal !== null && rxTotal >= prev.rxTotal && txTotal >= prev.txTotal) {
    const dt = (t - prev.t) / 1000;
    if (dt > 0) {
      rx = (rxTotal - prev.rxTotal) / dt;
      tx = (txTotal - prev.txTotal) / dt;
    }
  }
  list.push({
    t,
    cpu: numberOrNull(data.cpu_percent),
    mem: numberOrNull(data.memory_percent),
    disk: diskPercent(data),
    rx,
    tx,
    rxTotal,
    txTotal,
  });
  if (!into && list.length > MAX_SAMPLES) list.splice(0, list.length - MAX_SAMPLES);
  return list;
}

/** The fullest mount's used share, in percent. */
export function diskPercent(data) {
  let worst = null;
  for (const d of Array.isArray(data?.disk_usage) ? data.disk_usage : []) {
    if (d.total > 0) worst = Math.max(worst ?? 0, (100 * d.used) / d.total);
  }
  return worst;
}

function alertKey(serverId, data) {
  if (data.id) return String(data.id);
  return `${serverId}|${data.rule ?? data.name ?? "?"}|${data.container_id ?? data.container ?? ""}`;
}

function addRecent(a) {
  store.recent.unshift(a);
  if (store.recent.length > MAX_RECENT) store.recent.length = MAX_RECENT;
}

/** Applies one message from the daemon; returns true when it was known. */
export function apply(msg) {
  switch (msg.type) {
    case "connection_established": {
      store.localId = msg.server_id || store.localId || "local";
      const s = ensureServer(store.localId, { local: true, online: true, last_seen: new Date().toISOString() });
      if (s.name === s.server_id) s.name = "this host";
      emit("servers");
      return true;
    }
    case "servers": {
      store.features.list_servers = true;
      const seen = new Set();
      for (const srv of Array.isArray(msg.servers) ? msg.servers : []) {
        if (!srv || !srv.server_id) continue;
        seen.add(srv.server_id);
        ensureServer(srv.server_id, { ...srv, local: srv.server_id === store.localId });
      }
      for (const id of [...store.servers.keys()]) {
        if (!seen.has(id) && id !== store.localId) store.servers.delete(id);
      }
      emit("servers");
      return true;
    }
    case "server_state_change": {
      const srv = msg.server;
      if (srv && srv.server_id) {
        ensureServer(srv.server_id, { ...srv, local: srv.server_id === store.localId });
        emit("servers", srv.server_id);
      }
      return true;
    }
    case "initial_state": {
      const id = sid(msg);
      if (msg.server_id) store.features.subscribe_containers = true;
      const m = new Map();
      for (const c of Array.isArray(msg.containers) ? msg.containers : []) if (c && c.id) m.set(c.id, c);
      store.containers.set(id, m);
      emit("containers", id);
      return true;
    }
    case "container_state_change": {
      const id = sid(msg);
      const c = msg.container;
      if (!c || !c.id) return true;
      const m = containersOf(id);
      if (c.state === "removed") m.delete(c.id);
      else m.set(c.id, { ...(m.get(c.id) || {}), ...c });
      emit("containers", id);
      return true;
    }
    case "container_stats": {
      const id = sid(msg);
      const m = new Map();
      for (const st of Array.isArray(msg.stats) ? msg.stats : []) if (st && st.id) m.set(st.id, st);
      store.stats.set(id, m);
      emit("containers", id);
      return true;
    }
    case "metrics": {
      const id = sid(msg);
      if (!msg.data) return true;
      const s = ensureServer(id, {});
      s.metrics = msg.data;
      s.metricsAt = Date.now();
      if (!s.local || !store.features.list_servers) s.last_seen = msg.data.timestamp || new Date().toISOString();
      addSample(id, msg.data);
      emit("metrics", id);
      emit("servers", id);
      return true;
    }
    case "alerts": {
      store.firing.clear();
      for (const a of Array.isArray(msg.firing) ? msg.firing : []) {
        const data = a.data || a;
        const serverId = a.server_id || data.server_id || store.localId;
        store.firing.set(alertKey(serverId, data), { server_id: serverId, data });
      }
      emit("alerts");
      emit("servers");
      return true;
    }
    case "alert": {
      const data = msg.data || {};
      const serverId = sid(msg);
      const key = alertKey(serverId, data);
      if (data.state === "resolved") store.firing.delete(key);
      else store.firing.set(key, { server_id: serverId, data });
      addRecent({ server_id: serverId, ...data });
      emit("alerts");
      emit("servers");
      return true;
    }
    default:
      return false;
  }
}

/** Firing alerts of one server. */
export function firingOf(serverId) {
  return [...store.firing.values()].filter((a) => a.server_id === serverId);
}

// ---- commands (docker_command, command) ------------------------------------

/** Records a command sent with `request_id`. */
export function commandSent(request_id, entry) {
  store.commands.set(request_id, { ...entry, request_id, state: "sent", sentAt: Date.now(), output: "" });
  store.commandOrder.unshift(request_id);
  if (store.commandOrder.length > 200) store.commands.delete(store.commandOrder.pop());
  emit("commands", request_id);
}

/** The pending command a reply is for: by request_id, else the oldest of its kind and server. */
function pendingFor(msg, kind) {
  if (msg.request_id && store.commands.has(msg.request_id)) return store.commands.get(msg.request_id);
  if (msg.command_id) {
    for (const c of store.commands.values()) if (c.command_id === msg.command_id) return c;
  }
  const serverId = sid(msg);
  let best = null;
  for (const c of store.commands.values()) {
    if (c.kind !== kind || (c.state !== "sent" && c.state !== "accepted")) continue;
    if (msg.server_id && c.server_id !== serverId) continue;
    if (!best || c.sentAt < best.sentAt) best = c;
  }
  return best;
}

/** Applies a command reply; true when it answered one of ours. */
export function applyCommandReply(msg) {
  let c = null;
  if (msg.type === "command_accepted") {
    c = msg.request_id && store.commands.get(msg.request_id);
    if (c) {
      c.state = "accepted";
      c.command_id = msg.command_id;
    }
  } else if (msg.type === "docker_response") {
    c = pendingFor(msg, "docker");
    if (c) {
      c.state = msg.success ? "ok" : "failed";
      c.output = msg.message || "";
    }
  } else if (msg.type === "command_response") {
    c = pendingFor(msg, "command");
    if (c) {
      c.state = msg.exit_code === 0 ? "ok" : "failed";
      c.output = msg.output ?? "";
      c.exit_code = msg.exit_code;
      c.duration_ms = msg.duration_ms;
    }
  } else if (msg.type === "error") {
    c = msg.request_id && store.commands.get(msg.request_id);
    // Daemons that do not echo request_id yet: a command error names the
    // situation; give it to the oldest command still waiting (sent < 60 s ago).
    if (!c && /not allowed|no such container|unknown action|offline|docker engine|ambiguous|timed out|command .* failed|refused|shell commands/i.test(msg.message || "")) {
      for (const p of store.commands.values()) {
        if ((p.state === "sent" || p.state === "accepted") && Date.now() - p.sentAt < 60000 && (!c || p.sentAt < c.sentAt)) c = p;
      }
    }
    if (c) {
      c.state = "failed";
      c.output = msg.message || "error";
    }
  }
  if (c) emit("commands", c.request_id);
  return Boolean(c);
}
