#!/usr/bin/env bash
# Lifecycle latency: a detached container's run/exec/rm cycle, exec alone, and the OCI
# runtime's create/start/delete cycle; nook against podman and crun (issue 8).
#
# Run as root on a Debian/Ubuntu machine:   bench/lifecycle.sh
#
# What it does, in order:
#   1. (root) installs the peers from Debian packages if missing (hyperfine crun podman
#      uidmap busybox-static fuse-overlayfs slirp4netns jq), makes sure the unprivileged
#      account ($BENCH_USER, default nooktest) exists with an /etc/subuid and /etc/subgid
#      range (podman needs one).
#   2. (as the account) builds the busybox root filesystem and the podman image exactly as
#      bench/start-latency.sh does (same directory, same stamp, same image name: the two
#      scripts share them), and two bundles from `crun spec --rootless` around that rootfs:
#      one whose process is `true` (the OCI cycle) and one whose process is `sleep 1000`
#      (the container that `crun exec` and `nook oci exec` enter); and a third, process
#      `true`, from `nook oci spec --rootless` (the second OCI cycle pair).
#   3. (as the account) starts one long-running container per tool for the exec rows, runs
#      ONE hyperfine over every row side by side, removes those containers, and prints each
#      median with nook's ratio to its peers and the issue's targets (nook exec < 10 ms,
#      nook's OCI cycle <= crun's).
#
# Rows (every command runs as the account; the cycles are `sh -c 'A && B && C'` because they
# are three processes in a row, for nook and its peers alike, and the `sh -c :` row shows
# what that wrapper costs; `$$`, the wrapper's pid, names each iteration's container, so
# iterations never collide):
#   cycle: nook        nook run -d --network=none --name N host sleep 1000 && nook exec N true && nook rm -f N
#   cycle: podman      podman run -d --network=none --cgroups=disabled --name N IMAGE sleep 1000
#                        && podman exec N true && podman rm -f -t 0 N
#                      (-t 0: busybox sleep as PID 1 ignores SIGTERM; nook rm -f sends KILL at once)
#   exec: nook         nook exec lc-exec true            (a `nook run -d host sleep 1000`)
#   exec: podman       podman exec lc-exec true          (a `podman run -d IMAGE sleep 1000`)
#   exec: crun         crun exec lc-exec true            (a `crun run -d` of the sleep bundle)
#   exec: nook oci     nook oci exec lc-exec true        (a `nook oci create+start` of the sleep bundle)
#   oci cycle: nook    nook oci create --bundle B ID && nook oci start ID && nook oci delete --force ID
#   oci cycle: crun    crun create --bundle B ID && crun start ID && crun delete --force ID
#   oci cycle (nook spec): nook, crun
#                      the same two cycles on a bundle from `nook oci spec --rootless` (full
#                      subordinate ID map through newuidmap, a cgroup namespace), when both
#                      runtimes run it: a second like-for-like pair
#   sh -c (wrapper)    sh -c :
# crun and `nook oci` each get their own --root under the account's runtime directory; crun
# runs with --cgroup-manager=disabled (as in start-latency.sh). A nook row that fails its
# trial run is left out of the timing with a loud note (the peers are still measured); a
# peer that fails is a setup problem and stops the script.
#
# The hybrid-cgroup workaround is start-latency.sh's: crun 1.8.1 (and podman through it)
# refuses a host with v1 controllers plus cgroup2 at /sys/fs/cgroup/unified, so, only on such
# a host, everything runs in a private mount namespace where an empty read-only tmpfs hides
# /sys/fs/cgroup/unified (the host's mounts are not changed), then drops to the account.
#
# nook's state is kept apart from the account's other use of nook: XDG_RUNTIME_DIR and
# NOOK_ROOT point into $BENCH_WORK, and XDG_CONFIG_HOME at an empty directory there (no
# config file of the account's changes a default).
#
# Environment:
#   NOOK_BIN       nook binary (default: <repo>/target/release/nook)
#   BENCH_USER     unprivileged account (default nooktest; created if missing)
#   BENCH_WORK     scratch directory owned by the account (default /var/tmp/nook-bench-$BENCH_USER)
#   RESULTS_DIR    where the exports land (default <repo>/bench/results)
#   WARMUP         hyperfine --warmup (default 3)
#   MIN_RUNS       hyperfine --min-runs (default 30; fast rows get more in hyperfine's 3 s)
#   PODMAN_STORAGE_DRIVER  overlay (default) or vfs
#   QUIET_WAIT     seconds to wait at most for the 1-minute load to fall below QUIET_LOAD
#                  (default 1) before timing (default 0: do not wait, only warn)
#   SKIP_INSTALL=1 do not call apt-get
#   NOOK_REQUIRED=1 exit non-zero when a nook row had to be left out
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)

