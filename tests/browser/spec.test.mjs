#!/usr/bin/env node
// The dashboard against SPEC part two as written (§6, §7, §9), before the
// daemon serves all of it: a scripted stand-in for the daemon (HTTP + the
// `ws` package) serves web/ from disk and answers with the messages the SPEC
// defines, and the real page runs in Debian's headless Chromium. This checks
// the page's side of what main, `logins` and `alerts` are adding:
//
// - list_servers -> servers: a remote server listed, online, with a firing
//   alert from the `alerts` snapshot;
// - subscribe_containers (the remote server's and the local one's) ->
//   initial_state with server_id, container_stats;
//   started_at, health;
// - docker_command with request_id -> command_accepted, docker_response
//   (echoing request_id) shown in the row;
// - command -> command_accepted, command_response output on #/commands;
// - log_update with seq, log_gap; after the daemon drops the socket the page
//   reconnects and resumes the stream with since_seq (no reload);
// - GET /api/v1/servers/{id}/metrics history drawn; GET /api/v1/alerts recent;
// - logins (SPEC §8, as the `logins` branch documents them): 401 -> the
//   form; a wrong password refused; a viewer sees no admin control; logout;
//   an admin sees them. The session is an HttpOnly cookie the page never reads.
// No console error is allowed, except the browser's own "401" lines for the
// requests that are refused on purpose in the login part.
//
// The real daemon is tested by dashboard.test.mjs; this file needs no Docker.
// Env: CHROMIUM, DOCKWIRE_ARTIFACTS. Prints "spec: N passed, N failed".

import { readFile } from "node:fs/promises";
import http from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";
import { WebSocketServer } from "ws";

const WEB = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "web");
const ART = process.env.DOCKWIRE_ARTIFACTS || "target/browser-artifacts";
const CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'";
const TYPES = { ".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8" };
const LOCAL = "7b0c2f4e-0000-4000-8000-000000000001";
const REMOTE = "a91e0000-0000-4000-8000-000000000002";
const R1 = "e".repeat(64);
const L1 = "d".repeat(64);

