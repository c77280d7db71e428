//! The netstack driven with in-memory frames: a test plays the container, writing
//! Ethernet frames into a `MemLink` and reading what the stack answers, while real host
//! sockets on 127.0.0.1 play the far end. No tap, no namespace, no privilege.
//!
//! Only loopback addresses are ever connected to: the container-side destinations are
//! the netstack's own virtual addresses (10.0.2.2 → host loopback with
//! allow_host_loopback, 10.0.2.3 → the test's DNS socket), or TEST-NET addresses that
//! the policy refuses or that are dropped before any socket exists.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use nook_net::config::{self, Config};
use nook_net::link::MemLink;
use nook_net::policy::Policy;
use nook_net::stack::{Stack, Verdict};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::*;

const CTR_MAC: EthernetAddress = EthernetAddress(config::CONTAINER_MAC);
const GW_MAC: EthernetAddress = EthernetAddress(config::GATEWAY_MAC);

fn stack(allow_host_loopback: bool, dns: SocketAddr) -> Stack<MemLink> {
    let cfg = Config {
        allow_host_loopback,
        mtu: 1500,
        ..Config::default()
    };
    // Sandboxed: whatever a test's frames say, the stack connects to loopback only.
    let policy = Policy {
        outbound: false,
        ..Policy::new(&cfg, dns)
    };
    let mut st = Stack::new(MemLink::default(), &cfg, policy).unwrap();
    // As the container's kernel does first: ask for the gateway's MAC (which also tells
    // the stack the container's).
    st.inject(&arp_request(config::GATEWAY_V4));
    st.link().outbox.clear();
    st
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    eth(EthernetProtocol::Arp, 28, |p| {
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: CTR_MAC,
            source_protocol_addr: config::CONTAINER_V4,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        repr.emit(&mut ArpPacket::new_unchecked(p));
    })
}

fn eth(ethertype: EthernetProtocol, payload_len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut buf = vec![0u8; 14 + payload_len];
    let mut f = EthernetFrame::new_unchecked(&mut buf);
    f.set_src_addr(CTR_MAC);
    f.set_dst_addr(GW_MAC);
    f.set_ethertype(ethertype);
    fill(f.payload_mut());
    buf
}

fn ipv4(proto: IpProtocol, dst: Ipv4Addr, l4_len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    eth(EthernetProtocol::Ipv4, 20 + l4_len, |p| {
        let repr = Ipv4Repr {
            src_addr: config::CONTAINER_V4,
            dst_addr: dst,
            next_header: proto,
            payload_len: l4_len,
            hop_limit: 64,
        };
        let mut ip = Ipv4Packet::new_unchecked(&mut *p);
        repr.emit(&mut ip, &ChecksumCapabilities::default());
        fill(&mut p[20..]);
    })
}

#[derive(Clone, Copy)]
struct Seg<'a> {
    src_port: u16,
    dst: (Ipv4Addr, u16),
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    window: u16,
    payload: &'a [u8],
}

fn tcp(s: Seg) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: s.src_port,
        dst_port: s.dst.1,
        control: s.control,
        seq_number: TcpSeqNumber(s.seq as i32),
        ack_number: s.ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: s.window,
        window_scale: None,
        max_seg_size: (s.control == TcpControl::Syn).then_some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: s.payload,
    };
    let len = repr.buffer_len();
    ipv4(IpProtocol::Tcp, s.dst.0, len, |p| {
        let mut pkt = TcpPacket::new_unchecked(p);
        repr.emit(
            &mut pkt,
            &IpAddress::Ipv4(config::CONTAINER_V4),
            &IpAddress::Ipv4(s.dst.0),
            &ChecksumCapabilities::default(),
        );
    })
}

/// A TCP segment the stack sent to the container.
#[derive(Debug, Clone)]
struct Out {
    src: (Ipv4Addr, u16),
    dst_port: u16,
    syn: bool,
    ack: Option<u32>,
    fin: bool,
    rst: bool,
    seq: u32,
    window: u16,
    payload: Vec<u8>,
}

