#!/usr/bin/env bash
# tests/clients/socketio.sh — the Socket.IO dialect (SPEC §3.4) against the
# real dockwire binary and a real Docker engine, with external clients:
#
#   seed_frontend.mjs   the official socket.io-client, connecting like the seed
#                       (again with --msgpack: socket.io-msgpack-parser, SPEC 12)
#   seed_python.py      python-socketio's client
#   socketio_raw.py     protocol edge cases over a raw WebSocket
#   reconnect           seed_frontend.mjs --reconnect while this script
#                       restarts the daemon (SIGTERM, start again on the same
#                       port): the client must get connect + initial_state again
#   recover             recover.mjs: connection state recovery (auth.recover)
#                       after a dropped transport: recovered, missed events once
#   recover_restart     recover.mjs --restart across a daemon restart: a fresh
#                       session (recovered false)
#
# Env (required): DOCKWIRE_BIN (the dockwire binary), DOCKER_HOST,
# DOCKWIRE_TEST_IMAGE (busybox image; see scripts/docker-env.sh).
# Optional: PYTHON (default python3), NODE (default node).
#
# The daemon runs on a free loopback port with a temp config that sets
# [socketio] ping_interval = "1s" and ping_timeout = "1s" (so the missed-pong
# check is quick). Missing client deps are installed: `npm ci` here,
# `pip install -r requirements.txt` into $PYTHON. Every step has a time limit;
# everything started here is stopped on exit. Exits non-zero on any failure,
# after a closing "socketio: N passed, N failed" line.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${DOCKWIRE_BIN:?set DOCKWIRE_BIN to the dockwire binary}"
: "${DOCKER_HOST:?set DOCKER_HOST to the test Docker engine (scripts/docker-env.sh env)}"
: "${DOCKWIRE_TEST_IMAGE:?set DOCKWIRE_TEST_IMAGE to a busybox image (scripts/docker-env.sh env)}"
export DOCKER_HOST DOCKWIRE_TEST_IMAGE
PYTHON=${PYTHON:-python3}
NODE=${NODE:-node}
LABEL=dockwire.test=socketio-clients

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dockwire-sio.XXXXXX")
CFG=$TMP/dockwire.toml
DLOG=$TMP/daemon.log
DAEMON_PID=""
BG_PID=""
PASSED=0
FAILED=0

log() { printf '[socketio.sh] %s\n' "$*"; }

stop_daemon() { # stop_daemon [grace seconds]: SIGTERM, then SIGKILL after the grace
    local grace=${1:-5} i
    [ -n "$DAEMON_PID" ] || return 0
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        log "dockwire (pid $DAEMON_PID) still running ${grace}s after SIGTERM: SIGKILL"
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    local rc=0
    wait "$DAEMON_PID" 2>/dev/null || rc=$?
    DAEMON_PID=""
    return "$rc"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$BG_PID" ]; then kill "$BG_PID" 2>/dev/null || true; fi
    stop_daemon 2 || true
    local left
    left=$(docker ps -aq --filter "label=$LABEL" 2>/dev/null || true)
    if [ -n "$left" ]; then
        # shellcheck disable=SC2086  # one id per word
        docker rm -f $left >/dev/null 2>&1 || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$DLOG" ]; then
        log "last lines of the dockwire log ($DLOG):"
        tail -40 "$DLOG" | sed 's/^/    /'
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- client dependencies ----------------------------------------------------
if [ ! -d "$HERE/node_modules/socket.io-client" ] || [ ! -d "$HERE/node_modules/socket.io-msgpack-parser" ]; then
    log "installing socket.io-client and socket.io-msgpack-parser (npm ci)"
    (cd "$HERE" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
fi
if ! "$PYTHON" -c 'import socketio, websocket' 2>/dev/null; then
    log "installing Python clients (pip install -r requirements.txt)"
    timeout 600 "$PYTHON" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
fi

# ---- daemon -----------------------------------------------------------------
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
cat >"$CFG" <<EOF
listen = "127.0.0.1:$PORT"

[docker]
host = "$DOCKER_HOST"

[socketio]
ping_interval = "1s"
ping_timeout = "1s"
EOF

if ! "$DOCKWIRE_BIN" check-config --config "$CFG" >"$TMP/check-config.out" 2>&1; then
    log "FAIL: dockwire check-config refused the test config:"
    sed 's/^/    /' "$TMP/check-config.out"
    cat "$CFG"
    exit 1
fi

wait_healthy() { # wait until /healthz answers 200 with docker "up"
    local deadline=$((SECONDS + 30)) out=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            log "FAIL: dockwire exited during startup"
            return 1
        fi
        out=$("$PYTHON" -c 'import json, sys, urllib.request
print(json.load(urllib.request.urlopen(sys.argv[1], timeout=2)).get("docker"))' "$URL/healthz" 2>/dev/null || true)
        if [ "$out" = up ]; then return 0; fi
        sleep 0.2
    done
    log "FAIL: $URL/healthz did not report docker \"up\" within 30 s (last: ${out:-no answer})"
    return 1
}

start_daemon() {
    "$DOCKWIRE_BIN" serve --config "$CFG" >>"$DLOG" 2>&1 &
    DAEMON_PID=$!
    wait_healthy
}

start_daemon
log "dockwire pid $DAEMON_PID on $URL"

# ---- steps --------------------------------------------------------------------
step() { # step NAME CMD...: run, count, never abort the script
    local name=$1 rc=0
    shift
    log "---- $name"
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        log "PASS $name"
    else
        FAILED=$((FAILED + 1))
        log "FAIL $name (exit $rc)"
    fi
}

step seed_frontend timeout -k 5 150 "$NODE" "$HERE/seed_frontend.mjs" "$URL"
step seed_frontend_msgpack timeout -k 5 150 "$NODE" "$HERE/seed_frontend.mjs" "$URL" --msgpack
step seed_python timeout -k 5 120 "$PYTHON" "$HERE/seed_python.py" "$URL"
step socketio_raw timeout -k 5 150 "$PYTHON" "$HERE/socketio_raw.py" "$URL" \
    --ping-interval-ms 1000 --ping-timeout-ms 1000

step recover timeout -k 5 150 "$NODE" "$HERE/recover.mjs" "$URL"

reconnect() { # reconnect [SCRIPT FLAG]: the client runs while the daemon restarts
    local script=${1:-seed_frontend.mjs} flag=${2:---reconnect}
    local out=$TMP/reconnect.out i rc=0
    timeout -k 5 120 "$NODE" "$HERE/$script" "$URL" "$flag" >"$out" 2>&1 &
    BG_PID=$!
    for ((i = 0; i < 300; i++)); do
        grep -q READY_FOR_RESTART "$out" && break
        kill -0 "$BG_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q READY_FOR_RESTART "$out"; then
        log "the client never became ready:"
        sed 's/^/    /' "$out"
        kill "$BG_PID" 2>/dev/null || true
        BG_PID=""
        return 1
    fi
    local drc=0
    stop_daemon 5 || drc=$?
    if [ "$drc" -ne 0 ]; then
        log "dockwire exited $drc on SIGTERM (SPEC §1: exit 0 within 5 s)"
        rc=1
    fi
    sleep 1 # the client sees the daemon gone and starts its reconnection backoff
    start_daemon || rc=1
    log "dockwire restarted, pid $DAEMON_PID"
    wait "$BG_PID" || rc=$?
    BG_PID=""
    sed 's/^/    /' "$out"
    return "$rc"
}
step reconnect reconnect
step recover_restart reconnect recover.mjs --restart

log "socketio: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
