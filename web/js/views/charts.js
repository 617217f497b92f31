// Charts view (#/charts/<server>?range=1h|6h|24h): CPU, memory, network and
// disk of one server, from GET /api/v1/servers/{id}/metrics (SPEC section 7)
// and then live from `metrics` messages. Without the history endpoint (404)
// the charts draw the live samples this page has seen.

import { metricsHistory } from "../api.js";
import { Chart } from "../chart.js";
import { h, replace } from "../dom.js";
import { pct, rate } from "../format.js";
import { addSample, on, serverName, store } from "../store.js";

const RANGES = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3 };

export function mount(root, params, ctx, rest) {
  const serverId = decodeURIComponent(rest || "") || store.localId;
  const range = RANGES[params.get("range")] ? params.get("range") : "1h";
  const picker = h("select", { id: "chart-server" });
  const note = h("p", { class: "muted small", id: "chart-note" });
  const canvases = ["cpu", "mem", "net", "disk"].map((id) => h("canvas", { class: "chart", id: `chart-${id}` }));
  const charts = [
    new Chart(canvases[0], { title: "CPU", fmt: pct, max: 100, series: [{ name: "cpu %", color: "#4fc3f7" }] }),
    new Chart(canvases[1], { title: "Memory", fmt: pct, max: 100, series: [{ name: "used %", color: "#aed581" }] }),
    new Chart(canvases[2], {
      title: "Network",
      fmt: rate,
      series: [
        { name: "rx", color: "#ffb74d" },
        { name: "tx", color: "#ba68c8" },
      ],
    }),
    new Chart(canvases[3], { title: "Disk (fullest mount)", fmt: pct, max: 100, series: [{ name: "used %", color: "#e57373" }] }),
  ];
  root.appendChild(
    h(
      "section",
      { class: "view", id: "view-charts" },
      h(
        "div",
        { class: "toolbar" },
        h("h2", null, "Charts"),
        picker,
        ...Object.keys(RANGES).map((r) =>
          h("a", { class: `button${r === range ? " primary" : ""}`, href: `#/charts/${encodeURIComponent(serverId || "")}?range=${r}` }, r),
        ),
        note,
      ),
      h("div", { class: "charts" }, ...canvases),
    ),
  );
  picker.addEventListener("change", () => {
    location.hash = `#/charts/${encodeURIComponent(picker.value)}?range=${range}`;
  });

  let history = [];
  let queued = false;
  const draw = () => {
    queued = false;
    const now = Date.now();
    const live = store.samples.get(serverId) || [];
    let t0 = now - RANGES[range];
    // Live samples only: zoom to them (at least a minute), not a near-empty hour.
    if (!history.length && live.length) t0 = Math.max(t0, Math.min(live[0].t - 5000, now - 60e3));
    const lastHist = history.length ? history[history.length - 1].t : -Infinity;
    const all = history.concat(live.filter((s) => s.t > lastHist));
    const series = (f) => all.filter((s) => s.t >= t0).map((s) => [s.t, f(s)]);
    charts[0].set([series((s) => s.cpu)], [t0, now]);
    charts[1].set([series((s) => s.mem)], [t0, now]);
    charts[2].set([series((s) => s.rx), series((s) => s.tx)], [t0, now]);
    charts[3].set([series((s) => s.disk)], [t0, now]);
    root.dataset.points = String(charts[0].points());
  };
  const later = () => {
    if (!queued) {
      queued = true;
      requestAnimationFrame(draw);
    }
  };
  // Rebuilt only when the list changed (metrics come every second).
  let sig = "";
  const refreshPicker = () => {
    const list = [...store.servers.values()].map((s) => [s.server_id, s.name || s.server_id]);
    if (JSON.stringify(list) === sig) return;
    sig = JSON.stringify(list);
    replace(
      picker,
      list.map(([id, name]) => h("option", { value: id, selected: id === serverId }, name)),
    );
  };
  refreshPicker();

  let alive = true;
  (async () => {
    if (!serverId) return;
    const body = await metricsHistory(serverId, range);
    if (!alive) return;
    if (body) {
      const list = [];
      for (const m of body.samples) addSample(serverId, m, list);
      history = list;
      note.textContent = `${serverName(serverId)}: history every ${body.step_s ?? "?"} s, then live.`;
    } else {
      note.textContent = `${serverName(serverId)}: live samples only (this daemon keeps no metrics history yet).`;
    }
    later();
  })();

  const offs = [
    on("metrics", (id) => id === serverId && later()),
    on("servers", refreshPicker),
  ];
  const onResize = () => later();
  window.addEventListener("resize", onResize);
  const tick = setInterval(later, 10000);
  later();
  return () => {
    alive = false;
    offs.forEach((f) => f());
    window.removeEventListener("resize", onResize);
    clearInterval(tick);
  };
}
