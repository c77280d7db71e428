//! The smoltcp device: what smoltcp reads and writes when it polls.
//!
//! ```text
//!  link.recv ──► Port.rx (one frame, reused) ──Rx token──► smoltcp ingress
//!  smoltcp egress ──Tx token──► Port.tx (reused) + virtio-net header ──► link.send
//! ```
//!
//! smoltcp never pulls frames itself: the stack reads one frame into `rx`, decides
//! whether smoltcp should see it (ethernet.rs), and only then marks it pending and
//! polls, so `receive` hands out at most that one frame. Transmission writes each frame
//! straight to the link from the one transmit buffer; with a virtio-net header the TCP
//! checksum is left to the container's kernel (frame.rs).

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::frame;
use crate::link::{Link, VNET_HDR_LEN};

/// The smoltcp device: the frame just read from the link, and the link for writing.
pub struct Port<L: Link> {
    pub link: L,
    pub(super) rx: Vec<u8>,
    pub(super) rx_len: usize,
    pub(super) rx_pending: bool,
    pub(super) tx: Vec<u8>,
    pub(super) vnet: bool,
    pub(super) offload: bool,
    pub(super) mtu: usize,
    pub(super) frames_out: u64,
}

impl<L: Link> Port<L> {
    pub(super) fn hdr(&self) -> usize {
        if self.vnet {
            VNET_HDR_LEN
        } else {
            0
        }
    }
}

pub struct Rx<'a> {
    frame: &'a [u8],
}

pub struct Tx<'a, L: Link> {
    link: &'a mut L,
    buf: &'a mut Vec<u8>,
    vnet: bool,
    offload: bool,
    frames_out: &'a mut u64,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl<L: Link> phy::TxToken for Tx<'_, L> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let hdr = if self.vnet { VNET_HDR_LEN } else { 0 };
        if self.buf.len() < hdr + len {
            self.buf.resize(hdr + len, 0);
        }
        let buf = &mut self.buf[..hdr + len];
        let r = f(&mut buf[hdr..]);
        if self.vnet {
            frame::fill_vnet_header(buf, self.offload);
        }
        // A failed write is a lost frame; TCP recovers, and the loop notices a dead tap.
        let _ = self.link.send(buf);
        *self.frames_out += 1;
        r
    }
}

impl<L: Link> phy::Device for Port<L> {
    type RxToken<'a>
        = Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a, L>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_, L>)> {
        if !self.rx_pending {
            return None;
        }
        self.rx_pending = false;
        let hdr = self.hdr();
        Some((
            Rx {
                frame: &self.rx[hdr..self.rx_len],
            },
            Tx {
                link: &mut self.link,
                buf: &mut self.tx,
                vnet: self.vnet,
                offload: self.offload,
                frames_out: &mut self.frames_out,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_, L>> {
        Some(Tx {
            link: &mut self.link,
            buf: &mut self.tx,
            vnet: self.vnet,
            offload: self.offload,
            frames_out: &mut self.frames_out,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + frame::ETH_LEN;
        caps.max_burst_size = None;
        let mut checksum = ChecksumCapabilities::default();
        if self.offload {
            // The container's kernel neither computes ours nor expects us to verify its.
            checksum.tcp = Checksum::None;
        }
        caps.checksum = checksum;
        caps
    }
}
