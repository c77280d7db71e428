//! `--network=nook` (the default), from the container outwards: HTTP and raw TCP to
//! servers the test runs on the host's loopback (reached as 10.0.2.2 with
//! allow_host_loopback) and in a network namespace the test made, large transfers
//! checksummed both ways, 200 concurrent connections, UDP echo, DNS through the
//! netstack's forwarder to a test resolver, isolation of the host's loopback by default.
//!
//! Addresses: only 127.0.0.1 on the host, the container's virtual 10.0.2.x (which exist
//! only inside the netstack: nothing of 10.0.2.0/24 leaves it), and 192.0.2.1 (TEST-NET)
//! on the loopback of a namespace this test creates with `unshare -rn`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::thread;
use std::time::Duration;

use nook_tests::*;
use sha2::{Digest, Sha256};

const LOOPBACK_NET: &str = "--network=nook:allow_host_loopback=true";

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let p = l.local_addr().unwrap().port();
    (l, p)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn http_and_raw_tcp_to_the_hosts_loopback() {
    assert_unprivileged();
    if !tun_usable("http_and_raw_tcp_to_the_hosts_loopback") {
        return;
    }
    let (l, port) = listener();
    let server = thread::spawn(move || {
        // First connection: HTTP. Second: a raw line echoed back upper-cased.
        let (mut c, _) = l.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "EOF before the end of the HTTP request");
            req.extend_from_slice(&buf[..n]);
        }
        let body = "nook-http-ok\n";
        write!(
            c,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        drop(c);
        let (c, peer) = l.accept().unwrap();
        assert!(
            peer.ip().is_loopback(),
            "the netstack connects from the host's loopback"
        );
        let mut line = String::new();
        BufReader::new(&c).read_line(&mut line).unwrap();
        (&c).write_all(line.to_uppercase().as_bytes()).unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    let script = format!(
        "busybox wget -q -O - http://10.0.2.2:{port}/index.html && \
         echo raw-line | busybox nc 10.0.2.2 {port}"
    );
    let o = run(&["--rm", LOOPBACK_NET, "host", "sh", "-c", &script]);
    o.success();
    assert_eq!(o.out(), "nook-http-ok\nRAW-LINE\n", "{o}");
    let req = server.join().unwrap();
    assert!(
        req.starts_with("GET /index.html HTTP/1."),
        "request seen by the host: {req:?}"
    );
}

#[test]
fn large_transfers_arrive_intact_both_ways() {
    assert_unprivileged();
    if !tun_usable("large_transfers_arrive_intact_both_ways") {
        return;
    }
    const SIZE: usize = 64 << 20;
    let data = random_bytes(SIZE);
    let sum = hex(&Sha256::digest(&data));
    let dir = tempdir();
    std::fs::write(dir.path().join("blob"), &data).unwrap();

    // Host → container: the server sends SIZE bytes and closes; the container hashes them.
    let (l, down_port) = listener();
    let payload = data.clone();
    let down = thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.write_all(&payload).unwrap();
    });
    // Container → host: the container sends the blob; the server hashes what it reads.
    let (l2, up_port) = listener();
    let up = thread::spawn(move || {
        let (mut c, _) = l2.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = vec![0u8; SIZE];
        c.read_exact(&mut got).unwrap();
        c.write_all(b"done\n").unwrap();
        hex(&Sha256::digest(&got))
    });
    let vol = format!("{}:/data:ro", dir.path().display());
    let script = format!(
        "busybox nc 10.0.2.2 {down_port} </dev/null | sha256sum | cut -d' ' -f1
         busybox nc 10.0.2.2 {up_port} </data/blob"
    );
    let o = run(&[
        "--rm",
        LOOPBACK_NET,
        "-v",
        &vol,
        "host",
        "sh",
        "-c",
        &script,
    ]);
    o.success();
    down.join().unwrap();
    assert_eq!(
        o.out(),
        format!("{sum}\ndone\n"),
        "host → container data differs\n{o}"
    );
    assert_eq!(up.join().unwrap(), sum, "container → host data differs");
}

#[test]
fn two_hundred_concurrent_connections() {
    assert_unprivileged();
    if !tun_usable("two_hundred_concurrent_connections") {
        return;
    }
    const N: usize = 200;
    let (l, port) = listener();
    // The server answers only once all N connections are open at the same time.
    let server = thread::spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..N {
            let (c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut id = String::new();
            BufReader::new(&c).read_line(&mut id).unwrap();
            conns.push((c, id));
        }
        for (mut c, id) in conns {
            c.write_all(format!("ok {id}").as_bytes()).unwrap();
        }
    });
    let script = format!(
        "for i in $(seq {N}); do echo $i | busybox nc 10.0.2.2 {port} > /tmp/out.$i & done; wait
         cat /tmp/out.* | sort | uniq | wc -l"
    );
    let o = run(&["--rm", LOOPBACK_NET, "host", "sh", "-c", &script]);
    o.success();
    server.join().unwrap();
    assert_eq!(
        o.line().trim(),
        N.to_string(),
        "every connection got its own answer\n{o}"
    );
}