BENCH_USER=${BENCH_USER:-nooktest}
BENCH_WORK=${BENCH_WORK:-/var/tmp/nook-bench-$BENCH_USER}
RESULTS_DIR=${RESULTS_DIR:-$REPO/bench/results}
NOOK_BIN=${NOOK_BIN:-$REPO/target/release/nook}
WARMUP=${WARMUP:-3}
MIN_RUNS=${MIN_RUNS:-30}
PODMAN_STORAGE_DRIVER=${PODMAN_STORAGE_DRIVER:-overlay}
PACKAGES=(hyperfine crun podman uidmap busybox-static fuse-overlayfs slirp4netns jq)
# Shared with start-latency.sh (same files, same stamp label).
IMAGE=localhost/nook-bench-busybox:latest
# The long-running containers the exec rows enter.
EXEC_CTR=lc-exec

source "$(dirname "$SELF")/bench-lib.sh"

# ---------------------------------------------------------------------------------------------
# Pieces that run as the unprivileged account (the script re-invokes a copy of itself in
# $BENCH_WORK with an internal sub-command and a clean environment).
# ---------------------------------------------------------------------------------------------

CRUN_ROOT() { echo "$XDG_RUNTIME_DIR/lifecycle-crun"; }
NOOK_OCI_ROOT() { echo "$XDG_RUNTIME_DIR/lifecycle-nook-oci"; }

# A bundle from a runtime's own rootless template (`RUNTIME spec --rootless`) around the
# shared rootfs, with only the process (no tty, these args) and the root path changed.
make_bundle() {
    local dir=$1 rootfs=$2 stamp=$3 args=$4 runtime=$5
    [[ $(cat "$dir/.stamp" 2>/dev/null) == "$stamp $args $runtime" && -f $dir/config.json ]] && return 0
    log "generating bundle $dir ($runtime spec --rootless, process $args)"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && $runtime spec --rootless)
    jq --arg root "$rootfs" --argjson args "$args" \
        '.process.args = $args | .process.terminal = false | .root.path = $root' \
        "$dir/config.json" >"$dir/config.json.tmp"
    mv "$dir/config.json.tmp" "$dir/config.json"
    echo "$stamp $args $runtime" >"$dir/.stamp"
}

user_prepare() {
    local busybox=$1 stamp rootfs=$BENCH_WORK/rootfs
    stamp=$(sha256sum "$busybox" | cut -d' ' -f1)
    podman_stop_pause

    busybox_rootfs "$busybox" "$stamp"

    make_bundle "$BENCH_WORK/lifecycle/bundle-true" "$rootfs" "$stamp" '["true"]' crun
    make_bundle "$BENCH_WORK/lifecycle/bundle-sleep" "$rootfs" "$stamp" '["sleep","1000"]' crun
    # nook's own template (full subordinate ID map, a cgroup namespace), for the second OCI
    # cycle pair; regenerated every run since it follows the nook binary. Without it, or if
    # it fails, that pair is left out.
    rm -rf "$BENCH_WORK/lifecycle/bundle-nook-spec"
    if [[ -n ${BENCH_NOOK:-} ]]; then
        make_bundle "$BENCH_WORK/lifecycle/bundle-nook-spec" "$rootfs" "$stamp" '["true"]' \
            "$BENCH_NOOK oci" || rm -rf "$BENCH_WORK/lifecycle/bundle-nook-spec"
    fi

    podman_image "$stamp"
    podman_stop_pause
}

# Removes the exec rows' containers and anything an interrupted earlier run left behind
# (only names this script gives: lc-exec and lc<pid>), in this script's own state dirs.
user_cleanup() {
    local P N=${BENCH_NOOK:-} RC RN n
    P=$(podman_cmd)
    RC=$(CRUN_ROOT)
    RN=$(NOOK_OCI_ROOT)
    for n in $($P ps -a --format '{{.Names}}' 2>/dev/null | grep -E '^lc(-exec|[0-9]+)$'); do
        $P rm -f -t 0 "$n" >/dev/null 2>&1 || true
    done
    for n in $(crun --root "$RC" list -q 2>/dev/null | grep -E '^lc(-exec|[0-9]+)$'); do
        crun --root "$RC" --cgroup-manager=disabled delete --force "$n" >/dev/null 2>&1 || true
    done
    if [[ -n $N ]]; then
        for n in $("$N" ps -a --format '{{.Names}}' 2>/dev/null | grep -E '^lc(-exec|[0-9]+)$'); do
            "$N" rm -f "$n" >/dev/null 2>&1 || true
        done
        for n in $(ls "$RN" 2>/dev/null | grep -E '^lc(-exec|[0-9]+)$'); do
            "$N" oci --root "$RN" delete --force "$n" >/dev/null 2>&1 || true
        done
    fi
    podman_stop_pause
}

