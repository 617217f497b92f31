#!/usr/bin/env bash
# scripts/check-package.sh — the Debian package installs, works and goes:
# builds it (scripts/package.sh --profile dev: the debug build the test
# command made), `dpkg -i`, checks the system user (in the docker group when
# that exists), /etc/dockwire (root:dockwire 0750), the unit and the binary;
# as root `dockwire init` writes a config there, and the package's user runs
# `dockwire check-config` on it; then `dpkg --purge` removes the binary, the
# unit, the directory and the user. Needs root and dpkg; skips (exit 0, with
# a message) when dockwire is already installed from a package, so an
# operator's install is never touched.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
fail() {
    echo "check-package: FAIL: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
if dpkg-query -W -f '${Status}' dockwire 2>/dev/null | grep -q "install ok installed"; then
    echo "check-package: SKIP: a dockwire package is installed on this machine; not touching it"
    exit 0
fi
[ ! -e /etc/dockwire ] || fail "/etc/dockwire exists (not from a package): move it away to run this check"

DEB=$(scripts/package.sh --profile dev | tail -1)
echo "check-package: built $DEB"
cleanup() {
    dpkg --purge dockwire >/dev/null 2>&1 || true
}
trap cleanup EXIT

timeout 300 dpkg -i "$DEB"
[ -x /usr/bin/dockwire ] || fail "/usr/bin/dockwire missing"
[ -f /lib/systemd/system/dockwire.service ] || fail "unit missing"
grep -q '^ExecStart=/usr/bin/dockwire serve' /lib/systemd/system/dockwire.service ||
    fail "the unit does not run /usr/bin/dockwire"
getent passwd dockwire >/dev/null || fail "no dockwire user"
if getent group docker >/dev/null; then
    id -nG dockwire | tr ' ' '\n' | grep -qx docker || fail "dockwire is not in the docker group"
fi
[ "$(stat -c '%U:%G %a' /etc/dockwire)" = "root:dockwire 750" ] ||
    fail "/etc/dockwire is $(stat -c '%U:%G %a' /etc/dockwire), expected root:dockwire 750"

# The operator's first commands, as the README gives them.
/usr/bin/dockwire init --config /etc/dockwire/dockwire.toml >/dev/null
[ "$(stat -c '%G %a' /etc/dockwire/jwt.secret)" = "dockwire 640" ] ||
    fail "jwt.secret is $(stat -c '%G %a' /etc/dockwire/jwt.secret), expected group dockwire, 640"
out=$(runuser -u dockwire -- /usr/bin/dockwire check-config --config /etc/dockwire/dockwire.toml 2>&1) ||
    fail "check-config as the package's user: $out"
echo "check-package: as dockwire: $out"
case "$out" in *"browser auth on"*) ;; *) fail "the initial config has browser auth off" ;; esac
if runuser -u nobody -- cat /etc/dockwire/jwt.secret >/dev/null 2>&1; then
    fail "another user can read the JWT secret"
fi

timeout 300 dpkg --purge dockwire
[ ! -e /usr/bin/dockwire ] || fail "/usr/bin/dockwire left after purge"
[ ! -e /lib/systemd/system/dockwire.service ] || fail "unit left after purge"
[ ! -e /etc/dockwire ] || fail "/etc/dockwire left after purge"
! getent passwd dockwire >/dev/null || fail "dockwire user left after purge"
trap - EXIT
echo "check-package: installed, used and purged cleanly"
