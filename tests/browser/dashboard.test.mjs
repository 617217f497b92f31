#!/usr/bin/env node
// The dashboard as a person uses it, in Debian's headless Chromium driven by
// puppeteer-core, against the real daemon and Docker engine (SPEC §8).
//
// Steps: containers listed (and the time to the first list); logs of a
// container arrive live; text and regex filter; the same filter applied
// server-side (SPEC 12: only matching lines reach the page's socket); pause and resume ("jump to
// live"); a second container in the same view; stop a container from the
// page (auth off + loopback: every browser is an admin) and see its state
// change; charts get points from live metrics (metrics_interval 1s); the
// daemon is restarted and the page reconnects and shows live data again
// without a reload; no console errors. Screenshots of every view go to
// $DOCKWIRE_ARTIFACTS.
//
// Then logins and a remote server, against a second daemon with two
// [[users]] (hashes from `dockwire passwd`, password piped on stdin) and one
// [[agents]] key, and a real `dockwire agent` on the same engine
// (--docker-host, --allow-command): a wrong password refused with a message;
// a viewer sees no admin control (no start/stop/restart, no Commands) and a
// docker_command forced over the page's own socket is refused by the daemon;
// the agent is online in Servers and its containers are listed under it; an
// admin stops a container through the agent and sees its state change, runs
// an allowed command on the agent; logout returns to the login form.
// Alerts: the second daemon also has a key for a second agent, "edge-2",
// which is not running, and the rule `agent_offline for 0s`: the alert fires
// on the daemon's first tick (so deterministically, before the page opens).
// The admin's page shows it in Servers ("1 firing" on edge-2's row) and in
// Alerts; then a real `dockwire agent --no-docker` connects with that key,
// and the page shows the alert resolved (an `alert` message, live: no
// reload) and Servers says "none".

// Console errors that are the browser's own network messages are allowed
// only where the page cannot avoid them: while the daemon is down
// ("WebSocket connection ... failed", ERR_CONNECTION_REFUSED), and a 404 from
// an endpoint of SPEC part two this daemon may not have yet
// (/api/v1/servers/{id}/metrics, /api/v1/alerts): the page then degrades.
// Uncaught exceptions are never allowed.
//
// Env: DOCKWIRE_BIN, DOCKER_HOST, DOCKWIRE_TEST_IMAGE, CHROMIUM,
// DOCKWIRE_ARTIFACTS. Prints "browser: N passed, N failed".

import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";
import { startDevServer } from "./devserver.mjs";

const BIN = process.env.DOCKWIRE_BIN;
const IMAGE = process.env.DOCKWIRE_TEST_IMAGE;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ART = process.env.DOCKWIRE_ARTIFACTS || "target/browser-artifacts";
const LABEL = "dockwire.test=browser";
const TMP = mkdtempSync(join(tmpdir(), "dockwire-browser-"));

let passed = 0;
let failed = 0;
const problems = [];
let daemon = null;
let browser = null;
const containers = [];

function log(m) {
  console.log(`[dashboard.test] ${m}`);
}

