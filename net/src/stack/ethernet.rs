//! Ethernet: every frame from the container is classified here, once.
//!
//! ```text
//!  rx buffer ─► Ethernet header (unicast source: the container's MAC, learnt here)
//!    ├─ ARP  ─► smoltcp, requests only for 10.0.2.2 and 10.0.2.3
//!    ├─ IPv4 ─► ip.rs          ├─ IPv6 ─► ip.rs          └─ other ─► dropped
//! ```
//!
//! A frame that smoltcp should see (ARP, NDP, pings to the netstack's own addresses,
//! TCP segments of known flows) is handed to it in place: marked pending in the device
//! and one ingress poll run. Everything else is answered by the flow tables without
//! smoltcp.

use smoltcp::wire::{ArpOperation, ArpPacket, EthernetFrame, EthernetProtocol};

use super::{Stack, Verdict};
use crate::config;
use crate::link::Link;

impl<L: Link> Stack<L> {
    /// Classifies the frame in the receive buffer and acts on it.
    pub(super) fn on_frame(&mut self) -> Verdict {
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

    pub(super) fn drop_frame(&mut self) -> Verdict {
        self.stats.dropped += 1;
        Verdict::Dropped
    }

    pub(super) fn feed_smoltcp(&mut self) {
        self.port.rx_pending = true;
        let now = self.now();
        self.iface
            .poll_ingress_single(now, &mut self.port, &mut self.sockets);
        self.port.rx_pending = false;
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
