#!/bin/bash
# youki's integration suite (contest, tests/contest in containers/youki) against one or
# more OCI runtimes, side by side in one run, as the unprivileged account running it.
#
#   bench/contest.sh CONTEST_DIR RUNTIME [RUNTIME...]
#
# CONTEST_DIR: either a directory holding `contest`, `runtimetest` and `bundle.tar.gz`,
# or a youki checkout where they were built (target/release/contest,
# target/x86_64-unknown-linux-gnu/release/runtimetest, tests/contest/contest/bundle.tar.gz;
# see /work/shared/PEER-SUITES.md for the build). This script fetches and builds nothing.
# RUNTIME: a runtime binary path. nook picks its runc command line by the name it is
# invoked as, so a path to the `nook` binary itself is run through a `nook-runtime`
# script made in the output directory. Not part of the CI test command.
# The wrapper runs `nook oci`, the same command line as `nook-runtime`: contest resolves
# symbolic links in the runtime path, so a `nook-runtime` link would not do.
#
# Environment:
#   OUT_DIR       where logs and the summary go (default: a new /tmp/contest.XXXXXX)
#   MODES         which ways to run each runtime (default "user userns"):
#                   user    directly as this account: the runtime makes its own user
#                           namespace (how nook is used; crun 1.8.1 refuses this host's
#                           hybrid cgroups and the suite's spec has no user namespace);
#                   userns  inside `unshare --map-root-user --map-auto --mount` with a tmpfs
#                           over /sys/fs/cgroup/unified: the same account and subordinate
#                           range, the runtime as root of that namespace (how crun can run
#                           the suite rootless here)
#   GROUP_TIMEOUT seconds one test group may take (default 300; seccomp_notify waits
#                 forever for a runtime that does not connect to its listener socket: the
#                 group then counts as "no result" and the others still run)
#   CONTEST_GROUPS the test groups to run (default: all of `contest list`)
#
# contest runs every group in parallel threads and prints nothing until all finish; this
# script runs one group at a time (`contest run -t GROUP`) so a hang costs one group and
# the 2-core machine is not flooded. Counts: "ok", "not ok", "skipped" as contest prints
# them per test; a group that hangs or dies before printing (mounts_recursive: contest's
# own tmpfs mount needs root) counts once as "no result", its tests unknown.
set -u

usage="usage: $0 CONTEST_DIR RUNTIME [RUNTIME...]"
dir=${1:?$usage}
shift
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
dir=$(cd "$dir" && pwd) || exit 2

if [ "$(id -u)" = 0 ]; then
    echo "run this as an unprivileged account (e.g. runuser -u nooktest -- $0 ...): a rootless suite run as root proves nothing" >&2
    exit 2
fi

pick() { # first existing file among the arguments
    for f in "$@"; do [ -f "$f" ] && { echo "$f"; return; }; done
}
contest=$(pick "$dir/contest" "$dir/target/release/contest")
runtimetest=$(pick "$dir/runtimetest" "$dir/target/x86_64-unknown-linux-gnu/release/runtimetest")
bundle=$(pick "$dir/bundle.tar.gz" "$dir/tests/contest/contest/bundle.tar.gz")
for v in contest runtimetest bundle; do
    [ -n "${!v}" ] || { echo "no $v in $dir: build it first (see /work/shared/PEER-SUITES.md)" >&2; exit 2; }
done

out=${OUT_DIR:-$(mktemp -d /tmp/contest.XXXXXX)}
mkdir -p "$out/logs" "$out/work" "$out/tmp" "$out/bin" || exit 2
out=$(cd "$out" && pwd)
modes=${MODES:-user userns}
group_timeout=${GROUP_TIMEOUT:-300}
cp "$bundle" "$out/work/bundle.tar.gz"

# Resolve each runtime to the path contest will run.
runtimes=()
for r in "$@"; do
    p=$(command -v "$r" 2>/dev/null || true)
    [ -n "$p" ] && [ -x "$p" ] || { echo "no runtime at $r" >&2; exit 2; }
    p=$(cd "$(dirname "$p")" && pwd)/$(basename "$p")
    if [ "$(basename "$p")" = nook ]; then
        # contest canonicalizes the runtime path, so a `nook-runtime` symlink would reach
        # nook as `nook` (its own command line): a two-line script is the runtime instead.
        printf '#!/bin/sh\nexec %q oci "$@"\n' "$p" > "$out/bin/nook-runtime"
        chmod 755 "$out/bin/nook-runtime"
        p=$out/bin/nook-runtime
    elif [ "$(basename "$p")" = crun ]; then
        # contest puts flags after the id (`create ID --bundle DIR`), which runc accepts
        # and crun 1.8.1 refuses ("`create` requires a maximum of 1 arguments"): its
        # wrapper moves the id of create/run last, so crun is measured, not its parser.
        cat > "$out/bin/crun" <<EOS
#!/bin/bash
pre=()
while [ \$# -gt 0 ]; do
    case \$1 in
        --root|--log|--log-format|--cgroup-manager) pre+=("\$1" "\$2"); shift 2 ;;
        -*) pre+=("\$1"); shift ;;
        *) break ;;
    esac
