#!/usr/bin/env bash
# tests/browser/run.sh — the dashboard (SPEC §8) in a real headless browser:
# Debian's chromium driven by puppeteer-core (pinned in package-lock.json; no
# browser download: PUPPETEER_SKIP_DOWNLOAD=1), against the real dockwire
# binary and the test Docker engine. dashboard.test.mjs starts the daemon
# itself (so it can restart it), creates its containers from
# $DOCKWIRE_TEST_IMAGE and removes them. spec.test.mjs then runs the page
# against a scripted stand-in daemon that speaks SPEC part two's messages
# (servers, subscribe_containers, container_stats, command_accepted, seq,
# log_gap, metrics history, alerts) as the SPEC writes them.
#
# Env (required): DOCKWIRE_BIN, DOCKER_HOST, DOCKWIRE_TEST_IMAGE (see
# scripts/docker-env.sh). Optional: DOCKWIRE_ARTIFACTS (screenshots and logs,
# default target/browser-artifacts), CHROMIUM (default: chromium on PATH),
# NODE (default node), DOCKWIRE_BROWSER_TIMEOUT_S (default 150).
#
# Two parts: dashboard.test.mjs (real daemon, no auth; then a second daemon
# with two [[users]] and a real `dockwire agent`: logins and a remote server)
# and spec.test.mjs (the stand-in).
#
# Installs what is missing (as root): chromium and node/npm (apt-get
# chromium, nodejs npm) and the npm packages (`npm ci` from the lock file).
# Exits non-zero on any failure; each test file ends with a
# "browser: N passed, N failed" / "spec: N passed, N failed" line.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
: "${DOCKWIRE_BIN:?set DOCKWIRE_BIN to the dockwire binary}"
: "${DOCKER_HOST:?set DOCKER_HOST to the test Docker engine (scripts/docker-env.sh env)}"
: "${DOCKWIRE_TEST_IMAGE:?set DOCKWIRE_TEST_IMAGE to a busybox image (scripts/docker-env.sh env)}"
export DOCKWIRE_BIN DOCKER_HOST DOCKWIRE_TEST_IMAGE
export DOCKWIRE_ARTIFACTS=${DOCKWIRE_ARTIFACTS:-$REPO/target/browser-artifacts}
export PUPPETEER_SKIP_DOWNLOAD=1
NODE=${NODE:-node}
LABEL=dockwire.test=browser

log() { printf '[browser] %s\n' "$*"; }

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local rc=$? left
    trap - EXIT INT TERM
    left=$(docker ps -aq --filter "label=$LABEL" 2>/dev/null || true)
    if [ -n "$left" ]; then
        # shellcheck disable=SC2086  # one id per word
        docker rm -f $left >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the browser -------------------------------------------------------------
if [ -z "${CHROMIUM:-}" ]; then
    if ! command -v chromium >/dev/null; then
        [ "$(id -u)" -eq 0 ] || {
            log "chromium is missing and this is not root: apt-get install chromium"
            exit 1
        }
        log "installing chromium (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
        if ! timeout 900 "${apt[@]}" install chromium >/tmp/dockwire-chromium-apt.log 2>&1; then
            timeout 600 "${apt[@]}" update >>/tmp/dockwire-chromium-apt.log 2>&1
            timeout 900 "${apt[@]}" install chromium >>/tmp/dockwire-chromium-apt.log 2>&1 ||
                { tail -20 /tmp/dockwire-chromium-apt.log; exit 1; }
        fi
    fi
    CHROMIUM=$(command -v chromium)
fi
export CHROMIUM
log "browser: $("$CHROMIUM" --version 2>/dev/null | tail -1)"

# ---- node and puppeteer-core ----------------------------------------------------
# Debian's nodejs and npm when missing. puppeteer-core 25's dependencies ask
# for node >= 20.19 (chromium-bidi) and Debian 12's nodejs is 18, so an older
# node stops here with a message (NodeSource's nodejs 20+ works).
if ! command -v "$NODE" >/dev/null || ! command -v npm >/dev/null; then
    [ "$(id -u)" -eq 0 ] || {
        log "node or npm is missing and this is not root: apt-get install nodejs npm"
        exit 1
    }
    log "installing nodejs and npm (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
    if ! timeout 900 "${apt[@]}" install nodejs npm >/tmp/dockwire-node-apt.log 2>&1; then
        timeout 600 "${apt[@]}" update >>/tmp/dockwire-node-apt.log 2>&1
        timeout 900 "${apt[@]}" install nodejs npm >>/tmp/dockwire-node-apt.log 2>&1 ||
            { tail -20 /tmp/dockwire-node-apt.log; exit 1; }
    fi
fi
node_v=$("$NODE" --version)
log "node $node_v"
node_major=${node_v#v}
node_major=${node_major%%.*}
if [ "$node_major" -lt 20 ]; then
    log "node $node_v is too old for puppeteer-core 25 (needs >= 20.19): install nodejs 20 or later (e.g. NodeSource)"
    exit 1
fi
# npm ci on a fresh checkout, or when the lock file changed since the last one.
if [ ! -f "$HERE/node_modules/.package-lock.json" ] ||
    [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
    log "npm ci"
    (cd "$HERE" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
fi

mkdir -p "$DOCKWIRE_ARTIFACTS"
rc=0
timeout -k 10 "${DOCKWIRE_BROWSER_TIMEOUT_S:-150}" "$NODE" "$HERE/dashboard.test.mjs" || rc=$?
# The page against SPEC part two's messages, from a scripted stand-in daemon.
timeout -k 10 60 "$NODE" "$HERE/spec.test.mjs" || rc=$?
exit "$rc"
