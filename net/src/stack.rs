//! The netstack: container frames in, host sockets out, and back.
//!
//! ```text
//!  tap ──read──► rx buffer ──classify──┬─ ARP/NDP for the gateway, ICMP to it ─► smoltcp
//!                                      ├─ TCP ─► flow table ─► smoltcp socket (any-IP)
//!                                      │          ⇅ recv()/send() closures
//!                                      │        host TCP socket (write/read in place)
//!                                      └─ UDP ─► flow table ─► host UDP socket (send)
//!  tap ◄─write── tx buffer ◄── smoltcp egress  /  UDP replies built in place (frame.rs)
//! ```
//!
//! TCP: the first SYN of a new 4-tuple creates a smoltcp socket listening on exactly the
//! destination the container asked for (any-IP mode lets smoltcp own every address),
//! with its SYN-ACK paused, and starts a nonblocking connect of a host socket to the
//! translated destination (policy.rs). Connected: the SYN-ACK goes out, and the
//! container's handshake completes against an already-open host connection. Refused or
//! unreachable: the smoltcp socket is aborted, so the container sees an RST, as with a
//! closed port. Each socket listens only for its own SYN, so two flows never mix.
//!
//! Data never sits in an intermediate buffer: container → host is `recv` on the smoltcp
//! socket with a closure that `send`s its ring buffer's slice to the host socket;
//! host → container is `send` with a closure that `read`s the host socket into the
//! ring's free slice. A full ring stops the reads (the host kernel's buffer, then the
//! far sender, back off); a host socket that would block stops the draining (smoltcp's
//! advertised window shrinks and the container's sender backs off). FIN becomes
//! shutdown(SHUT_WR) and back; RST becomes SO_LINGER 0 and back.
//!
//! UDP bypasses smoltcp: a flow per (container endpoint, destination) owns a connected
//! host socket; replies are received straight into the transmit buffer after room for
//! the headers, which are then written in front. Idle flows expire (30 s, 10 s for DNS).
//! DNS to 10.0.2.3:53 is just a UDP or TCP flow whose host end is the host's resolver.
//!
//! Per frame: one read(2), no allocation (one receive and one transmit buffer, reused);
//! per wakeup the tap is drained (up to a bound) before sockets are serviced and
//! smoltcp's egress runs once, so ACKs and window updates are batched.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress,
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpAddress, IpCidr, IpEndpoint,
    IpListenEndpoint, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

use crate::config::{self, Config};
use crate::frame;
use crate::link::{Link, VNET_HDR_LEN};
use crate::policy::Policy;
use crate::sys::{self, Epoll, Slab};

/// smoltcp receive and transmit ring per TCP connection: the window the container gets
/// (with window scaling) and the most the netstack holds for one connection each way.
pub const TCP_RX_BUFFER: usize = 512 * 1024;
pub const TCP_TX_BUFFER: usize = 512 * 1024;
/// Concurrent flows before new ones are refused (each costs a host descriptor).
pub const MAX_TCP_FLOWS: usize = 8192;
pub const MAX_UDP_FLOWS: usize = 4096;
const UDP_IDLE: Duration = Duration::from_secs(30);
const DNS_IDLE: Duration = Duration::from_secs(10);
/// Frames taken from the tap per wakeup before the sockets get their turn.
const RX_BATCH: usize = 512;

/// Epoll tokens: the low two bits say what, the rest which flow.
pub const TOKEN_LINK: u64 = 0;
pub const TOKEN_STOP: u64 = 1;
const KIND_TCP: u64 = 2;
const KIND_UDP: u64 = 3;

fn token(kind: u64, index: usize) -> u64 {
    (index as u64) << 2 | kind
}

/// A flow as the container sees it: its endpoint and the destination it addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub ctr: IpEndpoint,
    pub dst: IpEndpoint,
}

struct TcpFlow {
    key: FlowKey,
    fd: OwnedFd,
    handle: SocketHandle,
    connecting: bool,
    /// Edge-triggered readiness of the host socket, as last reported and not yet used up.
    readable: bool,
    writable: bool,
    /// The host sent FIN: the container's side was closed after the data.
    host_eof: bool,
    /// The container sent FIN: the host socket was shut for writing.
    shut_wr: bool,
    /// The host socket failed: the container was sent an RST.
    reset: bool,
}

struct UdpFlow {
    key: FlowKey,
    fd: OwnedFd,
    last: StdInstant,
    idle: Duration,
}

