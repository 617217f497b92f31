#!/usr/bin/env bash
# scripts/test.sh — the one test command of dockwire (CI runs it via .ci/run).
#
# Works on a fresh Debian machine from a clean checkout (root, apt and the
# package registries reachable) and exits non-zero on any failure.
#
# Setup (always):
#   docker    scripts/docker-env.sh start: a private Docker engine + the image
#             dockwire-test:latest; stopped again on exit when this run
#             started it (keep it with DOCKWIRE_KEEP_DOCKER=1). Exports DOCKER_HOST,
#             DOCKWIRE_TEST_IMAGE and DOCKWIRE_TESTENV for everything below.
#   deps      Debian's nodejs and npm when missing; `npm ci` in tests/clients
#             when it has a package-lock.json;
#             with the browser stage: Debian's chromium (apt-get) and `npm ci`
#             in tests/browser;
#             with the cargo stage: Debian's nats-server (tests/cluster.rs);
#             `python3 -m pip install -q -r tests/clients/requirements.txt`
#             when that file exists.
#   build     cargo build --workspace --bins
# Stages (DOCKWIRE_STAGES, space-separated, default "systemd cargo autobahn
# clients browser loadtest soak package fuzz"):
#   systemd   scripts/check-systemd.sh: systemd/dockwire.service hardening
#             (systemd-analyze security exposure at most 2.0).
#   cargo     cargo nextest run --workspace --no-fail-fast (settings in
#             .config/nextest.toml); `cargo test --workspace --no-fail-fast`
#             when nextest is not installed.
#   autobahn  target/debug/dockwire serve with [debug] echo_endpoint = true on
#             a free loopback port, then scripts/autobahn.sh against
#             ws://127.0.0.1:PORT/debug/echo; the daemon must then exit 0 on
#             SIGTERM.
#   clients   every tests/clients/*.sh, each with DOCKER_HOST,
#             DOCKWIRE_TEST_IMAGE, DOCKWIRE_TESTENV and DOCKWIRE_BIN (absolute
#             path of target/debug/dockwire) in its environment.
#   browser   tests/browser/run.sh: the dashboard in Debian's headless
#             chromium (installed with apt-get when missing) driven by
#             puppeteer-core (`npm ci` in tests/browser), against the real
#             daemon and engine; same environment, screenshots in
#             $DOCKWIRE_ARTIFACTS (default target/browser-artifacts). 300 s limit.
#   loadtest  scripts/loadtest-smoke.sh when present, same environment.
#   soak      scripts/soak.sh ${DOCKWIRE_SOAK_SECONDS:-45}: the daemon on its own
#             engine under load, churn, faults (engine and agent killed) and
#             attacks; nothing lost by well-behaved clients, bounds held.
#   package   scripts/check-package.sh: the Debian package (cargo-deb, of the
#             debug build) installed with dpkg, used, and purged.
#   fuzz      scripts/fuzz.sh with DOCKWIRE_FUZZ_SECONDS (default 10) per
#             target: every fuzz target briefly, from its seed corpus.
# Every step has a time limit. A summary of the steps, with their times, is
# printed at the end.
# shellcheck disable=SC2317  # functions run indirectly, through stage()
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

STAGES=${DOCKWIRE_STAGES:-"systemd cargo autobahn clients browser loadtest soak package fuzz"}
for s in $STAGES; do
    case $s in
    systemd | cargo | autobahn | clients | browser | loadtest | soak | package | fuzz) ;;
    *)
        echo "test.sh: unknown stage '$s' (known: systemd cargo autobahn clients browser loadtest soak package fuzz)" >&2
        exit 2
        ;;
    esac
done
want() { [[ " $STAGES " == *" $1 "* ]]; }

[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac
export DOCKWIRE_BIN=$TARGET_DIR/debug/dockwire
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dockwire-test.XXXXXX")
T0=$SECONDS
SUMMARY=()
FAILED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "${DOCKWIRE_KEEP_DOCKER:-0}" != 1 ] && [ -n "${DOCKER_STARTED:-}" ]; then
        scripts/docker-env.sh stop || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

banner() { printf '\n==== %s ====\n' "$*"; }

# stage NAME CMD...: run CMD in a subshell with errexit, record PASS/FAIL.
stage() {
    local name=$1 t=$SECONDS rc
    shift
    banner "$name"
    set +e
    (
        set -euo pipefail
        "$@"
    )
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("PASS  $name ($((SECONDS - t))s)")
    else
        SUMMARY+=("FAIL  $name (exit $rc, $((SECONDS - t))s)")
        FAILED=1
    fi
    return "$rc"
}
skip() { SUMMARY+=("SKIP  $1 ($2)"); }

summary() {
    banner "summary"
    local line
    for line in "${SUMMARY[@]}"; do echo "  $line"; done
    echo "  total $((SECONDS - T0))s; stages: $STAGES"
    if [ "$FAILED" -ne 0 ]; then
        echo "test.sh: FAILED"
    else
        echo "test.sh: all steps passed"
    fi
}

# ---- setup ----------------------------------------------------------------

docker_setup() { timeout 1200 scripts/docker-env.sh start; }

