#!/usr/bin/env python3
"""The first seed's flow with python-socketio's client (a second, independent
Socket.IO v4 implementation), websocket transport only.

Usage: python seed_python.py <url>

Checks: connect, connection_established, initial_state {containers}, the
log_update lines of a fresh container (in order, never split inside a line),
and an error {error} for an unknown container.

Env: DOCKER_HOST (for the docker CLI), DOCKWIRE_TEST_IMAGE (busybox image),
DOCKWIRE_SIO_TIMEOUT_S (hard limit, default 90).
Exit 0 when every check passed; 1 with a "FAIL ..." line otherwise.
"""

import os
import re
import secrets
import subprocess
import sys
import threading
import time

import socketio

TAG = "seed_python"
LINES = 20
HARD_LIMIT_S = float(os.environ.get("DOCKWIRE_SIO_TIMEOUT_S", "90"))

received = []  # (name, data) in arrival order
cond = threading.Condition()
container_id = None


def log(msg):
    print(f"[{TAG}] {msg}", flush=True)


def short(v):
    s = repr(v)
    return s if len(s) <= 300 else s[:300] + "..."


def cleanup():
    global container_id
    if container_id:
        subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, timeout=20)
        container_id = None


def fail(msg):
    print(f"FAIL {TAG}: {msg}", flush=True)
    with cond:
        tail = received[-12:]
    if tail:
        print("  last events received:\n" + "\n".join(f"    {n} {short(d)}" for n, d in tail), flush=True)
    try:
        cleanup()
    finally:
        os._exit(1)


def check(cond_value, msg):
    if not cond_value:
        fail(msg)


def wait_for(name, pred, what, timeout=15.0, start=0):
    """Index and data of the first event `name` at or after `start` with pred(data)."""
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            for i in range(start, len(received)):
                n, d = received[i]
                if n == name and pred(d):
                    return i, d
            left = deadline - time.monotonic()
            if left <= 0:
                break
            cond.wait(left)
    fail(f"timed out after {timeout:.0f} s waiting for {what}")


def mark():
    with cond:
        return len(received)


def docker(*args):
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        fail(f"docker {' '.join(args)} failed: {p.stderr.strip()}")
    return p.stdout.strip()


def main():
    global container_id
    if len(sys.argv) != 2:
        print("usage: seed_python.py <url>", file=sys.stderr)
        sys.exit(2)
    url = sys.argv[1]
    image = os.environ.get("DOCKWIRE_TEST_IMAGE")
    check(image, "DOCKWIRE_TEST_IMAGE is not set")

    watchdog = threading.Timer(HARD_LIMIT_S, fail, args=(f"hard timeout of {HARD_LIMIT_S:.0f} s reached",))
    watchdog.daemon = True
    watchdog.start()

    sio = socketio.Client(reconnection=False, handle_sigint=False)

    def record(name, data):
        with cond:
            received.append((name, data))
            cond.notify_all()

    @sio.event
    def connect():
        record("connect", None)

    @sio.event
    def disconnect(*args):
        record("disconnect", args)

    @sio.event
    def connect_error(data):
        record("connect_error", data)

    @sio.on("*")
    def any_event(event, *args):
        record(event, args[0] if len(args) == 1 else list(args))

    try:
        # python-socketio calls a handler with every argument of an event, so
        # the offsets of connection state recovery (SPEC 7; on by default)
        # would not fit handlers of one argument: opt out, as documented.
        sio.connect(url, transports=["websocket"], wait_timeout=10, auth={"recover": False})
    except Exception as e:  # noqa: BLE001 - any failure to connect is the test failing
        fail(f"could not connect to {url}: {e!r}")
    check(sio.transport() == "websocket", f"transport should be websocket, got {sio.transport()}")

    i_est, est = wait_for("connection_established", lambda d: True, "connection_established")
    check(isinstance(est, dict) and isinstance(est.get("message"), str), f"connection_established should be {{message}}: {short(est)}")
    i_init, init = wait_for("initial_state", lambda d: True, "initial_state")
    check(i_init > i_est, "initial_state arrived before connection_established")
    check(isinstance(init, dict) and isinstance(init.get("containers"), list), f"initial_state should be {{containers: [...]}}: {short(init)}")
    for c in init["containers"]:
        check(isinstance(c, dict) and all(isinstance(c.get(k), str) for k in ("id", "name", "image", "state")), f"bad container in initial_state: {short(c)}")
    log(f"PASS connect, connection_established, initial_state ({len(init['containers'])} containers)")

    name = f"dockwire-sio-py-{secrets.token_hex(4)}"
    script = f'i=1; while [ $i -le {LINES} ]; do echo "line $i"; i=$((i+1)); done; exec sleep 3600'
    container_id = docker("run", "-d", "--network", "none", "--label", "dockwire.test=socketio-clients", "--name", name, image, "sh", "-c", script)
    log(f"started container {name} {container_id[:12]}")

    start = mark()
    sio.emit("start_log_stream", {"container_id": container_id})
    deadline = time.monotonic() + 20
    while True:
        nums = []
        with cond:
            updates = [d for n, d in received[start:] if n == "log_update"]
        for d in updates:
            if not (isinstance(d, dict) and d.get("container_id") == container_id):
                continue
            check(isinstance(d.get("log"), str), f"log_update.log should be a string: {short(d)}")
            body = d["log"][:-1] if d["log"].endswith("\n") else d["log"]
            for line in body.split("\n"):
                m = re.search(r"(?:^|\s)line (\d+)\r?$", line)
                check(m, f"log_update carries a line that is not the container's (split?): {short(line)}")
                nums.append(int(m.group(1)))
        check(nums == list(range(1, len(nums) + 1)), f"log lines out of order, duplicated or missing: {nums}")
        if len(nums) >= LINES:
            check(len(nums) == LINES, f"more lines than the container printed: {nums}")
            break
        if time.monotonic() > deadline:
            fail(f"only {len(nums)} of {LINES} lines arrived within 20 s: {nums}")
        time.sleep(0.1)
    log(f"PASS log_update: {LINES} lines in order")

    start = mark()
    unknown = f"no-such-container-{secrets.token_hex(4)}"
    sio.emit("start_log_stream", {"container_id": unknown})
    _, err = wait_for("error", lambda d: True, "error for an unknown container", start=start)
    check(isinstance(err, dict) and isinstance(err.get("error"), str) and err["error"], f"error should be {{error: '...'}}: {short(err)}")
    check(unknown in err["error"] or re.search(r"not found|no such", err["error"], re.I), f"error should name the container or say not found: {short(err)}")
    log(f"PASS unknown container -> error {err['error']!r}")

    with cond:
        drops = [(n, d) for n, d in received if n in ("disconnect", "connect_error")]
    check(not drops, f"the socket dropped during the run: {short(drops)}")
    cleanup()
    sio.disconnect()
    watchdog.cancel()
    log("PASS all")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        fail(f"unexpected exception: {e!r}")
    os._exit(0)
