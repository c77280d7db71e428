//! Where a container's flow goes on the host, or that it goes nowhere.
//!
//! Every new TCP connection and UDP flow asks here once, with the destination the
//! container addressed; the answer is the host socket address to connect to:
//!
//! | container's destination        | host destination                                  |
//! |--------------------------------|---------------------------------------------------|
//! | 10.0.2.3:53, [fd00::3]:53      | the host's resolver (resolv.conf, or `dns=`)      |
//! | 10.0.2.2, fd00::2              | 127.0.0.1 / ::1 with `allow_host_loopback`, else refused |
//! | anything else in 10.0.2.0/24 or fd00::/64 | refused: nothing else exists here      |
//! | loopback, multicast, broadcast, unspecified, link-local | refused             |
//! | any other address              | itself (the host kernel routes it)                |
//!
//! Refused TCP is answered with RST, refused UDP is dropped. Pure: no system calls, so
//! unit tests cover every row.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::config::{self, Config};

#[derive(Debug, Clone)]
pub struct Policy {
    pub allow_host_loopback: bool,
    pub dns: SocketAddr,
    /// Flows to other addresses go out (the normal case). Off in tests and the fuzz
    /// target, so no generated frame can make the stack connect anywhere but loopback.
    pub outbound: bool,
}

impl Policy {
    pub fn new(cfg: &Config, dns: SocketAddr) -> Policy {
        Policy {
            allow_host_loopback: cfg.allow_host_loopback,
            dns,
            outbound: true,
        }
    }

    /// The addresses the netstack itself owns (it answers ARP, NDP and ping for them).
    pub fn is_local(&self, addr: IpAddress) -> bool {
        match ip_of(addr) {
            IpAddr::V4(a) => a == config::GATEWAY_V4 || a == config::DNS_V4,
            IpAddr::V6(a) => a == config::GATEWAY_V6 || a == config::DNS_V6,
        }
    }

    pub fn tcp_target(&self, dst: IpEndpoint) -> Option<SocketAddr> {
        self.target(dst)
    }

    pub fn udp_target(&self, dst: IpEndpoint) -> Option<SocketAddr> {
        self.target(dst)
    }

    /// Where an echo request to `dst` goes. The netstack's own addresses (10.0.2.2,
    /// 10.0.2.3 and their v6 twins) never get here, as it answers their pings itself;
    /// for every other address the table's rows apply as they do to a port.
    pub fn icmp_target(&self, dst: IpAddress) -> Option<IpAddr> {
        if self.is_local(dst) {
            return None;
        }
        self.target(IpEndpoint::new(dst, 1)).map(|a| a.ip())
    }

    fn target(&self, dst: IpEndpoint) -> Option<SocketAddr> {
        let ip = ip_of(dst.addr);
        let port = dst.port;
        if port == 0 {
            return None;
        }
        match ip {
            IpAddr::V4(a) if a == config::DNS_V4 => (port == 53).then_some(self.dns),
            IpAddr::V6(a) if a == config::DNS_V6 => (port == 53).then_some(self.dns),
            IpAddr::V4(a) if a == config::GATEWAY_V4 => self
                .allow_host_loopback
                .then_some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
            IpAddr::V6(a) if a == config::GATEWAY_V6 => self
                .allow_host_loopback
                .then_some(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)),
            IpAddr::V4(a) => {
                let virtual_net = u32::from(a) >> (32 - config::PREFIX_V4)
                    == u32::from(config::GATEWAY_V4) >> (32 - config::PREFIX_V4);
                let special = a.is_loopback()
                    || a.is_unspecified()
                    || a.is_broadcast()
                    || a.is_multicast()
                    || a.is_link_local();
                (self.outbound && !virtual_net && !special).then_some(SocketAddr::new(ip, port))
            }
            IpAddr::V6(a) => {
                let virtual_net = a.segments()[..4] == config::GATEWAY_V6.segments()[..4];
                let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
                let mapped = a.to_ipv4_mapped().is_some();
                let special = a.is_loopback() || a.is_unspecified() || a.is_multicast();
                (self.outbound && !virtual_net && !link_local && !mapped && !special)
                    .then_some(SocketAddr::new(ip, port))
            }
        }
    }
}

/// smoltcp's address as std's (the host socket side).
pub fn ip_of(addr: IpAddress) -> IpAddr {
    match addr {
        IpAddress::Ipv4(a) => IpAddr::V4(a),
        IpAddress::Ipv6(a) => IpAddr::V6(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str, port: u16) -> IpEndpoint {
        let ip: IpAddr = s.parse().unwrap();
        let addr = match ip {
            IpAddr::V4(a) => IpAddress::Ipv4(a),
            IpAddr::V6(a) => IpAddress::Ipv6(a),
        };
        IpEndpoint::new(addr, port)
    }

    #[test]
    fn translation_table() {
        let dns: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let closed = Policy {
            allow_host_loopback: false,
            dns,
            outbound: true,
        };
        let open = Policy {
            allow_host_loopback: true,
            dns,
            outbound: true,
        };
        assert_eq!(closed.tcp_target(ep("10.0.2.3", 53)), Some(dns));
        assert_eq!(closed.udp_target(ep("fd00::3", 53)), Some(dns));
        assert_eq!(closed.udp_target(ep("10.0.2.3", 54)), None);
        assert_eq!(closed.tcp_target(ep("10.0.2.2", 80)), None);
        assert_eq!(
            open.tcp_target(ep("10.0.2.2", 80)),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            open.tcp_target(ep("fd00::2", 80)),
            Some("[::1]:80".parse().unwrap())
        );
        for refused in [
            "10.0.2.1",
            "10.0.2.100",
            "10.0.2.254",
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.1.1",
            "fd00::100",
            "fe80::1",
            "::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(open.tcp_target(ep(refused, 80)), None, "{refused}");
        }
        assert_eq!(
            closed.tcp_target(ep("192.0.2.7", 80)),
            Some("192.0.2.7:80".parse().unwrap())
        );
        assert_eq!(
            closed.tcp_target(ep("2001:db8::1", 443)),
            Some("[2001:db8::1]:443".parse().unwrap())
        );
        assert_eq!(closed.tcp_target(ep("192.0.2.7", 0)), None);
        assert!(closed.is_local(ep("10.0.2.2", 0).addr));
        let sandboxed = Policy {
            outbound: false,
            ..open.clone()
        };
        assert_eq!(sandboxed.tcp_target(ep("192.0.2.7", 80)), None);
        assert_eq!(
            sandboxed.tcp_target(ep("10.0.2.2", 80)),
            open.tcp_target(ep("10.0.2.2", 80))
        );
        assert!(!closed.is_local(ep("10.0.2.100", 0).addr));
        assert_eq!(
            closed.icmp_target(ep("192.0.2.7", 0).addr),
            Some("192.0.2.7".parse().unwrap())
        );
        for refused in ["10.0.2.2", "10.0.2.3", "10.0.2.77", "127.0.0.1", "fd00::9"] {
            assert_eq!(open.icmp_target(ep(refused, 0).addr), None, "{refused}");
        }
        assert_eq!(sandboxed.icmp_target(ep("192.0.2.7", 0).addr), None);
    }
}
