//! Port forwarding (`-p`): host listeners spliced to sockets inside the container.
//!
//! ```text
//!  client ──► host listener (bound by the supervisor before the container starts)
//!               accept ─► agent: "a TCP socket, please" ─► inner socket (container netns)
//!               bind(client addr) ─► connect(127.0.0.1:CTRPORT / [::1]:CTRPORT)
//!  outer ⇄ inner: splice(2) through a pipe each way, never through user space
//! ```
//!
//! Without a host IP (`-p 8080:80`, `-P`) the listener takes both families: one
//! dual-stack socket on [::], or IPv4 alone where the host has no IPv6.
//!
//! This path does not touch the tap or smoltcp: the inner connection is an ordinary
//! loopback connection in the container's namespace, so forwarded throughput is close
//! to the host's own loopback (two kernel TCP stacks and page moves, no copies here).
//!
//! What the container sees as the client address:
//! - TCP: every client with its own address and port (IPv4 clients of a dual-stack
//!   listener as IPv4). The inner socket binds the client's address before connecting.
//!   A loopback address exists in the container's namespace too; any other does not, so
//!   the agent makes TCP inner sockets transparent (IP_TRANSPARENT / IPV6_TRANSPARENT,
//!   allowed to it as the owner of the namespace's user namespace) and marked, and sets
//!   up the namespace so that the server's replies come back to them instead of leaving
//!   by the tap: net.ipv4.tcp_fwmark_accept gives the accepted connection the SYN's
//!   mark (for IPv6 too), and a rule per family sends marked packets to a table whose
//!   one route is `local default dev lo`. Only forwarded connections carry the mark, so
//!   the container's own traffic is routed as before. An IPv6 client (::1 included)
//!   goes to [::1]:CTRPORT; when that is refused (a server listening on IPv4 only) the
//!   forwarder tries again, without blocking, from 127.0.0.1 with an ephemeral port,
//!   which is how the server sees such a client then. Link-local IPv6 clients (their
//!   scope is a host interface) go that way at once. If the namespace setup fails (a
//!   kernel without policy routing), a non-loopback client is seen as 127.0.0.1 with an
//!   ephemeral port.
//! - UDP: a loopback client, and an IPv4 or IPv6 client from elsewhere, with its own
//!   address and port. A UDP server's replies carry no mark to route by, so the agent
//!   adds a rule per flow (`to CLIENT ipproto udp sport CTRPORT dport CLIENTPORT`,
//!   removed with the flow) to the table above, and hands out a transparent socket to
//!   bind the client's address: only datagrams from the container port to that very
//!   client are delivered locally, and a reply of a server bound to 0.0.0.0 or [::]
//!   takes the table route's source, 127.0.0.1 or ::1, which the inner socket is
//!   connected to. As with TCP, an IPv6 client (::1 included) goes to [::1]:CTRPORT
//!   first; a server listening on IPv4 only refuses that datagram (the kernel's ICMPv6
//!   port unreachable takes the reflected mark back to the inner socket, an error on
//!   it), and the flow goes on from 127.0.0.1 with an ephemeral port, sending its
//!   first datagram again. Past MAX_ROUTED_UDP_FLOWS flows, or without the rule (Linux
//!   < 4.17), a client from elsewhere is seen as 127.0.0.1 with an ephemeral port, as
//!   is a link-local IPv6 client.
//!
//! UDP: each client address gets an inner UDP socket (bound and connected the same
//! way); datagrams are relayed with one recvfrom/send each way; idle flows expire.
//!
//! One thread, one epoll, edge-triggered; errors on one side reset the other (SO_LINGER
//! 0), a FIN becomes shutdown(SHUT_WR) once the pipe is drained.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::agent::{Channel, SocketKind};
use crate::config::{PortMapping, Proto};
use crate::sys::{self, Epoll, Slab};
use crate::Error;

