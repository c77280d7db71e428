//! TCP: each connection of the container is a smoltcp socket spliced to a host socket.
//!
//! ```text
//!  SYN (new 4-tuple) ─► policy ─► host socket, nonblocking connect
//!                    └► smoltcp socket listening on exactly that destination, SYN-ACK held
//!  connected ─► SYN-ACK goes out          refused/unreachable ─► abort: RST to the container
//!  data: smoltcp rx ring ──recv closure──► send(host)   read(host) ──send closure──► tx ring
//! ```
//!
//! The first SYN of a new 4-tuple creates a smoltcp socket listening on exactly the
//! destination the container asked for (any-IP mode lets smoltcp own every address),
//! with its SYN-ACK paused, and starts a nonblocking connect of a host socket to the
//! translated destination (policy.rs). Connected: the SYN-ACK goes out, and the
//! container's handshake completes against an already-open host connection. Refused or
//! unreachable: the smoltcp socket is aborted, so the container sees an RST, as with a
//! closed port. Each socket listens only for its own SYN, so two flows never mix.
//!
//! Data never sits in an intermediate buffer: container → host is `recv` on the smoltcp
//! socket with a closure that `send`s its ring buffer's slice to the host socket;
//! host → container is `send` with a closure that `read`s the host socket into the
//! ring's free slice. A full ring stops the reads (the host kernel's buffer, then the
//! far sender, back off); a host socket that would block stops the draining (smoltcp's
//! advertised window shrinks and the container's sender backs off). FIN becomes
//! shutdown(SHUT_WR) and back; RST becomes SO_LINGER 0 and back.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint, TcpPacket};

use super::{token, FlowKey, Stack, Verdict};
use crate::link::Link;
use crate::sys;

/// smoltcp receive and transmit ring per TCP connection: the window the container gets
/// (with window scaling) and the most the netstack holds for one connection each way.
pub const TCP_RX_BUFFER: usize = 512 * 1024;
pub const TCP_TX_BUFFER: usize = 512 * 1024;
/// Concurrent flows before new ones are refused (each costs a host descriptor).
pub const MAX_TCP_FLOWS: usize = 8192;
pub(super) const KIND_TCP: u64 = 2;

pub(super) struct TcpFlow {
    key: FlowKey,
    fd: OwnedFd,
    handle: SocketHandle,
    connecting: bool,
    /// Edge-triggered readiness of the host socket, as last reported and not yet used up.
    readable: bool,
    writable: bool,
    /// The host sent FIN: the container's side was closed after the data.
    host_eof: bool,
    /// The container sent FIN: the host socket was shut for writing.
    shut_wr: bool,
    /// The host socket failed: the container was sent an RST.
    reset: bool,
}

impl<L: Link> Stack<L> {
    pub(super) fn classify_tcp(
        &mut self,
        src: IpAddress,
        dst: IpAddress,
        at: usize,
        end: usize,
    ) -> Verdict {
        if end > self.port.rx_len || at > end {
            return Verdict::Dropped;
        }
        let Ok(tcp) = TcpPacket::new_checked(&self.port.rx[at..end]) else {
            return Verdict::Dropped;
        };
        let key = FlowKey {
            ctr: IpEndpoint::new(src, tcp.src_port()),
            dst: IpEndpoint::new(dst, tcp.dst_port()),
        };
        if self.tcp_index.contains_key(&key) {
            return Verdict::Stack;
        }
        if !(tcp.syn() && !tcp.ack() && !tcp.rst()) || tcp.dst_port() == 0 {
            // No flow: smoltcp answers a stray segment with RST (and ignores a stray RST).
            return Verdict::Stack;
        }
        match self.open_tcp(key) {
            Ok(()) => Verdict::TcpNew,
            Err(_) => {
                // Nothing listens on the destination: smoltcp resets the connection.
                self.stats.refused += 1;
                self.feed_smoltcp();
                Verdict::TcpRefused
            }
        }
    }

    /// A new connection from the container: a host socket connecting to where the
    /// policy says, and a smoltcp socket that takes this SYN and holds its SYN-ACK.
    fn open_tcp(&mut self, key: FlowKey) -> io::Result<()> {
        if self.tcp.len() >= MAX_TCP_FLOWS {
            return Err(io::Error::other("too many connections"));
        }
        let target = self
            .policy
            .tcp_target(key.dst)
            .ok_or_else(|| io::Error::from(io::ErrorKind::PermissionDenied))?;
        let fd = sys::socket(sys::family(&target), libc::SOCK_STREAM, 0)?;
        let _ = sys::set_nodelay(fd.as_raw_fd());
        let connected = sys::connect(fd.as_raw_fd(), &target)?;
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_RX_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; TCP_TX_BUFFER]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.pause_synack(!connected);
        sock.listen(IpListenEndpoint {
            addr: Some(key.dst.addr),
            port: key.dst.port,
        })
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let handle = self.sockets.add(sock);
        let index = self.tcp.insert(TcpFlow {
            key,
            fd,
            handle,
            connecting: !connected,
            readable: false,
            writable: connected,
            host_eof: false,
            shut_wr: false,
            reset: false,
        });
        self.tcp_index.insert(key, index);
        let fd = self.tcp.get(index).map(|f| f.fd.as_raw_fd()).unwrap_or(-1);
        if let Err(e) = self.epoll.add(
            fd,
            sys::IN | sys::OUT | sys::RDHUP | sys::ET,
            token(KIND_TCP, index),
        ) {
            self.remove_tcp(index);
            return Err(e);
        }
        // The SYN is in the receive buffer: the new socket takes it now, before any other
        // frame could reach a socket listening on the same endpoint.
        self.feed_smoltcp();
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
        if sock.state() == tcp::State::Listen {
            // smoltcp did not take the SYN (malformed options): forget the flow.
            self.remove_tcp(index);
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        Ok(())
    }

