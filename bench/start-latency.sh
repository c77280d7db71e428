#!/usr/bin/env bash
# Start-to-exit latency of a container that runs `true`: nook against its peers (issue 2).
#
# Run as root on a Debian/Ubuntu machine:   bench/start-latency.sh
#
# What it does, in order:
#   1. (root) installs the peers from Debian packages, idempotently: hyperfine bubblewrap crun
#      podman uidmap busybox-static fuse-overlayfs slirp4netns jq;
#      makes sure the unprivileged account ($BENCH_USER, default nooktest) exists and has an
#      /etc/subuid and /etc/subgid range (podman needs it; nook maps it through newuidmap when
#      present, so nook is also measured with `--uidmap 0:0:1 --gidmap 0:0:1`, the single-ID
#      map an account without a range gets).
#   2. (as the account) builds a busybox root filesystem from busybox-static, a crun bundle
#      from `crun spec --rootless` around it, and a local podman image from the same files
#      (`podman import` of a tarball: no registry, no network).
#   3. (as the account) runs ONE hyperfine with every command side by side, then prints each
#      median as a ratio to the `unshare` floor, to crun and to podman, and checks nook's
#      targets (median <= 3x the floor, faster than crun, >= 50x faster than podman).
#
# Every measured command runs as the unprivileged account. The only root-owned step around the
# measurement works around this host's hybrid cgroups: crun 1.8.1 refuses a host that has v1
# controllers plus a cgroup2 mount at /sys/fs/cgroup/unified, and podman uses crun. So, only
# when that layout is present, hyperfine runs in a private mount namespace in which an empty
# read-only tmpfs hides /sys/fs/cgroup/unified (the host's own mounts are never changed), then
# drops to the account with runuser. Every command, nook's included, sees the same namespace.
#
# Environment:
#   NOOK_BIN       nook binary (default: <repo>/target/release/nook). Missing or failing: the
#                  nook rows are skipped with a loud note and the peers are still measured.
#   BENCH_USER     unprivileged account (default nooktest; created if missing)
#   BENCH_WORK     scratch directory owned by the account (default /var/tmp/nook-bench-$BENCH_USER)
#   RESULTS_DIR    where the JSON/Markdown exports land (default <repo>/bench/results)
#   WARMUP         hyperfine --warmup (default 5)
#   MIN_RUNS       hyperfine --min-runs (default 50; fast commands get more within hyperfine's
#                  default 3 s per command)
#   PODMAN_STORAGE_DRIVER  overlay (default; native kernel overlay, Linux >= 5.13) or vfs
#   QUIET_WAIT     seconds to wait at most for the 1-minute load average to fall below
#                  QUIET_LOAD (default 0.5) before timing (default 0: do not wait, only warn)
#   SKIP_INSTALL=1 do not call apt-get
#   NOOK_REQUIRED=1 exit non-zero when the nook rows had to be skipped
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)

BENCH_USER=${BENCH_USER:-nooktest}
BENCH_WORK=${BENCH_WORK:-/var/tmp/nook-bench-$BENCH_USER}
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
NOOK_BIN=${NOOK_BIN:-$REPO/target/release/nook}
WARMUP=${WARMUP:-5}
MIN_RUNS=${MIN_RUNS:-50}
PODMAN_STORAGE_DRIVER=${PODMAN_STORAGE_DRIVER:-overlay}
PACKAGES=(hyperfine bubblewrap crun podman uidmap busybox-static fuse-overlayfs slirp4netns jq)
IMAGE=localhost/nook-bench-busybox:latest

source "$(dirname "$SELF")/bench-lib.sh"

# ---------------------------------------------------------------------------------------------
# Pieces that run as the unprivileged account. The script re-invokes itself (a copy in
# $BENCH_WORK, readable by the account) with an internal sub-command and a clean environment.
# ---------------------------------------------------------------------------------------------

user_prepare() {
    local busybox=$1 stamp rootfs=$BENCH_WORK/rootfs bundle=$BENCH_WORK/crun-bundle
    stamp=$(sha256sum "$busybox" | cut -d' ' -f1)
    podman_stop_pause

    busybox_rootfs "$busybox" "$stamp"

    # The crun bundle: crun's own rootless template, edited only to run `true` without a tty
    # and to point at the rootfs above.
    if [[ ! -f $bundle/config.json ]]; then
        log "generating crun bundle in $bundle (crun spec --rootless)"
        rm -rf "$bundle" && mkdir -p "$bundle"
        (cd "$bundle" && crun spec --rootless)
        jq --arg root "$rootfs" \
            '.process.args = ["true"] | .process.terminal = false | .root.path = $root' \
            "$bundle/config.json" >"$bundle/config.json.tmp"
        mv "$bundle/config.json.tmp" "$bundle/config.json"
    fi

    podman_image "$stamp"
    podman_stop_pause
}