fn parse_tcp(frame: &[u8]) -> Option<Out> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    assert_eq!(ip.dst_addr(), config::CONTAINER_V4);
    assert_eq!(eth.dst_addr(), CTR_MAC);
    let t = TcpPacket::new_checked(ip.payload()).ok()?;
    assert!(
        t.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()),
        "bad TCP checksum from the stack"
    );
    Some(Out {
        src: (ip.src_addr(), t.src_port()),
        dst_port: t.dst_port(),
        syn: t.syn(),
        ack: t.ack().then(|| t.ack_number().0 as u32),
        fin: t.fin(),
        rst: t.rst(),
        seq: t.seq_number().0 as u32,
        window: t.window_len(),
        payload: t.payload().to_vec(),
    })
}

/// Turns the stack until `pred` matches a TCP segment it sent (others are kept in `seen`).
fn await_tcp(
    st: &mut Stack<MemLink>,
    seen: &mut Vec<Out>,
    within: Duration,
    pred: impl Fn(&Out) -> bool,
) -> Out {
    let deadline = Instant::now() + within;
    loop {
        while let Some(f) = st.link().outbox.pop_front() {
            if let Some(o) = parse_tcp(&f) {
                if pred(&o) {
                    return o;
                }
                seen.push(o);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no matching segment; saw {seen:#?}"
        );
        st.turn(Some(Duration::from_millis(10))).unwrap();
    }
}

fn host_listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn no_dns() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

/// Container's side of an open connection.
struct Conn {
    port: u16,
    dst: (Ipv4Addr, u16),
    snd: u32,
    rcv: u32,
}

fn handshake(st: &mut Stack<MemLink>, dst: (Ipv4Addr, u16), port: u16) -> Conn {
    let syn = tcp(Seg {
        src_port: port,
        dst,
        control: TcpControl::Syn,
        seq: 1000,
        ack: None,
        window: 65535,
        payload: &[],
    });
    assert_eq!(st.inject(&syn), Verdict::TcpNew);
    let synack = await_tcp(st, &mut Vec::new(), Duration::from_secs(5), |o| o.syn);
    assert_eq!(synack.ack, Some(1001));
    assert_eq!(
        synack.src, dst,
        "the stack answers as the address the container dialled"
    );
    assert_eq!(synack.dst_port, port);
    let c = Conn {
        port,
        dst,
        snd: 1001,
        rcv: synack.seq.wrapping_add(1),
    };
    st.inject(&tcp(Seg {
        src_port: port,
        dst,
        control: TcpControl::None,
        seq: c.snd,
        ack: Some(c.rcv),
        window: 65535,
        payload: &[],
    }));
    c
}

#[test]
fn arp_is_answered_for_the_gateway_and_dns_only() {
    let mut st = stack(false, no_dns());
    let arp = arp_request;
    for (target, answered) in [
        (config::GATEWAY_V4, true),
        (config::DNS_V4, true),
        (Ipv4Addr::new(10, 0, 2, 7), false),
    ] {
        st.link().outbox.clear();
        st.inject(&arp(target));
        let replies: Vec<_> = st.link().outbox.drain(..).collect();
        assert_eq!(!replies.is_empty(), answered, "ARP for {target}");
        if answered {
            let e = EthernetFrame::new_checked(&replies[0][..]).unwrap();
            let a = ArpRepr::parse(&ArpPacket::new_checked(e.payload()).unwrap()).unwrap();
            match a {
                ArpRepr::EthernetIpv4 {
                    operation,
                    source_hardware_addr,
                    source_protocol_addr,
                    ..
                } => {
                    assert_eq!(operation, ArpOperation::Reply);
                    assert_eq!(source_hardware_addr, GW_MAC);
                    assert_eq!(source_protocol_addr, target);
                }
                _ => unreachable!(),
            }
        }
    }
}

#[test]
fn tcp_handshake_data_both_ways_and_half_close() {
    let (listener, hport) = host_listener();
    let mut st = stack(true, no_dns());
    let c = handshake(&mut st, (config::GATEWAY_V4, hport), 40000);
    let (mut host, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), Ipv4Addr::LOCALHOST);
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    // Container → host.
    st.inject(&tcp(Seg {
        src_port: c.port,
        dst: c.dst,
        control: TcpControl::Psh,
        seq: c.snd,
        ack: Some(c.rcv),
        window: 65535,
        payload: b"hello",
    }));
    let mut buf = [0u8; 5];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    let snd = c.snd + 5;

    // Host → container.
    host.write_all(b"world").unwrap();
    let data = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(5), |o| {
        !o.payload.is_empty()
    });
    assert_eq!(data.payload, b"world");
    assert_eq!(data.seq, c.rcv);
    assert_eq!(
        data.ack,
        Some(snd),
        "the stack acknowledges the container's data"
    );
    let rcv = c.rcv + 5;

    // Container half-closes: the host reads EOF and can still send.
    st.inject(&tcp(Seg {
        src_port: c.port,
        dst: c.dst,
        control: TcpControl::Fin,
        seq: snd,
        ack: Some(rcv),
        window: 65535,
        payload: &[],
    }));
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    host.write_all(b"late").unwrap();
    let late = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(5), |o| {
        !o.payload.is_empty()
    });
    assert_eq!(late.payload, b"late");
    assert_eq!(late.ack, Some(snd + 1), "FIN acknowledged");

    // Host closes: the container gets FIN after the data.
    drop(host);
    let fin = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(5), |o| o.fin);
    assert_eq!(fin.seq, rcv + 4);
    st.inject(&tcp(Seg {
        src_port: c.port,
        dst: c.dst,
        control: TcpControl::None,
        seq: snd + 1,
        ack: Some(rcv + 5),
        window: 65535,
        payload: &[],
    }));
    st.turn(Some(Duration::from_millis(10))).unwrap();
    assert_eq!(st.stats().tcp_flows, 0, "the finished connection is gone");
}

