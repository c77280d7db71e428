#!/usr/bin/env bash
# nook's whole test suite: `bash tests/run.sh` (and what .ci/run runs).
#
# Started by root (CI, a fresh Debian/Ubuntu machine):
#   1. installs the Debian packages the tests use (only those missing),
#   2. builds the workspace with every target,
#   3. runs the unit tests (they start no containers),
#   4. runs the started-by-root smoke test (tests/tests/run_as_root.rs) as root,
#   5. prepares the unprivileged account `nooktest` (home, a subordinate ID range, the
#      setuid ID-map helpers when they are built, /dev/fuse and /dev/net/tun 0666),
#      copies the binaries to a world-readable temporary directory, and runs every
#      integration test executable as `nooktest` with a clean, explicit environment;
#      the escape suite's cross-account tests (tests/security/cross_user.rs) run as root,
#      which only drives `nooktest` and a second account `nooktest2` through runuser.
# Started by anyone else: says what it needs, then builds and runs the same tests as the
# current user (the root-only test then prints SKIP).
#
# While working on one area: NOOK_TESTS="security exec_join" runs only those integration
# test executables (no unit tests; the VM lane only if "vm-lane" is listed, the root test
# only if "run_as_root" is), and NOOK_TEST_ARGS is passed to each (a libtest name filter).
#
# /etc/subuid and /etc/subgid: the account's range is whatever this machine gives it. Only
# where it has none does this script add one, with usermod, said loudly: the first free
# range (the rule of `nook info` and the single-ID notice), never a fixed one that may be
# another account's. The ID-map helper differential test needs fixed lines of its own;
# it gets them from files bound over /etc/subuid and /etc/subgid in a private mount
# namespace (the setuid helpers read those paths there), so the host's files never
# hold them. A machine whose files already give other accounts ranges anywhere is fine.
#
# Output: each test executable's `test result:` line, every `SKIP:` line, and at the end
# one line `integration: N passed, M failed, K skipped`. Exits non-zero when anything failed.

set -uo pipefail

START=$SECONDS
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD

# rustup installs cargo in ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'tests/run.sh: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) for this user"

TEST_USER=nooktest
# A second account, only for the cross-account attempts (tests/security/cross_user.rs):
# root drives both through runuser. It gets no subordinate ID ranges.
TEST_USER2=nooktest2
# Debian packages the tests use, and a command that shows each is there.
#   busybox-static  /bin/busybox for the --rootfs tests (must be static)
#   uidmap          newuidmap/newgidmap, the reference for the ID-map helper tests
#   util-linux      runuser, ipcmk, ipcs
#   mount           mount (a mount made inside a container)
#   procps          ps, for diagnosing a failed run
#   iproute2        ip (the loopback in --network none)
#   coreutils       stty, sha256sum, stat, od ...
#   python3-minimal the UDP client/server inside containers and the ICMP test's pinger
#                   (net_outbound, net_forward, net_icmp)
#   docker-registry skopeo  a real registry on 127.0.0.1 and the tool that pushes to it
#   apache2-utils   htpasswd, for the registry's basic-auth test
#   openssl         the key, certificate and JWT signatures of the bearer-token test
#   gzip zstd tar   building test image layers
#   podman slirp4netns  the OCI runtime client test (podman --runtime nook-runtime,
#                   podman_client; rootless podman networks through slirp4netns, which
#                   podman only recommends)
#   debootstrap debian-archive-keyring curl  the Debian image of the workload lane
#                   (tests/workloads/debian-image.sh, made here as root)
PACKAGES="busybox-static uidmap util-linux mount procps iproute2 coreutils python3-minimal docker-registry skopeo apache2-utils openssl gzip zstd tar podman slirp4netns debootstrap debian-archive-keyring curl"

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

# --- 1. packages --------------------------------------------------------------------------
if [ $IS_ROOT = 1 ]; then
    missing=""
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        say "installing Debian packages:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q || die "apt-get update failed"
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing </dev/null || die "apt-get install$missing failed"
    else
        say "Debian packages present: $PACKAGES"
    fi