# The bwrap invocation mirrors nook's `host` image: the host's /usr and /etc read-only, the
# top-level /bin /sbin /lib* as the host has them (symlinks on a merged-/usr system, read-only
# binds otherwise), fresh /proc /dev /tmp /run /var/tmp, every namespace unshared.
bwrap_cmd() {
    local args=(bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --ro-bind /etc /etc) d
    for d in /bin /sbin /lib /lib32 /lib64 /libx32; do
        if [[ -L $d ]]; then
            args+=(--symlink "$(readlink "$d")" "$d")
        elif [[ -d $d ]]; then
            args+=(--ro-bind "$d" "$d")
        fi
    done
    args+=(--proc /proc --dev /dev --tmpfs /tmp --tmpfs /run --tmpfs /var/tmp true)
    echo "${args[*]}"
}

# Runs in the (possibly private) mount namespace, as the account.
user_bench() {
    local out=$1 rootfs=$BENCH_WORK/rootfs bundle=$BENCH_WORK/crun-bundle P
    P=$(podman_cmd)
    podman_stop_pause   # a pause process left from another mount namespace would be joined
    local names=() cmds=()
    add() { names+=("$1"); cmds+=("$2"); }

    add "unshare (floor)" "unshare -Urmpf --mount-proc true"
    add "bwrap" "$(bwrap_cmd)"
    add "crun" "crun --root $XDG_RUNTIME_DIR/crun --cgroup-manager=disabled run --bundle $bundle nook-bench"
    add "podman" "$P run --rm --network=none --cgroups=disabled $IMAGE true"

    local nook_status=ok
    if [[ -z $BENCH_NOOK ]]; then
        nook_status="no nook binary"
    else
        # nook's default map for an account with an /etc/subuid range is the full range,
        # written by the setuid newuidmap/newgidmap (two fork+execs per start); an account
        # without a range (the issue's case) gets the single-ID map the other peers use.
        # Both are measured; `--uidmap 0:0:1 --gidmap 0:0:1` asks for the single-ID map.
        local one="--uidmap 0:0:1 --gidmap 0:0:1"
        local nn=("nook host" "nook rootfs" "nook host (single-ID map)" "nook rootfs (single-ID map)")
        local nc=("$BENCH_NOOK run --rm --network=none host true"
            "$BENCH_NOOK run --rm --network=none --rootfs $rootfs true"
            "$BENCH_NOOK run --rm $one --network=none host true"
            "$BENCH_NOOK run --rm $one --network=none --rootfs $rootfs true")
        local j err
        for j in "${!nc[@]}"; do
            if ! err=$(${nc[$j]} 2>&1 </dev/null); then
                nook_status="\`${nc[$j]}\` failed: ${err:0:400}"
                break
            fi
        done
        if [[ $nook_status == ok ]]; then
            for j in "${!nc[@]}"; do add "${nn[$j]}" "${nc[$j]}"; done
        fi
    fi
    echo "$nook_status" >"$out/nook-status"

    # Every peer must work once before it is timed: a failure here is a setup problem.
    local i
    for i in "${!cmds[@]}"; do
        if ! err=$(${cmds[$i]} 2>&1 </dev/null); then
            die "${names[$i]} does not run as $BENCH_USER: \`${cmds[$i]}\`: $err"
        fi
    done

    local hf=(hyperfine -N --warmup "$WARMUP" --min-runs "$MIN_RUNS" --time-unit millisecond
        --export-json "$out/start-latency.json" --export-markdown "$out/start-latency.md")
    for i in "${!cmds[@]}"; do hf+=(-n "${names[$i]}" "${cmds[$i]}"); done
    local a q=()
    for a in "${hf[@]}"; do
        if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then q+=("$a"); else q+=("'${a//\'/\'\\\'\'}'"); fi
    done
    echo "${q[*]}" >"$out/command-line"
    log "running hyperfine as $(id -un) (uid $(id -u))"
    "${hf[@]}"
    podman_stop_pause
}

# ---------------------------------------------------------------------------------------------
# Internal entry points (as the account, with the environment set by the root part).
# ---------------------------------------------------------------------------------------------
case "${1:-}" in
    __prepare) user_prepare "$2"; exit 0 ;;
    __bench) user_bench "$2"; exit 0 ;;
esac

# ---------------------------------------------------------------------------------------------
# The root part.
# ---------------------------------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "run me as root: I install packages, set up $BENCH_USER and then run every benchmark as $BENCH_USER"

install_packages hyperfine bwrap crun podman conmon newuidmap busybox jq unshare runuser
prepare_account
install_scripts "$SELF" start-latency.sh
find_binaries