done
cmd=\$1; shift
case \$cmd in
    create|run) if [ \$# -gt 0 ] && [ "\${1#-}" = "\$1" ]; then id=\$1; shift; set -- "\$@" "\$id"; fi ;;
esac
exec $(printf %q "$p") "\${pre[@]}" "\$cmd" "\$@"
EOS
        chmod 755 "$out/bin/crun"
        p=$out/bin/crun
    fi
    runtimes+=("$p")
done

# A short, unique label per runtime for the log names.
label() { basename "$1"; }

# contest unpacks a bundle from the current directory even to list its groups.
groups=${CONTEST_GROUPS:-$(cd "$out/work" && TMPDIR=$out/tmp "$contest" list | sort)}
[ -n "$groups" ] || { echo "contest list gave no test groups" >&2; exit 2; }

# run_group RUNTIME MODE GROUP LOG: contest's bundles and --root go under $out/tmp.
run_group() {
    local rt=$1 mode=$2 group=$3 log=$4
    local tmp="$out/tmp/$(label "$rt").$mode"
    mkdir -p "$tmp"
    (
        cd "$out/work" || exit 2
        if [ "$mode" = user ]; then
            TMPDIR=$tmp timeout -k 5 "$group_timeout" \
                "$contest" run --runtime "$rt" --runtimetest "$runtimetest" -t "$group"
        else
            TMPDIR=$tmp timeout -k 5 "$group_timeout" \
                unshare --map-root-user --map-auto --mount sh -c \
                'mount -t tmpfs none /sys/fs/cgroup/unified 2>/dev/null; exec "$@"' sh \
                "$contest" run --runtime "$rt" --runtimetest "$runtimetest" -t "$group"
        fi
    ) > "$log" 2>&1
}

: > "$out/results.tsv" # runtime mode group test result
for rt in "${runtimes[@]}"; do
    for mode in $modes; do
        name="$(label "$rt").$mode"
        echo "== $name ($rt)" >&2
        for g in $groups; do
            log="$out/logs/$name.$g.log"
            run_group "$rt" "$mode" "$g" "$log"
            rc=$?
            results=$(sed -n 's/^[0-9][0-9]* \/ [0-9][0-9]* : \(.*\) : \(ok\|not ok\|skipped\)$/\1\t\2/p' "$log")
            if [ -z "$results" ]; then
                why="no result (status $rc)"
                { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && why="timeout after ${group_timeout}s"
                printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$g" "*" "no result" >> "$out/results.tsv"
                echo "   $g: $why" >&2
            else
                printf '%s\n' "$results" | while IFS=$'\t' read -r t res; do
                    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$g" "$t" "$res"
                done >> "$out/results.tsv"
            fi
        done
        # Tests that failed half-way can leave containers behind: remove them with the
        # runtime that made them, in the same mode, then kill what still names this run's
        # directory (a runtime process or container init orphaned by a killed group).
        for st in "$out/tmp/$name"/*/runtime/*/; do
            [ -d "$st" ] || continue
            root=$(dirname "$st")
            if [ "$mode" = user ]; then
                "$rt" --root "$root" delete --force "$(basename "$st")" >/dev/null 2>&1
            else
                unshare --map-root-user --map-auto --mount \
                    "$rt" --root "$root" delete --force "$(basename "$st")" >/dev/null 2>&1
            fi
        done
        for pdir in /proc/[0-9]*; do
            pid=${pdir#/proc/}
            [ "$pid" = $$ ] && continue
            if tr '\0' ' ' < "$pdir/cmdline" 2>/dev/null | grep -qF "$out/tmp/$name/"; then
                echo "   killing leftover process $pid: $(tr '\0' ' ' < "$pdir/cmdline" | cut -c1-120)" >&2
                kill -KILL "$pid" 2>/dev/null
            fi
        done
    done
done

{
    echo "contest: $contest"
    echo "load average before the summary: $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-28s %6s %8s %8s %10s\n' RUN ok "not ok" skipped "no result"
    awk -F'\t' '{ n[$1, $5]++; seen[$1] = 1 }
        END { for (r in seen) printf "%-28s %6d %8d %8d %10s\n", r, n[r, "ok"], n[r, "not ok"], n[r, "skipped"], n[r, "no result"] + 0 " groups" }' \
        "$out/results.tsv" | sort
    echo
    echo "not ok / no result, per run:"
    awk -F'\t' '$5 == "not ok" || $5 == "no result" { printf "  %-28s %s::%s (%s)\n", $1, $3, $4, $5 }' "$out/results.tsv"
} | tee "$out/summary.txt"

# Bundles hold files of subordinate IDs: remove them from inside a user namespace that
# maps the range.
unshare --map-root-user --map-auto rm -rf "$out/tmp" 2>/dev/null || rm -rf "$out/tmp" 2>/dev/null
echo "logs: $out/logs (per group), results: $out/results.tsv"
