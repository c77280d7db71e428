//! What a container's network looks like, and the flags that change it.
//!
//! The addresses are slirp4netns's, so tools and habits carry over:
//!
//! ```text
//!   container tap0  10.0.2.100/24   fd00::100/64     MAC 02:00:0a:00:02:64
//!   gateway         10.0.2.2        fd00::2          MAC 02:00:0a:00:02:02 (the netstack)
//!   DNS             10.0.2.3        fd00::3          (forwarded to the host's resolver)
//! ```
//!
//! Nothing in 10.0.2.0/24 or fd00::/64 exists outside the netstack: a flow to any other
//! address of those prefixes is refused there, so it can never reach a real network that
//! happens to use the same range. The host's loopback is the gateway's address only with
//! `allow_host_loopback=true`.
//!
//! Parsing here is pure (no system calls), so the CLI and the tests use it directly:
//! `--network nook[:allow_host_loopback=true,mtu=N,ipv6=false,dns=IP[:PORT]]` and
//! `-p [HOSTIP:]HOSTPORT[-END]:CTRPORT[-END][/tcp|/udp]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Error;

pub const CONTAINER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const DNS_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
pub const PREFIX_V4: u8 = 24;
pub const CONTAINER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const DNS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
pub const PREFIX_V6: u8 = 64;
pub const CONTAINER_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x00, 0x02, 0x64];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x00, 0x02, 0x02];
pub const TAP_NAME: &str = "tap0";
/// Large frames make the tap cheap per byte (one read per 64 KiB); as slirp4netns's and
/// pasta's default.
pub const DEFAULT_MTU: u32 = 65520;