let passed = 0;
let failed = 0;
const log = (m) => console.log(`[spec.test] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function assert(c, m) {
  if (!c) throw new Error(m);
}
async function step(name, fn) {
  try {
    await fn();
    passed++;
    log(`PASS ${name}`);
  } catch (e) {
    failed++;
    log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function metrics(t, cpu) {
  return {
    cpu_percent: cpu,
    memory_percent: 40 + (cpu % 7),
    memory_used: 3.4e9,
    memory_total: 8.3e9,
    disk_usage: [{ mount: "/", used: 21e9, total: 64e9 }],
    network: [{ interface: "eth0", rx_bytes: 1e6 + t / 10, tx_bytes: 5e5 + t / 20 }],
    load_average: [0.4, 0.3, 0.2],
    timestamp: new Date(t).toISOString(),
  };
}
const alert = {
  id: "5d0e-alert",
  rule: "disk full",
  metric: "disk_percent",
  threshold: 90,
  value: 93.5,
  state: "firing",
  timestamp: new Date().toISOString(),
  server_id: REMOTE,
  message: "Disk / on web-1 is 93.5% full",
};
const container = (id, name, extra = {}) => ({
  id,
  name,
  image: "nginx:1.27",
  state: "running",
  status: "Up 3 minutes",
  created: "2025-01-04T09:12:44Z",
  labels: { app: name },
  started_at: new Date(Date.now() - 3 * 3600e3).toISOString(),
  exit_code: null,
  health: "healthy",
  ...extra,
});

// ---- the stand-in daemon --------------------------------------------------------
const seen = [];
let sockets = new Set();
// Logins: off for the first part, on for the last.
let authOn = false;
const USERS = { alice: ["wonderland", "admin"], victor: ["viewonly", "viewer"] };
const sessions = new Map();
function sessionOf(req) {
  const m = /(?:^|;\s*)dockwire_session=([^;]+)/.exec(req.headers.cookie || "");
  return m ? sessions.get(m[1]) || null : null;
}
function readBody(req) {
  return new Promise((resolve) => {
    let b = "";
    req.on("data", (c) => (b += c));
    req.on("end", () => resolve(b));
  });
}
let seq = 0;
const server = http.createServer(async (req, res) => {
  const [path, query = ""] = req.url.split("?");
  const json = (code, body) => {
    res.writeHead(code, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  };
  if (path === "/api/v1/login" && req.method === "POST") {
    let body = {};
    try {
      body = JSON.parse(await readBody(req));
    } catch {
      body = {};
    }
    seen.push({ type: "POST login", body });
    const u = USERS[body.username];
    if (!u || u[0] !== body.password) return json(401, { error: "invalid user name or password" });
    const token = `tok-${Math.random().toString(36).slice(2)}`;
    sessions.set(token, u[1]);
    res.setHeader("Set-Cookie", `dockwire_session=${token}; HttpOnly; SameSite=Strict; Path=/`);
    return json(200, { role: u[1], expires_at: new Date(Date.now() + 3600e3).toISOString() });
  }
  if (path === "/api/v1/logout" && req.method === "POST") {
    res.setHeader("Set-Cookie", "dockwire_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    return json(200, { status: "logged out" });
  }
  if (authOn && path.startsWith("/api/v1/") && !sessionOf(req)) return json(401, { error: "Authentication required" });
  if (path === "/api/v1/containers") return json(200, [container(L1, "db")]);
  if (path === `/api/v1/servers/${REMOTE}/metrics` || path === `/api/v1/servers/${LOCAL}/metrics`) {
    const now = Date.now();
    const samples = [];
    for (let i = 60; i > 0; i--) samples.push(metrics(now - i * 60e3, 20 + (i % 10)));
    seen.push({ type: "GET metrics", query });
    return json(200, { server_id: path.split("/")[4], step_s: 60, samples });
  }
  if (path === "/api/v1/alerts") return json(200, { firing: [alert], recent: [alert, { ...alert, id: "old", state: "resolved", rule: "cpu high" }] });
  let file = null;
  if (path === "/" || path === "/index.html") file = "index.html";
  else if (path.startsWith("/assets/")) file = normalize(path.slice(8).split("/").slice(1).join("/"));
  if (file && !file.startsWith("..")) {
    try {
      let body = await readFile(join(WEB, file));
      if (file === "index.html") body = Buffer.from(body.toString().replaceAll("@BUILD@", "spec"));
      res.writeHead(200, { "Content-Type": TYPES[extname(file)], "Content-Security-Policy": CSP });
      return res.end(body);
    } catch {
      // 404 below
    }
  }
  json(404, { error: "not found" });
});
const wss = new WebSocketServer({ noServer: true });
server.on("upgrade", (req, socket, head) => {
  if (req.url !== "/api/v1/ws") return socket.destroy();
  const role = authOn ? sessionOf(req) : "admin";
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, role));
});
wss.on("connection", (ws, role) => {
  sockets.add(ws);
  ws.on("close", () => sockets.delete(ws));
  const send = (m) => ws.send(JSON.stringify(m));
  if (!role) {
    // No session on the upgrade: the daemon waits for a first-message auth.
    const t = setTimeout(() => {
      send({ type: "error", message: "authentication timed out" });
      ws.close(1008, "authentication timed out");
    }, 1500);
    ws.on("close", () => clearTimeout(t));
    return;
  }
  send({ type: "connection_established", message: "Connected to dockwire", server_id: LOCAL });
  send({ type: "initial_state", containers: [container(L1, "db")] });
  send({ type: "alerts", firing: [alert] });
  send({ type: "metrics", server_id: LOCAL, data: metrics(Date.now(), 12) });
  ws.on("message", (raw) => {
    const m = JSON.parse(raw.toString());
    seen.push(m);
    const rid = m.request_id;
    switch (m.type) {
      case "list_servers":
        send({
          type: "servers",
          request_id: rid,
          servers: [
            { server_id: LOCAL, name: "hub-host", online: true, last_seen: new Date().toISOString(), capabilities: ["docker"], hub: "hub-1" },
            { server_id: REMOTE, name: "web-1", online: true, last_seen: new Date().toISOString(), capabilities: ["docker", "commands"], hub: "hub-1" },
          ],
        });
        break;
      case "subscribe_containers": {
        // The local server's table too (its container_stats go to subscribers only).
        const [id, name, cpu] = m.server_id === LOCAL ? [L1, "db", 2.5] : [R1, "web", 12.5];
        send({ type: "initial_state", server_id: m.server_id, request_id: rid, containers: [container(id, name)] });
        send({ type: "container_stats", server_id: m.server_id, stats: [{ id, cpu_percent: cpu, memory_used: 64 << 20, memory_limit: 512 << 20, net_rx_bytes: 1, net_tx_bytes: 2 }] });
        break;
      }
      case "subscribe_metrics":
        send({ type: "metrics", server_id: m.server_id, data: metrics(Date.now(), 55) });
        break;
      case "docker_command":
        if (role !== "admin") {
          send({ type: "error", request_id: rid, message: "Not allowed: commands need the admin role" });
          break;
        }
        send({ type: "command_accepted", request_id: rid, command_id: "cmd-1" });
        setTimeout(() => {
          send({ type: "docker_response", request_id: rid, command_id: "cmd-1", server_id: m.server_id, success: true, message: "Container restarted" });
        }, 400);
        break;
      case "command":
        send({ type: "command_accepted", request_id: rid, command_id: "cmd-2" });
        setTimeout(() => {
          send({ type: "command_response", request_id: rid, command_id: "cmd-2", server_id: m.server_id, output: " 10:00:00 up 3 days, load average: 0.1\n", exit_code: 0, duration_ms: 4 });
        }, 200);
        break;
      case "start_log_stream": {
        if (m.since_seq !== undefined) {
          send({ type: "log_gap", server_id: m.server_id, container_id: m.container_id, missed: 3 });
          seq += 3;
        }
        const lines = ["GET / 200", "\u001b[31mERROR\u001b[0m upstream timed out", '{"level":"warn","msg":"slow"}'];
        seq += lines.length;
        send({ type: "log_update", server_id: m.server_id, container_id: m.container_id, log: `${lines.join("\n")}\n`, seq });
        break;
      }
      default:
        break;
    }
  });
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const url = `http://127.0.0.1:${server.address().port}`;
log(`stand-in daemon on ${url}`);

// ---- the page ------------------------------------------------------------------
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  defaultViewport: { width: 1400, height: 860 },
});
const page = await browser.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
page.on("console", (m) => m.type() === "error" && errors.push(`console: ${m.text()} ${m.location()?.url || ""}`));
const text = (sel) => page.$eval(sel, (e) => e.textContent);