#[test]
fn udp_echo_through_the_netstack() {
    assert_unprivileged();
    if !tun_usable("udp_echo_through_the_netstack") {
        return;
    }
    if !has("python3") {
        skip(
            "udp_echo_through_the_netstack",
            "no python3 on the host (the container's UDP client)",
        );
        return;
    }
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        echo.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            echo.send_to(&reply, from).unwrap();
        }
    });
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(10)\n\
         for i in range(3):\n    s.sendto(b'dgram%d' % i, ('10.0.2.2', {port}))\n    \
         d, a = s.recvfrom(2048)\n    print(d.decode(), a[0], a[1])\n"
    );
    let o = run(&["--rm", LOOPBACK_NET, "host", "python3", "-c", &script]);
    o.success();
    server.join().unwrap();
    let expect: String = (0..3)
        .map(|i| format!("echo:dgram{i} 10.0.2.2 {port}\n"))
        .collect();
    assert_eq!(o.out(), expect, "{o}");
}

#[test]
fn udp_datagrams_larger_than_the_mtu_arrive_whole_both_ways() {
    assert_unprivileged();
    let test = "udp_datagrams_larger_than_the_mtu_arrive_whole_both_ways";
    if !tun_usable(test) {
        return;
    }
    if !has("python3") {
        skip(test, "no python3 on the host (the container's UDP client)");
        return;
    }
    // Echo servers (IPv4, and IPv6 when the host has ::1) that return each datagram
    // whole; the container checks the length and digest of what comes back. At MTU 1500
    // a 30 000-byte datagram is 21 fragments each way; IPv4's largest (65 507 bytes) and
    // IPv6's (65 527) need fragments even at the default MTU of 65520. IPv6 fragments
    // carry a fragment header instead of IPv4's header fields.
    fn echo(sock: UdpSocket, count: usize) -> thread::JoinHandle<Vec<usize>> {
        thread::spawn(move || {
            sock.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut buf = vec![0u8; 65536];
            let mut sizes = Vec::new();
            for _ in 0..count {
                let (n, from) = sock.recv_from(&mut buf).unwrap();
                sizes.push(n);
                sock.send_to(&buf[..n], from).unwrap();
            }
            sizes
        })
    }
    let script = "import socket, hashlib, sys\n\
         v6 = ':' in sys.argv[1]\n\
         s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(10)\n\
         for size in (30000, 65527 if v6 else 65507):\n    \
             data = bytes((i * 7 + i // 251) % 256 for i in range(size))\n    \
             s.sendto(data, (sys.argv[1], int(sys.argv[2])))\n    \
             d = s.recv(65536)\n    \
             print(size, len(d), hashlib.sha256(d).hexdigest() == hashlib.sha256(data).hexdigest())\n";
    let mut cases = vec![("10.0.2.2", UdpSocket::bind("127.0.0.1:0").unwrap(), 65507)];
    match UdpSocket::bind("[::1]:0") {
        Ok(s) => cases.push(("fd00::2", s, 65527)),
        Err(_) => eprintln!("{test}: no IPv6 loopback on the host, IPv4 only"),
    }
    for (addr, sock, largest) in cases {
        let port = sock.local_addr().unwrap().port().to_string();
        let server = echo(sock, 4);
        for mtu in ["1500", "65520"] {
            let net = format!("--network=nook:allow_host_loopback=true,mtu={mtu}");
            let o = run(&["--rm", &net, "host", "python3", "-c", script, addr, &port]);
            o.success();
            assert_eq!(
                o.out(),
                format!("30000 30000 True\n{largest} {largest} True\n"),
                "{addr}, MTU {mtu}\n{o}"
            );
        }
        assert_eq!(server.join().unwrap(), vec![30000, largest, 30000, largest]);
    }
}

/// A DNS server for one name: A queries for `name` get `addr`, everything else an empty
/// NOERROR answer. Answers `count` queries, then returns them.
fn dns_server(
    sock: UdpSocket,
    name: &'static str,
    addr: [u8; 4],
) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            // Question: labels from offset 12, then QTYPE, QCLASS.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).into_owned());
                i += 1 + len;
            }
            let qname = labels.join(".");
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let qend = i + 5;
            let answer = qname == name && qtype == 1;
            let mut r = q[..qend].to_vec();
            r[2] = 0x81; // QR, RD
            r[3] = 0x80; // RA, NOERROR
            r[6..8].copy_from_slice(&(answer as u16).to_be_bytes()); // ANCOUNT
            r[8..12].fill(0);
            if answer {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                r.extend_from_slice(&addr);
            }
            sock.send_to(&r, from).unwrap();
            seen.push(format!("{qname}/{qtype}"));
            if answer {
                break;
            }
        }
        seen
    })
}

