//! Port forwarding (`-p`) and the network's lifetime: a client on the host's loopback
//! reaches a server in the container over TCP and UDP, and the container sees the
//! client's real address and port (loopback, and from a namespace of the test's own an
//! IPv4 or IPv6 address that is not loopback); a port that is taken fails the run before
//! the container starts; when the container exits, the netstack leaves no process and
//! no socket behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};

use nook_tests::*;

/// A free TCP (or UDP) port on 127.0.0.1, released for nook to bind.
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// `ADDR:PORT` as /proc/net/tcp{,6} writes it (hex, the address in host byte order per
/// 32-bit word; a v4-mapped v6 address ends with the v4 word) → SocketAddr.
fn parse_proc_addr(s: &str) -> SocketAddr {
    let (a, p) = s.split_once(':').unwrap();
    let a = u32::from_str_radix(&a[a.len() - 8..], 16).unwrap();
    let ip = Ipv4Addr::from(a.swap_bytes());
    SocketAddr::new(ip.into(), u16::from_str_radix(p, 16).unwrap())
}

/// An IPv6 `ADDR:PORT` as /proc/net/tcp6 writes it: 32 hex digits, four 32-bit words
/// each printed as the host holds it in memory.
fn parse_proc_addr6(s: &str) -> SocketAddr {
    let (a, p) = s.split_once(':').unwrap();
    let mut ip = [0u8; 16];
    for (i, word) in ip.chunks_mut(4).enumerate() {
        let w = u32::from_str_radix(&a[i * 8..i * 8 + 8], 16).unwrap();
        word.copy_from_slice(&w.to_ne_bytes());
    }
    SocketAddr::new(
        Ipv6Addr::from(ip).into(),
        u16::from_str_radix(p, 16).unwrap(),
    )
}

/// Runs `ctr` in a container (the `host` image, `ports` published) and, once it printed
/// `ready`, the python3 `client` in a network namespace of the test's own whose loopback
/// also carries `client_addr` (`ip addr add` arguments): an address that is not
/// loopback, as a LAN client's would be, and that exists nowhere in the container's
/// namespace. `env` reaches both sides. Returns all that was printed, the container's
/// output last; None when the test cannot run here (it said SKIP and why).
fn run_with_a_client_outside(
    test: &str,
    client_addr: &str,
    ports: &[&str],
    ctr: &str,
    client: &str,
    env: &[(&str, &str)],
) -> Option<Output> {
    assert_unprivileged();
    if !tun_usable(test) {
        return None;
    }
    if !has("python3") {
        skip(
            test,
            "no python3 on the host (the client that binds its address)",
        );
        return None;
    }
    let setup = format!("ip link set lo up && ip addr add {client_addr}");
    let probe = std::process::Command::new("unshare")
        .args(["-rn", "sh", "-c", &setup])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        skip(
            test,
            &format!("`unshare -rn` with `{setup}` is not permitted here"),
        );
        return None;
    }
    let runtime = tempdir();
    let log = runtime.path().join("ctr.log");
    let publish: String = ports.iter().map(|p| format!(" -p '{p}'")).collect();
    let pass_env: String = env.iter().map(|(k, _)| format!(" -e {k}")).collect();
    let script = format!(
        "set -e
         {setup}
         XDG_RUNTIME_DIR={rt} {nook} run --rm{pass_env}{publish} host sh -c \"$CTR\" > {log} 2>&1 & ctr=$!
         until grep -q ready {log}; do kill -0 $ctr; done
         python3 -c \"$CLIENT\"
         wait $ctr
         cat {log}",
        rt = runtime.path().display(),
        nook = nook_bin().display(),
        log = log.display(),
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-rn", "sh", "-c", &script])
        .env("CTR", ctr)
        .env("CLIENT", client)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let o = spawn(&mut cmd).wait(TIMEOUT);
    o.success();
    Some(o)
}

/// The address printed after `prefix` on a line of `o` (the client's own, or a peer).
fn printed_addr(o: &Output, prefix: &str) -> SocketAddr {
    o.out()
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?}\n{o}"))
        .parse()
        .unwrap()
}

/// The peer the container's server saw, as its last line has it (from /proc/net/tcp*).
fn last_line_addr(o: &Output, parse: fn(&str) -> SocketAddr) -> SocketAddr {
    o.out().lines().last().map(parse).expect("the peer line")
}