else
    say "not root: running the tests as $(id -un) (uid $(id -u))"
    echo "    needs: the Debian packages $PACKAGES"
    echo "           (as root: apt-get install $PACKAGES),"
    echo "           unprivileged user namespaces enabled, and a non-root account (this one)."
    echo "    Run as root, this script installs the packages and runs the tests as '$TEST_USER';"
    echo "    here the started-by-root test prints SKIP."
    for c in busybox runuser ip ipcmk mount stty sha256sum; do
        command -v "$c" >/dev/null 2>&1 || echo "    missing command: $c (tests that use it will fail)"
    done
fi

# --- 2. build -----------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/nook-tests.XXXXXX) || die "mktemp failed"
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"

say "building the workspace (cargo build --workspace --all-targets)"
cargo build --workspace --all-targets || die "build failed"
cargo test --workspace --no-run --message-format=json >"$WORK/build.json" 2>"$WORK/build.err" \
    || { cat "$WORK/build.err" >&2; die "building the test executables failed"; }
# The integration test executables: artifacts whose target kind is "test".
grep '"reason":"compiler-artifact"' "$WORK/build.json" | grep '"kind":\["test"\]' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | sort -u >"$WORK/tests.list"
[ -s "$WORK/tests.list" ] || die "no integration test executables were built"
NOOK="$ROOT/target/debug/nook"
[ -x "$NOOK" ] || die "target/debug/nook was not built"

FAILED_STEPS=""

# --- 3. unit tests ------------------------------------------------------------------------
# Whether the executable named $1 runs in this invocation (NOOK_TESTS, see the top).
selected() {
    [ -z "${NOOK_TESTS:-}" ] && return 0
    case " $NOOK_TESTS " in *" $1 "*) return 0 ;; esac
    return 1
}
# shellcheck disable=SC2206
TEST_ARGS=(${NOOK_TEST_ARGS:-})

if [ -z "${NOOK_TESTS:-}" ]; then
    say "unit tests (cargo test --workspace --lib --bins)"
    cargo test --workspace --lib --bins || FAILED_STEPS="$FAILED_STEPS unit-tests"
fi

# Runs one test executable ($2) with the command prefix in the rest, logs to $WORK/$1.log.
TOTAL_PASS=0
TOTAL_FAIL=0
TOTAL_SKIP=0
SKIP_LINES=""
run_test_exe() {
    local name=$1; shift
    local log="$WORK/$name.log" rc
    say "integration: $name"
    timeout --kill-after=10 600 "$@" </dev/null 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    local result pass fail skips
    result=$(grep -E '^test result: ' "$log" | tail -n1)
    pass=$(printf '%s' "$result" | sed -n 's/.* \([0-9][0-9]*\) passed.*/\1/p')
    fail=$(printf '%s' "$result" | sed -n 's/.* \([0-9][0-9]*\) failed.*/\1/p')
    # Anywhere in a line: libtest's "test NAME ... " may precede it on the same line.
    skips=$(grep -o 'SKIP: [^ ]*: ' "$log" | wc -l)
    if [ -z "$result" ] || [ -z "$pass" ]; then
        echo "tests/run.sh: $name ended (exit $rc) without a test result line"
        pass=0; fail=${fail:-1}
        [ "$fail" = 0 ] && fail=1
    elif [ "$rc" != 0 ] && [ "${fail:-0}" = 0 ]; then
        echo "tests/run.sh: $name exited $rc"
        fail=1
    fi
    TOTAL_PASS=$((TOTAL_PASS + pass - skips))
    TOTAL_FAIL=$((TOTAL_FAIL + ${fail:-0}))
    TOTAL_SKIP=$((TOTAL_SKIP + skips))
    if [ "$skips" -gt 0 ]; then
        SKIP_LINES="$SKIP_LINES$(grep -o 'SKIP: [^ ]*: .*' "$log" | sed "s/^/  [$name] /")"$'\n'
    fi
    [ "$rc" = 0 ] || FAILED_STEPS="$FAILED_STEPS $name"
}

# --- 4. started by root -------------------------------------------------------------------
ROOT_TEST=$(grep '/run_as_root-[0-9a-f]*$' "$WORK/tests.list" | head -n1)
if [ $IS_ROOT = 1 ] && selected run_as_root; then
    if [ -n "$ROOT_TEST" ]; then
        run_test_exe run_as_root env NOOK_BIN="$NOOK" "$ROOT_TEST" "${TEST_ARGS[@]}"
    else
        echo "tests/run.sh: the run_as_root test executable is missing"
        FAILED_STEPS="$FAILED_STEPS run_as_root"
    fi