/// The container's network, as `--network nook:...` and `-p` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mtu: u32,
    /// The host's 127.0.0.1 / ::1 as the gateway's 10.0.2.2 / fd00::2.
    pub allow_host_loopback: bool,
    pub ipv6: bool,
    /// Where queries to 10.0.2.3:53 go; `None`: the first nameserver of the host's
    /// /etc/resolv.conf (read when the netstack starts), port 53.
    pub dns: Option<SocketAddr>,
    pub publish: Vec<PortMapping>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mtu: DEFAULT_MTU,
            allow_host_loopback: false,
            ipv6: true,
            dns: None,
            publish: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One published port: the host listens on `host`, the container receives on `ctr_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    pub host: SocketAddr,
    pub ctr_port: u16,
    pub proto: Proto,
    /// No host IP was given: `host` is 0.0.0.0 (as `nook port` shows it, podman's
    /// spelling) and the listener takes both families, one dual-stack socket on [::],
    /// or IPv4 alone where the host has no IPv6 (as podman's rootlessport and pasta).
    pub all_families: bool,
}

impl Config {
    /// Parses the options after `nook:` (comma-separated `key=value`).
    pub fn parse_options(options: &str) -> Result<Config, Error> {
        let mut config = Config::default();
        for opt in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = opt.split_once('=').unwrap_or((opt, "true"));
            let bad = |why: &str| Error::Config(format!("--network nook option {opt:?}: {why}"));
            match key {
                "allow_host_loopback" => {
                    config.allow_host_loopback =
                        parse_bool(value).ok_or_else(|| bad("expected true or false"))?
                }
                "ipv6" | "enable_ipv6" => {
                    config.ipv6 = parse_bool(value).ok_or_else(|| bad("expected true or false"))?
                }
                "mtu" => {
                    let mtu: u32 = value.parse().map_err(|_| bad("expected a number"))?;
                    if !(1280..=65520).contains(&mtu) {
                        return Err(bad("the MTU must be within 1280..=65520"));
                    }
                    config.mtu = mtu;
                }
                "dns" => {
                    let addr = value
                        .parse::<SocketAddr>()
                        .or_else(|_| value.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                        .map_err(|_| bad("expected IP or IP:PORT of a DNS server on the host"))?;
                    config.dns = Some(addr);
                }
                _ => {
                    return Err(bad(
                        "unknown option (known: allow_host_loopback=BOOL, mtu=N, ipv6=BOOL, \
                         dns=IP[:PORT])",
                    ))
                }
            }
        }
        Ok(config)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

impl PortMapping {
    /// `-p [HOSTIP:]HOSTPORT[-END]:CTRPORT[-END][/tcp|/udp]`, also `-p CTRPORT` (host port
    /// = container port), as podman. A range maps port by port; both ranges must have
    /// the same length. HOSTIP may be `[v6]`; without one, every address of both
    /// families (`all_families`).
    pub fn parse(spec: &str) -> Result<Vec<PortMapping>, Error> {
        let bad = |why: &str| {
            Error::Config(format!(
                "-p {spec:?}: {why} (expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp], \
                 ports or ranges such as 8000-8010)"
            ))
        };
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, "tcp")) => (r, Proto::Tcp),
            Some((r, "udp")) => (r, Proto::Udp),
            Some((_, p)) => return Err(bad(&format!("unknown protocol {p:?}"))),
            None => (spec, Proto::Tcp),
        };
        // Split off the container part (after the last ':'), then an optional host IP.
        let (host_part, ctr) = match rest.rsplit_once(':') {
            Some((h, c)) => (Some(h), c),
            None => (None, rest),
        };
        let (ip, host_ports) = match host_part {
            None => (None, ctr),
            Some(h) => match h.rsplit_once(':') {
                Some((ip, ports)) => {
                    let ip = ip.trim_start_matches('[').trim_end_matches(']');
                    let ip: IpAddr = ip
                        .parse()
                        .map_err(|_| bad(&format!("bad host IP {ip:?}")))?;
                    (Some(ip), ports)
                }
                None => (None, h),
            },
        };
        let host =
            parse_range(host_ports).ok_or_else(|| bad(&format!("bad host port {host_ports:?}")))?;
        let ctr = parse_range(ctr).ok_or_else(|| bad(&format!("bad container port {ctr:?}")))?;
        if host.1 - host.0 != ctr.1 - ctr.0 {
            return Err(bad("the host and container ranges differ in length"));
        }
        let all_families = ip.is_none();
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok((0..=(host.1 - host.0))
            .map(|i| PortMapping {
                host: SocketAddr::new(ip, host.0 + i),
                ctr_port: ctr.0 + i,
                proto,
                all_families,
            })
            .collect())
    }
}

/// `N` or `N-M`, ports 1..=65535, N <= M.
fn parse_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
    (a > 0 && a <= b).then_some((a, b))
}

/// The first `nameserver` of a resolv.conf text, as the host's resolver would use it.
pub fn first_nameserver(resolv_conf: &str) -> Option<IpAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.split('%').next()?.parse().ok())
            .flatten()
    })
}

/// The container's /etc/resolv.conf: the netstack's DNS address, and the host's
/// `search` and `options` lines so short names resolve as on the host.
pub fn container_resolv_conf(host_resolv_conf: &str) -> String {
    let mut out = format!("nameserver {DNS_V4}\n");
    for line in host_resolv_conf.lines() {
        let first = line.split_whitespace().next();
        if matches!(first, Some("search") | Some("domain") | Some("options")) {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_options() {
        assert_eq!(Config::parse_options("").unwrap(), Config::default());
        let c =
            Config::parse_options("allow_host_loopback=true,mtu=1500,dns=127.0.0.1:5353").unwrap();
        assert!(c.allow_host_loopback);
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.dns, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(
            Config::parse_options("dns=::1").unwrap().dns,
            Some("[::1]:53".parse().unwrap())
        );
        assert!(
            Config::parse_options("allow_host_loopback")
                .unwrap()
                .allow_host_loopback
        );
        assert!(!Config::parse_options("ipv6=false").unwrap().ipv6);
        assert!(Config::parse_options("mtu=100").is_err());
        assert!(Config::parse_options("bogus=1").is_err());
        assert!(Config::parse_options("allow_host_loopback=maybe").is_err());
    }

    #[test]
    fn publish_specs() {
        let m = PortMapping::parse("8080:80").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].host, "0.0.0.0:8080".parse().unwrap());
        assert_eq!((m[0].ctr_port, m[0].proto), (80, Proto::Tcp));
        assert!(m[0].all_families, "no host IP: both families");
        let m = PortMapping::parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(m[0].host, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(m[0].proto, Proto::Udp);
        assert!(!m[0].all_families);
        let m = PortMapping::parse("0.0.0.0:8080:80").unwrap();
        assert!(!m[0].all_families, "an explicit 0.0.0.0 is IPv4 only");
        let m = PortMapping::parse("[::1]:8443:443").unwrap();
        assert_eq!(m[0].host, "[::1]:8443".parse().unwrap());
        assert!(!m[0].all_families);
        let m = PortMapping::parse("8000-8002:9000-9002/tcp").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!((m[2].host.port(), m[2].ctr_port), (8002, 9002));
        let m = PortMapping::parse("80").unwrap();
        assert_eq!((m[0].host.port(), m[0].ctr_port), (80, 80));
        assert!(PortMapping::parse("8000-8002:9000").is_err());
        assert!(PortMapping::parse("0:80").is_err());
        assert!(PortMapping::parse("80:80/sctp").is_err());
        assert!(PortMapping::parse("1.2.3:80:80").is_err());
        assert!(PortMapping::parse("x:y").is_err());
    }

    #[test]
    fn resolv_conf() {
        let host = "# comment\nsearch example.org\nnameserver 127.0.0.53\nnameserver 1.1.1.1\noptions edns0\n";
        assert_eq!(first_nameserver(host), Some("127.0.0.53".parse().unwrap()));
        assert_eq!(
            first_nameserver("nameserver fe80::1%eth0\n"),
            Some("fe80::1".parse().unwrap())
        );
        assert_eq!(first_nameserver(""), None);
        assert_eq!(
            container_resolv_conf(host),
            "nameserver 10.0.2.3\nsearch example.org\noptions edns0\n"
        );
    }
}
