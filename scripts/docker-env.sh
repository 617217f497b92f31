#!/usr/bin/env bash
# scripts/docker-env.sh — a private Docker engine for dockwire's tests.
#
# Usage: scripts/docker-env.sh start|stop|env|status
#
#   start   install docker.io + busybox-static when missing (root, apt), start a
#           private containerd and dockerd, wait until `docker info` answers, and
#           build the image dockwire-test:latest (busybox + applet links, made
#           with `docker import`, nothing pulled). Idempotent: a running engine
#           is left alone; after a crash (kill -9) it brings the engine back and
#           the containers it had are still there (running ones keep running:
#           --live-restore).
#   stop    stop the running containers of this engine (`docker stop`, like a
#           plain dockerd shutdown would), then dockerd and containerd. Removes
#           nothing: data-root, images and containers stay for the next start.
#   env     print `export DOCKER_HOST=...`, `export DOCKWIRE_TEST_IMAGE=...` and
#           `export DOCKWIRE_TESTENV=<abs state dir>` (so tests find dockerd.pid
#           and dockerd.cmd); use: eval "$(scripts/docker-env.sh env)".
#   status  exit 0 when the engine answers, 1 otherwise.
#
# State: $DOCKWIRE_TESTENV (default $REPO/.testenv/docker), holding
#   data/           dockerd --data-root
#   containerd/     containerd root
#   dockerd.pid     dockerd --pidfile (written by dockerd itself)
#   containerd.pid  pid of the private containerd
#   dockerd.cmd     the exact dockerd command line, one shell-quoted line
#   dockerd.log     dockerd's stderr/stdout (appended; re-runs append too)
#   containerd.log, containerd.toml, daemon.json, image.stamp
# Runtime (sockets, exec-root) lives in a short directory, so unix socket paths
# stay far below the 108-byte limit whatever the checkout path is:
#   /run/dockwire-<10 hex of sha256($STATE)>/  (or /tmp/... when /run is not writable)
#     docker.sock   dockerd -H unix://...
#     exec/         dockerd --exec-root
#     containerd/   containerd state + containerd.sock
#
# Containerd: dockerd 20.10 silently uses a system containerd when
# /run/containerd/containerd.sock exists (sharing its "moby" namespace with any
# other engine), so this script always runs its own containerd and passes
# --containerd to dockerd.
#
# The dockerd command line (also written to $STATE/dockerd.cmd) is:
#   dockerd --config-file $STATE/daemon.json --data-root $STATE/data
#     --exec-root $RUN/exec -H unix://$RUN/docker.sock --pidfile $STATE/dockerd.pid
#     --containerd $RUN/containerd/containerd.sock --storage-driver=vfs
#     --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false
#     --bridge=none --userland-proxy=false --live-restore
#
# Engine outage tests: `kill -9 "$(cat $STATE/dockerd.pid)"`, then bring it back
# either with `scripts/docker-env.sh start` (preferred: waits until ready) or by
# re-running the command line, detached, e.g.
#   setsid sh -c "exec $(cat $STATE/dockerd.cmd)" >>$STATE/dockerd.log 2>&1 </dev/null &
# containerd is not touched by such a kill; the containers survive it.
# Tests run in parallel (nextest, 2 threads) and share the default engine, so a
# test that kills an engine should start its own: any other state dir gives an
# independent engine (own sockets, containerd, data; ~1-2 s to start, image
# included), e.g.  DOCKWIRE_TESTENV=$tmp/engine scripts/docker-env.sh start
# then eval "$(DOCKWIRE_TESTENV=$tmp/engine scripts/docker-env.sh env)", and
# `... stop` at the end (its data stays in $tmp/engine: delete it yourself).
#
# Environment: DOCKWIRE_TESTENV (state dir), DOCKWIRE_DOCKERD_TIMEOUT (seconds
# to wait for the engine, default 90).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=dockwire-test:latest
TIMEOUT=${DOCKWIRE_DOCKERD_TIMEOUT:-90}

