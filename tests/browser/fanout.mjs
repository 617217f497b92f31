#!/usr/bin/env node
// Daemon cost of N dashboards open on one busy container's logs (never
// asserts; scripts/bench-dashboard-fanout.sh runs it, docs/performance.md
// keeps the numbers).
//
// 1. Starts the daemon (auth off, loopback) and one container printing about
//    RATE lines a second (100 lines of ~80 bytes every 100 ms).
// 2. Opens the real dashboard once in headless Chromium at
//    #/logs?c=<local>:<container> and records, through CDP, every frame the
//    page sends on its socket (Network.webSocketFrameSent) in its first
//    seconds. Then closes the browser.
// 3. The clients (FANOUT_MODE):
//    - "ws" (default): N WebSocket clients on /api/v1/ws (same Origin as the
//      page) that, after connection_established, send exactly those frames
//      (each client its own request ids) and read everything, counting log
//      lines. They keep up whatever the machine's load, so the daemon
//      serves N readers that are never slow.
//    - "chromium": N tabs of the real dashboard in one headless Chromium,
//      each at #/logs?c=<local>:<container> (opened one after the other,
//      each waiting for its first lines; at most FANOUT_OPEN_S seconds for
//      all; a tab that does not open ends the opening, and the run measures
//      with those open). By default tabs of one window: all hidden but the
//      front one, they take in every line (socket, JSON, the log ring) but
//      draw no frames. FANOUT_WINDOWS=1 puts each in its own window, visible
//      and drawing (about 0.3-0.4 core per page at 1,000 lines/s, so two
//      cores hold about ten). When the browser cannot keep up, Chromium
//      stops reading a tab's socket and the daemon sees a slow reader (it
//      drops lines for it: `log_dropped`, counted below). The browser's own
//      CPU (its whole process tree) is reported next to the daemon's.
// 4. After a warm-up, reads the daemon's utime+stime (/proc/PID/stat) over
//    SECONDS and its RSS (VmRSS, VmHWM), before and with the clients; also
//    with no client (the container still printing) as the baseline; and the
//    daemon's /metrics counters over the window (bytes and messages sent,
//    log lines dropped for slow readers, slow consumers closed).
//
// Env: DOCKWIRE_BIN, DOCKER_HOST, DOCKWIRE_TEST_IMAGE, CHROMIUM,
// FANOUT_MODE (ws | chromium), FANOUT_CLIENTS (100), FANOUT_SECONDS (30),
// FANOUT_WARMUP_S (5), FANOUT_OPEN_S (240, chromium), FANOUT_WINDOWS (0,
// chromium). Prints one JSON object.

import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir, loadavg } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";
import WebSocket from "ws";

const BIN = process.env.DOCKWIRE_BIN;
const IMAGE = process.env.DOCKWIRE_TEST_IMAGE;
const CLIENTS = Number(process.env.FANOUT_CLIENTS || 100);
const SECONDS = Number(process.env.FANOUT_SECONDS || 30);
const WARMUP_S = Number(process.env.FANOUT_WARMUP_S || 5);
const MODE = process.env.FANOUT_MODE || "ws";
const OPEN_S = Number(process.env.FANOUT_OPEN_S || 240);
const WINDOWS = process.env.FANOUT_WINDOWS === "1";
if (MODE !== "ws" && MODE !== "chromium") throw new Error(`FANOUT_MODE ${MODE}: ws or chromium`);
const LABEL = "dockwire.test=bench-fanout";
const TMP = mkdtempSync(join(tmpdir(), "dockwire-fanout-"));
const TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const err = (m) => console.error(`[fanout] ${m}`);

function docker(args) {
  return execFileSync("docker", args, { encoding: "utf8", timeout: 30000, stdio: ["ignore", "pipe", "pipe"] }).trim();
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
    s.on("error", reject);
  });
}

