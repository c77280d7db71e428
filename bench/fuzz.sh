#!/usr/bin/env bash
# bench/fuzz.sh: runs every cargo-fuzz target of the workspace for a bounded time.
#
#   bench/fuzz.sh                    # every target, FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=600 bench/fuzz.sh unpack oci_config
#
# Targets (CRATE/fuzz/fuzz_targets/NAME.rs):
#   newuidmap-helper  subid_parser args_parser   the setuid helpers' parsers
#   net               frames                     the netstack on a hostile container's frames
#   fs                reference manifest unpack  image references; manifests, indexes and
#                                                configs; the layer unpacker on a scratch dir
#   rootless          oci_config                 `nook oci create`'s checks on a config.json
#
# Needs cargo-fuzz (installed with `cargo install cargo-fuzz --locked` when missing) and a
# nightly toolchain (`cargo +nightly`); without one, the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only -Z flags). libFuzzer itself is built
# from the libfuzzer-sys crate (a C++ compiler is needed).
#
# Each crate's targets are built once (one shared target dir, target/fuzz), then each
# binary runs with -max_total_time=FUZZ_SECONDS, its corpus in CRATE/fuzz/corpus/NAME and
# crashes in CRATE/fuzz/artifacts/NAME/ (both ignored by git; the committed seeds of
# CRATE/fuzz/seeds/NAME, where there are some, are read too, and CRATE/fuzz/NAME.dict is
# the target's libFuzzer dictionary where there is one). Started as root, the
# targets run as FUZZ_USER (default nobody); the unpacker, which writes files, runs as
# the root of a user namespace of its own (`unshare --map-root-user`, as the store
# helper runs), so a bug there cannot write the host's files. nice -n 19 throughout:
# the machine is shared.
#
# Output: one line per target (`NAME: ok, N runs in S s` or `NAME: CRASH ...`), and the
# exit status is non-zero when any target crashed. A crash is fixed and its input kept
# as a regression test beside the code it hit (see docs/ARCHITECTURE.md, Tests).

set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-60}
FUZZ_USER=${FUZZ_USER:-nobody}
TARGET_DIR=$ROOT/target/fuzz
TRIPLE=x86_64-unknown-linux-gnu

die() { printf 'bench/fuzz.sh: %s\n' "$*" >&2; exit 2; }

case "$SECONDS_EACH" in '' | *[!0-9]*) die "FUZZ_SECONDS must be a number of seconds" ;; esac

ALL="newuidmap-helper:subid_parser newuidmap-helper:args_parser net:frames fs:reference fs:manifest fs:unpack rootless:oci_config"
if [ $# -gt 0 ]; then
    WANTED=""
    for name in "$@"; do
        found=""
        for t in $ALL; do [ "${t#*:}" = "$name" ] && found=$t; done
        [ -n "$found" ] || die "unknown target $name (known: $(for t in $ALL; do printf '%s ' "${t#*:}"; done))"
        WANTED="$WANTED $found"
    done
else
    WANTED=$ALL
fi

# --- toolchain ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    nice -n 19 cargo install cargo-fuzz --locked || die "cannot install cargo-fuzz"
fi
if cargo +nightly --version >/dev/null 2>&1; then
    FUZZ=(cargo +nightly fuzz)
else
    echo "==> no nightly toolchain: the stable one with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    FUZZ=(cargo fuzz)
fi

# --- who runs the targets ----------------------------------------------------------------
RUN_AS=()
BIN_DIR=""
if [ "$(id -u)" = 0 ]; then
    id "$FUZZ_USER" >/dev/null 2>&1 || die "FUZZ_USER=$FUZZ_USER does not exist"
    RUN_AS=(runuser -u "$FUZZ_USER" --)
    BIN_DIR=$(mktemp -d /tmp/nook-fuzz-bin.XXXXXX) || die "mktemp failed"
    chmod 755 "$BIN_DIR"
    trap 'rm -rf "$BIN_DIR"' EXIT
fi

# --- build -------------------------------------------------------------------------------
CRATES=""
for t in $WANTED; do
    c=${t%%:*}
    case " $CRATES " in *" $c "*) ;; *) CRATES="$CRATES $c" ;; esac
done
for c in $CRATES; do
    echo "==> building the $c fuzz targets"
    (cd "$ROOT/$c" && nice -n 19 "${FUZZ[@]}" build --target-dir "$TARGET_DIR") ||
        die "building $c/fuzz failed"
done

# --- run ---------------------------------------------------------------------------------
failed=0
summary=""
for t in $WANTED; do
    c=${t%%:*}
    name=${t#*:}
    bin=$TARGET_DIR/$TRIPLE/release/$name
    [ -x "$bin" ] || die "$bin was not built"
    corpus=$ROOT/$c/fuzz/corpus/$name
    artifacts=$ROOT/$c/fuzz/artifacts/$name
    seeds=$ROOT/$c/fuzz/seeds/$name
    mkdir -p "$corpus" "$artifacts"
    dirs=("$corpus")
    [ -d "$seeds" ] && dirs+=("$seeds")
    dict=()
    [ -f "$ROOT/$c/fuzz/$name.dict" ] && dict=(-dict="$ROOT/$c/fuzz/$name.dict")
    if [ -n "$BIN_DIR" ]; then
        cp "$bin" "$BIN_DIR/$name" && chmod 755 "$BIN_DIR/$name"
        bin=$BIN_DIR/$name
        chown -R "$FUZZ_USER" "$corpus" "$artifacts"
    fi
    # The unpacker writes files: as the root of a user namespace of its own (as the
    # store helper is), never as anyone who could write the host's files.
    ns=()
    [ "$name" = unpack ] && ns=(unshare --map-root-user)
    log=$artifacts/last-run.log
    echo "==> $name for ${SECONDS_EACH}s"
    (cd "$artifacts" && nice -n 19 "${RUN_AS[@]}" "${ns[@]}" "$bin" \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 "${dict[@]}" "${dirs[@]}") >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crash=$(ls "$artifacts" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' | head -1)
    if [ $status -ne 0 ] || [ -n "$crash" ]; then
        line="$name: CRASH (exit $status) ${crash:+$artifacts/$crash}; log $log"
        failed=1
    else
        line="$name: ok, ${runs:-?} runs in ${SECONDS_EACH} s, corpus $(ls "$corpus" | wc -l) inputs"
    fi
    echo "    $line"
    summary="$summary$line"$'\n'
done

printf '\n==> fuzz summary\n%s' "$summary"
exit $failed
