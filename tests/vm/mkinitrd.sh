#!/bin/bash
# tests/vm/mkinitrd.sh KVER OUT.cpio
# The VM lane's initramfs: static busybox, the modules the guest needs (with their
# dependencies, in load order, decompressed) and the two init stages of this directory.
set -euo pipefail
KVER=${1:?usage: mkinitrd.sh KERNEL-VERSION OUT.cpio}
OUT=${2:?usage: mkinitrd.sh KERNEL-VERSION OUT.cpio}
HERE=$(cd "$(dirname "$0")" && pwd)
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || { echo "mkinitrd: no $MODDIR/modules.dep (apt-get install linux-image-amd64)" >&2; exit 1; }
BUSYBOX=$(command -v busybox) || { echo "mkinitrd: busybox missing (apt-get install busybox-static)" >&2; exit 1; }
! ldd "$BUSYBOX" >/dev/null 2>&1 \
    || { echo "mkinitrd: $BUSYBOX is not static (apt-get install busybox-static)" >&2; exit 1; }

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,dev,proc,sys,newroot,modules}
cp "$BUSYBOX" "$STAGE/bin/busybox"

# Modules the guest needs: virtio transport and console, 9p for the host's files,
# overlay for image roots, fuse for the FUSE driver. modules.dep lists "path: deps..." with deps needing loading
# before; a depth-first walk gives a valid order.
declare -A done=()
ordered=()
visit() {
    local path=$1 dep
    [ -n "${done[$path]:-}" ] && return
    done[$path]=1
    for dep in $(awk -F': *' -v p="$path" '$1 == p { print $2 }' "$MODDIR/modules.dep"); do
        visit "$dep"
    done
    ordered+=("$path")
}
for name in virtio_mmio virtio_console 9pnet_virtio 9p overlay fuse; do
    path=$(grep -E "(^|/)$name\.ko(\.xz|\.zst|\.gz)?:" "$MODDIR/modules.dep" | head -n1 | cut -d: -f1)
    [ -n "$path" ] && visit "$path"     # absent from modules.dep: built into the kernel
done
i=0
for path in "${ordered[@]}"; do
    i=$((i + 1))
    base=$(basename "$path"); base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
    dest=$STAGE/modules/$(printf '%02d' $i)-$base
    case $path in
        *.xz) xz -dc "$MODDIR/$path" >"$dest" ;;
        *.zst) zstd -qdc "$MODDIR/$path" >"$dest" ;;
        *.gz) gzip -dc "$MODDIR/$path" >"$dest" ;;
        *) cp "$MODDIR/$path" "$dest" ;;
    esac
done
install -m 755 "$HERE/init.sh" "$STAGE/init"
install -m 755 "$HERE/guest.sh" "$STAGE/guest.sh"
(cd "$STAGE" && find . -print0 | cpio --null --create --format=newc --quiet) >"$OUT"
echo "mkinitrd: $OUT: $(du -k "$OUT" | cut -f1) KiB, modules: ${ordered[*]##*/}" >&2
