#!/usr/bin/env bash
# scripts/compare-peers.sh — dockwire and the comparison peers under the same
# fan-out load, in one run, and the comparison as a table with ratios.
#
# What it does:
#   1. builds dockwire and dockwire-loadtest (release, in $CARGO_TARGET_DIR or
#      target/), the tokio-tungstenite peer (standalone Cargo project, target
#      dir <target>/peers), the Node socket.io peer (`npm ci`) and the
#      python-socketio + eventlet peer (venv in <target>/peers/venv);
#   2. for each server in turn, in the order of PEERS: starts it pinned to
#      core 0 (`taskset -c 0`), runs `dockwire-loadtest fanout` pinned to
#      core 1 with --json, stops it; dockwire gets a temp config with one
#      [[agents]] key (stored as its sha256, via sha256sum) and is fed by an
#      agent publishing `log` messages to subscribers on
#      /api/v1/ws/logs/{server_id}; dockwire-baseline is the same run (same
#      config and key, same agent feed, same pinning) with the binary in
#      DOCKWIRE_BASELINE_BIN, e.g. an older build, so that
#      PEERS="dockwire-baseline dockwire" compares two builds in one run; the
#      peers run the relay of loadtest/peers/README.md;
#   3. prints `dockwire-loadtest compare`: deliveries/s, deliveries per server
#      CPU-second, p50/p99/p99.9, RSS per connection, ratios against the first
#      peer that produced a report.
#
# Environment (defaults in brackets):
#   SUBSCRIBERS [1000]  RATE [100] msgs/s  PAYLOAD [100] bytes  DURATION [20s]
#   PEERS ["dockwire tokio-tungstenite node-socketio python-socketio"]; also
#     dockwire-baseline (needs DOCKWIRE_BASELINE_BIN)
#   DOCKWIRE_BASELINE_BIN: the dockwire binary the dockwire-baseline peer runs
#   CARGO_TARGET_DIR [target]: where dockwire, dockwire-loadtest and the Rust
#     peer are built and looked for (release/ below it); the load generator
#     is always <target>/release/dockwire-loadtest
#   NO_BUILD [0]: 1 runs the binaries already in the target dir as they are
#     (no cargo build; npm ci and the venv still run for their peers)
#   OUT [<target>/peers/results-<date>]: where the JSON reports go
#   EXTRA_ARGS: more flags for every loadtest run (e.g. "--busy-poll")
# A peer whose toolchain is missing (node, python3 venv, no baseline binary)
# is skipped with a note.
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# cargo reads a relative CARGO_TARGET_DIR against the caller's directory.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case $CARGO_TARGET_DIR in
        /*) ;;
        *) CARGO_TARGET_DIR=$PWD/$CARGO_TARGET_DIR ;;
    esac
    export CARGO_TARGET_DIR
fi
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

SUBSCRIBERS=${SUBSCRIBERS:-1000}
RATE=${RATE:-100}
PAYLOAD=${PAYLOAD:-100}
DURATION=${DURATION:-20s}
PEERS=${PEERS:-"dockwire tokio-tungstenite node-socketio python-socketio"}
NO_BUILD=${NO_BUILD:-0}
BASELINE_BIN=${DOCKWIRE_BASELINE_BIN:-}
OUT=${OUT:-$TARGET/peers/results-$(date +%Y%m%d-%H%M%S)}
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

DOCKWIRE=$TARGET/release/dockwire
LOADTEST=$TARGET/release/dockwire-loadtest
TUNGSTENITE=$TARGET/peers/release/peer-tokio-tungstenite
want() { [[ " $PEERS " == *" $1 "* ]]; }
if [ "$NO_BUILD" = 1 ]; then
    echo "== not building (NO_BUILD=1): binaries from $TARGET"
else
    echo "== building (target dir $TARGET)"
    timeout 2400 cargo build --release -p dockwire -p dockwire-loadtest
    if want tokio-tungstenite; then
        timeout 1200 cargo build --release --manifest-path loadtest/peers/tokio-tungstenite/Cargo.toml \
            --target-dir "$TARGET/peers"
    fi
fi
if [ ! -x "$LOADTEST" ]; then
    echo "compare-peers: no load generator at $LOADTEST" >&2
    exit 1
fi
HAVE_NODE=0
if want node-socketio && command -v node >/dev/null && command -v npm >/dev/null; then
    (cd loadtest/peers/node-socketio && timeout 600 npm ci --no-audit --no-fund) && HAVE_NODE=1
fi
HAVE_PY=0
if want python-socketio && command -v python3 >/dev/null; then
    VENV=$TARGET/peers/venv
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

# One agent key for every dockwire run, so dockwire and dockwire-baseline get
# the same config apart from the port.
KEY="compare-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# run_dockwire NAME BINARY: the dockwire run (agent feed) with that binary.
run_dockwire() {
    local name=$1 bin=$2 port
    port=$(free_port)
    cat >"$WORK/$name.toml" <<EOF
listen = "127.0.0.1:$port"

[docker]
host = "unix://$WORK/no-docker.sock"

[[agents]]
name = "compare-publisher"
key_sha256 = "$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)"
EOF
    taskset -c 0 "$bin" serve --config "$WORK/$name.toml" >"$OUT/$name.log" 2>&1 &
    SERVER_PID=$!
    measure "$name" "$port" --api-key "$KEY"
}

for peer in $PEERS; do
    case $peer in
        dockwire)
            run_dockwire dockwire "$DOCKWIRE"
            ;;
        dockwire-baseline)
            if [ -n "$BASELINE_BIN" ] && [ -x "$BASELINE_BIN" ]; then
                echo "== dockwire-baseline is $BASELINE_BIN"
                run_dockwire dockwire-baseline "$BASELINE_BIN"
            else
                echo "compare-peers: dockwire-baseline skipped (DOCKWIRE_BASELINE_BIN unset or not executable)" >&2
            fi
            ;;
        tokio-tungstenite)
            port=$(free_port)
            taskset -c 0 "$TUNGSTENITE" "127.0.0.1:$port" >"$OUT/tokio-tungstenite.log" 2>&1 &
            SERVER_PID=$!
            measure tokio-tungstenite "$port" --peer ws-relay
            ;;
        node-socketio)
            if [ "$HAVE_NODE" = 1 ]; then
                port=$(free_port)
                taskset -c 0 node loadtest/peers/node-socketio/server.js "$port" >"$OUT/node-socketio.log" 2>&1 &
                SERVER_PID=$!
                measure node-socketio "$port" --peer socketio
            else
                echo "compare-peers: node-socketio skipped (node/npm missing or npm ci failed)" >&2
            fi
            ;;
        python-socketio)
            if [ "$HAVE_PY" = 1 ]; then
                port=$(free_port)
                taskset -c 0 "$VENV/bin/python" loadtest/peers/python-socketio/server.py "$port" \
                    >"$OUT/python-socketio.log" 2>&1 &
                SERVER_PID=$!
                measure python-socketio "$port" --peer socketio
            else
                echo "compare-peers: python-socketio skipped (venv or pip install failed)" >&2
            fi
            ;;
        *)
            echo "compare-peers: unknown peer $peer; skipped" >&2
            ;;
    esac
done

echo
echo "== comparison ($SUBSCRIBERS subscribers x $RATE msgs/s, ${PAYLOAD}-byte payload, $DURATION;" \
    "server on core 0, load on core 1; reports in $OUT)"
if [ ${#REPORTS[@]} -eq 0 ]; then
    echo "compare-peers: no run produced a report" >&2
    exit 1
fi
"$LOADTEST" compare "${REPORTS[@]}" | tee "$OUT/comparison.txt"