const TOKEN_STOP: u64 = 1;
const KIND_LISTEN: u64 = 2;
const KIND_CONN: u64 = 3;
const KIND_UDP_INNER: u64 = 4;
/// Each direction's pipe. Its size counts against the user's pipe-user-pages-soft (64
/// MiB by default) while the connection lives, and past that every new pipe of the
/// user's gets two pages; 256 KiB forwarded as fast as 1 MiB here (iperf3, 6 runs
/// each: 16.0 vs 15.0 Gbit/s) and 64 KiB did not (11.8).
const PIPE_SIZE: usize = 256 << 10;
const CONN_EVENTS: u32 = sys::IN | sys::OUT | sys::RDHUP | sys::ET;
/// ERR: a refusal of the flow's datagrams (epoll reports it anyway; said for the reader).
const UDP_EVENTS: u32 = sys::IN | sys::ERR | sys::ET;
const UDP_IDLE: Duration = Duration::from_secs(60);
const MAX_UDP_FLOWS: usize = 4096;
/// Flows whose replies have a routing rule of their own: every route lookup in the
/// container walks the rules, so past these, clients are seen as 127.0.0.1.
const MAX_ROUTED_UDP_FLOWS: usize = 256;

fn token(kind: u64, index: usize) -> u64 {
    (index as u64) << 3 | kind
}

/// A bound host socket for one published port.
pub struct Listener {
    fd: OwnedFd,
    mapping: PortMapping,
}

/// The lowest port an unprivileged process may bind in this network namespace (the
/// caller's: host listeners are bound there), if the kernel says.
fn unprivileged_port_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What to do about a failed bind of a published port, as "; ..." to append (empty when
/// there is nothing to add). `start`: net.ipv4.ip_unprivileged_port_start (it covers
/// IPv6 too).
fn bind_hint(e: &io::Error, m: &PortMapping, start: Option<u16>) -> String {
    let port = m.host.port();
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => match start {
            Some(start) if port < start => {
                // 80 → 8080, 443 → 8443: the usual stand-ins.
                let higher = (u32::from(port) + 8000).clamp(u32::from(start), 65535);
                format!(
                    "; ports below {start} need privilege (net.ipv4.ip_unprivileged_port_start \
                     is {start} here): publish a higher host port (-p {higher}:{}), or an \
                     administrator can let every user bind from {port} on with `sysctl \
                     net.ipv4.ip_unprivileged_port_start={port}` (and a file in \
                     /etc/sysctl.d/ to keep it)",
                    m.ctr_port
                )
            }
            _ => String::new(),
        },
        Some(libc::EADDRINUSE) => {
            "; another socket already uses it: stop that program or publish another host port"
                .into()
        }
        Some(libc::EADDRNOTAVAIL) => format!(
            "; {} is not an address of this host: use one `ip addr` lists, or 0.0.0.0",
            m.host.ip()
        ),
        _ => String::new(),
    }
}

/// Binds every published port now, so that a port in use fails `nook run` before the
/// container starts.
pub fn bind_all(mappings: &[PortMapping]) -> Result<Vec<Listener>, Error> {
    mappings
        .iter()
        .map(|m| {
            let kind = match m.proto {
                Proto::Tcp => libc::SOCK_STREAM,
                Proto::Udp => libc::SOCK_DGRAM,
            };
            let proto = match m.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            };
            let what = |e: &io::Error| {
                format!(
                    "-p {}:{}/{proto}: cannot listen on {}: {e}",
                    m.host, m.ctr_port, m.host
                )
            };
            let fail = |e: io::Error| Error::Config(what(&e));
            let dual = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), m.host.port());
            let fd = match m.all_families {
                // One dual-stack socket serves both families (IPv4 clients arrive as
                // ::ffff:a.b.c.d, which the forwarder unmaps). Only where the host has
                // no IPv6 at all does it fall back to IPv4 alone; any other failure
                // (the port is taken ...) is the user's to see.
                true => match listen_on(&dual, kind, m.proto) {
                    Err(e) if no_ipv6(&e) => listen_on(&m.host, kind, m.proto),
                    other => other,
                },
                false => listen_on(&m.host, kind, m.proto),
            }
            .map_err(|e| Error::Config(what(&e) + &bind_hint(&e, m, unprivileged_port_start())))?;
            let mut mapping = *m;
            if m.host.port() == 0 {
                // -P: the kernel chose the port; say which. A warning only so that it
                // shows at the default level: nothing else tells the user the port yet.
                let port = sys::local_addr(fd.as_raw_fd()).map_err(fail)?.port();
                mapping.host.set_port(port);
                tracing::warn!(
                    "publishing {} -> container port {}/{proto}",
                    mapping.host,
                    m.ctr_port
                );
            }
            Ok(Listener { fd, mapping })
        })
        .collect()
}

