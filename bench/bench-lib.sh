# Shared by the bench scripts (sourced, not run; unionfs.sh and net-throughput.sh use only
# install_packages). start-latency.sh and lifecycle.sh use the root part's setup of
# the unprivileged account, the busybox root filesystem and podman image both compare
# against, the hybrid-cgroup mount namespace and the wait for a quiet machine. Each script
# re-runs a copy of itself in $BENCH_WORK as the account; install_scripts puts this file
# beside that copy. Expects BENCH_USER, BENCH_WORK, PACKAGES, PODMAN_STORAGE_DRIVER, IMAGE.

log()  { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf '\033[1;31m!!! %s\033[0m\n' "$*" >&2; }
die()  { warn "$*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# As the unprivileged account.
# ---------------------------------------------------------------------------------------------

# podman with everything on the command line: no config files in the account's home, no
# systemd (cgroupfs manager, file event log), storage in $BENCH_WORK.
podman_cmd() {
    local d=$PODMAN_STORAGE_DRIVER
    echo podman --root "$BENCH_WORK/podman-$d/storage" --runroot "$BENCH_WORK/podman-$d/run" \
        --storage-driver "$d" --runtime crun --cgroup-manager cgroupfs --events-backend file
}

# podman keeps a rootless "pause" process alive to hold its user namespace; stop the one this
# benchmark started (by its pid file), so nothing outlives the run and a later run does not
# join a namespace from another mount namespace.
podman_stop_pause() {
    local f=$XDG_RUNTIME_DIR/libpod/tmp/pause.pid pid
    [[ -f $f ]] || return 0
    pid=$(<"$f")
    if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == podman* ]]; then
        kill "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

# The busybox root filesystem in $BENCH_WORK/rootfs: bin/busybox plus one symlink per applet,
# the usual empty mount points and a minimal /etc. Rebuilt only when the busybox binary
# (STAMP, its sha256) changes; a rebuild drops the bundles that point at the old one.
busybox_rootfs() {
    local busybox=$1 stamp=$2 rootfs=$BENCH_WORK/rootfs applet
    [[ $(cat "$rootfs/.nook-bench-stamp" 2>/dev/null) == "$stamp" ]] && return 0
    log "building busybox rootfs in $rootfs"
    rm -rf "$rootfs" "$rootfs.tmp"
    mkdir -p "$rootfs.tmp"/{bin,etc,proc,sys,dev,root,run,tmp,var/tmp,usr}
    chmod 1777 "$rootfs.tmp/tmp" "$rootfs.tmp/var/tmp"
    chmod 0700 "$rootfs.tmp/root"
    cp "$busybox" "$rootfs.tmp/bin/busybox"
    for applet in $("$busybox" --list); do
        [[ $applet == busybox ]] || ln -s busybox "$rootfs.tmp/bin/$applet"
    done
    ln -s bin "$rootfs.tmp/sbin"
    ln -s ../bin "$rootfs.tmp/usr/bin"
    ln -s ../bin "$rootfs.tmp/usr/sbin"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs.tmp/etc/passwd"
    printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$rootfs.tmp/etc/group"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$rootfs.tmp/etc/hosts"
    : >"$rootfs.tmp/etc/resolv.conf"
    echo nook-bench >"$rootfs.tmp/etc/hostname"
    echo "$stamp" >"$rootfs.tmp/.nook-bench-stamp"
    mv "$rootfs.tmp" "$rootfs"
    rm -rf "$BENCH_WORK/crun-bundle"
}

# The podman image $IMAGE: the same files, imported from a tarball (no registry involved).
podman_image() {
    local stamp=$1 rootfs=$BENCH_WORK/rootfs P
    P=$(podman_cmd)
    [[ $($P image inspect --format '{{index .Config.Labels "nook-bench-stamp"}}' "$IMAGE" 2>/dev/null) == "$stamp" ]] && return 0
    log "importing podman image $IMAGE (storage driver $PODMAN_STORAGE_DRIVER)"
    $P rmi -f "$IMAGE" >/dev/null 2>&1 || true
    tar -C "$rootfs" --exclude=./.nook-bench-stamp -cf "$BENCH_WORK/busybox-rootfs.tar" .
    $P import --change 'CMD ["/bin/sh"]' --change "LABEL nook-bench-stamp=$stamp" \
        "$BENCH_WORK/busybox-rootfs.tar" "$IMAGE" >/dev/null
    rm -f "$BENCH_WORK/busybox-rootfs.tar"
}

# ---------------------------------------------------------------------------------------------
# As root.
# ---------------------------------------------------------------------------------------------