/** utime+stime in seconds, and VmRSS / VmHWM in KiB, of `pid`. */
function usage(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const user = Number(f[11]) / TCK; // fields 14 (utime) and 15 (stime)
  const sys = Number(f[12]) / TCK;
  const cpu = user + sys;
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(status) || [])[1] || 0);
  return { cpu, user, sys, rss_kib: kb("VmRSS"), hwm_kib: kb("VmHWM") };
}

/** The daemon's CPU over `seconds`: cores used, and RSS at the end. */
async function window_(pid, seconds) {
  const a = usage(pid);
  const t0 = process.hrtime.bigint();
  let maxRss = a.rss_kib;
  for (let i = 0; i < seconds; i++) {
    await sleep(1000);
    maxRss = Math.max(maxRss, usage(pid).rss_kib);
  }
  const b = usage(pid);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  return {
    wall_s: Number(wall.toFixed(2)),
    cpu_s: Number((b.cpu - a.cpu).toFixed(2)),
    cores: Number(((b.cpu - a.cpu) / wall).toFixed(3)),
    user_s: Number((b.user - a.user).toFixed(2)),
    sys_s: Number((b.sys - a.sys).toFixed(2)),
    rss_mib_end: Number((b.rss_kib / 1024).toFixed(1)),
    rss_mib_max: Number((maxRss / 1024).toFixed(1)),
    load_avg_1m: Number(loadavg()[0].toFixed(2)),
  };
}

/** utime+stime (s) of `root` and every process below it. */
function treeCpu(root) {
  const kids = new Map();
  const cpu = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ppid = Number(f[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
      cpu.set(Number(d), (Number(f[11]) + Number(f[12])) / TCK);
    } catch {
      // gone
    }
  }
  let sum = 0;
  let n = 0;
  const todo = [root];
  while (todo.length) {
    const p = todo.pop();
    sum += cpu.get(p) || 0;
    n++;
    todo.push(...(kids.get(p) || []));
  }
  return { cpu: sum, processes: n };
}

