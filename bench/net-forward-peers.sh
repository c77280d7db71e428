#!/bin/bash
# Port-forwarded throughput, host → container: nook -p against podman's rootlessport
# (slirp4netns with port_handler=rootlesskit), pasta -t and the host's loopback (the
# ceiling), alternated in rounds on the same machine (issue 6).
#
# Run as the unprivileged account (e.g. `runuser -u nooktest -- bench/net-forward-peers.sh`)
# after bench/start-latency.sh has prepared the account's podman storage and busybox image
# (/var/tmp/nook-bench-$USER/podman-overlay, localhost/nook-bench-busybox:latest).
# podman runs with nook as its OCI runtime: crun 1.8.1 refuses this hybrid-cgroup host, nook
# does not, and the runtime is not on the forwarded data path (rootlessport is). iperf3 in
# the busybox image is the host's, bind-mounted read-only with its libraries.
#
# Environment: NOOK_BIN (a nook binary; a `nook oci` wrapper is made beside a copy of it),
# DURATION (seconds per iperf3 run, default 5), ROUNDS (default 2), PORT (first of 4 ports,
# default 5401). Prints one line per run: path, Gbit/s received.
set -uo pipefail
NOOK_BIN=${NOOK_BIN:?set NOOK_BIN to a nook binary}
D=${DURATION:-5}
ROUNDS=${ROUNDS:-2}
PORT=${PORT:-5401}
B=/var/tmp/nook-bench-$(id -un)/podman-overlay
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d /tmp/nook-fwd-xdg.XXXXXX)}
W=$(mktemp -d /tmp/nook-fwd.XXXXXX)
cp "$NOOK_BIN" "$W/nook"
printf '#!/bin/sh\nexec %s oci "$@"\n' "$W/nook" >"$W/nook-runtime"
chmod 755 "$W" "$W/nook" "$W/nook-runtime"
P="podman --root $B/storage --runroot $B/run --storage-driver overlay --runtime $W/nook-runtime --cgroup-manager cgroupfs --events-backend file"
LIBS="-v /usr:/usr:ro -v /lib:/lib:ro -v /lib64:/lib64:ro"

run() { # name port command...: the server's "Server listening" line says it is up
    local name=$1 port=$2 log g r
    shift 2
    log=$(mktemp)
    "$@" >"$log" 2>&1 &
    r=$!
    until grep -q "Server listening" "$log"; do
        kill -0 $r 2>/dev/null || { echo "$name failed: $(tail -2 "$log")"; return; }
    done
    g=$(iperf3 -J -c 127.0.0.1 -p "$port" -t "$D" | jq '.end.sum_received.bits_per_second/1e9')
    wait $r
    rm -f "$log"
    printf '%s %.2f\n' "$name" "$g"
}
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$ROUNDS"); do
    run "host loopback" $PORT stdbuf -oL iperf3 -s -1 -B 127.0.0.1 -p $PORT
    run "nook -p" $((PORT + 1)) "$W/nook" run --rm -p "127.0.0.1:$((PORT + 1)):5201" host stdbuf -oL iperf3 -s -1
    # shellcheck disable=SC2086
    run "podman rootlessport" $((PORT + 2)) $P run --rm --network slirp4netns:port_handler=rootlesskit \
        -p "127.0.0.1:$((PORT + 2)):5201" $LIBS localhost/nook-bench-busybox:latest \
        /usr/bin/stdbuf -oL /usr/bin/iperf3 -s -1
    run "pasta -t" $((PORT + 3)) pasta --config-net -t "$((PORT + 3)):5201" -- stdbuf -oL iperf3 -s -1
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$W"
