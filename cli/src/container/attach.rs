//! `nook attach` (and `nook start -a`): a client of the logger's unix socket.
//!
//! Output frames are written to our stdout or stderr as they come; our stdin goes to the
//! container when it was created with -i. With a terminal container our terminal is put
//! in raw mode, so keys reach the container's shell as typed. The socket closes when the
//! container's supervisor ends; the exit code then comes from the recorded state.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use nook_engine::container::logger::STDERR;
use nook_engine::container::record::{Container, Places};

pub fn attach_cmd(
    args: crate::flags::AttachArgs,
    store_root: Option<std::path::PathBuf>,
) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let ctr = places.find(&args.container)?;
    attach(&places, &ctr, !args.no_stdin)
}

pub fn attach(places: &Places, ctr: &Container, with_stdin: bool) -> Result<i32> {
    if !ctr.supervised() {
        bail!(
            "container {} is not running: `nook start -a {}` starts and attaches",
            ctr.record.name,
            ctr.record.name
        );
    }
    let socket = ctr.runtime_dir(places).join("attach.sock");
    let conn = nook_engine::container::logger::connect_short(&socket).with_context(|| {
        format!(
            "container {} runs in the foreground of another nook: there is nothing to \
             attach to ({})",
            ctr.record.name,
            socket.display()
        )
    })?;
    attach_on(ctr, conn, with_stdin)
}

/// Relays between this terminal and the logger on `conn` until the container's
/// supervisor ends; returns the container's exit code.
pub fn attach_on(ctr: &Container, mut conn: UnixStream, with_stdin: bool) -> Result<i32> {
    let stdin = std::io::stdin();
    let send_input = with_stdin && ctr.record.request.interactive;
    let _raw = (send_input && ctr.record.request.tty)
        .then(|| nook_rootless::RawMode::enter(stdin.as_fd()))
        .flatten();
    let mut stdin_open = send_input;
    let mut frames = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => r.context("poll")?,
        };
        let conn_ready = fds[0].revents().is_some_and(|e| !e.is_empty());
        let stdin_ready = fds
            .get(1)
            .is_some_and(|f| f.revents().is_some_and(|e| !e.is_empty()));
        drop(fds);
        if conn_ready {
            let n = conn.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            frames.push(&buf[..n], |stream, data| {
                let _ = if stream == STDERR {
                    std::io::stderr().write_all(data)
                } else {
                    let mut out = std::io::stdout().lock();
                    out.write_all(data).and_then(|_| out.flush())
                };
            });
        }
        if stdin_ready {
            match nix::unistd::read(libc::STDIN_FILENO, &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    let _ = conn.shutdown(std::net::Shutdown::Write);
                }
                Ok(n) => conn
                    .write_all(&buf[..n])
                    .context("writing to the container")?,
            }
        }
    }
    drop(_raw);
    // The supervisor closes the socket when it ends; its recorded state is final then.
    if let Some(sup) = ctr
        .recorded_state()
        .supervisor
        .and_then(nook_engine::container::record::ProcessId::pidfd)
    {
        sup.wait(Some(std::time::Duration::from_secs(30)));
    }
    Ok(ctr.state().exit_code.unwrap_or(0))
}

/// Reassembles `[stream][len u32 BE][bytes]` frames from a byte stream.
#[derive(Default)]
pub struct FrameReader {
    pending: Vec<u8>,
}

impl FrameReader {
    pub fn push(&mut self, data: &[u8], mut each: impl FnMut(u8, &[u8])) {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while self.pending.len() - at >= 5 {
            let len = u32::from_be_bytes(self.pending[at + 1..at + 5].try_into().unwrap()) as usize;
            if self.pending.len() - at - 5 < len {
                break;
            }
            each(self.pending[at], &self.pending[at + 5..at + 5 + len]);
            at += 5 + len;
        }
        self.pending.drain(..at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut wire = vec![1u8, 0, 0, 0, 3];
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&[2, 0, 0, 0, 2]);
        wire.extend_from_slice(b"de");
        for cut in 0..wire.len() {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            r.push(&wire[..cut], |s, d| got.push((s, d.to_vec())));
            r.push(&wire[cut..], |s, d| got.push((s, d.to_vec())));
            assert_eq!(got, vec![(1, b"abc".to_vec()), (2, b"de".to_vec())]);
        }
    }
}
