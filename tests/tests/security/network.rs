//! The host's network from a container: its abstract unix sockets, its loopback (by every
//! address that could lead there: 10.0.2.2 and the other virtual addresses, 127/8, the
//! unspecified address, v4-mapped and NAT64 forms, the host's own addresses), its UDP
//! services, its filesystem sockets; with `--network nook` (the default) and `--network
//! none`. A server the test runs on the host counts what reaches it; controls with
//! `allow_host_loopback=true`, `--network host` and `-v` show each server was reachable
//! when nook is asked to let it be.
//!
//! Documented behaviour (DESIGN.md section 5, docs/security.md): the host's loopback is
//! not reachable unless `--network nook:allow_host_loopback=true`, then as 10.0.2.2 /
//! fd00::2 only. A host service listening on all addresses is reached through the host's
//! own non-loopback addresses as from another machine of its network (as with podman's
//! slirp4netns, or pasta's host.containers.internal): it sees the host's address as its
//! peer, never 127.0.0.1. The DNS forwarder (10.0.2.3:53) reaches the host's resolver.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};

use nook_tests::*;

/// The networks to try: `nook` where /dev/net/tun is usable, and `none`.
fn networks(test: &str) -> Vec<&'static str> {
    let mut v = Vec::new();
    if tun_usable(test) {
        v.push("--network=nook");
    }
    v.push("--network=none");
    v
}

fn attempt(extra: &[&str], attempts: &Attempts) -> (Output, BTreeMap<String, String>) {
    let vol = attack_volume();
    let mut args = vec!["--rm", "-v", &vol];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["host", "sh", "-c", attempts.script()]);
    let o = run(&args);
    assert_ne!(o.code(), 125, "nook failed to start the container\n{o}");
    let r = attempt_results(&o);
    (o, r)
}

/// Asserts that attempt `key` did not get through (any error, or a timeout).
#[track_caller]
fn assert_blocked(r: &BTreeMap<String, String>, key: &str, o: &Output) {
    let got = r
        .get(key)
        .unwrap_or_else(|| panic!("no result for attempt {key}\n{o}"));
    assert!(
        got.starts_with("err ") || got == "timeout",
        "attempt {key} got through: {got:?}\n{o}"
    );
}

/// Whether a connection is waiting on `l` (it reached the host's socket).
fn pending_tcp(l: &TcpListener) -> Option<std::net::SocketAddr> {
    l.set_nonblocking(true).unwrap();
    match l.accept() {
        Ok((_, peer)) => Some(peer),
        Err(e) if e.kind() == ErrorKind::WouldBlock => None,
        Err(e) => panic!("accept: {e}"),
    }
}

fn pending_unix(l: &UnixListener) -> bool {
    l.set_nonblocking(true).unwrap();
    match l.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

fn pending_udp(s: &UdpSocket) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match s.recv_from(&mut buf) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("recv: {e}"),
    }
}

