#!/usr/bin/env bash
# scripts/loadtest-smoke.sh — a short run of every dockwire-loadtest scenario
# against a real daemon. Asserts only that messages arrived and that each
# report is complete (parsed from --json); exits non-zero otherwise.
#
# Environment:
#   DOCKWIRE_BIN        the daemon binary (default: target/debug/dockwire)
#   LOADTEST_BIN        the load generator (default: dockwire-loadtest next to DOCKWIRE_BIN;
#                       built with cargo when missing)
#   DOCKER_HOST, DOCKWIRE_TEST_IMAGE
#                       when both are set (scripts/docker-env.sh env), the container
#                       source runs too: fanout --source container --spawn-container,
#                       in the JSON and the Socket.IO dialect. Otherwise those are skipped.
#
# Each run: a few hundred connections for a few seconds. agents-remote and
# fanout-remote-agent play Docker agents (SPEC 6): container tables, stats,
# state changes; log_batch lines to start_log_stream browsers. The daemon runs with a
# temp config on a free loopback port: agent keys stored as sha256 (sha256sum),
# browser auth off — except one `idle` run against a second daemon with a JWT
# secret, using a token from `$DOCKWIRE_BIN token`, and one `fanout --tls`
# against a daemon with [tls] (certificate by openssl; skipped without it).
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

DOCKWIRE_BIN=${DOCKWIRE_BIN:-$REPO/target/debug/dockwire}
LOADTEST_BIN=${LOADTEST_BIN:-$(dirname "$DOCKWIRE_BIN")/dockwire-loadtest}
if [ ! -x "$DOCKWIRE_BIN" ]; then
    echo "loadtest-smoke: no daemon at $DOCKWIRE_BIN (set DOCKWIRE_BIN)" >&2
    exit 1