#[test]
fn connection_refused_becomes_rst() {
    let (listener, port) = host_listener();
    drop(listener); // nothing listens there now
    let mut st = stack(true, no_dns());
    let dst = (config::GATEWAY_V4, port);
    st.inject(&tcp(Seg {
        src_port: 40001,
        dst,
        control: TcpControl::Syn,
        seq: 5,
        ack: None,
        window: 65535,
        payload: &[],
    }));
    let rst = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(5), |o| o.rst);
    assert_eq!(
        rst.ack,
        Some(6),
        "the RST acknowledges the SYN, so the container accepts it"
    );
    assert!(!rst.syn);
    st.turn(Some(Duration::from_millis(1))).unwrap();
    assert_eq!(st.stats().tcp_flows, 0);
}

#[test]
fn host_loopback_is_refused_by_default_and_virtual_addresses_do_not_exist() {
    let (listener, port) = host_listener();
    listener.set_nonblocking(true).unwrap();
    let mut st = stack(false, no_dns());
    for dst in [
        config::GATEWAY_V4,
        Ipv4Addr::new(10, 0, 2, 50),
        config::DNS_V4,
    ] {
        let syn = tcp(Seg {
            src_port: 40002,
            dst: (dst, port),
            control: TcpControl::Syn,
            seq: 5,
            ack: None,
            window: 65535,
            payload: &[],
        });
        assert_eq!(st.inject(&syn), Verdict::TcpRefused, "{dst}");
        let rst = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(1), |o| o.rst);
        assert_eq!(rst.src, (dst, port));
    }
    assert!(
        listener.accept().is_err(),
        "no connection reached the host's loopback"
    );
}