#[test]
fn dns_names_resolve_through_the_forwarder() {
    assert_unprivileged();
    if !tun_usable("dns_names_resolve_through_the_forwarder") {
        return;
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = sock.local_addr().unwrap();
    let server = dns_server(sock, "nook-test.example", [192, 0, 2, 55]);
    // Without allow_host_loopback: the resolver is reachable anyway, as the DNS service.
    let net = format!("--network=nook:dns={dns}");
    let o = run(&[
        "--rm",
        &net,
        "host",
        "sh",
        "-c",
        "cat /etc/resolv.conf; busybox nslookup -type=a nook-test.example",
    ]);
    let seen = server.join().unwrap();
    o.success();
    assert!(o.out().starts_with("nameserver 10.0.2.3\n"), "{o}");
    assert!(
        o.out().contains("192.0.2.55"),
        "the name did not resolve\n{o}"
    );
    assert!(
        seen.iter().any(|q| q == "nook-test.example/1"),
        "queries seen: {seen:?}"
    );
}

#[test]
fn host_loopback_is_unreachable_by_default() {
    assert_unprivileged();
    if !tun_usable("host_loopback_is_unreachable_by_default") {
        return;
    }
    let (l, port) = listener();
    l.set_nonblocking(true).unwrap();
    let script = format!(
        "busybox nc 10.0.2.2 {port} </dev/null && echo connected || echo refused
         busybox nc 10.0.2.77 {port} </dev/null && echo connected || echo refused"
    );
    let o = run(&["--rm", "host", "sh", "-c", &script]);
    o.success();
    assert_eq!(o.out(), "refused\nrefused\n", "{o}");
    assert!(
        l.accept().is_err(),
        "a connection reached the host's loopback"
    );
}

#[test]
fn tcp_to_a_server_in_a_namespace_the_test_made() {
    assert_unprivileged();
    if !tun_usable("tcp_to_a_server_in_a_namespace_the_test_made") {
        return;
    }
    // unshare -rn: a user and network namespace of our own; 192.0.2.1 on its loopback is
    // the "remote" server. nook runs inside it, so its host sockets live there too.
    let probe = std::process::Command::new("unshare")
        .args(["-rn", "true"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        skip(
            "tcp_to_a_server_in_a_namespace_the_test_made",
            "`unshare -rn` is not permitted here",
        );
        return;
    }
    let www = tempdir();
    std::fs::write(www.path().join("index.html"), "served-from-netns\n").unwrap();
    let runtime = tempdir();
    let nook = nook_bin();
    let script = format!(
        "set -e
         ip link set lo up
         ip addr add 192.0.2.1/32 dev lo
         busybox httpd -f -p 192.0.2.1:8080 -h {www} & httpd=$!
         busybox nc -ll -p 8081 -e busybox echo raw-from-netns & nc=$!
         until cat /proc/net/tcp /proc/net/tcp6 | grep -q ':1F90 0*:0000 0A' &&
               cat /proc/net/tcp /proc/net/tcp6 | grep -q ':1F91 0*:0000 0A'; do :; done
         XDG_RUNTIME_DIR={runtime} {nook} run --rm host sh -c \
           'busybox wget -q -O - http://192.0.2.1:8080/index.html; busybox nc 192.0.2.1 8081 </dev/null'
         kill $httpd $nc",
        www = www.path().display(),
        runtime = runtime.path().display(),
        nook = nook.display(),
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-rn", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let o = spawn(&mut cmd).wait(TIMEOUT);
    o.success();
    assert_eq!(o.out(), "served-from-netns\nraw-from-netns\n", "{o}");
}

#[test]
fn connection_to_a_closed_port_is_refused_quickly() {
    assert_unprivileged();
    if !tun_usable("connection_to_a_closed_port_is_refused_quickly") {
        return;
    }
    let (l, port) = listener();
    drop(l);
    let script = format!("busybox nc 10.0.2.2 {port} </dev/null; echo status=$?");
    let started = std::time::Instant::now();
    let o = run(&["--rm", LOOPBACK_NET, "host", "sh", "-c", &script]);
    o.success();
    assert!(o.out().contains("status=1"), "{o}");
    assert!(
        o.err().to_lowercase().contains("refused"),
        "the container sees ECONNREFUSED\n{o}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn ipv6_tcp_to_the_hosts_loopback() {
    assert_unprivileged();
    if !tun_usable("ipv6_tcp_to_the_hosts_loopback") {
        return;
    }
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        skip(
            "ipv6_tcp_to_the_hosts_loopback",
            "the host has no IPv6 loopback (::1)",
        );
        return;
    };
    let port = l.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut c, peer) = l.accept().unwrap();
        c.write_all(b"v6-ok\n").unwrap();
        peer
    });
    let script = format!("busybox nc fd00::2 {port} </dev/null");
    let o = run(&["--rm", LOOPBACK_NET, "host", "sh", "-c", &script]);
    o.success();
    assert_eq!(o.out(), "v6-ok\n", "{o}");
    assert!(server.join().unwrap().ip().is_loopback());
}

