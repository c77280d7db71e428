#!/usr/bin/python3
"""A Kubernetes-shaped client of containerd's CRI service, for tests/tests/containerd.rs.

No kubelet or crictl is packaged in Debian 12, so this speaks the CRI (runtime.v1) gRPC
API itself, with python3-grpcio and hand-encoded protobuf messages (field numbers from
k8s.io/cri-api's api.proto), and does what the kubelet does for one pod: pull the image,
RunPodSandbox with a RuntimeClass handler, CreateContainer, StartContainer, ExecSync,
wait for the exit through ContainerStatus, read the CRI log, StopPodSandbox,
RemovePodSandbox. Each result is one `key=value` line on stdout for the test to assert.

usage: cri.py SOCKET HANDLER IMAGE LOG_DIR
"""

import os
import sys
import time

import grpc


def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def num(field, n):
    return varint(field << 3) + varint(n)


def ld(field, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return varint((field << 3) | 2) + varint(len(payload)) + payload


def parse(buf):
    """Field number -> list of values (ints for varints, bytes for the rest)."""
    fields, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        f, wire = key >> 3, key & 7
        if wire == 0:
            v, i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(f, []).append(v)
    return fields


def read_varint(buf, i):
    n, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def first(fields, f, default=None):
    return fields.get(f, [default])[0]


def signed32(n):
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


def main():
    sock, handler, image, log_dir = sys.argv[1:5]
    chan = grpc.insecure_channel("unix://" + sock)

    def call(service, method, req, timeout=60):
        rpc = chan.unary_unary(f"/runtime.v1.{service}/{method}")
        return parse(rpc(req, timeout=timeout))

    def say(key, value):
        print(f"{key}={value}", flush=True)

    v = call("RuntimeService", "Version", b"")
    say("runtime", first(v, 2, b"").decode() + " " + first(v, 3, b"").decode())

    r = call("ImageService", "PullImage", ld(1, ld(1, image)))
    say("pulled", first(r, 1, b"").decode())

    # NamespaceOption: network NODE (2, no CNI here), pid CONTAINER (1), ipc POD (0).
    ns_opts = num(1, 2) + num(2, 1) + num(3, 0)
    pod_name = f"nook-pod-{os.getpid()}"
    metadata = ld(1, pod_name) + ld(2, "uid-" + pod_name) + ld(3, "default") + num(4, 0)
    pod_config = (ld(1, metadata) + ld(3, log_dir)
                  + ld(8, ld(2, ld(1, ns_opts))))
    r = call("RuntimeService", "RunPodSandbox", ld(1, pod_config) + ld(2, handler), timeout=120)
    pod = first(r, 1, b"").decode()
    say("pod", pod)

    script = ("trap 'echo got-term; exit 7' TERM; echo app-out; "
              "echo net=$(readlink /proc/self/ns/net); echo pid1=$(cat /proc/1/comm); "
              "echo uid=$(id -u); grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -d ' \t'; "
              ": > /tmp/ready; sleep 1000 & wait")
    # LinuxContainerSecurityContext as a restricted pod spec gives it: runAsUser 1000,
    # allowPrivilegeEscalation false (no_new_privs), seccompProfile RuntimeDefault (an
    # empty SecurityProfile: profile_type 0). The pod shares its PID namespace
    # (shareProcessNamespace: true, the container's namespace options left at POD).
    security = ld(5, num(1, 1000)) + num(11, 1) + ld(15, b"")
    container_config = (ld(1, ld(1, "app") + num(2, 0)) + ld(2, ld(1, image))
                        + ld(3, "sh") + ld(4, "-c") + ld(4, script) + ld(11, "app.log")
                        + ld(15, ld(2, security)))
    r = call("RuntimeService", "CreateContainer",
             ld(1, pod) + ld(2, container_config) + ld(3, pod_config))
    cid = first(r, 1, b"").decode()
    say("container", cid)
    call("RuntimeService", "StartContainer", ld(1, cid))
    say("started", "yes")

    # The exec waits until the container has said everything (ExecSync's timeout is the
    # deadline), so that StopContainer's SIGTERM comes after it.
    wait_ready = "while [ ! -e /tmp/ready ]; do sleep 0.05; done; echo exec-out; exit 3"
    r = call("RuntimeService", "ExecSync",
             ld(1, cid) + ld(2, "sh") + ld(2, "-c") + ld(2, wait_ready) + num(3, 30))
    say("exec_stdout", first(r, 1, b"").decode().strip())
    say("exec_code", signed32(first(r, 3, 0)))

    # What the kubelet does to stop a container: StopContainer (SIGTERM, then SIGKILL
    # after the timeout), then reads the status.
    call("RuntimeService", "StopContainer", ld(1, cid) + num(2, 30), timeout=60)
    deadline = time.monotonic() + 60
    while True:
        st = parse(first(call("RuntimeService", "ContainerStatus", ld(1, cid)), 1, b""))
        if first(st, 3, 0) == 2:  # CONTAINER_EXITED
            break
        if time.monotonic() > deadline:
            raise SystemExit("the container did not exit within 60 s")
        time.sleep(0.05)  # polling: the CRI has no wait call
    say("exit_code", signed32(first(st, 7, 0)))
    say("reason", first(st, 10, b"").decode())

    call("RuntimeService", "RemoveContainer", ld(1, cid))
    call("RuntimeService", "StopPodSandbox", ld(1, pod), timeout=120)
    call("RuntimeService", "RemovePodSandbox", ld(1, pod), timeout=120)
    say("removed", "yes")


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        print(f"rpc_error={e.code().name}: {e.details()}", flush=True)
        sys.exit(2)
