//! The netns agent: a small process that lives in the container's network namespace on
//! the supervisor's behalf.
//!
//! Why a process: a socket or tap belongs to the network namespace of the process that
//! created it, forever. The supervisor cannot enter the container's netns itself:
//! setns(2) into a netns needs CAP_SYS_ADMIN in the caller's own user namespace too,
//! which an unprivileged supervisor lacks on the host; and setns into the container's
//! user namespace (where it would have every capability, as its owner) is refused to a
//! multi-threaded process. So the supervisor forks, while still single-threaded, right
//! after writing the ID maps; the child joins the container's user namespace, then its
//! network namespace, and stays there. It never enters the container's mount or pid
//! namespace, so it is invisible inside (`ps` in the container does not show it) and it
//! uses the host's /dev/net/tun.
//!
//! What it does, over one SOCK_SEQPACKET socketpair:
//! 1. creates and configures tap0 (tap.rs, netlink.rs) and sends its descriptor;
//! 2. then serves "give me a socket" requests from the port forwarder: one byte names
//!    the kind (TCP/UDP × v4/v6), the reply carries a fresh socket of the container's
//!    namespace (SCM_RIGHTS). The forwarder binds and connects it itself; only the
//!    socket's birth needs the namespace. One round trip per forwarded connection.
//!    With ports published, the agent also routes marked packets back into the
//!    namespace and hands out TCP sockets that are transparent and marked (reply `X`),
//!    so a forwarded connection can come from the client's own address (forward.rs).
//!    A UDP flow's socket is asked for with the flow (`f`, client address and ports):
//!    the agent adds a rule routing the server's replies to that client back into the
//!    namespace before it hands out a transparent socket of the client's family, and
//!    drops the rule on `F`.
//!
//! It exits at EOF on the socketpair (the netstack stopped) and, through
//! PR_SET_PDEATHSIG, with the supervisor. The supervisor reaps it.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use crate::config::{Config, TAP_NAME};
use crate::{netlink, sys, tap, Error};

/// The mark the agent puts on the transparent sockets it hands the forwarder ("nook"),
/// and the routing table that delivers marked packets locally in the container's
/// namespace (forward.rs says why).
pub const FORWARD_MARK: u32 = 0x6e6f_6f6b;
pub const FORWARD_TABLE: u32 = 0x6e6f;

/// Kinds of socket the forwarder asks for.
#[derive(Debug, Clone, Copy)]
pub enum SocketKind {
    Tcp4,
    Tcp6,
    Udp4,
    Udp6,
}

impl SocketKind {
    fn byte(self) -> u8 {
        match self {
            SocketKind::Tcp4 => b't',
            SocketKind::Tcp6 => b'T',
            SocketKind::Udp4 => b'u',
            SocketKind::Udp6 => b'U',
        }
    }
}

/// The supervisor's handle on the agent process.
pub struct Agent {
    pub pid: libc::pid_t,
    /// Requests go here; moved to the forwarder thread when there is one.
    pub channel: Option<Channel>,
}

/// A socket from the agent; `transparent`: it may bind the client's address, which
/// need not exist in the container's namespace (IP_TRANSPARENT, and marked so that the
/// replies to it are routed back to it).
pub struct InnerSocket {
    pub fd: OwnedFd,
    pub transparent: bool,
}

/// The supervisor's end of the socketpair.
pub struct Channel {
    fd: OwnedFd,
}

