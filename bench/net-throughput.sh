#!/usr/bin/env bash
# nook's userspace network against podman's network backends, side by side in one run:
#
#   container → host  (iperf3 client in the container, server on the host's 127.0.0.1)
#     host loopback   iperf3 -c 127.0.0.1                     the ceiling
#     nook            nook run --network nook:allow_host_loopback=true host iperf3 -c 10.0.2.2
#     pasta           pasta --config-net -a 10.0.2.100 -n 24 -g 10.0.2.2 -- iperf3 -c 10.0.2.2
#                     (pasta maps its gateway address to the host's loopback by default)
#     slirp4netns     unshare -rn + slirp4netns --configure --mtu 65520: iperf3 -c 10.0.2.2
#                     (10.0.2.2 is the host's loopback unless --disable-host-loopback)
#   each both ways (-R: the host sends), MTU 65520 everywhere (all three's default or set).
#
#   host → container through a published port (iperf3 server in the container)
#     host loopback   iperf3 -s on 127.0.0.1                  the ceiling
#     nook            nook run -p 127.0.0.1:P:5201 host iperf3 -s
#     pasta           pasta --config-net -t P:5201 -- iperf3 -s
#   podman's rootlessport is not measured: podman cannot start containers on this host's
#   hybrid cgroup layout without the namespace tricks of start-latency.sh; pasta -t is
#   podman's other forwarding path.
#
# Everything runs as the unprivileged account BENCH_USER (default nooktest). As root the
# script installs the Debian packages first (iperf3 passt slirp4netns busybox-static
# util-linux iproute2), unless SKIP_INSTALL=1. Addresses: 127.0.0.1 on the host and the
# namespaces' own virtual 10.0.2.x, which the three tools terminate in user space.
#
# Output: a table of Gbit/s (iperf3's receiver figure) with ratios, to stdout and to
# RESULTS_DIR/net-throughput.md; raw iperf3 JSON in RESULTS_DIR/net-throughput/.
#
# Environment: NOOK_BIN (default target/release/nook), DURATION (seconds per run, 5),
# BENCH_USER, RESULTS_DIR (default bench/results).

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
BENCH_USER=${BENCH_USER:-nooktest}
DURATION=${DURATION:-5}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
NOOK_BIN=${NOOK_BIN:-$ROOT/target/release/nook}
PACKAGES=(iperf3 passt slirp4netns busybox-static util-linux iproute2 jq)

