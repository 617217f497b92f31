// Logs view (#/logs?c=<server>:<container>,...): several containers at once,
// merged in arrival order and coloured per container; live follow, pause and
// "jump to live"; text or regex filter (in the page, or on the server when
// "server-side" is ticked: start_log_stream's `filter`, SPEC 12, so lines the
// filter drops never reach the browser); stdout/stderr marks when the daemon
// says; timestamps; ANSI colours; JSON pretty-printed on demand; download.
//
// The lines live in one LogStore (a 100,000-line ring) that outlives the view,
// so streams keep filling it while another view is shown. The list is
// virtualised: fixed row height, only the rows on screen exist in the DOM,
// redrawn at most once per animation frame and only when something changed.

import { renderAnsi, stripAnsi } from "../ansi.js";
import { clear, h, replace } from "../dom.js";
import { clock, shortId } from "../format.js";
import { LogStore, STREAM_STDERR, STREAM_STDOUT, STREAM_SYSTEM, STREAM_UNKNOWN } from "../logstore.js";
import { findContainer, on, serverName, store } from "../store.js";

const ROW_H = 18;
const HISTORY_TAIL = 200;
/** Least time between two redraws caused by new lines (ms). */
const DATA_MS = 100;

export const logs = new LogStore(100000);
/** Wanted streams: key "server:fullId" -> {serverId, id, name, src, active, lastSeq} */
const streams = new Map();
/** Refs from the URL not resolved yet (the container table has not come). */
let pendingRefs = [];
let sock = null;
let view = null;
/** The filter sent with start_log_stream while "server-side" is ticked, or null. */
let serverFilter = null;

