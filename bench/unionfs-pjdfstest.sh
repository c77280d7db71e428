#!/usr/bin/env bash
# pjdfstest (POSIX filesystem semantics) in a union root, nook's drivers and
# fuse-overlayfs side by side, as the same unprivileged account in one run.
#
#   bench/unionfs-pjdfstest.sh PJDFSTEST_DIR [VARIANT...]
#        variants: overlay fuse copy (nook's --storage-driver), fuse-overlayfs
#        (default: fuse fuse-overlayfs overlay)
#
# PJDFSTEST_DIR is a built checkout of https://github.com/pjd/pjdfstest (its `pjdfstest`
# binary beside `tests/`; nook does not ship it). Run as an unprivileged user with
# subordinate IDs (the tests chown to 65534 and friends), and fuse-overlayfs installed
# for that variant. The root is one read-only layer built here: busybox with all
# applets, perl and prove with the libraries they link, and the pjdfstest checkout; the
# tests run in a fresh directory of the union as root of the user namespace, with every
# capability there:
#   nook's drivers   `nook run --rm --storage-driver D --cap-add ALL --layer L --rootfs C`
#   fuse-overlayfs   `nook unshare` (the same subordinate-ID map a nook container gets, and
#                    a mount namespace), fuse-overlayfs mounted there over the same layer,
#                    the host's /proc and /dev bound in (no pid namespace), chroot, the
#                    same prove command: how podman runs it rootless (in its user
#                    namespace, as its root).
# Prints one line per variant, then every subtest whose result differs between the
# variants (file, subtest number, which variants failed it). The logs and the per-variant
# lists of failed subtests stay in OUT (default a new /tmp/nook-pjd-out.XXXXXX).
set -uo pipefail
PJD=$(cd "${1:?usage: $0 PJDFSTEST_DIR [VARIANT...]}" && pwd)
shift
VARIANTS=${*:-fuse fuse-overlayfs overlay}
NOOK=${NOOK:-$(dirname "$0")/../target/release/nook}
[ -x "$NOOK" ] || NOOK=$(dirname "$0")/../target/debug/nook
NOOK=$(cd "$(dirname "$NOOK")" && pwd)/$(basename "$NOOK")
[ -x "$PJD/pjdfstest" ] || { echo "no $PJD/pjdfstest: build pjdfstest first" >&2; exit 2; }
command -v prove >/dev/null || { echo "prove missing: apt-get install perl" >&2; exit 2; }
case " $VARIANTS " in *" fuse-overlayfs "*)
    command -v fuse-overlayfs >/dev/null || { echo "fuse-overlayfs missing: apt-get install fuse-overlayfs" >&2; exit 2; }
esac
OUT=${OUT:-$(mktemp -d /tmp/nook-pjd-out.XXXXXX)}
mkdir -p "$OUT"
L=$(mktemp -d /tmp/nook-pjd-layer.XXXXXX)
chmod 755 "$L"
mkdir -p "$L"/{bin,proc,dev,sys,tmp,etc,usr/lib,usr/lib64}
ln -s usr/lib "$L/lib"          # merged /usr, as on the host
ln -s usr/lib64 "$L/lib64"
cp "$(command -v busybox)" "$L/bin/busybox"
for a in $("$L/bin/busybox" --list); do [ -e "$L/bin/$a" ] || ln -s busybox "$L/bin/$a"; done
copy() { mkdir -p "$L$(dirname "$1")" && cp -a "$1" "$L$(dirname "$1")/"; }
libs() { ldd "$1" 2>/dev/null | grep -o '/[^ :]*' || true; }
for f in /usr/bin/perl /usr/bin/prove /usr/bin/openssl; do
    copy "$f"
    for lib in $(libs "$f"); do copy "$lib"; copy "$(readlink -f "$lib")"; done
done
for lib in $(libs "$PJD/pjdfstest"); do copy "$lib"; copy "$(readlink -f "$lib")"; done
for d in /usr/share/perl /usr/share/perl5 /usr/lib/x86_64-linux-gnu/perl /usr/lib/x86_64-linux-gnu/perl5 \
         /usr/lib/x86_64-linux-gnu/perl-base /usr/lib/aarch64-linux-gnu/perl-base /usr/lib/ssl; do
    [ -d "$d" ] && copy "$d"
