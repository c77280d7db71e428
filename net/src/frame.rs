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

use std::io;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    checksum, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Address, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
};

use crate::frag;
use crate::link::{Link, VNET_F_NEEDS_CSUM, VNET_HDR_LEN};

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

/// Where an IP payload starts in a frame buffer (after the virtio-net header, if any).
pub fn ip_payload_offset(vnet: bool, v6: bool) -> usize {
    let hdr = if vnet { VNET_HDR_LEN } else { 0 };
    hdr + ETH_LEN + if v6 { IPV6_LEN } else { IPV4_LEN }
}

/// The two MAC addresses of every frame the netstack writes.
#[derive(Debug, Clone, Copy)]
pub struct Macs {
    pub src: EthernetAddress,
    pub dst: EthernetAddress,
}

/// Writes the virtio-net header (zeroes: nothing offloaded), Ethernet and IP headers in
/// front of the `len`-byte IP payload already at [`ip_payload_offset`]; `frag` is the
/// fragment's (offset, more, ident), IPv4 only. Returns the length of the whole buffer.
#[allow(clippy::too_many_arguments)]
pub fn emit_ip(
    buf: &mut [u8],
    vnet: bool,
    macs: Macs,
    src: IpAddress,
    dst: IpAddress,
    proto: IpProtocol,
    len: usize,
    frag: Option<(usize, bool, u16)>,
) -> usize {
    let hdr = if vnet { VNET_HDR_LEN } else { 0 };
    let v6 = matches!(src, IpAddress::Ipv6(_));
    let ip_len = if v6 { IPV6_LEN } else { IPV4_LEN };
    let total = hdr + ETH_LEN + ip_len + len;
    buf[..hdr].fill(0);
    write_eth(&mut buf[hdr..], macs, v6);
    let ip_buf = &mut buf[hdr + ETH_LEN..total];
    match (src, dst) {
        (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
            let repr = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: len,
                hop_limit: 64,
            };
            let mut ip = Ipv4Packet::new_unchecked(&mut *ip_buf);
            repr.emit(&mut ip, &ChecksumCapabilities::default());
            if let Some((offset, more, ident)) = frag {
                ip.set_ident(ident);
                ip.set_dont_frag(false);
                ip.set_more_frags(more);
                ip.set_frag_offset(offset as u16);
                ip.fill_checksum();
            }
        }
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
            let repr = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: len,
                hop_limit: 64,
            };
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut *ip_buf));
        }
        _ => unreachable!("a flow's two ends are of one family"),
    }
    total
}

fn write_eth(buf: &mut [u8], macs: Macs, v6: bool) {
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..ETH_LEN]);
    eth.set_src_addr(macs.src);
    eth.set_dst_addr(macs.dst);
    eth.set_ethertype(if v6 {
        EthernetProtocol::Ipv6
    } else {
        EthernetProtocol::Ipv4
    });
}

/// Sends `payload` (a whole UDP datagram or ICMP message, headers included) from `src`
/// to `dst` as IP fragments of at most `mtu` bytes each, built one at a time in
/// `scratch`. Each fragment costs a copy: this is the path of datagrams larger than the
/// MTU only. Returns the number of frames sent.
#[allow(clippy::too_many_arguments)]
pub fn send_fragments<L: Link>(
    link: &mut L,
    scratch: &mut Vec<u8>,
    mtu: usize,
    macs: Macs,
    src: IpAddress,
    dst: IpAddress,
    proto: IpProtocol,
    ident: u32,
    payload: &[u8],
) -> io::Result<u64> {
    let vnet = link.vnet_hdr();
    let hdr = if vnet { VNET_HDR_LEN } else { 0 };
    let v6 = matches!(src, IpAddress::Ipv6(_));
    let chunk = frag::fragment_payload(mtu, v6);
    scratch.resize(hdr + ETH_LEN + mtu, 0);
    let mut frames = 0;
    for (n, piece) in payload.chunks(chunk).enumerate() {
        let offset = n * chunk;
        let more = offset + piece.len() < payload.len();
        let len = match (src, dst) {
            (IpAddress::Ipv4(_), IpAddress::Ipv4(_)) => {
                let at = ip_payload_offset(vnet, false);
                scratch[at..at + piece.len()].copy_from_slice(piece);
                let frag = Some((offset, more, ident as u16));
                emit_ip(scratch, vnet, macs, src, dst, proto, piece.len(), frag)
            }
            (IpAddress::Ipv6(_), IpAddress::Ipv6(_)) => {
                // IPv6 header, then the 8-byte fragment header (RFC 8200 4.5).
                let at = ip_payload_offset(vnet, true);
                let fh = &mut scratch[at..at + 8];
                fh[0] = proto.into();
                fh[1] = 0;
                fh[2..4].copy_from_slice(&((offset as u16) | more as u16).to_be_bytes());
                fh[4..8].copy_from_slice(&ident.to_be_bytes());
                scratch[at + 8..at + 8 + piece.len()].copy_from_slice(piece);
                let frag_proto = IpProtocol::Ipv6Frag;
                emit_ip(
                    scratch,
                    vnet,
                    macs,
                    src,
                    dst,
                    frag_proto,
                    8 + piece.len(),
                    None,
                )
            }
            _ => unreachable!("a flow's two ends are of one family"),
        };
        link.send(&scratch[..len])?;
        frames += 1;
    }
    Ok(frames)
}

