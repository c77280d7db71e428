//! ICMP: echo to the outside through the host's ping sockets, and unreachables.
//!
//! ```text
//!  echo request to 10.0.2.2/.3 (and v6 twins) ─► smoltcp answers (ethernet.rs, ip.rs)
//!  echo request elsewhere ─► policy ─► flow (container identifier, destination)
//!       ─► send(ping socket)     refused ─► "host unreachable" from the gateway
//!                                no ping socket ─► "administratively prohibited"
//!  recv(ping socket) into tx[after the headers] ─► identifier and checksum restored ─► link
//! ```
//!
//! smoltcp answers pings to the netstack's own addresses; a ping to any other address
//! the policy lets out becomes a flow per (container identifier, destination) with an
//! unprivileged ICMP socket (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`, ICMPv6
//! likewise). The host kernel puts its own identifier on the request and checks the
//! reply; the reply gets the container's identifier back and a new checksum. Where the
//! host's net.ipv4.ping_group_range leaves out the user's group, the socket cannot be
//! had: the netstack says so once and answers each request with "administratively
//! prohibited", so a ping fails at once instead of waiting. A destination the policy
//! refuses gets "host unreachable".

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpAddress, IpEndpoint, IpProtocol, Ipv4Packet, Ipv6Packet};

use super::{token, FlowKey, Stack, Verdict};
use crate::config;
use crate::frame;
use crate::link::Link;
use crate::sys;

pub const MAX_ECHO_FLOWS: usize = 256;
const ECHO_IDLE: Duration = Duration::from_secs(10);
pub(super) const KIND_ECHO: u64 = 4;

/// Opens the host end of a ping flow: a socket connected to the destination. Tests
/// replace the unprivileged ICMP socket ([`ping_socket`]) with one they control.
pub type EchoOpener = Box<dyn FnMut(IpAddr) -> io::Result<OwnedFd> + Send>;

/// A ping flow: `key.ctr.port` is the container's echo identifier, `key.dst.port` 0.
pub(super) struct EchoFlow {
    key: FlowKey,
    fd: OwnedFd,
    last: StdInstant,
}

impl<L: Link> Stack<L> {
    /// An echo request from the container to an address outside (`msg`: the ICMP
    /// message, from one frame or reassembled).
    pub(super) fn on_echo(&mut self, src: IpAddress, dst: IpAddress, msg: &[u8]) -> Verdict {
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
                    tracing::warn!("{}", ping_refusal(&e));
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

    pub(super) fn expire_echo(&mut self, now: StdInstant) {
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

    fn remove_echo(&mut self, index: usize) {
        if let Some(flow) = self.echo.remove(index) {
            self.epoll.delete(flow.fd.as_raw_fd());
            self.echo_index.remove(&flow.key);
        }
    }

    /// Echo replies from the host: received in place, identifier and checksum put back
    /// as the container expects them, headers in front.
    pub(super) fn echo_readable(&mut self, index: usize) {
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
