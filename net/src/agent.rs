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
//!
//! It exits at EOF on the socketpair (the netstack stopped) and, through
//! PR_SET_PDEATHSIG, with the supervisor. The supervisor reaps it.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use crate::config::{Config, TAP_NAME};
use crate::{netlink, sys, tap, Error};

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
    pub fn socket(&self, kind: SocketKind) -> io::Result<OwnedFd> {
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[IoSlice::new(&[kind.byte()])],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        match self.receive()? {
            Ok(fd) => Ok(fd),
            Err(msg) => Err(io::Error::other(msg)),
        }
    }

    /// One reply: a descriptor, or the agent's error message.
    fn receive(&self) -> io::Result<Result<OwnedFd, String>> {
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
            (Some(fd), Some(b'S')) => Ok(Ok(fd)),
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
        Ok(tap)
    };
    match setup() {
        Ok(tap) => {
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
        let mut req = [0u8; 16];
        // SAFETY: recv writes at most 16 bytes into `req`.
        let n = unsafe { libc::recv(fd, req.as_mut_ptr().cast(), req.len(), 0) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            exit(0);
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
        match sys::socket(family, kind, 0) {
            Ok(s) => send_fd(fd, s.as_raw_fd()),
            Err(e) => reply_err(&format!("socket in the container's namespace: {e}")),
        }
    }
}

fn send_fd(sock: RawFd, fd: RawFd) {
    let fds = [fd];
    let _ = sendmsg::<()>(
        sock,
        &[IoSlice::new(b"S")],
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
