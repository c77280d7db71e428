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
//! Datagrams larger than the MTU travel as IP fragments both ways (frag.rs).
//!
//! ICMP echo: smoltcp answers pings to the netstack's own addresses; a ping to any
//! other address the policy lets out becomes a flow per (container identifier,
//! destination) with an unprivileged ICMP socket (`socket(AF_INET, SOCK_DGRAM,
//! IPPROTO_ICMP)`, ICMPv6 likewise). The host kernel puts its own identifier on the
//! request and checks the reply; the reply gets the container's identifier back and a
//! new checksum. Where the host's net.ipv4.ping_group_range leaves out the user's
//! group, the socket cannot be had: the netstack says so once on stderr and answers
//! each request with "administratively prohibited", so a ping fails at once instead of
//! waiting. A destination the policy refuses gets "host unreachable".
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
use crate::frag::{FragKey, Fragment, Reassembly};
use crate::frame::{self, Macs};
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
pub const MAX_ECHO_FLOWS: usize = 256;
const UDP_IDLE: Duration = Duration::from_secs(30);
const DNS_IDLE: Duration = Duration::from_secs(10);
const ECHO_IDLE: Duration = Duration::from_secs(10);
/// Frames taken from the tap per wakeup before the sockets get their turn.
const RX_BATCH: usize = 512;

/// Epoll tokens: the low three bits say what, the rest which flow.
pub const TOKEN_LINK: u64 = 0;
pub const TOKEN_STOP: u64 = 1;
const KIND_TCP: u64 = 2;
const KIND_UDP: u64 = 3;
const KIND_ECHO: u64 = 4;

fn token(kind: u64, index: usize) -> u64 {
    (index as u64) << 3 | kind
}

/// Opens the host end of a ping flow: a socket connected to the destination. Tests
/// replace the unprivileged ICMP socket ([`ping_socket`]) with one they control.
pub type EchoOpener = Box<dyn FnMut(IpAddr) -> io::Result<OwnedFd> + Send>;

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

/// A ping flow: `key.ctr.port` is the container's echo identifier, `key.dst.port` 0.
struct EchoFlow {
    key: FlowKey,
    fd: OwnedFd,
    last: StdInstant,
}