#[test]
fn tcp_port_forward_shows_the_client_address() {
    assert_unprivileged();
    if !tun_usable("tcp_port_forward_shows_the_client_address") {
        return;
    }
    let hport = free_port(false);
    // The server prints its peer as the kernel has it (the /proc/net/tcp line of the
    // socket on its stdin), then echoes one line back.
    let serve = "ino=$(readlink /proc/self/fd/0 | tr -dc 0-9); \
                 cat /proc/net/tcp /proc/net/tcp6 | grep \" $ino \" | awk \"{print \\$3}\" > /tmp/peer; \
                 read line; echo \"got:$line\"";
    let script = format!(
        "busybox nc -l -p 8000 -e sh -c '{serve}' &
         until cat /proc/net/tcp /proc/net/tcp6 | grep -q ':1F40 0*:0000 0A'; do :; done
         echo ready
         wait
         cat /tmp/peer"
    );
    let publish = format!("127.0.0.1:{hport}:8000");
    let mut p = spawn(nook().args(["run", "--rm", "-p", &publish, "host", "sh", "-c", &script]));
    p.wait_for("ready", TIMEOUT);
    let mut c = TcpStream::connect(("127.0.0.1", hport)).expect("connect to the published port");
    let me = c.local_addr().unwrap();
    c.write_all(b"hello-forward\n").unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "got:hello-forward\n");
    let o = p.wait(TIMEOUT);
    o.success();
    let peer = o
        .out()
        .lines()
        .last()
        .map(parse_proc_addr)
        .expect("the peer line");
    assert_eq!(
        peer, me,
        "the container sees the client's own address and port\n{o}"
    );
}

#[test]
fn tcp_port_forward_shows_a_client_address_that_is_not_loopback() {
    let test = "tcp_port_forward_shows_a_client_address_that_is_not_loopback";
    // A network namespace of the test's own plays the host: 192.0.2.1 (TEST-NET) on its
    // loopback is an address that is not loopback, as a LAN client's would be. The
    // client connects from it to the published port; the server in the container
    // prints its peer as its kernel has it. That address exists nowhere in the
    // container's namespace.
    let serve = "ino=$(readlink /proc/self/fd/0 | tr -dc 0-9); \
                 cat /proc/net/tcp /proc/net/tcp6 | grep \" $ino \" | awk \"{print \\$3}\" > /tmp/peer; \
                 read line; echo \"got:$line\"";
    let ctr = format!(
        "busybox nc -l -p 8000 -e sh -c '{serve}' &
         until cat /proc/net/tcp /proc/net/tcp6 | grep -q ':1F40 0*:0000 0A'; do :; done
         echo ready
         wait
         cat /tmp/peer"
    );
    let client = "import socket\n\
                  c = socket.socket()\n\
                  c.bind(('192.0.2.1', 0))\n\
                  c.connect(('192.0.2.1', 18080))\n\
                  c.sendall(b'hello-forward\\n')\n\
                  print('reply', c.makefile().readline().strip())\n\
                  print('client %s:%d' % c.getsockname())\n";
    let Some(o) = run_with_a_client_outside(
        test,
        "192.0.2.1/32 dev lo",
        &["18080:8000"],
        &ctr,
        client,
        &[],
    ) else {
        return;
    };
    assert!(o.out().contains("reply got:hello-forward\n"), "{o}");
    let me = printed_addr(&o, "client ");
    let peer = last_line_addr(&o, parse_proc_addr);
    assert_eq!(
        peer, me,
        "the container sees the client's own address and port\n{o}"
    );
}

