#!/usr/bin/env python3
"""CPU time (user + system, the whole process tree) of `nook run --rm ... true`, two nook
builds interleaved, plus the new build's seccomp variants.

Why CPU time and not wall time: on a shared machine the wall time of a 5 ms start moves with
the load far more than the difference between two builds; the CPU a start costs does not.
Interleaving (old, new, old, new, ...) exposes both builds to the same load.

Run as the unprivileged account (not root):
    bench/start-cpu.py OLD_NOOK NEW_NOOK ROOTFS [ROUNDS]
ROOTFS: a directory holding a root filesystem with /bin/true (bench/start-latency.sh leaves
one in $BENCH_WORK/rootfs). Each variant runs ROUNDS times (default 150) after 3 warm-ups,
with a single-ID map and no network, in a private NOOK_ROOT and XDG_RUNTIME_DIR.
"""
import os
import resource
import statistics
import subprocess
import sys
import tempfile

if os.geteuid() == 0:
    sys.exit("run this as the unprivileged account, not root")
if len(sys.argv) < 4:
    sys.exit(__doc__)
old, new, rootfs = sys.argv[1:4]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 150

env = dict(os.environ)
env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="nook-start-cpu-rt-")
env["NOOK_ROOT"] = tempfile.mkdtemp(prefix="nook-start-cpu-store-")
common = ["--uidmap", "0:0:1", "--gidmap", "0:0:1", "--network=none"]
tail = ["--rootfs", rootfs, "true"]
variants = {
    "old": [old, "run", "--rm", *common, *tail],
    "new": [new, "run", "--rm", *common, *tail],
    "new, seccomp=unconfined": [new, "run", "--rm", "--security-opt", "seccomp=unconfined", *common, *tail],
}

def cpu_ms(command):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000

for command in variants.values():
    for _ in range(3):
        cpu_ms(command)
samples = {name: [] for name in variants}
for _ in range(rounds):
    for name, command in variants.items():
        samples[name].append(cpu_ms(command))
base = statistics.median(samples["old"])
for name, values in samples.items():
    median = statistics.median(values)
    print(f"{name:26s} CPU median {median:6.2f} ms  mean {statistics.mean(values):6.2f} ms  {median / base:5.3f}x old")