/// Counters, for tests and `nook` diagnostics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub frames_in: u64,
    pub frames_out: u64,
    pub tcp_flows: usize,
    pub udp_flows: usize,
    pub refused: u64,
    pub dropped: u64,
}

/// The smoltcp device: the frame just read from the link, and the link for writing.
pub struct Port<L: Link> {
    pub link: L,
    rx: Vec<u8>,
    rx_len: usize,
    rx_pending: bool,
    tx: Vec<u8>,
    vnet: bool,
    offload: bool,
    mtu: usize,
    frames_out: u64,
}

impl<L: Link> Port<L> {
    fn hdr(&self) -> usize {
        if self.vnet {
            VNET_HDR_LEN
        } else {
            0
        }
    }
}

pub struct Rx<'a> {
    frame: &'a [u8],
}

pub struct Tx<'a, L: Link> {
    link: &'a mut L,
    buf: &'a mut Vec<u8>,
    vnet: bool,
    offload: bool,
    frames_out: &'a mut u64,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl<L: Link> phy::TxToken for Tx<'_, L> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let hdr = if self.vnet { VNET_HDR_LEN } else { 0 };
        if self.buf.len() < hdr + len {
            self.buf.resize(hdr + len, 0);
        }
        let buf = &mut self.buf[..hdr + len];
        let r = f(&mut buf[hdr..]);
        if self.vnet {
            frame::fill_vnet_header(buf, self.offload);
        }
        // A failed write is a lost frame; TCP recovers, and the loop notices a dead tap.
        let _ = self.link.send(buf);
        *self.frames_out += 1;
        r
    }
}