#[test]
fn tcp_port_forward_shows_an_ipv6_client_address_that_is_not_loopback() {
    let test = "tcp_port_forward_shows_an_ipv6_client_address_that_is_not_loopback";
    if cfg!(target_endian = "little") {
        // The encoding the parser reads, as a little-endian kernel prints 2001:db8::1.
        assert_eq!(
            parse_proc_addr6("B80D0120000000000000000001000000:1F90"),
            "[2001:db8::1]:8080".parse().unwrap()
        );
    }
    // As above, with 2001:db8::1 (documentation prefix) on the loopback of the test's
    // own namespace as the client's address. Container port 8000 has a dual-stack
    // server (busybox nc listens on [::]), which must see that address; port 8001 has
    // one on 0.0.0.0 only, which the forwarder still reaches (from 127.0.0.1) once the
    // connection to [::1] is refused.
    let serve = "ino=$(readlink /proc/self/fd/0 | tr -dc 0-9); \
                 cat /proc/net/tcp /proc/net/tcp6 | grep \" $ino \" | awk \"{print \\$3}\" > /tmp/peer; \
                 read line; echo \"got:$line\"";
    let v4_server = "import socket\n\
                     s = socket.socket()\n\
                     s.bind((\"0.0.0.0\", 8001))\n\
                     s.listen(1)\n\
                     c, a = s.accept()\n\
                     c.sendall(b\"got4:\" + c.makefile(\"rb\").readline())\n\
                     print(\"peer4 %s:%d\" % a)\n";
    let ctr = format!(
        "busybox nc -l -p 8000 -e sh -c '{serve}' &
         python3 -c '{v4_server}' > /tmp/peer4 &
         until cat /proc/net/tcp /proc/net/tcp6 | grep -q ':1F40 0*:0000 0A' &&
               grep -q ':1F41 0*:0000 0A' /proc/net/tcp; do :; done
         echo ready
         wait
         cat /tmp/peer4 /tmp/peer"
    );
    let client = "import socket\n\
                  for port in (18081, 18082): \
                  c = socket.socket(socket.AF_INET6); \
                  c.bind(('2001:db8::1', 0)); \
                  c.connect(('2001:db8::1', port)); \
                  c.sendall(b'hello-forward\\n'); \
                  print('reply', c.makefile().readline().strip()); \
                  print('client %d [%s]:%d' % ((port,) + c.getsockname()[:2]))\n";
    let Some(o) = run_with_a_client_outside(
        test,
        "2001:db8::1/128 dev lo nodad",
        &["[::]:18081:8000", "[::]:18082:8001"],
        &ctr,
        client,
        &[],
    ) else {
        return;
    };
    assert!(o.out().contains("reply got:hello-forward\n"), "{o}");
    assert!(o.out().contains("reply got4:hello-forward\n"), "{o}");
    let me = printed_addr(&o, "client 18081 ");
    let peer = last_line_addr(&o, parse_proc_addr6);
    assert_eq!(
        peer, me,
        "a server on [::] sees the IPv6 client's own address and port\n{o}"
    );
    let peer4 = printed_addr(&o, "peer4 ");
    assert_eq!(
        peer4.ip(),
        Ipv4Addr::LOCALHOST,
        "a server on 0.0.0.0 only is reached from 127.0.0.1\n{o}"
    );
}

/// A port free on both families of the host's loopback, or None where the host has
/// no IPv6 loopback (::1).
fn free_dual_stack_port() -> Option<u16> {
    let v6 = TcpListener::bind("[::1]:0").ok()?;
    let port = v6.local_addr().ok()?.port();
    let v4 = TcpListener::bind(("127.0.0.1", port)).ok()?;
    drop((v6, v4));
    Some(port)
}

#[test]
fn a_port_published_without_a_host_ip_listens_on_both_families() {
    let test = "a_port_published_without_a_host_ip_listens_on_both_families";
    assert_unprivileged();
    if !tun_usable(test) {
        return;
    }
    if !has("python3") {
        skip(test, "no python3 on the host (the container's server)");
        return;
    }
    let Some(hport) = free_dual_stack_port() else {
        skip(test, "the host has no IPv6 loopback (::1)");
        return;
    };
    // A dual-stack server in the container answers each client with the family it saw.
    let server = "import socket\n\
                  s = socket.socket(socket.AF_INET6)\n\
                  s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
                  s.bind(('::', 8000))\n\
                  s.listen(4)\n\
                  print('ready', flush=True)\n\
                  for _ in range(2): \
                  c, a = s.accept(); \
                  c.sendall(('hello %s\\n' % a[0]).encode()); \
                  c.close()\n";
    let publish = format!("{hport}:8000");
    let mut p = spawn(nook().args([
        "run", "--rm", "-p", &publish, "host", "python3", "-c", server,
    ]));
    p.wait_for("ready", TIMEOUT);
    let greet = |addr: SocketAddr| {
        let mut c = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to the published port on {addr}: {e}"));
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        reply
    };
    let v4 = greet(SocketAddr::from((Ipv4Addr::LOCALHOST, hport)));
    let v6 = greet(SocketAddr::from((Ipv6Addr::LOCALHOST, hport)));
    let o = p.wait(TIMEOUT);
    o.success();
    // The dual-stack server sees the IPv4 client v4-mapped.
    assert_eq!(
        v4.trim_start_matches("hello ::ffff:"),
        "127.0.0.1\n",
        "an IPv4 client, seen as itself\n{o}"
    );
    assert_eq!(v6, "hello ::1\n", "an IPv6 client, seen as itself\n{o}");

    // An explicit 0.0.0.0 is IPv4 only, as podman's.
    let Some(hport) = free_dual_stack_port() else {
        return;
    };
    let publish = format!("0.0.0.0:{hport}:8000");
    let mut p = spawn(nook().args([
        "run",
        "--rm",
        "-p",
        &publish,
        "host",
        "sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]));
    p.wait_for("ready", TIMEOUT);
    let refused =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv6Addr::LOCALHOST, hport)), TIMEOUT);
    p.kill_all();
    p.wait(TIMEOUT);
    assert!(
        refused.is_err(),
        "-p 0.0.0.0:PORT:8000 must not listen on [::1]"
    );
}

