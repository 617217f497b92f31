#!/usr/bin/env node
// Socket.IO connection state recovery (SPEC §7) with the official
// socket.io-client (pinned in package-lock.json) against the real daemon and
// a real Docker container. Recovery is on by default; a client opts out with `auth: {recover: false}`.
//
// Usage:
//   node recover.mjs <url>             drop the transport, let the daemon publish
//       while the client is away (a second, plain client watches it happen),
//       reconnect: `socket.recovered === true`, the same `socket.id`, every
//       missed event exactly once and in order, no new greeting; then a
//       reconnect with a garbled offset gets a fresh session (`recovered ===
//       false`, greeting again).
//   node recover.mjs <url> --restart   connect, print READY_FOR_RESTART, expect
//       the daemon to be restarted (tests/clients/socketio.sh does it) and the
//       reconnection to be a fresh session: `recovered === false`, greeting.
//
// No timing assertions: every wait is for an event, with a generous limit.
// Env: DOCKER_HOST, DOCKWIRE_TEST_IMAGE (busybox), DOCKWIRE_SIO_TIMEOUT_S (120).
// Exit 0 when every check passed; 1 with a "FAIL ..." line otherwise.

import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { io } from "socket.io-client";

const url = process.argv[2];
const restartMode = process.argv.includes("--restart");
if (!url || url.startsWith("--")) {
  console.error("usage: node recover.mjs <url> [--restart]");
  process.exit(2);
}
const HARD_LIMIT_MS = Number(process.env.DOCKWIRE_SIO_TIMEOUT_S || 120) * 1000;
const TAG = "recover";

let containerId = null;
const sockets = [];

function log(msg) {
  console.log(`[${TAG}] ${msg}`);
}

function short(v) {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 300 ? `${s.slice(0, 300)}...` : s;
}

function cleanupContainer() {
  if (!containerId) return;
  try {
    execFileSync("docker", ["rm", "-f", containerId], { stdio: "ignore", timeout: 20000 });
  } catch {
    // best effort
  }
  containerId = null;
}

function fail(msg) {
  console.log(`FAIL ${TAG}: ${msg}`);
  for (const c of sockets) {
    console.log(`  last events of ${c.tag}:\n${c.received.slice(-12).map((e) => `    ${e.name} ${short(e.data)} ${short(e.offset)}`).join("\n")}`);
  }
  cleanupContainer();
  for (const c of sockets) c.socket.disconnect();
  process.exit(1);
}

function assert(cond, msg) {
  if (!cond) fail(msg);
}

const hardTimer = setTimeout(() => fail(`hard timeout of ${HARD_LIMIT_MS / 1000}s reached`), HARD_LIMIT_MS);
hardTimer.unref();
process.on("unhandledRejection", (e) => fail(`unhandled error: ${e && e.stack ? e.stack : e}`));