#[test]
fn container_rst_resets_the_host_connection() {
    let (listener, hport) = host_listener();
    let mut st = stack(true, no_dns());
    let c = handshake(&mut st, (config::GATEWAY_V4, hport), 40003);
    let (mut host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    st.inject(&tcp(Seg {
        src_port: c.port,
        dst: c.dst,
        control: TcpControl::Rst,
        seq: c.snd,
        ack: Some(c.rcv),
        window: 0,
        payload: &[],
    }));
    st.turn(Some(Duration::from_millis(1))).unwrap();
    let mut buf = [0u8; 1];
    let err = host.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[test]
fn host_rst_becomes_rst_to_the_container() {
    let (listener, hport) = host_listener();
    let mut st = stack(true, no_dns());
    let c = handshake(&mut st, (config::GATEWAY_V4, hport), 40004);
    let (host, _) = listener.accept().unwrap();
    // SO_LINGER 0: close sends RST.
    let s2 = socket_with_linger_zero(host);
    drop(s2);
    let rst = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(5), |o| o.rst);
    assert_eq!(rst.dst_port, c.port);
}

fn socket_with_linger_zero(s: TcpStream) -> TcpStream {
    use std::os::fd::AsRawFd;
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid linger struct on an open socket.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
    s
}

#[test]
fn sending_respects_the_containers_window_and_retransmits() {
    let (listener, hport) = host_listener();
    let mut st = stack(true, no_dns());
    let dst = (config::GATEWAY_V4, hport);
    let port = 40005;
    st.inject(&tcp(Seg {
        src_port: port,
        dst,
        control: TcpControl::Syn,
        seq: 1000,
        ack: None,
        window: 65535,
        payload: &[],
    }));
    let synack = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(5), |o| o.syn);
    let rcv = synack.seq + 1;
    // The container's window: 1000 bytes.
    st.inject(&tcp(Seg {
        src_port: port,
        dst,
        control: TcpControl::None,
        seq: 1001,
        ack: Some(rcv),
        window: 1000,
        payload: &[],
    }));
    let (mut host, _) = listener.accept().unwrap();
    host.write_all(&[7u8; 5000]).unwrap();
    let first = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(5), |o| {
        !o.payload.is_empty()
    });
    assert_eq!(first.seq, rcv);
    // Everything sent before an ACK fits the 1000-byte window.
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut sent = first.payload.len();
    while Instant::now() < deadline {
        st.turn(Some(Duration::from_millis(5))).unwrap();
        while let Some(f) = st.link().outbox.pop_front() {
            if let Some(o) = parse_tcp(&f) {
                if o.seq == rcv {
                    continue; // a retransmission of the first segment
                }
                sent = sent.max((o.seq - rcv) as usize + o.payload.len());
            }
        }
    }
    assert!(
        sent <= 1000,
        "the stack sent {sent} bytes into a 1000-byte window"
    );
    // No ACK: the first segment comes again after the retransmission timeout.
    let again = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(5), |o| {
        o.seq == rcv && !o.payload.is_empty()
    });
    assert_eq!(again.payload, first.payload);
    // ACK everything sent so far with a large window: the rest flows.
    st.inject(&tcp(Seg {
        src_port: port,
        dst,
        control: TcpControl::None,
        seq: 1001,
        ack: Some(rcv + 1000),
        window: 65535,
        payload: &[],
    }));
    let next = await_tcp(&mut st, &mut Vec::new(), Duration::from_secs(5), |o| {
        o.seq == rcv + 1000
    });
    assert!(!next.payload.is_empty());
    assert!(next.window > 0);
}