#[test]
fn udp_port_forward_both_ways() {
    assert_unprivileged();
    if !tun_usable("udp_port_forward_both_ways") {
        return;
    }
    if !has("python3") {
        skip(
            "udp_port_forward_both_ways",
            "no python3 on the host (the container's UDP server)",
        );
        return;
    }
    let hport = free_port(true);
    let server = "import socket\n\
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.bind(('0.0.0.0', 9000))\n\
                  print('ready', flush=True)\n\
                  d, a = s.recvfrom(2048)\n\
                  s.sendto(b'reply:' + d, a)\n\
                  print('peer %s:%d' % a, flush=True)\n";
    let publish = format!("127.0.0.1:{hport}:9000/udp");
    let mut p = spawn(nook().args([
        "run", "--rm", "-p", &publish, "host", "python3", "-c", server,
    ]));
    p.wait_for("ready", TIMEOUT);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.send_to(b"dgram", ("127.0.0.1", hport)).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"reply:dgram");
    assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], hport)));
    let o = p.wait(TIMEOUT);
    o.success();
    let me = c.local_addr().unwrap();
    assert!(
        o.out().contains(&format!("peer {}:{}", me.ip(), me.port())),
        "the container sees the client address {me}\n{o}"
    );
}

#[test]
fn udp_port_forward_shows_a_client_address_that_is_not_loopback() {
    let test = "udp_port_forward_shows_a_client_address_that_is_not_loopback";
    // As in the TCP test: 192.0.2.1 on the test namespace's loopback is a client
    // address that exists nowhere in the container's namespace. The server, bound to
    // 0.0.0.0 like most, answers with the peer its kernel gave it.
    let server = "import socket\n\
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.bind(('0.0.0.0', 8000))\n\
                  d, a = s.recvfrom(2048)\n\
                  s.sendto(('peer %s:%d' % a).encode(), a)\n";
    let ctr = "python3 -c \"$SERVER\" &
               until grep -q ':1F40 0*:0000 07' /proc/net/udp; do :; done
               echo ready
               wait";
    let client = "import socket\n\
                  c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  c.settimeout(20)\n\
                  c.bind(('192.0.2.1', 0))\n\
                  c.sendto(b'hello', ('192.0.2.1', 18080))\n\
                  d, a = c.recvfrom(2048)\n\
                  print('reply', d.decode())\n\
                  print('from %s:%d' % a)\n\
                  print('client %s:%d' % c.getsockname())\n";
    let Some(o) = run_with_a_client_outside(
        test,
        "192.0.2.1/32 dev lo",
        &["18080:8000/udp"],
        ctr,
        client,
        &[("SERVER", server)],
    ) else {
        return;
    };
    let me = printed_addr(&o, "client ");
    assert!(
        o.out().contains("from 192.0.2.1:18080\n"),
        "the reply comes from the published port\n{o}"
    );
    assert!(
        o.out().contains(&format!("reply peer {me}\n")),
        "the container sees the client's own address and port {me}\n{o}"
    );
}

