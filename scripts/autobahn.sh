#!/usr/bin/env bash
# scripts/autobahn.sh — Autobahn TestSuite fuzzingclient cases 1.* to 13.*
# against a WebSocket echo endpoint, driven by kosoku (PyPI, pinned below).
#
# Usage: scripts/autobahn.sh ws://127.0.0.1:PORT/debug/echo
#
# kosoku runs the Autobahn case files (Python) on a Rust runner; its Python API
# `kosoku.run_fuzzingclient(url, cases, exclude_cases, concurrency)` returns one
# CaseResult per case (or raises kosoku.FailureError carrying all results).
# This script runs every case: categories 1-7, 9 and 10 (there is no 8), and
# 12 and 13 (permessage-deflate: the endpoint accepts the offers it can honour,
# so 13.3.* and 13.5.*, which ask for a 9-bit server window, are declined and
# report UNIMPLEMENTED), and fails unless every case passed:
#   behavior       in OK, NON-STRICT, INFORMATIONAL (UNIMPLEMENTED tolerated)
#   behavior_close in OK, INFORMATIONAL
# and every category 1-7, 9, 10, 12, 13 was run. It prints one summary line with the
# counts per verdict and `autobahn: N passed, N failed`; the failing cases are
# listed before it (all on stdout, in order). Per-case HTML/JSON reports go to $DOCKWIRE_AUTOBAHN_REPORTS
# (default $REPO/target/autobahn).
#
# Environment:
#   DOCKWIRE_AUTOBAHN_CONCURRENCY  cases run in parallel (default 2)
#   DOCKWIRE_AUTOBAHN_TIMEOUT      seconds for the whole run (default 1800; 1.*-13.*
#                                  take ~12 min at concurrency 2 on 2 busy cores)
#   DOCKWIRE_AUTOBAHN_CASES        space-separated case globs to run instead of
#                                  the default set (for debugging, e.g. "9.1.*")
set -euo pipefail

KOSOKU_VERSION=0.1.0
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ $# -ne 1 ]; then
    echo "usage: $0 ws://HOST:PORT/PATH" >&2
    exit 2
fi
URL=$1

have_kosoku() {
    python3 - "$KOSOKU_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import kosoku  # noqa: F401
sys.exit(0 if version("kosoku") == sys.argv[1] else 1)
EOF
}

if ! have_kosoku; then
    echo "autobahn: installing kosoku==$KOSOKU_VERSION" >&2
    timeout 600 python3 -m pip install -q --disable-pip-version-check "kosoku==$KOSOKU_VERSION" >&2
    have_kosoku || {
        echo "autobahn: kosoku==$KOSOKU_VERSION is not importable after install" >&2
        exit 1
    }
fi

export DOCKWIRE_AUTOBAHN_REPORTS=${DOCKWIRE_AUTOBAHN_REPORTS:-$REPO/target/autobahn}

# The Python side bounds the run itself (asyncio.wait_for); the outer timeout
# is a backstop should the native runner ignore cancellation.
HARD_LIMIT=$((${DOCKWIRE_AUTOBAHN_TIMEOUT:-1800} + 60))
exec timeout -k 10 "$HARD_LIMIT" python3 - "$URL" <<'EOF'
import asyncio
import collections
import os
import socket
import sys
import time
import urllib.parse

import kosoku

url = sys.argv[1]
concurrency = int(os.environ.get("DOCKWIRE_AUTOBAHN_CONCURRENCY", "2"))
deadline = float(os.environ.get("DOCKWIRE_AUTOBAHN_TIMEOUT", "1800"))
reports = os.environ["DOCKWIRE_AUTOBAHN_REPORTS"]
custom = os.environ.get("DOCKWIRE_AUTOBAHN_CASES", "").split()

OK_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
OK_CLOSE = {"OK", "INFORMATIONAL"}
CATEGORIES = {"1", "2", "3", "4", "5", "6", "7", "9", "10", "12", "13"}


def wait_reachable(url, seconds):
    """Fail fast with a clear message when nothing listens at the URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        sys.exit(f"autobahn: not a ws:// URL: {url}")
    port = parts.port or 80
    end = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((parts.hostname, port), timeout=2).close()
            return
        except OSError as err:
            if time.monotonic() > end:
                sys.exit(f"autobahn: could not connect to {parts.hostname}:{port}: {err}")
            time.sleep(0.2)


async def run():
    cases = custom or None
    exclude = None
    try:
        return await asyncio.wait_for(
            kosoku.run_fuzzingclient(url, cases, exclude, concurrency=concurrency),
            timeout=deadline,
        )
    except kosoku.FailureError as failure:
        return list(failure.results)


wait_reachable(url, 10)
started = time.monotonic()
try:
    results = asyncio.run(run())
except asyncio.TimeoutError:
    print(f"autobahn: run did not finish within {deadline:.0f}s", file=sys.stderr)
    print("autobahn: 0 passed, 1 failed")
    sys.exit(1)
elapsed = time.monotonic() - started

try:
    from kosoku._report import write_reports

    write_reports(results, reports)
except Exception as err:  # reports are a debugging aid, never the verdict
    print(f"autobahn: could not write reports to {reports}: {err}", file=sys.stderr)

behaviors = collections.Counter(r.behavior.value for r in results)
closes = collections.Counter(r.behavior_close.value for r in results)
failed = [
    r for r in results
    if r.behavior.value not in OK_BEHAVIOR or r.behavior_close.value not in OK_CLOSE
]
for r in failed[:60]:
    print(
        f"autobahn: FAIL {r.case_id}: behavior={r.behavior.value} "
        f"close={r.behavior_close.value} ({r.result}; {r.result_close}; "
        f"remote close {r.remote_close_code} {r.remote_close_reason!r})"
    )
if len(failed) > 60:
    print(f"autobahn: ... and {len(failed) - 60} more failures")

problems = []
if not results:
    problems.append("no case ran")
if not custom:
    missing = CATEGORIES - {r.case_id.split(".")[0] for r in results}
    if missing:
        problems.append("categories not run: " + ", ".join(sorted(missing, key=int)))
for p in problems:
    print(f"autobahn: {p}")

fmt = lambda c: " ".join(f"{k}={v}" for k, v in sorted(c.items()))
print(
    f"autobahn: {len(results)} cases in {elapsed:.1f}s against {url}; "
    f"behavior {fmt(behaviors)}; close {fmt(closes)}; reports in {reports}"
)
print(f"autobahn: {len(results) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed or problems else 0)
EOF
