#!/usr/bin/env bash
# tests/vm/run-cgroup-tests.sh [NOOK_BIN INTEGRATION_TEST_EXE]
#
# The VM lane: the cgroup integration tests (module cgroup_vm of the integration
# executable, tests/tests/cgroup_vm.rs) inside a QEMU
# guest with a pure cgroup v2 hierarchy, as an unprivileged user with a delegated
# subtree (see vm.sh and init.sh). This host's own cgroups are hybrid and are never
# touched.
#
# Without arguments it builds nook and the test executable; tests/run.sh passes the ones
# it built. Started by root, it installs what the guest needs when missing (Debian):
# qemu-system-x86 (from bookworm-backports when qemu-utils come from there, as on these
# machines: the two must match), linux-image-amd64, busybox-static, cpio. Started by
# anyone else with something missing, it prints one SKIP line and exits 0.
#
# Output: the guest's libtest output, whose `test result:` line tests/run.sh counts; the
# exit status is the test executable's (124: the VM timed out, 125: it gave no result).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
START=$SECONDS

missing() {
    local m=""
    command -v qemu-system-x86_64 >/dev/null || m="$m qemu-system-x86"
    ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1 && ls -d /lib/modules/*-amd64 >/dev/null 2>&1 || m="$m linux-image-amd64"
    # busybox-static: a static /bin/busybox (ldd refuses static executables)
    [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || m="$m busybox-static"
    command -v cpio >/dev/null || m="$m cpio"
    echo "$m"
}

install_packages() {
    local need=$1 bpo=""
    export DEBIAN_FRONTEND=noninteractive
    # qemu-utils from bookworm-backports need the matching qemu-system-x86.
    if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo12; then
        bpo=/etc/apt/sources.list.d/bookworm-backports.sources
        if [ ! -e "$bpo" ] && [ -e /etc/apt/sources.list.d/debian.sources ]; then
            awk 'BEGIN { RS = ""; ORS = "\n\n" } NR == 1' /etc/apt/sources.list.d/debian.sources \
                | sed 's/^Suites:.*/Suites: bookworm-backports/' >"$bpo"
        fi
    fi
    apt-get update -q >/dev/null || return 1
    for p in $need; do
        if [ "$p" = qemu-system-x86 ] && [ -n "$bpo" ]; then
            apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 </dev/null || return 1
        else
            apt-get install -y -q --no-install-recommends "$p" </dev/null || return 1
        fi
    done
}

need=$(missing)
if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "vm-lane: installing$need"
        install_packages "$need" >/dev/null || { echo "vm-lane: installing$need failed" >&2; exit 1; }
        need=$(missing)
        [ -z "$need" ] || { echo "vm-lane: still missing:$need" >&2; exit 1; }
    else
        echo "SKIP: vm-lane: missing$need (as root: apt-get install$need; qemu-system-x86 from bookworm-backports where qemu-utils are)"
        echo "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
        exit 0
    fi
fi

if [ $# -ge 2 ]; then
    NOOK=$1; EXE=$2
else
    cd "$ROOT" || exit 1
    cargo build -q -p nook-cli || exit 1
    EXE=$(cargo test -q -p nook-tests --test integration --no-run --message-format=json 2>/dev/null \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
    NOOK=$ROOT/target/debug/nook
    [ -x "$EXE" ] || { echo "vm-lane: building the integration test executable failed" >&2; exit 1; }
fi

# The guest's /tmp is its own; the binaries travel in a shared directory.
SHARE=$(mktemp -d /tmp/nook-vm-share.XXXXXX) || exit 1
trap 'rm -rf "$SHARE"' EXIT
cp "$NOOK" "$SHARE/nook" && cp "$EXE" "$SHARE/integration" || exit 1
chmod 755 "$SHARE" "$SHARE/nook" "$SHARE/integration"

echo "vm-lane: booting the guest (pure cgroup v2, delegated subtree) to run cgroup_vm"
cd "$SHARE" || exit 1
"$HERE/vm.sh" -s "$SHARE" -m 1G -c 2 -t "${NOOK_VM_TIMEOUT:-420}" -- \
    "NOOK_BIN=$SHARE/nook exec $SHARE/integration cgroup_vm:: --test-threads=1"
rc=$?
echo "vm-lane: finished in $((SECONDS - START)) s (exit $rc)"
exit $rc