deps_setup() {
    # Node and npm for the clients and browser stages (Debian's when missing).
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q -o DPkg::Lock::Timeout=300 nodejs npm >/dev/null ||
            { timeout 600 apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q nodejs npm >/dev/null; }
    fi
    if [ -f tests/clients/package-lock.json ]; then
        (cd tests/clients && timeout 900 npm ci --no-audit --no-fund)
    else
        echo "no tests/clients/package-lock.json: no npm install"
    fi
    # The browser stage's chromium and puppeteer-core (tests/browser/run.sh
    # checks again; installing here keeps the download out of its time limit).
    if want browser; then
        if ! command -v chromium >/dev/null; then
            DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q -o DPkg::Lock::Timeout=300 chromium >/dev/null ||
                { timeout 600 apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q chromium >/dev/null; }
        fi
        (cd tests/browser && PUPPETEER_SKIP_DOWNLOAD=1 timeout 600 npm ci --no-audit --no-fund --loglevel=error)
    fi
    # tests/cluster.rs runs Debian's nats-server (the engine of a cluster).
    if want cargo && ! command -v nats-server >/dev/null; then
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q -o DPkg::Lock::Timeout=300 nats-server >/dev/null ||
            { timeout 600 apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q nats-server >/dev/null; }
    fi
    if [ -f tests/clients/requirements.txt ]; then
        timeout 900 python3 -m pip install -q --disable-pip-version-check -r tests/clients/requirements.txt
    else
        echo "no tests/clients/requirements.txt: no pip install"
    fi
}

build() {
    timeout 2400 cargo build --workspace --bins
    [ -x "$DOCKWIRE_BIN" ] || {
        echo "test.sh: $DOCKWIRE_BIN was not built" >&2
        return 1
    }
}

setup_ok=1
# Stop the engine on exit only when this run started it (a developer's engine,
# already up, is left running).
scripts/docker-env.sh status || DOCKER_STARTED=1
if stage docker docker_setup; then
    eval "$(scripts/docker-env.sh env)"
    export DOCKER_HOST DOCKWIRE_TEST_IMAGE DOCKWIRE_TESTENV
else
    setup_ok=0
fi
[ "$setup_ok" -eq 1 ] && { stage deps deps_setup || setup_ok=0; }
[ "$setup_ok" -eq 1 ] && { stage build build || setup_ok=0; }
if [ "$setup_ok" -ne 1 ]; then
    summary
    exit 1
fi

# ---- stages ---------------------------------------------------------------

cargo_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        timeout -k 30 3000 cargo nextest run --workspace --no-fail-fast
    else
        echo "cargo-nextest not installed: using cargo test"
        timeout -k 30 3000 cargo test --workspace --no-fail-fast
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT PID SECONDS: until something accepts on 127.0.0.1:PORT.
wait_port() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

autobahn() {
    local port conf log rc i
    port=$(free_port)
    conf=$WORK/autobahn.toml
    log=$WORK/dockwire-autobahn.log
    # The 9.* cases echo messages of up to 16 MiB: raise the message and
    # per-socket queue caps above the defaults (64 KiB / 4 MiB). The 12.* and
    # 13.* cases (permessage-deflate) run for up to a minute each, and the
    # case runner ends a case at the first keepalive ping it did not expect:
    # ping less often than a case lasts.
    cat >"$conf" <<EOF
listen = "127.0.0.1:$port"

[limits]
max_message_bytes = "32MiB"
max_queued_bytes = "64MiB"
ping_interval = "10m"

[debug]
echo_endpoint = true
EOF
    RUST_LOG=${RUST_LOG:-info} "$DOCKWIRE_BIN" serve --config "$conf" >"$log" 2>&1 &
    DAEMON_PID=$!
    # This runs in the stage's subshell: its EXIT trap reaps the daemon
    # whatever happens below.
    trap 'kill -KILL "$DAEMON_PID" 2>/dev/null || true' EXIT
    if ! wait_port "$port" "$DAEMON_PID" 30; then
        echo "test.sh: dockwire did not listen on 127.0.0.1:$port within 30s; its log:" >&2
        tail -40 "$log" >&2
        return 1
    fi
    rc=0
    scripts/autobahn.sh "ws://127.0.0.1:$port/debug/echo" || rc=$?
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "test.sh: dockwire died during the Autobahn run; its log:" >&2
        tail -40 "$log" >&2
        return 1
    fi
    # SPEC: SIGTERM -> close frames, exit 0 within 5 s.
    kill -TERM "$DAEMON_PID"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "test.sh: dockwire still running 10s after SIGTERM" >&2
        tail -20 "$log" >&2
        return 1
    fi
    local drc=0
    wait "$DAEMON_PID" || drc=$?
    if [ "$drc" -ne 0 ]; then
        echo "test.sh: dockwire exited $drc after SIGTERM (expected 0); its log:" >&2
        tail -20 "$log" >&2
        return 1
    fi
    return "$rc"
}

run_script() { timeout -k 30 900 bash "$1"; }

if want systemd; then stage systemd scripts/check-systemd.sh || true; fi
if want cargo; then stage cargo cargo_tests || true; fi
if want autobahn; then stage autobahn autobahn || true; fi
if want clients; then
    shopt -s nullglob
    scripts=(tests/clients/*.sh)
    shopt -u nullglob
    if [ ${#scripts[@]} -eq 0 ]; then
        skip clients "no tests/clients/*.sh"
    fi
    for s in "${scripts[@]}"; do
        stage "clients:$(basename "$s" .sh)" run_script "$s" || true
    done
fi
if want browser; then
    stage browser timeout -k 30 300 bash tests/browser/run.sh || true
fi
if want loadtest; then
    if [ -f scripts/loadtest-smoke.sh ]; then
        stage loadtest run_script scripts/loadtest-smoke.sh || true
    else
        skip loadtest "no scripts/loadtest-smoke.sh"
    fi
fi
if want soak; then
    stage soak timeout -k 30 600 scripts/soak.sh "${DOCKWIRE_SOAK_SECONDS:-45}" || true
fi

if want package; then
    stage package timeout -k 30 2400 scripts/check-package.sh || true
fi

if want fuzz; then
    stage fuzz timeout -k 30 2400 scripts/fuzz.sh "${DOCKWIRE_FUZZ_SECONDS:-10}" || true
fi

summary
exit "$FAILED"