die() { echo "net-throughput.sh: $*" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
    source "$ROOT/bench/bench-lib.sh"
    install_packages
    id "$BENCH_USER" >/dev/null 2>&1 || useradd -m "$BENCH_USER" || die "cannot create $BENCH_USER"
    chmod 0666 /dev/net/tun 2>/dev/null
    WORK=$(mktemp -d /tmp/nook-netbench.XXXXXX)
    chmod 755 "$WORK"
    cp "$NOOK_BIN" "$WORK/nook" || die "no nook binary at $NOOK_BIN: cargo build --release -p nook-cli"
    chmod 755 "$WORK/nook"
    cp "$0" "$WORK/net-throughput.sh"
    mkdir -p "$RESULTS_DIR"
    chown "$BENCH_USER" "$WORK"
    runuser -u "$BENCH_USER" -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$WORK" \
        NOOK_BIN="$WORK/nook" DURATION="$DURATION" RESULTS_DIR="$WORK/results" \
        bash "$WORK/net-throughput.sh"
    rc=$?
    cp -r "$WORK/results/." "$RESULTS_DIR/" 2>/dev/null
    rm -rf "$WORK"
    exit $rc
fi

for c in iperf3 pasta slirp4netns unshare nsenter ip jq; do
    command -v "$c" >/dev/null || die "missing $c: as root, apt-get install ${PACKAGES[*]}"
done
[ -x "$NOOK_BIN" ] || die "no nook binary at $NOOK_BIN"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
RAW=$RESULTS_DIR/net-throughput
mkdir -p "$RAW"
PORT=$((20000 + RANDOM % 20000))
declare -A RESULT

# An iperf3 server on the host's loopback for one test; prints nothing.
host_server() { iperf3 -s -1 -B 127.0.0.1 -p "$PORT" >/dev/null 2>&1 & SERVER=$!; until iperf3_listening; do :; done; }
iperf3_listening() { ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q LISTEN || grep -qi ":$(printf %04X "$PORT") 00000000:0000 0A" /proc/net/tcp 2>/dev/null; }
gbps() { jq -r '.end.sum_received.bits_per_second / 1e9 | . * 100 | round / 100' "$1" 2>/dev/null || echo "n/a"; }

measure() { # name direction(""|-R) command...
    local name=$1 dir=$2; shift 2
    local out="$RAW/${name// /_}${dir}.json"
    host_server
    "$@" iperf3 -J -c "$TARGET" -p "$PORT" -t "$DURATION" $dir >"$out" 2>"$out.err"
    wait "$SERVER" 2>/dev/null
    RESULT["$name$dir"]=$(gbps "$out")
}

in_nook() { "$NOOK_BIN" run --rm --network nook:allow_host_loopback=true host "$@"; }
in_pasta() { pasta --config-net -a 10.0.2.100 -n 24 -g 10.0.2.2 -m 65520 -- "$@"; }
in_slirp() {
    # A user+net namespace that waits for slirp4netns's tap0, then runs the command.
    local ready; ready=$(mktemp -u); mkfifo "$ready"
    unshare -rn sh -c 'echo $$ > '"$ready"'.pid; until ip -o link show tap0 2>/dev/null | grep -q "state UP\|UP,"; do :; done; exec "$@"' sh "$@" &
    local ns=$!
    until [ -s "$ready.pid" ]; do :; done
    slirp4netns --configure --mtu=65520 "$(cat "$ready.pid")" tap0 >/dev/null 2>&1 &
    local slirp=$!
    wait $ns; local rc=$?
    kill $slirp 2>/dev/null; wait $slirp 2>/dev/null
    rm -f "$ready" "$ready.pid"
    return $rc
}

echo "container → host, $DURATION s each, iperf3 receiver Gbit/s"
for dir in "" "-R"; do
    TARGET=127.0.0.1; measure "host loopback" "$dir" env
    TARGET=10.0.2.2;  measure "nook" "$dir" in_nook
    TARGET=10.0.2.2;  measure "pasta" "$dir" in_pasta
    TARGET=10.0.2.2;  measure "slirp4netns" "$dir" in_slirp
done

# Port forwarding: the server in the container, the client on the host. The server's
# "Server listening" line says it is up (the host listener exists before it does).
fwd() { # name command...
    local name=$1; shift
    local out="$RAW/fwd_${name// /_}.json" log; log=$(mktemp)
    "$@" >"$log" 2>&1 &
    local runner=$!
    until grep -q "Server listening" "$log"; do
        kill -0 $runner 2>/dev/null || { RESULT["fwd $name"]="failed: $(tail -1 "$log")"; return; }
    done
    iperf3 -J -c 127.0.0.1 -p "$hp" -t "$DURATION" >"$out" 2>"$out.err"
    # Peak resident memory of nook (supervisor + netstack threads) while saturated.
    wait $runner 2>/dev/null
    RESULT["fwd $name"]=$(gbps "$out")
    rm -f "$log"
}
hp=$((PORT + 1))
# stdbuf: iperf3's banner must not sit in a stdio buffer.
fwd "host loopback" stdbuf -oL iperf3 -s -1 -B 127.0.0.1 -p "$hp"
fwd "nook" "$NOOK_BIN" run --rm -p "127.0.0.1:$hp:5201" host stdbuf -oL iperf3 -s -1
fwd "pasta" pasta --config-net -t "$hp:5201" -- stdbuf -oL iperf3 -s -1

# The netstack's resident memory while the tap path is saturated (supervisor process,
# which holds the netstack threads; the container's processes are separate).
host_server
"$NOOK_BIN" run --rm --network nook:allow_host_loopback=true host \
    iperf3 -c 10.0.2.2 -p "$PORT" -t "$DURATION" -R >/dev/null 2>&1 &
NOOKPID=$!
RSS=0
while kill -0 $NOOKPID 2>/dev/null; do
    r=$(awk '/^VmHWM/ {print $2}' /proc/$NOOKPID/status 2>/dev/null)
    [ -n "$r" ] && RSS=$r
    sleep 0.5   # sampling, not synchronisation: VmHWM keeps the peak anyway
done
wait "$SERVER" 2>/dev/null

find "$RAW" -size 0 -delete   # iperf3 said nothing on stderr
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
{
    echo "| path | container → host | host → container (-R) | nook ÷ this (→) | nook ÷ this (←) |"
    echo "|---|---|---|---|---|"
    for n in "host loopback" "nook" "pasta" "slirp4netns"; do
        echo "| $n | ${RESULT[$n]} | ${RESULT[$n-R]} | $(ratio "${RESULT[nook]}" "${RESULT[$n]}") | $(ratio "${RESULT[nook-R]}" "${RESULT[$n-R]}") |"
    done
    echo
    echo "| port forward (host → container) | Gbit/s | nook ÷ this |"
    echo "|---|---|---|"
    for n in "host loopback" "nook" "pasta"; do
        echo "| $n | ${RESULT[fwd $n]} | $(ratio "${RESULT[fwd nook]}" "${RESULT[fwd $n]}") |"
    done
    echo
    echo "nook supervisor + netstack peak RSS while saturated (-R): $((RSS / 1024)) MiB"
    echo
    echo "kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
} | tee "$RESULTS_DIR/net-throughput.md"