/// A bound (and for TCP listening) socket on `addr`; an unspecified IPv6 address takes
/// IPv4 clients too, a specific one only its own.
fn listen_on(addr: &SocketAddr, kind: libc::c_int, proto: Proto) -> io::Result<OwnedFd> {
    let fd = sys::socket(sys::family(addr), kind, 0)?;
    if addr.is_ipv6() {
        // Set either way: net.ipv6.bindv6only may have changed the default.
        let _ = sys::set_v6only(fd.as_raw_fd(), !addr.ip().is_unspecified());
    }
    if proto == Proto::Tcp {
        sys::set_reuseaddr(fd.as_raw_fd())?;
    }
    sys::bind(fd.as_raw_fd(), addr)?;
    if proto == Proto::Tcp {
        sys::listen(fd.as_raw_fd(), 1024)?;
    }
    Ok(fd)
}

/// The error of an IPv6 socket on a host without IPv6 (`ipv6.disable=1`, a kernel
/// without it).
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

struct Direction {
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    queued: usize,
    eof: bool,
    done: bool,
}

impl Direction {
    fn new() -> io::Result<Direction> {
        let (pipe_r, pipe_w) = sys::pipe(PIPE_SIZE)?;
        Ok(Direction {
            pipe_r,
            pipe_w,
            queued: 0,
            eof: false,
            done: false,
        })
    }

    /// Moves what `from` has into `to` through the pipe until neither side can move.
    fn pump(&mut self, from: RawFd, to: RawFd) -> io::Result<()> {
        loop {
            let mut progress = false;
            if !self.eof {
                match sys::splice(from, self.pipe_w.as_raw_fd(), PIPE_SIZE)? {
                    Some(0) => {
                        self.eof = true;
                        progress = true;
                    }
                    Some(n) => {
                        self.queued += n;
                        progress = true;
                    }
                    None => {}
                }
            }
            if self.queued > 0 {
                if let Some(n) = sys::splice(self.pipe_r.as_raw_fd(), to, self.queued)? {
                    self.queued -= n;
                    progress |= n > 0;
                }
            }
            if self.eof && self.queued == 0 && !self.done {
                sys::shutdown_write(to);
                self.done = true;
            }
            if !progress {
                return Ok(());
            }
        }
    }
}

struct Conn {
    outer: OwnedFd,
    inner: OwnedFd,
    connecting: bool,
    /// While the first try, to [::1] from an IPv6 client's address, is connecting: the
    /// container port to try on 127.0.0.1 instead if it fails.
    fallback: Option<u16>,
    up: Direction,
    down: Direction,
}

struct UdpFlow {
    listener: usize,
    client: SocketAddr,
    inner: OwnedFd,
    last: Instant,
    /// The client whose replies the agent routes to `inner` by a rule of their own,
    /// to be dropped with the flow.
    routed: Option<SocketAddr>,
    /// While `inner` goes to [::1] and the server has not answered yet: the flow's
    /// first datagram, to send again from 127.0.0.1 if [::1] refuses it (`udp_fall_back`).
    retry: Option<Vec<u8>>,
}

pub struct Forwarder {
    epoll: Epoll,
    channel: Channel,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    udp: Slab<UdpFlow>,
    udp_index: HashMap<(usize, SocketAddr), usize>,
    buf: Vec<u8>,
    next_expiry: Instant,
    /// Whether the agent's IPv6 TCP sockets may bind a non-local client address; false
    /// from its first plain one (its setup is done once, at start).
    v6_transparent: bool,
    /// UDP flows with a `routed` client.
    udp_routed: usize,
}

