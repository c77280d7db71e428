#!/usr/bin/env bash
# `ctr run --rm IMAGE ID true` through one containerd 1.6 with nook, runc and crun as the
# runc shim's binary (`--runc-binary`), side by side in one hyperfine run (issue 17).
#
#   sudo bench/containerd.sh [NOOK]      # NOOK: default target/release/nook
#
# Unlike the other benchmarks this one runs as ROOT: it measures containerd's rootful mode,
# the one Kubernetes nodes run (containerd's default spec, no user namespace). containerd
# is private to the run: its own config, root, state and sockets in a temporary directory,
# started in a private mount namespace with a tmpfs over /run (its shims' sockets and
# ctr's FIFOs stay out of the host's /run/containerd) and, on a hybrid-cgroup host, a tmpfs
# over /sys/fs/cgroup/unified (crun refuses the hybrid layout; runc and nook then see a
# cgroup v1 host, which is what this host is for them anyway). The image is a static
# busybox in one layer, pushed to a registry on 127.0.0.1 and pulled once with
# `ctr image pull --plain-http`.
#
# What differs between the three: runc and crun create cgroup v1 directories for each
# container (containerd's spec asks for CPU shares 1024 and names a cgroupsPath); nook
# writes cgroup v2 only and has no delegated v2 here, so it runs the container without
# a cgroup (shares 1024 changes nothing, docs/compatibility.md). Each run is a full ctr
# client + shim start + runtime create/start + wait + delete; the shim is the same.
#
# Environment: RUNS (default 30), WARMUP (default 3), SKIP_INSTALL=1, QUIET_LOAD/QUIET_WAIT
# (bench-lib.sh). Results: bench/results/containerd.{json,md} and a ratio line per runtime.

set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench-lib.sh
. "$HERE/bench-lib.sh"

[[ $(id -u) == 0 ]] || die "run as root: this measures containerd's rootful mode"
NOOK=$(realpath "${1:-$ROOT/target/release/nook}")
[[ -x $NOOK ]] || die "no nook binary at $NOOK (cargo build --release -p nook-cli)"
RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}
PACKAGES=(containerd runc crun hyperfine docker-registry skopeo busybox-static python3-minimal util-linux)
install_packages containerd ctr runc crun hyperfine docker-registry skopeo busybox nsenter python3

W=$(mktemp -d /tmp/nook-bench-containerd.XXXXXX)
REG_PID="" CD_PID=""
cleanup() {
    if [[ -n $CD_PID ]]; then
        for id in $(ctr_ containers ls -q 2>/dev/null); do
            ctr_ task kill -s KILL "$id" >/dev/null 2>&1 || true
            ctr_ task delete --force "$id" >/dev/null 2>&1 || true
            ctr_ containers rm "$id" >/dev/null 2>&1 || true
        done
        kill "$CD_PID" 2>/dev/null || true
        wait "$CD_PID" 2>/dev/null || true
    fi
    [[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
ctr_() { nsenter -m -t "$CD_PID" ctr -a "$W/containerd.sock" -n bench "$@"; }

# The image: busybox and its applets, one uncompressed layer, default command `true`.
log "building the busybox image"
mkdir -p "$W/rootfs"/{bin,etc,proc,sys,dev,tmp}
cp "$(command -v busybox)" "$W/rootfs/bin/busybox"
for a in $(busybox --list); do [[ $a == busybox ]] || ln -s busybox "$W/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$W/rootfs/etc/passwd"
tar --owner=0 --group=0 --numeric-owner -C "$W/rootfs" -cf "$W/layer.tar" .
python3 - "$W/layout" "$W/layer.tar" <<'EOF'
import hashlib, json, os, sys
d, tar = sys.argv[1], sys.argv[2]
os.makedirs(d + "/blobs/sha256")
def put(b):
    h = hashlib.sha256(b).hexdigest()
    open(f"{d}/blobs/sha256/{h}", "wb").write(b)
    return {"digest": "sha256:" + h, "size": len(b)}
layer = put(open(tar, "rb").read())
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
config = put(json.dumps({"architecture": arch, "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["true"]},
    "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}).encode())
manifest = put(json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
    "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar")]}).encode())
json.dump({"schemaVersion": 2, "manifests": [dict(manifest,
    mediaType="application/vnd.oci.image.manifest.v1+json",
    annotations={"org.opencontainers.image.ref.name": "v1"})]}, open(d + "/index.json", "w"))
open(d + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
EOF
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$W/registry" "$PORT" >"$W/registry.yml"
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
    skopeo copy --quiet --dest-tls-verify=false "oci:$W/layout:v1" "docker://127.0.0.1:$PORT/busybox:v1" 2>/dev/null && break
    sleep 0.1
done
IMAGE=127.0.0.1:$PORT/busybox:v1

# containerd, private (see the header).
cat >"$W/config.toml" <<EOF
version = 2
root = "$W/root"
state = "$W/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/containerd.sock"
[ttrpc]
  address = "$W/containerd.sock.ttrpc"
EOF
HIDE_UNIFIED=""
if [[ -f /sys/fs/cgroup/unified/cgroup.controllers ]]; then
    HIDE_UNIFIED="mount -t tmpfs -o size=1m nook-bench /sys/fs/cgroup/unified && "
fi
unshare --mount --propagation private sh -c \
    "mount -t tmpfs -o mode=755,size=16m nook-bench-run /run && ${HIDE_UNIFIED}exec containerd -c \"\$0\"" \
    "$W/config.toml" >"$W/containerd.log" 2>&1 &
CD_PID=$!
for _ in $(seq 200); do
    [[ -S $W/containerd.sock ]] && ctr_ version >/dev/null 2>&1 && break
    sleep 0.05
done
ctr_ image pull --plain-http "$IMAGE" >/dev/null

ln -s "$NOOK" "$W/nook-runtime"
declare -A BIN=([nook]="$W/nook-runtime" [runc]="$(command -v runc)" [crun]="$(command -v crun)")
CMDS=()
NAMES=()
for rt in nook runc crun; do
    # Each must work before it is timed.
    out=$(ctr_ run --rm --runc-binary "${BIN[$rt]}" --runc-root "$W/runc-$rt" "$IMAGE" "check-$rt" sh -c 'echo ok' 2>&1) \
        || die "$rt cannot run a container through containerd: $out"
    NAMES+=("$rt")
    # hyperfine runs each command through a shell: $$ makes every container ID unique.
    CMDS+=("nsenter -m -t $CD_PID ctr -a $W/containerd.sock -n bench run --rm --runc-binary ${BIN[$rt]} --runc-root $W/runc-$rt $IMAGE $rt-\$\$ true")
done

wait_for_quiet 1.5
log "hyperfine: $RUNS runs each (load before: $LOAD_BEFORE)"
mkdir -p "$HERE/results"
args=(--warmup "$WARMUP" --runs "$RUNS" --export-json "$HERE/results/containerd.json"
      --export-markdown "$HERE/results/containerd.md")
for i in "${!CMDS[@]}"; do args+=(-n "${NAMES[$i]}" "${CMDS[$i]}"); done
hyperfine "${args[@]}"

python3 - "$HERE/results/containerd.json" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base = r["runc"]["median"]
for name, x in r.items():
    print(f"{name:5} median {x['median']*1000:7.1f} ms  mean {x['mean']*1000:7.1f} ms "
          f"± {x['stddev']*1000:5.1f}  ({x['median']/base:.2f}x runc)")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
