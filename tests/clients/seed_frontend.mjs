#!/usr/bin/env node
// The first seed's React frontend, reduced to its socket: the official
// socket.io-client (pinned in package-lock.json) connecting exactly like the
// seed does, checked against SPEC §3.4 with a real Docker container.
//
// Usage:
//   node seed_frontend.mjs <url>               full flow (needs docker CLI)
//   node seed_frontend.mjs <url> --msgpack     the same flow with the official
//       socket.io-msgpack-parser (`parser` + `query: {parser: "msgpack"}`, SPEC 12)
//   node seed_frontend.mjs <url> --reconnect   connect, print READY_FOR_RESTART,
//       then expect the daemon to go away and come back (tests/clients/socketio.sh
//       restarts it) and the client to get `connect` + `initial_state` again.
//
// Env: DOCKER_HOST (passed to the docker CLI), DOCKWIRE_TEST_IMAGE (an image
// with busybox `sh`), DOCKWIRE_SIO_TIMEOUT_S (hard limit, default 120).
// Exit 0 when every check passed; 1 with a "FAIL ..." line otherwise.

import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";

const url = process.argv[2];
const reconnectMode = process.argv.includes("--reconnect");
const msgpackMode = process.argv.includes("--msgpack");
if (!url || url.startsWith("--")) {
  console.error("usage: node seed_frontend.mjs <url> [--reconnect]");
  process.exit(2);
}
const HARD_LIMIT_MS = Number(process.env.DOCKWIRE_SIO_TIMEOUT_S || 120) * 1000;
const LINES = 30;
const TAG = msgpackMode ? "seed_frontend_msgpack" : "seed_frontend";

let socket = null;
let containerId = null;
/** Every event received, in order: {name, data, at}. */
const received = [];
const waiters = new Set();

function log(msg) {
  console.log(`[${TAG}] ${msg}`);
}

function short(v) {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 300 ? `${s.slice(0, 300)}...` : s;
}

function lastEvents(n = 12) {
  return received
    .slice(-n)
    .map((e) => `    ${e.name} ${short(e.data)}`)
    .join("\n");
}

function fail(msg) {
  console.log(`FAIL ${TAG}: ${msg}`);
  if (received.length) console.log(`  last events received:\n${lastEvents()}`);
  cleanupContainer();
  if (socket) socket.disconnect();
  process.exit(1);
}

const hardTimer = setTimeout(() => fail(`hard timeout of ${HARD_LIMIT_MS / 1000}s reached`), HARD_LIMIT_MS);
hardTimer.unref();
process.on("unhandledRejection", (e) => fail(`unhandled error: ${e && e.stack ? e.stack : e}`));

function record(name, data) {
  received.push({ name, data, at: Date.now() });
  for (const w of [...waiters]) w.check();
}

/**
 * Resolves with the first event (from index `from` on) named `name` whose data
 * satisfies `pred`; fails the run with `what` after `ms`.
 */
function waitFor(name, pred, what, ms = 15000, from = 0) {
  return new Promise((resolve) => {
    const w = {
      check() {
        for (let i = from; i < received.length; i++) {
          const e = received[i];
          if (e.name === name && pred(e.data)) {
            waiters.delete(w);
            clearTimeout(w.timer);
            resolve({ ...e, index: i });
            return;
          }
        }
      },
    };
    w.timer = setTimeout(() => {
      waiters.delete(w);
      fail(`timed out after ${ms} ms waiting for ${what}`);
    }, ms);
    waiters.add(w);
    w.check();
  });
}