/** The daemon's /metrics counters this benchmark reports (sums over labels). */
async function counters(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = {};
  for (const k of ["dockwire_bytes_sent_total", "dockwire_messages_sent_total", "dockwire_log_lines_dropped_total", "dockwire_frames_dropped_total", "dockwire_slow_consumers_closed_total"]) {
    out[k] = 0;
    for (const m of text.matchAll(new RegExp(`^${k}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, "gm"))) out[k] += Number(m[1]);
  }
  return out;
}

function delta(a, b, wall) {
  const d = {};
  for (const k of Object.keys(a)) d[k.replace(/^dockwire_/, "").replace(/_total$/, "_per_s")] = Number(((b[k] - a[k]) / wall).toFixed(1));
  return d;
}

let daemon = null;
let cid = null;
let browser = null;
const out = { mode: MODE, clients: CLIENTS, seconds: SECONDS, ...(MODE === "chromium" ? { windows: WINDOWS } : {}) };
// The wrapper's time limit (timeout sends SIGTERM): stop what we started.
process.on("SIGTERM", () => {
  err("SIGTERM: stopping the daemon and the browser");
  daemon?.kill("SIGTERM");
  browser?.process()?.kill("SIGKILL");
  process.exit(143);
});
try {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const cfg = join(TMP, "dockwire.toml");
  writeFileSync(cfg, `listen = "127.0.0.1:${port}"\n\n[docker]\nhost = "${process.env.DOCKER_HOST}"\n`);
  daemon = spawn(BIN, ["serve", "--config", cfg], { stdio: "ignore" });
  const name = `dw-fanout-${randomBytes(3).toString("hex")}`;
  // ~1,000 lines/s: 100 lines of 80 bytes, then 0.1 s of sleep.
  const script =
    'trap "exit 0" TERM; n=0; while true; do i=0; while [ $i -lt 100 ]; do n=$((n+1)); i=$((i+1)); echo "line $n of the busy container, padded to about eighty bytes ........................"; done; sleep 0.1; done';
  cid = docker(["run", "-d", "--network", "none", "--label", LABEL, "--name", name, IMAGE, "sh", "-c", script]);
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok && (await r.json()).docker === "up") break;
    } catch {
      // not yet
    }
    await sleep(100);
  }
  const localId = (await (await fetch(`${url}/healthz`)).json()).server_id || null;

  // ---- what the page sends ----------------------------------------------------
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
  const page = await browser.newPage();
  const cdp = await page.createCDPSession();
  await cdp.send("Network.enable");
  const sent = [];
  cdp.on("Network.webSocketFrameSent", ({ response }) => sent.push(response.payloadData));
  // The extension the page's socket agreed (Chromium offers permessage-deflate).
  cdp.on("Network.webSocketHandshakeResponseReceived", ({ response }) => {
    const hdr = Object.entries(response.headers || {}).find(([k]) => k.toLowerCase() === "sec-websocket-extensions");
    out.page_ws_extensions = hdr ? hdr[1] : "";
  });
  await page.goto(`${url}/#/containers`);
  await page.waitForFunction(() => window.__dockwire?.store.localId, { timeout: 15000 });
  const lid = localId || (await page.evaluate(() => window.__dockwire.store.localId));
  await page.goto(`${url}/#/logs?c=${encodeURIComponent(`${lid}:${name}`)}`);
  await page.waitForFunction(() => window.__dockwire.logs.total > 100, { timeout: 15000 });
  await sleep(2000);
  await browser.close();
  browser = null;
  out.page_sends = sent.map((s) => JSON.parse(s));
  err(`the page sent: ${sent.join(" ")}`);

  // ---- baseline: the container printing, nobody watching -------------------
  await sleep(2000);
  out.no_client = await window_(daemon.pid, SECONDS);
  err(`no client: ${JSON.stringify(out.no_client)}`);

  if (MODE === "chromium") {
    await tabs(url, lid, name);
  } else {
    await wsClients(url, port);
  }
  out.daemon_hwm_mib = Number((usage(daemon.pid).hwm_kib / 1024).toFixed(1));
  console.log(JSON.stringify(out, null, 2));
} finally {
  if (browser) await browser.close().catch(() => {});
  if (daemon) daemon.kill("SIGTERM");
  if (cid) {
    try {
      docker(["rm", "-f", cid]);
    } catch {
      // the wrapper removes by label
    }
  }
  rmSync(TMP, { recursive: true, force: true });
}

/** N tabs of the real dashboard, each following the container's logs. */
async function tabs(url, lid, name) {
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    protocolTimeout: 120000,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
    defaultViewport: { width: 1400, height: 860 },
  });
  const bpid = browser.process().pid;
  const pages = [];
  const errors = [];
  const t0 = Date.now();
  const logsUrl = `${url}/#/logs?c=${encodeURIComponent(`${lid}:${name}`)}`;
  for (let i = 0; i < CLIENTS && Date.now() - t0 < OPEN_S * 1000; i++) {
    // FANOUT_WINDOWS=1: each in its own window, visible (tabs of one window
    // are hidden but the front one, and draw no frames).
    const page = WINDOWS ? await browser.newPage({ type: "window" }) : await browser.newPage();
    page.on("pageerror", (e) => errors.push(`tab ${i}: ${e.message}`));
    try {
      await page.goto(logsUrl, { waitUntil: "domcontentloaded", timeout: 60000 });
      await page.waitForFunction(() => window.__dockwire?.logs.total > 0, { timeout: 60000, polling: 200 });
    } catch (e) {
      // The machine is saturated: measure with the tabs that opened.
      out.open_error = `tab ${i}: ${e.message}`;
      err(out.open_error);
      await page.close().catch(() => {});
      break;
    }
    pages.push(page);
    if ((i + 1) % 10 === 0) err(`${i + 1} tabs open after ${Math.round((Date.now() - t0) / 1000)} s`);
  }
  out.tabs_open = pages.length;
  out.open_s = Math.round((Date.now() - t0) / 1000);
  out.visibility = {};
  for (const v of await Promise.all(pages.map((p) => p.evaluate(() => document.visibilityState).catch(() => "?")))) out.visibility[v] = (out.visibility[v] || 0) + 1;
  await sleep(WARMUP_S * 1000);
  const total = () => Promise.all(pages.map((p) => p.evaluate(() => window.__dockwire.logs.total).catch(() => null)));
  const before = await total();
  const c0 = await counters(url);
  const b0 = treeCpu(bpid);
  out.with_clients = await window_(daemon.pid, SECONDS);
  const b1 = treeCpu(bpid);
  const c1 = await counters(url);
  const after = await total();
  out.daemon_counters = delta(c0, c1, out.with_clients.wall_s);
  out.browser = { processes: b1.processes, cores: Number(((b1.cpu - b0.cpu) / out.with_clients.wall_s).toFixed(2)) };
  const got = pages.map((_, i) => (after[i] === null || before[i] === null ? 0 : (after[i] - before[i]) / out.with_clients.wall_s)).sort((a, b) => a - b);
  out.lines_per_s_per_tab = { min: Math.round(got[0]), median: Math.round(got[got.length >> 1]), max: Math.round(got[got.length - 1]) };
  out.lines_per_s_total = Math.round(got.reduce((a, b) => a + b, 0));
  out.page_errors = errors.slice(0, 5);
}

/** N WebSocket clients sending what the page sent. */
async function wsClients(url, port) {
  const stats = [];
  const sockets = [];
  for (let i = 0; i < CLIENTS; i++) {
    const st = { lines: 0, bytes: 0, frames: 0, dropped: 0, open: false };
    stats.push(st);
    // Compressed like the page's socket when the page's was (the daemon then
    // compresses each frame once for all its subscribers).
    const ws = new WebSocket(`ws://127.0.0.1:${port}/api/v1/ws`, { origin: url, perMessageDeflate: Boolean(out.page_ws_extensions) });
    sockets.push(ws);
    ws.on("message", (data) => {
      const s = data.toString();
      st.frames++;
      st.bytes += s.length;
      if (s.startsWith('{"type":"connection_established"') || (!st.open && s.includes('"connection_established"'))) {
        st.open = true;
        for (const f of out.page_sends) {
          const m = JSON.parse(JSON.stringify(f));
          if (m.request_id) m.request_id = `${m.request_id}-${i}`;
          ws.send(JSON.stringify(m));
        }
        return;
      }
      if (s.includes('"log_update"')) st.lines += s.split("\\n").length - 1;
      else if (s.includes('"log_dropped"')) st.dropped += Number((/"lines":(\d+)/.exec(s) || [])[1] || 0);
    });
    ws.on("error", (e) => err(`client ${i}: ${e.message}`));
    if (i === 0) ws.on("upgrade", (res) => (out.client_ws_extensions = res.headers["sec-websocket-extensions"] || ""));
  }
  await sleep(WARMUP_S * 1000);
  out.clients_open = stats.filter((s) => s.open).length;
  const before = stats.map((s) => s.lines);
  const dropBefore = stats.reduce((n, s) => n + s.dropped, 0);
  const c0 = await counters(url);
  out.with_clients = await window_(daemon.pid, SECONDS);
  out.daemon_counters = delta(c0, await counters(url), out.with_clients.wall_s);
  const got = stats.map((s, i) => (s.lines - before[i]) / out.with_clients.wall_s);
  got.sort((a, b) => a - b);
  out.lines_per_s_per_client = { min: Math.round(got[0]), median: Math.round(got[got.length >> 1]), max: Math.round(got[got.length - 1]) };
  out.lines_per_s_total = Math.round(got.reduce((a, b) => a + b, 0));
  out.log_dropped_lines = stats.reduce((n, s) => n + s.dropped, 0) - dropBefore;
  out.mib_per_s_received_by_clients = Number((stats.reduce((n, s) => n + s.bytes, 0) / 1048576 / (WARMUP_S + out.with_clients.wall_s)).toFixed(2));
  for (const ws of sockets) ws.terminate();
}
