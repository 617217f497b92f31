"""Comparison peer for `dockwire-loadtest fanout --peer socketio`.

The relay contract of ../README.md on python-socketio + eventlet (the stack
of the first seed): a client emits `publish` with an object, the server
emits `message` with the same object to every other connected client.
WebSocket transport only. Usage: python server.py [PORT] [HOST] (loopback only).
"""

import sys

import eventlet

eventlet.monkey_patch()

import socketio  # noqa: E402  (must come after monkey_patch)

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 9003
HOST = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
if not (HOST.startswith("127.") or HOST in ("::1", "localhost")):
    sys.exit(f"refusing to listen on non-loopback {HOST}")

sio = socketio.Server(async_mode="eventlet", transports=["websocket"], cors_allowed_origins=None)
app = socketio.WSGIApp(sio)


@sio.on("publish")
def publish(sid, data):
    sio.emit("message", data, skip_sid=sid)


if __name__ == "__main__":
    listener = eventlet.listen((HOST, PORT), backlog=4096)
    print(f"python-socketio relay listening on {HOST}:{PORT}", file=sys.stderr)
    # max_size: eventlet's default caps the server at 1024 green threads (connections).
    eventlet.wsgi.server(listener, app, log_output=False, max_size=100_000)