function docker(args, timeout = 30000) {
  return new Promise((resolve, reject) => {
    execFile("docker", args, { encoding: "utf8", timeout }, (err, stdout, stderr) => {
      if (err) reject(new Error(`docker ${args.join(" ")} failed: ${stderr || err.message}`));
      else resolve(stdout.trim());
    });
  });
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * One client: every event in order as {name, data, offset}, where `data` is
 * the first argument and `offset` the last one when there are two.
 */
function client(tag, opts) {
  const c = { tag, received: [], waiters: new Set() };
  c.socket = io(url, { transports: ["websocket"], ...opts });
  const record = (name, data, offset) => {
    c.received.push({ name, data, offset });
    for (const w of [...c.waiters]) w.check();
  };
  c.socket.on("connect", () => record("connect", { id: c.socket.id, recovered: c.socket.recovered }));
  c.socket.on("disconnect", (reason) => record("disconnect", reason));
  c.socket.on("connect_error", (err) => record("connect_error", err && err.message));
  c.socket.onAny((name, ...args) => record(name, args[0], args.length > 1 ? args[args.length - 1] : undefined));
  c.waitFor = (name, pred, what, ms = 20000, from = 0) =>
    new Promise((resolve) => {
      const w = {
        check() {
          for (let i = from; i < c.received.length; i++) {
            const e = c.received[i];
            if (e.name === name && pred(e.data)) {
              c.waiters.delete(w);
              clearTimeout(w.timer);
              resolve({ ...e, index: i });
              return;
            }
          }
        },
      };
      w.timer = setTimeout(() => fail(`${tag}: timed out after ${ms} ms waiting for ${what}`), ms);
      c.waiters.add(w);
      w.check();
    });
  sockets.push(c);
  return c;
}

/** The container's line numbers in `log_update`s from index `from` on. */
function lineNumbers(c, from = 0) {
  const nums = [];
  for (const e of c.received.slice(from)) {
    if (e.name !== "log_update" || !isObject(e.data) || e.data.container_id !== containerId) continue;
    const body = e.data.log.endsWith("\n") ? e.data.log.slice(0, -1) : e.data.log;
    for (const line of body.split("\n")) {
      const m = /(?:^|\s)line (\d+)\r?$/.exec(line);
      assert(m, `${c.tag}: a log line that is not the container's: ${short(line)}`);
      nums.push(Number(m[1]));
    }
  }
  return nums;
}

async function greeting(c, from, what) {
  const conn = await c.waitFor("connect", () => true, `${what}: connect`, 20000, from);
  await c.waitFor("connection_established", () => true, `${what}: connection_established`, 10000, conn.index);
  const init = await c.waitFor("initial_state", (d) => isObject(d) && Array.isArray(d.containers), `${what}: initial_state`, 10000, conn.index);
  return { conn, init };
}

async function recoverFlow() {
  const image = process.env.DOCKWIRE_TEST_IMAGE;
  assert(image, "DOCKWIRE_TEST_IMAGE is not set");
  // Reconnection is driven by hand, so the gap lasts exactly until the
  // watcher has seen the daemon publish what the recovering client missed.
  const main = client("main", { reconnection: false });
  const watcher = client("watcher", { auth: { recover: false } });
  const first = await greeting(main, 0, "main");
  assert(first.conn.data.recovered === false, `a first connection is not recovered: ${short(first.conn.data)}`);
  assert(typeof first.init.offset === "string" && /^\d+$/.test(first.init.offset), `events carry an offset as their last argument: ${short(first.init)}`);
  await greeting(watcher, 0, "watcher");
  const plain = watcher.received.filter((e) => e.offset !== undefined);
  assert(plain.length === 0, `a client with auth.recover false gets no offsets: ${short(plain)}`);
  log("PASS first connection: recovered false, offsets on events (by default; none with recover: false)");

  const name = `dockwire-recover-${randomBytes(4).toString("hex")}`;
  const script = 'i=1; while true; do echo "line $i"; i=$((i+1)); sleep 0.1; done';
  containerId = await docker(["run", "-d", "--network", "none", "--label", "dockwire.test=socketio-clients", "--name", name, image, "sh", "-c", script]);
  for (const c of [main, watcher]) {
    await c.waitFor("container_state_change", (d) => isObject(d) && d.id === containerId && d.state === "running", `${c.tag}: ${name} running`);
  }
  main.socket.emit("start_log_stream", { container_id: containerId, tail: 0 });
  watcher.socket.emit("start_log_stream", { container_id: containerId, tail: 0 });
  const deadline = Date.now() + 20000;
  while (lineNumbers(main).length < 5) {
    assert(Date.now() < deadline, `main: fewer than 5 log lines within 20 s: ${short(lineNumbers(main))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  log(`main streams the container's log (${lineNumbers(main).length} lines so far)`);

  // Drop the transport (the client would reconnect by itself; here by hand).
  const oldId = main.socket.id;
  const markMain = main.received.length;
  main.socket.io.engine.close();
  const gone = await main.waitFor("disconnect", () => true, "main: disconnect", 10000, markMain);
  log(`main disconnected (${gone.data}); the daemon publishes while it is away`);
  const markWatch = watcher.received.length;
  const seenBefore = lineNumbers(watcher).length;
  while (lineNumbers(watcher).length < seenBefore + 5) {
    assert(Date.now() < deadline + 20000, "watcher: the log did not go on while main was away");
    await new Promise((r) => setTimeout(r, 50));
  }
  await docker(["stop", "-t", "1", containerId]);
  await watcher.waitFor("container_state_change", (d) => isObject(d) && d.id === containerId && d.state === "exited", "watcher: exited", 20000, markWatch);
  await watcher.waitFor("log_stream_stopped", (d) => isObject(d) && d.container_id === containerId, "watcher: log_stream_stopped", 20000, markWatch);
  log("watcher saw the log go on, the container exit and the stream stop");

  main.socket.connect();
  const back = await main.waitFor("connect", () => true, "main: reconnection", 20000, markMain);
  assert(back.data.recovered === true, `socket.recovered should be true after a short drop: ${short(back.data)}`);
  assert(back.data.id === oldId, `the same socket id after recovery: ${oldId} -> ${back.data.id}`);
  await main.waitFor("log_stream_stopped", (d) => isObject(d) && d.container_id === containerId, "main: the missed log_stream_stopped", 20000, back.index);
  // Anything else in flight would be here by now: the watcher has it all.
  const after = main.received.slice(back.index);
  const greet = after.filter((e) => e.name === "connection_established" || e.name === "initial_state");
  assert(greet.length === 0, `a recovered session continues without a new greeting: ${short(greet)}`);
  // Both streams ran from their start_log_stream (tail 0) to the stop:
  // main's lines are contiguous and end where the watcher's end.
  const all = lineNumbers(main);
  const want = lineNumbers(watcher);
  assert(all.every((n, i) => i === 0 || n === all[i - 1] + 1), `lines in order without gap or duplicate: ${short(all)}`);
  assert(all.length > 0 && all[all.length - 1] === want[want.length - 1], `main's last line should be the watcher's:\n    main    ${short(all)}\n    watcher ${short(want)}`);
  assert(lineNumbers(main, back.index).length > 0, "lines printed while main was away arrive after the recovery");
  const exits = main.received.filter((e) => e.name === "container_state_change" && isObject(e.data) && e.data.id === containerId && e.data.state === "exited");
  assert(exits.length === 1, `the missed exit arrives exactly once: ${exits.length}`);
  const stops = main.received.filter((e) => e.name === "log_stream_stopped");
  assert(stops.length === 1, `the missed log_stream_stopped arrives exactly once: ${stops.length}`);
  const offs = main.received.filter((e) => e.offset !== undefined).map((e) => BigInt(e.offset));
  assert(offs.every((o, i) => i === 0 || o > offs[i - 1]), "offsets increase, none repeated");
  log(`PASS recovered: recovered true, same id, ${all.length - lineNumbers(main, back.index).length} lines before the drop and ${lineNumbers(main, back.index).length} after, exit and stream stop once, no greeting`);

  // A garbled offset: a fresh session, as after an expired window.
  const markBad = main.received.length;
  main.socket._lastOffset = "not-an-offset";
  main.socket.io.engine.close();
  await main.waitFor("disconnect", () => true, "main: second disconnect", 10000, markBad);
  main.socket.connect();
  const fresh = await greeting(main, markBad, "main after a garbled offset");
  assert(fresh.conn.data.recovered === false, `a bad offset gets a fresh session: ${short(fresh.conn.data)}`);
  assert(fresh.conn.data.id !== oldId, "a fresh session has a new id");
  log("PASS garbled offset: recovered false, new id, greeting again");

  cleanupContainer();
  for (const c of sockets) c.socket.disconnect();
  log("PASS all");
}

async function restartFlow() {
  const main = client("main", { reconnectionDelay: 500, reconnectionDelayMax: 2000 });
  const first = await greeting(main, 0, "first connection");
  assert(first.conn.data.recovered === false, "a first connection is not recovered");
  const mark = main.received.length;
  console.log("READY_FOR_RESTART");
  await main.waitFor("disconnect", () => true, "a disconnect while the daemon restarts", 60000, mark);
  const again = await greeting(main, mark, "reconnection after a restart");
  assert(again.conn.data.recovered === false, `nothing survives a restart: recovered should be false: ${short(again.conn.data)}`);
  main.socket.disconnect();
  log("PASS all: after a daemon restart the client gets a fresh session (recovered false)");
}

try {
  await (restartMode ? restartFlow() : recoverFlow());
  cleanupContainer();
  process.exit(0);
} catch (e) {
  fail(e && e.message ? e.message : String(e));
}