impl Agent {
    /// Forks the agent into the namespaces of `container` (a host pid) and returns it
    /// with the tap it created.
    ///
    /// The caller must be single-threaded: the child runs Rust code (allocation
    /// included) after fork.
    pub fn spawn(container: libc::pid_t, cfg: &Config) -> Result<(Agent, OwnedFd), Error> {
        let open_ns = |kind: &str| {
            std::fs::File::open(format!("/proc/{container}/ns/{kind}"))
                .map(OwnedFd::from)
                .map_err(|e| Error::Setup(format!("opening the container's {kind} namespace: {e}")))
        };
        let user_ns = open_ns("user")?;
        let net_ns = open_ns("net")?;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::Setup(format!("socketpair for the netns agent: {e}")))?;
        // SAFETY: plain system call; the caller guarantees this process is single-threaded,
        // so the child's copy of the heap and of every lock is consistent.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::Setup(format!(
                "forking the netns agent: {}",
                io::Error::last_os_error()
            )));
        }
        if pid == 0 {
            drop(ours);
            agent_main(theirs, user_ns, net_ns, cfg);
        }
        drop(theirs);
        drop(user_ns);
        drop(net_ns);
        let mut agent = Agent {
            pid,
            channel: Some(Channel { fd: ours }),
        };
        let received = agent.channel.as_ref().map(Channel::receive);
        let tap = match received {
            Some(Ok(Ok(fd))) => fd,
            Some(Ok(Err(msg))) => {
                agent.stop();
                return Err(Error::Setup(msg));
            }
            Some(Err(e)) => {
                agent.stop();
                return Err(Error::Setup(format!(
                    "receiving the tap from the netns agent: {e}"
                )));
            }
            None => unreachable!("the channel was just created"),
        };
        Ok((agent, tap))
    }

    /// Kills and reaps the agent (idempotent).
    pub fn stop(&mut self) {
        self.channel = None;
        if self.pid > 0 {
            // SAFETY: plain system calls on our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            self.pid = 0;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Channel {
    /// Asks the agent for a new socket of `kind` in the container's namespace.
    pub fn socket(&self, kind: SocketKind) -> io::Result<InnerSocket> {
        self.send(&[kind.byte()])?;
        match self.receive_kind()? {
            Ok(s) => Ok(s),
            Err(msg) => Err(io::Error::other(msg)),
        }
    }

    /// Asks for a UDP socket of `client`'s family for the flow of `client` to container
    /// port `ctr_port`: transparent when the agent could route the server's replies to
    /// `client` back to it (`forget_udp_flow` undoes that), else a plain one.
    pub fn udp_flow_socket(&self, client: SocketAddr, ctr_port: u16) -> io::Result<InnerSocket> {
        self.send(&flow_request(b'f', client, ctr_port))?;
        match self.receive_kind()? {
            Ok(s) => Ok(s),
            Err(msg) => Err(io::Error::other(msg)),
        }
    }

    /// The flow given to `udp_flow_socket` has ended. No reply comes back.
    pub fn forget_udp_flow(&self, client: SocketAddr, ctr_port: u16) {
        let _ = self.send(&flow_request(b'F', client, ctr_port));
    }

    fn send(&self, request: &[u8]) -> io::Result<()> {
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[IoSlice::new(request)],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// One reply: a descriptor, or the agent's error message.
    fn receive(&self) -> io::Result<Result<OwnedFd, String>> {
        Ok(self.receive_kind()?.map(|s| s.fd))
    }

    fn receive_kind(&self) -> io::Result<Result<InnerSocket, String>> {
        let mut buf = [0u8; 512];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fd = None;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: the kernel just installed these descriptors for us.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
        let n = msg.bytes;
        match (fd, buf[..n].first()) {
            (Some(fd), Some(b'S')) => Ok(Ok(InnerSocket {
                fd,
                transparent: false,
            })),
            (Some(fd), Some(b'X')) => Ok(Ok(InnerSocket {
                fd,
                transparent: true,
            })),
            (_, Some(b'E')) => Ok(Err(String::from_utf8_lossy(&buf[1..n]).into_owned())),
            (_, None) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the netns agent exited",
            )),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad reply from the netns agent",
            )),
        }
    }
}

