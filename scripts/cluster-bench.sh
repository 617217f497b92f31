#!/usr/bin/env bash
# scripts/cluster-bench.sh — the cluster measurements of issue 13: three
# hubs (`dockwire serve` with [cluster]) on one nats-server, driven by
# dockwire-loadtest, against one hub without a cluster as the baseline.
# Prints one summary line per run; reports (JSON) stay in the work directory
# when CLUSTER_KEEP=1.
#
# Runs (each bounded by `timeout`):
#   base-agents     CLUSTER_AGENTS agents and CLUSTER_BROWSERS browsers on one
#                   hub without [cluster] (skipped when agents + browsers do not
#                   fit one hub's open-file limit)
#   within          the same spread over hubs a, b, c (agent i on hub i % 3),
#                   each browser on the hub of the agent it watches
#   across          the same, each browser on the next hub ((i + 1) % 3): every
#                   metrics message crosses NATS
#   base-fanout     one remote Docker agent (fanout --source remote-agent) and
#                   FANOUT_SUBS subscribers on one hub without [cluster]
#   fanout          the agent on hub a, the subscribers round robin over a, b, c;
#                   nats-server's /varz in/out msgs and bytes are read before and
#                   after and divided by the log_batch messages the agent sent
#                   (each becomes one frame at the owning hub)
#
# Environment (defaults):
#   CLUSTER_AGENTS=15000  CLUSTER_BROWSERS=1000  AGENT_INTERVAL=1s  AGENT_DURATION=15s
#   FANOUT_SUBS=1000  FANOUT_RATE=500 (lines/s)  FANOUT_BATCH=10 (lines per log_batch)
#   FANOUT_DURATION=10s  LT_PROCS=0 (loadtest workers, 0: by the open-file limit)
#   CLUSTER_RUNS="base-agents within across base-fanout fanout"  CLUSTER_KEEP=0
#   NATS_SERVER=/usr/sbin/nats-server  SKIP_BUILD=0
#   CLUSTER_JETSTREAM=0 (1: nats-server with JetStream, so log history is stored)
# At the default 15,000 agents the hubs of commit 0246ad3 stall for seconds
# while learning each other's servers (docs/performance.md, "Cluster over
# NATS"): `within` then times out part of its agents; 3,000–6,000 complete.
# Everything listens on and connects to 127.0.0.1; every process started here
# is stopped on exit, whatever happens.
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

AGENTS=${CLUSTER_AGENTS:-15000}
BROWSERS=${CLUSTER_BROWSERS:-1000}
AGENT_INTERVAL=${AGENT_INTERVAL:-1s}
AGENT_DURATION=${AGENT_DURATION:-15s}
FANOUT_SUBS=${FANOUT_SUBS:-1000}
FANOUT_RATE=${FANOUT_RATE:-500}
FANOUT_BATCH=${FANOUT_BATCH:-10}
FANOUT_DURATION=${FANOUT_DURATION:-10s}
LT_PROCS=${LT_PROCS:-0}
RUNS=${CLUSTER_RUNS:-base-agents within across base-fanout fanout}
NATS_SERVER=${NATS_SERVER:-/usr/sbin/nats-server}
for v in AGENTS BROWSERS FANOUT_SUBS FANOUT_RATE FANOUT_BATCH LT_PROCS; do
    case ${!v} in '' | *[!0-9]*) echo "cluster-bench: $v must be a number" >&2; exit 2 ;; esac
done
[ "$AGENTS" -ge 3 ] || { echo "cluster-bench: CLUSTER_AGENTS must be at least 3" >&2; exit 2; }
[ -x "$NATS_SERVER" ] || { echo "cluster-bench: no nats-server at $NATS_SERVER" >&2; exit 1; }

