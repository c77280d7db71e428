#!/usr/bin/env bash
# Pull + unpack of a multi-layer image (>= 100 MB) from a registry on 127.0.0.1 (issue 4):
# nook against `podman pull` and `skopeo copy` + `umoci unpack --rootless`, side by side.
#
# Run as root on Debian/Ubuntu:   bench/pull-unpack.sh
#
#   1. (root) installs hyperfine docker-registry skopeo umoci podman uidmap busybox-static
#      jq (SKIP_INSTALL=1 to skip) and checks the account ($BENCH_USER, default nooktest).
#   2. builds an OCI layout from the host's files: busybox-static, then /usr/lib/python3.11,
#      /usr/lib/python3 and /usr/share/locale as three more gzip layers (~280 MB unpacked),
#      starts docker-registry on a free loopback port and pushes it with skopeo.
#   3. as the account, ONE hyperfine run: each command starts from an empty store (the
#      --prepare step empties it, untimed) and ends with every layer unpacked on disk:
#        nook     nook pull  (download, verify, unpack each layer in the user namespace)
#        podman   podman pull (rootless; overlay storage: download, verify, unpack)
#        skopeo+umoci  skopeo copy to an OCI layout, then umoci unpack --rootless
#   4. prints medians and ratios; writes bench/results/pull-unpack.{json,md}.
#
# Environment: NOOK_BIN (default <repo>/target/release/nook), BENCH_USER, BENCH_WORK
# (default /var/tmp/nook-pull-bench), RUNS (default 5), SKIP_INSTALL=1.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
NOOK_BIN=${NOOK_BIN:-$REPO/target/release/nook}
BENCH_USER=${BENCH_USER:-nooktest}
WORK=${BENCH_WORK:-/var/tmp/nook-pull-bench}
RUNS=${RUNS:-5}
RESULTS=$REPO/bench/results

[ "$(id -u)" = 0 ] || { echo "run as root (it installs packages; everything timed runs as $BENCH_USER)" >&2; exit 1; }
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    need=""
    for p in hyperfine docker-registry skopeo umoci podman uidmap busybox-static jq; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need="$need $p"
    done
    if [ -n "$need" ]; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need
    fi
fi
id "$BENCH_USER" >/dev/null 2>&1 || { echo "no account $BENCH_USER: create it (and its /etc/subuid range) first" >&2; exit 1; }
[ -x "$NOOK_BIN" ] || { echo "no nook binary at $NOOK_BIN: cargo build --release -p nook-cli" >&2; exit 1; }

rm -rf "$WORK"; mkdir -p "$WORK"/{layout/blobs/sha256,build,bin}
cp "$NOOK_BIN" "$WORK/bin/nook"

# --- the image -------------------------------------------------------------------------------
sha() { sha256sum "$1" | cut -d' ' -f1; }
layers=""; diffs=""
add_layer() { # add_layer NAME TAR-ARGS...
    local name=$1; shift
    tar --numeric-owner --owner=0 --group=0 -cf "$WORK/build/$name.tar" "$@"
    gzip -c -6 -n "$WORK/build/$name.tar" > "$WORK/build/$name.tar.gz"
    local d; d=$(sha "$WORK/build/$name.tar"); local c; c=$(sha "$WORK/build/$name.tar.gz")
    cp "$WORK/build/$name.tar.gz" "$WORK/layout/blobs/sha256/$c"
    layers="$layers${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$c\",\"size\":$(stat -c%s "$WORK/build/$name.tar.gz")}"
    diffs="$diffs${diffs:+,}\"sha256:$d\""
}
mkdir -p "$WORK/build/base/bin"; cp /bin/busybox "$WORK/build/base/bin/"; ln -s busybox "$WORK/build/base/bin/sh"
add_layer base -C "$WORK/build/base" .
add_layer py311 -C / usr/lib/python3.11
add_layer py3 -C / usr/lib/python3
add_layer locale -C / usr/share/locale
echo "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diffs]}}" > "$WORK/build/config.json"
C=$(sha "$WORK/build/config.json"); cp "$WORK/build/config.json" "$WORK/layout/blobs/sha256/$C"
echo "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$C\",\"size\":$(stat -c%s "$WORK/build/config.json")},\"layers\":[$layers]}" > "$WORK/build/manifest.json"
M=$(sha "$WORK/build/manifest.json"); cp "$WORK/build/manifest.json" "$WORK/layout/blobs/sha256/$M"
echo '{"imageLayoutVersion":"1.0.0"}' > "$WORK/layout/oci-layout"
echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$M\",\"size\":$(stat -c%s "$WORK/build/manifest.json"),\"annotations\":{\"org.opencontainers.image.ref.name\":\"bench\"}}]}" > "$WORK/layout/index.json"
UNPACKED=$(cat "$WORK"/build/*.tar | wc -c); PACKED=$(cat "$WORK"/build/*.tar.gz | wc -c)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$WORK/registry" "$PORT" > "$WORK/registry.yml"
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
trap 'kill $REG_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/layout:bench" "docker://127.0.0.1:$PORT/bench:latest"
IMG=127.0.0.1:$PORT/bench:latest

chown -R "$BENCH_USER" "$WORK"
chmod 755 "$WORK" "$WORK/bin"
U=$WORK/user; mkdir -p "$U"; chown "$BENCH_USER" "$U"
run_user() { runuser -u "$BENCH_USER" -- env -i HOME="$U" PATH=/usr/sbin:/usr/bin:/sbin:/bin XDG_RUNTIME_DIR= "$@"; }

NOOK="$WORK/bin/nook --root $U/nook"
PODMAN="podman --root $U/podman --runroot $U/podman-run --storage-driver ${PODMAN_STORAGE_DRIVER:-overlay}"
# Each prepare step empties the store (untimed); the store itself stays initialised.
run_user $PODMAN info >/dev/null 2>&1 || true
run_user hyperfine --runs "$RUNS" --export-json "$U/pull-unpack.json" --export-markdown "$U/pull-unpack.md" \
    -n nook --prepare "$NOOK rmi -a >/dev/null 2>&1 || true" "$NOOK pull -q --tls-verify=false $IMG" \
    -n podman --prepare "$PODMAN rmi -a -f >/dev/null 2>&1 || true" "$PODMAN pull -q --tls-verify=false $IMG" \
    -n skopeo+umoci --prepare "chmod -R u+w $U/oci $U/bundle 2>/dev/null; rm -rf $U/oci $U/bundle" \
        "skopeo copy --quiet --src-tls-verify=false docker://$IMG oci:$U/oci:bench && umoci unpack --rootless --image $U/oci:bench $U/bundle >/dev/null"

mkdir -p "$RESULTS"; cp "$U/pull-unpack.json" "$U/pull-unpack.md" "$RESULTS/"
median() { jq -r ".results[] | select(.command==\"$1\") | .median" "$RESULTS/pull-unpack.json"; }
N=$(median nook); P=$(median podman); S=$(median skopeo+umoci)
{
    echo "image: 4 gzip layers, $((PACKED/1000000)) MB compressed, $((UNPACKED/1000000)) MB unpacked, registry on 127.0.0.1"
    printf 'median seconds: nook %.3f  podman %.3f  skopeo+umoci %.3f\n' "$N" "$P" "$S"
    printf 'podman / nook: %.2fx   (skopeo+umoci) / nook: %.2fx   (target: podman / nook >= 1.5)\n' \
        "$(echo "$P / $N" | bc -l)" "$(echo "$S / $N" | bc -l)"
} | tee "$RESULTS/pull-unpack.ratios.txt"
