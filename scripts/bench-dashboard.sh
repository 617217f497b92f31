#!/usr/bin/env bash
# scripts/bench-dashboard.sh — measures the dashboard in Debian's headless
# chromium (tests/browser/bench.mjs says what and how): first-load transfer
# with gzip and time to the first containers list; the log view holding
# 100,000 lines with 1,000 lines/s arriving, against the naive
# append-every-line page (tests/browser/fixtures/naive.html), as a ratio in
# one run. Never asserts on timing; numbers go to docs/performance.md by hand.
#
# Usage: scripts/bench-dashboard.sh            (builds target/debug/dockwire)
# Env: DOCKWIRE_BIN (skip the build), BENCH_PHASE_MS (default 5000), and the
# Docker engine of scripts/docker-env.sh (started when not running) so the
# containers table has rows. Output: JSON on stdout and in
# target/bench-dashboard.json.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export PUPPETEER_SKIP_DOWNLOAD=1
LABEL=dockwire.test=bench-dashboard

if [ -z "${DOCKWIRE_BIN:-}" ]; then
    cargo build --bin dockwire
    DOCKWIRE_BIN=$REPO/target/debug/dockwire
fi
scripts/docker-env.sh status || scripts/docker-env.sh start
eval "$(scripts/docker-env.sh env)"
command -v chromium >/dev/null || apt-get install -y -q chromium
[ -f tests/browser/node_modules/.package-lock.json ] || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dockwire-bench-dash.XXXXXX")
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    ids=$(docker ps -aq --filter "label=$LABEL" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listen = "127.0.0.1:%s"\n\n[docker]\nhost = "%s"\n' "$PORT" "$DOCKER_HOST" >"$TMP/dockwire.toml"
for i in 1 2 3; do
    docker run -d --network none --label "$LABEL" --name "bench-dash-$i-$$" "$DOCKWIRE_TEST_IMAGE" \
        sh -c 'trap "exit 0" TERM; while true; do echo hello; sleep 1; done' >/dev/null
done
"$DOCKWIRE_BIN" serve --config "$TMP/dockwire.toml" 2>"$TMP/daemon.log" &
PID=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
mkdir -p target
node tests/browser/bench.mjs "http://127.0.0.1:$PORT" | tee target/bench-dashboard.json