    pub(super) fn tcp_event(&mut self, index: usize, bits: u32) {
        let Some(flow) = self.tcp.get_mut(index) else {
            return;
        };
        if bits & (sys::IN | sys::RDHUP | sys::HUP | sys::ERR) != 0 {
            flow.readable = true;
        }
        if bits & (sys::OUT | sys::HUP | sys::ERR) != 0 {
            flow.writable = true;
        }
        if flow.connecting && flow.writable {
            flow.connecting = false;
            let ok = matches!(sys::take_error(flow.fd.as_raw_fd()), Ok(None));
            let sock = self.sockets.get_mut::<tcp::Socket>(flow.handle);
            if ok {
                sock.pause_synack(false);
            } else {
                // Refused or unreachable: RST to the container, as a closed port would.
                self.stats.refused += 1;
                flow.reset = true;
                sock.abort();
            }
        }
    }

    /// Moves data between each established connection and its host socket. Returns
    /// whether anything moved (then smoltcp has segments or window updates to send).
    pub(super) fn service_tcp(&mut self) -> bool {
        let mut moved = false;
        let mut keys = std::mem::take(&mut self.keys);
        self.tcp.keys(&mut keys);
        for &i in &keys {
            let Some(flow) = self.tcp.get_mut(i) else {
                continue;
            };
            if flow.connecting || flow.reset {
                continue;
            }
            let sock = self.sockets.get_mut::<tcp::Socket>(flow.handle);
            moved |= pump_tcp(flow, sock);
        }
        self.keys = keys;
        moved
    }

    /// Removes connections whose smoltcp side has finished.
    pub(super) fn reap_tcp(&mut self) {
        let mut keys = std::mem::take(&mut self.keys);
        self.tcp.keys(&mut keys);
        for &i in &keys {
            let Some(flow) = self.tcp.get(i) else {
                continue;
            };
            let state = self.sockets.get::<tcp::Socket>(flow.handle).state();
            match state {
                tcp::State::Closed | tcp::State::TimeWait => {
                    if !(flow.reset || flow.host_eof && flow.shut_wr) {
                        // The container reset the connection (or it timed out): the host
                        // peer sees a reset too, not an orderly end.
                        sys::set_linger_zero(flow.fd.as_raw_fd());
                    }
                    self.remove_tcp(i);
                }
                _ => {}
            }
        }
        self.keys = keys;
    }

    fn remove_tcp(&mut self, index: usize) {
        if let Some(flow) = self.tcp.remove(index) {
            self.epoll.delete(flow.fd.as_raw_fd());
            self.sockets.remove(flow.handle);
            self.tcp_index.remove(&flow.key);
        }
    }
}

/// Copies what each side has for the other; returns whether any byte moved.
fn pump_tcp(flow: &mut TcpFlow, sock: &mut tcp::Socket) -> bool {
    let fd = flow.fd.as_raw_fd();
    let mut moved = false;
    // Container → host: straight from smoltcp's receive ring into the host socket.
    while !flow.shut_wr && flow.writable {
        let r = sock.recv(|buf| {
            if buf.is_empty() {
                return (0, Ok(0));
            }
            match sys::send(fd, buf) {
                Ok(Some(n)) => (n, Ok(n)),
                Ok(None) => (0, Err(io::Error::from(io::ErrorKind::WouldBlock))),
                Err(e) => (0, Err(e)),
            }
        });
        match r {
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => moved = true,
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.writable = false,
            Ok(Err(_)) => {
                // The host peer is gone: reset the container's connection.
                flow.reset = true;
                sock.abort();
                return true;
            }
            Err(tcp::RecvError::Finished) => {
                sys::shutdown_write(fd);
                flow.shut_wr = true;
                moved = true;
            }
            Err(tcp::RecvError::InvalidState) => break,
        }
    }
    // Host → container: straight from the host socket into smoltcp's transmit ring.
    while !flow.host_eof && flow.readable && sock.may_send() {
        let r = sock.send(|buf| {
            if buf.is_empty() {
                return (0, Ok(None));
            }
            match sys::read(fd, buf) {
                Ok(Some(n)) => (n, Ok(Some(n))),
                Ok(None) => (0, Err(io::Error::from(io::ErrorKind::WouldBlock))),
                Err(e) => (0, Err(e)),
            }
        });
        match r {
            // The ring is full: smoltcp sends, the container ACKs, then more is read.
            Ok(Ok(None)) => break,
            Ok(Ok(Some(0))) => {
                flow.host_eof = true;
                sock.close();
                moved = true;
            }
            Ok(Ok(Some(_))) => moved = true,
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.readable = false,
            Ok(Err(_)) => {
                flow.reset = true;
                sock.abort();
                return true;
            }
            Err(tcp::SendError::InvalidState) => break,
        }
    }
    moved
}
