//! The container's terminal (`-t`).
//!
//! The pty is allocated inside the container, from its own devpts instance, so that
//! `/dev/pts/0` and `tty` inside show the container's terminal and not a host one. The
//! child sends the master to the supervisor over a socketpair (SCM_RIGHTS), as a
//! runtime's console socket does; the supervisor then relays it to its own terminal,
//! which it puts in raw mode and restores on the way out (`RawMode` is a guard).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

use crate::error::{Context, Error, Result};

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, Winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// The window size of the terminal on `fd`, if it is one.
pub(crate) fn window_size(fd: RawFd) -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a Winsize into the valid struct we pass.
    unsafe { get_winsize(fd, &mut ws) }.ok().map(|_| ws)
}

pub(crate) fn set_window_size(fd: RawFd, ws: &Winsize) {
    // SAFETY: TIOCSWINSZ reads the Winsize we pass; a failure only loses a resize.
    let _ = unsafe { set_winsize(fd, ws) };
}

/// Child: allocates the pty, makes its slave the controlling terminal and stdio of this
/// process, and sends the master to the supervisor. The process leads a session of its
/// own already (without a terminal: see child.rs).
pub(crate) fn setup_child_terminal(console: &UnixStream, size: Option<Winsize>) -> Result<()> {
    let master = posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
        .context(|| "opening /dev/ptmx in the container".into())?;
    grantpt(&master).context(|| "grantpt".into())?;
    unlockpt(&master).context(|| "unlockpt".into())?;
    let slave_path = ptsname_r(&master).context(|| "ptsname".into())?;
    let slave = nix::fcntl::open(
        slave_path.as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .context(|| format!("opening {slave_path}"))?;
    if let Some(ws) = size {
        set_window_size(slave, &ws);
    }
    // SAFETY: TIOCSCTTY takes an int argument; 0 means do not steal from another session.
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } < 0 {
        return Err(Error::sys(
            "making the pty the controlling terminal",
            std::io::Error::last_os_error(),
        ));
    }
    for stdio in 0..=2 {
        nix::unistd::dup2(slave, stdio).context(|| "dup2 of the pty".into())?;
    }
    if slave > 2 {
        let _ = nix::unistd::close(slave);
    }
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        console.as_raw_fd(),
        &[IoSlice::new(b"M")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context(|| "sending the pty to the supervisor".into())?;
    Ok(())
}

/// Supervisor: receives the pty master, or None if the child exited before sending it.
pub(crate) fn receive_master(console: &UnixStream) -> Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        console.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context(|| "receiving the container's pty".into())?;
    for cmsg in msg.cmsgs().context(|| "reading the pty message".into())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Ok(None)
}

/// Puts the terminal on `fd` in raw mode until dropped.
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    /// None when `fd` is not a terminal (input from a pipe: nothing to restore).
    pub fn enter(fd: BorrowedFd<'a>) -> Option<RawMode<'a>> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        // TCSADRAIN: let the container's last output reach the terminal first.
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}
