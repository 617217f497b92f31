#!/usr/bin/env bash
# tests/clients/tls.sh — browsers' clients over TLS (SPEC 10) against the real
# dockwire binary: a TLS daemon with a certificate signed by a CA made here
# (openssl), then
#
#   python   websocket-client with an SSL context trusting that CA: wss://
#            /api/v1/ws answers list_servers; the system's roots alone refuse
#            the hub (certificate verify failed)
#   node     the official socket.io-client with `ca`: connects over wss://,
#            emits list_servers and gets servers; without `ca` it is refused
#   https    Python's urllib with the CA: GET /healthz is 200 over TLS
#   reload   an RSA certificate written over the ECDSA one, SIGHUP: new
#            connections get it, and the Python client works again
#
# Env (required): DOCKWIRE_BIN. Optional: PYTHON, NODE. Exits non-zero on any
# failure, after a closing "tls: N passed, N failed" line. Every step has a
# time limit; the daemon is stopped on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${DOCKWIRE_BIN:?set DOCKWIRE_BIN to the dockwire binary}"
PYTHON=${PYTHON:-python3}
NODE=${NODE:-node}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dockwire-tls.XXXXXX")
DLOG=$TMP/daemon.log
DAEMON_PID=""
PASSED=0
FAILED=0

log() { printf '[tls.sh] %s\n' "$*"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$DAEMON_PID" ]; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$DLOG" ]; then
        log "last lines of the dockwire log:"
        tail -30 "$DLOG" | sed 's/^/    /'
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v openssl >/dev/null; then
    log "installing openssl (apt-get)"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q openssl >/dev/null
fi
if [ ! -d "$HERE/node_modules/socket.io-client" ]; then
    (cd "$HERE" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
fi
if ! "$PYTHON" -c 'import websocket' 2>/dev/null; then
    timeout 600 "$PYTHON" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
fi

# ---- certificates: a CA, and a localhost/127.0.0.1 leaf it signs -------------
(
    cd "$TMP"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 1 -subj "/CN=dockwire tls.sh CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout key.pem -out leaf.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 1 -extfile leaf.ext -out leaf.pem 2>/dev/null
    cat leaf.pem ca.pem >chain.pem
)

# ---- daemon -------------------------------------------------------------------
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$TMP/dockwire.toml" <<EOF
listen = "127.0.0.1:$PORT"
[docker]
host = "unix://$TMP/no-docker.sock"
[tls]
cert_file = "$TMP/chain.pem"
key_file = "$TMP/key.pem"
EOF
"$DOCKWIRE_BIN" serve --config "$TMP/dockwire.toml" >"$DLOG" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 100); do
    if "$PYTHON" - "$PORT" "$TMP/ca.pem" 2>/dev/null <<'PY'; then break; fi
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
urllib.request.urlopen(f"https://localhost:{sys.argv[1]}/healthz", context=ctx, timeout=2)
PY
    kill -0 "$DAEMON_PID" 2>/dev/null || { log "FAIL: dockwire exited during startup"; exit 1; }
    sleep 0.2
done
log "dockwire pid $DAEMON_PID on https://localhost:$PORT"

step() { # step NAME FN: run FN (its clients have time limits), count, never abort
    local name=$1
    shift
    if "$@" >"$TMP/step.out" 2>&1; then
        PASSED=$((PASSED + 1))
        log "PASS $name"
        sed 's/^/    /' "$TMP/step.out"
    else
        FAILED=$((FAILED + 1))
        log "FAIL $name:"
        sed 's/^/    /' "$TMP/step.out"
    fi
}

py_https() {
    timeout -k 5 60 "$PYTHON" - "$PORT" "$TMP/ca.pem" <<'PY'
import json, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
with urllib.request.urlopen(f"https://localhost:{sys.argv[1]}/healthz", context=ctx, timeout=5) as r:
    assert r.status == 200, r.status
    assert json.load(r)["status"] == "ok"
    print("healthz over TLS", r.status)
PY
}

