// Containers view (#/containers?server=<id>&q=<search>): every container of
// every server, live state, health, uptime, CPU and memory; search by name,
// image or label; admins get start/stop/restart (docker_command with a
// request_id, then command_accepted and docker_response shown in the row).

import { h, replace } from "../dom.js";
import { bytes, duration, pct, shortId } from "../format.js";
import { isAdmin, on, serverName, store } from "../store.js";

function matches(c, q) {
  if (!q) return true;
  const labels = c.labels && typeof c.labels === "object" ? Object.entries(c.labels) : [];
  const eq = q.indexOf("=");
  if (eq > 0) {
    const k = q.slice(0, eq).trim();
    const v = q.slice(eq + 1).trim();
    return labels.some(([lk, lv]) => lk === k && String(lv).toLowerCase().includes(v));
  }
  return (
    String(c.name || "").toLowerCase().includes(q) ||
    String(c.image || "").toLowerCase().includes(q) ||
    c.id.startsWith(q) ||
    labels.some(([k, v]) => k.toLowerCase().includes(q) || String(v).toLowerCase().includes(q))
  );
}

function uptime(c) {
  // Docker's status text ("Exited (0) 5 minutes ago") is as old as the
  // message that carried it, so a stopped container shows its exit code only.
  if (c.state === "exited" && Number.isInteger(c.exit_code)) return `Exited (${c.exit_code})`;
  if (c.state !== "running") return c.status || "—";
  const t = Date.parse(c.started_at);
  if (Number.isFinite(t)) return duration(Date.now() - t);
  return c.status || "—";
}

function lastCommand(serverId, id) {
  for (const rid of store.commandOrder) {
    const cmd = store.commands.get(rid);
    if (cmd && cmd.kind === "docker" && cmd.server_id === serverId && cmd.container_id === id) return cmd;
  }
  return null;
}

