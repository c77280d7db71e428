//! UDP: each flow of the container owns a connected host socket; smoltcp is bypassed.
//!
//! ```text
//!  container datagram ─► flow (container endpoint, destination) ─► send(host socket)
//!  recv(host socket) into tx[after the headers] ─► headers written in front ─► link
//!                                                └► past the MTU: IP fragments (ip.rs)
//! ```
//!
//! A flow per (container endpoint, destination) owns a connected host socket; replies
//! are received straight into the transmit buffer after room for the headers, which are
//! then written in front. Idle flows expire (30 s, 10 s for DNS). DNS to 10.0.2.3:53 is
//! just a UDP or TCP flow whose host end is the host's resolver. Datagrams larger than
//! the MTU travel as IP fragments both ways (frag.rs).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::wire::{EthernetAddress, IpAddress, IpEndpoint, IpProtocol, UdpPacket};

use super::{token, FlowKey, Stack, Verdict};
use crate::config;
use crate::frame;
use crate::link::Link;
use crate::sys;

pub const MAX_UDP_FLOWS: usize = 4096;
const UDP_IDLE: Duration = Duration::from_secs(30);
const DNS_IDLE: Duration = Duration::from_secs(10);
pub(super) const KIND_UDP: u64 = 3;

pub(super) struct UdpFlow {
    key: FlowKey,
    fd: OwnedFd,
    last: StdInstant,
    idle: Duration,
}

impl<L: Link> Stack<L> {
    /// A UDP datagram from the container (`l4`: header and payload, from one frame or
    /// reassembled).
    pub(super) fn on_udp(&mut self, src: IpAddress, dst: IpAddress, l4: &[u8]) -> Verdict {
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
    pub(super) fn udp_readable(&mut self, index: usize) {
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

    pub(super) fn expire_udp(&mut self, now: StdInstant) {
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
}
