//! Frames the netstack writes itself, and the virtio-net header of every frame it writes.
//!
//! smoltcp emits TCP, ARP, NDP and ICMP-to-the-gateway frames; UDP (including DNS) and
//! ICMP echo replies from the host are built here, straight into the transmit buffer:
//! the payload is received from the host socket into its final place after room for the
//! headers, then the headers are written in front (no copy of the payload).
//!
//! With checksum offload the TCP/UDP checksum is left to the container's kernel: the
//! header says NEEDS_CSUM from the L4 header on, and the checksum field holds the
//! pseudo-header sum, as a NIC driver would hand it over.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    checksum, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
};

use crate::link::{VNET_F_NEEDS_CSUM, VNET_HDR_LEN};

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;

/// Where a UDP payload starts in a frame buffer (after the virtio-net header, if any).
pub fn udp_payload_offset(vnet: bool, v6: bool) -> usize {
    let hdr = if vnet { VNET_HDR_LEN } else { 0 };
    hdr + ETH_LEN + if v6 { IPV6_LEN } else { IPV4_LEN } + UDP_LEN
}

/// Writes the Ethernet, IP and UDP headers in front of the `len`-byte payload already at
/// [`udp_payload_offset`]; returns the length of the whole buffer to send.
#[allow(clippy::too_many_arguments)]
pub fn emit_udp(
    buf: &mut [u8],
    vnet: bool,
    offload: bool,
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: (IpAddress, u16),
    dst: (IpAddress, u16),
    len: usize,
) -> usize {
    let hdr = if vnet { VNET_HDR_LEN } else { 0 };
    let v6 = matches!(src.0, IpAddress::Ipv6(_));
    let ip_len = if v6 { IPV6_LEN } else { IPV4_LEN };
    let total = hdr + ETH_LEN + ip_len + UDP_LEN + len;
    let mut caps = ChecksumCapabilities::default();
    if offload {
        caps.udp = smoltcp::phy::Checksum::None;
    }
    {
        let mut eth = EthernetFrame::new_unchecked(&mut buf[hdr..total]);
        eth.set_src_addr(src_mac);
        eth.set_dst_addr(dst_mac);
        eth.set_ethertype(if v6 {
            EthernetProtocol::Ipv6
        } else {
            EthernetProtocol::Ipv4
        });
    }
    let ip_buf = &mut buf[hdr + ETH_LEN..total];
    let udp_repr = UdpRepr {
        src_port: src.1,
        dst_port: dst.1,
    };
    match (src.0, dst.0) {
        (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
            let repr = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: UDP_LEN + len,
                hop_limit: 64,
            };
            let mut ip = Ipv4Packet::new_unchecked(&mut *ip_buf);
            repr.emit(&mut ip, &caps);
            let mut udp = UdpPacket::new_unchecked(&mut ip_buf[IPV4_LEN..]);
            udp_repr.emit(&mut udp, &s.into(), &d.into(), len, |_| {}, &caps);
        }
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
            let repr = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: UDP_LEN + len,
                hop_limit: 64,
            };
            let mut ip = Ipv6Packet::new_unchecked(&mut *ip_buf);
            repr.emit(&mut ip);
            let mut udp = UdpPacket::new_unchecked(&mut ip_buf[IPV6_LEN..]);
            udp_repr.emit(&mut udp, &s.into(), &d.into(), len, |_| {}, &caps);
        }
        _ => unreachable!("a flow's two ends are of one family"),
    }
    if vnet {
        fill_vnet_header(&mut buf[..total], offload);
    }
    total
}

/// Writes the virtio-net header of `buf` (header + frame): zeroes, or with `offload` and a
/// TCP/UDP frame, NEEDS_CSUM with the L4 checksum field set to the pseudo-header sum.
pub fn fill_vnet_header(buf: &mut [u8], offload: bool) {
    buf[..VNET_HDR_LEN].fill(0);
    if !offload {
        return;
    }
    let frame = &mut buf[VNET_HDR_LEN..];
    if frame.len() < ETH_LEN {
        return;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let (l4_start, proto, pseudo) = match ethertype {
        0x0800 => {
            let Ok(ip) = Ipv4Packet::new_checked(&frame[ETH_LEN..]) else {
                return;
            };
            let l4 = ETH_LEN + ip.header_len() as usize;
            let len = ip.total_len() as u32 - ip.header_len() as u32;
            let proto = ip.next_header();
            let sum = checksum::pseudo_header_v4(&ip.src_addr(), &ip.dst_addr(), proto, len);
            (l4, proto, sum)
        }
        0x86dd => {
            let Ok(ip) = Ipv6Packet::new_checked(&frame[ETH_LEN..]) else {
                return;
            };
            let len = ip.payload_len() as u32;
            let proto = ip.next_header();
            let sum = checksum::pseudo_header_v6(&ip.src_addr(), &ip.dst_addr(), proto, len);
            (ETH_LEN + IPV6_LEN, proto, sum)
        }
        _ => return,
    };
    let csum_offset: u16 = match proto {
        IpProtocol::Tcp => 16,
        IpProtocol::Udp => 6,
        _ => return,
    };
    let field = l4_start + csum_offset as usize;
    if frame.len() < field + 2 {
        return;
    }
    frame[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
    buf[0] = VNET_F_NEEDS_CSUM;
    buf[6..8].copy_from_slice(&(l4_start as u16).to_ne_bytes());
    buf[8..10].copy_from_slice(&csum_offset.to_ne_bytes());
}
