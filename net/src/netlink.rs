//! Configures `tap0` inside the container's network namespace through rtnetlink.
//!
//! Runs in the netns agent right after the tap is created, before the container's
//! command starts: link MAC, MTU and up; 10.0.2.100/24 (and fd00::100/64 with NODAD, so
//! the address is usable at once instead of after a second of duplicate detection);
//! default routes via the gateway. Five or six requests, each acknowledged.
//!
//! Crates: `netlink-packet-route` builds and parses the messages and `netlink-sys` is the
//! plain blocking socket. `rtnetlink` would pull in an async runtime for six messages,
//! and `neli` would be a second serialisation framework beside the one every Rust netlink
//! user shares; the hand-written alternative (ioctls) cannot add IPv6 routes cleanly.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use netlink_packet_route::{AddressFamily, IpProtocol, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use crate::config::{self, Config};

/// Brings `name` up with the container's addresses and routes.
pub fn configure(name: &str, cfg: &Config) -> io::Result<()> {
    let index = if_index(name)?;
    let mut nl = Netlink::open()?;
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    link.attributes = vec![
        LinkAttribute::Mtu(cfg.mtu),
        LinkAttribute::Address(config::CONTAINER_MAC.to_vec()),
    ];
    let new = NLM_F_CREATE | NLM_F_EXCL;
    context(
        nl.request(RouteNetlinkMessage::SetLink(link), 0),
        "setting tap0's MTU, MAC and up",
    )?;
    let v4 = IpAddr::V4(config::CONTAINER_V4);
    context(
        nl.request(
            RouteNetlinkMessage::NewAddress(address(index, v4, config::PREFIX_V4)),
            new,
        ),
        "adding 10.0.2.100/24 to tap0",
    )?;
    let gw4 = IpAddr::V4(config::GATEWAY_V4);
    context(
        nl.request(
            RouteNetlinkMessage::NewRoute(default_route(index, gw4)),
            new,
        ),
        "adding the default route via 10.0.2.2",
    )?;
    if cfg.ipv6 {
        let v6 = IpAddr::V6(config::CONTAINER_V6);
        match nl.request(
            RouteNetlinkMessage::NewAddress(address(index, v6, config::PREFIX_V6)),
            new,
        ) {
            Ok(()) => {
                let gw6 = IpAddr::V6(config::GATEWAY_V6);
                context(
                    nl.request(
                        RouteNetlinkMessage::NewRoute(default_route(index, gw6)),
                        new,
                    ),
                    "adding the IPv6 default route via fd00::2",
                )?
            }
            // A kernel booted with ipv6.disable=1 has no IPv6 to configure: carry on.
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return context(Err(e), "adding fd00::100/64 to tap0"),
        }
    }
    Ok(())
}

/// Routes every packet that carries `mark` to this namespace itself (`ip rule add
/// fwmark MARK lookup TABLE` and `ip route add local default dev lo table TABLE`, for
/// IPv4 or IPv6): the replies of the container's servers to forwarded clients, whose
/// addresses are not local here (forward.rs). The route gives a datagram with no
/// source yet (a UDP server bound to 0.0.0.0 or [::] answering,
/// `route_udp_replies_locally`) the source 127.0.0.1 or ::1, the address the
/// forwarder's inner socket is connected to (left to choose, IPv6 would take tap0's).
pub fn route_marked_locally(mark: u32, table: u32, v6: bool) -> io::Result<()> {
    let family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let mut nl = Netlink::open()?;
    let lo = if_index("lo")?;
    // IPv6 takes no route through a device that is down, and 127.0.0.1 (the IPv4
    // route's source) exists only once lo is up; the container may not have brought its
    // lo up yet (it does so itself too; twice is harmless).
    let mut link = LinkMessage::default();
    link.header.index = lo;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    nl.request(RouteNetlinkMessage::SetLink(link), 0)?;
    let mut rule = RuleMessage::default();
    rule.header.family = family;
    rule.header.action = RuleAction::ToTable;
    rule.attributes = vec![RuleAttribute::FwMark(mark), RuleAttribute::Table(table)];
    nl.request(
        RouteNetlinkMessage::NewRule(rule),
        NLM_F_CREATE | NLM_F_EXCL,
    )?;
    let mut route = RouteMessage::default();
    route.header.address_family = family;
    route.header.table = RouteHeader::RT_TABLE_UNSPEC;
    route.header.protocol = RouteProtocol::Boot;
    route.header.scope = RouteScope::Host;
    route.header.kind = RouteType::Local;
    route.attributes = vec![RouteAttribute::Table(table), RouteAttribute::Oif(lo)];
    route.attributes.push(RouteAttribute::PrefSource(if v6 {
        RouteAddress::Inet6(Ipv6Addr::LOCALHOST)
    } else {
        RouteAddress::Inet(Ipv4Addr::LOCALHOST)
    }));
    nl.request(
        RouteNetlinkMessage::NewRoute(route),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// Adds (or deletes) the rule that sends one forwarded UDP client's replies to `table`
/// (`ip rule add to CLIENT ipproto udp sport CTR_PORT dport CLIENT_PORT lookup TABLE`):
/// a UDP server's datagrams carry no mark, so only their addresses and ports can tell
/// them apart, and these match nothing but datagrams from the container port to that
/// client (`to CLIENT/128`, family inet6, for an IPv6 client). Needs Linux 4.17 (port
/// and protocol selectors).
///
/// The rules share one priority: left to choose, the kernel puts each new rule one
/// above the first, so with flows always alive the priorities would creep to 0.
pub fn route_udp_replies_locally(
    client: SocketAddr,
    ctr_port: u16,
    table: u32,
    add: bool,
) -> io::Result<()> {
    let mut rule = RuleMessage::default();
    (rule.header.family, rule.header.dst_len) = match client {
        SocketAddr::V4(_) => (AddressFamily::Inet, 32),
        SocketAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    rule.header.action = RuleAction::ToTable;
    let port = |p| RulePortRange { start: p, end: p };
    rule.attributes = vec![
        RuleAttribute::Destination(client.ip()),
        RuleAttribute::IpProtocol(IpProtocol::Udp),
        RuleAttribute::SourcePortRange(port(ctr_port)),
        RuleAttribute::DestinationPortRange(port(client.port())),
        RuleAttribute::Table(table),
        RuleAttribute::Priority(UDP_RULE_PRIORITY),
    ];
    let mut nl = Netlink::open()?;
    if add {
        nl.request(
            RouteNetlinkMessage::NewRule(rule),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        nl.request(RouteNetlinkMessage::DelRule(rule), 0)
    }
}

/// Below the main table's rule (32766), like the mark's rules.
const UDP_RULE_PRIORITY: u32 = 32000;

fn if_index(name: &str) -> io::Result<u32> {
    let cname =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `cname` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(cname.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

fn address(index: u32, ip: IpAddr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = prefix;
    msg.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    if ip.is_ipv6() {
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    msg
}

fn default_route(index: u32, gateway: IpAddr) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match gateway {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Oif(index));
    msg.attributes.push(RouteAttribute::Gateway(match gateway {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }));
    msg
}

struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 8192],
        })
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let len = packet.buffer_len();
        if len > self.buf.len() {
            self.buf.resize(len, 0);
        }
        packet.serialize(&mut self.buf[..len]);
        self.socket.send(&self.buf[..len], 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let size = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(err) = reply.payload {
                        return match err.code {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                }
                if size == 0 {
                    break;
                }
                offset += size;
            }
        }
    }
}

/// Adds what was being done to an error, once its errno has been looked at.
fn context(r: io::Result<()>, what: &str) -> io::Result<()> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}