done
copy "$PJD"
echo 'root:x:0:0:root:/root:/bin/sh' >"$L/etc/passwd"
PROVE="mkdir -p /pjd-work && cd /pjd-work && prove -r $PJD/tests"

# Runs the suite on variant $1 with writable directory $2; the log on stdout.
run_variant() {
    local v=$1 ctr=$2
    case $v in
    fuse-overlayfs)
        # In nook's user namespace (subordinate-ID map, own mount namespace), as its root.
        "$NOOK" unshare /bin/sh -c '
            set -e
            c=$1; L=$2
            mkdir -p "$c/diff" "$c/work" "$c/merged"
            fuse-overlayfs -o "lowerdir=$L,upperdir=$c/diff,workdir=$c/work" "$c/merged"
            mount --rbind /proc "$c/merged/proc"
            mount --rbind /dev "$c/merged/dev"
            set +e
            env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$c/merged" /bin/sh -c "$3"
            r=$?
            umount -l "$c/merged/dev"; umount -l "$c/merged/proc"; umount "$c/merged"
            exit $r' - "$ctr" "$L" "$PROVE" 2>&1
        ;;
    *)
        "$NOOK" run --rm --storage-driver "$v" --cap-add ALL --layer "$L" --rootfs "$ctr" \
            /bin/sh -c "$PROVE" 2>&1
        ;;
    esac
}

# prove's summary, `FILE (Wstat: ...)` then `Failed tests: 1-3, 7`, as one `FILE N` per
# failed subtest (paths relative to the checkout's tests/).
failed_subtests() {
    awk -v pjd="$PJD/tests/" '
        function ranges(text,    n, parts, r, i, j) {
            n = split(text, parts, /, */)
            for (i = 1; i <= n; i++) {
                if (split(parts[i], r, "-") == 2) { for (j = r[1]; j <= r[2]; j++) print file, j }
                else if (parts[i] ~ /^[0-9]+$/) print file, parts[i]
            }
        }
        /^\/.*\(Wstat: / { file = $1; sub(pjd, "", file); in_list = 0; next }
        /^  Failed tests?:/ { sub(/^  Failed tests?: */, ""); ranges($0); in_list = 1; next }
        # prove wraps a long list onto lines of spaces and ranges.
        in_list && /^ +[0-9]/ { sub(/^ +/, ""); ranges($0); next }
        { in_list = 0 }
        /^  (Parse errors|Non-zero)/ { print file, "(" $0 ")" }
    ' "$1" | sort -u
}

for v in $VARIANTS; do
    ctr=$(mktemp -d /tmp/nook-pjd.XXXXXX)
    log=$OUT/$v.log
    start=$SECONDS
    run_variant "$v" "$ctr" >"$log"
    "$NOOK" unshare rm -rf "$ctr"
    if ! grep -qE '^Files=' "$log"; then
        # No summary: the suite did not run; leave it out of the comparison.
        echo "$v: did not run: $(grep -v '^unknown argument' "$log" | tail -n1) (log $log)"
        continue
    fi
    RAN="${RAN:-} $v"
    failed_subtests "$log" >"$OUT/$v.failed"
    files=$(grep -E '^Files=' "$log" | sed 's/,.*//')
    total=$(grep -E '^Files=' "$log" | sed -n 's/.*Tests=\([0-9]*\).*/\1/p')
    result=$(grep -E '^Result:' "$log")
    badfiles=$(grep -cE '^/.*\(Wstat: [0-9]+ .*Tests: [0-9]+ Failed: [0-9]+\)' "$log")
    echo "$v: $files Tests=${total:-?} failed_tests=$(wc -l <"$OUT/$v.failed") failed_files=$badfiles $result ($((SECONDS - start)) s, log $log)"
done
rm -rf "$L"

# Every subtest that did not fail in every variant alike.
set -- ${RAN:-}
if [ $# -gt 1 ]; then
    echo "differences (subtest: the variants that failed it):"
    for v in "$@"; do sed "s/\$/ $v/" "$OUT/$v.failed"; done | sort -k1,1 -k2,2n |
        awk -v n=$# '{ key = $1 " " $2; who[key] = who[key] " " $3; count[key]++; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
            END { d = 0; for (i = 1; i <= k; i++) if (count[order[i]] < n) { print "  " order[i] ":" who[order[i]]; d++ }
                  if (d == 0) print "  none" }'
fi