fi
if [ ! -x "$LOADTEST_BIN" ]; then
    timeout 1200 cargo build -p dockwire-loadtest
    LOADTEST_BIN=$REPO/target/debug/dockwire-loadtest
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/loadtest-smoke.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_daemon CONFIG LOG: starts the daemon, waits for its port, sets DAEMON_PID.
start_daemon() {
    local port i
    port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$1")
    "$DOCKWIRE_BIN" serve --config "$1" >"$2" 2>&1 &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    for ((i = 0; i < 300; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "loadtest-smoke: daemon did not listen on $port; its log:" >&2
    tail -30 "$2" >&2
    return 1
}

AGENTS=20
PORT=$(free_port)
KEYS=$WORK/agent-keys.txt
CONF=$WORK/dockwire.toml
{
    echo "listen = \"127.0.0.1:$PORT\""
    echo "metrics_interval = \"1s\""
    if [ -n "${DOCKER_HOST:-}" ]; then
        echo "[docker]"
        echo "host = \"$DOCKER_HOST\""
    fi
} >"$CONF"
: >"$KEYS"
for ((i = 0; i < AGENTS; i++)); do
    key="smoke-$i-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "$key" >>"$KEYS"
    printf '[[agents]]\nname = "smoke-%d"\nkey_sha256 = "%s"\n' "$i" \
        "$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)" >>"$CONF"
done
start_daemon "$CONF" "$WORK/dockwire.log"
TARGET=127.0.0.1:$PORT
FAIL=0
RESULTS=()

# check NAME REPORT PYTHON-EXPR: the expression sees the report as `r`.
check() {
    local name=$1 report=$2 expr=$3
    if python3 - "$report" "$expr" <<'EOF'; then
import json, sys
r = json.load(open(sys.argv[1]))
for key in ("scenario", "connections", "messages", "latency", "errors", "client", "complete"):
    assert key in r, f"report lacks {key}"
assert r["complete"], "a worker did not report"
assert eval(sys.argv[2]), "assertion failed: " + sys.argv[2]
EOF
        RESULTS+=("PASS  $name")
    else
        RESULTS+=("FAIL  $name")
        FAIL=1
    fi
}

# run NAME EXPR -- ARGS...: one loadtest run with --json, then check.
run() {
    local name=$1 expr=$2 out rc=0
    shift 3
    out=$WORK/$name.json
    echo "---- $name: dockwire-loadtest $*"
    timeout -k 10 120 "$LOADTEST_BIN" "$@" --target "$TARGET" --json --quiet >"$out" || rc=$?
    if [ "$rc" -ne 0 ] || [ ! -s "$out" ]; then
        echo "loadtest-smoke: $name exited $rc" >&2
        RESULTS+=("FAIL  $name (exit $rc)")
        FAIL=1
        return 0
    fi
    check "$name" "$out" "$expr"
}

run fanout-agent \
    'r["messages"]["delivered"] > 0 and r["latency"]["count"] > 0 and r["connections"]["established"] == 201 and r["messages"]["expected"] > 0' \
    -- fanout --api-key "$(head -1 "$KEYS")" --subscribers 200 --rate 50 --payload 100 --duration 3s

run agents \
    'r["messages"]["sent"] > 0 and r["messages"]["delivered"] > 0 and r["latency"]["count"] > 0' \
    -- agents --api-keys-file "$KEYS" --agents "$AGENTS" --browsers 200 --interval 500ms --duration 3s

run agents-remote \
    'r["messages"]["sent"] > 0 and r["messages"]["delivered"] > 0 and r["latency"]["count"] > 0 and r["connections"]["failed"] == 0' \
    -- agents --api-keys-file "$KEYS" --agents "$AGENTS" --containers 20 --browsers 20 --interval 500ms --duration 3s

run fanout-remote-agent \
    'r["messages"]["delivered"] > 0 and r["messages"]["gaps"] == 0' \
    -- fanout --source remote-agent --api-key "$(head -1 "$KEYS")" --subscribers 50 --rate 2000 --batch 100 --duration 3s --drain 2s

run idle \
    'r["connections"]["established"] == 300 and r["connections"]["dropped"] == 0 and (r["server"] is None or r["server"]["rss_end_bytes"] > 0)' \
    -- idle --connections 300 --hold 2s

run idle-socketio \
    'r["connections"]["established"] == 200 and r["connections"]["dropped"] == 0' \
    -- idle --connections 200 --hold 2s --dialect socketio

run storm \
    'r["connections"]["closed"] > 0 and r["connections"]["failed"] == 0' \
    -- storm --connections 300 --rate 150 --duration 3s

if [ -n "${DOCKER_HOST:-}" ] && [ -n "${DOCKWIRE_TEST_IMAGE:-}" ]; then
    run fanout-container \
        'r["messages"]["delivered"] > 0 and r["latency"]["count"] > 0' \
        -- fanout --source container --spawn-container --image "$DOCKWIRE_TEST_IMAGE" \
        --subscribers 100 --rate 200 --duration 3s --settle 2s
    run fanout-container-socketio \
        'r["messages"]["delivered"] > 0 and r["latency"]["count"] > 0' \
        -- fanout --source container --spawn-container --image "$DOCKWIRE_TEST_IMAGE" \
        --dialect socketio --subscribers 100 --rate 200 --duration 3s --settle 2s
else
    RESULTS+=("SKIP  fanout-container (DOCKER_HOST / DOCKWIRE_TEST_IMAGE not set)")
fi

# One fanout over TLS (wss://) against a third daemon with [tls], its
# certificate made here by openssl: connections established, nothing lost.
if command -v openssl >/dev/null 2>&1 &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/tls-key.pem" -out "$WORK/tls-cert.pem" -days 1 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" >"$WORK/openssl.log" 2>&1; then
    PORT3=$(free_port)
    {
        printf 'listen = "127.0.0.1:%s"\n' "$PORT3"
        printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$WORK/tls-cert.pem" "$WORK/tls-key.pem"
        sed -n '/^\[\[agents\]\]/,$p' "$CONF"
    } >"$WORK/tls.toml"
    start_daemon "$WORK/tls.toml" "$WORK/dockwire-tls.log"
    PLAIN_TARGET=$TARGET
    TARGET=127.0.0.1:$PORT3
    run fanout-tls \
        'r["target"].startswith("wss://") and r["connections"]["established"] == 101 and r["connections"]["failed"] == 0 and r["connections"]["dropped"] == 0 and r["messages"]["delivered"] > 0 and r["messages"]["lost"] == 0' \
        -- fanout --tls --ca-file "$WORK/tls-cert.pem" --api-key "$(head -1 "$KEYS")" \
        --subscribers 100 --rate 50 --payload 100 --duration 2s
    TARGET=$PLAIN_TARGET
elif command -v openssl >/dev/null 2>&1; then
    RESULTS+=("SKIP  fanout-tls (openssl could not make a certificate: $(tail -c 200 "$WORK/openssl.log"))")
else
    RESULTS+=("SKIP  fanout-tls (no openssl to make a test certificate)")
fi

# One idle run with browser auth on, when the binary can mint tokens.
SECRET=$WORK/jwt.secret
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET"
chmod 600 "$SECRET"
if "$DOCKWIRE_BIN" token --secret-file "$SECRET" --sub loadtest --role viewer --ttl 1h >"$WORK/token" 2>"$WORK/token.err" &&
    [ -s "$WORK/token" ]; then
    PORT2=$(free_port)
    printf 'listen = "127.0.0.1:%s"\n[auth]\njwt_secret_file = "%s"\n' "$PORT2" "$SECRET" >"$WORK/auth.toml"
    start_daemon "$WORK/auth.toml" "$WORK/dockwire-auth.log"
    TARGET=127.0.0.1:$PORT2
    run idle-auth \
        'r["connections"]["established"] == 200 and r["connections"]["failed"] == 0 and r["connections"]["dropped"] == 0' \
        -- idle --connections 200 --hold 2s --token-file "$WORK/token"
else
    RESULTS+=("SKIP  idle-auth ($DOCKWIRE_BIN token failed: $(head -c 200 "$WORK/token.err"))")
fi

echo
echo "==== loadtest smoke ===="
for r in "${RESULTS[@]}"; do echo "  $r"; done
passed=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^PASS' || true)
failed=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^FAIL' || true)
echo "loadtest-smoke: $passed passed, $failed failed"
exit "$FAIL"