/// The agent process: never returns.
fn agent_main(sock: OwnedFd, user_ns: OwnedFd, net_ns: OwnedFd, cfg: &Config) -> ! {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    close_other_fds(&[sock.as_raw_fd(), user_ns.as_raw_fd(), net_ns.as_raw_fd()]);
    let fd = sock.as_raw_fd();
    let reply_err = |msg: &str| {
        let mut out = Vec::with_capacity(msg.len() + 1);
        out.push(b'E');
        out.extend_from_slice(msg.as_bytes());
        let _ = sendmsg::<()>(fd, &[IoSlice::new(&out)], &[], MsgFlags::MSG_NOSIGNAL, None);
    };
    let setup = || -> Result<OwnedFd, String> {
        // SAFETY: setns on descriptors we opened; this process is single-threaded.
        if unsafe { libc::setns(user_ns.as_raw_fd(), libc::CLONE_NEWUSER) } < 0 {
            return Err(format!(
                "joining the container's user namespace: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: as above; we now hold CAP_SYS_ADMIN in the namespace that owns the netns.
        if unsafe { libc::setns(net_ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(format!(
                "joining the container's network namespace: {}",
                io::Error::last_os_error()
            ));
        }
        let tap = tap::open_tap(TAP_NAME).map_err(|e| {
            format!(
                "{e}: --network=nook needs /dev/net/tun with mode 0666 (see `nook info`); \
                 --network=none runs without a network"
            )
        })?;
        netlink::configure(TAP_NAME, cfg).map_err(|e| format!("configuring {TAP_NAME}: {e}"))?;
        allow_ping();
        Ok(tap)
    };
    let mut transparent = [false; 2];
    match setup() {
        Ok(tap) => {
            if !cfg.publish.is_empty() {
                transparent = route_forwarded_replies();
            }
            send_fd(fd, tap.as_raw_fd());
            drop(tap);
        }
        Err(msg) => {
            reply_err(&msg);
            exit(1);
        }
    }
    drop(user_ns);
    drop(net_ns);
    loop {
        let mut req = [0u8; 32];
        // SAFETY: recv writes at most 32 bytes into `req`.
        let n = unsafe { libc::recv(fd, req.as_mut_ptr().cast(), req.len(), 0) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            exit(0);
        }
        if matches!(req[0], b'f' | b'F') {
            let Some((client, ctr_port)) = parse_flow(&req[..n as usize]) else {
                // `F` expects no reply: one would answer the next request.
                if req[0] == b'f' {
                    reply_err("bad flow request");
                }
                continue;
            };
            if req[0] == b'F' {
                let _ = netlink::route_udp_replies_locally(client, ctr_port, FORWARD_TABLE, false);
                continue;
            }
            let v6 = client.is_ipv6();
            let routed = transparent[v6 as usize]
                && netlink::route_udp_replies_locally(client, ctr_port, FORWARD_TABLE, true)
                    .is_ok();
            match sys::socket(sys::family(&client), libc::SOCK_DGRAM, 0) {
                Ok(s) if routed && make_transparent(s.as_raw_fd(), v6).is_ok() => {
                    send_fd_as(fd, s.as_raw_fd(), b"X")
                }
                Ok(s) => {
                    if routed {
                        let _ = netlink::route_udp_replies_locally(
                            client,
                            ctr_port,
                            FORWARD_TABLE,
                            false,
                        );
                    }
                    send_fd(fd, s.as_raw_fd())
                }
                Err(e) => reply_err(&format!("socket in the container's namespace: {e}")),
            }
            continue;
        }
        let (family, kind) = match req[0] {
            b't' => (libc::AF_INET, libc::SOCK_STREAM),
            b'T' => (libc::AF_INET6, libc::SOCK_STREAM),
            b'u' => (libc::AF_INET, libc::SOCK_DGRAM),
            b'U' => (libc::AF_INET6, libc::SOCK_DGRAM),
            _ => {
                reply_err("unknown request");
                continue;
            }
        };
        let v6 = family == libc::AF_INET6;
        match sys::socket(family, kind, 0) {
            Ok(s) if kind == libc::SOCK_STREAM && transparent[v6 as usize] => {
                if make_transparent(s.as_raw_fd(), v6).is_ok() {
                    send_fd_as(fd, s.as_raw_fd(), b"X");
                } else {
                    send_fd(fd, s.as_raw_fd());
                }
            }
            Ok(s) => send_fd(fd, s.as_raw_fd()),
            Err(e) => reply_err(&format!("socket in the container's namespace: {e}")),
        }
    }
}

/// Lets the container's processes open ICMP sockets in their namespace, as podman does
/// with `net.ipv4.ping_group_range`, so `ping` works without CAP_NET_RAW: the range is
/// every group the container maps, from 0 (only root's, when the map is not ordered so
/// that one range of host IDs covers them). The sysctl belongs to the network namespace
/// the agent is in; failure only leaves ping unprivileged-less, as on the host.
fn allow_ping() {
    let map = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
    let high = ping_range_high(&map);
    let _ = std::fs::write("/proc/sys/net/ipv4/ping_group_range", format!("0 {high}"));
}

/// The highest group ID of the range `0..=high` whose host IDs (the kernel compares
/// those) rise with it, from a gid_map text ("inside outside count" per line): the top
/// of the map when its ranges follow one another in the same order inside and out, and
/// without gaps inside; else 0.
fn ping_range_high(gid_map: &str) -> u32 {
    let mut lines: Vec<(u64, u64, u64)> = gid_map
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            Some((w.next()??, w.next()??, w.next()??))
        })
        .filter(|&(_, _, n)| n > 0)
        .collect();
    lines.sort_unstable();
    let ordered = lines.first().is_some_and(|l| l.0 == 0)
        && lines
            .windows(2)
            .all(|w| w[1].0 == w[0].0 + w[0].2 && w[1].1 >= w[0].1 + w[0].2);
    match lines.last() {
        Some(&(i, _, n)) if ordered && i + n - 1 <= u32::MAX as u64 => (i + n - 1) as u32,
        _ => 0,
    }
}

/// Makes the namespace's TCP servers answer forwarded clients through the forwarder's
/// sockets, whatever the clients' addresses: an accepted connection takes the mark of
/// the SYN that opened it (net.ipv4.tcp_fwmark_accept, which serves IPv6 too), the
/// kernel's own replies (the reset from a closed port) take the mark of the packet they
/// answer (net.ipv{4,6}.fwmark_reflect; only forwarded connections carry a mark), and
/// marked packets are delivered locally, to the transparent socket bound to the
/// client's address. Without the reflected mark a reset would leave by the tap and the
/// forwarder's connect would wait for its timeout instead of being refused, which the
/// IPv6 paths cannot afford: they try [::1] first and fall back on refusal (forward.rs;
/// for UDP the refusal is the kernel's ICMPv6 port unreachable, marked the same way).
/// Returns which of IPv4 and IPv6 are set up (a kernel without IPv6 has only the first).
/// UDP flows add a rule of their own to the same table (`f` requests).
fn route_forwarded_replies() -> [bool; 2] {
    if std::fs::write("/proc/sys/net/ipv4/tcp_fwmark_accept", "1").is_err() {
        return [false; 2];
    }
    let reflect = |family| std::fs::write(format!("/proc/sys/net/{family}/fwmark_reflect"), "1");
    let _ = reflect("ipv4");
    let v4 = netlink::route_marked_locally(FORWARD_MARK, FORWARD_TABLE, false).is_ok();
    let v6 = reflect("ipv6").is_ok()
        && netlink::route_marked_locally(FORWARD_MARK, FORWARD_TABLE, true).is_ok();
    [v4, v6]
}

/// IP_TRANSPARENT (bind any address) and the forwarding mark on a new socket.
fn make_transparent(fd: RawFd, v6: bool) -> io::Result<()> {
    let one: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::SOL_IPV6, libc::IPV6_TRANSPARENT)
    } else {
        (libc::SOL_IP, libc::IP_TRANSPARENT)
    };
    let set = |level, name, value: libc::c_int| {
        // SAFETY: `value` is a valid c_int for the duration of the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    set(level, name, one)?;
    set(libc::SOL_SOCKET, libc::SO_MARK, FORWARD_MARK as libc::c_int)
}

/// `tag`, then the client's address (4 bytes for IPv4, 16 for IPv6: the length tells
/// the family) and port, and the container port (big-endian).
fn flow_request(tag: u8, client: SocketAddr, ctr_port: u16) -> Vec<u8> {
    let mut req = vec![tag];
    match client.ip() {
        IpAddr::V4(ip) => req.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => req.extend_from_slice(&ip.octets()),
    }
    req.extend_from_slice(&client.port().to_be_bytes());
    req.extend_from_slice(&ctr_port.to_be_bytes());
    req
}

fn parse_flow(req: &[u8]) -> Option<(SocketAddr, u16)> {
    let (ip, ports) = match req.len() {
        9 => {
            let octets: [u8; 4] = req[1..5].try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(octets)), &req[5..])
        }
        21 => {
            let octets: [u8; 16] = req[1..17].try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(octets)), &req[17..])
        }
        _ => return None,
    };
    let port = u16::from_be_bytes([ports[0], ports[1]]);
    Some((
        SocketAddr::new(ip, port),
        u16::from_be_bytes([ports[2], ports[3]]),
    ))
}