fn udp_frame(dst: (Ipv4Addr, u16), src_port: u16, payload: &[u8]) -> Vec<u8> {
    ipv4(IpProtocol::Udp, dst.0, 8 + payload.len(), |p| {
        let repr = UdpRepr {
            src_port,
            dst_port: dst.1,
        };
        let mut pkt = UdpPacket::new_unchecked(p);
        repr.emit(
            &mut pkt,
            &IpAddress::Ipv4(config::CONTAINER_V4),
            &IpAddress::Ipv4(dst.0),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
    })
}

/// The first UDP datagram the stack sends to the container: (source, dest port, payload).
fn await_udp(st: &mut Stack<MemLink>) -> ((Ipv4Addr, u16), u16, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while let Some(f) = st.link().outbox.pop_front() {
            let e = EthernetFrame::new_checked(&f[..]).unwrap();
            let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
            assert!(ip.verify_checksum());
            if ip.next_header() == IpProtocol::Udp {
                let u = UdpPacket::new_checked(ip.payload()).unwrap();
                assert!(u.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
                assert_eq!(ip.dst_addr(), config::CONTAINER_V4);
                return (
                    (ip.src_addr(), u.src_port()),
                    u.dst_port(),
                    u.payload().to_vec(),
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "no UDP datagram for the container"
        );
        st.turn(Some(Duration::from_millis(10))).unwrap();
    }
}

#[test]
fn udp_echo_through_the_host() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    let mut st = stack(true, no_dns());
    assert_eq!(
        st.inject(&udp_frame((config::GATEWAY_V4, port), 5000, b"ping")),
        Verdict::Udp
    );
    let mut buf = [0u8; 64];
    echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, from) = echo.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    echo.send_to(b"pong", from).unwrap();
    let (src, dport, payload) = await_udp(&mut st);
    assert_eq!(
        src,
        (config::GATEWAY_V4, port),
        "the reply comes from the address the container used"
    );
    assert_eq!(dport, 5000);
    assert_eq!(payload, b"pong");
    assert_eq!(st.stats().udp_flows, 1);
}

#[test]
fn dns_queries_go_to_the_configured_resolver() {
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    resolver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Host loopback stays closed: the resolver is reachable anyway, as the DNS service.
    let mut st = stack(false, resolver.local_addr().unwrap());
    let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00";
    st.inject(&udp_frame((config::DNS_V4, 53), 33333, query));
    let mut buf = [0u8; 512];
    let (n, from) = resolver.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], query);
    resolver.send_to(b"\x12\x34\x81\x80answer", from).unwrap();
    let (src, dport, payload) = await_udp(&mut st);
    assert_eq!(src, (config::DNS_V4, 53));
    assert_eq!(dport, 33333);
    assert_eq!(payload, b"\x12\x34\x81\x80answer");
    // Other ports of the DNS address, and UDP to the closed gateway, go nowhere.
    assert_eq!(
        st.inject(&udp_frame((config::DNS_V4, 54), 33333, b"x")),
        Verdict::Dropped
    );
    assert_eq!(
        st.inject(&udp_frame((config::GATEWAY_V4, 53), 33333, b"x")),
        Verdict::Dropped
    );
}

fn icmp_echo(dst: Ipv4Addr) -> Vec<u8> {
    let data = b"nook-ping";
    let repr = Icmpv4Repr::EchoRequest {
        ident: 7,
        seq_no: 1,
        data,
    };
    ipv4(IpProtocol::Icmp, dst, repr.buffer_len(), |p| {
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(p),
            &ChecksumCapabilities::default(),
        );
    })
}

#[test]
fn icmp_echo_is_answered_for_the_gateway_only() {
    let mut st = stack(false, no_dns());
    assert_eq!(st.inject(&icmp_echo(config::GATEWAY_V4)), Verdict::Stack);
    let reply = st.link().outbox.pop_front().expect("an echo reply");
    let e = EthernetFrame::new_checked(&reply[..]).unwrap();
    let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
    assert_eq!(ip.src_addr(), config::GATEWAY_V4);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), Icmpv4Message::EchoReply);
    // TEST-NET-1 under the sandboxed policy: refused before any socket exists, and
    // answered "host unreachable" from the gateway rather than left to time out.
    assert_eq!(
        st.inject(&icmp_echo(Ipv4Addr::new(192, 0, 2, 1))),
        Verdict::Echo
    );
    let (code, quoted) = await_unreachable(&mut st);
    assert_eq!(code, 1, "host unreachable");
    assert_eq!(quoted, (Ipv4Addr::new(192, 0, 2, 1), 7, 1));
    assert!(
        st.link().outbox.is_empty(),
        "no fake echo reply for an address nobody checked"
    );
    assert_eq!(st.stats().echo_flows, 0);
}

