#!/bin/bash
# opencontainers/runtime-tools' validation suite against nook and crun, side by side
# in one run, as the unprivileged account that owns the suite's tree.
#
#   bench/oci-validation.sh RUNTIME_TOOLS_DIR [NOOK_BIN] [OUT_DIR]
#
# RUNTIME_TOOLS_DIR: a built checkout (runtimetest and validation/*/*.t made, see
# /work/shared/PEER-SUITES.md); this script fetches and builds nothing. NOOK_BIN
# defaults to target/debug/nook. Not part of the CI test command.
#
# Each runtime gets a wrapper that adds its own --root (the suite's RUNTIME is a bare
# path). crun 1.8.1 refuses this host's hybrid cgroup layout and, rootless, would map
# only the user (breaking the default spec's devpts gid=5), so each crun test runs
# inside `unshare --map-root-user --map-auto --mount` with a tmpfs over
# /sys/fs/cgroup/unified ("userns": the same account and subordinate range, the
# runtime as root of that namespace). nook runs twice: the same way (the like-for-like
# comparison), and directly as the user ("user": nook makes its own user namespace
# and maps the subordinate range through the setuid helper), which is how it is used.
#
# A test file counts as: pass (status 0, no "not ok", no error diagnostic: some tests
# print nothing but a "1..0" plan, or nothing at all, when they pass), fail (a "not
# ok", a YAML error diagnostic - some failures show only that, under a "1..0" plan -
# or a non-zero status after a plan), aborted (a non-zero status before any plan, or
# killed by the timeout).
set -u

suite=${1:?usage: $0 RUNTIME_TOOLS_DIR [NOOK_BIN] [OUT_DIR]}
suite=$(cd "$suite" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
nook=${2:-$here/target/debug/nook}
nook=$(readlink -f "$nook")
out=${3:-$(mktemp -d /tmp/oci-validation.XXXXXX)}
per_test_timeout=${PER_TEST_TIMEOUT:-120}

if [ "$(id -u)" = 0 ]; then
    echo "run this as the unprivileged account that owns $suite (e.g. runuser -u nooktest -- $0 ...)" >&2
    exit 2
fi
[ -x "$suite/runtimetest" ] || { echo "$suite/runtimetest is missing: build the suite first" >&2; exit 2; }
[ -x "$nook" ] || { echo "no nook binary at $nook" >&2; exit 2; }
crun=$(command -v crun || true)

mkdir -p "$out/state" "$out/logs"
cat > "$out/nook-runtime" <<EOS
#!/bin/sh
exec "$nook" oci --root "$out/state/nook" "\$@"
EOS
# crun 1.8.1 refuses the suite's ociVersion (1.3.0): its wrapper rewrites the bundle's
# version to 1.0.2 before create/run (the configuration is otherwise unchanged).
cat > "$out/crun-runtime" <<EOS
#!/bin/sh
bundle=.
prev=
for a in "\$@"; do
    case "\$prev" in --bundle|-b) bundle=\$a ;; esac
    case "\$a" in --bundle=*) bundle=\${a#--bundle=} ;; esac
    prev=\$a
done
case "\$1" in create|run)
    [ -f "\$bundle/config.json" ] &&
        sed -i 's/"ociVersion": *"[^"]*"/"ociVersion":"1.0.2"/' "\$bundle/config.json" ;;
esac
exec "$crun" --root "$out/state/crun" "\$@"
EOS
chmod +x "$out/nook-runtime" "$out/crun-runtime"