fi

# --- 5. the unprivileged account and its environment --------------------------------------
# Whether the file $1 (/etc/subuid format) gives $TEST_USER (by name or uid) a range.
has_range() {
    [ -r "$1" ] && awk -F: -v u="$TEST_USER" -v id="$TEST_UID" \
        '($1 == u || $1 == id) && $2 ~ /^[0-9]+$/ && $3 ~ /^[1-9][0-9]*$/ { found = 1 } END { exit !found }' "$1"
}
# FIRST-LAST of the first 65536-aligned range of 65536 IDs above 100000 that overlaps no
# line of /etc/subuid or /etc/subgid, whoever it belongs to (rootless/src/subid.rs,
# free_range: the same rule as `nook info` and the single-ID notice).
free_subid_range() {
    cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: '
        $1 !~ /^[[:space:]]*#/ && $2 ~ /^[[:space:]]*[0-9]+[[:space:]]*$/ && $3 ~ /^[[:space:]]*[0-9]+[[:space:]]*$/ && $3 + 0 > 0 {
            n++; lo[n] = $2 + 0; hi[n] = $2 + $3
        }
        END {
            size = 65536; start = 131072; limit = 4294967295
            while (start + size <= limit) {
                end = start + size; next_start = 0
                for (i = 1; i <= n; i++)
                    if (lo[i] < end && start < hi[i] && hi[i] > next_start) next_start = hi[i]
                if (next_start == 0) { printf "%.0f-%.0f\n", start, end - 1; exit 0 }
                start = (int((next_start + size - 1) / size)) * size
            }
            exit 1
        }'
}

HELPER_DIR=/usr/local/libexec/nook-test
NEWUIDMAP=""
NEWGIDMAP=""
if [ $IS_ROOT = 1 ]; then
    say "preparing the account $TEST_USER"
    if ! id "$TEST_USER" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/sh "$TEST_USER" || die "useradd $TEST_USER failed"
    fi
    TEST_HOME=$(getent passwd "$TEST_USER" | cut -d: -f6)
    if [ -z "$TEST_HOME" ] || [ ! -d "$TEST_HOME" ]; then
        TEST_HOME=/home/$TEST_USER
        mkdir -p "$TEST_HOME"
    fi
    chown "$TEST_USER:" "$TEST_HOME"
    # The account's subordinate range: whatever this machine gives it (by name or uid,
    # as shadow reads them). Containers map it; tests read it from the files.
    TEST_UID=$(id -u "$TEST_USER")
    add_uids="" add_gids=""
    has_range /etc/subuid || add_uids=1
    has_range /etc/subgid || add_gids=1
    if [ -n "$add_uids$add_gids" ]; then
        free=$(free_subid_range) || die "no free range of 65536 IDs in /etc/subuid and /etc/subgid"
        args=()
        [ -n "$add_uids" ] && args+=(--add-subuids "$free")
        [ -n "$add_gids" ] && args+=(--add-subgids "$free")
        say "NOTE: $TEST_USER has no subordinate ID range on this machine: giving it $free,"
        echo "    which no line of /etc/subuid or /etc/subgid uses: usermod ${args[*]} $TEST_USER"
        echo "    (ordinary administration, kept after this run; remove it with usermod --del-subuids/--del-subgids)"
        usermod "${args[@]}" "$TEST_USER" \
            || die "usermod ${args[*]} $TEST_USER failed: give $TEST_USER a free subordinate range by hand"
    fi
    for f in /etc/subuid /etc/subgid; do
        awk -F: -v u="$TEST_USER" -v id="$TEST_UID" '$1 == u || $1 == id' "$f" | sed "s|^|    $f: |"
    done
    # The differential test's own lines (its contract, tests/tests/idmap_helper_diff.rs),
    # bound over /etc/subuid and /etc/subgid in its private mount namespace only.
    SUBID_DIR=$WORK/subid
    mkdir -p "$SUBID_DIR"
    printf '%s\n' "$TEST_USER:100000:65536" "$TEST_UID:165536:4464" "nook-nobody:300000:65536" \
        >"$SUBID_DIR/subuid"
    cp "$SUBID_DIR/subuid" "$SUBID_DIR/subgid"
    chmod 755 "$SUBID_DIR"
    chmod 644 "$SUBID_DIR/subuid" "$SUBID_DIR/subgid"
    # The setuid ID-map helpers, when built: root-owned, in a root-owned directory.
    install -d -m 755 -o root -g root "$HELPER_DIR"
    for h in nook-newuidmap nook-newgidmap; do
        if [ -x "$ROOT/target/debug/$h" ]; then
            install -m 4755 -o root -g root "$ROOT/target/debug/$h" "$HELPER_DIR/$h"
            echo "    installed $HELPER_DIR/$h (setuid root)"
        else
            rm -f "$HELPER_DIR/$h"
            echo "    $h is not built: the tests that need it will say SKIP"
        fi
    done
    [ -x "$HELPER_DIR/nook-newuidmap" ] && NEWUIDMAP=$HELPER_DIR/nook-newuidmap
    [ -x "$HELPER_DIR/nook-newgidmap" ] && NEWGIDMAP=$HELPER_DIR/nook-newgidmap
    if ! id "$TEST_USER2" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/sh "$TEST_USER2" || die "useradd $TEST_USER2 failed"
    fi
    for d in /dev/fuse /dev/net/tun; do
        if [ -c "$d" ]; then chmod 0666 "$d"; else echo "    $d is missing on this machine"; fi
    done