try {
  await step("servers: the remote server, online, its firing alert", async () => {
    await page.goto(`${url}/#/servers`);
    await page.waitForSelector(`tr[data-server="${REMOTE}"]`, { timeout: 10000 });
    const row = await text(`tr[data-server="${REMOTE}"]`);
    assert(row.includes("web-1") && row.includes("online") && row.includes("1 firing"), row);
    assert((await text(`tr[data-server="${LOCAL}"]`)).includes("hub-host"), "local name from the servers list");
    assert(seen.some((m) => m.type === "list_servers" && m.request_id), "list_servers without request_id");
    assert(seen.some((m) => m.type === "subscribe_containers" && m.server_id === REMOTE), "no subscribe_containers for the remote server");
    await page.screenshot({ path: join(ART, "spec-servers.png") });
  });

  await step("containers: remote table, stats, uptime, health", async () => {
    await page.goto(`${url}/#/containers`);
    await page.waitForSelector(`tr[data-id="${R1}"]`, { timeout: 5000 });
    const row = await text(`tr[data-id="${R1}"]`);
    assert(row.includes("web-1") && row.includes("healthy") && row.includes("13%") && row.includes("64.0 MiB / 512 MiB"), row);
    assert(/3h \d+m/.test(await text(`tr[data-id="${R1}"] td.uptime`)), "uptime from started_at");
    assert(await page.$(`tr[data-id="${L1}"]`), "the local container too");
    assert((await text(`tr[data-id="${L1}"] td.cpu`)) === "2.5%", "local usage from subscribe_containers of the local server");
  });

  await step("docker_command: accepted, then the docker_response", async () => {
    await page.click(`tr[data-id="${R1}"] button.act-restart`);
    await page.waitForFunction((id) => /accepted/.test(document.querySelector(`tr[data-id="${id}"] .cmd-state`)?.textContent || ""), { timeout: 3000 }, R1);
    await page.waitForFunction((id) => /ok — Container restarted/.test(document.querySelector(`tr[data-id="${id}"] .cmd-state`)?.textContent || ""), { timeout: 3000 }, R1);
    const sent = seen.find((m) => m.type === "docker_command");
    assert(sent && sent.server_id === REMOTE && sent.container_id === R1 && sent.action === "restart" && sent.request_id, JSON.stringify(sent));
    await page.screenshot({ path: join(ART, "spec-containers.png") });
  });

  await step("command: output of the command_response", async () => {
    await page.goto(`${url}/#/commands`);
    await page.waitForSelector(`#cmd-server option[value="${REMOTE}"]`, { timeout: 3000 });
    await page.select("#cmd-server", REMOTE);
    await page.type("#cmd-input", "uptime");
    await page.click("#cmd-run");
    await page.waitForFunction(() => /up 3 days/.test(document.querySelector("#cmd-results")?.textContent || ""), { timeout: 3000 });
    assert((await text("#cmd-results")).includes("exit 0"), "exit code");
    await page.screenshot({ path: join(ART, "spec-commands.png") });
  });

  await step("logs: seq, log_gap, resume with since_seq after a dropped socket", async () => {
    await page.goto(`${url}/#/logs?c=${encodeURIComponent(`${REMOTE}:web`)}`);
    await page.waitForFunction(() => /upstream timed out/.test(document.querySelector("#log-list")?.textContent || ""), { timeout: 5000 });
    const start = seen.find((m) => m.type === "start_log_stream");
    assert(start.server_id === REMOTE && start.container_id === R1 && start.tail === 200, JSON.stringify(start));
    await page.evaluate(() => {
      window.__stay = 1;
    });
    for (const ws of sockets) ws.terminate();
    await page.waitForFunction(() => /lines missed/.test(document.querySelector("#log-list")?.textContent || ""), { timeout: 15000 });
    const resumed = seen.filter((m) => m.type === "start_log_stream").pop();
    assert(resumed.since_seq === 3, `resumed with ${JSON.stringify(resumed)}`);
    assert(await page.evaluate(() => window.__stay === 1), "reloaded");
    await page.screenshot({ path: join(ART, "spec-logs.png") });
  });

  await step("charts: history from the metrics endpoint", async () => {
    await page.goto(`${url}/#/charts/${REMOTE}?range=6h`);
    await page.waitForFunction(() => Number(document.querySelector("#main").dataset.points || 0) >= 60, { timeout: 5000 });
    assert(seen.some((m) => m.type === "GET metrics" && m.query === "range=6h"), "range=6h not asked");
    assert(/history every 60 s/.test(await text("#chart-note")), await text("#chart-note"));
    await page.screenshot({ path: join(ART, "spec-charts.png") });
  });

  await step("alerts: firing and recent", async () => {
    await page.goto(`${url}/#/alerts`);
    await page.waitForFunction(() => /cpu high/.test(document.querySelector("#alerts-recent")?.textContent || ""), { timeout: 5000 });
    assert((await text("#alerts-firing")).includes("Disk / on web-1 is 93.5% full"), "firing alert message");
  });

  await step("no console errors", async () => {
    assert(errors.length === 0, `\n  ${errors.join("\n  ")}`);
  });

  // ---- logins -------------------------------------------------------------------
  authOn = true;
  for (const ws of sockets) ws.terminate();
  const ctx = await browser.createBrowserContext();
  const p2 = await ctx.newPage();
  const errors2 = [];
  p2.on("pageerror", (e) => errors2.push(`pageerror: ${e.message}`));
  p2.on("console", (m) => {
    if (m.type() !== "error") return;
    if (/status of 401/.test(m.text()) && /\/api\/v1\/(containers|login)$/.test(m.location()?.url || "")) return;
    errors2.push(`console: ${m.text()} ${m.location()?.url || ""}`);
  });
  const login = async (user, pass) => {
    await p2.waitForSelector("#login-form", { timeout: 5000 });
    await p2.$eval("#login-user", (e) => (e.value = ""));
    await p2.type("#login-user", user);
    await p2.type("#login-pass", pass);
    await p2.click("#login-submit");
  };

  await step("login: the form when a session is needed; a wrong password refused", async () => {
    await p2.goto(`${url}/#/containers`);
    await login("alice", "not-her-password");
    await p2.waitForFunction(() => /Wrong user name or password/.test(document.querySelector("#login-error")?.textContent || ""), { timeout: 5000 });
    assert(!(await p2.evaluate(() => sessionStorage.getItem("dockwire.role"))), "a role hint after a refused login");
    await p2.screenshot({ path: join(ART, "spec-login-refused.png") });
  });

  await step("login: a viewer sees no admin control", async () => {
    await login("victor", "viewonly");
    await p2.waitForSelector(`tr[data-id="${L1}"]`, { timeout: 5000 });
    assert((await p2.$$("button.act-stop, button.act-start, button.act-restart")).length === 0, "admin buttons for a viewer");
    assert(!(await p2.$("#nav-commands")), "Commands in the menu for a viewer");
    assert((await p2.$eval("#role", (e) => e.textContent)) === "viewer", "role badge");
    assert((await p2.evaluate(() => sessionStorage.getItem("dockwire.role"))) === "viewer", "role hint");
    assert(!(await p2.evaluate(() => document.cookie)).includes("dockwire_session"), "the session cookie is readable from the page");
    await p2.goto(`${url}/#/commands`);
    assert(!(await p2.$("#cmd-server")), "the commands form for a viewer");
  });

  await step("logout, then an admin sees the controls", async () => {
    await p2.click("#logout");
    await p2.waitForSelector("#login-form", { timeout: 5000 });
    assert(!(await p2.evaluate(() => sessionStorage.getItem("dockwire.role"))), "role hint kept after logout");
    await login("alice", "wonderland");
    // Back to the view shown before the logout, now with its form.
    await p2.waitForSelector("#cmd-server", { timeout: 5000 });
    assert(await p2.$("#nav-commands"), "no Commands for an admin");
    await p2.goto(`${url}/#/containers`);
    await p2.waitForSelector(`tr[data-id="${L1}"] button.act-stop`, { timeout: 5000 });
    const logins = seen.filter((m) => m.type === "POST login").map((m) => m.body.username);
    assert(logins.join(",") === "alice,victor,alice", logins.join(","));
    assert(errors2.length === 0, `\n  ${errors2.join("\n  ")}`);
  });
  await ctx.close();
} finally {
  await browser.close();
  server.close();
  for (const ws of sockets) ws.terminate();
}
console.log(`spec: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
