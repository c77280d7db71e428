#!/bin/bash
# tests/vm/vm.sh [-s SHARE] [-u UID[:GID]] [-m MEM] [-c CPUS] [-t SECS] -- 'shell command'
#
# Boots Debian's stock kernel (linux-image-amd64) in QEMU with a pure cgroup v2 hierarchy
# and runs the command in the guest as UID (default: the account nooktest, else 1000),
# in a cgroup subtree delegated to it; see init.sh for the guest's layout. The guest sees
# the host's / read-only and SHARE (default $PWD) read-write at the same path; /tmp, /run
# and /var/tmp are its own tmpfs. The command's stdout and stderr are ours; the exit
# status is the command's, 124 on timeout, 125 when the VM gave no result (the kernel's
# console log then goes to stderr).
#
# /dev/kvm is used when it is real KVM (kvm_intel/kvm_amd); otherwise QEMU's software CPU
# (TCG), where the guest runs about 30x slower than the host.
# env: LANE_KVER (kernel version), LANE_CACHE (initramfs cache), LANE_CONSOLE=1 (show
# the kernel console), LANE_ACCEL=tcg|kvm.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARE=$PWD
if id -u nooktest >/dev/null 2>&1; then USERSPEC="$(id -u nooktest):$(id -g nooktest)"; else USERSPEC=1000:1000; fi
MEM=1G; CPUS=2; TIMEOUT=0
while getopts "s:u:m:c:t:" opt; do
    case $opt in
        s) SHARE=$(cd "$OPTARG" && pwd) ;;
        u) USERSPEC=$OPTARG ;;
        m) MEM=$OPTARG ;;
        c) CPUS=$OPTARG ;;
        t) TIMEOUT=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || { echo "usage: vm.sh [-s dir] [-u uid[:gid]] [-m mem] [-c cpus] [-t secs] -- 'command'" >&2; exit 2; }
LANE_UID=${USERSPEC%%:*}; LANE_GID=${USERSPEC#*:}; [ "$LANE_GID" = "$USERSPEC" ] && LANE_GID=$LANE_UID

KVER=${LANE_KVER:-$(ls /lib/modules 2>/dev/null | grep -E -- '-amd64$' | grep -v cloud | sort -V | tail -n1)}
[ -n "$KVER" ] && [ -f "/boot/vmlinuz-$KVER" ] || { echo "vm.sh: no Debian amd64 kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 125; }
command -v qemu-system-x86_64 >/dev/null || { echo "vm.sh: qemu-system-x86_64 missing (see tests/vm/run-cgroup-tests.sh)" >&2; exit 125; }

CACHE=${LANE_CACHE:-${TMPDIR:-/tmp}/nook-vm-lane}
mkdir -p "$CACHE"
INITRD=$CACHE/initrd-$KVER.cpio
for f in mkinitrd.sh init.sh guest.sh; do [ "$HERE/$f" -nt "$INITRD" ] && rm -f "$INITRD"; done
[ -s "$INITRD" ] || "$HERE/mkinitrd.sh" "$KVER" "$INITRD" || exit 125

# microvm boots an ELF kernel through PVH (a bzImage gives no output at all): extract it
# once. PVH skips the kernel's timer calibration, so under TCG it is told the TSC rate.
KERNEL=$CACHE/vmlinux-$KVER
[ -s "$KERNEL" ] && [ "/boot/vmlinuz-$KVER" -ot "$KERNEL" ] \
    || python3 "$HERE/vmlinux.py" "/boot/vmlinuz-$KVER" "$KERNEL" || exit 125

ACCEL=${LANE_ACCEL:-}
if [ -z "$ACCEL" ]; then
    if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then ACCEL=kvm; else ACCEL=tcg; fi
fi
TSC=""
if [ "$ACCEL" = kvm ]; then
    ACCEL_OPTS=(-accel kvm -cpu host)
else
    ACCEL_OPTS=(-accel tcg,thread=multi,tb-size=512 -cpu max)
    TSC="tsc_early_khz=$(awk -F': *' '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)"
fi

IO=$(mktemp -d /tmp/nook-vm-io.XXXXXX); chmod 755 "$IO"
FIFOS=$(mktemp -d /tmp/nook-vm-fifo.XXXXXX)
trap 'rm -rf "$IO" "$FIFOS"' EXIT
# The guest's output arrives through FIFOs drained by cat into our own stdout/stderr
# (QEMU's file chardev must not be pointed at /proc/self/fd/N: it truncates the target).
mkfifo "$FIFOS/out" "$FIFOS/err"
cat "$FIFOS/out" & CAT_OUT=$!
cat "$FIFOS/err" >&2 & CAT_ERR=$!
if [ $# -eq 1 ]; then printf '%s\n' "$1"; else printf 'exec'; printf ' %q' "$@"; echo; fi >"$IO/cmd.sh"
printf 'LANE_UID=%s\nLANE_GID=%s\nLANE_SHARE=%q\nLANE_CWD=%q\n' "$LANE_UID" "$LANE_GID" "$SHARE" "$PWD" >"$IO/env"
CONSOLE=$IO/console.log; [ "${LANE_CONSOLE:-0}" = 1 ] && CONSOLE=/dev/stderr
WRAP=(); [ "$TIMEOUT" != 0 ] && WRAP=(timeout -k 5 "$TIMEOUT")
# microvm: no PCI, no firmware tables beyond ACPI; pit/pic off (some TCG boots hang with
# them); cgroup_no_v1=all keeps every controller on the v2 hierarchy.
"${WRAP[@]}" qemu-system-x86_64 -M microvm,acpi=on,rtc=on,pit=off,pic=off "${ACCEL_OPTS[@]}" \
    -smp "$CPUS" -m "$MEM" -nodefaults -no-user-config -display none -no-reboot \
    -chardev file,id=console,path="$CONSOLE",append=on -serial chardev:console \
    -device virtio-serial-device \
    -chardev file,id=out,path="$FIFOS/out" -device virtserialport,chardev=out,name=lane.out \
    -chardev file,id=err,path="$FIFOS/err" -device virtserialport,chardev=err,name=lane.err \
    -fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-device,fsdev=root,mount_tag=hostroot \
    -fsdev local,id=io,path="$IO",security_model=none -device virtio-9p-device,fsdev=io,mount_tag=lane \
    -fsdev local,id=share,path="$SHARE",security_model=passthrough,multidevs=remap \
    -device virtio-9p-device,fsdev=share,mount_tag=share \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init cgroup_no_v1=all mitigations=off pci=off $TSC" \
    </dev/null
QEMU_RC=$?
# The cats end at EOF once QEMU has closed the FIFOs; if it died before opening them,
# stop them.
for _ in $(seq 30); do kill -0 $CAT_OUT 2>/dev/null || kill -0 $CAT_ERR 2>/dev/null || break; sleep 0.1; done
kill $CAT_OUT $CAT_ERR 2>/dev/null
wait $CAT_OUT $CAT_ERR 2>/dev/null
[ $QEMU_RC = 124 ] && { echo "vm.sh: timed out after ${TIMEOUT}s" >&2; exit 124; }
[ -s "$IO/rc" ] && exit "$(cat "$IO/rc")"
[ -f "$IO/console.log" ] && tail -n 40 "$IO/console.log" >&2
echo "vm.sh: the VM gave no result (qemu exit $QEMU_RC)" >&2
exit 125