/// The full UDP checksum of `udp` (header with a zero checksum field, then the payload),
/// for datagrams sent as fragments, where no offload can finish it.
pub fn udp_checksum(src: IpAddress, dst: IpAddress, udp: &[u8]) -> u16 {
    let pseudo = match (src, dst) {
        (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
            checksum::pseudo_header_v4(&s, &d, IpProtocol::Udp, udp.len() as u32)
        }
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
            checksum::pseudo_header_v6(&s, &d, IpProtocol::Udp, udp.len() as u32)
        }
        _ => unreachable!("a flow's two ends are of one family"),
    };
    match !checksum::combine(&[pseudo, checksum::data(udp)]) {
        // 0 means "no checksum" in UDP: send the other zero.
        0 => 0xffff,
        c => c,
    }
}

/// Turns the echo reply a host ICMP socket received (`msg`: ICMP header and data, the
/// identifier the host kernel chose) into the one the container expects: its own
/// identifier, and a checksum over the result (ICMPv6: with the pseudo-header of
/// `v6 = (src, dst)`).
pub fn fix_echo_reply(msg: &mut [u8], id: u16, v6: Option<(Ipv6Address, Ipv6Address)>) {
    if msg.len() < 8 {
        return;
    }
    msg[4..6].copy_from_slice(&id.to_be_bytes());
    msg[2..4].fill(0);
    let sum = match v6 {
        None => !checksum::data(msg),
        Some((s, d)) => !checksum::combine(&[
            checksum::pseudo_header_v6(&s, &d, IpProtocol::Icmpv6, msg.len() as u32),
            checksum::data(msg),
        ]),
    };
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// ICMP destination unreachable with `code`, sent back to the container for the IP
/// packet `invoking` it sent (whose addresses it carries): written into `buf` as a whole
/// frame from `router`; returns its length. ICMPv4 quotes the IP header and 8 bytes,
/// ICMPv6 as much as keeps the message within 1280 bytes (RFC 4443 2.4).
pub fn emit_unreachable(
    buf: &mut [u8],
    vnet: bool,
    macs: Macs,
    router: IpAddress,
    ctr: IpAddress,
    code: u8,
    invoking: &[u8],
) -> usize {
    let v6 = matches!(router, IpAddress::Ipv6(_));
    let at = ip_payload_offset(vnet, v6);
    let quote = if v6 {
        invoking.len().min(1280 - IPV6_LEN - 8)
    } else {
        let ihl = invoking.first().map_or(20, |b| (b & 0x0f) as usize * 4);
        invoking.len().min(ihl + 8)
    };
    let len = 8 + quote;
    let msg = &mut buf[at..at + len];
    msg[..8].fill(0);
    msg[0] = if v6 { 1 } else { 3 };
    msg[1] = code;
    msg[8..].copy_from_slice(&invoking[..quote]);
    let sum = match (router, ctr) {
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => !checksum::combine(&[
            checksum::pseudo_header_v6(&s, &d, IpProtocol::Icmpv6, len as u32),
            checksum::data(msg),
        ]),
        _ => !checksum::data(msg),
    };
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let proto = if v6 {
        IpProtocol::Icmpv6
    } else {
        IpProtocol::Icmp
    };
    emit_ip(buf, vnet, macs, router, ctr, proto, len, None)
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
            if ip.more_frags() || ip.frag_offset() != 0 {
                // A fragment's checksum covers the whole datagram: nothing to offload.
                return;
            }
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