else
    TEST_HOME=${HOME:-/tmp}
    NEWUIDMAP=${NOOK_TEST_NEWUIDMAP:-}
    NEWGIDMAP=${NOOK_TEST_NEWGIDMAP:-}
fi

# The workload lane's Debian image (tests/workloads/): debootstrap needs root, so it is
# made here, once, and cached outside the checkout (NOOK_TEST_CACHE, default
# /var/cache/nook-tests; a CI job keeps that directory between runs to stay warm). The
# lane gets the tarball, or the reason there is none, and prints SKIP with it.
WORKLOAD_ENV=()
if selected workloads; then
    if [ -n "${NOOK_WORKLOAD_TARBALL:-}" ]; then
        WORKLOAD_ENV=(NOOK_WORKLOAD_TARBALL="$NOOK_WORKLOAD_TARBALL")
    elif [ $IS_ROOT = 1 ]; then
        say "the workload lane's Debian image (tests/workloads/debian-image.sh)"
        t0=$SECONDS
        if img=$(bash "$ROOT/tests/workloads/debian-image.sh" "${NOOK_TEST_CACHE:-/var/cache/nook-tests}"); then
            echo "    $img ($((SECONDS - t0)) s)"
            WORKLOAD_ENV=(NOOK_WORKLOAD_TARBALL="$img")
        else
            echo "    no image: $img"
            WORKLOAD_ENV=(NOOK_WORKLOAD_SKIP="no Debian image: $img")
        fi
    else
        WORKLOAD_ENV=(NOOK_WORKLOAD_SKIP="no Debian image: debootstrap needs root; run tests/run.sh as root or set NOOK_WORKLOAD_TARBALL (tests/workloads/debian-image.sh makes one)")
    fi
fi

# The clone may live where the test account cannot read (/root): copy what runs. The
# escape suite's probe goes beside nook, where the tests look for it.
cp "$NOOK" "$WORK/nook"
[ -x "$ROOT/target/debug/nook-attack" ] || die "target/debug/nook-attack was not built"
cp "$ROOT/target/debug/nook-attack" "$WORK/nook-attack"
# nook uses a setuid helper found next to itself before shadow's on PATH: put nook's own
# there, so container runs go through it (on a nosuid /tmp nook skips them for shadow's).
if [ $IS_ROOT = 1 ] && [ -n "$NEWUIDMAP" ] && [ -n "$NEWGIDMAP" ]; then
    install -m 4755 -o root -g root "$NEWUIDMAP" "$NEWGIDMAP" "$WORK/"
fi
mkdir -p "$WORK/bin"
while read -r exe; do cp "$exe" "$WORK/bin/"; done <"$WORK/tests.list"
chmod -R a+rX "$WORK"

# --- 6. integration tests -----------------------------------------------------------------
TEST_ENV=(
    HOME="$TEST_HOME"
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    LANG=C.UTF-8
    TMPDIR=/tmp
    NOOK_BIN="$WORK/nook"
)
[ -n "${CI:-}" ] && TEST_ENV+=(CI="$CI")
[ -n "$NEWUIDMAP" ] && TEST_ENV+=(NOOK_TEST_NEWUIDMAP="$NEWUIDMAP")
[ -n "$NEWGIDMAP" ] && TEST_ENV+=(NOOK_TEST_NEWGIDMAP="$NEWGIDMAP")
TEST_ENV+=("${WORKLOAD_ENV[@]}")