# Runs in the (possibly private) mount namespace, as the account.
user_bench() {
    local out=$1 P N=${BENCH_NOOK:-} RC RN bt=$BENCH_WORK/lifecycle/bundle-true
    local bs=$BENCH_WORK/lifecycle/bundle-sleep i
    P=$(podman_cmd)
    RC=$(CRUN_ROOT)
    RN=$(NOOK_OCI_ROOT)
    mkdir -p "$RC" "$RN"
    podman_stop_pause
    user_cleanup
    trap user_cleanup EXIT

    local crun="crun --root $RC --cgroup-manager=disabled"
    local names=() cmds=() nook_notes=()
    add() { names+=("$1"); cmds+=("$2"); }
    # A nook row is timed only when it works once; otherwise it is noted and left out.
    add_nook() {
        if [[ -z $N ]]; then
            nook_notes+=("$1: no nook binary")
        elif ! bash -c "$2" </dev/null >"$out/trial.log" 2>&1; then
            nook_notes+=("$1: \`$2\` failed: $(head -c 400 "$out/trial.log")")
        else
            add "$1" "$2"
        fi
    }

    # The long-running containers that the exec rows enter. Their output goes to a file, not
    # a pipe: an OCI runtime's detached process keeps the stdio it was created with, and a
    # command substitution would wait for it to close.
    local setup_log=$out/setup.log
    log "starting the exec rows' containers ($EXEC_CTR)"
    $P run -d --network=none --cgroups=disabled --name "$EXEC_CTR" "$IMAGE" sleep 1000 >/dev/null ||
        die "podman run -d does not work as $BENCH_USER"
    $crun run -d --bundle "$bs" "$EXEC_CTR" </dev/null >"$setup_log" 2>&1 ||
        die "crun run -d does not work as $BENCH_USER: $(cat "$setup_log")"
    local nook_exec_ok=0 nook_oci_exec_ok=0
    if [[ -n $N ]]; then
        if "$N" run -d --network=none --name "$EXEC_CTR" host sleep 1000 </dev/null >"$setup_log" 2>&1; then
            nook_exec_ok=1
        else
            nook_notes+=("exec: nook: \`nook run -d --network=none --name $EXEC_CTR host sleep 1000\` failed: $(head -c 400 "$setup_log")")
        fi
        if "$N" oci --root "$RN" create --bundle "$bs" "$EXEC_CTR" </dev/null >"$setup_log" 2>&1 &&
            "$N" oci --root "$RN" start "$EXEC_CTR" </dev/null >>"$setup_log" 2>&1; then
            nook_oci_exec_ok=1
        else
            nook_notes+=("exec: nook oci: \`nook oci create --bundle $bs $EXEC_CTR && nook oci start $EXEC_CTR\` failed: $(head -c 400 "$setup_log")")
        fi
    fi

    # The detached cycle.
    add_nook "cycle: nook" "sh -c '$N run -d --network=none --name lc\$\$ host sleep 1000 && $N exec lc\$\$ true && $N rm -f lc\$\$'"
    add "cycle: podman" "sh -c '$P run -d --network=none --cgroups=disabled --name lc\$\$ $IMAGE sleep 1000 && $P exec lc\$\$ true && $P rm -f -t 0 lc\$\$'"
    # Exec alone.
    ((nook_exec_ok)) && add_nook "exec: nook" "$N exec $EXEC_CTR true"
    add "exec: podman" "$P exec $EXEC_CTR true"
    add "exec: crun" "$crun exec $EXEC_CTR true"
    ((nook_oci_exec_ok)) && add_nook "exec: nook oci" "$N oci --root $RN exec $EXEC_CTR true"
    # The OCI runtime cycle on the same bundle.
    add_nook "oci cycle: nook" "sh -c '$N oci --root $RN create --bundle $bt lc\$\$ && $N oci --root $RN start lc\$\$ && $N oci --root $RN delete --force lc\$\$'"
    add "oci cycle: crun" "sh -c '$crun create --bundle $bt lc\$\$ && $crun start lc\$\$ && $crun delete --force lc\$\$'"
    # The same cycle on nook's own rootless template, for both runtimes; optional (see
    # user_prepare): if either runtime fails its trial, the pair is left out with a note.
    local bn=$BENCH_WORK/lifecycle/bundle-nook-spec
    local nc="sh -c '$N oci --root $RN create --bundle $bn lc\$\$ && $N oci --root $RN start lc\$\$ && $N oci --root $RN delete --force lc\$\$'"
    local cc="sh -c '$crun create --bundle $bn lc\$\$ && $crun start lc\$\$ && $crun delete --force lc\$\$'"
    if [[ -z $N || ! -f $bn/config.json ]]; then
        nook_notes+=("oci cycle (nook spec): no bundle from \`nook oci spec --rootless\`")
    elif ! bash -c "$nc" </dev/null >"$out/trial.log" 2>&1; then
        nook_notes+=("oci cycle (nook spec): nook: \`$nc\` failed: $(head -c 400 "$out/trial.log")")
    elif ! bash -c "$cc" </dev/null >"$out/trial.log" 2>&1; then
        nook_notes+=("oci cycle (nook spec): crun: \`$cc\` failed: $(head -c 400 "$out/trial.log")")
    else
        add "oci cycle (nook spec): nook" "$nc"
        add "oci cycle (nook spec): crun" "$cc"
    fi
    add "sh -c (wrapper)" "sh -c :"

    # Every peer must work once before it is timed (the nook rows were tried in add_nook).
    for i in "${!cmds[@]}"; do
        [[ ${names[$i]} == *nook* ]] && continue   # tried above
        if ! bash -c "${cmds[$i]}" </dev/null >"$out/trial.log" 2>&1; then
            die "${names[$i]} does not run as $BENCH_USER: \`${cmds[$i]}\`: $(cat "$out/trial.log")"
        fi
    done
    printf '%s\n' "${nook_notes[@]}" >"$out/nook-notes"

    local hf=(hyperfine -N --warmup "$WARMUP" --min-runs "$MIN_RUNS" --time-unit millisecond
        --export-json "$out/lifecycle.json" --export-markdown "$out/lifecycle.md")
    for i in "${!cmds[@]}"; do hf+=(-n "${names[$i]}" "${cmds[$i]}"); done
    local a q=()
    for a in "${hf[@]}"; do
        if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then q+=("$a"); else q+=("'${a//\'/\'\\\'\'}'"); fi
    done
    echo "${q[*]}" >"$out/command-line"
    log "running hyperfine as $(id -un) (uid $(id -u))"
    "${hf[@]}"
}

