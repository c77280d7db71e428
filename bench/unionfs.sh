#!/usr/bin/env bash
# Union root filesystems side by side: nook's FUSE driver, nook's overlay driver,
# fuse-overlayfs (Debian), kernel overlayfs mounted by hand, and a plain host directory.
#
#   bench/unionfs.sh [RUNS]        (needs: fuse-overlayfs, hyperfine, busybox-static,
#                                   util-linux; /dev/fuse 0666)
#
# As root, the script installs those Debian packages (unless SKIP_INSTALL=1), copies the
# nook binary and itself to a temporary directory and runs everything as the unprivileged
# account BENCH_USER (default nooktest); as any other user it runs as that user.
# Environment: NOOK (default target/release/nook, else target/debug/nook), MIB (1024),
# CASES (default "untar stat write read": a subset reruns only those),
# BENCH_USER, RESULTS_DIR (default bench/results); NOOK_BASE=another nook binary adds
# the variant nook-fuse-base (its FUSE driver), to compare two builds in the same run.
#
# Cases, each on a fresh writable layer over the same read-only busybox layer:
#   untar  extract a 20 000-file tarball (20 dirs x 1000 files of 1 KiB) into the root
#   stat   find | xargs stat over those files (on an upper layer that already holds them)
#   write  sequential write of $MIB MiB (dd bs=1M, then fsync)
#   read   sequential read of that file in a fresh mount (cold FUSE cache)
# Writes RESULTS_DIR/unionfs.json (hyperfine) and prints mean and median seconds per variant and
# the ratio to nook-fuse (> 1.0: that variant is slower than nook's FUSE driver).
set -uo pipefail
RUNS=${1:-3}
MIB=${MIB:-1024}
CASES=${CASES:-untar stat write read}
has_case() { case " $CASES " in *" $1 "*) return 0 ;; esac; return 1; }
for c in $CASES; do
    case $c in untar | stat | write | read) ;; *) echo "CASES: no case \"$c\" (untar stat write read)" >&2; exit 2 ;; esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
NOOK=${NOOK:-$HERE/../target/release/nook}
[ -x "$NOOK" ] || NOOK=$HERE/../target/debug/nook
BENCH_USER=${BENCH_USER:-nooktest}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
PACKAGES=(hyperfine fuse-overlayfs busybox-static util-linux)