#[test]
fn udp_port_forward_shows_an_ipv6_client_address_that_is_not_loopback() {
    let test = "udp_port_forward_shows_an_ipv6_client_address_that_is_not_loopback";
    // As in the IPv6 TCP test, with 2001:db8::1 as the client's address: the
    // dual-stack server on container port 8000 must see it; the one on 0.0.0.0:8001
    // only still answers, once the forwarder's datagram to [::1] is refused (from
    // 127.0.0.1 then). Each answers one datagram with the peer its kernel gave it.
    let server = "import socket, select\n\
                  s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
                  s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
                  s6.bind(('::', 8000))\n\
                  s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s4.bind(('0.0.0.0', 8001))\n\
                  left = {s6: 'peer6 [%s]:%d', s4: 'peer4 %s:%d'}\n\
                  while left: \
                  s = select.select(list(left), [], [])[0][0]; \
                  d, a = s.recvfrom(2048); \
                  s.sendto((left.pop(s) % a[:2]).encode(), a)\n";
    let ctr = "python3 -c \"$SERVER\" &
               until grep -q ':1F40 0*:0000 07' /proc/net/udp6 &&
                     grep -q ':1F41 0*:0000 07' /proc/net/udp; do :; done
               echo ready
               wait";
    let client = "import socket\n\
                  for port in (18083, 18084): \
                  c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); \
                  c.settimeout(20); \
                  c.bind(('2001:db8::1', 0)); \
                  c.sendto(b'hello', ('2001:db8::1', port)); \
                  print('reply %d %s' % (port, c.recvfrom(2048)[0].decode())); \
                  print('client %d [%s]:%d' % ((port,) + c.getsockname()[:2]))\n";
    let Some(o) = run_with_a_client_outside(
        test,
        "2001:db8::1/128 dev lo nodad",
        &["[::]:18083:8000/udp", "[::]:18084:8001/udp"],
        ctr,
        client,
        &[("SERVER", server)],
    ) else {
        return;
    };
    let me = printed_addr(&o, "client 18083 ");
    assert!(
        o.out().contains(&format!("reply 18083 peer6 {me}\n")),
        "a server on [::] sees the IPv6 client's own address and port {me}\n{o}"
    );
    let peer4 = printed_addr(&o, "reply 18084 peer4 ");
    assert_eq!(
        peer4.ip(),
        Ipv4Addr::LOCALHOST,
        "a server on 0.0.0.0 only is reached from 127.0.0.1\n{o}"
    );
}

#[test]
fn a_published_port_in_use_fails_before_the_container_starts() {
    assert_unprivileged();
    if !tun_usable("a_published_port_in_use_fails_before_the_container_starts") {
        return;
    }
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let publish = format!("127.0.0.1:{port}:80");
    let o = run(&["--rm", "-p", &publish, "host", "echo", "started"]);
    o.assert_error_line(125, &[&port.to_string(), "in use"]);
    assert_eq!(o.out(), "", "the container must not have run\n{o}");
}

#[test]
fn bad_network_flags_are_explained() {
    assert_unprivileged();
    let o = run(&["--rm", "--network=nook:bogus=1", "host", "true"]);
    o.assert_error_line(125, &["bogus"]);
    let o = run(&["--rm", "-p", "80:80:80:80", "host", "true"]);
    o.assert_error_line(125, &["-p"]);
    let o = run(&["--rm", "--network=none", "-p", "8080:80", "host", "true"]);
    o.assert_error_line(125, &["--network=nook"]);
}

#[test]
fn the_network_goes_away_with_the_container() {
    assert_unprivileged();
    if !tun_usable("the_network_goes_away_with_the_container") {
        return;
    }
    let hport = free_port(false);
    let publish = format!("127.0.0.1:{hport}:8000");
    let mut cmd = nook();
    cmd.args([
        "run",
        "--rm",
        "-i",
        "-p",
        &publish,
        "host",
        "sh",
        "-c",
        "echo ready; read x; echo bye",
    ])
    .stdin(std::process::Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.wait_for("ready", TIMEOUT);
    let pids = descendants(p.pid);
    assert!(
        pids.len() >= 2,
        "expected the container and the netns agent under nook: {pids:?}"
    );
    // The published port is held while the container runs.
    assert!(
        TcpListener::bind(("127.0.0.1", hport)).is_err(),
        "the published port is not bound"
    );
    let nook_pid = p.pid;
    p.write_stdin(b"go\n");
    p.close_stdin();
    let o = p.wait(TIMEOUT);
    o.success();
    assert_eq!(o.out(), "ready\nbye\n", "{o}");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} (started by nook {nook_pid}) outlived the container\n{o}"
        );
    }
    TcpListener::bind(("127.0.0.1", hport)).expect("the published port is free again");
}