log() { printf 'docker-env: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

STATE=${DOCKWIRE_TESTENV:-$REPO/.testenv/docker}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
KEY=$(printf '%s' "$STATE" | sha256sum | cut -c1-10)
if [ -d /run ] && [ -w /run ]; then
    RUN=/run/dockwire-$KEY
else
    RUN=/tmp/dockwire-$KEY
fi
SOCK=$RUN/docker.sock
CTRD_SOCK=$RUN/containerd/containerd.sock
DOCKER_PIDFILE=$STATE/dockerd.pid
CTRD_PIDFILE=$STATE/containerd.pid
export DOCKER_HOST=unix://$SOCK

# docker CLI with a bound on every call (a wedged engine must not hang us).
dk() { timeout 60 docker "$@"; }

# pid_of PIDFILE NEEDLE: print the pid when it is alive and its command line
# contains NEEDLE (guards against a stale pidfile whose pid was reused).
pid_of() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
    printf '%s\n' "$pid"
}

# wait_gone PID SECONDS: wait until PID has exited (zombies count as exited).
wait_gone() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [ -d "/proc/$1" ] || return 0
        grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

ensure_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v containerd >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || missing+=(runc)
    command -v pgrep >/dev/null || missing+=(procps)
    # busybox-static's binary needs no loader; Debian's "busybox" package is
    # dynamic and would not run inside the image.
    pkg_installed busybox-static || missing+=(busybox-static)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold)
    if ! timeout 900 "${apt[@]}" install "${missing[@]}" >"$STATE/apt.log" 2>&1; then
        log "install failed, running apt-get update first"
        timeout 600 "${apt[@]}" update >>"$STATE/apt.log" 2>&1 || { tail -20 "$STATE/apt.log" >&2; die "apt-get update failed"; }
        timeout 900 "${apt[@]}" install "${missing[@]}" >>"$STATE/apt.log" 2>&1 ||
            { tail -20 "$STATE/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
    command -v dockerd >/dev/null || die "dockerd still missing after install"
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

write_configs() {
    mkdir -p "$STATE/data" "$STATE/containerd" "$RUN/exec" "$RUN/containerd"
    chmod 700 "$RUN"
    [ -f "$STATE/daemon.json" ] || echo '{}' >"$STATE/daemon.json"
    cat >"$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = "$RUN/containerd/debug.sock"
  level = "info"
[metrics]
  address = ""
EOF
    DOCKERD_CMD=(dockerd
        --config-file "$STATE/daemon.json"
        --data-root "$STATE/data"
        --exec-root "$RUN/exec"
        -H "unix://$SOCK"
        --pidfile "$DOCKER_PIDFILE"
        --containerd "$CTRD_SOCK"
        --storage-driver=vfs
        --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false
        --bridge=none --userland-proxy=false --live-restore)
    printf '%q ' "${DOCKERD_CMD[@]}" | sed 's/ $//' >"$STATE/dockerd.cmd"
    echo >>"$STATE/dockerd.cmd"
}

start_containerd() {
    if pid_of "$CTRD_PIDFILE" "$STATE/containerd.toml" >/dev/null; then
        return 0
    fi
    rm -f "$CTRD_PIDFILE" "$CTRD_SOCK" "$CTRD_SOCK.ttrpc" "$RUN/containerd/debug.sock"
    log "starting containerd"
    setsid containerd --config "$STATE/containerd.toml" >>"$STATE/containerd.log" 2>&1 </dev/null 9>&- &
    echo $! >"$CTRD_PIDFILE"
    local i pid
    pid=$(cat "$CTRD_PIDFILE")
    for ((i = 0; i < TIMEOUT * 5; i++)); do
        if [ -S "$CTRD_SOCK" ] && timeout 10 ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -30 "$STATE/containerd.log" >&2
            die "containerd exited during start (log above: $STATE/containerd.log)"
        fi
        sleep 0.2
    done
    tail -30 "$STATE/containerd.log" >&2
    die "containerd did not answer within ${TIMEOUT}s (log: $STATE/containerd.log)"
}

start_dockerd() {
    local pid i
    if pid=$(pid_of "$DOCKER_PIDFILE" "$STATE/data"); then
        :
    else
        # Stale pidfile (crash, or pid reused by another process): dockerd
        # refuses to start while the pid in it is alive, so drop it.
        rm -f "$DOCKER_PIDFILE"
        # A killed dockerd leaves its socket behind; dockerd replaces it.
        log "starting dockerd (log: $STATE/dockerd.log)"
        echo "---- $(date -u +%FT%TZ) start" >>"$STATE/dockerd.log"
        setsid "${DOCKERD_CMD[@]}" >>"$STATE/dockerd.log" 2>&1 </dev/null 9>&- &
        pid=$!
    fi
    for ((i = 0; i < TIMEOUT * 5; i++)); do
        if timeout 10 docker info >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -40 "$STATE/dockerd.log" >&2
            die "dockerd exited during start (log above: $STATE/dockerd.log)"
        fi
        sleep 0.2
    done
    tail -40 "$STATE/dockerd.log" >&2
    die "dockerd did not answer \`docker info\` within ${TIMEOUT}s (log: $STATE/dockerd.log)"
}

build_image() {
    local sha id stamp root applet
    sha=$(sha256sum /bin/busybox | cut -c1-64)
    if id=$(dk image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null); then
        stamp="$sha $id"
        if [ -f "$STATE/image.stamp" ] && [ "$(cat "$STATE/image.stamp")" = "$stamp" ]; then
            return 0
        fi
    fi
    log "building $IMAGE from /bin/busybox"
    root=$(mktemp -d "${TMPDIR:-/tmp}/dockwire-rootfs.XXXXXX")
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var/log}
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    # Every applet as a relative link (busybox --install -s would point the
    # links at the host's path of the binary).
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] && continue
        ln -sf busybox "$root/bin/$applet"
    done
    for applet in sh echo sleep cat seq yes head printf true false date ls; do
        [ -L "$root/bin/$applet" ] || die "busybox lacks applet $applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
        dk import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/sh"]' \
            - "$IMAGE" >/dev/null || { rm -rf "$root"; die "docker import failed"; }
    rm -rf "$root"
    id=$(dk image inspect -f '{{.Id}}' "$IMAGE")
    echo "$sha $id" >"$STATE/image.stamp"
}

