#!/usr/bin/env python3
"""Socket.IO / Engine.IO v4 edge cases over a raw WebSocket (websocket-client),
against a running dockwire (SPEC §3.4 and §4: every bad input gets an
`error` event and the socket stays open).

Usage: python socketio_raw.py <url> [--ping-interval-ms N] [--ping-timeout-ms N]

<url> is the daemon's base URL, e.g. http://127.0.0.1:7575. With the ping
options the OPEN packet must advertise exactly those values; the missed-pong
check runs only when the advertised interval + timeout is at most 10 s (the
runner configures `[socketio] ping_interval = "1s"`, `ping_timeout = "1s"`).

Exit 0 when every check passed; 1 otherwise. Prints one PASS/FAIL line per
check and a closing "N passed, N failed" line.
"""

import argparse
import json
import os
import re
import socket
import threading
import time
import urllib.parse

import websocket

HARD_LIMIT_S = float(os.environ.get("DOCKWIRE_SIO_TIMEOUT_S", "120"))
TAG = "socketio_raw"


class CheckFailed(Exception):
    pass


def short(v):
    s = v if isinstance(v, str) else repr(v)
    return s if len(s) <= 300 else s[:300] + "..."


def require(cond, msg):
    if not cond:
        raise CheckFailed(msg)