/// `cmd` starts with its RLIMIT_NOFILE soft limit at `soft` (the hard one unchanged), so
/// what the container inherits is known whatever the test process raised.
fn with_nofile(cmd: &mut std::process::Command, soft: u64) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: getrlimit/setrlimit are async-signal-safe and use only this stack frame.
    unsafe {
        cmd.pre_exec(move || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = soft.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// This process's RLIMIT_NOFILE soft limit raised to the hard one; returns the hard one.
fn raise_own_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_max
}

/// 1,500 connections from one container each hold a host socket in the netstack: past
/// nook's 1,024 descriptors they stalled, and with them the published ports. The
/// netstack raises its own soft limit to the hard one; the container keeps the caller's.
#[test]
fn fifteen_hundred_connections_and_a_published_port_still_answers() {
    let test = "fifteen_hundred_connections_and_a_published_port_still_answers";
    assert_unprivileged();
    if !tun_usable(test) {
        return;
    }
    const CONNS: usize = 1500;
    let hard = raise_own_nofile();
    if hard < 2 * CONNS as u64 + 200 {
        skip(
            test,
            &format!("the hard RLIMIT_NOFILE is {hard}: too low for {CONNS} connections"),
        );
        return;
    }
    let (l, port) = listener();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut held = Vec::with_capacity(CONNS);
        while held.len() < CONNS {
            held.push(l.accept().expect("accept").0);
        }
        // Held open until the container has made its last check.
        let _ = done_rx.recv_timeout(TIMEOUT);
        held.len()
    });
    let published = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        r#"
import resource, socket
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
print("limit", soft, flush=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8080))
srv.listen(8)
conns = [socket.create_connection(("10.0.2.2", {port}), timeout=30) for _ in range({CONNS})]
print("opened", len(conns), flush=True)
c, _ = srv.accept()
c.sendall(b"pong\n")
c.close()
"#
    );
    let mut cmd = nook();
    cmd.args([
        "run",
        "--rm",
        LOOPBACK_NET,
        "-p",
        &format!("127.0.0.1:{published}:8080"),
        "host",
        "python3",
        "-c",
        &script,
    ]);
    let mut p = spawn(with_nofile(&mut cmd, 1024));
    assert_eq!(
        p.wait_for("limit", TIMEOUT),
        "limit 1024",
        "the container's own limit"
    );
    p.wait_for(&format!("opened {CONNS}"), TIMEOUT);
    let c = std::net::TcpStream::connect(("127.0.0.1", published))
        .expect("the published port refused a connection");
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reply = String::new();
    BufReader::new(c).read_line(&mut reply).unwrap();
    assert_eq!(reply, "pong\n", "the published port answered nothing");
    let o = p.wait(TIMEOUT);
    o.success();
    let _ = done_tx.send(());
    assert_eq!(server.join().unwrap(), CONNS);
}

/// A restart clones the container again from the supervisor, whose netstack raised
/// its descriptor limit: the container must not inherit that.
#[test]
fn restarted_container_keeps_the_callers_nofile_limit() {
    let test = "restarted_container_keeps_the_callers_nofile_limit";
    assert_unprivileged();
    if !tun_usable(test) {
        return;
    }
    let store = tempdir();
    let name = format!("nofile-{}", token());
    let nook_in_store = |args: &[&str]| {
        let mut c = nook();
        c.env("NOOK_ROOT", store.path()).args(args);
        spawn(with_nofile(&mut c, 1024)).wait(TIMEOUT)
    };
    nook_in_store(&[
        "run",
        "-d",
        "--name",
        &name,
        "--restart",
        "on-failure:1",
        "host",
        "sh",
        "-c",
        "echo limit $(ulimit -n); exit 3",
    ])
    .success();
    assert_eq!(nook_in_store(&["wait", &name]).success().line(), "3");
    let logs = nook_in_store(&["logs", &name]).success().out();
    nook_in_store(&["rm", "-f", &name]).success();
    assert_eq!(
        logs, "limit 1024\nlimit 1024\n",
        "the first run and the restart keep the caller's soft limit"
    );
}