/** The page's filter as the daemon's (case-insensitive like the page's). */
function serverFilterOf({ text, regex, stream }) {
  const f = {};
  if (text) f.pattern = "(?i)" + (regex ? text : text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (stream === 1) f.stream = "stdout";
  if (stream === 2) f.stream = "stderr";
  return Object.keys(f).length ? f : null;
}

/** Starts every stream again with the current server-side filter. */
function restartStreams() {
  for (const s of streams.values()) {
    if (s.active) sock?.send({ type: "stop_log_stream", container_id: s.id, server_id: s.serverId });
    s.active = false;
    s.lastSeq = null;
    startStream(s);
  }
}

function keyOf(serverId, id) {
  return `${serverId}:${id}`;
}

function system(src, text) {
  logs.push(src, text, Date.now(), STREAM_SYSTEM);
  view?.dataChanged();
}

function startStream(s, { resume = false } = {}) {
  const msg = { type: "start_log_stream", container_id: s.id, server_id: s.serverId };
  if (resume && s.lastSeq !== null) msg.since_seq = s.lastSeq;
  else msg.tail = resume ? 0 : HISTORY_TAIL;
  if (serverFilter) msg.filter = serverFilter;
  if (sock?.send(msg)) s.active = true;
}

/** Follows `ref` ("server:container" or "container") if it resolves. */
function want(ref) {
  const cut = ref.indexOf(":");
  const serverId = cut > 0 ? ref.slice(0, cut) : store.localId;
  const cref = cut >= 0 ? ref.slice(cut + 1) : ref;
  const c = serverId && findContainer(serverId, cref);
  if (!c) return false;
  const key = keyOf(serverId, c.id);
  if (streams.has(key)) return true;
  const src = logs.source(key, { serverId, containerId: c.id, name: c.name || shortId(c.id) });
  logs.sources[src].visible = true;
  const s = { serverId, id: c.id, name: c.name, src, active: false, lastSeq: null };
  streams.set(key, s);
  logs.rebuild();
  startStream(s);
  return true;
}

function unwant(key) {
  const s = streams.get(key);
  if (!s) return;
  streams.delete(key);
  if (s.active) sock?.send({ type: "stop_log_stream", container_id: s.id, server_id: s.serverId });
  logs.setVisible(key, false);
}

function resolvePending() {
  if (!pendingRefs.length) return;
  const before = pendingRefs.length;
  pendingRefs = pendingRefs.filter((r) => !want(r));
  if (pendingRefs.length !== before) view?.refreshChips();
}

/** Wires the log streams to the socket (called once by main). */
export function init(socket) {
  sock = socket;
  on("containers", (serverId) => {
    resolvePending();
    // A followed container that came back (restart, start) is followed again.
    for (const s of streams.values()) {
      if (s.serverId !== serverId || s.active) continue;
      const c = store.containers.get(serverId)?.get(s.id);
      if (c && c.state === "running") startStream(s, { resume: true });
    }
  });
}

/** After every (re)connect: restart the streams, from their last seq when known. */
export function resync() {
  for (const s of streams.values()) {
    const had = s.active || s.lastSeq !== null;
    s.active = false;
    if (had) system(s.src, "— reconnected —");
    startStream(s, { resume: had });
  }
}

/** Log messages from the socket; true when handled. */
export function handle(msg) {
  const serverId = msg.server_id || store.localId;
  const s = msg.container_id ? streams.get(keyOf(serverId, msg.container_id)) : null;
  switch (msg.type) {
    case "log_update": {
      if (!s) return true;
      const now = Date.now();
      if (Array.isArray(msg.lines)) {
        for (const l of msg.lines) {
          const st = l.stream === "stderr" ? STREAM_STDERR : l.stream === "stdout" ? STREAM_STDOUT : STREAM_UNKNOWN;
          logs.push(s.src, String(l.line ?? ""), Date.parse(l.timestamp) || now, st);
        }
      } else if (typeof msg.log === "string") {
        const st = msg.stream === "stderr" ? STREAM_STDERR : msg.stream === "stdout" ? STREAM_STDOUT : STREAM_UNKNOWN;
        logs.pushText(s.src, msg.log, now, st);
      }
      if (typeof msg.seq === "number") s.lastSeq = msg.seq;
      view?.dataChanged();
      return true;
    }
    case "log_stream_stopped":
      if (s) {
        s.active = false;
        system(s.src, `— stream stopped: ${msg.message || "stopped"} —`);
      }
      return true;
    case "log_dropped":
      if (s) system(s.src, `— ${msg.lines} lines dropped: this page fell behind —`);
      return true;
    case "log_gap":
      if (s) system(s.src, `— ${msg.missed ?? "some"} lines missed while away —`);
      return true;
    default:
      return false;
  }
}

/** Test and benchmark hook: `n` synthetic lines for a named source. */
export function inject(name, n, text = (i) => `synthetic line ${i}`) {
  const src = logs.source(`inject:${name}`, { name, serverId: "inject", containerId: name });
  const t = Date.now();
  for (let i = 0; i < n; i++) logs.push(src, text(i), t, i % 5 === 0 ? STREAM_STDERR : STREAM_STDOUT);
  view?.dataChanged();
}

function download() {
  const out = [];
  for (const l of logs.viewLines()) {
    const st = l.stream === STREAM_STDERR ? "stderr" : l.stream === STREAM_STDOUT ? "stdout" : l.stream === STREAM_SYSTEM ? "page" : "-";
    out.push(`${new Date(l.time).toISOString()} ${l.src?.name ?? "?"} ${st} ${stripAnsi(l.text)}`);
  }
  const blob = new Blob([out.join("\n"), "\n"], { type: "text/plain" });
  const a = h("a", { href: URL.createObjectURL(blob), download: `dockwire-logs-${new Date().toISOString().replace(/[:.]/g, "-")}.txt` });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function pretty(text) {
  const t = stripAnsi(text).trim();
  const at = t.indexOf("{");
  if (at >= 0) {
    try {
      return JSON.stringify(JSON.parse(t.slice(at)), null, 2);
    } catch {
      // not JSON: shown as it is
    }
  }
  return t;
}

export function mount(root, params) {
  const fromUrl = (params.get("c") || "").split(",").map((x) => x.trim()).filter(Boolean);
  if (fromUrl.length) {
    const urlKeys = new Set();
    pendingRefs = [];
    for (const ref of fromUrl) {
      if (!want(ref)) pendingRefs.push(ref);
      else {
        const cut = ref.indexOf(":");
        const sid = cut > 0 ? ref.slice(0, cut) : store.localId;
        const c = findContainer(sid, cut >= 0 ? ref.slice(cut + 1) : ref);
        if (c) urlKeys.add(keyOf(sid, c.id));
      }
    }
    for (const key of [...streams.keys()]) if (!urlKeys.has(key)) unwant(key);
  }

  const picker = h("select", { id: "log-picker", title: "add a container" });
  const chips = h("div", { class: "chips", id: "log-chips" });
  const filter = h("input", { type: "search", id: "log-filter", placeholder: "Filter…", value: logs.filter.text || "" });
  const regex = h("input", { type: "checkbox", id: "log-regex", checked: logs.filter.regex });
  const serverSide = h("input", { type: "checkbox", id: "log-server-side", checked: serverFilter !== null });
  const streamSel = h("select", { id: "log-stream" }, h("option", { value: "0" }, "all streams"), h("option", { value: "1" }, "stdout"), h("option", { value: "2" }, "stderr"));
  streamSel.value = String(logs.filter.stream || 0);
  const stamps = h("input", { type: "checkbox", id: "log-ts", checked: true });
  const pause = h("button", { id: "log-pause" }, "Pause");
  const live = h("button", { id: "log-live", class: "primary", hidden: true }, "Jump to live");
  const status = h("span", { class: "muted small", id: "log-status" });
  const ferr = h("span", { class: "error small", id: "log-filter-error" });
  const list = h("div", { class: "log-list", id: "log-list", tabindex: "0" });
  const spacer = h("div", { class: "log-spacer" });
  const rowsEl = h("div", { class: "log-rows" });
  list.append(spacer, rowsEl);
  const detail = h("pre", { class: "log-detail", id: "log-detail", hidden: true });
  const detailBox = h("div", { class: "log-detail-box" }, detail);

  root.appendChild(
    h(
      "section",
      { class: "view logs", id: "view-logs" },
      h("div", { class: "toolbar" }, picker, h("button", { id: "log-add", onclick: () => addPicked() }, "Add"), chips),
      h(
        "div",
        { class: "toolbar" },
        filter,
        h("label", { class: "check" }, regex, "regex"),
        h("label", { class: "check", title: "filter on the server: lines it drops never reach this page" }, serverSide, "server-side"),
        streamSel,
        h("label", { class: "check" }, stamps, "timestamps"),
        pause,
        live,
        h("button", { id: "log-download", onclick: download }, "Download"),
        h("button", { id: "log-clear", onclick: () => (logs.clear(), schedule()) }, "Clear"),
        ferr,
        status,
      ),
      list,
      detailBox,
    ),
  );

  function addPicked() {
    const key = picker.value;
    if (!key) return;
    if (want(key)) {
      refreshChips();
      writeHash();
    }
  }

  function writeHash() {
    const hash = `#/logs?c=${[...streams.keys(), ...pendingRefs].map(encodeURIComponent).join(",")}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  // Picker and chips are rebuilt only when what they list changed (metrics
  // arrive every second; a rebuilt <select> would lose the reader's choice).
  let pickerSig = "";
  let chipsSig = "";
  function refreshPicker() {
    const entries = [];
    for (const [serverId, m] of store.containers) {
      for (const c of [...m.values()].sort((a, b) => String(a.name).localeCompare(String(b.name)))) {
        const key = keyOf(serverId, c.id);
        if (!streams.has(key)) entries.push([key, `${serverName(serverId)} / ${c.name || shortId(c.id)} (${c.state})`]);
      }
    }
    const sig = JSON.stringify(entries);
    if (sig === pickerSig) return;
    pickerSig = sig;
    const was = picker.value;
    replace(picker, h("option", { value: "" }, "Add a container…"), entries.map(([value, label]) => h("option", { value }, label)));
    if (entries.some(([k]) => k === was)) picker.value = was;
  }

  function refreshChips() {
    refreshPicker();
    const sig = JSON.stringify([[...streams.entries()].map(([k, s]) => [k, serverName(s.serverId), s.name]), pendingRefs]);
    if (sig === chipsSig) return;
    chipsSig = sig;
    const items = [];
    for (const [key, s] of streams) {
      items.push(
        h(
          "span",
          { class: `chip c${logs.sources[s.src].color}`, dataset: { key } },
          `${serverName(s.serverId)} / ${s.name || shortId(s.id)}`,
          h(
            "button",
            {
              class: "chip-x",
              title: "stop following",
              onclick: () => {
                unwant(key);
                refreshChips();
                writeHash();
                schedule();
              },
            },
            "×",
          ),
        ),
      );
    }
    for (const r of pendingRefs) items.push(h("span", { class: "chip muted" }, `${r} (waiting)`));
    replace(chips, items.length ? items : h("span", { class: "muted small" }, "No container followed: pick one."));
  }

  // ---- the virtual list ------------------------------------------------------
  let following = true;
  let anchorAbs = 0;
  let anchorOff = 0;
  let expectTop = -1;
  let queued = false;
  let lastEpoch = -1;
  let lastTs = stamps.checked;
  const pool = [];

  function setFollowing(f) {
    following = f;
    pause.textContent = f ? "Pause" : "Resume";
    pause.setAttribute("aria-pressed", String(!f));
    if (f) logs.markSeen();
    schedule();
  }

  function schedule() {
    if (!queued) {
      queued = true;
      requestAnimationFrame(render);
    }
  }

  // New lines redraw at most every DATA_MS: at 1,000 lines/s a redraw per
  // frame repaints the whole list 60 times a second for no reader's benefit.
  // Scrolling, filtering and buttons still redraw on the next frame.
  let dataTimer = null;
  let lastRender = 0;
  function dataChanged() {
    if (dataTimer || queued) return;
    const wait = Math.max(0, DATA_MS - (performance.now() - lastRender));
    dataTimer = setTimeout(() => {
      dataTimer = null;
      schedule();
    }, wait);
  }

  function rowEl() {
    const el = h("div", { class: "log-row" });
    el.addEventListener("click", () => {
      const abs = Number(el.dataset.abs);
      if (!Number.isFinite(abs) || abs < logs.first()) return;
      detail.textContent = pretty(logs.line(abs).text);
      detail.hidden = false;
    });
    return el;
  }

  function fill(el, abs, showTs) {
    const l = logs.line(abs);
    el.dataset.abs = String(abs);
    el.className = `log-row${l.stream === STREAM_STDERR ? " err" : ""}${l.stream === STREAM_SYSTEM ? " sys" : ""}`;
    clear(el);
    if (showTs) el.appendChild(h("span", { class: "ts" }, clock(l.time)));
    el.appendChild(h("span", { class: `src c${l.src ? l.src.color : 0}` }, l.src ? l.src.name : "?"));
    el.appendChild(
      h("span", { class: "mark", title: l.stream === STREAM_STDERR ? "stderr" : l.stream === STREAM_STDOUT ? "stdout" : "" }, l.stream === STREAM_STDERR ? "E" : l.stream === STREAM_STDOUT ? "·" : " "),
    );
    const msg = h("span", { class: "msg" });
    renderAnsi(msg, l.text);
    el.appendChild(msg);
  }

  function render() {
    queued = false;
    lastRender = performance.now();
    if (!list.isConnected) return;
    const n = logs.viewLen;
    const total = n * ROW_H;
    spacer.style.height = `${total}px`;
    const height = list.clientHeight;
    if (following) {
      const top = Math.max(0, total - height);
      if (Math.abs(list.scrollTop - top) > 0.5) {
        expectTop = top;
        list.scrollTop = top;
      }
      logs.markSeen();
    } else {
      const want = logs.viewIndexOf(anchorAbs) * ROW_H + anchorOff;
      if (Math.abs(list.scrollTop - want) > 1) {
        expectTop = want;
        list.scrollTop = want;
      }
    }
    const top = list.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_H));
    const count = Math.min(n - first, Math.ceil(height / ROW_H) + 1);
    while (pool.length < count) pool.push(rowsEl.appendChild(rowEl()));
    const showTs = stamps.checked;
    const full = showTs !== lastTs || logs.epoch !== lastEpoch;
    for (let k = 0; k < pool.length; k++) {
      const el = pool[k];
      if (k >= count) {
        if (!el.hidden) el.hidden = true;
        continue;
      }
      el.hidden = false;
      const abs = logs.viewAt(first + k);
      if (full || el.dataset.abs !== String(abs)) fill(el, abs, showTs);
    }
    rowsEl.style.transform = `translateY(${first * ROW_H}px)`;
    lastTs = showTs;
    lastEpoch = logs.epoch;
    live.hidden = following;
    live.textContent = logs.unseen ? `Jump to live (${logs.unseen} new)` : "Jump to live";
    status.textContent = `${logs.held().toLocaleString()} held · ${n.toLocaleString()} shown`;
  }

  list.addEventListener("scroll", () => {
    const top = list.scrollTop;
    if (expectTop >= 0 && Math.abs(top - expectTop) <= 1) {
      expectTop = -1;
      schedule();
      return;
    }
    expectTop = -1;
    const atBottom = top + list.clientHeight >= list.scrollHeight - ROW_H;
    if (following && !atBottom) setFollowing(false);
    if (!following) {
      const i = Math.floor(top / ROW_H);
      anchorAbs = i < logs.viewLen ? logs.viewAt(i) : logs.total;
      anchorOff = top - i * ROW_H;
    }
    schedule();
  });

  const applyFilter = () => {
    logs.setFilter({ text: filter.value, regex: regex.checked, stream: Number(streamSel.value) });
    ferr.textContent = logs.filter.error ? `bad regex: ${logs.filter.error}` : "";
    schedule();
  };
  // Server-side: the streams restart with the filter once it is settled
  // (Enter or leaving the box, not every keystroke).
  const applyServerFilter = () => {
    const want = serverSide.checked ? serverFilterOf(logs.filter) : null;
    if (JSON.stringify(want) === JSON.stringify(serverFilter)) return;
    serverFilter = want;
    restartStreams();
  };
  filter.addEventListener("input", applyFilter);
  regex.addEventListener("change", applyFilter);
  streamSel.addEventListener("change", applyFilter);
  for (const el of [filter, regex, streamSel, serverSide]) el.addEventListener("change", applyServerFilter);
  stamps.addEventListener("change", schedule);
  pause.addEventListener("click", () => {
    if (following) {
      const i = Math.floor(list.scrollTop / ROW_H);
      anchorAbs = i < logs.viewLen ? logs.viewAt(i) : logs.total;
      anchorOff = list.scrollTop - i * ROW_H;
      setFollowing(false);
    } else setFollowing(true);
  });
  live.addEventListener("click", () => setFollowing(true));
  detail.addEventListener("click", () => (detail.hidden = true));
  const onResize = () => schedule();
  window.addEventListener("resize", onResize);

  view = { schedule, dataChanged, refreshChips, isFollowing: () => following, setFollowing };
  const offs = [on("containers", () => (refreshChips(), schedule())), on("servers", refreshChips)];
  refreshChips();
  writeHash();
  schedule();
  return () => {
    offs.forEach((f) => f());
    window.removeEventListener("resize", onResize);
    clearTimeout(dataTimer);
    view = null;
  };
}
