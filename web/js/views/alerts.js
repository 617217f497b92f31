// Alerts view (#/alerts): what is firing now (the `alerts` snapshot and each
// `alert` message) and the recent changes (GET /api/v1/alerts, SPEC section 9;
// without it, the changes this page has seen).

import { alertsHistory } from "../api.js";
import { h, replace } from "../dom.js";
import { ago } from "../format.js";
import { on, serverName, store } from "../store.js";

function cells(a) {
  const d = a.data || a;
  return [
    h("td", null, serverName(a.server_id || d.server_id)),
    h("td", { class: "mono" }, String(d.rule ?? d.name ?? "?")),
    h("td", null, d.container_name || d.container || d.container_id || "—"),
    h("td", null, d.message || ""),
    h("td", null, d.value === null || d.value === undefined ? "—" : String(typeof d.value === "number" ? d.value.toFixed(2) : d.value)),
    h("td", null, h("span", { class: `state ${d.state === "firing" ? "exited" : "running"}` }, d.state || "firing")),
    h("td", { title: d.timestamp || "" }, d.timestamp ? ago(d.timestamp) : "—"),
  ];
}

function rowData(a) {
  const d = a.data || a;
  return { server: a.server_id || d.server_id || "", rule: String(d.rule ?? d.name ?? ""), state: d.state || "firing" };
}

function table(id, list, empty) {
  return h(
    "table",
    { class: "grid", id },
    h("thead", null, h("tr", null, ...["Server", "Rule", "Container", "Message", "Value", "State", "When"].map((t) => h("th", null, t)))),
    h("tbody", null, list.length ? list.map((a) => h("tr", { dataset: rowData(a) }, ...cells(a))) : h("tr", null, h("td", { colspan: 7, class: "muted" }, empty))),
  );
}

/**
 * The endpoint's recent changes (as of the view's mount) and the `alert`
 * messages this page got (before and after it), newest first, each change
 * once.
 */
function merged(fetched, live) {
  if (!fetched) return live;
  const seen = new Set();
  const out = [];
  for (const a of [...live, ...fetched]) {
    const k = `${a.id ?? `${a.server_id}|${a.rule}|${a.container_id ?? ""}`}|${a.state}|${a.timestamp}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(a);
  }
  return out.sort((x, y) => String(y.timestamp ?? "").localeCompare(String(x.timestamp ?? "")));
}

export function mount(root) {
  const firingBox = h("div");
  const recentBox = h("div");
  const note = h("p", { class: "muted small" });
  root.appendChild(
    h("section", { class: "view", id: "view-alerts" }, h("h2", null, "Firing"), firingBox, h("h2", null, "Recent"), note, recentBox),
  );
  let recent = null;
  const render = () => {
    replace(firingBox, table("alerts-firing", [...store.firing.values()], "Nothing is firing."));
    replace(recentBox, table("alerts-recent", merged(recent, store.recent).slice(0, 200), "No alert changes."));
  };
  let alive = true;
  (async () => {
    const body = await alertsHistory();
    if (!alive) return;
    if (body) {
      recent = Array.isArray(body.recent) ? body.recent : [];
      if (Array.isArray(body.firing) && !store.firing.size) {
        for (const a of body.firing) {
          const d = a.data || a;
          store.firing.set(d.id ? String(d.id) : `${a.server_id}|${d.rule}|${d.container_id ?? ""}`, { server_id: a.server_id || d.server_id, data: d });
        }
      }
    } else {
      note.textContent = "This daemon keeps no alert history yet: these are the changes seen since the page loaded.";
    }
    render();
  })();
  render();
  const off = on("alerts", render);
  const tick = setInterval(render, 10000);
  return () => {
    alive = false;
    off();
    clearInterval(tick);
  };
}
