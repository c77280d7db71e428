//! IP: the headers of what the container sends, and the IP payloads sent back to it.
//!
//! ```text
//!  in:  IPv4/IPv6 header ─► source must be the container's (spoofed: dropped)
//!         ├─ fragment ─► reassembly (frag.rs) ─► whole datagram ─► udp.rs / icmp.rs
//!         ├─ TCP ─► tcp.rs   ├─ UDP ─► udp.rs   ├─ ICMP echo ─► smoltcp or icmp.rs
//!         └─ NDP (ICMPv6) ─► smoltcp, solicitations only for the netstack's addresses
//!  out: an IP payload at tx[at..] ─► one frame, or fragments past the MTU (frame.rs)
//! ```
//!
//! The layers above get their bytes as a slice of the receive buffer (or of the
//! reassembly slot): nothing is copied on the way up.

use std::time::Instant as StdInstant;

use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpAddress, IpProtocol, Ipv4Packet,
    Ipv6Packet,
};

use super::{Stack, Verdict};
use crate::config;
use crate::frag::{FragKey, Fragment};
use crate::frame;
use crate::link::Link;
use crate::policy::ip_of;

impl<L: Link> Stack<L> {
    pub(super) fn classify_ipv4(&mut self) -> Verdict {
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
    pub(super) fn with_rx(
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
    pub(super) fn on_fragment(
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

    pub(super) fn classify_ipv6(&mut self) -> Verdict {
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

    /// Sends the IP payload at `tx[at..at + len]` to the container: one frame, or
    /// fragments when it is larger than the MTU.
    pub(super) fn send_ip(
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
}