export function mount(root, params, ctx) {
  const serverFilter = params.get("server") || "";
  const search = h("input", {
    type: "search",
    id: "container-search",
    placeholder: "Search name, image, label (key=value)…",
    value: params.get("q") || "",
  });
  const selected = new Set();
  const body = h("tbody");
  const count = h("span", { class: "muted small" });
  const openLogs = h("button", { id: "open-selected-logs", disabled: true }, "Logs of selected");
  openLogs.addEventListener("click", () => {
    if (selected.size) location.hash = `#/logs?c=${[...selected].map(encodeURIComponent).join(",")}`;
  });
  const admin = isAdmin();
  const head = ["", "Server", "Name", "Image", "State", "Health", "Uptime", "CPU", "Memory", admin ? "Actions" : null, ""].filter(
    (x) => x !== null,
  );
  root.appendChild(
    h(
      "section",
      { class: "view", id: "view-containers" },
      h("h2", null, "Containers", serverFilter ? ` of ${serverName(serverFilter)}` : ""),
      h("div", { class: "toolbar" }, search, openLogs, count),
      h("table", { class: "grid", id: "containers-table" }, h("thead", null, h("tr", null, ...head.map((t) => h("th", null, t)))), body),
    ),
  );

  function actions(serverId, c) {
    const cmd = lastCommand(serverId, c.id);
    const busy = cmd && (cmd.state === "sent" || cmd.state === "accepted");
    const btn = (action, enabled) =>
      h(
        "button",
        {
          class: `small act-${action}`,
          disabled: busy || !enabled,
          onclick: (e) => {
            e.stopPropagation();
            ctx.dockerCommand(serverId, action, c);
          },
        },
        action,
      );
    const running = c.state === "running" || c.state === "restarting" || c.state === "paused";
    return h(
      "td",
      { class: "actions" },
      btn("start", !running),
      btn("stop", running),
      btn("restart", true),
      cmd ? h("div", { class: `cmd-state ${cmd.state}` }, `${cmd.action}: ${cmd.state}${cmd.output ? ` — ${cmd.output}` : ""}`) : null,
    );
  }

  function row(serverId, c) {
    const st = store.stats.get(serverId)?.get(c.id);
    const key = `${serverId}:${c.id}`;
    const box = h("input", {
      type: "checkbox",
      checked: selected.has(key),
      title: "select for the log view",
      onchange: (e) => {
        if (e.target.checked) selected.add(key);
        else selected.delete(key);
        openLogs.disabled = selected.size === 0;
      },
    });
    const mem = st ? `${bytes(st.memory_used)}${st.memory_limit ? ` / ${bytes(st.memory_limit)}` : ""}` : "—";
    const up = h("td", { class: "uptime", title: c.status || "" }, uptime(c));
    const cpu = h("td", { class: "cpu" }, st ? pct(st.cpu_percent) : "—");
    const memCell = h("td", { class: "mem" }, mem);
    const tr = h(
      "tr",
      { dataset: { server: serverId, id: c.id, name: c.name || "", state: c.state || "" } },
      h("td", null, box),
      h("td", null, serverName(serverId)),
      h("td", { title: c.id }, h("span", { class: "name" }, c.name || shortId(c.id)), h("div", { class: "sub mono" }, shortId(c.id))),
      h("td", { class: "mono" }, c.image || "—"),
      h("td", null, h("span", { class: `state ${c.state}` }, c.state || "?")),
      h("td", null, c.health ? h("span", { class: `health ${c.health}` }, c.health) : h("span", { class: "muted" }, "—")),
      up,
      cpu,
      memCell,
      admin ? actions(serverId, c) : null,
      h("td", null, h("a", { href: `#/logs?c=${encodeURIComponent(key)}`, class: "logs-link" }, "logs")),
    );
    return { tr, up, cpu, memCell, c };
  }

  // Rows are kept by key and rebuilt only when what they show changed, so a
  // button is not replaced under a pointer; the uptime ticks in place.
  const cache = new Map();
  function rowFor(serverId, c) {
    const key = `${serverId}:${c.id}`;
    const st = store.stats.get(serverId)?.get(c.id);
    const cmd = lastCommand(serverId, c.id);
    // Usage changes every interval: its cells are updated in place.
    const sig = JSON.stringify([c, cmd && [cmd.state, cmd.output], serverName(serverId)]);
    let r = cache.get(key);
    if (!r || r.sig !== sig) {
      r = { ...row(serverId, c), sig };
      cache.set(key, r);
    } else {
      r.cpu.textContent = st ? pct(st.cpu_percent) : "—";
      r.memCell.textContent = st ? `${bytes(st.memory_used)}${st.memory_limit ? ` / ${bytes(st.memory_limit)}` : ""}` : "—";
    }
    r.seen = true;
    return r;
  }

  let queued = false;
  const render = () => {
    queued = false;
    const q = search.value.trim().toLowerCase();
    const rows = [];
    let total = 0;
    for (const r of cache.values()) r.seen = false;
    const ids = [...store.containers.keys()].filter((id) => !serverFilter || id === serverFilter);
    for (const serverId of ids) {
      const list = [...store.containers.get(serverId).values()].sort((a, b) => String(a.name).localeCompare(String(b.name)));
      total += list.length;
      for (const c of list) if (matches(c, q)) rows.push(rowFor(serverId, c).tr);
    }
    for (const [k, r] of cache) if (!r.seen) cache.delete(k);
    const same = rows.length === body.children.length && rows.every((tr, i) => body.children[i] === tr);
    if (!same) {
      replace(body, rows.length ? rows : h("tr", null, h("td", { colspan: head.length, class: "muted" }, total ? "No container matches." : "No containers (yet).")));
    }
    count.textContent = `${rows.length} of ${total}`;
  };
  const later = () => {
    if (!queued) {
      queued = true;
      requestAnimationFrame(render);
    }
  };
  search.addEventListener("input", later);
  render();
  const offs = [on("containers", later), on("commands", later), on("servers", later)];
  const tick = setInterval(() => {
    for (const r of cache.values()) r.up.textContent = uptime(r.c);
  }, 1000);
  return () => {
    offs.forEach((f) => f());
    clearInterval(tick);
  };
}