// Runs the docker CLI without blocking the event loop: a synchronous call
// (docker stop waits for the container) would starve the Socket.IO client of
// its pings, and with the test's 1 s ping interval it would drop the
// connection and miss the very event the step waits for.
function docker(args, timeout = 30000) {
  return new Promise((resolve, reject) => {
    execFile("docker", args, { encoding: "utf8", timeout }, (err, stdout, stderr) => {
      if (err) reject(new Error(`docker ${args.join(" ")} failed: ${stderr || err.message}`));
      else resolve(stdout.trim());
    });
  });
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

function assert(cond, msg) {
  if (!cond) fail(msg);
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function checkContainer(c, where) {
  assert(isObject(c), `${where}: container is not an object: ${short(c)}`);
  for (const [k, t] of [
    ["id", "string"],
    ["name", "string"],
    ["image", "string"],
    ["state", "string"],
    ["status", "string"],
    ["created", "string"],
  ]) {
    assert(typeof c[k] === t, `${where}: container field "${k}" should be a ${t}: ${short(c)}`);
  }
  assert(isObject(c.labels), `${where}: container field "labels" should be an object: ${short(c)}`);
}

/** The id a state-change payload refers to (`id`, or the seed's `container_id` for removals). */
function changeId(d) {
  return isObject(d) ? d.id ?? d.container_id : undefined;
}

/**
 * Collects `log_update` lines for our container from event index `from` on
 * until `LINES` numbered lines are seen; checks order and that no line was split.
 */
async function expectLogLines(from, what) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const nums = [];
    for (let i = from; i < received.length; i++) {
      const e = received[i];
      if (e.name !== "log_update" || !isObject(e.data) || e.data.container_id !== containerId) continue;
      assert(typeof e.data.log === "string", `${what}: log_update.log should be a string: ${short(e.data)}`);
      const body = e.data.log.endsWith("\n") ? e.data.log.slice(0, -1) : e.data.log;
      for (const line of body.split("\n")) {
        // A timestamp prefix (as in the seed's `timestamps=True`) is allowed.
        const m = /(?:^|\s)line (\d+)\r?$/.exec(line);
        assert(m, `${what}: log_update carries a line that is not one of the container's (split inside a line?): ${short(line)}`);
        nums.push(Number(m[1]));
      }
    }
    for (let i = 0; i < nums.length; i++) {
      assert(nums[i] === i + 1, `${what}: log lines out of order, duplicated or missing: got ${short(nums)}`);
    }
    if (nums.length >= LINES) {
      assert(nums.length === LINES, `${what}: more lines than the container printed: ${short(nums)}`);
      return;
    }
    if (Date.now() > deadline) fail(`${what}: only ${nums.length} of ${LINES} lines arrived within 20 s: ${short(nums)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function connect() {
  // Exactly the seed's options (useWebSocket.ts).
  socket = io(url, {
    transports: ["websocket"],
    reconnection: true,
    reconnectionAttempts: Infinity,
    reconnectionDelay: 1000,
    reconnectionDelayMax: 5000,
    timeout: 60000,
    // SPEC 12: the binary wire, as its users configure it.
    ...(msgpackMode ? { parser: msgpackParser, query: { parser: "msgpack" } } : {}),
  });
  socket.on("connect", () => record("connect", socket.id));
  socket.on("disconnect", (reason) => record("disconnect", reason));
  socket.on("connect_error", (err) => record("connect_error", err && err.message));
  // The payload is the first argument; a second, a string, is the offset of
  // connection state recovery (SPEC 7), which the seed's handlers ignore.
  socket.onAny((name, ...args) => {
    const offset = args.length === 2 && typeof args[1] === "string" ? args.pop() : undefined;
    if (offset !== undefined && !/^\d+$/.test(offset)) throw new Error(`bad offset ${offset} on ${name}`);
    record(name, args.length === 1 ? args[0] : args);
  });
}

async function expectGreeting(from, what) {
  const c = await waitFor("connect", () => true, `${what}: Socket.IO connect`, 20000, from);
  const est = await waitFor("connection_established", () => true, `${what}: connection_established`, 10000, c.index);
  assert(isObject(est.data), `${what}: connection_established payload should be an object: ${short(est.data)}`);
  assert(typeof est.data.message === "string", `${what}: connection_established.message should be a string: ${short(est.data)}`);
  const init = await waitFor("initial_state", () => true, `${what}: initial_state`, 10000, c.index);
  assert(init.index > est.index, `${what}: initial_state arrived before connection_established`);
  assert(isObject(init.data) && Array.isArray(init.data.containers), `${what}: initial_state should be {containers: [...]}: ${short(init.data)}`);
  init.data.containers.forEach((ct, i) => checkContainer(ct, `${what}: initial_state.containers[${i}]`));
  const errors = received.slice(c.index).filter((e) => e.name === "connect_error");
  assert(errors.length === 0, `${what}: unexpected connect_error: ${short(errors)}`);
  log(`PASS ${what}: connect, connection_established, initial_state (${init.data.containers.length} containers)`);
  return init;
}

async function fullFlow() {
  const image = process.env.DOCKWIRE_TEST_IMAGE;
  assert(image, "DOCKWIRE_TEST_IMAGE is not set");
  connect();
  await expectGreeting(0, "greeting");
  // engine.io-client offers permessage-deflate by default (ws, threshold 1 KiB);
  // the daemon accepts it (SPEC section 7) and everything below runs over it.
  const ext = socket.io.engine?.transport?.ws?.extensions || "";
  assert(/permessage-deflate/.test(ext), `greeting: the websocket did not negotiate permessage-deflate: ${short(ext)}`);
  log(`PASS greeting: permessage-deflate negotiated (${ext})`);

  // A container printing numbered lines, then idling so the stream stays open.
  const name = `dockwire-sio-${randomBytes(4).toString("hex")}`;
  const script = `i=1; while [ $i -le ${LINES} ]; do echo "line $i"; i=$((i+1)); sleep 0.05; done; exec sleep 3600`;
  let mark = received.length;
  containerId = await docker(["run", "-d", "--network", "none", "--label", "dockwire.test=socketio-clients", "--name", name, image, "sh", "-c", script]);
  assert(/^[0-9a-f]{64}$/.test(containerId), `docker run printed no container id: ${short(containerId)}`);
  log(`started container ${name} ${containerId.slice(0, 12)}`);
  const running = await waitFor(
    "container_state_change",
    (d) => changeId(d) === containerId && d.state === "running",
    `container_state_change {id: ${containerId.slice(0, 12)}, state: "running"}`,
    15000,
    mark,
  );
  checkContainer(running.data, "container_state_change (running)");
  assert(running.data.name === name, `container_state_change name should be ${name}: ${short(running.data)}`);
  log("PASS container_state_change running");

  mark = received.length;
  socket.emit("start_log_stream", { container_id: containerId });
  await expectLogLines(mark, "log stream");
  log(`PASS log_update: ${LINES} lines in order, none split`);

  mark = received.length;
  socket.emit("stop_log_stream", { container_id: containerId });
  const stopped = await waitFor(
    "log_stream_stopped",
    (d) => isObject(d) && d.container_id === containerId,
    "log_stream_stopped after stop_log_stream",
    10000,
    mark,
  );
  assert(typeof stopped.data.message === "string", `log_stream_stopped.message should be a string: ${short(stopped.data)}`);
  log("PASS stop_log_stream -> log_stream_stopped");

  // A second subscription gets the history again (tail 100 by default).
  mark = received.length;
  socket.emit("start_log_stream", { container_id: containerId });
  await expectLogLines(mark, "second log stream");
  log("PASS start_log_stream again: history replayed in order");

  mark = received.length;
  await docker(["stop", "-t", "1", containerId]);
  const exited = await waitFor(
    "container_state_change",
    (d) => changeId(d) === containerId && d.state === "exited",
    `container_state_change {state: "exited"} after docker stop`,
    15000,
    mark,
  );
  checkContainer(exited.data, "container_state_change (exited)");
  await waitFor(
    "log_stream_stopped",
    (d) => isObject(d) && d.container_id === containerId,
    "log_stream_stopped after the container stopped",
    15000,
    mark,
  );
  log("PASS docker stop -> container_state_change exited + log_stream_stopped");

  mark = received.length;
  await docker(["rm", containerId]);
  const removedId = containerId;
  containerId = null;
  await waitFor(
    "container_state_change",
    (d) => changeId(d) === removedId && d.state === "removed",
    `container_state_change {id: ${removedId.slice(0, 12)}, state: "removed"} after docker rm`,
    15000,
    mark,
  );
  log("PASS docker rm -> container_state_change removed");

  mark = received.length;
  const unknown = `no-such-container-${randomBytes(4).toString("hex")}`;
  socket.emit("start_log_stream", { container_id: unknown });
  const err = await waitFor("error", () => true, "error for an unknown container", 10000, mark);
  assert(isObject(err.data) && typeof err.data.error === "string" && err.data.error.length > 0, `error payload should be {error: "..."}: ${short(err.data)}`);
  assert(
    err.data.error.includes(unknown) || /not found|no such/i.test(err.data.error),
    `error for an unknown container should name it or say "not found": ${short(err.data)}`,
  );
  log(`PASS unknown container -> error ${short(err.data.error)}`);

  const stray = received.filter((e) => e.name === "disconnect" || e.name === "connect_error");
  assert(stray.length === 0, `the socket dropped during the run: ${short(stray)}`);
  socket.disconnect();
  log("PASS all");
}

async function reconnectFlow() {
  connect();
  await expectGreeting(0, "first connection");
  const mark = received.length;
  console.log("READY_FOR_RESTART");
  const gone = await waitFor("disconnect", () => true, "a disconnect while the daemon restarts", 60000, mark);
  log(`disconnected (${gone.data}); waiting for the reconnection`);
  assert(gone.data !== "io server disconnect", 'the server sent a Socket.IO DISCONNECT: socket.io-client never reconnects after "io server disconnect"');
  await expectGreeting(gone.index, "reconnection");
  socket.disconnect();
  log("PASS all");
}

try {
  await (reconnectMode ? reconnectFlow() : fullFlow());
  cleanupContainer();
  process.exit(0);
} catch (e) {
  fail(e && e.message ? e.message : String(e));
}
