//! The container's end of the wire, as the netstack sees it: a source and sink of
//! Ethernet frames.
//!
//! In production that is the tap device (tap.rs): every `recv` is one read(2) of one
//! frame, every `send` one write(2), each frame preceded by a virtio-net header when the
//! tap has IFF_VNET_HDR. In unit tests and the fuzz target it is [`MemLink`], two queues
//! of plain frames, so the whole stack runs without a kernel device.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

/// Size of `struct virtio_net_hdr` (the tap's default TUNSETVNETHDRSZ).
pub const VNET_HDR_LEN: usize = 10;
/// virtio_net_hdr.flags: the checksum from `csum_start` on is still to be computed (the
/// sender offloaded it); for local delivery the kernel treats it as verified.
pub const VNET_F_NEEDS_CSUM: u8 = 1;

pub trait Link {
    /// Reads one frame into `buf`; `Ok(None)` when none is pending. With
    /// [`Link::vnet_hdr`] the frame starts with a virtio-net header.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Sends one frame (with the virtio-net header when [`Link::vnet_hdr`]).
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Whether frames carry a virtio-net header (and checksums may be offloaded).
    fn vnet_hdr(&self) -> bool;
    /// The descriptor to wait on, if any.
    fn fd(&self) -> Option<RawFd>;
}

/// An in-memory link: frames pushed to `inbox` are what the container sent; frames the
/// netstack sends land in `outbox`.
#[derive(Default)]
pub struct MemLink {
    pub inbox: VecDeque<Vec<u8>>,
    pub outbox: VecDeque<Vec<u8>>,
}

impl Link for MemLink {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(self.inbox.pop_front().map(|f| {
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            n
        }))
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.outbox.push_back(frame.to_vec());
        Ok(())
    }

    fn vnet_hdr(&self) -> bool {
        false
    }

    fn fd(&self) -> Option<RawFd> {
        None
    }
}