impl<L: Link> phy::Device for Port<L> {
    type RxToken<'a>
        = Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a, L>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_, L>)> {
        if !self.rx_pending {
            return None;
        }
        self.rx_pending = false;
        let hdr = self.hdr();
        Some((
            Rx {
                frame: &self.rx[hdr..self.rx_len],
            },
            Tx {
                link: &mut self.link,
                buf: &mut self.tx,
                vnet: self.vnet,
                offload: self.offload,
                frames_out: &mut self.frames_out,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_, L>> {
        Some(Tx {
            link: &mut self.link,
            buf: &mut self.tx,
            vnet: self.vnet,
            offload: self.offload,
            frames_out: &mut self.frames_out,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + frame::ETH_LEN;
        caps.max_burst_size = None;
        let mut checksum = ChecksumCapabilities::default();
        if self.offload {
            // The container's kernel neither computes ours nor expects us to verify its.
            checksum.tcp = Checksum::None;
        }
        caps.checksum = checksum;
        caps
    }
}

/// What happened to a frame from the container (for tests and the fuzz target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Stack,
    TcpNew,
    TcpRefused,
    Udp,
    Dropped,
}

pub struct Stack<L: Link> {
    port: Port<L>,
    iface: Interface,
    sockets: SocketSet<'static>,
    pub epoll: Epoll,
    policy: Policy,
    tcp: Slab<TcpFlow>,
    tcp_index: HashMap<FlowKey, usize>,
    udp: Slab<UdpFlow>,
    udp_index: HashMap<FlowKey, usize>,
    ctr_mac: EthernetAddress,
    epoch: StdInstant,
    next_expiry: StdInstant,
    keys: Vec<usize>,
    events: Vec<libc::epoll_event>,
    link_backlog: bool,
    stats: Stats,
}

impl<L: Link> Stack<L> {
    pub fn new(link: L, cfg: &Config, policy: Policy) -> io::Result<Stack<L>> {
        let vnet = link.vnet_hdr();
        let mtu = cfg.mtu as usize;
        let buf_len = VNET_HDR_LEN + frame::ETH_LEN + mtu;
        let mut port = Port {
            link,
            rx: vec![0; buf_len],
            rx_len: 0,
            rx_pending: false,
            tx: vec![0; buf_len],
            vnet,
            offload: vnet,
            mtu,
            frames_out: 0,
        };
        let mut ic = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(
            config::GATEWAY_MAC,
        )));
        ic.random_seed = random_seed();
        let epoch = StdInstant::now();
        let mut iface = Interface::new(ic, &mut port, Instant::ZERO);
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(
                IpAddress::Ipv4(config::GATEWAY_V4),
                config::PREFIX_V4,
            ));
            let _ = addrs.push(IpCidr::new(
                IpAddress::Ipv6(config::GATEWAY_V6),
                config::PREFIX_V6,
            ));
        });
        let epoll = Epoll::new()?;
        if let Some(fd) = port.link.fd() {
            epoll.add(fd, sys::IN | sys::ET, TOKEN_LINK)?;
        }
        Ok(Stack {
            port,
            iface,
            sockets: SocketSet::new(Vec::new()),
            epoll,
            policy,
            tcp: Slab::default(),
            tcp_index: HashMap::new(),
            udp: Slab::default(),
            udp_index: HashMap::new(),
            ctr_mac: EthernetAddress(config::CONTAINER_MAC),
            epoch,
            next_expiry: epoch + Duration::from_secs(1),
            keys: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            link_backlog: false,
            stats: Stats::default(),
        })
    }

    pub fn link(&mut self) -> &mut L {
        &mut self.port.link
    }

    pub fn stats(&self) -> Stats {
        Stats {
            frames_out: self.port.frames_out,
            tcp_flows: self.tcp.len(),
            udp_flows: self.udp.len(),
            ..self.stats
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// One turn of the event loop: wait up to `max_wait` (None: as long as nothing is
    /// due), handle what is ready, flush. Returns false when the stop token fired.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<bool> {
        let timeout = self.timeout(max_wait);
        let mut events = std::mem::take(&mut self.events);
        let n = self.epoll.wait(&mut events, timeout)?;
        let mut keep_going = true;
        let mut link_ready = self.link_backlog || self.port.link.fd().is_none();
        for ev in &events[..n] {
            let (tok, bits) = (ev.u64, ev.events);
            match tok & 3 {
                _ if tok == TOKEN_LINK => link_ready = true,
                _ if tok == TOKEN_STOP => keep_going = false,
                KIND_TCP => self.tcp_event((tok >> 2) as usize, bits),
                KIND_UDP => self.udp_readable((tok >> 2) as usize),
                _ => {}
            }
        }
        self.events = events;
        if link_ready {
            self.drain_link();
        }
        self.flush();
        self.expire();
        Ok(keep_going)
    }

    fn timeout(&mut self, max_wait: Option<Duration>) -> i32 {
        if self.link_backlog {
            return 0;
        }
        let now = self.now();
        let mut wait = self.iface.poll_delay(now, &self.sockets);
        if !self.udp.is_empty() || !self.tcp.is_empty() {
            let to_expiry = self
                .next_expiry
                .saturating_duration_since(StdInstant::now());
            let d = smoltcp::time::Duration::from_micros(to_expiry.as_micros() as u64);
            wait = Some(wait.map_or(d, |w| w.min(d)));
        }
        if let Some(m) = max_wait {
            let m = smoltcp::time::Duration::from_micros(m.as_micros() as u64);
            wait = Some(wait.map_or(m, |w| w.min(m)));
        }
        match wait {
            None => -1,
            // Round up: waking a millisecond early would spin.
            Some(d) => d.total_micros().div_ceil(1000).min(i32::MAX as u64) as i32,
        }
    }

    /// Reads frames until the link is empty (or the batch bound is hit).
    fn drain_link(&mut self) {
        self.link_backlog = false;
        for _ in 0..RX_BATCH {
            let n = match self.port.link.recv(&mut self.port.rx) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            self.port.rx_len = n;
            self.stats.frames_in += 1;
            self.on_frame();
        }
        self.link_backlog = true;
    }

    /// Pushes one frame (plain Ethernet, or with a virtio-net header when the link has
    /// them) through the stack as if the container had sent it.
    pub fn inject(&mut self, frame: &[u8]) -> Verdict {
        let n = frame.len().min(self.port.rx.len());
        self.port.rx[..n].copy_from_slice(&frame[..n]);
        self.port.rx_len = n;
        self.stats.frames_in += 1;
        let v = self.on_frame();
        self.flush();
        v
    }

    /// Classifies the frame in the receive buffer and acts on it.
    fn on_frame(&mut self) -> Verdict {
        let hdr = self.port.hdr();
        if self.port.rx_len < hdr {
            return self.drop_frame();
        }
        let frame = &self.port.rx[hdr..self.port.rx_len];
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return self.drop_frame();
        };
        let src_mac = eth.src_addr();
        if !src_mac.is_unicast() {
            return self.drop_frame();
        }
        self.ctr_mac = src_mac;
        let verdict = match eth.ethertype() {
            EthernetProtocol::Arp => classify_arp(eth.payload()),
            EthernetProtocol::Ipv4 => self.classify_ipv4(),
            EthernetProtocol::Ipv6 => self.classify_ipv6(),
            _ => Verdict::Dropped,
        };
        match verdict {
            Verdict::Stack => {
                self.feed_smoltcp();
                Verdict::Stack
            }
            Verdict::Dropped => self.drop_frame(),
            v => v,
        }
    }

    fn drop_frame(&mut self) -> Verdict {
        self.stats.dropped += 1;
        Verdict::Dropped
    }

    fn feed_smoltcp(&mut self) {
        self.port.rx_pending = true;
        let now = self.now();
        self.iface
            .poll_ingress_single(now, &mut self.port, &mut self.sockets);
        self.port.rx_pending = false;
    }

    fn classify_ipv4(&mut self) -> Verdict {
        let hdr = self.port.hdr();
        let frame = &self.port.rx[hdr + frame::ETH_LEN..self.port.rx_len];
        let Ok(ip) = Ipv4Packet::new_checked(frame) else {
            return Verdict::Dropped;
        };
        if ip.src_addr() != config::CONTAINER_V4 || ip.more_frags() || ip.frag_offset() != 0 {
            // Spoofed sources and fragments (the MTU makes them needless) go nowhere.
            return Verdict::Dropped;
        }
        let (src, dst) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        let payload_at = hdr + frame::ETH_LEN + ip.header_len() as usize;
        let payload_end = hdr + frame::ETH_LEN + ip.total_len() as usize;
        match ip.next_header() {
            IpProtocol::Tcp => self.classify_tcp(src, dst, payload_at, payload_end),
            IpProtocol::Udp => self.on_udp(src, dst, payload_at, payload_end),
            IpProtocol::Icmp => {
                let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
                    return Verdict::Dropped;
                };
                // smoltcp answers echo for every address in any-IP mode: let it answer
                // only for the addresses that exist here.
                match icmp.msg_type() {
                    Icmpv4Message::EchoRequest if self.policy.is_local(dst) => Verdict::Stack,
                    _ => Verdict::Dropped,
                }
            }
            _ => Verdict::Dropped,
        }
    }

    fn classify_ipv6(&mut self) -> Verdict {
        let hdr = self.port.hdr();
        let frame = &self.port.rx[hdr + frame::ETH_LEN..self.port.rx_len];
        let Ok(ip) = Ipv6Packet::new_checked(frame) else {
            return Verdict::Dropped;
        };
        let (src, dst) = (
            IpAddress::Ipv6(ip.src_addr()),
            IpAddress::Ipv6(ip.dst_addr()),
        );
        let payload_at = hdr + frame::ETH_LEN + frame::IPV6_LEN;
        let payload_end = payload_at + ip.payload_len() as usize;
        let from_container = ip.src_addr() == config::CONTAINER_V6;
        match ip.next_header() {
            IpProtocol::Tcp if from_container => {
                self.classify_tcp(src, dst, payload_at, payload_end)
            }
            IpProtocol::Udp if from_container => self.on_udp(src, dst, payload_at, payload_end),
            IpProtocol::Icmpv6 => {
                let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else {
                    return Verdict::Dropped;
                };
                match icmp.msg_type() {
                    // Neighbour solicitations only for the addresses that exist here (the
                    // container's own duplicate-address probes must go unanswered).
                    Icmpv6Message::NeighborSolicit => {
                        // Type, code, checksum, reserved, then the 16-byte target.
                        if ip.payload().len() < 24 {
                            return Verdict::Dropped;
                        }
                        match IpAddress::Ipv6(icmp.target_addr()) {
                            t if self.policy.is_local(t) => Verdict::Stack,
                            _ => Verdict::Dropped,
                        }
                    }
                    Icmpv6Message::NeighborAdvert => Verdict::Stack,
                    Icmpv6Message::EchoRequest if self.policy.is_local(dst) => Verdict::Stack,
                    _ => Verdict::Dropped,
                }
            }
            _ => Verdict::Dropped,
        }
    }

    fn classify_tcp(&mut self, src: IpAddress, dst: IpAddress, at: usize, end: usize) -> Verdict {
        if end > self.port.rx_len || at > end {
            return Verdict::Dropped;
        }
        let Ok(tcp) = TcpPacket::new_checked(&self.port.rx[at..end]) else {
            return Verdict::Dropped;
        };
        let key = FlowKey {
            ctr: IpEndpoint::new(src, tcp.src_port()),
            dst: IpEndpoint::new(dst, tcp.dst_port()),
        };
        if self.tcp_index.contains_key(&key) {
            return Verdict::Stack;
        }
        if !(tcp.syn() && !tcp.ack() && !tcp.rst()) || tcp.dst_port() == 0 {
            // No flow: smoltcp answers a stray segment with RST (and ignores a stray RST).
            return Verdict::Stack;
        }
        match self.open_tcp(key) {
            Ok(()) => Verdict::TcpNew,
            Err(_) => {
                // Nothing listens on the destination: smoltcp resets the connection.
                self.stats.refused += 1;
                self.feed_smoltcp();
                Verdict::TcpRefused
            }
        }
    }

    /// A new connection from the container: a host socket connecting to where the
    /// policy says, and a smoltcp socket that takes this SYN and holds its SYN-ACK.
    fn open_tcp(&mut self, key: FlowKey) -> io::Result<()> {
        if self.tcp.len() >= MAX_TCP_FLOWS {
            return Err(io::Error::other("too many connections"));
        }
        let target = self
            .policy
            .tcp_target(key.dst)
            .ok_or_else(|| io::Error::from(io::ErrorKind::PermissionDenied))?;
        let fd = sys::socket(sys::family(&target), libc::SOCK_STREAM, 0)?;
        let _ = sys::set_nodelay(fd.as_raw_fd());
        let connected = sys::connect(fd.as_raw_fd(), &target)?;
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_RX_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; TCP_TX_BUFFER]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.pause_synack(!connected);
        sock.listen(IpListenEndpoint {
            addr: Some(key.dst.addr),
            port: key.dst.port,
        })
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let handle = self.sockets.add(sock);
        let index = self.tcp.insert(TcpFlow {
            key,
            fd,
            handle,
            connecting: !connected,
            readable: false,
            writable: connected,
            host_eof: false,
            shut_wr: false,
            reset: false,
        });
        self.tcp_index.insert(key, index);
        let fd = self.tcp.get(index).map(|f| f.fd.as_raw_fd()).unwrap_or(-1);
        if let Err(e) = self.epoll.add(
            fd,
            sys::IN | sys::OUT | sys::RDHUP | sys::ET,
            token(KIND_TCP, index),
        ) {
            self.remove_tcp(index);
            return Err(e);
        }
        // The SYN is in the receive buffer: the new socket takes it now, before any other
        // frame could reach a socket listening on the same endpoint.
        self.feed_smoltcp();
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
        if sock.state() == tcp::State::Listen {
            // smoltcp did not take the SYN (malformed options): forget the flow.
            self.remove_tcp(index);
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        Ok(())
    }

    fn tcp_event(&mut self, index: usize, bits: u32) {
        let Some(flow) = self.tcp.get_mut(index) else {
            return;
        };
        if bits & (sys::IN | sys::RDHUP | sys::HUP | sys::ERR) != 0 {
            flow.readable = true;
        }
        if bits & (sys::OUT | sys::HUP | sys::ERR) != 0 {
            flow.writable = true;
        }
        if flow.connecting && flow.writable {
            flow.connecting = false;
            let ok = matches!(sys::take_error(flow.fd.as_raw_fd()), Ok(None));
            let sock = self.sockets.get_mut::<tcp::Socket>(flow.handle);
            if ok {
                sock.pause_synack(false);
            } else {
                // Refused or unreachable: RST to the container, as a closed port would.
                self.stats.refused += 1;
                flow.reset = true;
                sock.abort();
            }
        }
    }

    /// Moves data between each established connection and its host socket. Returns
    /// whether anything moved (then smoltcp has segments or window updates to send).
    fn service_tcp(&mut self) -> bool {
        let mut moved = false;
        let mut keys = std::mem::take(&mut self.keys);
        self.tcp.keys(&mut keys);
        for &i in &keys {
            let Some(flow) = self.tcp.get_mut(i) else {
                continue;
            };
            if flow.connecting || flow.reset {
                continue;
            }
            let sock = self.sockets.get_mut::<tcp::Socket>(flow.handle);
            moved |= pump_tcp(flow, sock);
        }
        self.keys = keys;
        moved
    }

    /// Removes connections whose smoltcp side has finished.
    fn reap_tcp(&mut self) {
        let mut keys = std::mem::take(&mut self.keys);
        self.tcp.keys(&mut keys);
        for &i in &keys {
            let Some(flow) = self.tcp.get(i) else {
                continue;
            };
            let state = self.sockets.get::<tcp::Socket>(flow.handle).state();
            match state {
                tcp::State::Closed | tcp::State::TimeWait => {
                    if !(flow.reset || flow.host_eof && flow.shut_wr) {
                        // The container reset the connection (or it timed out): the host
                        // peer sees a reset too, not an orderly end.
                        sys::set_linger_zero(flow.fd.as_raw_fd());
                    }
                    self.remove_tcp(i);
                }
                _ => {}
            }
        }
        self.keys = keys;
    }

    fn remove_tcp(&mut self, index: usize) {
        if let Some(flow) = self.tcp.remove(index) {
            self.epoll.delete(flow.fd.as_raw_fd());
            self.sockets.remove(flow.handle);
            self.tcp_index.remove(&flow.key);
        }
    }

    fn on_udp(&mut self, src: IpAddress, dst: IpAddress, at: usize, end: usize) -> Verdict {
        if end > self.port.rx_len || at > end {
            return Verdict::Dropped;
        }
        let Ok(udp) = UdpPacket::new_checked(&self.port.rx[at..end]) else {
            return Verdict::Dropped;
        };
        let key = FlowKey {
            ctr: IpEndpoint::new(src, udp.src_port()),
            dst: IpEndpoint::new(dst, udp.dst_port()),
        };
        let payload_at = at + 8;
        let payload_end = at + udp.len() as usize;
        if payload_end > end || payload_end < payload_at {
            return Verdict::Dropped;
        }
        let index = match self.udp_index.get(&key) {
            Some(&i) => i,
            None => match self.open_udp(key) {
                Some(i) => i,
                None => return Verdict::Dropped,
            },
        };
        let Some(flow) = self.udp.get_mut(index) else {
            return Verdict::Dropped;
        };
        flow.last = StdInstant::now();
        // A full socket buffer drops the datagram, as a congested link would.
        let _ = sys::send(flow.fd.as_raw_fd(), &self.port.rx[payload_at..payload_end]);
        Verdict::Udp
    }

    fn open_udp(&mut self, key: FlowKey) -> Option<usize> {
        let target = self.policy.udp_target(key.dst)?;
        if self.udp.len() >= MAX_UDP_FLOWS {
            self.evict_oldest_udp();
        }
        let fd = sys::socket(sys::family(&target), libc::SOCK_DGRAM, 0).ok()?;
        sys::connect(fd.as_raw_fd(), &target).ok()?;
        let idle = if key.dst.port == 53 {
            DNS_IDLE
        } else {
            UDP_IDLE
        };
        let raw = fd.as_raw_fd();
        let index = self.udp.insert(UdpFlow {
            key,
            fd,
            last: StdInstant::now(),
            idle,
        });
        self.udp_index.insert(key, index);
        if self
            .epoll
            .add(raw, sys::IN | sys::ET, token(KIND_UDP, index))
            .is_err()
        {
            self.remove_udp(index);
            return None;
        }
        Some(index)
    }

    fn evict_oldest_udp(&mut self) {
        if let Some(i) = self.udp.iter().min_by_key(|(_, f)| f.last).map(|(i, _)| i) {
            self.remove_udp(i);
        }
    }

    fn remove_udp(&mut self, index: usize) {
        if let Some(flow) = self.udp.remove(index) {
            self.epoll.delete(flow.fd.as_raw_fd());
            self.udp_index.remove(&flow.key);
        }
    }

    /// Datagrams from the host for the container: received in place, headers in front.
    fn udp_readable(&mut self, index: usize) {
        let Some(flow) = self.udp.get_mut(index) else {
            return;
        };
        let key = flow.key;
        let fd = flow.fd.as_raw_fd();
        flow.last = StdInstant::now();
        let v6 = matches!(key.ctr.addr, IpAddress::Ipv6(_));
        let at = frame::udp_payload_offset(self.port.vnet, v6);
        // What fits one frame (a larger datagram would need IP fragmentation: truncated).
        let ip_len = if v6 { frame::IPV6_LEN } else { frame::IPV4_LEN };
        let room = self.port.mtu - ip_len - frame::UDP_LEN;
        loop {
            let n = match sys::read(fd, &mut self.port.tx[at..at + room]) {
                Ok(Some(n)) => n,
                // ECONNREFUSED from an ICMP port-unreachable: nothing to deliver.
                Ok(None) | Err(_) => return,
            };
            let len = frame::emit_udp(
                &mut self.port.tx,
                self.port.vnet,
                self.port.offload,
                EthernetAddress(config::GATEWAY_MAC),
                self.ctr_mac,
                (key.dst.addr, key.dst.port),
                (key.ctr.addr, key.ctr.port),
                n,
            );
            let _ = self.port.link.send(&self.port.tx[..len]);
            self.port.frames_out += 1;
        }
    }

    fn expire(&mut self) {
        let now = StdInstant::now();
        if now < self.next_expiry {
            return;
        }
        self.next_expiry = now + Duration::from_secs(1);
        let expired: Vec<usize> = self
            .udp
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) > f.idle)
            .map(|(i, _)| i)
            .collect();
        for i in expired {
            self.remove_udp(i);
        }
    }

    /// Services sockets and runs smoltcp's egress until nothing moves.
    fn flush(&mut self) {
        for _ in 0..64 {
            let moved = self.service_tcp();
            let now = self.now();
            self.iface.poll(now, &mut self.port, &mut self.sockets);
            if !moved {
                break;
            }
        }
        self.reap_tcp();
    }
}

