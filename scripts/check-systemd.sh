#!/usr/bin/env bash
# scripts/check-systemd.sh — hardening check of systemd/dockwire.service.
#
# Runs `systemd-analyze security --offline=true` on the unit file (works
# without a running systemd, e.g. in a container) and fails when the overall
# exposure is above MAX (default 2.0, override with DOCKWIRE_MAX_EXPOSURE) or
# when systemd reports a directive it does not know or cannot parse.
# Installs Debian's systemd package when systemd-analyze is missing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UNIT=${1:-$REPO/systemd/dockwire.service}
MAX=${DOCKWIRE_MAX_EXPOSURE:-2.0}

if ! command -v systemd-analyze >/dev/null; then
    echo "check-systemd: installing systemd (for systemd-analyze)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
    timeout 900 "${apt[@]}" install --no-install-recommends systemd >/dev/null ||
        { timeout 600 "${apt[@]}" update >/dev/null && timeout 900 "${apt[@]}" install --no-install-recommends systemd >/dev/null; }
fi

out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
rc=0
timeout 120 systemd-analyze security --offline=true --no-pager "$UNIT" >"$out" 2>"$err" || rc=$?
if [ "$rc" -ne 0 ]; then
    cat "$out" "$err" >&2
    echo "check-systemd: systemd-analyze failed (exit $rc)" >&2
    exit 1
fi
if grep -E 'Unknown|Failed to parse|ignoring' "$err" >&2; then
    echo "check-systemd: $UNIT has directives systemd ignores (above)" >&2
    exit 1
fi
grep '✗' "$out" || true
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$out")
if [ -z "$score" ]; then
    cat "$out" >&2
    echo "check-systemd: no exposure level in systemd-analyze's output" >&2
    exit 1
fi
if awk -v s="$score" -v m="$MAX" 'BEGIN { exit !(s + 0 > m + 0) }'; then
    echo "check-systemd: exposure $score is above $MAX" >&2
    exit 1
fi
echo "check-systemd: $(basename "$UNIT") exposure $score (limit $MAX): OK"
