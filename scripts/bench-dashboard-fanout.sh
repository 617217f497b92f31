#!/usr/bin/env bash
# scripts/bench-dashboard-fanout.sh — daemon cost of N dashboards following one
# busy container's logs (tests/browser/fanout.mjs says what and how): the
# daemon's CPU (utime+stime from /proc/PID/stat) and RSS over a window, with
# no client and with N clients: WebSocket clients sending exactly what the
# page sends (FANOUT_MODE=ws, the default), or N tabs of the real dashboard
# in one headless Chromium (FANOUT_MODE=chromium). Never asserts; numbers go
# to docs/performance.md by hand.
#
# Usage: scripts/bench-dashboard-fanout.sh   (builds target/release/dockwire)
#        FANOUT_MODE=chromium scripts/bench-dashboard-fanout.sh
# Env: DOCKWIRE_BIN (skip the build), FANOUT_MODE (ws | chromium),
# FANOUT_CLIENTS (100), FANOUT_SECONDS (30), FANOUT_WARMUP_S (5),
# FANOUT_OPEN_S (240: at most this long to open the Chromium tabs),
# FANOUT_WINDOWS (0: tabs of one window, hidden; 1: a visible window each),
# FANOUT_TIMEOUT_S (900: the whole run, build excluded); the engine of
# scripts/docker-env.sh (started when not running). Output: JSON on stdout
# and in target/bench-dashboard-fanout-<mode>.json.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export PUPPETEER_SKIP_DOWNLOAD=1
LABEL=dockwire.test=bench-fanout

if [ -z "${DOCKWIRE_BIN:-}" ]; then
    # A release build: the figure is the daemon's cost as it is shipped.
    timeout 3600 cargo build --release --bin dockwire
    DOCKWIRE_BIN=$REPO/target/release/dockwire
fi
export DOCKWIRE_BIN
scripts/docker-env.sh status || scripts/docker-env.sh start
eval "$(scripts/docker-env.sh env)"
command -v chromium >/dev/null || apt-get install -y -q chromium
[ -f tests/browser/node_modules/.package-lock.json ] || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

cleanup() {
    ids=$(docker ps -aq --filter "label=$LABEL" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    return 0
}
trap cleanup EXIT
mkdir -p target
MODE=${FANOUT_MODE:-ws}
export FANOUT_MODE=$MODE
"$DOCKWIRE_BIN" --version >&2 || true
timeout -k 10 "${FANOUT_TIMEOUT_S:-900}" node tests/browser/fanout.mjs | tee "target/bench-dashboard-fanout-$MODE.json"