impl Forwarder {
    pub fn new(listeners: Vec<Listener>, channel: Channel, stop: RawFd) -> io::Result<Forwarder> {
        let epoll = Epoll::new()?;
        epoll.add(stop, sys::IN, TOKEN_STOP)?;
        for (i, l) in listeners.iter().enumerate() {
            epoll.add(l.fd.as_raw_fd(), sys::IN | sys::ET, token(KIND_LISTEN, i))?;
        }
        Ok(Forwarder {
            epoll,
            channel,
            listeners,
            conns: Slab::default(),
            udp: Slab::default(),
            udp_index: HashMap::new(),
            buf: vec![0; 65536],
            next_expiry: Instant::now() + Duration::from_secs(1),
            v6_transparent: true,
            udp_routed: 0,
        })
    }

    /// Runs until the stop eventfd fires.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 128];
        loop {
            let timeout = if self.udp.is_empty() { -1 } else { 1000 };
            let n = self.epoll.wait(&mut events, timeout)?;
            for ev in &events[..n] {
                let tok = ev.u64;
                if tok == TOKEN_STOP {
                    return Ok(());
                }
                let index = (tok >> 3) as usize;
                match tok & 7 {
                    KIND_LISTEN => self.listener_ready(index),
                    KIND_CONN => self.conn_ready(index),
                    KIND_UDP_INNER => self.udp_inner_ready(index),
                    _ => {}
                }
            }
            self.expire_udp();
        }
    }

    fn listener_ready(&mut self, index: usize) {
        let mapping = self.listeners[index].mapping;
        match mapping.proto {
            Proto::Tcp => loop {
                let fd = self.listeners[index].fd.as_raw_fd();
                match sys::accept(fd) {
                    Ok(Some((outer, client))) => {
                        if let Err(e) = self.connect_inner(outer, client, mapping.ctr_port) {
                            tracing::warn!(
                                "port forward to container port {}: {e}",
                                mapping.ctr_port
                            );
                        }
                    }
                    Ok(None) => return,
                    // ECONNABORTED and the like concern one client; EMFILE would spin.
                    Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return,
                    Err(_) => continue,
                }
            },
            Proto::Udp => self.udp_listener_ready(index),
        }
    }

    /// The inner end of a forwarded connection: a socket born in the container's
    /// namespace, bound to the client's address when the container can answer it there
    /// (a loopback address, or any with a transparent socket).
    fn inner_socket(
        &self,
        proto: Proto,
        client: Option<SocketAddr>,
        ctr_port: u16,
    ) -> io::Result<(OwnedFd, SocketAddr)> {
        let client = client.map(unmap);
        // An IPv6 client from elsewhere goes to 127.0.0.1, as the server may listen on
        // IPv4 only; ::1 has to go to ::1 to keep its address. (Both protocols try [::1]
        // from the client's address first: start_inner, routed_udp_inner.)
        let client = client.filter(|c| c.is_ipv4() || c.ip().is_loopback());
        let v6 = client.is_some_and(|c| c.is_ipv6());
        let kind = match (proto, v6) {
            (Proto::Tcp, false) => SocketKind::Tcp4,
            (Proto::Tcp, true) => SocketKind::Tcp6,
            (Proto::Udp, false) => SocketKind::Udp4,
            (Proto::Udp, true) => SocketKind::Udp6,
        };
        let inner = self.channel.socket(kind)?;
        let fd = inner.fd;
        let bindable = client.filter(|c| inner.transparent || c.ip().is_loopback());
        if let Some(c) = bindable {
            // Taken inside already (or a privileged port): an ephemeral port will do.
            if sys::bind(fd.as_raw_fd(), &c).is_err() {
                let any_port = SocketAddr::new(c.ip(), 0);
                let _ = sys::bind(fd.as_raw_fd(), &any_port);
            }
        }
        let target = if v6 {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), ctr_port)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), ctr_port)
        };
        Ok((fd, target))
    }

    /// Starts the inner connection of a TCP client: an IPv6 client's from its own
    /// address to [::1] when it can bind that (`fallback` is then set), any other's as
    /// `inner_socket` says. Returns the socket and whether it is connected already.
    fn start_inner(
        &mut self,
        client: Option<SocketAddr>,
        ctr_port: u16,
    ) -> io::Result<(OwnedFd, bool, Option<u16>)> {
        let client = client.map(unmap);
        if let Some(c) = client.and_then(own_v6) {
            if c.ip().is_loopback() || self.v6_transparent {
                if let Some((fd, connected)) = self.try_v6(c, ctr_port) {
                    return Ok((fd, connected, Some(ctr_port)));
                }
            }
        }
        // An IPv6 client left here goes to 127.0.0.1 from an ephemeral port.
        let client = client.filter(|c| c.is_ipv4());
        let (inner, target) = self.inner_socket(Proto::Tcp, client, ctr_port)?;
        let _ = sys::set_nodelay(inner.as_raw_fd());
        let connected = sys::connect(inner.as_raw_fd(), &target)?;
        Ok((inner, connected, None))
    }

    /// An inner socket bound to the IPv6 `client`'s address and connecting to
    /// [::1]:`ctr_port`; None when it cannot be (no transparent socket, the connect
    /// refused at once), so that the caller goes by IPv4.
    fn try_v6(&mut self, client: SocketAddrV6, ctr_port: u16) -> Option<(OwnedFd, bool)> {
        let inner = self.channel.socket(SocketKind::Tcp6).ok()?;
        if !inner.transparent && !client.ip().is_loopback() {
            self.v6_transparent = false;
            return None;
        }
        let fd = inner.fd;
        let own = SocketAddr::V6(client);
        // Taken inside already (or a privileged port): an ephemeral port will do.
        if sys::bind(fd.as_raw_fd(), &own).is_err() {
            sys::bind(fd.as_raw_fd(), &SocketAddr::new(own.ip(), 0)).ok()?;
        }
        let _ = sys::set_nodelay(fd.as_raw_fd());
        let target = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), ctr_port);
        let connected = sys::connect(fd.as_raw_fd(), &target).ok()?;
        Some((fd, connected))
    }

    fn connect_inner(
        &mut self,
        outer: OwnedFd,
        client: Option<SocketAddr>,
        ctr_port: u16,
    ) -> io::Result<()> {
        let _ = sys::set_nodelay(outer.as_raw_fd());
        let (inner, connected, fallback) = match self.start_inner(client, ctr_port) {
            Ok(started) => started,
            Err(e) => {
                // Nothing listens in the container: the client sees a reset.
                sys::set_linger_zero(outer.as_raw_fd());
                return Err(e);
            }
        };
        let conn = Conn {
            outer,
            inner,
            connecting: !connected,
            fallback: fallback.filter(|_| !connected),
            up: Direction::new()?,
            down: Direction::new()?,
        };
        let (o, i) = (conn.outer.as_raw_fd(), conn.inner.as_raw_fd());
        let index = self.conns.insert(conn);
        let added = self
            .epoll
            .add(o, CONN_EVENTS, token(KIND_CONN, index))
            .and_then(|_| self.epoll.add(i, CONN_EVENTS, token(KIND_CONN, index)));
        if let Err(e) = added {
            self.close_conn(index, true);
            return Err(e);
        }
        Ok(())
    }

    /// The try to [::1] failed (the server listens on IPv4 only): the same connection
    /// goes on with an inner socket to 127.0.0.1, connecting in the background as the
    /// first did; its completion wakes the connection's token like the first's.
    fn fall_back_to_v4(&mut self, index: usize, ctr_port: u16) {
        let started = self
            .inner_socket(Proto::Tcp, None, ctr_port)
            .and_then(|(fd, target)| {
                let _ = sys::set_nodelay(fd.as_raw_fd());
                let connected = sys::connect(fd.as_raw_fd(), &target)?;
                Ok((fd, connected))
            });
        let (fd, connected) = match started {
            Ok(started) => started,
            Err(_) => return self.close_conn(index, true),
        };
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        self.epoll.delete(conn.inner.as_raw_fd());
        let i = fd.as_raw_fd();
        conn.inner = fd;
        conn.fallback = None;
        conn.connecting = !connected;
        // Added with the connection's events, a socket that connected already reports
        // itself ready at once (EPOLLOUT), so no event is lost to edge triggering.
        if self
            .epoll
            .add(i, CONN_EVENTS, token(KIND_CONN, index))
            .is_err()
        {
            self.close_conn(index, true);
        }
    }

    fn conn_ready(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        if conn.connecting {
            // Both sockets share the token: see whether the inner connect has ended.
            if !matches!(sys::take_error(conn.inner.as_raw_fd()), Ok(None)) {
                if let Some(port) = conn.fallback {
                    return self.fall_back_to_v4(index, port);
                }
                // Refused inside: the client sees a reset, as from a closed port.
                self.close_conn(index, true);
                return;
            }
            if !sys::is_connected(conn.inner.as_raw_fd()) {
                return;
            }
            conn.connecting = false;
            conn.fallback = None;
        }
        let (o, i) = (conn.outer.as_raw_fd(), conn.inner.as_raw_fd());
        let result = conn.up.pump(o, i).and_then(|_| conn.down.pump(i, o));
        match result {
            Err(_) => self.close_conn(index, true),
            Ok(()) if conn.up.done && conn.down.done => self.close_conn(index, false),
            Ok(()) => {}
        }
    }

    fn close_conn(&mut self, index: usize, reset: bool) {
        if let Some(conn) = self.conns.remove(index) {
            self.epoll.delete(conn.outer.as_raw_fd());
            self.epoll.delete(conn.inner.as_raw_fd());
            if reset {
                sys::set_linger_zero(conn.outer.as_raw_fd());
                sys::set_linger_zero(conn.inner.as_raw_fd());
            }
        }
    }

    fn udp_listener_ready(&mut self, index: usize) {
        loop {
            let fd = self.listeners[index].fd.as_raw_fd();
            let (n, client) = match sys::recv_from(fd, &mut self.buf) {
                Ok(Some((n, Some(client)))) => (n, client),
                Ok(Some((_, None))) => continue,
                Ok(None) | Err(_) => return,
            };
            let flow = match self.udp_index.get(&(index, client)) {
                Some(&f) => f,
                None => match self.open_udp(index, client, n) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!("UDP port forward: {e}");
                        continue;
                    }
                },
            };
            let Some(f) = self.udp.get_mut(flow) else {
                continue;
            };
            f.last = Instant::now();
            let sent = sys::send(f.inner.as_raw_fd(), &self.buf[..n]);
            // A send takes the socket's pending error, and with it the error event that
            // udp_inner_ready would have acted on.
            if is_refused(&sent) && f.retry.is_some() {
                self.udp_fall_back(flow);
            }
        }
    }

    /// A new flow for `client`, whose first datagram is `self.buf[..first]`.
    fn open_udp(&mut self, listener: usize, client: SocketAddr, first: usize) -> io::Result<usize> {
        if self.udp.len() >= MAX_UDP_FLOWS {
            if let Some(oldest) = self.udp.iter().min_by_key(|(_, f)| f.last).map(|(i, _)| i) {
                self.remove_udp(oldest);
            }
        }
        let ctr_port = self.listeners[listener].mapping.ctr_port;
        // A client with an address of its own (not loopback, no scope), while rules may
        // be added for it.
        let routable = match unmap(client) {
            SocketAddr::V4(c) => Some(SocketAddr::V4(c)),
            c => own_v6(c).map(SocketAddr::V6),
        }
        .filter(|c| !c.ip().is_loopback() && self.udp_routed < MAX_ROUTED_UDP_FLOWS);
        let routed_inner = match routable {
            Some(c) => self.routed_udp_inner(c, ctr_port)?,
            None => None,
        };
        let (inner, target, routed) = match routed_inner {
            Some(routed_inner) => routed_inner,
            None => {
                let (inner, target) = self.inner_socket(Proto::Udp, Some(client), ctr_port)?;
                (inner, target, None)
            }
        };
        if let Err(e) = sys::connect(inner.as_raw_fd(), &target) {
            if let Some(c) = routed {
                self.channel.forget_udp_flow(c, ctr_port);
            }
            return Err(e);
        }
        self.udp_routed += routed.is_some() as usize;
        let raw = inner.as_raw_fd();
        let index = self.udp.insert(UdpFlow {
            listener,
            client,
            inner,
            last: Instant::now(),
            routed,
            retry: target.is_ipv6().then(|| self.buf[..first].to_vec()),
        });
        self.udp_index.insert((listener, client), index);
        if let Err(e) = self
            .epoll
            .add(raw, UDP_EVENTS, token(KIND_UDP_INNER, index))
        {
            self.remove_udp(index);
            return Err(e);
        }
        Ok(index)
    }

    /// The inner socket of a client from elsewhere, bound to the client's address, and
    /// its target (127.0.0.1 or [::1]), when the agent routes the server's replies to
    /// it back here (the client is returned too: its rule ends with the flow). None
    /// when it cannot, for `inner_socket` to make one that goes to 127.0.0.1 from an
    /// ephemeral port.
    fn routed_udp_inner(
        &self,
        client: SocketAddr,
        ctr_port: u16,
    ) -> io::Result<Option<(OwnedFd, SocketAddr, Option<SocketAddr>)>> {
        let inner = self.channel.udp_flow_socket(client, ctr_port)?;
        if !inner.transparent {
            return Ok(None);
        }
        let target = SocketAddr::new(localhost(client.is_ipv6()), ctr_port);
        if sys::bind(inner.fd.as_raw_fd(), &client).is_ok() {
            return Ok(Some((inner.fd, target, Some(client))));
        }
        // The port is taken inside already: the rule names it, so it cannot serve.
        self.channel.forget_udp_flow(client, ctr_port);
        Ok(None)
    }

    /// [::1] refused the flow's datagram (the server listens on IPv4 only): the flow
    /// goes on from 127.0.0.1 with an ephemeral port, which is how the server sees the
    /// client then, starting with the first datagram again. Datagrams the client sent
    /// between the first and the refusal are lost, as UDP allows.
    fn udp_fall_back(&mut self, index: usize) {
        let Some(flow) = self.udp.get_mut(index) else {
            return;
        };
        let first = flow.retry.take().unwrap_or_default();
        let ctr_port = self.listeners[flow.listener].mapping.ctr_port;
        if let Some(c) = flow.routed.take() {
            self.udp_routed -= 1;
            self.channel.forget_udp_flow(c, ctr_port);
        }
        let started = self
            .inner_socket(Proto::Udp, None, ctr_port)
            .and_then(|(fd, target)| sys::connect(fd.as_raw_fd(), &target).map(|_| fd));
        let Ok(fd) = started else {
            return self.remove_udp(index);
        };
        let Some(flow) = self.udp.get_mut(index) else {
            return;
        };
        self.epoll.delete(flow.inner.as_raw_fd());
        flow.inner = fd;
        let raw = flow.inner.as_raw_fd();
        if self
            .epoll
            .add(raw, UDP_EVENTS, token(KIND_UDP_INNER, index))
            .is_err()
        {
            return self.remove_udp(index);
        }
        let _ = sys::send(raw, &first);
    }

    fn udp_inner_ready(&mut self, index: usize) {
        let Some(flow) = self.udp.get_mut(index) else {
            return;
        };
        flow.last = Instant::now();
        let listener = self.listeners[flow.listener].fd.as_raw_fd();
        loop {
            let read = sys::read(flow.inner.as_raw_fd(), &mut self.buf);
            match read {
                Ok(Some(n)) => {
                    // The server answers on [::1]: no falling back for this flow.
                    flow.retry = None;
                    let _ = sys::send_to(listener, &self.buf[..n], &flow.client);
                }
                // An ICMP port unreachable (routed back here like the server's replies,
                // by the reflected mark) reports the refusal on the connected socket.
                _ if is_refused(&read) && flow.retry.is_some() => return self.udp_fall_back(index),
                Ok(None) | Err(_) => return,
            }
        }
    }

    fn remove_udp(&mut self, index: usize) {
        if let Some(flow) = self.udp.remove(index) {
            self.epoll.delete(flow.inner.as_raw_fd());
            self.udp_index.remove(&(flow.listener, flow.client));
            if let Some(c) = flow.routed {
                self.udp_routed -= 1;
                let ctr_port = self.listeners[flow.listener].mapping.ctr_port;
                self.channel.forget_udp_flow(c, ctr_port);
            }
        }
    }

    fn expire_udp(&mut self) {
        let now = Instant::now();
        if self.udp.is_empty() || now < self.next_expiry {
            return;
        }
        self.next_expiry = now + Duration::from_secs(1);
        let old: Vec<usize> = self
            .udp
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) > UDP_IDLE)
            .map(|(i, _)| i)
            .collect();
        for i in old {
            self.remove_udp(i);
        }
    }
}