case "${1:-}" in
    __prepare) user_prepare "$2"; exit 0 ;;
    __bench) user_bench "$2"; exit 0 ;;
esac

# ---------------------------------------------------------------------------------------------
# The root part.
# ---------------------------------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "run me as root: I install packages, set up $BENCH_USER and then run every benchmark as $BENCH_USER"

install_packages hyperfine crun podman conmon newuidmap busybox jq unshare runuser
prepare_account
install -d -o "$BENCH_USER" -m 0700 "$BENCH_WORK/nook-store" "$BENCH_WORK/config"
install -d -o "$BENCH_USER" -m 0755 "$BENCH_WORK/lifecycle"
install_scripts "$SELF" lifecycle.sh
find_binaries

AS_USER=(runuser -u "$BENCH_USER" -- env -i HOME="$BHOME" USER="$BENCH_USER" LOGNAME="$BENCH_USER"
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
    XDG_RUNTIME_DIR="$BENCH_WORK/run" XDG_CONFIG_HOME="$BENCH_WORK/config"
    NOOK_ROOT="$BENCH_WORK/nook-store" BENCH_USER="$BENCH_USER" BENCH_WORK="$BENCH_WORK"
    BENCH_NOOK="$NOOK_FOR_USER" WARMUP="$WARMUP" MIN_RUNS="$MIN_RUNS"
    PODMAN_STORAGE_DRIVER="$PODMAN_STORAGE_DRIVER")

log "preparing rootfs, bundles and podman image as $BENCH_USER in $BENCH_WORK"
in_bench_ns "${AS_USER[@]}" bash "$BENCH_WORK/lifecycle.sh" __prepare "$BUSYBOX"

OUT=$(mktemp -d /tmp/nook-bench-out.XXXXXX)
chown "$BENCH_USER:" "$OUT"
trap 'rm -rf "$OUT"' EXIT