# classify LOG STATUS -> "pass|fail|aborted ok=N notok=M ..."
# The suite reports many failures only as a YAML "error" under a "1..0" plan, and a
# success of such a test as the bare "1..0".
classify() {
    local log=$1 rc=$2 ok notok yamlerr plan
    ok=$(grep -cE '^ok ' "$log")
    notok=$(grep -cE '^not ok ' "$log")
    yamlerr=$(grep -cE '^\s+"?error"?:' "$log")
    plan=$(grep -cE '^1\.\.[0-9]+' "$log")
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "aborted ok=$ok notok=$notok (timeout)"
    elif [ "$notok" -gt 0 ]; then
        echo "fail ok=$ok notok=$notok"
    elif [ "$ok" -eq 0 ] && [ "$yamlerr" -gt 0 ]; then
        echo "fail ok=0 notok=0 (error diagnostic)"
    elif [ "$plan" -eq 0 ] && [ "$rc" != 0 ]; then
        echo "aborted ok=$ok notok=0 (no TAP plan, status $rc)"
    elif [ "$rc" != 0 ]; then
        echo "fail ok=$ok notok=0 (status $rc)"
    else
        echo "pass ok=$ok notok=0"
    fi
}

# run_test NAME TEST WRAPPER MODE: MODE "user" runs it as this account, "userns"
# inside unshare --map-root-user --map-auto --mount with the cgroup2 tmpfs.
run_test() {
    local name=$1 t=$2 wrapper=$3 mode=$4 log rc
    log="$out/logs/$name.$(basename "$wrapper" -runtime).$mode.tap"
    if [ "$mode" = user ]; then
        RUNTIME="$wrapper" timeout -k 5 "$per_test_timeout" "./$t" > "$log" 2>&1
    else
        timeout -k 5 "$per_test_timeout" unshare --map-root-user --map-auto --mount \
            sh -c 'mount -t tmpfs none /sys/fs/cgroup/unified 2>/dev/null; RUNTIME="$1" exec "./$2"' \
            sh "$wrapper" "$t" > "$log" 2>&1
    fi
    rc=$?
    classify "$log" "$rc"
}

cd "$suite" || exit 2
tests=$(ls validation/*/*.t | sort)
printf '%-32s %-30s %-30s %s\n' TEST "NOOK (user)" "NOOK (userns)" "CRUN (userns)" | tee "$out/summary.txt"
: > "$out/results.tsv"
for t in $tests; do
    name=$(basename "$t" .t)
    nres=$(run_test "$name" "$t" "$out/nook-runtime" user)
    ures=$(run_test "$name" "$t" "$out/nook-runtime" userns)
    if [ -n "$crun" ]; then
        cres=$(run_test "$name" "$t" "$out/crun-runtime" userns)
    else
        cres="(no crun)"
    fi
    printf '%-32s %-30s %-30s %s\n' "$name" "$nres" "$ures" "$cres" | tee -a "$out/summary.txt"
    printf '%s\t%s\t%s\t%s\n' "$name" "${nres%% *}" "${ures%% *}" "${cres%% *}" >> "$out/results.tsv"
done
for col in 2 3 4; do
    case $col in 2) label="nook (user)  " ;; 3) label="nook (userns)" ;; 4) label="crun (userns)" ;; esac
    printf '%s: ' "$label"
    awk -F'\t' -v c="$col" '{ n[$c]++ } END { printf "pass %d, fail %d, aborted %d\n", n["pass"], n["fail"], n["aborted"] }' \
        "$out/results.tsv"
done | tee -a "$out/summary.txt"
echo "passed by crun but not by nook (userns):" | tee -a "$out/summary.txt"
awk -F'\t' '$4 == "pass" && $3 != "pass" { print "  " $1 }' "$out/results.tsv" | tee -a "$out/summary.txt"
echo "passed by crun but not by nook (user):" | tee -a "$out/summary.txt"
awk -F'\t' '$4 == "pass" && $2 != "pass" { print "  " $1 }' "$out/results.tsv" | tee -a "$out/summary.txt"
# Tests that fail half-way leave created containers behind: remove them.
for d in "$out"/state/nook/*/; do
    [ -d "$d" ] && "$out/nook-runtime" delete --force "$(basename "$d")" 2>/dev/null
done
for d in "$out"/state/crun/*/; do
    [ -d "$d" ] && unshare --map-root-user --map-auto --mount \
        "$out/crun-runtime" delete --force "$(basename "$d")" 2>/dev/null
done
echo "logs: $out/logs" | tee -a "$out/summary.txt"
