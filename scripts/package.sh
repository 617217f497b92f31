#!/usr/bin/env bash
# scripts/package.sh — the Debian package (cargo-deb): /usr/bin/dockwire, the
# systemd unit (systemd/dockwire.service with /usr/bin paths), README; its
# postinst makes the `dockwire` system user (in the `docker` group when that
# exists) and /etc/dockwire (root:dockwire 0750); purge removes both.
#
# Usage: scripts/package.sh [--profile release|dev]   (default release)
# Prints the path of the .deb on its last line. Installs cargo-deb (pinned)
# when it is missing. `--profile dev` packages the debug build the test
# command already made (to test the packaging, not to ship).
set -euo pipefail
CARGO_DEB_VERSION=3.8.0
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PROFILE=release
if [ "${1:-}" = "--profile" ]; then
    PROFILE=${2:?--profile needs release or dev}
fi
case "$PROFILE" in release | dev) ;; *)
    echo "package.sh: --profile release|dev" >&2
    exit 2
    ;;
esac
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "package.sh: installing cargo-deb $CARGO_DEB_VERSION" >&2
    timeout 1800 cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" >&2
fi
mkdir -p target/package
sed 's#/usr/local/bin/dockwire#/usr/bin/dockwire#g' systemd/dockwire.service >target/package/dockwire.service
if [ "$PROFILE" = release ]; then
    timeout 3600 cargo build --release --bin dockwire >&2
    DEB=$(cargo deb --no-build --no-strip --output target/package/ 2>&1 | tail -1)
else
    # cargo-deb reads the asset from target/release: stage the debug binary there.
    timeout 1800 cargo build --bin dockwire >&2
    mkdir -p target/package/dev/release
    cp target/debug/dockwire target/package/dev/release/dockwire
    DEB=$(CARGO_TARGET_DIR=target/package/dev cargo deb --no-build --no-strip --output target/package/ 2>&1 | tail -1)
fi
[ -f "$DEB" ] || {
    echo "package.sh: cargo deb did not report a package: $DEB" >&2
    exit 1
}
echo "$DEB"
