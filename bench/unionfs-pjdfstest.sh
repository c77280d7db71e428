#!/usr/bin/env bash
# pjdfstest (POSIX filesystem semantics) in a nook container root, per storage driver.
#
#   bench/unionfs-pjdfstest.sh PJDFSTEST_DIR [DRIVER...]      (default drivers: overlay fuse)
#
# PJDFSTEST_DIR is a built checkout of https://github.com/pjd/pjdfstest (its `pjdfstest`
# binary beside `tests/`; nook does not ship it). Run as an unprivileged user with
# subordinate IDs (the tests chown to 65534 and friends). The container's root is one
# read-only layer built here: busybox with all applets, perl and prove with the
# libraries they link, and the pjdfstest checkout; the tests run in a fresh directory of
# the union as the container's root, with every capability. Prints one line per driver.
set -uo pipefail
PJD=$(cd "${1:?usage: $0 PJDFSTEST_DIR [DRIVER...]}" && pwd)
shift
DRIVERS=${*:-overlay fuse}
NOOK=${NOOK:-$(dirname "$0")/../target/release/nook}
[ -x "$NOOK" ] || NOOK=$(dirname "$0")/../target/debug/nook
[ -x "$PJD/pjdfstest" ] || { echo "no $PJD/pjdfstest: build pjdfstest first" >&2; exit 2; }
command -v prove >/dev/null || { echo "prove missing: apt-get install perl" >&2; exit 2; }
L=$(mktemp -d /tmp/nook-pjd-layer.XXXXXX)
chmod 755 "$L"
mkdir -p "$L"/{bin,proc,dev,sys,tmp,etc,usr/lib,usr/lib64}
ln -s usr/lib "$L/lib"          # merged /usr, as on the host
ln -s usr/lib64 "$L/lib64"
cp "$(command -v busybox)" "$L/bin/busybox"
for a in $("$L/bin/busybox" --list); do [ -e "$L/bin/$a" ] || ln -s busybox "$L/bin/$a"; done
copy() { mkdir -p "$L$(dirname "$1")" && cp -a "$1" "$L$(dirname "$1")/"; }
for f in /usr/bin/perl /usr/bin/prove /usr/bin/openssl; do
    copy "$f"
    for lib in $(ldd "$f" | grep -o '/[^ :]*'); do copy "$lib"; copy "$(readlink -f "$lib")"; done
done
for lib in $(ldd "$PJD/pjdfstest" | grep -o '/[^ :]*'); do copy "$lib"; copy "$(readlink -f "$lib")"; done
for d in /usr/share/perl /usr/share/perl5 /usr/lib/x86_64-linux-gnu/perl /usr/lib/x86_64-linux-gnu/perl5 \
         /usr/lib/x86_64-linux-gnu/perl-base /usr/lib/aarch64-linux-gnu/perl-base /usr/lib/ssl; do
    [ -d "$d" ] && copy "$d"
done
copy "$PJD"
echo 'root:x:0:0:root:/root:/bin/sh' >"$L/etc/passwd"
for d in $DRIVERS; do
    ctr=$(mktemp -d /tmp/nook-pjd.XXXXXX)
    log=$(mktemp /tmp/nook-pjd-$d.XXXXXX)
    "$NOOK" run --rm --storage-driver "$d" --cap-add ALL --layer "$L" --rootfs "$ctr" /bin/sh -c \
        "mkdir -p /pjd-work && cd /pjd-work && prove -r $PJD/tests" >"$log" 2>&1
    files=$(grep -E '^Files=' "$log" | sed 's/,.*//')
    result=$(grep -E '^Result:' "$log")
    failed=$(grep -E '^Failed [0-9]+/[0-9]+ subtests' "$log" | awk '{split($2,a,"/"); f+=a[1]} END {print f+0}')
    total=$(grep -E '^Files=' "$log" | sed -n 's/.*Tests=\([0-9]*\).*/\1/p')
    badfiles=$(grep -cE '^/.*\(Wstat: [0-9]+ .*Tests: [0-9]+ Failed: [0-9]+\)' "$log")
    echo "$d: $files Tests=$total failed_tests=$failed failed_files=$badfiles $result (log $log)"
    "$NOOK" unshare rm -rf "$ctr"
done
rm -rf "$L"
