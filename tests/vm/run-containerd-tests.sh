#!/usr/bin/env bash
# tests/vm/run-containerd-tests.sh NOOK_BIN INTEGRATION_TEST_EXE
#
# containerd's rootful tests (tests/tests/containerd.rs, `rootful_*`) on a pure cgroup v2
# host: the VM lane's guest (vm.sh: Debian's kernel, the host's / read-only, every
# controller on cgroup v2), as root there, because containerd's rootful mode is what
# they prove. There nook has a cgroup for each container, so the tests take their
# cgroup v2 branches: pause/resume, a memory limit ending in an OOM kill (137), and a
# CRI pod with the CRI's defaults (the sandbox's CPU shares). This host's cgroups
# are hybrid and are never touched.
#
# Needs what run-cgroup-tests.sh installs (qemu-system-x86, linux-image-amd64); without
# them it prints one SKIP line. Under QEMU's software CPU (no hardware KVM) the run takes
# about 3 minutes.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
START=$SECONDS
NOOK=${1:?usage: $0 NOOK_BIN INTEGRATION_TEST_EXE}
EXE=${2:?usage: $0 NOOK_BIN INTEGRATION_TEST_EXE}

if ! command -v qemu-system-x86_64 >/dev/null || ! ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1; then
    echo "SKIP: vm-containerd: qemu-system-x86 or linux-image-amd64 is missing (the vm-lane step installs them)"
    echo "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
    exit 0
fi

SHARE=$(mktemp -d /tmp/nook-vm-containerd.XXXXXX) || exit 1
trap 'rm -rf "$SHARE"' EXIT
cp "$NOOK" "$SHARE/nook" && cp "$EXE" "$SHARE/integration" || exit 1
chmod 755 "$SHARE" "$SHARE/nook" "$SHARE/integration"

echo "vm-containerd: booting the guest (pure cgroup v2) to run containerd's rootful tests as its root"
cd "$SHARE" || exit 1
"$HERE/vm.sh" -s "$SHARE" -u 0 -m 2G -c 2 -t "${NOOK_VM_TIMEOUT:-580}" -- \
    "NOOK_BIN=$SHARE/nook exec $SHARE/integration containerd::rootful_ --test-threads=1"
rc=$?
echo "vm-containerd: finished in $((SECONDS - START)) s (exit $rc)"
exit $rc