/// The host's own addresses that are not loopback, link-local, or inside the container's
/// virtual networks (10.0.2.0/24, fd00::/64: there they name the netstack, not the host).
fn host_addresses() -> Vec<IpAddr> {
    let mut v = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().into_iter().flatten() {
        let Some(addr) = ifa.address else { continue };
        if let Some(a) = addr.as_sockaddr_in() {
            let ip = a.ip();
            if !ip.is_loopback() && !ip.is_link_local() && ip.octets()[..3] != [10, 0, 2] {
                v.push(IpAddr::V4(ip));
            }
        } else if let Some(a) = addr.as_sockaddr_in6() {
            let ip = a.ip();
            let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
            let virt = ip.segments()[..4] == [0xfd00, 0, 0, 0];
            if !ip.is_loopback() && !link_local && !virt {
                v.push(IpAddr::V6(ip));
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

/// The host's unix sockets with a name: filesystem paths and abstract names (`@name`),
/// from /proc/net/unix (the host's network namespace).
fn host_unix_sockets() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let (mut paths, mut abstracts) = (Vec::new(), Vec::new());
    for l in text.lines().skip(1) {
        let Some(name) = l.split_whitespace().nth(7) else {
            continue;
        };
        // Names with odd bytes would not survive the shell: the ones that matter are
        // ordinary, and the test's own socket is checked by name anyway.
        if name
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
        {
            continue;
        }
        match name.strip_prefix('@') {
            Some(n) if !n.is_empty() => abstracts.push(n.to_string()),
            Some(_) => {}
            None => paths.push(name.to_string()),
        }
    }
    paths.sort();
    paths.dedup();
    abstracts.sort();
    abstracts.dedup();
    (paths, abstracts)
}

#[test]
fn the_hosts_abstract_unix_sockets_are_unreachable() {
    assert_unprivileged();
    let test = "the_hosts_abstract_unix_sockets_are_unreachable";
    let name = format!("nook-test-{}", token());
    let listener = UnixListener::bind_addr(&UnixAddr::from_abstract_name(&name).unwrap())
        .expect("bind an abstract socket");
    // Every other abstract socket the host has (systemd, dbus, X11 ...), too.
    let (_, others) = host_unix_sockets();
    for net in networks(test) {
        let mut a = Attempts::new();
        a.probe("ours", &["abstract", &name]);
        for (i, n) in others.iter().enumerate() {
            a.probe(&format!("host-{i}"), &["abstract", n]);
        }
        let (o, r) = attempt(&[net], &a);
        assert_refused(&r, "ours", &["ECONNREFUSED"], &o);
        for (i, n) in others.iter().enumerate() {
            let key = format!("host-{i}");
            assert!(
                r.get(&key).is_some_and(|g| g.starts_with("err ")),
                "the host's abstract socket @{n} was reached with {net}\n{o}"
            );
        }
        assert!(
            !pending_unix(&listener),
            "{net}: a connection reached the host\n{o}"
        );
    }
    // Control: the host's network namespace shares them, by design.
    let mut a = Attempts::new();
    a.probe("ours", &["abstract", &name]);
    let (o, r) = attempt(&["--network=host"], &a);
    assert_ok(&r, "ours", &o);
    assert!(
        pending_unix(&listener),
        "the control did not reach the host's socket\n{o}"
    );
}

#[test]
fn the_hosts_loopback_is_unreachable_by_every_address() {
    assert_unprivileged();
    let test = "the_hosts_loopback_is_unreachable_by_every_address";
    let v4 = TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
    let port = v4.local_addr().unwrap().port();
    let v6 = TcpListener::bind(("::1", port)).ok();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
    let uport = udp.local_addr().unwrap().port();
    let mut targets: Vec<String> = [
        "127.0.0.1",
        "127.0.0.2",
        "127.1.2.3",
        "0.0.0.0",
        "0.0.0.1",
        "10.0.2.2",
        "10.0.2.3",
        "10.0.2.1",
        "10.0.2.100",
        "10.0.2.255",
        "255.255.255.255",
        "::1",
        "::",
        "fd00::2",
        "fd00::3",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.2.2",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    targets.extend(host_addresses().iter().map(|a| a.to_string()));
    let mut udp_targets = vec!["10.0.2.2".to_string(), "127.0.0.1".to_string()];
    udp_targets.extend(
        host_addresses()
            .iter()
            .filter(|a| a.is_ipv4())
            .map(|a| a.to_string()),
    );
    let nets = networks(test);
    for net in &nets {
        let net = *net;
        let mut a = Attempts::new();
        // Datagrams first: by the time the connections below have their answers, the
        // netstack has handled them.
        for t in &udp_targets {
            a.probe(
                &format!("udp-{t}"),
                &["udp", t, &uport.to_string(), "nook-attack"],
            );
        }
        for t in &targets {
            // A connection the netstack forwarded to the host's loopback would be
            // accepted in well under this; silence (no neighbour) ends in a timeout.
            a.probe(&format!("tcp-{t}"), &["tcp", t, &port.to_string(), "1500"]);
        }
        let (o, r) = attempt(&[net], &a);
        for t in &targets {
            assert_blocked(&r, &format!("tcp-{t}"), &o);
        }
        assert_eq!(
            pending_tcp(&v4),
            None,
            "{net}: reached the host's 127.0.0.1\n{o}"
        );
        if let Some(v6) = &v6 {
            assert_eq!(pending_tcp(v6), None, "{net}: reached the host's ::1\n{o}");
        }
        assert!(
            !pending_udp(&udp),
            "{net}: a datagram reached the host's 127.0.0.1\n{o}"
        );
    }
    // Control: asked for, the host's loopback is 10.0.2.2 (and fd00::2).
    if nets.contains(&"--network=nook") {
        let mut a = Attempts::new();
        a.probe("udp", &["udp", "10.0.2.2", &uport.to_string(), "control"]);
        a.probe("tcp", &["tcp", "10.0.2.2", &port.to_string()]);
        if v6.is_some() {
            a.probe("tcp6", &["tcp", "fd00::2", &port.to_string()]);
        }
        let (o, r) = attempt(&["--network=nook:allow_host_loopback=true"], &a);
        assert_ok(&r, "tcp", &o);
        assert!(pending_tcp(&v4).is_some(), "{o}");
        if let Some(v6) = &v6 {
            assert_ok(&r, "tcp6", &o);
            assert!(pending_tcp(v6).is_some(), "{o}");
        }
        udp.set_nonblocking(false).unwrap();
        udp.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = udp.recv_from(&mut buf).expect("the control datagram");
        assert_eq!(&buf[..n], b"control", "{o}");
    }
}

#[test]
fn the_containers_loopback_is_its_own() {
    assert_unprivileged();
    let test = "the_containers_loopback_is_its_own";
    let host = TcpListener::bind("127.0.0.1:0").expect("listen on 127.0.0.1");
    let port = host.local_addr().unwrap().port().to_string();
    for net in networks(test) {
        // A server inside on the same port as the host's; the client reads its greeting
        // once it listens (the pipe carries `listening` first).
        let mut a = Attempts::new();
        a.raw(&format!(
            "{ATTACK} serve-tcp 127.0.0.1 {port} | {{ read l; printf 'client '; \
             {ATTACK} tcp-read 127.0.0.1 {port}; printf 'server '; cat; }}"
        ));
        let (o, r) = attempt(&[net], &a);
        assert_eq!(
            r.get("client").map(String::as_str),
            Some("ok container-side"),
            "{o}"
        );
        assert_eq!(
            r.get("server").map(String::as_str),
            Some("served 127.0.0.1"),
            "{o}"
        );
        assert_eq!(pending_tcp(&host), None, "{net}\n{o}");
    }
}

#[test]
fn host_services_on_all_addresses_are_reached_as_from_another_machine() {
    assert_unprivileged();
    let test = "host_services_on_all_addresses_are_reached_as_from_another_machine";
    if !tun_usable(test) {
        return;
    }
    let Some(addr) = host_addresses().into_iter().find(IpAddr::is_ipv4) else {
        skip(test, "the host has no IPv4 address besides loopback");
        return;
    };
    let any = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("listen on 0.0.0.0");
    let port = any.local_addr().unwrap().port().to_string();
    let mut a = Attempts::new();
    a.probe("host-address", &["tcp", &addr.to_string(), &port]);
    a.probe("gateway", &["tcp", "10.0.2.2", &port, "1500"]);
    let (o, r) = attempt(&[], &a);
    assert_ok(&r, "host-address", &o);
    assert_blocked(&r, "gateway", &o);
    let peer = pending_tcp(&any).expect("the connection through the host's address");
    assert!(
        !peer.ip().is_loopback(),
        "the host's service sees a loopback peer ({peer}): it would trust the container as local\n{o}"
    );
    assert_eq!(
        pending_tcp(&any),
        None,
        "a second connection (via 10.0.2.2?)\n{o}"
    );
}

#[test]
fn the_hosts_filesystem_sockets_are_invisible_unless_bound_in() {
    assert_unprivileged();
    let dir = tempdir();
    let path = dir.path().join("host.sock");
    let listener = UnixListener::bind(&path).expect("bind a unix socket");
    let (host_paths, _) = host_unix_sockets();
    let p = path.display().to_string();
    let mut a = Attempts::new();
    a.probe("ours", &["unix", &p]);
    for (i, hp) in host_paths.iter().enumerate() {
        a.probe(&format!("host-{i}"), &["unix", hp]);
    }
    let (o, r) = attempt(&[], &a);
    assert_refused(&r, "ours", &["ENOENT"], &o);
    for (i, hp) in host_paths.iter().enumerate() {
        let key = format!("host-{i}");
        assert!(
            r.get(&key).is_some_and(|g| g.starts_with("err ")),
            "the host's socket {hp} was reached from the container\n{o}"
        );
    }
    assert!(!pending_unix(&listener), "{o}");
    // Control: bound in with -v, it is the user's to share.
    let v = format!("{}:/s", dir.path().display());
    let mut a = Attempts::new();
    a.probe("bound", &["unix", "/s/host.sock"]);
    let (o, r) = attempt(&["-v", &v], &a);
    assert_ok(&r, "bound", &o);
    assert!(pending_unix(&listener), "{o}");
}