log() { printf 'cluster-bench: %s\n' "$*" >&2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    timeout 1800 cargo build --release --workspace --bins
fi
DOCKWIRE_BIN=$REPO/target/release/dockwire
LOADTEST_BIN=$REPO/target/release/dockwire-loadtest
for b in "$DOCKWIRE_BIN" "$LOADTEST_BIN"; do
    [ -x "$b" ] || { echo "cluster-bench: no binary at $b" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cluster-bench.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    if [ "${CLUSTER_KEEP:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

free_port() {
    timeout 10 python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT PID NAME LOG: up to 30 s for PORT to accept, while PID lives.
wait_port() {
    local i
    for ((i = 0; i < 300; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    log "$3 did not listen on $1; its log:"
    tail -30 "$4" >&2
    return 1
}

# stop PID: TERM, then KILL after 10 s.
stop() {
    local i
    kill -TERM "$1" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
}

# Agent keys: one per line in $KEYS, their sha256 as [[agents]] entries in
# $WORK/agents.toml, shared by every hub's config.
KEYS=$WORK/keys.txt
# 2 × AGENTS + 1 keys: within and across each get servers of their own (a
# hub keeps a server's recent metrics and would seed a browser of the next
# run with the last run's sequence numbers), and the fan-out agent a new one.
timeout 60 python3 - "$((2 * AGENTS + 1))" "$KEYS" "$WORK/agents.toml" <<'EOF'
import hashlib, os, sys
n, keys_path, toml_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(keys_path, "w") as keys, open(toml_path, "w") as toml:
    for i in range(n):
        key = f"bench-{i}-{os.urandom(16).hex()}"
        keys.write(key + "\n")
        toml.write(f'[[agents]]\nname = "bench-{i}"\nkey_sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n')
EOF

# write_config FILE PORT HUB_ID [NATS_PORT]: a hub's config (no [cluster] without NATS_PORT).
write_config() {
    {
        echo "listen = \"127.0.0.1:$2\""
        echo "server_id = \"host-$3\""
        echo "metrics_interval = \"1h\""
        if [ -n "${4:-}" ]; then
            echo "[cluster]"
            echo "nats_url = \"nats://127.0.0.1:$4\""
            echo "hub_id = \"$3\""
        fi
        cat "$WORK/agents.toml"
    } >"$1"
}

# start_hub NAME PORT [NATS_PORT]: sets HUB_PID.
start_hub() {
    write_config "$WORK/$1.toml" "$2" "$1" "${3:-}"
    "$DOCKWIRE_BIN" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    HUB_PID=$!
    PIDS+=("$HUB_PID")
    wait_port "$2" "$HUB_PID" "hub $1" "$WORK/$1.log"
}

# proc_cpu PID: utime + stime of PID in seconds.
proc_cpu() {
    awk -v t="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($12 + $13) / t}' "/proc/$1/stat"
}

varz() {
    timeout 10 curl -sf "http://127.0.0.1:$NATS_MON/varz"
}

# metric PORT NAME: a counter from a hub's /metrics (0 when absent).
metric() {
    timeout 10 curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2; f = 1} END {if (!f) print 0}'
}

# lt NAME TIMEOUT_S ARGS...: one loadtest run, report in $WORK/NAME.json.
lt() {
    local name=$1 secs=$2 rc=0
    shift 2
    log "---- $name: dockwire-loadtest $*"
    echo "dockwire-loadtest $*" >"$WORK/$name.cmd"
    timeout -k 10 "$secs" "$LOADTEST_BIN" "$@" --procs "$LT_PROCS" --json --quiet \
        >"$WORK/$name.json" 2>"$WORK/$name.err" || rc=$?
    if [ "$rc" -ne 0 ] || [ ! -s "$WORK/$name.json" ]; then
        log "$name exited $rc; its stderr:"
        tail -20 "$WORK/$name.err" >&2
        return 1
    fi
    tail -n 25 "$WORK/$name.err" >&2
}

# summary NAME [EXTRA-JSON-FILE]: one line of the figures the docs quote.
summary() {
    timeout 10 python3 - "$WORK/$1.json" "$1" "${2:-}" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); name = sys.argv[2]
c, m, l, s = r["connections"], r["messages"], r["latency"], r.get("server") or {}
print(f"{name}: conns {c['established']}/{c['attempted']} failed {c['failed']} dropped {c['dropped']} | "
      f"sent {m['sent']} expected {m['expected']} delivered {m['delivered']} lost {m['lost']} gaps {m['gaps']} "
      f"frames {m['frames']} | p50 {l['p50_us']/1000:.2f} ms p99 {l['p99_us']/1000:.2f} ms "
      f"max {l['max_us']/1000:.2f} ms | server cpu {s.get('cpu_s', 0):.2f} s "
      f"({s.get('cpu_cores', 0):.2f} cores, pids {s.get('pids') or s.get('pid')}) "
      f"{s.get('deliveries_per_cpu_s', 0):.0f} deliveries/cpu-s rss end {s.get('rss_end_bytes', 0)/2**20:.0f} MiB | "
      f"client cpu {r['client']['cpu_s']:.2f} s | complete {r['complete']}")
if sys.argv[3]:
    x = json.load(open(sys.argv[3]))
    batches = m["sent"] / x["batch"] if x["batch"] else 0
    print(f"{name}: nats over the run: in_msgs {x['in_msgs']} out_msgs {x['out_msgs']} "
          f"in_bytes {x['in_bytes']} out_bytes {x['out_bytes']} | log_batch messages sent by the agent {batches:.0f} | "
          f"per batch: in_msgs {x['in_msgs']/max(batches,1):.2f} out_msgs {x['out_msgs']/max(batches,1):.2f} "
          f"in_bytes {x['in_bytes']/max(batches,1):.0f} out_bytes {x['out_bytes']/max(batches,1):.0f} | "
          f"hub a messages sent to NATS: {x['hub_sent']:.0f} | idle (beats only) per s: in {x['idle_in_per_s']:.1f} out {x['idle_out_per_s']:.1f}")
    net_in = x["in_msgs"] - x["idle_in_per_s"] * x["run_s"]
    net_out = x["out_msgs"] - x["idle_out_per_s"] * x["run_s"]
    print(f"{name}: less {x['run_s']:.1f} s of beats: in_msgs {net_in:.0f} out_msgs {net_out:.0f} | "
          f"per batch: in {net_in/max(batches,1):.2f} out {net_out/max(batches,1):.2f} | "
          f"a per-browser relay would be {m['delivered']/max(m['sent'],1) * 2/3:.0f} out per batch")
EOF
}

SUMMARY=$WORK/summary.txt
: >"$SUMMARY"
has_run() { case " $RUNS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# The load generator's sockets: agents + browsers + 1 per worker's share;
# one hub holds them all in the baseline.
FITS_ONE_HUB=$((AGENTS + BROWSERS < 19500 ? 1 : 0))
head -n "$AGENTS" "$KEYS" >"$WORK/keys-within.txt"
sed -n "$((AGENTS + 1)),$((2 * AGENTS))p" "$KEYS" >"$WORK/keys-across.txt"
FIRST_KEY=$(sed -n "$((2 * AGENTS + 1))p" "$KEYS")

# ---- baseline: one hub, no cluster
if has_run base-agents || has_run base-fanout; then
    PORT0=$(free_port)
    start_hub solo "$PORT0"
    SOLO=$HUB_PID
    if has_run base-agents; then
        if [ "$FITS_ONE_HUB" = 1 ]; then
            lt base-agents 600 agents --target "127.0.0.1:$PORT0" --api-keys-file "$WORK/keys-within.txt" \
                --agents "$AGENTS" --browsers "$BROWSERS" --interval "$AGENT_INTERVAL" \
                --duration "$AGENT_DURATION" --settle 3s --setup-timeout 180s \
                --server-pid "$SOLO" && summary base-agents | tee -a "$SUMMARY"
        else
            echo "base-agents: skipped, $AGENTS agents + $BROWSERS browsers exceed one hub's 20,000 open files" | tee -a "$SUMMARY"
        fi
    fi
    if has_run base-fanout; then
        lt base-fanout 300 fanout --source remote-agent --target "127.0.0.1:$PORT0" \
            --api-key "$FIRST_KEY" --subscribers "$FANOUT_SUBS" --rate "$FANOUT_RATE" \
            --batch "$FANOUT_BATCH" --duration "$FANOUT_DURATION" --drain 2s --settle 2s \
            --server-pid "$SOLO" && summary base-fanout | tee -a "$SUMMARY"
    fi
    stop "$SOLO"
fi

# ---- the cluster: nats-server and hubs a, b, c
if has_run within || has_run across || has_run fanout; then
    NATS_PORT=$(free_port)
    NATS_MON=$(free_port)
    JS_ARGS=()
    # With JetStream the owner also stores each log frame (log history).
    [ "${CLUSTER_JETSTREAM:-0}" = 1 ] && JS_ARGS=(-js -sd "$WORK/jetstream")
    "$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" "${JS_ARGS[@]}" >"$WORK/nats.log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    wait_port "$NATS_MON" "$NATS_PID" nats-server "$WORK/nats.log"
    HUB_PORTS=()
    HUB_PIDS=()
    for h in a b c; do
        p=$(free_port)
        start_hub "$h" "$p" "$NATS_PORT"
        HUB_PORTS+=("$p")
        HUB_PIDS+=("$HUB_PID")
    done
    HUBS="127.0.0.1:${HUB_PORTS[0]},127.0.0.1:${HUB_PORTS[1]},127.0.0.1:${HUB_PORTS[2]}"
    PIDLIST="${HUB_PIDS[0]},${HUB_PIDS[1]},${HUB_PIDS[2]}"
    # Each hub must hear the other two before servers are spread over them.
    for ((i = 0; i < 100; i++)); do
        n=0
        for p in "${HUB_PORTS[@]}"; do
            if timeout 5 curl -sf "http://127.0.0.1:$p/healthz" | python3 -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)["cluster"]["peers"]) == 2 else 1)'; then
                n=$((n + 1))
            fi
        done
        [ "$n" = 3 ] && break
        sleep 0.2
    done
    [ "$n" = 3 ] || { log "the hubs did not all see each other"; exit 1; }

    for placement in within across; do
        has_run "$placement" || continue
        flag=same
        [ "$placement" = across ] && flag=other
        n0=$(proc_cpu "$NATS_PID")
        lt "$placement" 600 agents --agent-targets "$HUBS" --subscriber-targets "$HUBS" \
            --browser-placement "$flag" --api-keys-file "$WORK/keys-$placement.txt" \
            --agents "$AGENTS" --browsers "$BROWSERS" --interval "$AGENT_INTERVAL" \
            --duration "$AGENT_DURATION" --settle 3s --setup-timeout 180s \
            --server-pid "$PIDLIST" && summary "$placement" | tee -a "$SUMMARY"
        echo "$placement: nats-server cpu over the whole run (setup too): $(echo "$(proc_cpu "$NATS_PID") - $n0" | bc) s" | tee -a "$SUMMARY"
        # Agents of the last run go offline everywhere before the next one.
        sleep 10
    done

    if has_run fanout; then
        # NATS traffic with nothing but beats, for 10 s.
        v0=$(varz)
        sleep 10
        v1=$(varz)
        sent0=$(metric "${HUB_PORTS[0]}" dockwire_cluster_messages_sent_total)
        a0=$(varz)
        t0=$(date +%s.%N)
        n0=$(proc_cpu "$NATS_PID")
        lt fanout 300 fanout --source remote-agent --agent-targets "127.0.0.1:${HUB_PORTS[0]}" \
            --subscriber-targets "$HUBS" --api-key "$FIRST_KEY" --subscribers "$FANOUT_SUBS" \
            --rate "$FANOUT_RATE" --batch "$FANOUT_BATCH" --duration "$FANOUT_DURATION" \
            --drain 2s --settle 2s --server-pid "$PIDLIST" || true
        a1=$(varz)
        t1=$(date +%s.%N)
        echo "fanout: nats-server cpu over the whole run: $(echo "$(proc_cpu "$NATS_PID") - $n0" | bc) s" | tee -a "$SUMMARY"
        sent1=$(metric "${HUB_PORTS[0]}" dockwire_cluster_messages_sent_total)
        if [ -s "$WORK/fanout.json" ]; then
            timeout 10 python3 - "$v0" "$v1" "$a0" "$a1" "$FANOUT_BATCH" "$sent0" "$sent1" "$t0" "$t1" >"$WORK/fanout.nats.json" <<'EOF'
import json, sys
v0, v1, a0, a1 = (json.loads(x) for x in sys.argv[1:5])
d = lambda a, b, k: b[k] - a[k]
idle_s = 10.0
print(json.dumps({
    "in_msgs": d(a0, a1, "in_msgs"), "out_msgs": d(a0, a1, "out_msgs"),
    "in_bytes": d(a0, a1, "in_bytes"), "out_bytes": d(a0, a1, "out_bytes"),
    "batch": int(sys.argv[5]),
    "hub_sent": float(sys.argv[7]) - float(sys.argv[6]),
    "idle_in_per_s": d(v0, v1, "in_msgs") / idle_s, "idle_out_per_s": d(v0, v1, "out_msgs") / idle_s,
    "run_s": float(sys.argv[9]) - float(sys.argv[8]),
}))
EOF
            summary fanout "$WORK/fanout.nats.json" | tee -a "$SUMMARY"
        fi
    fi
    for p in "${HUB_PIDS[@]}"; do stop "$p"; done
    stop "$NATS_PID"
fi

log "summary ($(date -u +%H:%MZ)):"
cat "$SUMMARY"
