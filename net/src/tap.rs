//! The tap device: created inside the container's network namespace, read and written by
//! the netstack thread on the host side.
//!
//! `open_tap` runs in the netns agent (agent.rs), which has joined the container's user
//! and network namespaces: it opens /dev/net/tun, asks for `tap0` with IFF_TAP |
//! IFF_NO_PI | IFF_VNET_HDR, and enables checksum offload (TUNSETOFFLOAD TUN_F_CSUM). The
//! descriptor then travels to the supervisor over SCM_RIGHTS; a tap stays bound to the
//! namespace it was created in, wherever its descriptor goes.
//!
//! Why the virtio-net header: with TUN_F_CSUM the container's kernel hands us TCP segments
//! whose checksum it never computed (flag NEEDS_CSUM), and accepts ours the same way; so
//! neither side spends a pass over every byte on a checksum that no wire can corrupt.
//! Segmentation offload (TSO) is not enabled: smoltcp takes one segment per frame, and at
//! the default MTU of 65520 a segment is already 64 KiB.
//!
//! Data path: `recv` = one read(2) of one frame (header + Ethernet frame) into the
//! netstack's single receive buffer; `send` = one write(2) from its single transmit
//! buffer. Nonblocking; the event loop drains the tap until EAGAIN on each wakeup.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::link::Link;
use crate::sys;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;

/// Creates the tap `name` in the current network namespace. Needs CAP_NET_ADMIN in the
/// user namespace that owns it, and /dev/net/tun usable (mode 0666).
pub fn open_tap(name: &str) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("opening /dev/net/tun: {e}")))?;
    // SAFETY: ifreq is plain old data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads the ifreq we pass (name and flags).
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("creating {name} (TUNSETIFF): {e}"),
        ));
    }
    // SAFETY: TUNSETOFFLOAD takes its flags by value.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, TUN_F_CSUM as libc::c_ulong) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("enabling checksum offload on {name}: {e}"),
        ));
    }
    // Persistent: closing the last descriptor then does not unregister the device on the
    // spot (an RCU-synchronised teardown of ~20 ms that would add to every container's
    // exit); the device goes with the namespace, which the kernel dismantles in the
    // background once the container, the agent and this descriptor are gone.
    // SAFETY: TUNSETPERSIST takes its flag by value.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("making {name} persistent: {e}"),
        ));
    }
    Ok(OwnedFd::from(file))
}

/// The tap as the netstack's [`Link`].
pub struct TapLink {
    fd: OwnedFd,
}

impl TapLink {
    pub fn new(fd: OwnedFd) -> TapLink {
        TapLink { fd }
    }
}

impl Link for TapLink {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        sys::read(self.fd.as_raw_fd(), buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match sys::write(self.fd.as_raw_fd(), frame) {
            Ok(_) => Ok(()),
            // The container's backlog is full: drop, as a wire would; TCP retransmits.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn vnet_hdr(&self) -> bool {
        true
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}
