#!/usr/bin/env python3
# scripts/deflate-wire.py HOST PORT CONTAINER SECONDS — docs/performance.md, "Compression (issue 12)"
# and "Filters and MessagePack (issue 17)".
# Bytes on the wire per log line: four /api/v1/ws sockets (JSON and MessagePack,
# each plain and with permessage-deflate) follow the same container for SECS
# seconds; stdlib only (zlib for inflating, a small MessagePack reader).
import base64, json, os, socket, sys, time, zlib
host, port, container, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])

def unpack(b, i=0):
    """One MessagePack value at b[i:] -> (value, next index); the types the daemon writes."""
    t = b[i]
    if t <= 0x7F: return t, i + 1
    if t >= 0xE0: return t - 0x100, i + 1
    if 0x80 <= t <= 0x8F: return unpack_map(b, i + 1, t & 0x0F)
    if 0x90 <= t <= 0x9F: return unpack_array(b, i + 1, t & 0x0F)
    if 0xA0 <= t <= 0xBF: n = t & 0x1F; return b[i + 1:i + 1 + n].decode(), i + 1 + n
    if t == 0xC0: return None, i + 1
    if t in (0xC2, 0xC3): return t == 0xC3, i + 1
    if t in (0xD9, 0xDA, 0xDB):
        w = {0xD9: 1, 0xDA: 2, 0xDB: 4}[t]; n = int.from_bytes(b[i + 1:i + 1 + w], "big")
        return b[i + 1 + w:i + 1 + w + n].decode(), i + 1 + w + n
    if t in (0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD1, 0xD2, 0xD3):
        w = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}[t]
        return int.from_bytes(b[i + 1:i + 1 + w], "big", signed=t >= 0xD0), i + 1 + w
    if t in (0xCA, 0xCB):
        import struct; w = 4 if t == 0xCA else 8
        return struct.unpack(">f" if w == 4 else ">d", b[i + 1:i + 1 + w])[0], i + 1 + w
    if t in (0xDC, 0xDD):
        w = 2 if t == 0xDC else 4; return unpack_array(b, i + 1 + w, int.from_bytes(b[i + 1:i + 1 + w], "big"))
    if t in (0xDE, 0xDF):
        w = 2 if t == 0xDE else 4; return unpack_map(b, i + 1 + w, int.from_bytes(b[i + 1:i + 1 + w], "big"))
    raise ValueError(f"msgpack type {t:#x}")

def unpack_array(b, i, n):
    out = []
    for _ in range(n):
        v, i = unpack(b, i); out.append(v)
    return out, i

def unpack_map(b, i, n):
    out = {}
    for _ in range(n):
        k, i = unpack(b, i); v, i = unpack(b, i); out[k] = v
    return out, i

def opened(deflate, msgpack=False):
    s = socket.create_connection((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
    path = "/api/v1/ws?format=msgpack" if msgpack else "/api/v1/ws"
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert (b"permessage-deflate" in head) == deflate, head
    msg = json.dumps({"type": "start_log_stream", "container_id": container, "tail": 0}).encode()
    if msgpack:  # the same request as a MessagePack map, in a binary frame
        body = b"\x83"
        for k, v in (("type", "start_log_stream"), ("container_id", container), ("tail", 0)):
            for x in (k, v):
                if isinstance(x, int): body += bytes([x])
                else: e = x.encode(); body += bytes([0xD9, len(e)]) + e
        msg = body
    mask = os.urandom(4)
    op = 0x82 if msgpack else 0x81
    hdr = bytes([op, 0x80 | 126]) + len(msg).to_bytes(2, "big") if len(msg) >= 126 else bytes([op, 0x80 | len(msg)])
    s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
    s.setblocking(False)
    return {"s": s, "buf": rest, "wire": 0, "lines": 0, "frames": 0, "rsv1": 0, "counting": False}

def pump(c):
    try:
        while True:
            d = c["s"].recv(1 << 16)
            if not d:
                return
            if c["counting"]:
                c["wire"] += len(d)
            c["buf"] += d
    except BlockingIOError:
        pass
    b = c["buf"]
    while len(b) >= 2:
        n, skip = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4: break
            n, skip = int.from_bytes(b[2:4], "big"), 4
        elif n == 127:
            if len(b) < 10: break
            n, skip = int.from_bytes(b[2:10], "big"), 10
        if len(b) < skip + n: break
        b0, payload, b = b[0], b[skip:skip + n], b[skip + n:]
        if b0 & 0x0F not in (1, 2): continue
        if b0 & 0x40:
            c["rsv1"] += 1
            d = zlib.decompressobj(-15)
            payload = d.decompress(payload + b"\x00\x00\xff\xff")
        m = unpack(payload)[0] if b0 & 0x0F == 2 else json.loads(payload)
        if m.get("type") == "log_update" and c["counting"]:
            c["frames"] += 1
            c["lines"] += m["log"].count("\n")
    c["buf"] = b

socks = {"plain": opened(False), "deflate": opened(True),
         "msgpack": opened(False, True), "msgpack+deflate": opened(True, True)}
t0 = time.time()
while time.time() < t0 + 1.0:  # settle: history and the first frames
    for c in socks.values(): pump(c)
    time.sleep(0.01)
for c in socks.values(): c["counting"] = True
while time.time() < t0 + 1.0 + secs:
    for c in socks.values(): pump(c)
    time.sleep(0.005)
per = {name: c["wire"] / max(c["lines"], 1) for name, c in socks.items()}
for name, c in socks.items():
    print(f"{name}: {c['lines']} lines in {c['frames']} frames ({c['rsv1']} compressed), {c['wire']} bytes on the wire, {per[name]:.1f} B/line")
for name in ("deflate", "msgpack", "msgpack+deflate"):
    print(f"ratio {name}/plain: {per[name] / per['plain']:.3f}")