/// The ICMP unreachable the stack sent the container: its code, and the destination,
/// echo identifier and sequence number of the request it quotes.
fn await_unreachable(st: &mut Stack<MemLink>) -> (u8, (Ipv4Addr, u16, u16)) {
    let f = st.link().outbox.pop_front().expect("an ICMP unreachable");
    let e = EthernetFrame::new_checked(&f[..]).unwrap();
    let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (config::GATEWAY_V4, config::CONTAINER_V4)
    );
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(), "bad ICMP checksum");
    assert_eq!(icmp.msg_type(), Icmpv4Message::DstUnreachable);
    let quoted = Ipv4Packet::new_unchecked(&ip.payload()[8..]);
    assert_eq!(quoted.src_addr(), config::CONTAINER_V4);
    let echo = &quoted.into_inner()[20..28];
    (
        icmp.msg_code(),
        (
            Ipv4Packet::new_unchecked(&ip.payload()[8..]).dst_addr(),
            u16::from_be_bytes([echo[4], echo[5]]),
            u16::from_be_bytes([echo[6], echo[7]]),
        ),
    )
}

/// A stack whose ping flows go to a socket the test holds, playing the host kernel's
/// ICMP socket: it gets the request as the stack hands it over and answers with a reply
/// carrying its own identifier, as the kernel's would. The targets asked for are kept.
fn stack_with_fake_icmp() -> (
    Stack<MemLink>,
    UdpSocket,
    std::sync::Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>,
) {
    let kernel = UdpSocket::bind("127.0.0.1:0").unwrap();
    kernel
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let at = kernel.local_addr().unwrap();
    let cfg = Config {
        mtu: 1500,
        ..Config::default()
    };
    // Outbound on, so the policy lets 192.0.2.1 out; but only the fake socket is opened.
    let mut st = Stack::new(MemLink::default(), &cfg, Policy::new(&cfg, no_dns())).unwrap();
    let targets = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = targets.clone();
    st.set_echo_opener(Box::new(move |target| {
        seen.lock().unwrap().push(target);
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(at)?;
        s.set_nonblocking(true)?;
        Ok(std::os::fd::OwnedFd::from(s))
    }));
    st.inject(&arp_request(config::GATEWAY_V4));
    st.link().outbox.clear();
    (st, kernel, targets)
}

#[test]
fn icmp_echo_to_the_outside_goes_through_a_host_icmp_socket() {
    let (mut st, kernel, targets) = stack_with_fake_icmp();
    let far = Ipv4Addr::new(192, 0, 2, 1);
    assert_eq!(st.inject(&icmp_echo(far)), Verdict::Echo);
    assert_eq!(*targets.lock().unwrap(), vec![std::net::IpAddr::from(far)]);
    let mut buf = [0u8; 256];
    let (n, from) = kernel.recv_from(&mut buf).unwrap();
    let req = &buf[..n];
    assert_eq!(req[0], 8, "an echo request goes to the ICMP socket");
    assert_eq!(&req[4..8], &[0, 7, 0, 1], "identifier and sequence as sent");
    assert_eq!(&req[8..], b"nook-ping");
    // The host kernel's reply: its own identifier 0x4242, a checksum of its own.
    let mut reply = req.to_vec();
    reply[0] = 0;
    reply[2..4].copy_from_slice(&[0xde, 0xad]);
    reply[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    kernel.send_to(&reply, from).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let frame = loop {
        if let Some(f) = st.link().outbox.pop_front() {
            break f;
        }
        assert!(Instant::now() < deadline, "no echo reply for the container");
        st.turn(Some(Duration::from_millis(10))).unwrap();
    };
    let e = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!(e.dst_addr(), CTR_MAC);
    let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (far, config::CONTAINER_V4));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(), "the reply's checksum is redone");
    let repr = Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap();
    assert_eq!(
        repr,
        Icmpv4Repr::EchoReply {
            ident: 7,
            seq_no: 1,
            data: b"nook-ping"
        },
        "the container gets its own identifier back"
    );
    assert_eq!(st.stats().echo_flows, 1);
    // The next request of the same ping reuses the flow.
    assert_eq!(st.inject(&icmp_echo(far)), Verdict::Echo);
    kernel.recv_from(&mut buf).unwrap();
    assert_eq!(targets.lock().unwrap().len(), 1);
}