((HYBRID)) && log "hybrid cgroups: running in a private mount namespace with /sys/fs/cgroup/unified hidden (host mounts untouched)"
[[ -n $NOOK_FOR_USER ]] || warn "NOOK BINARY NOT FOUND at $NOOK_BIN: measuring the peers only (build it with: cargo build --release -p nook-cli)"
wait_for_quiet 1
in_bench_ns "${AS_USER[@]}" bash "$BENCH_WORK/lifecycle.sh" __bench "$OUT"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mapfile -t NOOK_NOTES < <(grep . "$OUT/nook-notes" || true)
for n in "${NOOK_NOTES[@]}"; do warn "NOOK ROW LEFT OUT: $n"; done

mkdir -p "$RESULTS_DIR"
cp "$OUT/lifecycle.json" "$OUT/lifecycle.md" "$RESULTS_DIR/"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc) x $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "cgroups: $( ((HYBRID)) && echo 'hybrid (cgroup2 at /sys/fs/cgroup/unified hidden in a private mount ns)' || stat -f -c %T /sys/fs/cgroup)"
    echo "load average: $LOAD_BEFORE before, $LOAD_AFTER after"
    echo "user: $BENCH_USER (uid $BUID)"
    echo "hyperfine: $(hyperfine --version)"
    echo "crun: $(crun --version | head -1)"
    echo "podman: $(podman --version), conmon $(conmon --version 2>/dev/null | head -1 | sed 's/^conmon version //'), storage driver $PODMAN_STORAGE_DRIVER"
    echo "busybox: $("$BUSYBOX" | head -1)"
    echo "nook: $([[ -n $NOOK_FOR_USER ]] && echo "$NOOK_FOR_USER (sha256 $(sha256sum "$NOOK_FOR_USER" | cut -c1-16), built $(date -u -r "$NOOK_FOR_USER" +%Y-%m-%dT%H:%M:%SZ), tree $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo +uncommitted-changes))" || echo "NOT MEASURED: no binary at $NOOK_BIN")"
    for n in "${NOOK_NOTES[@]}"; do echo "nook row left out: $n"; done
    echo "command: $(cat "$OUT/command-line")"
} >"$RESULTS_DIR/lifecycle.env.txt"

# Medians, nook's ratio to each peer of its group, and the issue's targets.
echo
jq -r '
  def ms: . * 1000 * 100 | round / 100;
  def r: . * 100 | round / 100;
  (.results | map({key: .command, value: .median}) | from_entries) as $m
  | def ratio($a; $b): if $m[$a] and $m[$b] then "| \($a) / \($b) | \($m[$a] | ms) | \($m[$b] | ms) | \($m[$a] / $m[$b] | r) |" else "| \($a) / \($b) | \($m[$a] // null | if . then ms else "not measured" end) | \($m[$b] // null | if . then ms else "not measured" end) | - |" end;
    "| command | median ms | mean ms ± sd | min ms | runs |",
    "|---|---:|---:|---:|---:|",
    (.results[] | "| \(.command) | \(.median | ms) | \(.mean | ms) ± \(.stddev | ms) | \(.min | ms) | \(.times | length) |"),
    "",
    "| ratio (nook / peer) | nook median ms | peer median ms | ratio |",
    "|---|---:|---:|---:|",
    ratio("cycle: nook"; "cycle: podman"),
    ratio("exec: nook"; "exec: podman"),
    ratio("exec: nook"; "exec: crun"),
    ratio("exec: nook oci"; "exec: crun"),
    ratio("oci cycle: nook"; "oci cycle: crun"),
    ratio("oci cycle (nook spec): nook"; "oci cycle (nook spec): crun"),
    "",
    (if $m["exec: nook"] then "target nook exec < 10 ms: \($m["exec: nook"] | ms) ms: \(if $m["exec: nook"] < 0.010 then "PASS" else "FAIL" end)" else "target nook exec < 10 ms: NOT MEASURED" end),
    (if $m["oci cycle: nook"] then "target nook OCI cycle <= crun: \($m["oci cycle: nook"] | ms) vs \($m["oci cycle: crun"] | ms) ms: \(if $m["oci cycle: nook"] <= $m["oci cycle: crun"] then "PASS" else "FAIL" end)" else "target nook OCI cycle <= crun: NOT MEASURED" end)
' "$RESULTS_DIR/lifecycle.json" | tee "$RESULTS_DIR/lifecycle.ratios.md"
echo
log "results: $RESULTS_DIR/lifecycle.{json,md,ratios.md,env.txt}"
if ((${#NOOK_NOTES[@]})); then
    warn "some nook rows were NOT measured (see above)"
    [[ ${NOOK_REQUIRED:-0} == 1 ]] && exit 1
fi
exit 0