AS_USER=(runuser -u "$BENCH_USER" -- env -i HOME="$BHOME" USER="$BENCH_USER" LOGNAME="$BENCH_USER"
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
    XDG_RUNTIME_DIR="$BENCH_WORK/run" BENCH_USER="$BENCH_USER" BENCH_WORK="$BENCH_WORK"
    BENCH_NOOK="$NOOK_FOR_USER" WARMUP="$WARMUP" MIN_RUNS="$MIN_RUNS"
    PODMAN_STORAGE_DRIVER="$PODMAN_STORAGE_DRIVER")

log "preparing rootfs, crun bundle and podman image as $BENCH_USER in $BENCH_WORK"
in_bench_ns "${AS_USER[@]}" bash "$BENCH_WORK/start-latency.sh" __prepare "$BUSYBOX"

OUT=$(mktemp -d /tmp/nook-bench-out.XXXXXX)
chown "$BENCH_USER:" "$OUT"
trap 'rm -rf "$OUT"' EXIT

((HYBRID)) && log "hybrid cgroups: running the benchmark in a private mount namespace with /sys/fs/cgroup/unified hidden (host mounts untouched)"
[[ -n $NOOK_FOR_USER ]] || warn "NOOK BINARY NOT FOUND at $NOOK_BIN: measuring the peers only (build it with: cargo build --release -p nook-cli)"
wait_for_quiet 0.5
in_bench_ns "${AS_USER[@]}" bash "$BENCH_WORK/start-latency.sh" __bench "$OUT"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

NOOK_STATUS=$(cat "$OUT/nook-status")
if [[ -n $NOOK_FOR_USER && $NOOK_STATUS != ok ]]; then
    warn "NOOK ROWS SKIPPED: $NOOK_STATUS"
fi

mkdir -p "$RESULTS_DIR"
cp "$OUT/start-latency.json" "$OUT/start-latency.md" "$RESULTS_DIR/"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc) x $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "cgroups: $( ((HYBRID)) && echo 'hybrid (cgroup2 at /sys/fs/cgroup/unified hidden in a private mount ns)' || stat -f -c %T /sys/fs/cgroup)"
    echo "load average: $LOAD_BEFORE before, $LOAD_AFTER after"
    echo "user: $BENCH_USER (uid $BUID)"
    echo "hyperfine: $(hyperfine --version)"
    echo "unshare: $(unshare --version)"
    echo "bwrap: $(bwrap --version)"
    echo "crun: $(crun --version | head -1)"
    echo "podman: $(podman --version), storage driver $PODMAN_STORAGE_DRIVER"
    echo "busybox: $("$BUSYBOX" | head -1)"
    echo "nook: $([[ $NOOK_STATUS == ok ]] && echo "$NOOK_FOR_USER (sha256 $(sha256sum "$NOOK_FOR_USER" | cut -c1-16), built $(date -u -r "$NOOK_FOR_USER" +%Y-%m-%dT%H:%M:%SZ), tree $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo +uncommitted-changes))" || echo "NOT MEASURED: $([[ -n $NOOK_FOR_USER ]] && echo "$NOOK_STATUS" || echo "no binary at $NOOK_BIN")")"
    echo "command: $(cat "$OUT/command-line")"
} >"$RESULTS_DIR/start-latency.env.txt"

# Ratios of every median to the floor, to crun and to podman, and nook's targets.
echo
jq -r '
  def ms: . * 1000 * 100 | round / 100;
  def r: . * 100 | round / 100;
  (.results | map({key: .command, value: .median}) | from_entries) as $m
  | ($m["unshare (floor)"]) as $floor | ($m["crun"]) as $crun | ($m["podman"]) as $podman
  | "| command | median ms | mean ms ± sd | min ms | runs | x floor | x crun | podman / this |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
    (.results[] | "| \(.command) | \(.median | ms) | \(.mean | ms) ± \(.stddev | ms) | \(.min | ms) | \(.times | length) | \(.median / $floor | r) | \(.median / $crun | r) | \($podman / .median | r) |"),
    "",
    (.results[] | select(.command | startswith("nook")) |
      "\(.command): \(.median / $floor | r)x floor (target <= 3: \(if .median <= 3 * $floor then "PASS" else "FAIL" end)), \(.median / $crun | r)x crun (target < 1: \(if .median < $crun then "PASS" else "FAIL" end)), \($podman / .median | r)x faster than podman (target >= 50: \(if $podman >= 50 * .median then "PASS" else "FAIL" end))")
' "$RESULTS_DIR/start-latency.json" | tee "$RESULTS_DIR/start-latency.ratios.md"
echo
log "results: $RESULTS_DIR/start-latency.{json,md,ratios.md,env.txt}"
if [[ $NOOK_STATUS != ok ]]; then
    warn "nook was NOT measured: $([[ -n $NOOK_FOR_USER ]] && echo "$NOOK_STATUS" || echo "no binary at $NOOK_BIN")"
    [[ ${NOOK_REQUIRED:-0} == 1 ]] && exit 1
fi
exit 0