#[test]
fn icmp_echo_without_an_icmp_socket_is_answered_prohibited() {
    let (mut st, _kernel, _) = stack_with_fake_icmp();
    st.set_echo_opener(Box::new(|_| Err(std::io::Error::from_raw_os_error(13))));
    let far = Ipv4Addr::new(192, 0, 2, 1);
    for _ in 0..2 {
        assert_eq!(st.inject(&icmp_echo(far)), Verdict::Echo);
        let (code, quoted) = await_unreachable(&mut st);
        assert_eq!(code, 13, "communication administratively prohibited");
        assert_eq!(quoted, (far, 7, 1));
    }
    assert_eq!(st.stats().unreachable, 2);
    assert_eq!(st.stats().echo_flows, 0);
}

/// The IPv4 fragments of a UDP datagram from the container, `chunk` payload bytes each.
fn udp_fragments(
    dst: (Ipv4Addr, u16),
    src_port: u16,
    payload: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    let whole = udp_frame(dst, src_port, payload);
    let l4 = &whole[14 + 20..];
    l4.chunks(chunk)
        .enumerate()
        .map(|(i, piece)| {
            let mut f = ipv4(IpProtocol::Udp, dst.0, piece.len(), |p| {
                p.copy_from_slice(piece)
            });
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            ip.set_ident(0x1234);
            ip.set_dont_frag(false);
            ip.set_more_frags((i + 1) * chunk < l4.len());
            ip.set_frag_offset((i * chunk) as u16);
            ip.fill_checksum();
            f
        })
        .collect()
}

#[test]
fn udp_datagrams_larger_than_the_mtu_travel_as_fragments_both_ways() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = echo.local_addr().unwrap().port();
    let mut st = stack(true, no_dns());
    let data: Vec<u8> = (0..30_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let frags = udp_fragments((config::GATEWAY_V4, port), 5001, &data, 1480);
    assert!(frags.len() > 20);
    // Out of order: the last fragment first.
    let (last, rest) = frags.split_last().unwrap();
    assert_eq!(st.inject(last), Verdict::Fragment);
    for f in &rest[..rest.len() - 1] {
        assert_eq!(st.inject(f), Verdict::Fragment);
    }
    assert_eq!(st.inject(&rest[rest.len() - 1]), Verdict::Udp);
    let mut buf = vec![0u8; 65536];
    let (n, from) = echo.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &data[..], "the host gets the datagram whole");

    // And back: 30000 bytes from the host reach the container as fragments of <= MTU.
    echo.send_to(&data, from).unwrap();
    let mut pieces: Vec<(usize, bool, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pieces.iter().any(|p| !p.1) {
        assert!(Instant::now() < deadline, "no fragments for the container");
        st.turn(Some(Duration::from_millis(10))).unwrap();
        while let Some(f) = st.link().outbox.pop_front() {
            assert!(f.len() <= 14 + 1500, "a frame over the MTU: {}", f.len());
            let e = EthernetFrame::new_checked(&f[..]).unwrap();
            let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.next_header(), IpProtocol::Udp);
            assert_eq!(
                (ip.src_addr(), ip.dst_addr()),
                (config::GATEWAY_V4, config::CONTAINER_V4)
            );
            pieces.push((
                ip.frag_offset() as usize,
                ip.more_frags(),
                ip.payload().to_vec(),
            ));
        }
    }
    pieces.sort_by_key(|p| p.0);
    let mut l4 = Vec::new();
    for (off, _, p) in &pieces {
        assert_eq!(*off, l4.len(), "fragments in sequence, no gap");
        l4.extend_from_slice(p);
    }
    let u = UdpPacket::new_checked(&l4[..]).unwrap();
    assert!(
        u.verify_checksum(&config::GATEWAY_V4.into(), &config::CONTAINER_V4.into()),
        "the UDP checksum covers the whole datagram"
    );
    assert_eq!((u.src_port(), u.dst_port()), (port, 5001));
    assert_eq!(u.payload(), &data[..]);
    assert_eq!(st.stats().fragments_out as usize, pieces.len());
}

