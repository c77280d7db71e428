//! The two pipes between the supervisor and the container's first process.
//!
//! `go`: the parent writes one byte once the ID maps are in place; until then the child
//! has no valid uid and must not touch the filesystem. EOF instead means the parent gave
//! up, and the child exits.
//!
//! `report`: close-on-exec, child to parent. A successful `execve` closes it with nothing
//! written, so EOF is the "command started" signal; otherwise the child writes exactly
//! one report (setup failure or exec failure) and exits. This is how a missing command
//! becomes exit status 127 in the parent instead of a message lost in the container.

use std::fs::File;
use std::io::{Read, Write};

use crate::error::{Context, Result};

pub(crate) struct Pipe {
    pub read: File,
    pub write: File,
}

pub(crate) fn pipe() -> Result<Pipe> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "pipe2".into())?;
    Ok(Pipe {
        read: File::from(r),
        write: File::from(w),
    })
}

/// What the child reports before the container's command runs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// The command is running (the report pipe closed on exec).
    Started,
    /// Setting up the container failed: nook's fault or the configuration's (exit 125).
    SetupFailed(String),
    /// `execve` of the command failed with this errno (exit 126 or 127).
    ExecFailed { errno: i32, command: String },
    /// OCI `create`: the setup is done and the process waits for `start`.
    Parked,
}

impl Report {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Report::Started => Vec::new(),
            Report::Parked => b"P".to_vec(),
            Report::SetupFailed(msg) => [b"E".as_slice(), msg.as_bytes()].concat(),
            Report::ExecFailed { errno, command } => {
                [b"X".as_slice(), &errno.to_le_bytes(), command.as_bytes()].concat()
            }
        }
    }

    pub(crate) fn decode(buf: &[u8]) -> Report {
        match buf.split_first() {
            None => Report::Started,
            Some((b'P', [])) => Report::Parked,
            Some((b'X', rest)) if rest.len() >= 4 => Report::ExecFailed {
                errno: i32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]),
                command: String::from_utf8_lossy(&rest[4..]).into_owned(),
            },
            Some((_, rest)) => Report::SetupFailed(String::from_utf8_lossy(rest).into_owned()),
        }
    }
}

/// Child side: sends one report. Errors are ignored: the parent then sees EOF after the
/// child's exit and reports the bare exit status.
pub(crate) fn send_report(pipe: &mut File, report: &Report) {
    let _ = pipe.write_all(&report.encode());
}

/// Parent side: reads until the child execs (EOF) or reports.
pub(crate) fn read_report(mut pipe: File) -> Result<Report> {
    let mut buf = Vec::new();
    pipe.read_to_end(&mut buf)
        .context(|| "reading the container's start report".into())?;
    Ok(Report::decode(&buf))
}

/// Child side: blocks until the parent releases it. Returns false if the parent died.
pub(crate) fn wait_for_go(pipe: &mut File) -> bool {
    let mut byte = [0u8; 1];
    matches!(pipe.read(&mut byte), Ok(1))
}

pub(crate) fn send_go(mut pipe: File) -> Result<()> {
    pipe.write_all(b"G")
        .context(|| "releasing the container".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_roundtrip() {
        for r in [
            Report::Started,
            Report::Parked,
            Report::SetupFailed("mount /proc: EPERM".into()),
            Report::ExecFailed {
                errno: 2,
                command: "nosuch".into(),
            },
        ] {
            assert_eq!(Report::decode(&r.encode()), r);
        }
    }
}