class Raw:
    """One raw Engine.IO v4 session. Server pings are answered unless
    `answer_pings` is off; every text frame is kept in `seen`."""

    def __init__(self, base_ws, query="EIO=4&transport=websocket", answer_pings=True):
        self.url = f"{base_ws}/socket.io/?{query}"
        self.answer_pings = answer_pings
        self.seen = []
        self.pings = []
        # Connection state recovery (SPEC 7, on by default): once the CONNECT
        # answer carries a pid, every event ends with a decimal offset.
        self.pid = None
        self.last_offset = 0
        try:
            self.ws = websocket.create_connection(self.url, timeout=5, enable_multithread=True)
        except Exception as e:  # noqa: BLE001
            raise CheckFailed(f"could not open {self.url}: {e!r}") from e
        kind, first = self.next(5)
        require(kind == "text", f"expected the Engine.IO OPEN packet, got {kind} {short(first)}")
        require(first.startswith("0{"), f"first packet should be OPEN (0{{...}}), got {short(first)}")
        try:
            self.open = json.loads(first[1:])
        except ValueError as e:
            raise CheckFailed(f"OPEN packet is not JSON: {short(first)}") from e

    def send(self, text):
        self.ws.send(text)

    def next(self, timeout):
        """('text', str) | ('close', code) | ('eof', None) | ('timeout', None)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout", None
            self.ws.settimeout(left)
            try:
                opcode, frame = self.ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                return "timeout", None
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                return "eof", None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                data = frame.data or b""
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                return "close", code
            if opcode == websocket.ABNF.OPCODE_BINARY:
                raise CheckFailed(f"server sent a binary frame: {short(frame.data)}")
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            text = frame.data.decode("utf-8") if isinstance(frame.data, bytes) else frame.data
            self.seen.append(text)
            if text == "2":
                self.pings.append(time.monotonic())
                if self.answer_pings:
                    self.send("3")
                continue
            return "text", text

    def expect(self, pred, what, timeout=5):
        """The first text packet satisfying pred (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            kind, text = self.next(max(0.0, deadline - time.monotonic()))
            if kind == "timeout":
                raise CheckFailed(f"timed out after {timeout} s waiting for {what}; last packets: {short(self.seen[-6:])}")
            if kind != "text":
                raise CheckFailed(f"connection ended ({kind} {text}) while waiting for {what}; last packets: {short(self.seen[-6:])}")
            if pred(text):
                return text

    def expect_event(self, name, what, timeout=5):
        """The next event called `name`; returns its arguments, without the
        recovery offset (checked: decimal digits, increasing)."""
        text = self.expect(lambda t: event_name(t) == name, what, timeout)
        args = json.loads(text[2:])[1:]
        if self.pid is not None:
            require(args and isinstance(args[-1], str) and args[-1].isdigit(), f"{name} should end with a recovery offset: {short(text)}")
            offset = int(args.pop())
            require(offset > self.last_offset, f"offsets should increase: {offset} after {self.last_offset}")
            self.last_offset = offset
        return args

    def connected(self, ok, recover=True):
        """Checks a CONNECT answer `40{sid[, pid]}` and returns its body."""
        require(ok.startswith("40{"), f"CONNECT on / should be answered 40{{sid}}, got {short(ok)}")
        body = json.loads(ok[2:])
        require(isinstance(body.get("sid"), str) and body["sid"], f"CONNECT answer should carry a sid: {short(ok)}")
        if recover:
            pid = body.get("pid")
            require(isinstance(pid, str) and re.fullmatch(r"[0-9a-f]{32}", pid), f"CONNECT answer should carry a pid (recovery is on by default): {short(ok)}")
            self.pid = pid
        else:
            require("pid" not in body, f"a client that sent recover: false gets no pid: {short(ok)}")
        return body

    def sio_connect(self):
        self.send("40")
        ok = self.expect(lambda t: t.startswith("40") or t.startswith("44"), "the CONNECT answer")
        body = self.connected(ok)
        self.expect_event("initial_state", "initial_state after CONNECT")
        return body

    def expect_error(self, what, pattern=None):
        """The next `error` event; returns its message."""
        args = self.expect_event("error", f"an error event for {what}")
        require(len(args) == 1 and isinstance(args[0], dict), f"error event should carry one object, got {short(args)}")
        msg = args[0].get("error")
        require(isinstance(msg, str) and msg, f"error event should be {{error: '...'}}, got {short(args)}")
        if pattern:
            require(re.search(pattern, msg, re.I), f"error message for {what} should match /{pattern}/: {short(msg)}")
        return msg

    def still_alive(self):
        """The socket still works: a request that always gets an answer."""
        self.send('42["start_log_stream",{"container_id":"dockwire-raw-no-such-container"}]')
        self.expect_error("a liveness probe (unknown container)")

    def close(self):
        try:
            self.ws.close(timeout=1)
        except Exception:  # noqa: BLE001
            pass


def event_name(text):
    if not text.startswith("42["):
        return None
    try:
        arr = json.loads(text[2:])
    except ValueError:
        return None
    return arr[0] if isinstance(arr, list) and arr and isinstance(arr[0], str) else None


def http_get(base, path_query, upgrade=False, timeout=5):
    """(status, body) of a raw HTTP/1.1 GET; with upgrade, a WebSocket handshake."""
    u = urllib.parse.urlsplit(base)
    host, port = u.hostname, u.port or 80
    lines = [f"GET {path_query} HTTP/1.1", f"Host: {host}:{port}", "Connection: close" if not upgrade else "Connection: Upgrade"]
    if upgrade:
        lines += ["Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
    req = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(req)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
                if upgrade and head.startswith(b"HTTP/1.1 101"):
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        raise CheckFailed(f"no HTTP status line in the answer to {path_query}: {short(data)}")
    return int(m.group(1)), body.decode("utf-8", "replace")


# ---------------------------------------------------------------- checks


def check_open_packet(ctx):
    r = Raw(ctx.ws)
    try:
        o = r.open
        require(isinstance(o.get("sid"), str) and o["sid"], f"OPEN sid should be a non-empty string: {o}")
        require(o.get("upgrades") == [], f"OPEN upgrades should be [] on a websocket-only server: {o}")
        for k in ("pingInterval", "pingTimeout", "maxPayload"):
            require(isinstance(o.get(k), int) and o[k] > 0, f"OPEN {k} should be a positive integer: {o}")
        if ctx.args.ping_interval_ms is not None:
            require(o["pingInterval"] == ctx.args.ping_interval_ms, f"pingInterval should be {ctx.args.ping_interval_ms} (config), got {o['pingInterval']}")
        if ctx.args.ping_timeout_ms is not None:
            require(o["pingTimeout"] == ctx.args.ping_timeout_ms, f"pingTimeout should be {ctx.args.ping_timeout_ms} (config), got {o['pingTimeout']}")
        ctx.open = o
        sid = r.sio_connect()
        return f"OPEN {json.dumps(o)}; CONNECT -> 40{json.dumps(sid)}"
    finally:
        r.close()


def check_connect_with_auth_object(ctx):
    r = Raw(ctx.ws)
    try:
        r.send('40{"token":"ignored-when-auth-is-off"}')
        ok = r.expect(lambda t: t.startswith("40") or t.startswith("44"), "the CONNECT answer")
        require(ok.startswith("40{"), f"CONNECT with an auth object should succeed when auth is off: {short(ok)}")
        r.connected(ok)
        r.expect_event("initial_state", "initial_state")
    finally:
        r.close()
    # Opting out of recovery: the wire has no pid and no offsets.
    r = Raw(ctx.ws)
    try:
        r.send('40{"recover":false}')
        ok = r.expect(lambda t: t.startswith("40") or t.startswith("44"), "the CONNECT answer")
        r.connected(ok, recover=False)
        args = r.expect_event("initial_state", "initial_state")
        require(len(args) == 1 and isinstance(args[0], dict), f"without recovery initial_state is one object: {short(args)}")
    finally:
        r.close()


def check_bad_eio_type(ctx):
    r = Raw(ctx.ws)
    try:
        r.sio_connect()
        r.send("9garbage")
        msg = r.expect_error("an unknown Engine.IO packet type", r"engine\.io|packet")
        r.still_alive()
        return f"error {msg!r}, socket still open"
    finally:
        r.close()


def check_malformed_json(ctx):
    r = Raw(ctx.ws)
    try:
        r.sio_connect()
        r.send('42["start_log_stream",{"container_id":')
        msg = r.expect_error("malformed event JSON", r"malformed|json|invalid")
        r.still_alive()
        return f"error {msg!r}, socket still open"
    finally:
        r.close()


def check_binary_event(ctx):
    r = Raw(ctx.ws)
    try:
        r.sio_connect()
        # What socket.io-client sends for emit("bin", Buffer): header text frame...
        r.send('451-["start_log_stream",{"_placeholder":true,"num":0}]')
        msg = r.expect_error("a BINARY_EVENT", r"binary")
        r.still_alive()
        return f"error {msg!r}, socket still open"
    finally:
        r.close()


def check_bad_requests(ctx):
    r = Raw(ctx.ws)
    try:
        r.sio_connect()
        out = []
        for frame, what, pattern in [
            ('42["start_log_stream",{}]', "start_log_stream without container_id", r"container"),
            ('42["no_such_event",{"x":1}]', "an unknown event", r"unknown|no_such_event|unsupported"),
            ('42["connect"]', "a reserved event name", None),
            ("43[1]", "an ACK without id", None),
            ("4", "an empty Socket.IO packet", None),
            ('44{"message":"x"}', "a CONNECT_ERROR from the client", None),
        ]:
            r.send(frame)
            out.append(r.expect_error(what, pattern))
        r.still_alive()
        return f"{len(out)} errors, socket still open"
    finally:
        r.close()


def check_event_before_connect(ctx):
    r = Raw(ctx.ws)
    try:
        r.send('42["start_log_stream",{"container_id":"x"}]')
        ans = r.expect(lambda t: t.startswith("44") or event_name(t) == "error", "a refusal of an event sent before CONNECT")
        if ans.startswith("44"):
            require(ans.startswith("44{"), f"refusal should be on the default namespace: {short(ans)}")
            require(isinstance(json.loads(ans[2:]).get("message"), str), f"CONNECT_ERROR should carry {{message}}: {short(ans)}")
        leaked = [t for t in r.seen if event_name(t) in ("initial_state", "log_update", "connection_established")]
        require(not leaked, f"a socket that never sent CONNECT got data: {short(leaked)}")
        r.sio_connect()
        return f"refused with {short(ans)}; CONNECT still works afterwards"
    finally:
        r.close()


def check_unknown_namespace(ctx):
    r = Raw(ctx.ws)
    try:
        r.send("40/nope,")
        ans = r.expect(lambda t: t.startswith("4"), "the answer to CONNECT /nope")
        require(ans.startswith("44/nope,{"), f"CONNECT /nope should be answered 44/nope,{{message}}, got {short(ans)}")
        body = json.loads(ans[len("44/nope,"):])
        require(isinstance(body.get("message"), str) and body["message"], f"CONNECT_ERROR should carry a message: {short(ans)}")
        r.sio_connect()
        return f"{ans}; CONNECT / still works afterwards"
    finally:
        r.close()


def check_engine_close(ctx):
    r = Raw(ctx.ws)
    try:
        r.sio_connect()
        r.send("1")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            kind, _ = r.next(deadline - time.monotonic())
            if kind in ("close", "eof"):
                return "Engine.IO CLOSE -> connection closed"
        raise CheckFailed("the server kept the connection open for 5 s after an Engine.IO CLOSE (1)")
    finally:
        r.close()


def check_heartbeat(ctx):
    o = ctx.open
    if o is None:
        raise CheckFailed("no OPEN packet seen (the first check failed)")
    interval, timeout = o["pingInterval"] / 1000, o["pingTimeout"] / 1000
    if interval + timeout > 10:
        return f"SKIP: pingInterval+pingTimeout = {interval + timeout:.0f} s (run with [socketio] ping_interval/ping_timeout of 1s)"
    # Answering pings keeps the session alive well past interval + timeout.
    r = Raw(ctx.ws)
    try:
        r.sio_connect()
        t0 = time.monotonic()
        hold = 2 * (interval + timeout) + 1
        while time.monotonic() - t0 < hold:
            kind, text = r.next(hold - (time.monotonic() - t0))
            require(kind in ("text", "timeout"), f"server closed a session that answered every ping ({kind} {text}) after {time.monotonic() - t0:.1f} s")
        require(len(r.pings) >= 2, f"expected at least 2 pings in {hold:.1f} s with pingInterval {interval} s, got {len(r.pings)}")
        gaps = [b - a for a, b in zip(r.pings, r.pings[1:])]
        require(all(g < interval * 1.5 + 0.5 for g in gaps), f"pings should come every {interval} s, gaps were {gaps}")
        r.still_alive()
    finally:
        r.close()
    # Not answering gets the session closed within interval + timeout (+ slack).
    r = Raw(ctx.ws, answer_pings=False)
    try:
        r.sio_connect()
        t0 = time.monotonic()
        limit = interval + timeout + 3
        while True:
            left = limit - (time.monotonic() - t0)
            require(left > 0, f"a session that never answered pings was still open after {limit:.1f} s (pings seen: {len(r.pings)})")
            kind, code = r.next(left)
            if kind in ("close", "eof"):
                took = time.monotonic() - t0
                require(r.pings, "the server closed the session without ever pinging it")
                return f"pongs keep it open; missed pong -> {kind} {code} after {took:.1f} s"
    finally:
        r.close()


def check_http_refusals(ctx):
    out = []
    for query, upgrade, what in [
        ("EIO=4&transport=polling", False, "long-polling"),
        ("EIO=4&transport=polling", True, "a websocket upgrade with transport=polling"),
        ("EIO=3&transport=websocket", True, "Engine.IO v3 (EIO=3) over websocket"),
        ("EIO=3&transport=polling", False, "Engine.IO v3 long-polling"),
        ("transport=websocket", True, "a missing EIO parameter"),
    ]:
        status, body = http_get(ctx.base, f"/socket.io/?{query}", upgrade=upgrade)
        require(400 <= status < 500, f"{what} should be refused with a 4xx, got {status} {short(body)}")
        require(re.search(r"websocket|engine\.io v4|EIO=4", body, re.I), f"the refusal of {what} should say that only Engine.IO v4 over websocket is served: {status} {short(body)}")
        out.append(f"{query}{' (upgrade)' if upgrade else ''} -> {status}")
    return "; ".join(out)


CHECKS = [
    ("open packet and CONNECT", check_open_packet),
    ("CONNECT with an auth object", check_connect_with_auth_object),
    ("unknown Engine.IO packet type", check_bad_eio_type),
    ("malformed JSON event", check_malformed_json),
    ("binary attachment refused", check_binary_event),
    ("bad requests get errors", check_bad_requests),
    ("event before CONNECT", check_event_before_connect),
    ("unknown namespace", check_unknown_namespace),
    ("Engine.IO CLOSE", check_engine_close),
    ("heartbeat and missed pong", check_heartbeat),
    ("polling and EIO=3 refused over HTTP", check_http_refusals),
]


class Ctx:
    def __init__(self, args):
        self.args = args
        self.base = args.url.rstrip("/")
        self.ws = re.sub(r"^http", "ws", self.base)
        self.open = None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--ping-interval-ms", type=int)
    p.add_argument("--ping-timeout-ms", type=int)
    args = p.parse_args()
    watchdog = threading.Timer(HARD_LIMIT_S, lambda: (print(f"FAIL {TAG}: hard timeout of {HARD_LIMIT_S:.0f} s reached", flush=True), os._exit(1)))
    watchdog.daemon = True
    watchdog.start()
    ctx = Ctx(args)
    passed = failed = 0
    for name, fn in CHECKS:
        try:
            detail = fn(ctx)
            print(f"PASS {TAG}: {name}" + (f" ({detail})" if detail else ""), flush=True)
            passed += 1
        except CheckFailed as e:
            print(f"FAIL {TAG}: {name}: {e}", flush=True)
            failed += 1
        except Exception as e:  # noqa: BLE001 - an unexpected error is a failed check, not a crash
            print(f"FAIL {TAG}: {name}: unexpected {e!r}", flush=True)
            failed += 1
    print(f"{TAG}: {passed} passed, {failed} failed", flush=True)
    os._exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
