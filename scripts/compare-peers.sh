#!/usr/bin/env bash
# scripts/compare-peers.sh — dockwire and the comparison peers under the same
# fan-out load, in one run, and the comparison as a table with ratios.
#
# What it does:
#   1. builds dockwire and dockwire-loadtest (release), the tokio-tungstenite
#      peer (standalone Cargo project, target dir target/peers), the Node
#      socket.io peer (`npm ci`) and the python-socketio + eventlet peer
#      (venv in target/peers/venv);
#   2. for each server in turn: starts it pinned to core 0 (`taskset -c 0`),
#      runs `dockwire-loadtest fanout` pinned to core 1 with --json, stops it;
#      dockwire gets a temp config with one [[agents]] key (stored as its
#      sha256, via sha256sum) and is fed by an agent publishing `log` messages
#      to subscribers on /api/v1/ws/logs/{server_id}; the peers run the relay
#      of loadtest/peers/README.md;
#   3. prints `dockwire-loadtest compare`: deliveries/s, deliveries per server
#      CPU-second, p50/p99/p99.9, RSS per connection, ratios against dockwire.
#
# Environment (defaults in brackets):
#   SUBSCRIBERS [1000]  RATE [100] msgs/s  PAYLOAD [100] bytes  DURATION [20s]
#   PEERS ["dockwire tokio-tungstenite node-socketio python-socketio"]
#   OUT [target/peers/results-<date>]: where the JSON reports go
#   EXTRA_ARGS: more flags for every loadtest run (e.g. "--busy-poll")
# A peer whose toolchain is missing (node, python3 venv) is skipped with a note.
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

SUBSCRIBERS=${SUBSCRIBERS:-1000}
RATE=${RATE:-100}
PAYLOAD=${PAYLOAD:-100}
DURATION=${DURATION:-20s}
PEERS=${PEERS:-"dockwire tokio-tungstenite node-socketio python-socketio"}
OUT=${OUT:-$REPO/target/peers/results-$(date +%Y%m%d-%H%M%S)}
read -r -a EXTRA <<<"${EXTRA_ARGS:-}"
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/compare-peers.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(nproc)" -lt 2 ]; then
    echo "compare-peers: needs 2 cores (server on core 0, load on core 1)" >&2
    exit 1
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    local i
    for ((i = 0; i < 300; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

echo "== building"
timeout 2400 cargo build --release -p dockwire -p dockwire-loadtest
LOADTEST=$REPO/target/release/dockwire-loadtest
want() { [[ " $PEERS " == *" $1 "* ]]; }
if want tokio-tungstenite; then
    timeout 1200 cargo build --release --manifest-path loadtest/peers/tokio-tungstenite/Cargo.toml \
        --target-dir "$REPO/target/peers"
fi
HAVE_NODE=0
if want node-socketio && command -v node >/dev/null && command -v npm >/dev/null; then
    (cd loadtest/peers/node-socketio && timeout 600 npm ci --no-audit --no-fund) && HAVE_NODE=1
fi
HAVE_PY=0
if want python-socketio && command -v python3 >/dev/null; then
    VENV=$REPO/target/peers/venv
    if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
    timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check \
        -r loadtest/peers/python-socketio/requirements.txt && HAVE_PY=1
fi

# measure NAME PORT LOADTEST-ARGS...: the server is already running as SERVER_PID.
REPORTS=()
measure() {
    local name=$1 port=$2
    shift 2
    if ! wait_port "$port"; then
        echo "compare-peers: $name did not listen on $port; skipped" >&2
        stop_server
        return 0
    fi
    echo "== $name (pid $SERVER_PID) : $SUBSCRIBERS subscribers x $RATE msgs/s, $PAYLOAD B, $DURATION"
    if taskset -c 1 timeout -k 10 600 "$LOADTEST" fanout "$@" --target "127.0.0.1:$port" \
        --server-pid "$SERVER_PID" --label "$name" --subscribers "$SUBSCRIBERS" --rate "$RATE" \
        --payload "$PAYLOAD" --duration "$DURATION" --procs 1 "${EXTRA[@]}" --json \
        >"$OUT/$name.json"; then
        REPORTS+=("$name=$OUT/$name.json")
    else
        echo "compare-peers: the $name run failed" >&2
    fi
    stop_server
}

if want dockwire; then
    port=$(free_port)
    key="compare-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    cat >"$WORK/dockwire.toml" <<EOF
listen = "127.0.0.1:$port"

[docker]
host = "unix://$WORK/no-docker.sock"

[[agents]]
name = "compare-publisher"
key_sha256 = "$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)"
EOF
    taskset -c 0 "$REPO/target/release/dockwire" serve --config "$WORK/dockwire.toml" \
        >"$OUT/dockwire.log" 2>&1 &
    SERVER_PID=$!
    measure dockwire "$port" --api-key "$key"
fi

if want tokio-tungstenite; then
    port=$(free_port)
    taskset -c 0 "$REPO/target/peers/release/peer-tokio-tungstenite" "127.0.0.1:$port" \
        >"$OUT/tokio-tungstenite.log" 2>&1 &
    SERVER_PID=$!
    measure tokio-tungstenite "$port" --peer ws-relay
fi

if want node-socketio; then
    if [ "$HAVE_NODE" = 1 ]; then
        port=$(free_port)
        taskset -c 0 node loadtest/peers/node-socketio/server.js "$port" >"$OUT/node-socketio.log" 2>&1 &
        SERVER_PID=$!
        measure node-socketio "$port" --peer socketio
    else
        echo "compare-peers: node-socketio skipped (node/npm missing or npm ci failed)" >&2
    fi
fi

if want python-socketio; then
    if [ "$HAVE_PY" = 1 ]; then
        port=$(free_port)
        taskset -c 0 "$VENV/bin/python" loadtest/peers/python-socketio/server.py "$port" \
            >"$OUT/python-socketio.log" 2>&1 &
        SERVER_PID=$!
        measure python-socketio "$port" --peer socketio
    else
        echo "compare-peers: python-socketio skipped (venv or pip install failed)" >&2
    fi
fi

echo
echo "== comparison ($SUBSCRIBERS subscribers x $RATE msgs/s, ${PAYLOAD}-byte payload, $DURATION;" \
    "server on core 0, load on core 1; reports in $OUT)"
if [ ${#REPORTS[@]} -eq 0 ]; then
    echo "compare-peers: no run produced a report" >&2
    exit 1
fi
"$LOADTEST" compare "${REPORTS[@]}" | tee "$OUT/comparison.txt"