cmd_start() {
    ensure_packages
    write_configs
    start_containerd
    start_dockerd
    build_image
    log "ready: DOCKER_HOST=$DOCKER_HOST image=$IMAGE"
}

cmd_stop() {
    local pid ids
    if pid=$(pid_of "$DOCKER_PIDFILE" "$STATE/data"); then
        # --live-restore keeps containers running across a dockerd stop; stop
        # them first, as a plain dockerd shutdown would.
        ids=$(dk ps -q 2>/dev/null || true)
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086
            dk stop -t 2 $ids >/dev/null 2>&1 || log "warning: could not stop every container"
        fi
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 30; then
            log "dockerd did not stop within 30s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || true
        fi
        log "dockerd stopped"
    fi
    rm -f "$DOCKER_PIDFILE"
    if pid=$(pid_of "$CTRD_PIDFILE" "$STATE/containerd.toml"); then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 20; then
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || true
        fi
        log "containerd stopped"
    fi
    rm -f "$CTRD_PIDFILE"
    # Shims of containers that could not be stopped (e.g. stop after a crash).
    local p
    for p in $(pgrep -f "containerd-shim.*-address $CTRD_SOCK" || true); do
        pkill -KILL -P "$p" 2>/dev/null || true
        kill -KILL "$p" 2>/dev/null || true
    done
    # Mounts left under our runtime or state dir (netns, shm) after an unclean
    # stop, so that the state dir can be deleted.
    awk -v a="$RUN/" -v b="$STATE/" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/self/mounts |
        sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    # The runtime dir holds only sockets and run state, recreated by start.
    if ! pgrep -f "containerd-shim.*-address $CTRD_SOCK" >/dev/null; then
        rm -rf "$RUN"
    fi
}

cmd_env() {
    printf 'export DOCKER_HOST=%q\n' "$DOCKER_HOST"
    printf 'export DOCKWIRE_TEST_IMAGE=%q\n' "$IMAGE"
    printf 'export DOCKWIRE_TESTENV=%q\n' "$STATE"
}

# start and stop are serialized per state dir (fd 9 is closed for the daemons,
# so they do not inherit the lock).
lock() {
    exec 9>"$STATE/.lock"
    flock -w 600 9 || die "could not lock $STATE/.lock within 600s"
}

case "${1:-}" in
start) lock && cmd_start ;;
stop) lock && cmd_stop ;;
env) cmd_env ;;
status) timeout 10 docker info >/dev/null 2>&1 ;;
*)
    echo "usage: $0 start|stop|env|status" >&2
    exit 2
    ;;
esac