py_wss() {
    timeout -k 5 60 "$PYTHON" - "$PORT" "$TMP/ca.pem" <<'PY'
import json, ssl, sys, websocket
port, ca = sys.argv[1], sys.argv[2]
url = f"wss://localhost:{port}/api/v1/ws"
ws = websocket.create_connection(url, sslopt={"ca_certs": ca}, timeout=10)
ws.send(json.dumps({"type": "list_servers", "request_id": "py"}))
while True:
    m = json.loads(ws.recv())
    if m.get("type") == "servers":
        assert m["request_id"] == "py", m
        assert any(s.get("local") for s in m["servers"]), m
        break
ws.close()
# Without the CA (the system's roots only) the hub is refused.
try:
    websocket.create_connection(url, timeout=10)
except ssl.SSLCertVerificationError as e:
    print("refused without the CA:", e.reason)
else:
    raise SystemExit("connected without trusting the CA")
PY
}

node_sio() {
    (cd "$HERE" && timeout -k 5 60 "$NODE" --input-type=module - "$PORT" "$TMP/ca.pem") <<'JS'
import { readFileSync } from "node:fs";
import { io } from "socket.io-client";
const [port, caFile] = process.argv.slice(2);
const url = `https://localhost:${port}`;
const ca = readFileSync(caFile);
const timer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 20000);
function once(opts) {
  return new Promise((resolve, reject) => {
    const s = io(url, { transports: ["websocket"], reconnection: false, ...opts });
    s.on("connect_error", (e) => { s.close(); reject(e); });
    s.on("connect", () => {
      s.emit("list_servers", { request_id: "node" });
      s.on("servers", (m) => { s.close(); resolve(m); });
    });
  });
}
const m = await once({ ca });
if (m.request_id !== "node" || !Array.isArray(m.servers)) throw new Error(JSON.stringify(m));
console.log("socket.io over wss:", m.servers.length, "server(s)");
try {
  await once({});
  throw new Error("connected without trusting the CA");
} catch (e) {
  if (String(e.message).includes("without trusting")) throw e;
  console.log("refused without the CA:", e.message);
}
clearTimeout(timer);
JS
}

# An RSA certificate from the same CA, at the same paths, served after a
# SIGHUP (the reload reads the files again).
rsa_after_reload() {
    (
        cd "$TMP"
        openssl req -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.csr -subj "/CN=localhost" 2>/dev/null
        openssl x509 -req -in rsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 1 -extfile leaf.ext -out rsa.pem 2>/dev/null
        cat rsa.pem ca.pem >chain.pem
        cp rsa.key key.pem
    )
    local before
    before=$(grep -c "config reloaded" "$DLOG" || true)
    kill -HUP "$DAEMON_PID"
    for _ in $(seq 1 100); do
        [ "$(grep -c "config reloaded" "$DLOG" || true)" -gt "$before" ] && break
        sleep 0.1
    done
    [ "$(grep -c "config reloaded" "$DLOG" || true)" -gt "$before" ] || { echo "no reload logged"; return 1; }
    timeout -k 5 60 "$PYTHON" - "$PORT" "$TMP/ca.pem" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        cipher = s.cipher()
        print("after reload:", s.version(), cipher[0])
        der = s.getpeercert(binary_form=True)
        # An RSA certificate carries the rsaEncryption OID 1.2.840.113549.1.1.1.
        assert bytes.fromhex("2a864886f70d010101") in der, "not the RSA certificate"
PY
}

step "https: GET /healthz with the CA" py_https
step "python websocket-client over wss:// (and refused without the CA)" py_wss
step "node socket.io-client over wss:// with ca (and refused without)" node_sio
step "an RSA certificate served after SIGHUP" rsa_after_reload
step "python websocket-client over wss:// with the RSA certificate" py_wss

log "tls: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
