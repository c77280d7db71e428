//! The netstack: container frames in, host sockets out, and back.
//!
//! ```text
//!  tap ──read──► rx buffer ──classify──┬─ ARP/NDP for the gateway, ICMP to it ─► smoltcp
//!                                      ├─ TCP ─► flow table ─► smoltcp socket (any-IP)
//!                                      │          ⇅ recv()/send() closures
//!                                      │        host TCP socket (write/read in place)
//!                                      ├─ UDP ─► flow table ─► host UDP socket (send)
//!                                      └─ ICMP echo elsewhere ─► host ping socket (send)
//!  tap ◄─write── tx buffer ◄── smoltcp egress  /  UDP and echo replies built in place
//! ```
//!
//! One file per layer, as smoltcp lays out its interface (src/iface/interface/): this
//! file holds the [`Stack`] and its event loop; each file below adds the `impl` block of
//! its layer and owns that layer's flow table:
//!
//! | file          | role                                                              |
//! |---------------|-------------------------------------------------------------------|
//! | `device.rs`   | smoltcp's `phy::Device` over the link: the one rx and tx buffer   |
//! | `ethernet.rs` | each frame classified: ARP, IPv4, IPv6; what smoltcp gets to see  |
//! | `ip.rs`       | IPv4/IPv6 headers, spoofed sources, fragments in; IP payloads out |
//! | `tcp.rs`      | TCP flows: a smoltcp socket spliced to a host socket              |
//! | `udp.rs`      | UDP flows (DNS included): a connected host socket, smoltcp bypassed |
//! | `icmp.rs`     | echo to the outside through ping sockets; ICMP unreachables       |
//!
//! Where a flow goes on the host is policy.rs's answer; packets the netstack writes
//! itself are built by frame.rs, fragments cut and reassembled by frag.rs.
//!
//! Per frame: one read(2), no allocation (one receive and one transmit buffer, reused);
//! per wakeup the tap is drained (up to a bound) before sockets are serviced and
//! smoltcp's egress runs once, so ACKs and window updates are batched.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::config::{self, Config};
use crate::frag::Reassembly;
use crate::frame::{self, Macs};
use crate::link::{Link, VNET_HDR_LEN};
use crate::policy::Policy;
use crate::sys::{self, Epoll, Slab};

mod device;
mod ethernet;
mod icmp;
mod ip;
mod tcp;
mod udp;

pub use device::{Port, Rx, Tx};
pub use icmp::{ping_socket, EchoOpener, MAX_ECHO_FLOWS};
pub use tcp::{MAX_TCP_FLOWS, TCP_RX_BUFFER, TCP_TX_BUFFER};
pub use udp::MAX_UDP_FLOWS;

use icmp::{EchoFlow, KIND_ECHO};
use tcp::{TcpFlow, KIND_TCP};
use udp::{UdpFlow, KIND_UDP};

/// Frames taken from the tap per wakeup before the sockets get their turn.
const RX_BATCH: usize = 512;

/// Epoll tokens: the low three bits say what, the rest which flow (each protocol's file
/// has its kind: 2 TCP, 3 UDP, 4 echo).
pub const TOKEN_LINK: u64 = 0;
pub const TOKEN_STOP: u64 = 1;

fn token(kind: u64, index: usize) -> u64 {
    (index as u64) << 3 | kind
}

/// A flow as the container sees it: its endpoint and the destination it addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub ctr: IpEndpoint,
    pub dst: IpEndpoint,
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

/// The netstack of one container: its link, smoltcp, the flow tables, one epoll set.
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

    /// Once a second: idle UDP and ping flows go.
    fn expire(&mut self) {
        let now = StdInstant::now();
        if now < self.next_expiry {
            return;
        }
        self.next_expiry = now + Duration::from_secs(1);
        self.expire_udp(now);
        self.expire_echo(now);
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

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `b`; a failure leaves a fixed seed.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    u64::from_ne_bytes(b) | 1
}
