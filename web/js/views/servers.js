// Servers view (#/servers): every server (the daemon's own host and each
// agent's), online state, last seen, CPU, memory, disk, load, firing alerts.

import { h, replace } from "../dom.js";
import { ago, bytes, pct } from "../format.js";
import { diskPercent, firingOf, on, store } from "../store.js";

function meter(value) {
  const v = value === null || value === undefined ? 0 : Math.max(0, Math.min(100, value));
  const bar = h("span", { class: `bar${v > 90 ? " hot" : v > 70 ? " warm" : ""}` });
  bar.style.width = `${v}%`;
  return h("span", { class: "meter" }, h("span", { class: "track" }, bar), h("span", { class: "meter-label" }, pct(value)));
}

function row(s) {
  const m = s.metrics || {};
  const alerts = firingOf(s.server_id);
  const mem = m.memory_total ? `${bytes(m.memory_used)} / ${bytes(m.memory_total)}` : "";
  return h(
    "tr",
    { dataset: { server: s.server_id } },
    h(
      "td",
      null,
      h("span", { class: `dot ${s.online ? "on" : "off"}`, title: s.online ? "online" : "offline" }),
      h("a", { href: `#/charts/${encodeURIComponent(s.server_id)}`, class: "name" }, s.name || s.server_id),
      s.local ? h("span", { class: "tag" }, "local") : null,
      h("div", { class: "sub mono" }, s.server_id),
    ),
    h("td", null, s.online ? "online" : "offline"),
    h("td", null, s.local && s.online ? "now" : s.last_seen ? ago(s.last_seen) : "—"),
    h("td", null, meter(m.cpu_percent)),
    h("td", { title: mem }, meter(m.memory_percent)),
    h("td", null, meter(diskPercent(m))),
    h("td", { class: "mono" }, Array.isArray(m.load_average) ? m.load_average.map((x) => Number(x).toFixed(2)).join(" ") : "—"),
    h(
      "td",
      { class: "alerts" },
      alerts.length
        ? h("a", { href: "#/alerts", class: "badge hot" }, `${alerts.length} firing`)
        : h("span", { class: "muted" }, "none"),
    ),
    h(
      "td",
      null,
      h("a", { href: `#/containers?server=${encodeURIComponent(s.server_id)}` }, "containers"),
      " · ",
      h("a", { href: `#/charts/${encodeURIComponent(s.server_id)}` }, "charts"),
    ),
  );
}

export function mount(root) {
  const body = h("tbody");
  const note = h("p", { class: "muted small" });
  root.appendChild(
    h(
      "section",
      { class: "view", id: "view-servers" },
      h("h2", null, "Servers"),
      h(
        "table",
        { class: "grid" },
        h(
          "thead",
          null,
          h("tr", null, ...["Server", "State", "Last seen", "CPU", "Memory", "Disk", "Load", "Alerts", ""].map((t) => h("th", null, t))),
        ),
        body,
      ),
      note,
    ),
  );
  let queued = false;
  const render = () => {
    queued = false;
    const list = [...store.servers.values()].sort((a, b) => (b.local ? 1 : 0) - (a.local ? 1 : 0) || String(a.name).localeCompare(String(b.name)));
    replace(body, list.length ? list.map(row) : h("tr", null, h("td", { colspan: 9, class: "muted" }, "Waiting for the daemon…")));
    note.textContent =
      store.features.list_servers === false ? "This daemon does not list remote servers yet: only its own host is shown." : "";
  };
  const later = () => {
    if (!queued) {
      queued = true;
      requestAnimationFrame(render);
    }
  };
  render();
  const offs = [on("servers", later), on("alerts", later)];
  const tick = setInterval(later, 5000);
  return () => {
    offs.forEach((f) => f());
    clearInterval(tick);
  };
}
