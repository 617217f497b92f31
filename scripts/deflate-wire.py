#!/usr/bin/env python3
# scripts/deflate-wire.py HOST PORT CONTAINER SECONDS — docs/performance.md, "Compression (issue 12)".
# Bytes on the wire per log line: one plain and one deflate socket on /api/v1/ws
# follow the same container for SECS seconds; stdlib only (zlib for inflating).
import base64, json, os, socket, sys, time, zlib
host, port, container, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])

def opened(deflate):
    s = socket.create_connection((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
    s.sendall(f"GET /api/v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert (b"permessage-deflate" in head) == deflate, head
    msg = json.dumps({"type": "start_log_stream", "container_id": container, "tail": 0}).encode()
    mask = os.urandom(4)
    hdr = bytes([0x81, 0x80 | 126]) + len(msg).to_bytes(2, "big") if len(msg) >= 126 else bytes([0x81, 0x80 | len(msg)])
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
        if b0 & 0x0F != 1: continue
        if b0 & 0x40:
            c["rsv1"] += 1
            d = zlib.decompressobj(-15)
            payload = d.decompress(payload + b"\x00\x00\xff\xff")
        m = json.loads(payload)
        if m.get("type") == "log_update" and c["counting"]:
            c["frames"] += 1
            c["lines"] += m["log"].count("\n")
    c["buf"] = b

plain, zipped = opened(False), opened(True)
t0 = time.time()
while time.time() < t0 + 1.0:  # settle: history and the first frames
    pump(plain); pump(zipped); time.sleep(0.01)
plain["counting"] = zipped["counting"] = True
while time.time() < t0 + 1.0 + secs:
    pump(plain); pump(zipped); time.sleep(0.005)
for name, c in (("plain", plain), ("deflate", zipped)):
    per = c["wire"] / max(c["lines"], 1)
    print(f"{name}: {c['lines']} lines in {c['frames']} frames ({c['rsv1']} compressed), {c['wire']} bytes on the wire, {per:.1f} B/line")
print(f"ratio deflate/plain: {(zipped['wire'] / max(zipped['lines'],1)) / (plain['wire'] / max(plain['lines'],1)):.3f}")