if [ "$(id -u)" = 0 ]; then
    source "$HERE/bench-lib.sh"
    install_packages
    id "$BENCH_USER" >/dev/null 2>&1 || { echo "no account $BENCH_USER: useradd -m $BENCH_USER" >&2; exit 2; }
    STAGE=$(mktemp -d /tmp/nook-unionbench-stage.XXXXXX)
    cp "$NOOK" "$STAGE/nook" && cp "$0" "$STAGE/unionfs.sh" || exit 2
    base=""
    if [ -n "${NOOK_BASE:-}" ]; then
        cp "$NOOK_BASE" "$STAGE/nook-base" || exit 2
        base=$STAGE/nook-base
    fi
    mkdir "$STAGE/results"
    chmod -R a+rX "$STAGE"
    chown "$BENCH_USER" "$STAGE/results"
    runuser -u "$BENCH_USER" -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/tmp LANG=C.UTF-8 TMPDIR=/tmp NOOK="$STAGE/nook" NOOK_BASE="$base" MIB="$MIB" CASES="$CASES" RESULTS_DIR="$STAGE/results" \
        bash "$STAGE/unionfs.sh" "$RUNS"
    rc=$?
    mkdir -p "$RESULTS_DIR" && cp "$STAGE"/results/* "$RESULTS_DIR/" 2>/dev/null
    rm -rf "$STAGE"
    exit $rc
fi

for c in hyperfine fuse-overlayfs busybox unshare; do
    command -v "$c" >/dev/null || { echo "missing $c (as root: apt-get install ${PACKAGES[*]})" >&2; exit 2; }
done
echo "load before: $(uptime)"
W=$(mktemp -d /tmp/nook-unionbench.XXXXXX)
chmod 755 "$W"
trap '"$NOOK" unshare rm -rf "$W"' EXIT

# The read-only layer: busybox with its applets, plus the tarball to extract.
L=$W/lower
mkdir -p "$L"/{bin,etc,proc,dev,sys,tmp,data}
cp "$(command -v busybox)" "$L/bin/busybox"
for a in sh tar find xargs stat dd sync cat rm mkdir sha256sum true; do ln -s busybox "$L/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$L/etc/passwd"
T=$W/tree
for d in $(seq 1 20); do
    mkdir -p "$T/d$d"
    head -c 1024 /dev/urandom >"$T/d$d/seed"
    for f in $(seq 1 1000); do cp "$T/d$d/seed" "$T/d$d/f$f"; done
    rm "$T/d$d/seed"
done
tar -C "$T" -cf "$L/data/files.tar" .
rm -rf "$T"

# run VARIANT CTR CMD: CMD in a root of $L + writable layer CTR/{diff,work,merged}.
cat >"$W/run" <<EOS
#!/bin/bash
v=\$1; c=\$2; shift 2
mkdir -p \$c/diff \$c/work \$c/merged
case \$v in
nook-fuse-base)
    exec "${NOOK_BASE:-}" run --rm --storage-driver fuse --layer "$L" --rootfs \$c /bin/sh -c "\$1" ;;
nook-fuse|nook-overlay)
    exec "$NOOK" run --rm --storage-driver \${v#nook-} --layer "$L" --rootfs \$c /bin/sh -c "\$1" ;;
kernel-overlay)
    exec unshare -Urm /bin/sh -c 'mount -t overlay overlay -o lowerdir=$L,upperdir=\$1/diff,workdir=\$1/work,userxattr \$1/merged && mount --rbind /dev \$1/merged/dev && exec chroot \$1/merged /bin/sh -c "\$2"' - \$c "\$1" ;;
fuse-overlayfs)
    exec unshare -Urm /bin/sh -c 'fuse-overlayfs -f -o lowerdir=$L,upperdir=\$1/diff,workdir=\$1/work \$1/merged & while ! mountpoint -q \$1/merged; do sleep 0.01; done; mount --rbind /dev \$1/merged/dev; chroot \$1/merged /bin/sh -c "\$2"; r=\$?; umount -l \$1/merged/dev; umount \$1/merged; wait; exit \$r' - \$c "\$1" ;;
host-dir)
    [ -e \$c/diff/bin ] || cp -a "$L"/. \$c/diff/
    exec unshare -Urm /bin/sh -c 'mount --rbind /dev \$1/diff/dev && exec chroot \$1/diff /bin/sh -c "\$2"' - \$c "\$1" ;;
esac
EOS
chmod 755 "$W/run"
VARIANTS="nook-fuse fuse-overlayfs kernel-overlay nook-overlay host-dir"
[ -z "${NOOK_BASE:-}" ] || VARIANTS="$VARIANTS nook-fuse-base"
fresh() { echo "\"$NOOK\" unshare rm -rf $W/c-$1; mkdir -p $W/c-$1"; }

args=()
has_case untar && for v in $VARIANTS; do
    args+=(--command-name "untar/$v" --prepare "$(fresh "$v")" "$W/run $v $W/c-$v 'mkdir /x && tar -xf /data/files.tar -C /x && sync'")
done
has_case stat && for v in $VARIANTS; do
    "$W/run" "$v" "$W/s-$v" 'mkdir /x && tar -xf /data/files.tar -C /x' >/dev/null
    args+=(--command-name "stat/$v" --prepare true "$W/run $v $W/s-$v 'find /x | xargs stat >/dev/null'")
done
for v in $VARIANTS; do
    has_case write && args+=(--command-name "write/$v" --prepare "$(fresh "$v")" "$W/run $v $W/c-$v 'dd if=/dev/zero of=/big bs=1M count=$MIB conv=fsync 2>/dev/null'")
    # The read case has a container of its own (r-), written by its first prepare (so no
    # other case runs while its gigabyte is being written back): the untar and write
    # cases start theirs (c-) afresh before every run.
    has_case read && args+=(--command-name "read/$v" \
        --prepare "[ -e $W/r-$v.ready ] || { $W/run $v $W/r-$v 'dd if=/dev/zero of=/big bs=1M count=$MIB conv=fsync 2>/dev/null' && touch $W/r-$v.ready; }" \
        "$W/run $v $W/r-$v 'dd if=/big of=/dev/null bs=1M 2>/dev/null'")
done
mkdir -p "$RESULTS_DIR"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$RESULTS_DIR/unionfs.json" "${args[@]}" >"$W/hyperfine.log" 2>&1 \
    || { cat "$W/hyperfine.log"; exit 1; }
echo "load after: $(uptime)"
python3 - "$RESULTS_DIR/unionfs.json" <<'PY'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
cases = ["untar", "stat", "write", "read"]
variants = ["nook-fuse", "fuse-overlayfs", "kernel-overlay", "nook-overlay", "host-dir", "nook-fuse-base"]
variants = [v for v in variants if any(x["command"].endswith("/" + v) for x in results)]
# Means, then medians: a single run stalled behind the disk's writeback moves a mean
# of three by a factor of two on a shared machine; the median shows the typical run.
for label, stat in (("mean", lambda x: x["mean"]), ("median", lambda x: statistics.median(x["times"]))):
    r = {x["command"]: stat(x) for x in results}
    print(f"{label} seconds")
    print("%-6s" % "case" + "".join("%22s" % v for v in variants))
    for c in cases:
        base = r.get(f"{c}/nook-fuse")
        if base is None:
            continue
        row = "%-6s" % c
        for v in variants:
            m = r.get(f"{c}/{v}")
            row += "%22s" % (f"{m:.3f}s ({m/base:.2f}x)" if m else "-")
        print(row)
print("(ratio = variant time / nook-fuse time: > 1 means nook-fuse is faster)")
PY