#[test]
fn many_connections_at_once() {
    let (listener, hport) = host_listener();
    let mut st = stack(true, no_dns());
    let dst = (config::GATEWAY_V4, hport);
    let mut conns = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..200u16 {
        conns.push(handshake(&mut st, dst, 20000 + i));
        // Accept as they come: the host listener's backlog is 128.
        hosts.push(listener.accept().unwrap().0);
    }
    for c in &conns {
        let msg = c.port.to_be_bytes();
        st.inject(&tcp(Seg {
            src_port: c.port,
            dst: c.dst,
            control: TcpControl::Psh,
            seq: c.snd,
            ack: Some(c.rcv),
            window: 65535,
            payload: &msg,
        }));
    }
    let mut ports: Vec<u16> = hosts
        .iter_mut()
        .map(|h| {
            h.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 2];
            h.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b)
        })
        .collect();
    ports.sort_unstable();
    assert_eq!(
        ports,
        (20000..20200).collect::<Vec<_>>(),
        "each connection kept its own data"
    );
    assert_eq!(st.stats().tcp_flows, 200);
}

#[test]
fn garbage_frames_do_not_disturb_the_stack() {
    let mut st = stack(false, no_dns());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let template = tcp(Seg {
        src_port: 1,
        dst: (Ipv4Addr::new(192, 0, 2, 1), 9),
        control: TcpControl::Psh,
        seq: 1,
        ack: Some(1),
        window: 1,
        payload: b"abcdef",
    });
    for _ in 0..20000 {
        let len = (next() % 120) as usize;
        let mut f: Vec<u8> = if next() % 2 == 0 {
            template.clone()
        } else {
            (0..len).map(|_| next() as u8).collect()
        };
        for _ in 0..(next() % 6) {
            if !f.is_empty() {
                let i = (next() as usize) % f.len();
                f[i] = next() as u8;
            }
        }
        f.truncate(len.max(1));
        let _ = st.inject(&f);
    }
    // The sandboxed policy refuses every destination but the closed loopback.
    assert_eq!(st.stats().udp_flows, 0);
}

fn neighbor_solicit(src: Ipv6Address, target: Ipv6Address) -> Vec<u8> {
    let repr = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(CTR_MAC)),
    });
    let t = target.octets();
    let dst = Ipv6Address::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | t[13] as u16,
        u16::from_be_bytes([t[14], t[15]]),
    );
    let len = repr.buffer_len();
    eth(EthernetProtocol::Ipv6, 40 + len, |p| {
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: len,
            hop_limit: 255,
        };
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut *p));
        repr.emit(
            &src,
            &dst,
            &mut Icmpv6Packet::new_unchecked(&mut p[40..]),
            &ChecksumCapabilities::default(),
        );
    })
}

#[test]
fn ndp_is_answered_for_the_gateway_only_and_dad_probes_go_unanswered() {
    let mut st = stack(false, no_dns());
    assert_eq!(
        st.inject(&neighbor_solicit(config::CONTAINER_V6, config::GATEWAY_V6)),
        Verdict::Stack
    );
    let reply = st
        .link()
        .outbox
        .pop_front()
        .expect("a neighbour advertisement");
    let e = EthernetFrame::new_checked(&reply[..]).unwrap();
    let ip = Ipv6Packet::new_checked(e.payload()).unwrap();
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), Icmpv6Message::NeighborAdvert);
    assert_eq!(icmp.target_addr(), config::GATEWAY_V6);
    // The container's own duplicate-address probe (from ::) and other addresses: silence.
    for (src, target) in [
        (Ipv6Address::UNSPECIFIED, config::CONTAINER_V6),
        (
            config::CONTAINER_V6,
            Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 9),
        ),
    ] {
        assert_eq!(st.inject(&neighbor_solicit(src, target)), Verdict::Dropped);
        assert!(st.link().outbox.is_empty());
    }
}
