#!/usr/bin/env bash
# The Debian image of the real-workload lane (tests/workloads/): Debian bookworm, minbase
# variant, made with debootstrap from Debian's own packages, as a zstd tarball for
# `nook import`. tests/run.sh runs this in its root phase (debootstrap chroots and
# creates device nodes, so it needs root) and hands the tarball to the lane.
#
#   bash tests/workloads/debian-image.sh CACHE_DIR
#
# Prints the tarball's path and exits 0; otherwise prints one line saying why it could
# not be made (deb.debian.org unreachable, debootstrap missing, ...) and exits 1.
#
# Cached: the tarball's name holds a checksum of everything that shapes it (suite,
# variant, architecture, package list, this script's version), so a changed list makes a
# new one and an unchanged list reuses it; one older than NOOK_WORKLOAD_MAX_AGE_DAYS
# (default 30) is made again, so the image does not drift far from the archive it
# installs from. Older tarballs of other keys are removed. Runs under a lock, so two
# suites started at once build it once.
#
# The compilers and interpreters the lane uses (gcc, git, python3-venv) are in the
# debootstrap list, so the lane downloads only what it installs to prove apt.
set -uo pipefail

CACHE=${1:?usage: $0 CACHE_DIR}
SUITE=bookworm
VARIANT=minbase
MIRROR=${NOOK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
INCLUDE=gcc,libc6-dev,git,python3-venv
MAX_AGE=${NOOK_WORKLOAD_MAX_AGE_DAYS:-30}
# Bump when the steps below change what the tarball holds.
VERSION=1

fail() { echo "$*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "debootstrap needs root (run tests/run.sh as root, or set NOOK_WORKLOAD_TARBALL)"
command -v debootstrap >/dev/null 2>&1 || fail "debootstrap is not installed (apt-get install debootstrap)"
command -v zstd >/dev/null 2>&1 || fail "zstd is not installed (apt-get install zstd)"
ARCH=$(dpkg --print-architecture 2>/dev/null) || fail "dpkg --print-architecture failed"

KEY=$(printf '%s\n' "$SUITE" "$VARIANT" "$ARCH" "$INCLUDE" "$VERSION" | sha256sum | cut -c1-12)
NAME=debian-$SUITE-$VARIANT-$ARCH-$KEY.tar.zst
TARBALL=$CACHE/$NAME

install -d -m 755 "$CACHE" || fail "cannot create $CACHE"
exec 9>"$CACHE/.lock" || fail "cannot open $CACHE/.lock"
flock 9

if [ -s "$TARBALL" ] && [ -n "$(find "$TARBALL" -mtime "-$MAX_AGE" 2>/dev/null)" ]; then
    echo "$TARBALL"
    exit 0
fi

# Reachability first, so an offline machine says so in one line instead of debootstrap's
# retries.
if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 20 -o /dev/null "$MIRROR/dists/$SUITE/Release" 2>/dev/null \
        || fail "$MIRROR/dists/$SUITE/Release cannot be fetched from this machine (offline, or set NOOK_DEBIAN_MIRROR)"
elif command -v wget >/dev/null 2>&1; then
    wget -q -T 20 -O /dev/null "$MIRROR/dists/$SUITE/Release" \
        || fail "$MIRROR/dists/$SUITE/Release cannot be fetched from this machine (offline, or set NOOK_DEBIAN_MIRROR)"
fi

WORK=$(mktemp -d "$CACHE/build.XXXXXX") || fail "mktemp in $CACHE failed"
trap 'rm -rf "$WORK"' EXIT
LOG=$CACHE/debootstrap.log
if ! debootstrap --variant="$VARIANT" --include="$INCLUDE" --arch="$ARCH" \
        "$SUITE" "$WORK/root" "$MIRROR" >"$LOG" 2>&1; then
    fail "debootstrap $SUITE failed: $(grep -E '^(E|W):' "$LOG" | tail -n1) (log $LOG)"
fi
# What the lane must fetch itself: no package lists, no downloaded .debs.
rm -rf "$WORK"/root/var/lib/apt/lists/* "$WORK"/root/var/cache/apt/archives/*.deb \
    "$WORK"/root/var/cache/apt/*.bin "$WORK"/root/var/log/bootstrap.log
mkdir -p "$WORK/root/var/lib/apt/lists/partial"
tar -C "$WORK/root" --numeric-owner --xattrs --xattrs-include='*' -cf - . \
    | zstd -q -T0 -3 -o "$WORK/$NAME" || fail "tar of the debootstrap root failed"
chmod 644 "$WORK/$NAME"
find "$CACHE" -maxdepth 1 -name "debian-$SUITE-*.tar.zst" ! -name "$NAME" -delete
mv -f "$WORK/$NAME" "$TARBALL" || fail "cannot move the tarball into $CACHE"
echo "$TARBALL"
