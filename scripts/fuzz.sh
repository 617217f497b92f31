#!/usr/bin/env bash
# scripts/fuzz.sh — runs dockwire's fuzz targets (fuzz/fuzz_targets/*.rs).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]
#   SECONDS_PER_TARGET  default 600 (the long run); the test command uses a
#                       few seconds per target (DOCKWIRE_STAGES=fuzz).
#   TARGET...           default: every target in fuzz/Cargo.toml.
#
# Runs on the stable toolchain: cargo-fuzz is installed with `cargo install`
# when missing, and RUSTC_BOOTSTRAP=1 lets stable rustc take the sanitizer
# flags libFuzzer needs. Seeds live in fuzz/corpus/<target>/ (kept in the
# repository); what a run finds goes to target/fuzz-corpus/<target>/ and is
# reused by the next run. A crash fails
# the run (non-zero exit, after the other targets ran) and leaves its input in
# fuzz/artifacts/<target>/; fix it with a regression test that replays it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

SECONDS_PER_TARGET=${1:-600}
shift || true
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"/\1/p' fuzz/Cargo.toml | grep -v '^dockwire-fuzz$')
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
# One job: the machine has 2 cores and the build itself takes the other.
FAILED=()
LOG=$(mktemp "${TMPDIR:-/tmp}/dockwire-fuzz.XXXXXX")
trap 'rm -f "$LOG"' EXIT
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t" "target/fuzz-corpus/$t"
    echo "==== fuzz $t for ${SECONDS_PER_TARGET}s"
    rc=0
    cargo fuzz run "$t" --release --debug-assertions "target/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -print_final_stats=1 \
        >"$LOG" 2>&1 || rc=$?
    grep -E '^(#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|thread .* panicked|error)' "$LOG" | tail -6 || true
    if [ "$rc" -ne 0 ]; then
        tail -40 "$LOG"
        echo "fuzz.sh: $t FAILED (exit $rc; input in fuzz/artifacts/$t/)"
        FAILED+=("$t")
    fi
done
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${FAILED[*]}"
    exit 1
fi
echo "fuzz.sh: ${#TARGETS[@]} targets, ${SECONDS_PER_TARGET}s each, no crash"