fn send_fd(sock: RawFd, fd: RawFd) {
    send_fd_as(sock, fd, b"S");
}

fn send_fd_as(sock: RawFd, fd: RawFd, tag: &[u8]) {
    let fds = [fd];
    let _ = sendmsg::<()>(
        sock,
        &[IoSlice::new(tag)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
}

/// Closes every descriptor the agent inherited except `keep` (the supervisor's pipes,
/// terminal and listeners have no business here).
fn close_other_fds(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.to_vec();
    keep.sort_unstable();
    let mut from: libc::c_uint = 0;
    for &k in &keep {
        if (k as libc::c_uint) > from {
            // SAFETY: close_range on descriptors this process owns; nothing refers to them.
            unsafe { libc::syscall(libc::SYS_close_range, from, k as libc::c_uint - 1, 0) };
        }
        from = k as libc::c_uint + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0) };
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit skips the parent's atexit handlers and stdio buffers copied at fork.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::{flow_request, parse_flow, ping_range_high};

    #[test]
    fn flow_requests_carry_either_family() {
        for client in ["192.0.2.1:4000", "[2001:db8::1]:4000"] {
            let client = client.parse().unwrap();
            let req = flow_request(b'f', client, 8000);
            assert_eq!(req.len(), if client.is_ipv4() { 9 } else { 21 });
            assert_eq!(parse_flow(&req), Some((client, 8000)));
        }
        assert_eq!(parse_flow(b"f123"), None);
    }

    #[test]
    fn ping_range_covers_the_mapped_groups_when_ordered() {
        // podman's default map: 0 → the user, 1.. → the subordinate range above it.
        assert_eq!(ping_range_high("0 1000 1\n1 100000 65536\n"), 65536);
        assert_eq!(ping_range_high("         0       1000          1\n"), 0);
        // keep-id style: root maps above the user's own ID, so one host range would
        // take in IDs the container does not have in order: only group 0.
        assert_eq!(
            ping_range_high("0 100000 1000\n1000 1000 1\n1001 101000 64536\n"),
            0
        );
        assert_eq!(ping_range_high(""), 0);
    }
}
