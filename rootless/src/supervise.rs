//! The supervisor's loop while the container runs.
//!
//! One poll over a signalfd and, with `-t`, the terminal pair: forwarded signals go to
//! the container's first process, SIGWINCH resizes the pty, SIGCHLD ends the loop once
//! the pty has delivered the container's last output. Without `-t` the container holds
//! nook's own stdio, so no byte passes through here and pipes stay byte-exact.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Context, Result};
use crate::tty::{self, RawMode};

/// How the container ended, as the shell reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The shell convention: the status, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
        }
    }
}

/// A wait status as an [`ExitStatus`] (None while the process has not ended).
pub(crate) fn exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus::Exited(code)),
        WaitStatus::Signaled(_, sig, _) => Some(ExitStatus::Signaled(sig as i32)),
        _ => None,
    }
}

pub(crate) fn supervise(
    child: Pid,
    signals: &SigSet,
    master: Option<OwnedFd>,
) -> Result<ExitStatus> {
    let signal_fd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context(|| "signalfd".into())?;
    let stdin = std::io::stdin();
    let _raw = master.as_ref().and_then(|_| RawMode::enter(stdin.as_fd()));
    let mut relay = master.map(|m| Relay {
        master: std::fs::File::from(m),
        stdin_open: true,
    });
    let mut status = None;
    loop {
        if let Some(done) = status {
            if relay.as_mut().is_none_or(|r| r.finished_after_exit()) {
                return Ok(done);
            }
        }
        let mut fds = vec![PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        if let Some(r) = &relay {
            fds.push(PollFd::new(r.master.as_fd(), PollFlags::POLLIN));
            if r.stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => r.context(|| "poll".into())?,
        };
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|e| !e.is_empty()))
            .collect();
        if ready[0] {
            while let Ok(Some(info)) = signal_fd.read_signal() {
                let sig = Signal::try_from(info.ssi_signo as i32).ok();
                match sig {
                    Some(Signal::SIGCHLD) => status = status.or_else(|| reap(child)),
                    Some(Signal::SIGWINCH) if relay.is_some() => {
                        if let (Some(r), Some(ws)) = (&relay, tty::window_size(0)) {
                            tty::set_window_size(r.master.as_raw_fd(), &ws);
                        }
                    }
                    Some(sig) => {
                        let _ = kill(child, sig);
                    }
                    None => {}
                }
            }
        }
        if let Some(r) = relay.as_mut() {
            if ready.get(1) == Some(&true) {
                r.pump_output();
            }
            if ready.get(2) == Some(&true) {
                r.pump_input(stdin.as_fd());
            }
        }
    }
}

fn reap(child: Pid) -> Option<ExitStatus> {
    waitpid(child, Some(WaitPidFlag::WNOHANG))
        .ok()
        .and_then(exit_status)
}

/// Copies between nook's stdio and the container's pty.
struct Relay {
    master: std::fs::File,
    stdin_open: bool,
}

impl Relay {
    /// Once the container is gone the pty reports EIO after its buffered output; until
    /// then keep relaying so the last lines are not lost.
    fn finished_after_exit(&mut self) -> bool {
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) == 0 {
            // Nothing buffered, and no process left to write more.
            return true;
        }
        !self.pump_output()
    }

    /// Returns false when the pty is closed.
    fn pump_output(&mut self) -> bool {
        let mut buf = [0u8; 16384];
        match self.master.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                true
            }
        }
    }

    fn pump_input(&mut self, stdin: BorrowedFd) {
        let mut buf = [0u8; 16384];
        match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
            Ok(0) | Err(_) => {
                // End of input: the terminal's EOF character, as a user typing ^D.
                self.stdin_open = false;
                let _ = self.master.write_all(&[4]);
            }
            Ok(n) => {
                let _ = self.master.write_all(&buf[..n]);
            }
        }
    }
}