/// The address an IPv6 client (already `unmap`ped) can have inside the container too:
/// one without a scope, as a link-local address's names an interface of the host's.
fn own_v6(client: SocketAddr) -> Option<SocketAddrV6> {
    match client {
        SocketAddr::V6(c) if c.scope_id() == 0 => Some(SocketAddrV6::new(*c.ip(), c.port(), 0, 0)),
        _ => None,
    }
}

fn localhost(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// Whether a send or read on a connected UDP socket failed on the ICMP "port
/// unreachable" the kernel answered an earlier datagram with.
fn is_refused<T>(result: &io::Result<T>) -> bool {
    matches!(result, Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED))
}

/// ::ffff:a.b.c.d (a v4 client on a dual-stack listener) → a.b.c.d.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::{bind_hint, own_v6, unmap, PortMapping, Proto};
    use std::io;
    use std::net::SocketAddr;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_refused_low_port_names_the_sysctl_and_its_value() {
        let m = PortMapping {
            host: addr("0.0.0.0:80"),
            ctr_port: 80,
            proto: Proto::Tcp,
            all_families: false,
        };
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        let hint = bind_hint(&denied, &m, Some(1024));
        assert!(
            hint.contains("net.ipv4.ip_unprivileged_port_start is 1024"),
            "{hint}"
        );
        assert!(hint.contains("-p 8080:80"), "{hint}");
        assert!(
            hint.contains("sysctl net.ipv4.ip_unprivileged_port_start=80"),
            "{hint}"
        );
        // Above the limit the refusal has another cause: no guess.
        let high = PortMapping {
            host: addr("0.0.0.0:2000"),
            ..m
        };
        assert_eq!(bind_hint(&denied, &high, Some(1024)), "");
        assert_eq!(bind_hint(&denied, &m, None), "");
        // A limit above port + 8000 suggests the limit itself.
        assert!(bind_hint(&denied, &m, Some(9000)).contains("-p 9000:80"));
        let in_use = io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert!(bind_hint(&in_use, &high, Some(1024)).contains("another host port"));
    }

    #[test]
    fn ipv6_clients_without_a_scope_keep_their_address() {
        let own = |s| own_v6(unmap(addr(s))).map(SocketAddr::V6);
        assert_eq!(own("[2001:db8::1]:4000"), Some(addr("[2001:db8::1]:4000")));
        assert_eq!(own("[::1]:4000"), Some(addr("[::1]:4000")));
        // A v4 client of a dual-stack listener goes the IPv4 way.
        assert_eq!(own("[::ffff:192.0.2.1]:4000"), None);
        assert_eq!(own("192.0.2.1:4000"), None);
        // fe80::1%2 names the host's interface 2, which is another one inside.
        let scoped: SocketAddr = "[fe80::1%2]:4000".parse().unwrap();
        assert_eq!(own_v6(scoped), None);
        // A flow label is the client's business, not the inner socket's.
        let labelled = SocketAddr::V6(std::net::SocketAddrV6::new(
            "2001:db8::1".parse().unwrap(),
            4000,
            7,
            0,
        ));
        assert_eq!(own_v6(labelled).map(|a| a.flowinfo()), Some(0));
    }
}
