//! Ping from the container (`--network=nook`): the gateway answers itself; any other
//! address is pinged through an unprivileged ICMP socket of the netstack, which the host
//! allows only to the groups in net.ipv4.ping_group_range.
//!
//! That sysctl belongs to a network namespace, so the tests that ping "outside" make
//! their own with `unshare -rn` (a user and network namespace of the test account, where
//! it may set the range), put 192.0.2.1 (TEST-NET) and 2001:db8::1 on its loopback as the
//! far host, and run nook inside it: the netstack's sockets live there. One namespace
//! allows ICMP sockets (the reply must arrive), one keeps the kernel's default, which
//! allows nobody (the ping must fail at once with "administratively prohibited", and
//! nook must say why once). Nothing leaves the machine.

use std::process::{Command, Stdio};

use nook_tests::*;

/// A ping client for inside the container that needs no capability: an ICMP socket
/// (what ping_group_range allows) with ICMP errors reported (IP_RECVERR), one echo
/// request per address argument, one line per answer: the reply's type, sequence number
/// and data (the container's kernel delivers only replies with its socket's identifier
/// and a correct checksum), or the ICMP error (origin 2: ICMP; type and code), or
/// "timeout" after 10 s.
const PING: &str = r#"
import socket, struct, select, sys
for seq, addr in enumerate(sys.argv[1:], 1):
    v6 = ":" in addr
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM,
                      socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    s.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP, 25 if v6 else 11, 1)
    s.connect((addr, 0))
    s.send(struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0, seq) + b"nook-ping")
    r, _, x = select.select([s], [], [s], 10)
    if not (r or x):
        print(addr, "timeout")
        continue
    try:
        _, anc, _, _ = s.recvmsg(64, 512, socket.MSG_ERRQUEUE)
        e = anc[0][2]
        print(addr, "error origin=%d type=%d code=%d" % (e[4], e[5], e[6]))
    except BlockingIOError:
        d = s.recv(64)
        print(addr, "reply type=%d seq=%d %s" % (d[0], struct.unpack("!H", d[6:8])[0], d[8:].decode()))
"#;

fn python(test: &str) -> bool {
    if has("python3") {
        return true;
    }
    skip(
        test,
        "no python3 on the host (the ping client in the container)",
    );
    false
}

/// Runs `script` in a fresh `unshare -rn` namespace whose loopback is up and carries
/// 192.0.2.1 and 2001:db8::1; `$NOOK` is the nook binary, with a private runtime dir,
/// `$PING` the ping client. None when unshare -rn is not permitted here.
fn in_own_netns(test: &str, script: &str) -> Option<Output> {
    let probe = Command::new("unshare").args(["-rn", "true"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        skip(test, "`unshare -rn` is not permitted here");
        return None;
    }
    let runtime = tempdir();
    let full = format!(
        "set -e
         ip link set lo up
         ip addr add 192.0.2.1/32 dev lo
         ip addr add 2001:db8::1/128 dev lo nodad
         export XDG_RUNTIME_DIR={runtime} NOOK={nook}
         {script}",
        runtime = runtime.path().display(),
        nook = nook_bin().display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-rn", "sh", "-c", &full])
        .env("PING", PING)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Some(spawn(&mut cmd).wait(TIMEOUT))
}

#[test]
fn ping_the_gateway_without_any_privilege() {
    assert_unprivileged();
    let test = "ping_the_gateway_without_any_privilege";
    if !tun_usable(test) || !python(test) {
        return;
    }
    // No CAP_NET_RAW in the container: the ICMP socket is allowed by the container's
    // own ping_group_range, which nook sets as podman does.
    let o = run(&["--rm", "host", "python3", "-c", PING, "10.0.2.2", "fd00::2"]);
    o.success();
    assert_eq!(
        o.out(),
        "10.0.2.2 reply type=0 seq=1 nook-ping\nfd00::2 reply type=129 seq=2 nook-ping\n",
        "{o}"
    );
    // With CAP_NET_RAW, busybox's raw-socket ping works as well.
    let o = run(&[
        "--rm",
        "--cap-add=NET_RAW",
        "host",
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "10.0.2.2",
    ]);
    o.success();
    assert!(o.out().contains("1 packets received"), "{o}");
}

#[test]
fn ping_outside_goes_through_an_icmp_socket_of_the_netstack() {
    assert_unprivileged();
    let test = "ping_outside_goes_through_an_icmp_socket_of_the_netstack";
    if !tun_usable(test) || !python(test) {
        return;
    }
    // Group 0 of this namespace is the test account's group: allow it ICMP sockets.
    let script = "echo '0 0' > /proc/sys/net/ipv4/ping_group_range
         \"$NOOK\" run --rm host python3 -c \"$PING\" 192.0.2.1 2001:db8::1 192.0.2.1
         \"$NOOK\" run --rm --cap-add=NET_RAW host busybox ping -c 2 -W 5 192.0.2.1";
    let Some(o) = in_own_netns(test, script) else {
        return;
    };
    o.success();
    // Only the netstack's ICMP socket can have brought these replies: 192.0.2.1 and
    // 2001:db8::1 exist nowhere but on the namespace's loopback, outside the container.
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "192.0.2.1 reply type=0 seq=1 nook-ping",
            "2001:db8::1 reply type=129 seq=2 nook-ping",
            "192.0.2.1 reply type=0 seq=3 nook-ping",
        ],
        "{o}"
    );
    assert!(
        o.out().contains("64 bytes from 192.0.2.1: seq=1")
            && o.out().contains("2 packets received"),
        "busybox's raw-socket ping\n{o}"
    );
    assert!(!o.err().contains("ping from the container"), "{o}");
}

#[test]
fn ping_without_icmp_sockets_fails_at_once_and_says_why() {
    assert_unprivileged();
    let test = "ping_without_icmp_sockets_fails_at_once_and_says_why";
    if !tun_usable(test) || !python(test) {
        return;
    }
    // The namespace keeps the kernel's default range ("1 0": nobody). Each request gets
    // "administratively prohibited" (ICMP type 3 code 13, ICMPv6 type 1 code 1) at once,
    // and nook says why, once. The gateway still answers itself.
    let script =
        "\"$NOOK\" run --rm host python3 -c \"$PING\" 192.0.2.1 2001:db8::1 192.0.2.1 10.0.2.2";
    let started = std::time::Instant::now();
    let Some(o) = in_own_netns(test, script) else {
        return;
    };
    o.success();
    assert_eq!(
        o.out(),
        "192.0.2.1 error origin=2 type=3 code=13\n\
         2001:db8::1 error origin=3 type=1 code=1\n\
         192.0.2.1 error origin=2 type=3 code=13\n\
         10.0.2.2 reply type=0 seq=4 nook-ping\n",
        "{o}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let notices = o
        .err()
        .lines()
        .filter(|l| l.contains("ping from the container reaches only 10.0.2.2"))
        .count();
    assert_eq!(notices, 1, "one notice with the reason\n{o}");
    assert!(o.err().contains("net.ipv4.ping_group_range"), "{o}");
}