cd "$WORK" || die "cd $WORK"
while read -r exe; do
    base=$(basename "$exe")
    name=${base%-*}
    selected "$name" || continue
    if [ $IS_ROOT = 1 ]; then
        # Run as root above; as the test account it could only say SKIP.
        [ "$name" = run_as_root ] && continue
        # The escape suite's cross-account tests need two accounts: the root pass below.
        skip_args=()
        [ "$name" = security ] && skip_args=(--skip cross_user::)
        # The differential test sees its own /etc/subuid and /etc/subgid (section 5),
        # bound in a private mount namespace that ends with it.
        private_subids=()
        [ "$name" = idmap_helper_diff ] && private_subids=(unshare --mount --propagation private -- \
            sh -c 'mount --bind "$1" /etc/subuid && mount --bind "$2" /etc/subgid && shift 2 && exec "$@"' \
            sh "$SUBID_DIR/subuid" "$SUBID_DIR/subgid")
        run_test_exe "$name" "${private_subids[@]}" runuser -u "$TEST_USER" -- \
            env -i USER="$TEST_USER" LOGNAME="$TEST_USER" "${TEST_ENV[@]}" "$WORK/bin/$base" \
            "${TEST_ARGS[@]}" "${skip_args[@]}"
        if [ "$name" = security ]; then
            # Root only orchestrates: every nook command in these tests runs as
            # $TEST_USER or $TEST_USER2 through runuser. Runs when no filter is given or
            # the filter names cross_user.
            xu_args=()
            if [ ${#TEST_ARGS[@]} = 0 ]; then
                xu_args=(cross_user::)
            elif printf '%s\n' "${TEST_ARGS[@]}" | grep -q cross_user; then
                xu_args=("${TEST_ARGS[@]}")
            fi
            if [ ${#xu_args[@]} -gt 0 ]; then
                run_test_exe security-cross-user env -i PATH="${TEST_ENV[1]#PATH=}" \
                    LANG=C.UTF-8 TMPDIR=/tmp NOOK_BIN="$WORK/nook" \
                    NOOK_CROSS_USERS="$TEST_USER $TEST_USER2" "$WORK/bin/$base" "${xu_args[@]}"
            fi
        fi
    else
        run_test_exe "$name" env "${TEST_ENV[@]}" "$WORK/bin/$base" "${TEST_ARGS[@]}"
    fi
done <"$WORK/tests.list"
cd "$ROOT" || true

# --- 7. VM lane: cgroup controllers (issue 7; tests/vm/, self-contained block) ----------
# tests/vm/run-cgroup-tests.sh boots Debian's stock kernel in QEMU with a pure cgroup v2
# hierarchy and runs the cgroup_vm test executable there as an unprivileged user in a
# delegated subtree (about 40 s; as root it first installs qemu-system-x86,
# linux-image-amd64, busybox-static and cpio when missing). This host's cgroups are
# never touched.
VM_EXE=$(grep '/cgroup_vm-[0-9a-f]*$' "$WORK/tests.list" | head -n1)
if ! selected vm-lane; then
    :
elif [ -n "$VM_EXE" ]; then
    run_test_exe vm-lane bash "$ROOT/tests/vm/run-cgroup-tests.sh" \
        "$WORK/nook" "$WORK/bin/$(basename "$VM_EXE")"
else
    echo "tests/run.sh: the cgroup_vm test executable is missing"
    FAILED_STEPS="$FAILED_STEPS vm-lane"
fi
# --- end of the VM lane block ------------------------------------------------------------

# --- summary ------------------------------------------------------------------------------
say "summary ($((SECONDS - START)) s)"
if [ -n "$SKIP_LINES" ]; then
    echo "skipped (each printed its reason):"
    printf '%s' "$SKIP_LINES"
fi
if [ -n "$FAILED_STEPS" ]; then
    echo "failed:$FAILED_STEPS"
fi
echo "integration: $TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped"
[ -z "$FAILED_STEPS" ] && [ "$TOTAL_FAIL" = 0 ]