async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
    passed++;
    log(`PASS ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    failed++;
    log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    problems.push(name);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function healthy(url, ms = 30000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok && (await r.json()).docker === "up") return;
    } catch {
      // not yet
    }
    await sleep(150);
  }
  throw new Error(`${url}/healthz did not report docker up within ${ms} ms`);
}

function startDaemon(cfg) {
  const out = openSync(join(ART, "daemon.log"), "a");
  daemon = spawn(BIN, ["serve", "--config", cfg], { stdio: ["ignore", out, out] });
  daemon.exited = new Promise((r) => daemon.on("exit", (code, sig) => r({ code, sig })));
}

async function stopDaemon() {
  if (!daemon) return;
  const d = daemon;
  daemon = null;
  d.kill("SIGTERM");
  const r = await Promise.race([d.exited, sleep(6000).then(() => null)]);
  if (!r) {
    d.kill("SIGKILL");
    await d.exited;
    throw new Error("the daemon did not exit within 6 s of SIGTERM");
  }
}

/** `[[users]]` lines from `dockwire passwd NAME --role ROLE`, the password piped on stdin. */
function passwd(name, role, password) {
  return execFileSync(BIN, ["passwd", name, "--role", role], { input: `${password}\n`, encoding: "utf8", timeout: 30000 });
}

/** A process of ours (the second daemon, the agent), stopped in `finally`. */
const others = [];
function spawnOther(name, args) {
  const out = openSync(join(ART, `${name}.log`), "a");
  const p = spawn(BIN, args, { stdio: ["ignore", out, out] });
  p.exited = new Promise((r) => p.on("exit", (code, sig) => r({ code, sig })));
  others.push(p);
  return p;
}

async function stopOthers() {
  for (const p of others.splice(0)) {
    p.kill("SIGTERM");
    if (!(await Promise.race([p.exited, sleep(6000).then(() => null)]))) {
      p.kill("SIGKILL");
      await p.exited;
    }
  }
}

async function shot(page, name) {
  await page.screenshot({ path: join(ART, `${name}.png`) });
}

async function main() {
  const port = await freePort();
  const daemonUrl = `http://127.0.0.1:${port}`;
  let url = daemonUrl;
  const cfg = join(TMP, "dockwire.toml");
  writeFileSync(
    cfg,
    `listen = "127.0.0.1:${port}"\nmetrics_interval = "1s"\n\n[docker]\nhost = "${process.env.DOCKER_HOST}"\n`,
  );
  startDaemon(cfg);
  // The second daemon: auth on (two users), one agent key; the agent serves
  // the same engine (so its containers are the test's ones too).
  const port2 = await freePort();
  let authUrl = `http://127.0.0.1:${port2}`;
  const agentKey = `dwk_browser_${randomBytes(16).toString("hex")}`;
  const agentId = "srv-browser-agent";
  // edge-2: configured, started only in the alerts step.
  const ghostKey = `dwk_browser_${randomBytes(16).toString("hex")}`;
  const ghostId = "srv-browser-edge2";
  const alertRule = "agent down";
  const cfg2 = join(TMP, "dockwire-auth.toml");
  writeFileSync(
    cfg2,
    `listen = "127.0.0.1:${port2}"\nmetrics_interval = "1s"\n\n[docker]\nhost = "${process.env.DOCKER_HOST}"\n\n` +
      passwd("alice", "admin", "alice-pw") +
      passwd("bob", "viewer", "bob-pw") +
      `\n[[agents]]\nname = "edge-1"\nkey_sha256 = "${createHash("sha256").update(agentKey).digest("hex")}"\nserver_id = "${agentId}"\n` +
      `\n[[agents]]\nname = "edge-2"\nkey_sha256 = "${createHash("sha256").update(ghostKey).digest("hex")}"\nserver_id = "${ghostId}"\n` +
      `\n[[alerts]]\nname = "${alertRule}"\nrule = "agent_offline for 0s"\n`,
  );
  spawnOther("daemon-auth", ["serve", "--config", cfg2]);
  const keyFile = join(TMP, "agent.key");
  writeFileSync(keyFile, `${agentKey}\n`);
  spawnOther("agent", [
    "agent", "--hub", `ws://127.0.0.1:${port2}/api/v1/agents/ws`, "--api-key-file", keyFile,
    "--docker-host", process.env.DOCKER_HOST, "--metrics-interval", "1s", "--allow-command", "echo dockwire-ok",
  ]);
  await healthy(daemonUrl);
  log(`dockwire on ${daemonUrl}, with logins and an agent on ${authUrl}`);
  if (process.env.DOCKWIRE_WEB_DEV === "1") {
    const dev = await startDevServer(port);
    url = `http://127.0.0.1:${dev.port}`;
    const dev2 = await startDevServer(port2);
    authUrl = `http://127.0.0.1:${dev2.port}`;
    log(`DOCKWIRE_WEB_DEV=1: the page comes from web/ through ${url} and ${authUrl}`);
  }

  const tag = randomBytes(3).toString("hex");
  const nameA = `dw-browser-a-${tag}`;
  const nameB = `dw-browser-b-${tag}`;
  // A: plain, ANSI-coloured and JSON lines, 5 a second; B: one a second, on
  // stderr. Both exit on SIGTERM (a shell as PID 1 ignores it otherwise).
  const scriptA =
    'trap "exit 0" TERM; i=0; while true; do i=$((i+1)); echo "tick $i"; printf "\\033[32mgreen %s\\033[0m\\n" $i; echo "{\\"level\\":\\"info\\",\\"n\\":$i}"; sleep 0.2; done';
  const scriptB = 'trap "exit 0" TERM; i=0; while true; do i=$((i+1)); echo "other $i" >&2; sleep 1; done';
  // C: quiet, for the second daemon's part (stopped by an admin through the agent).
  const nameC = `dw-browser-c-${tag}`;
  const scriptC = 'trap "exit 0" TERM; while true; do sleep 0.2; done';
  for (const [name, script] of [
    [nameA, scriptA],
    [nameB, scriptB],
    [nameC, scriptC],
  ]) {
    containers.push(docker(["run", "-d", "--network", "none", "--label", LABEL, "--name", name, IMAGE, "sh", "-c", script]));
  }

  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check"],
    defaultViewport: { width: 1400, height: 860 },
  });
  const page = await browser.newPage();
  const errors = [];
  let daemonDown = false;
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    const where = msg.location()?.url || "";
    const network = /^WebSocket connection to .* failed|ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE/.test(text);
    if (network && daemonDown) return;
    if (/status of 404/.test(text) && /\/api\/v1\/(servers\/[^/]+\/metrics|alerts)/.test(where)) return;
    errors.push(`console: ${text} ${where}`);
  });

  // ---- containers -------------------------------------------------------------
  let localId = null;
  await step("containers listed", async () => {
    const t0 = Date.now();
    await page.goto(`${url}/`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector(`tr[data-name="${nameA}"][data-state="running"]`, { timeout: 15000 });
    await page.waitForSelector(`tr[data-name="${nameB}"]`, { timeout: 5000 });
    log(`time to the first containers list: ${Date.now() - t0} ms (navigation included)`);
    localId = await page.evaluate(() => window.__dockwire.store.localId);
    assert(localId, "no local server id from connection_established");
    const conn = await page.$eval("#conn-state", (e) => e.dataset.state);
    assert(conn === "live", `connection state ${conn}`);
    // Admin controls are there: auth off on loopback means admin.
    assert(await page.$(`tr[data-name="${nameA}"] button.act-stop`), "no stop button for an admin");
    // Search by name narrows the table.
    await page.type("#container-search", nameB);
    await page.waitForFunction((a) => !document.querySelector(`tr[data-name="${a}"]`), { timeout: 3000 }, nameA);
    await page.$eval("#container-search", (e) => {
      e.value = "";
      e.dispatchEvent(new Event("input"));
    });
    await page.waitForSelector(`tr[data-name="${nameA}"]`, { timeout: 3000 });
    await shot(page, "containers");
  });

  // ---- logs ---------------------------------------------------------------------
  const rowsText = () => page.$$eval("#log-list .log-row:not([hidden]) .msg", (els) => els.map((e) => e.textContent));
  const maxTick = async () => {
    const t = await rowsText();
    return Math.max(0, ...t.map((s) => Number((/^tick (\d+)$/.exec(s) || [])[1] || 0)));
  };
  await step("logs arrive live", async () => {
    await page.goto(`${url}/#/logs?c=${encodeURIComponent(`${localId}:${nameA}`)}`);
    await page.waitForFunction(() => [...document.querySelectorAll("#log-list .msg")].some((e) => /^tick \d+$/.test(e.textContent)), {
      timeout: 10000,
    });
    const a = await maxTick();
    await sleep(1500);
    const b = await maxTick();
    assert(b > a, `no new lines in 1.5 s (last tick ${a} then ${b})`);
    // ANSI colour rendered as a span with a class, not escape codes.
    const green = await page.$$eval("#log-list .msg span.f2", (els) => els.map((e) => e.textContent));
    assert(green.some((t) => /^green \d+$/.test(t)), "no ANSI green span");
    const raw = await rowsText();
    assert(!raw.some((t) => t.includes("\x1b")), "escape codes shown");
  });

  await step("text and regex filter", async () => {
    await page.type("#log-filter", "green");
    await page.waitForFunction(() => {
      const m = [...document.querySelectorAll("#log-list .log-row:not([hidden]) .msg")];
      return m.length > 0 && m.every((e) => e.textContent.includes("green"));
    }, { timeout: 5000 });
    await page.$eval("#log-filter", (e) => {
      e.value = "";
    });
    await page.click("#log-regex");
    await page.type("#log-filter", '^\\{"level');
    await page.waitForFunction(() => {
      const m = [...document.querySelectorAll("#log-list .log-row:not([hidden]) .msg")];
      return m.length > 0 && m.every((e) => e.textContent.startsWith('{"level'));
    }, { timeout: 5000 });
    // JSON pretty-printed on demand: click a row. A DOM click on the last
    // row shown: puppeteer's page.click would first scroll a partly hidden
    // first row into view, and a scroll up pauses the view (as it should for
    // a person), which made the next steps flaky.
    await page.$$eval("#log-list .log-row:not([hidden])", (els) => els[els.length - 1].click());
    const detail = await page.$eval("#log-detail", (e) => (e.hidden ? "" : e.textContent));
    assert(detail.includes('\n  "level": "info"'), `no pretty JSON: ${JSON.stringify(detail)}`);
    await page.click("#log-detail");
    await page.click("#log-regex");
    await page.$eval("#log-filter", (e) => {
      e.value = "";
      e.dispatchEvent(new Event("input"));
    });
  });

  await step("server-side filter: only matching lines reach the page", async () => {
    // What the page's socket receives, from Chromium itself.
    const cdp = await page.target().createCDPSession();
    await cdp.send("Network.enable");
    const frames = [];
    cdp.on("Network.webSocketFrameReceived", (e) => frames.push(e.response.payloadData));
    // A socket opened after Network.enable: the page again, same URL.
    await page.reload();
    await page.waitForFunction(() => [...document.querySelectorAll("#log-list .msg")].some((e) => /^tick \d+$/.test(e.textContent)), {
      timeout: 10000,
    });
    // log_update frames after the stream restarted (its log_stream_stopped).
    const updatesAfterRestart = () => {
      const i = frames.findLastIndex((f) => f.includes('"log_stream_stopped"'));
      if (i < 0) return [];
      return frames
        .slice(i + 1)
        .map((f) => {
          try {
            return JSON.parse(f);
          } catch {
            return null;
          }
        })
        .filter((m) => m && m.type === "log_update");
    };
    const waitUpdates = async (n, what) => {
      for (let t = 0; t < 100 && updatesAfterRestart().length < n; t++) await sleep(100);
      assert(updatesAfterRestart().length >= n, `no ${what} log_update after the restart; types: ${JSON.stringify(frames.map((f) => (/"type":"(\w+)"/.exec(f) || [])[1] || f.slice(0, 60)))}; errors: ${JSON.stringify(frames.filter((f) => f.includes("error")))}`);
    };
    // Every fifth tick: history, then live lines (a tick every 0.2 s).
    await page.click("#log-regex");
    await page.type("#log-filter", "^tick \\d*[05]$");
    await page.click("#log-server-side");
    await waitUpdates(3, "filtered");
    const lines = updatesAfterRestart().flatMap((m) => m.log.split("\n").filter(Boolean));
    assert(lines.length > 2 && lines.every((l) => /^tick \d*[05]$/.test(l)), `lines the filter drops reached the page: ${JSON.stringify(lines.slice(0, 5))}`);
    // Off again: the whole stream comes back.
    frames.length = 0;
    await page.click("#log-server-side");
    await waitUpdates(1, "unfiltered");
    for (let t = 0; t < 50 && !updatesAfterRestart().some((m) => m.log.includes("green")); t++) await sleep(100);
    assert(updatesAfterRestart().some((m) => m.log.includes("green")), "the unfiltered stream did not come back");
    await page.click("#log-regex");
    await page.$eval("#log-filter", (e) => {
      e.value = "";
      e.dispatchEvent(new Event("input"));
    });
    await cdp.detach();
  });

  await step("pause and jump to live", async () => {
    const label = () => page.$eval("#log-pause", (e) => e.textContent);
    const before = await label();
    assert(before === "Pause", `the view was not following before the click (button says ${JSON.stringify(before)})`);
    await page.click("#log-pause");
    const after = await label();
    assert(after === "Resume", `the click did not pause (button says ${JSON.stringify(after)})`);
    await sleep(300);
    const frozen = await maxTick();
    await sleep(1500);
    const still = await maxTick();
    assert(still === frozen, `the paused view moved (${frozen} -> ${still}; button says ${JSON.stringify(await label())}, ${await page.$eval("#log-list", (e) => `scrollTop ${e.scrollTop}, height ${e.clientHeight}, scrollHeight ${e.scrollHeight}`)})`);
    const live = await page.$eval("#log-live", (e) => (e.hidden ? "" : e.textContent));
    assert(/new/.test(live), `no "jump to live (N new)" button: ${JSON.stringify(live)}`);
    await shot(page, "logs-paused");
    await page.click("#log-live");
    await page.waitForFunction((f) => {
      const m = [...document.querySelectorAll("#log-list .log-row:not([hidden]) .msg")].map((e) => Number((/^tick (\d+)$/.exec(e.textContent) || [])[1] || 0));
      return Math.max(0, ...m) > f;
    }, { timeout: 5000 }, frozen);
  });

  await step("two containers in one view", async () => {
    const key = `${localId}:${containers[1]}`;
    await page.select("#log-picker", key);
    await page.click("#log-add");
    await page.waitForFunction(() => [...document.querySelectorAll("#log-list .log-row.err .msg")].some((e) => /^other \d+$/.test(e.textContent)) ||
      [...document.querySelectorAll("#log-list .log-row .msg")].some((e) => /^other \d+$/.test(e.textContent)), { timeout: 10000 });
    const chips = await page.$$eval("#log-chips .chip", (els) => els.length);
    assert(chips === 2, `${chips} chips`);
    assert((await page.evaluate(() => location.hash)).includes(encodeURIComponent(`:${nameB}`)) ||
      (await page.evaluate(() => location.hash)).split(",").length === 2, "the URL does not list both containers");
    await shot(page, "logs");
  });

  await step("download what is held", async () => {
    const dir = join(TMP, "downloads");
    const cdp = await page.createCDPSession();
    await cdp.send("Browser.setDownloadBehavior", { behavior: "allow", downloadPath: dir });
    await page.click("#log-download");
    let file = null;
    for (let i = 0; i < 50 && !file; i++) {
      await sleep(100);
      try {
        file = readdirSync(dir).find((f) => /^dockwire-logs-.*\.txt$/.test(f)) || null;
      } catch {
        file = null;
      }
    }
    assert(file, "no dockwire-logs-*.txt downloaded");
    const text = readFileSync(join(dir, file), "utf8");
    assert(/ tick \d+\n/.test(text) && / other \d+\n/.test(text), "the download lacks lines of both containers");
    assert(!text.includes("\x1b"), "escape codes in the download");
  });

  await step("stop a container from the page", async () => {
    await page.goto(`${url}/#/containers`);
    await page.waitForSelector(`tr[data-name="${nameA}"] button.act-stop:not([disabled])`, { timeout: 5000 });
    await page.click(`tr[data-name="${nameA}"] button.act-stop`);
    await page.waitForSelector(`tr[data-name="${nameA}"] .cmd-state`, { timeout: 5000 });
    await page.waitForSelector(`tr[data-name="${nameA}"][data-state="exited"]`, { timeout: 20000 });
    await page.waitForFunction((a) => /ok|accepted/.test(document.querySelector(`tr[data-name="${a}"] .cmd-state`)?.textContent || ""), { timeout: 15000 }, nameA);
    // The exit code from the state change, not Docker's status text of that moment.
    await page.waitForFunction((a) => document.querySelector(`tr[data-name="${a}"] td.uptime`)?.textContent === "Exited (0)", { timeout: 5000 }, nameA);
    const inspect = docker(["inspect", "-f", "{{.State.Status}}", nameA]);
    assert(inspect === "exited", `docker says ${inspect}`);
    await shot(page, "containers-stopped");
  });

  await step("charts have points from live metrics", async () => {
    await page.goto(`${url}/#/charts/${encodeURIComponent(localId)}`);
    await page.waitForFunction(() => Number(document.querySelector("#main").dataset.points || 0) >= 3, { timeout: 15000 });
    await shot(page, "charts");
  });

  await step("servers, alerts, commands and login views", async () => {
    // (The screenshots of servers, commands and login come from the second
    // daemon below, which has an agent and logins.)
    await page.goto(`${url}/#/servers`);
    await page.waitForSelector(`tr[data-server="${localId}"]`, { timeout: 5000 });
    await page.goto(`${url}/#/alerts`);
    await page.waitForSelector("#alerts-firing", { timeout: 5000 });
    await shot(page, "alerts-none");
    // Admin only (auth off); no agent is connected here, so the form says so.
    await page.goto(`${url}/#/commands`);
    await page.waitForSelector("#cmd-server", { timeout: 5000 });
    // The form alone: auth is off here, so there is nothing to submit it to.
    await page.goto(`${url}/#/login`);
    await page.waitForSelector("#login-form", { timeout: 5000 });
  });

  await step("daemon restarted: the page reconnects without a reload", async () => {
    await page.goto(`${url}/#/logs?c=${encodeURIComponent(`${localId}:${nameB}`)}`);
    await page.waitForFunction(() => [...document.querySelectorAll("#log-list .msg")].some((e) => /^other \d+$/.test(e.textContent)), { timeout: 10000 });
    await page.evaluate(() => {
      window.__notReloaded = true;
    });
    daemonDown = true;
    await stopDaemon();
    await page.waitForFunction(() => document.querySelector("#conn-state")?.dataset.state !== "live", { timeout: 10000 });
    await shot(page, "disconnected");
    startDaemon(cfg);
    await healthy(daemonUrl);
    await page.waitForFunction(() => document.querySelector("#conn-state")?.dataset.state === "live", { timeout: 20000 });
    daemonDown = false;
    assert(await page.evaluate(() => window.__notReloaded === true), "the page was reloaded");
    const before = await page.evaluate(() => window.__dockwire.logs.total);
    await page.waitForFunction((b) => {
      const l = window.__dockwire.logs;
      for (let a = Math.max(b, l.first()); a < l.total; a++) if (/^other \d+$/.test(l.line(a).text)) return true;
      return false;
    }, { timeout: 10000 }, before);
    await page.goto(`${url}/#/containers`);
    await page.waitForSelector(`tr[data-name="${nameB}"][data-state="running"]`, { timeout: 5000 });
    await page.goto(`${url}/#/charts/${encodeURIComponent(localId)}`);
    const pts = await page.$eval("#main", (e) => Number(e.dataset.points || 0));
    await page.waitForFunction((p) => Number(document.querySelector("#main").dataset.points || 0) > p, { timeout: 10000 }, pts);
  });

  await step("no console errors", async () => {
    assert(errors.length === 0, `\n  ${errors.join("\n  ")}`);
  });

  // ---- logins and a remote server (the second daemon) ---------------------------
  await healthy(authUrl);
  const ctx2 = await browser.createBrowserContext();
  const p2 = await ctx2.newPage();
  const errors2 = [];
  p2.on("pageerror", (e) => errors2.push(`pageerror: ${e.message}`));
  p2.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const where = msg.location()?.url || "";
    // The auth probe without a cookie, and the refused password, are 401s the browser logs itself.
    if (/status of 401/.test(msg.text()) && /\/api\/v1\/(containers|login)$/.test(where)) return;
    if (/status of 404/.test(msg.text()) && /\/api\/v1\/(servers\/[^/]+\/metrics|alerts)/.test(where)) return;
    errors2.push(`console: ${msg.text()} ${where}`);
  });
  // Every frame the page's socket receives, to see the daemon's answers.
  const frames = [];
  const cdp = await p2.createCDPSession();
  await cdp.send("Network.enable");
  // The page's socket handshakes: Chromium offers permessage-deflate by itself
  // and the daemon accepts it (SPEC section 7); the frames above arrive inflated.
  const handshakes = [];
  cdp.on("Network.webSocketHandshakeResponseReceived", ({ response }) => handshakes.push(response));
  cdp.on("Network.webSocketFrameReceived", ({ response }) => {
    try {
      frames.push(JSON.parse(response.payloadData));
    } catch {
      // not JSON
    }
  });
  const login = async (user, pass) => {
    await p2.waitForSelector("#login-form", { timeout: 5000 });
    await p2.$eval("#login-user", (e) => (e.value = ""));
    await p2.type("#login-user", user);
    await p2.type("#login-pass", pass);
    await p2.click("#login-submit");
  };
  const idC = containers[2];
  const row2 = (server, name) => `tr[data-server="${server}"][data-name="${name}"]`;
  let localId2 = null;

  await step("login: the form, a wrong password refused with a message", async () => {
    await p2.goto(`${authUrl}/#/containers`);
    await p2.waitForSelector("#login-form", { timeout: 5000 });
    await shot(p2, "login");
    await login("alice", "not-her-password");
    await p2.waitForFunction(() => /Wrong user name or password/.test(document.querySelector("#login-error")?.textContent || ""), { timeout: 10000 });
    assert(await p2.$("#login-form"), "the form went away after a refused password");
    assert(!(await p2.evaluate(() => sessionStorage.getItem("dockwire.role"))), "a role hint after a refused login");
    await shot(p2, "login-refused");
  });

  await step("login: a viewer sees no admin control, and a forced command is refused", async () => {
    await login("bob", "bob-pw");
    await p2.waitForFunction(() => document.querySelector("#conn-state")?.dataset.state === "live", { timeout: 10000 });
    const ext = handshakes
      .filter((r) => r.status === 101)
      .map((r) => Object.entries(r.headers || {}).find(([k]) => k.toLowerCase() === "sec-websocket-extensions")?.[1] || "");
    assert(ext.length > 0, "no WebSocket handshake seen through CDP");
    assert(
      ext.every((e) => /permessage-deflate/.test(e) && /server_no_context_takeover/.test(e)),
      `the dashboard's socket did not negotiate permessage-deflate: ${JSON.stringify(ext)}`,
    );
    localId2 = await p2.evaluate(() => window.__dockwire.store.localId);
    await p2.waitForSelector(`${row2(localId2, nameC)}[data-state="running"]`, { timeout: 10000 });
    assert((await p2.$eval("#role", (e) => e.textContent)) === "viewer", "role badge");
    assert((await p2.$$("button.act-stop, button.act-start, button.act-restart")).length === 0, "admin buttons for a viewer");
    assert(!(await p2.$("#nav-commands")), "Commands in the menu for a viewer");
    assert(!(await p2.evaluate(() => document.cookie)).includes("dockwire_session"), "the session cookie is readable from the page");
    await p2.goto(`${authUrl}/#/commands`);
    await p2.waitForSelector("#view-containers", { timeout: 5000 });
    assert(!(await p2.$("#cmd-server")), "the commands form for a viewer");
    // The daemon refuses a viewer's docker_command sent over the page's own socket.
    const rid = await p2.evaluate(
      (server, id) => window.__dockwire.sock.request({ type: "docker_command", server_id: server, action: "stop", container_id: id }),
      localId2,
      idC,
    );
    assert(rid, "the page's socket did not send");
    const end = Date.now() + 10000;
    let reply = null;
    while (!reply && Date.now() < end) {
      reply = frames.find((f) => f.request_id === rid && f.type !== "command_accepted") || null;
      if (!reply) await sleep(100);
    }
    assert(reply, "no answer to the forced docker_command");
    assert(reply.type === "error" && /admin/.test(reply.message || ""), `not refused: ${JSON.stringify(reply)}`);
    assert(!frames.some((f) => f.request_id === rid && f.type === "command_accepted"), "the command was accepted");
    await sleep(500);
    const st = docker(["inspect", "-f", "{{.State.Status}}", idC]);
    assert(st === "running", `docker says ${st} after a viewer's command`);
  });

  await step("remote server: the agent online in Servers, its containers under it", async () => {
    await p2.goto(`${authUrl}/#/servers`);
    await p2.waitForFunction(
      (id) => /online/.test(document.querySelector(`tr[data-server="${id}"]`)?.textContent || ""),
      { timeout: 15000 },
      agentId,
    );
    assert(/edge-1/.test(await p2.$eval(`tr[data-server="${agentId}"]`, (e) => e.textContent)), "the agent's name");
    // Its metrics arrive (--metrics-interval 1s): the CPU cell gets a number.
    await p2.waitForFunction(
      (id) => /\d/.test(document.querySelector(`tr[data-server="${id}"] td:nth-child(4)`)?.textContent || ""),
      { timeout: 10000 },
      agentId,
    );
    // Usage of the local containers too (the page subscribes to them: container_stats).
    await p2.goto(`${authUrl}/#/containers`);
    await p2.waitForFunction(
      (sel) => /%/.test(document.querySelector(`${sel} td.cpu`)?.textContent || ""),
      { timeout: 10000 },
      row2(localId2, nameC),
    );
    await p2.goto(`${authUrl}/#/containers?server=${encodeURIComponent(agentId)}`);
    await p2.waitForSelector(`${row2(agentId, nameC)}[data-state="running"]`, { timeout: 15000 });
    await p2.waitForSelector(row2(agentId, nameA), { timeout: 5000 });
    assert(!(await p2.$(`tr[data-server="${localId2}"]`)), "local rows in the agent's filtered list");
    const serverCell = await p2.$eval(row2(agentId, nameC), (e) => e.children[1].textContent);
    assert(serverCell === "edge-1", `server column: ${serverCell}`);
  });

  await step("logout, then an admin stops a container through the agent", async () => {
    await p2.click("#logout");
    await p2.waitForSelector("#login-form", { timeout: 5000 });
    assert(!(await p2.evaluate(() => sessionStorage.getItem("dockwire.role"))), "role hint kept after logout");
    await login("alice", "alice-pw");
    await p2.waitForFunction(() => document.querySelector("#conn-state")?.dataset.state === "live", { timeout: 10000 });
    assert((await p2.$eval("#role", (e) => e.textContent)) === "admin", "role badge");
    assert(await p2.$("#nav-commands"), "no Commands for an admin");
    await p2.goto(`${authUrl}/#/servers`);
    await p2.waitForSelector(`tr[data-server="${agentId}"]`, { timeout: 10000 });
    await shot(p2, "servers");
    await p2.goto(`${authUrl}/#/containers`);
    const stop = `${row2(agentId, nameC)} button.act-stop:not([disabled])`;
    await p2.waitForSelector(stop, { timeout: 15000 });
    await p2.waitForSelector(row2(localId2, nameC), { timeout: 5000 });
    await shot(p2, "containers-remote");
    await p2.click(stop);
    await p2.waitForSelector(`${row2(agentId, nameC)}[data-state="exited"]`, { timeout: 20000 });
    await p2.waitForFunction(
      (sel) => /stop: (accepted|ok)/.test(document.querySelector(`${sel} .cmd-state`)?.textContent || ""),
      { timeout: 15000 },
      row2(agentId, nameC),
    );
    // The local daemon sees the same engine: its row changes too.
    await p2.waitForSelector(`${row2(localId2, nameC)}[data-state="exited"]`, { timeout: 20000 });
    const st = docker(["inspect", "-f", "{{.State.Status}}", idC]);
    assert(st === "exited", `docker says ${st}`);
  });

  await step("admin runs an allowed command on the agent", async () => {
    await p2.goto(`${authUrl}/#/commands`);
    await p2.waitForFunction((id) => [...document.querySelectorAll("#cmd-server option")].some((o) => o.value === id), { timeout: 5000 }, agentId);
    await p2.select("#cmd-server", agentId);
    await p2.type("#cmd-input", "echo dockwire-ok");
    await p2.click("#cmd-run");
    await p2.waitForFunction(() => /dockwire-ok/.test(document.querySelector("#cmd-results .cmd-output")?.textContent || ""), { timeout: 15000 });
    await shot(p2, "commands");
  });

  await step("alerts: an offline agent's alert fires, then resolves live when it connects", async () => {
    const ghostRow = `tr[data-server="${ghostId}"]`;
    const firingRow = `#alerts-firing tr[data-server="${ghostId}"][data-rule="${alertRule}"]`;
    // Servers: edge-2 offline, with its firing alert counted.
    await p2.goto(`${authUrl}/#/servers`);
    await p2.waitForFunction(
      (sel) => /^1 firing$/.test(document.querySelector(`${sel} td.alerts`)?.textContent || ""),
      { timeout: 10000 },
      ghostRow,
    );
    const cells = await p2.$eval(ghostRow, (e) => e.textContent);
    assert(/edge-2/.test(cells) && /offline/.test(cells), `edge-2's row: ${cells}`);
    await shot(p2, "servers-firing");
    // Alerts: the firing alert, with the daemon's message (from the `alerts` snapshot).
    await p2.click(`${ghostRow} td.alerts a`);
    await p2.waitForSelector(firingRow, { timeout: 5000 });
    const text = await p2.$eval(firingRow, (e) => e.textContent);
    assert(/edge-2/.test(text) && /Agent edge-2 offline/.test(text) && /firing/.test(text), `firing row: ${text}`);
    await p2.evaluate(() => {
      window.__notReloaded = true;
    });
    await shot(p2, "alerts");
    // edge-2 connects: the alert resolves on the open page.
    const ghostKeyFile = join(TMP, "agent-edge2.key");
    writeFileSync(ghostKeyFile, `${ghostKey}\n`);
    spawnOther("agent-edge2", [
      "agent", "--hub", `ws://127.0.0.1:${port2}/api/v1/agents/ws`, "--api-key-file", ghostKeyFile, "--no-docker", "--metrics-interval", "1s",
    ]);
    await p2.waitForSelector(`#alerts-recent tr[data-server="${ghostId}"][data-rule="${alertRule}"][data-state="resolved"]`, { timeout: 15000 });
    await p2.waitForFunction((sel) => !document.querySelector(sel), { timeout: 5000 }, firingRow);
    const resolved = await p2.$eval(`#alerts-recent tr[data-server="${ghostId}"][data-state="resolved"]`, (e) => e.textContent);
    assert(/back online/.test(resolved), `resolved row: ${resolved}`);
    assert(await p2.evaluate(() => window.__notReloaded === true), "the page was reloaded");
    await shot(p2, "alerts-resolved");
    await p2.goto(`${authUrl}/#/servers`);
    await p2.waitForFunction(
      (sel) => /online/.test(document.querySelector(sel)?.textContent || "") && document.querySelector(`${sel} td.alerts`)?.textContent === "none",
      { timeout: 10000 },
      ghostRow,
    );
  });

  await step("logout returns to the login form; no console errors", async () => {
    await p2.click("#logout");
    await p2.waitForSelector("#login-form", { timeout: 5000 });
    assert(!(await p2.$("#nav-containers")), "the menu after logout");
    assert(errors2.length === 0, `\n  ${errors2.join("\n  ")}`);
  });
  await ctx2.close();
}

try {
  await main();
} catch (e) {
  failed++;
  log(`FAIL setup: ${e && e.stack ? e.stack : e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  await stopDaemon().catch((e) => log(`daemon stop: ${e.message}`));
  await stopOthers().catch((e) => log(`stop: ${e.message}`));
  for (const id of containers) {
    try {
      execFileSync("docker", ["rm", "-f", id], { stdio: "ignore", timeout: 20000 });
    } catch {
      // run.sh removes what is left by label
    }
  }
  rmSync(TMP, { recursive: true, force: true });
}
if (problems.length) log(`failed: ${problems.join(", ")}`);
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