/// Copies what each side has for the other; returns whether any byte moved.
fn pump_tcp(flow: &mut TcpFlow, sock: &mut tcp::Socket) -> bool {
    let fd = flow.fd.as_raw_fd();
    let mut moved = false;
    // Container → host: straight from smoltcp's receive ring into the host socket.
    while !flow.shut_wr && flow.writable {
        let r = sock.recv(|buf| {
            if buf.is_empty() {
                return (0, Ok(0));
            }
            match sys::send(fd, buf) {
                Ok(Some(n)) => (n, Ok(n)),
                Ok(None) => (0, Err(io::Error::from(io::ErrorKind::WouldBlock))),
                Err(e) => (0, Err(e)),
            }
        });
        match r {
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => moved = true,
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.writable = false,
            Ok(Err(_)) => {
                // The host peer is gone: reset the container's connection.
                flow.reset = true;
                sock.abort();
                return true;
            }
            Err(tcp::RecvError::Finished) => {
                sys::shutdown_write(fd);
                flow.shut_wr = true;
                moved = true;
            }
            Err(tcp::RecvError::InvalidState) => break,
        }
    }
    // Host → container: straight from the host socket into smoltcp's transmit ring.
    while !flow.host_eof && flow.readable && sock.may_send() {
        let r = sock.send(|buf| {
            if buf.is_empty() {
                return (0, Ok(None));
            }
            match sys::read(fd, buf) {
                Ok(Some(n)) => (n, Ok(Some(n))),
                Ok(None) => (0, Err(io::Error::from(io::ErrorKind::WouldBlock))),
                Err(e) => (0, Err(e)),
            }
        });
        match r {
            // The ring is full: smoltcp sends, the container ACKs, then more is read.
            Ok(Ok(None)) => break,
            Ok(Ok(Some(0))) => {
                flow.host_eof = true;
                sock.close();
                moved = true;
            }
            Ok(Ok(Some(_))) => moved = true,
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.readable = false,
            Ok(Err(_)) => {
                flow.reset = true;
                sock.abort();
                return true;
            }
            Err(tcp::SendError::InvalidState) => break,
        }
    }
    moved
}

/// ARP requests are answered only for the addresses that exist here (any-IP would
/// answer for all, inviting the container to send to addresses nobody has).
fn classify_arp(payload: &[u8]) -> Verdict {
    let Ok(arp) = ArpPacket::new_checked(payload) else {
        return Verdict::Dropped;
    };
    if arp.operation() == ArpOperation::Request {
        let target = arp.target_protocol_addr();
        if target != config::GATEWAY_V4.octets() && target != config::DNS_V4.octets() {
            return Verdict::Dropped;
        }
    }
    Verdict::Stack
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `b`; a failure leaves a fixed seed.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    u64::from_ne_bytes(b) | 1
}

pub fn ip_of(addr: IpAddress) -> IpAddr {
    match addr {
        IpAddress::Ipv4(a) => IpAddr::V4(a),
        IpAddress::Ipv6(a) => IpAddr::V6(a),
    }
}
