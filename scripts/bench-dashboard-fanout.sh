#!/usr/bin/env bash
# scripts/bench-dashboard-fanout.sh — daemon cost of N dashboards following one
# busy container's logs (tests/browser/fanout.mjs says what and how): the
# daemon's CPU (utime+stime from /proc/PID/stat) and RSS over a window, with
# no client and with N clients sending exactly what the page sends. Never
# asserts; numbers go to docs/performance.md by hand.
#
# Usage: scripts/bench-dashboard-fanout.sh   (builds target/debug/dockwire)
# Env: DOCKWIRE_BIN (skip the build), FANOUT_CLIENTS (100), FANOUT_SECONDS
# (30), FANOUT_WARMUP_S (5); the engine of scripts/docker-env.sh (started when
# not running). Output: JSON on stdout and in target/bench-dashboard-fanout.json.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export PUPPETEER_SKIP_DOWNLOAD=1
LABEL=dockwire.test=bench-fanout

if [ -z "${DOCKWIRE_BIN:-}" ]; then
    cargo build --bin dockwire
    DOCKWIRE_BIN=$REPO/target/debug/dockwire
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
node tests/browser/fanout.mjs | tee target/bench-dashboard-fanout.json