/// Counters, for tests and `nook` diagnostics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub frames_in: u64,
    pub frames_out: u64,
    pub tcp_flows: usize,
    pub udp_flows: usize,
    pub echo_flows: usize,
    pub refused: u64,
    pub dropped: u64,
    /// ICMP unreachables sent to the container (refused or unpermitted pings).
    pub unreachable: u64,
    /// Frames that were IP fragments, both ways.
    pub fragments_in: u64,
    pub fragments_out: u64,
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
    Echo,
    /// A fragment of a datagram that is not whole yet.
    Fragment,
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
    echo: Slab<EchoFlow>,
    echo_index: HashMap<FlowKey, usize>,
    echo_opener: EchoOpener,
    /// The reason the host refused an ICMP socket, once said.
    ping_refusal_said: bool,
    reassembly: Reassembly,
    /// Where fragments are built (one frame, allocated on first use).
    frag_tx: Vec<u8>,
    frag_ident: u32,
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
        // The transmit buffer also takes a whole datagram from a host socket (up to 64
        // KiB) before it is cut into fragments.
        let tx_len = buf_len.max(frame::ip_payload_offset(true, true) + 65535);
        let mut port = Port {
            link,
            rx: vec![0; buf_len],
            rx_len: 0,
            rx_pending: false,
            tx: vec![0; tx_len],
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
            echo: Slab::default(),
            echo_index: HashMap::new(),
            echo_opener: Box::new(ping_socket),
            ping_refusal_said: false,
            reassembly: Reassembly::default(),
            frag_tx: Vec::new(),
            frag_ident: random_seed() as u32,
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
            echo_flows: self.echo.len(),
            ..self.stats
        }
    }

    /// Replaces how the host ends of ping flows are opened (tests).
    pub fn set_echo_opener(&mut self, opener: EchoOpener) {
        self.echo_opener = opener;
    }

    fn macs(&self) -> Macs {
        Macs {
            src: EthernetAddress(config::GATEWAY_MAC),
            dst: self.ctr_mac,
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
            match tok & 7 {
                _ if tok == TOKEN_LINK => link_ready = true,
                _ if tok == TOKEN_STOP => keep_going = false,
                KIND_TCP => self.tcp_event((tok >> 3) as usize, bits),
                KIND_UDP => self.udp_readable((tok >> 3) as usize),
                KIND_ECHO => self.echo_readable((tok >> 3) as usize),
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
        if !self.udp.is_empty() || !self.tcp.is_empty() || !self.echo.is_empty() {
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
        if ip.src_addr() != config::CONTAINER_V4 {
            // Spoofed sources go nowhere.
            return Verdict::Dropped;
        }
        let (src, dst) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        let payload_at = hdr + frame::ETH_LEN + ip.header_len() as usize;
        let payload_end = hdr + frame::ETH_LEN + ip.total_len() as usize;
        let proto = ip.next_header();
        if ip.more_frags() || ip.frag_offset() != 0 {
            let (offset, more, id) = (ip.frag_offset() as usize, ip.more_frags(), ip.ident());
            return self.on_fragment(
                src,
                dst,
                proto,
                id as u32,
                offset,
                more,
                payload_at,
                payload_end,
            );
        }
        match proto {
            IpProtocol::Tcp => self.classify_tcp(src, dst, payload_at, payload_end),
            IpProtocol::Udp => {
                self.with_rx(payload_at, payload_end, |st, l4| st.on_udp(src, dst, l4))
            }
            IpProtocol::Icmp => {
                let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
                    return Verdict::Dropped;
                };
                // smoltcp answers echo for every address in any-IP mode: let it answer
                // only for the addresses that exist here; other pings go to the host.
                match icmp.msg_type() {
                    Icmpv4Message::EchoRequest if self.policy.is_local(dst) => Verdict::Stack,
                    Icmpv4Message::EchoRequest if icmp.msg_code() == 0 => {
                        self.with_rx(payload_at, payload_end, |st, msg| st.on_echo(src, dst, msg))
                    }
                    _ => Verdict::Dropped,
                }
            }
            _ => Verdict::Dropped,
        }
    }

    /// Runs `f` on the bytes `at..end` of the received frame (bounds checked), with the
    /// receive buffer lent out of `self` for the call.
    fn with_rx(
        &mut self,
        at: usize,
        end: usize,
        f: impl FnOnce(&mut Self, &[u8]) -> Verdict,
    ) -> Verdict {
        if at > end || end > self.port.rx_len {
            return Verdict::Dropped;
        }
        let rx = std::mem::take(&mut self.port.rx);
        let v = f(self, &rx[at..end]);
        self.port.rx = rx;
        v
    }

    /// One IP fragment from the container; a datagram made whole goes on as UDP or
    /// ICMP echo (TCP is never fragmented by a kernel that knows the MTU).
    #[allow(clippy::too_many_arguments)]
    fn on_fragment(
        &mut self,
        src: IpAddress,
        dst: IpAddress,
        proto: IpProtocol,
        id: u32,
        offset: usize,
        more: bool,
        at: usize,
        end: usize,
    ) -> Verdict {
        if at > end
            || end > self.port.rx_len
            || !matches!(
                proto,
                IpProtocol::Udp | IpProtocol::Icmp | IpProtocol::Icmpv6
            )
        {
            return Verdict::Dropped;
        }
        self.stats.fragments_in += 1;
        let frag = Fragment {
            key: FragKey {
                src: ip_of(src),
                dst: ip_of(dst),
                id,
                proto,
            },
            offset,
            more,
            data: &self.port.rx[at..end],
        };
        let Some(slot) = self.reassembly.add(frag, StdInstant::now()) else {
            return Verdict::Fragment;
        };
        let reassembly = std::mem::take(&mut self.reassembly);
        let payload = reassembly.payload(slot);
        let v = match proto {
            IpProtocol::Udp => self.on_udp(src, dst, payload),
            _ if payload.len() >= 8 && payload[1] == 0 => {
                let echo = match proto {
                    IpProtocol::Icmp => Icmpv4Message::EchoRequest.into(),
                    _ => Icmpv6Message::EchoRequest.into(),
                };
                if payload[0] == echo && !self.policy.is_local(dst) {
                    self.on_echo(src, dst, payload)
                } else {
                    Verdict::Dropped
                }
            }
            _ => Verdict::Dropped,
        };
        self.reassembly = reassembly;
        self.reassembly.release(slot);
        v
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
            IpProtocol::Udp if from_container => {
                self.with_rx(payload_at, payload_end, |st, l4| st.on_udp(src, dst, l4))
            }
            IpProtocol::Ipv6Frag if from_container => {
                // The fragment header (RFC 8200 4.5): next header, reserved, offset and M
                // flag, identification; the fragment's data follows.
                let at = payload_at;
                if payload_end > self.port.rx_len || at + 8 > payload_end {
                    return Verdict::Dropped;
                }
                let fh = &self.port.rx[at..at + 8];
                let proto = IpProtocol::from(fh[0]);
                let off_m = u16::from_be_bytes([fh[2], fh[3]]);
                let id = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
                let (offset, more) = ((off_m & !7) as usize, off_m & 1 == 1);
                self.on_fragment(src, dst, proto, id, offset, more, at + 8, payload_end)
            }
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
                    Icmpv6Message::EchoRequest if from_container && icmp.msg_code() == 0 => {
                        self.with_rx(payload_at, payload_end, |st, msg| st.on_echo(src, dst, msg))
                    }
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

    /// A UDP datagram from the container (`l4`: header and payload, from one frame or
    /// reassembled).
    fn on_udp(&mut self, src: IpAddress, dst: IpAddress, l4: &[u8]) -> Verdict {
        let Ok(udp) = UdpPacket::new_checked(l4) else {
            return Verdict::Dropped;
        };
        let key = FlowKey {
            ctr: IpEndpoint::new(src, udp.src_port()),
            dst: IpEndpoint::new(dst, udp.dst_port()),
        };
        let payload_at = frame::UDP_LEN;
        let payload_end = udp.len() as usize;
        if payload_end > l4.len() || payload_end < payload_at {
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
        let _ = sys::send(flow.fd.as_raw_fd(), &l4[payload_at..payload_end]);
        Verdict::Udp
    }

    /// An echo request from the container to an address outside (`msg`: the ICMP
    /// message, from one frame or reassembled).
    fn on_echo(&mut self, src: IpAddress, dst: IpAddress, msg: &[u8]) -> Verdict {
        if msg.len() < 8 {
            return Verdict::Dropped;
        }
        let id = u16::from_be_bytes([msg[4], msg[5]]);
        let key = FlowKey {
            ctr: IpEndpoint::new(src, id),
            dst: IpEndpoint::new(dst, 0),
        };
        let index = match self.echo_index.get(&key) {
            Some(&i) => i,
            None => match self.open_echo(key) {
                Ok(i) => i,
                Err(code) => {
                    self.send_unreachable(src, dst, code, msg);
                    return Verdict::Echo;
                }
            },
        };
        let Some(flow) = self.echo.get_mut(index) else {
            return Verdict::Dropped;
        };
        flow.last = StdInstant::now();
        // The host kernel sets its own identifier and the checksum; a full buffer drops
        // the request, as a congested link would.
        let _ = sys::send(flow.fd.as_raw_fd(), msg);
        Verdict::Echo
    }

    /// A ping flow to `key.dst`, or the unreachable code to answer with.
    fn open_echo(&mut self, key: FlowKey) -> Result<usize, UnreachableCode> {
        let target = self
            .policy
            .icmp_target(key.dst.addr)
            .ok_or(UnreachableCode::Host)?;
        if self.echo.len() >= MAX_ECHO_FLOWS {
            if let Some(i) = self.echo.iter().min_by_key(|(_, f)| f.last).map(|(i, _)| i) {
                self.remove_echo(i);
            }
        }
        let fd = match (self.echo_opener)(target) {
            Ok(fd) => fd,
            Err(e) => {
                if !self.ping_refusal_said {
                    self.ping_refusal_said = true;
                    eprintln!("nook: {}", ping_refusal(&e));
                }
                return Err(UnreachableCode::Prohibited);
            }
        };
        let raw = fd.as_raw_fd();
        let index = self.echo.insert(EchoFlow {
            key,
            fd,
            last: StdInstant::now(),
        });
        self.echo_index.insert(key, index);
        if self
            .epoll
            .add(raw, sys::IN | sys::ET, token(KIND_ECHO, index))
            .is_err()
        {
            self.remove_echo(index);
            return Err(UnreachableCode::Host);
        }
        Ok(index)
    }

    fn remove_echo(&mut self, index: usize) {
        if let Some(flow) = self.echo.remove(index) {
            self.epoll.delete(flow.fd.as_raw_fd());
            self.echo_index.remove(&flow.key);
        }
    }

    /// Echo replies from the host: received in place, identifier and checksum put back
    /// as the container expects them, headers in front.
    fn echo_readable(&mut self, index: usize) {
        let Some(flow) = self.echo.get_mut(index) else {
            return;
        };
        flow.last = StdInstant::now();
        let (key, fd) = (flow.key, flow.fd.as_raw_fd());
        let v6 = match (key.dst.addr, key.ctr.addr) {
            (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => Some((s, d)),
            _ => None,
        };
        let proto = if v6.is_some() {
            IpProtocol::Icmpv6
        } else {
            IpProtocol::Icmp
        };
        let at = frame::ip_payload_offset(self.port.vnet, v6.is_some());
        let room = self.port.tx.len() - at;
        loop {
            let n = match sys::read(fd, &mut self.port.tx[at..at + room]) {
                Ok(Some(n)) if n >= 8 => n,
                Ok(Some(_)) => continue,
                // An ICMP error for the flow (unreachable, TTL exceeded): the container's
                // ping times out on its own.
                Ok(None) | Err(_) => return,
            };
            frame::fix_echo_reply(&mut self.port.tx[at..at + n], key.ctr.port, v6);
            self.send_ip(key.dst.addr, key.ctr.addr, proto, at, n);
        }
    }

    /// Sends the IP payload at `tx[at..at + len]` to the container: one frame, or
    /// fragments when it is larger than the MTU.
    fn send_ip(
        &mut self,
        src: IpAddress,
        dst: IpAddress,
        proto: IpProtocol,
        at: usize,
        len: usize,
    ) {
        let v6 = matches!(src, IpAddress::Ipv6(_));
        let ip_len = if v6 { frame::IPV6_LEN } else { frame::IPV4_LEN };
        let macs = self.macs();
        if ip_len + len <= self.port.mtu {
            let total = frame::emit_ip(
                &mut self.port.tx,
                self.port.vnet,
                macs,
                src,
                dst,
                proto,
                len,
                None,
            );
            let _ = self.port.link.send(&self.port.tx[..total]);
            self.port.frames_out += 1;
            return;
        }
        self.frag_ident = self.frag_ident.wrapping_add(1);
        let sent = frame::send_fragments(
            &mut self.port.link,
            &mut self.frag_tx,
            self.port.mtu,
            macs,
            src,
            dst,
            proto,
            self.frag_ident,
            &self.port.tx[at..at + len],
        );
        if let Ok(n) = sent {
            self.port.frames_out += n;
            self.stats.fragments_out += n;
        }
    }

    /// Answers a packet the container sent to `dst` with an ICMP unreachable from the
    /// gateway, quoting its IP header and the first 8 bytes of `l4` (of protocol ICMP:
    /// only pings are answered this way).
    fn send_unreachable(
        &mut self,
        ctr: IpAddress,
        dst: IpAddress,
        code: UnreachableCode,
        l4: &[u8],
    ) {
        let mut quote = [0u8; frame::IPV6_LEN + 8];
        let head = l4.len().min(8);
        let (router, len, code) = match (ctr, dst) {
            (IpAddress::Ipv4(c), IpAddress::Ipv4(d)) => {
                let repr = smoltcp::wire::Ipv4Repr {
                    src_addr: c,
                    dst_addr: d,
                    next_header: IpProtocol::Icmp,
                    payload_len: l4.len(),
                    hop_limit: 64,
                };
                repr.emit(
                    &mut Ipv4Packet::new_unchecked(&mut quote[..]),
                    &ChecksumCapabilities::default(),
                );
                quote[frame::IPV4_LEN..frame::IPV4_LEN + head].copy_from_slice(&l4[..head]);
                let code = match code {
                    UnreachableCode::Host => 1,
                    UnreachableCode::Prohibited => 13,
                };
                (
                    IpAddress::Ipv4(config::GATEWAY_V4),
                    frame::IPV4_LEN + head,
                    code,
                )
            }
            (IpAddress::Ipv6(c), IpAddress::Ipv6(d)) => {
                let repr = smoltcp::wire::Ipv6Repr {
                    src_addr: c,
                    dst_addr: d,
                    next_header: IpProtocol::Icmpv6,
                    payload_len: l4.len(),
                    hop_limit: 64,
                };
                repr.emit(&mut Ipv6Packet::new_unchecked(&mut quote[..]));
                quote[frame::IPV6_LEN..frame::IPV6_LEN + head].copy_from_slice(&l4[..head]);
                let code = match code {
                    UnreachableCode::Host => 3,
                    UnreachableCode::Prohibited => 1,
                };
                (
                    IpAddress::Ipv6(config::GATEWAY_V6),
                    frame::IPV6_LEN + head,
                    code,
                )
            }
            _ => return,
        };
        let macs = self.macs();
        let total = frame::emit_unreachable(
            &mut self.port.tx,
            self.port.vnet,
            macs,
            router,
            ctr,
            code,
            &quote[..len],
        );
        let _ = self.port.link.send(&self.port.tx[..total]);
        self.port.frames_out += 1;
        self.stats.unreachable += 1;
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
        // What fits one frame; a larger datagram (up to 64 KiB) goes as fragments.
        let ip_len = if v6 { frame::IPV6_LEN } else { frame::IPV4_LEN };
        let one_frame = self.port.mtu - ip_len - frame::UDP_LEN;
        let room = 65535 - frame::UDP_LEN - if v6 { 0 } else { frame::IPV4_LEN };
        loop {
            let n = match sys::read(fd, &mut self.port.tx[at..at + room]) {
                Ok(Some(n)) => n,
                // ECONNREFUSED from an ICMP port-unreachable: nothing to deliver.
                Ok(None) | Err(_) => return,
            };
            if n > one_frame {
                // The UDP header in front, with a checksum over everything: no fragment
                // can have it offloaded.
                let l4 = at - frame::UDP_LEN;
                let udp = &mut self.port.tx[l4..at + n];
                udp[0..2].copy_from_slice(&key.dst.port.to_be_bytes());
                udp[2..4].copy_from_slice(&key.ctr.port.to_be_bytes());
                udp[4..6].copy_from_slice(&((frame::UDP_LEN + n) as u16).to_be_bytes());
                udp[6..8].fill(0);
                let sum = frame::udp_checksum(key.dst.addr, key.ctr.addr, udp);
                udp[6..8].copy_from_slice(&sum.to_be_bytes());
                self.send_ip(
                    key.dst.addr,
                    key.ctr.addr,
                    IpProtocol::Udp,
                    l4,
                    frame::UDP_LEN + n,
                );
                continue;
            }
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
        let expired: Vec<usize> = self
            .echo
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) > ECHO_IDLE)
            .map(|(i, _)| i)
            .collect();
        for i in expired {
            self.remove_echo(i);
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

/// Why a ping gets an ICMP unreachable instead of a reply.
#[derive(Debug, Clone, Copy)]
enum UnreachableCode {
    /// The policy refuses the destination (it does not exist, or is the host's loopback).
    Host,
    /// The host does not let this user open ICMP sockets.
    Prohibited,
}

/// The host end of a ping: an unprivileged ICMP socket (Linux's "ping socket"), allowed
/// to the groups in net.ipv4.ping_group_range (for ICMPv6 too), connected to `target`.
pub fn ping_socket(target: IpAddr) -> io::Result<OwnedFd> {
    let (family, proto) = match target {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    let fd = sys::socket(family, libc::SOCK_DGRAM, proto)?;
    sys::connect(fd.as_raw_fd(), &std::net::SocketAddr::new(target, 0))?;
    Ok(fd)
}

/// The one notice when the host refuses an ICMP socket: why, and what to do.
fn ping_refusal(e: &io::Error) -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    // SAFETY: getegid cannot fail.
    let gid = unsafe { libc::getegid() };
    if e.raw_os_error() == Some(libc::EACCES) {
        format!(
            "ping from the container reaches only 10.0.2.2 and 10.0.2.3: the host lets no \
             unprivileged ICMP socket to group {gid} (net.ipv4.ping_group_range is \
             \"{range}\"); an administrator can allow it with `sysctl -w \
             net.ipv4.ping_group_range=\"0 2147483647\"`"
        )
    } else {
        format!("ping from the container reaches only 10.0.2.2 and 10.0.2.3: ICMP socket: {e}")
    }
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