# PACKAGES from Debian unless SKIP_INSTALL=1, then TOOLS... must be on PATH.
install_packages() {
    local p t missing=()
    if [[ ${SKIP_INSTALL:-0} != 1 ]]; then
        for p in "${PACKAGES[@]}"; do
            dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
        done
        if ((${#missing[@]})); then
            log "installing ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    fi
    for t in "$@"; do
        command -v "$t" >/dev/null || die "$t is not installed (package list: ${PACKAGES[*]})"
    done
}

# The account (created if missing) with a subordinate range, which podman's rootless mode
# needs (nook uses it when there is one), and its work directory. Sets BUID and BHOME.
prepare_account() {
    local f
    if ! id "$BENCH_USER" >/dev/null 2>&1; then
        log "creating account $BENCH_USER"
        useradd -m -s /bin/bash "$BENCH_USER"
    fi
    for f in /etc/subuid /etc/subgid; do
        if ! grep -q "^$BENCH_USER:" "$f" 2>/dev/null; then
            log "adding $BENCH_USER:100000:65536 to $f"
            echo "$BENCH_USER:100000:65536" >>"$f"
        fi
    done
    BUID=$(id -u "$BENCH_USER")
    BHOME=$(getent passwd "$BENCH_USER" | cut -d: -f6)
    mkdir -p "$BENCH_WORK"
    chown "$BENCH_USER:" "$BENCH_WORK"
    chmod 0755 "$BENCH_WORK"
    install -d -o "$BENCH_USER" -m 0700 "$BENCH_WORK/run"
}

# Copies the script SELF (as NAME) and this file into $BENCH_WORK, readable by the account.
install_scripts() {
    local self=$1 name=$2
    install -m 0755 "$self" "$BENCH_WORK/$name"
    install -m 0644 "$(dirname "$self")/bench-lib.sh" "$BENCH_WORK/bench-lib.sh"
}

# Sets BUSYBOX (Debian's static one) and NOOK_FOR_USER: NOOK_BIN, or a copy the account can
# execute (a repo under /root is not), or empty when there is no binary.
find_binaries() {
    BUSYBOX=$(dpkg -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -1 || true)
    [[ -n $BUSYBOX && -x $BUSYBOX ]] || BUSYBOX=$(command -v busybox)
    NOOK_FOR_USER=
    [[ -x $NOOK_BIN ]] || return 0
    if ! runuser -u "$BENCH_USER" -- test -x "$NOOK_BIN"; then
        warn "$NOOK_BIN is not executable by $BENCH_USER; benchmarking a copy in $BENCH_WORK/bin"
        install -D -m 0755 "$NOOK_BIN" "$BENCH_WORK/bin/nook"
        NOOK_BIN=$BENCH_WORK/bin/nook
    fi
    NOOK_FOR_USER=$NOOK_BIN
}

# Hybrid cgroups (v1 controllers under a tmpfs /sys/fs/cgroup plus cgroup2 at .../unified):
# in_bench_ns runs its command in a private mount namespace with the cgroup2 mount hidden.
# `/` is then made rshared inside that namespace only (new peer groups, not linked to the
# host's) because rootless podman warns and misbehaves when / is not shared.
HYBRID=0
if [[ $(stat -f -c %T /sys/fs/cgroup 2>/dev/null) == tmpfs && $(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null) == cgroup2fs ]]; then
    HYBRID=1
fi
in_bench_ns() {
    if ((HYBRID)); then
        unshare -m --propagation private -- bash -c '
            set -e
            mount -t tmpfs -o ro,nosuid,nodev,noexec,size=4k,mode=0755 nook-bench-hide-cgroup2 /sys/fs/cgroup/unified
            mount --make-rshared /
            exec "$@"' bash "$@"
    else
        "$@"
    fi
}

# On a 2-core machine a concurrent build triples the numbers: waits (QUIET_WAIT seconds at
# most, default 0) until the 1-minute load is below QUIET_LOAD (default: the argument), and
# warns when it is not. Sets LOAD_BEFORE.
wait_for_quiet() {
    local waited=0
    QUIET_LOAD=${QUIET_LOAD:-$1}
    QUIET_WAIT=${QUIET_WAIT:-0}
    while ((waited < QUIET_WAIT)) && awk -v q="$QUIET_LOAD" '{exit !($1 >= q)}' /proc/loadavg; do
        ((waited == 0)) && log "waiting up to ${QUIET_WAIT}s for the load average to drop below $QUIET_LOAD"
        sleep 10
        waited=$((waited + 10))
    done
    LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    if awk -v q="$QUIET_LOAD" '{exit !($1 >= q)}' /proc/loadavg; then
        warn "load average is $LOAD_BEFORE: other work is running, the timings will be noisy"
    fi
}
