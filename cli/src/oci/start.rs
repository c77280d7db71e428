//! `start`: releases a created container. The state JSON goes through the start FIFO
//! (for the startContainer hooks, which run inside the container); the FIFO is then
//! removed, which makes the container "running". `start` waits until the process has
//! let go of the FIFO (exec closes it) and reads what it left there: a failed
//! startContainer hook or exec fails `start`. Poststart hooks run last.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{bail, Context, Result};

use super::container::{self, Container, Status, START_FIFO};
use super::Global;

pub fn start(global: &Global, id: &str) -> Result<()> {
    let c = Container::load(global, id)?;
    let status = c.status();
    if status != Status::Created {
        bail!(
            "container {id} is {}: only a created container can be started",
            status.as_str()
        );
    }
    let fifo = c.dir.join(START_FIFO);
    if c.record.pid == 0 {
        let _ = fs::remove_file(&fifo);
        bail!("container {id} has no process in its config.json: there is nothing to start");
    }
    // Non-blocking open: the container's process holds the FIFO open, so this succeeds
    // at once; if it does not, the process is gone and nothing would ever read.
    let mut gate = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
        .with_context(|| format!("container {id} is not waiting for start"))?;
    // Claim the start: a second `start` finds no FIFO.
    fs::remove_file(&fifo).with_context(|| format!("removing {}", fifo.display()))?;
    let spec = c.spec();
    let state = serde_json::to_vec(&c.state_json(Status::Created))?;
    let mut message = (state.len() as u32).to_le_bytes().to_vec();
    message.extend_from_slice(&state);
    set_blocking(&gate)?;
    gate.write_all(&message)
        .with_context(|| format!("releasing container {id}"))?;
    wait_for_exec(&gate);
    // A command that could not be executed fails `start`, as in runc and crun (podman
    // then reports it with 126/127), rather than a process that quietly exits 127.
    nook_rootless::start_result(&gate, &message)?;
    drop(gate);
    container::run_hooks(global, &c, spec.as_ref(), "poststart", Status::Running)
}

/// Waits until the container's process has executed its command (or died), so that
/// poststart hooks run after it, as the runtime-spec requires: its end of the FIFO is
/// close-on-exec, and with no reader left the kernel reports POLLERR on ours (asked
/// for no event, poll wakes only for that).
fn wait_for_exec(gate: &fs::File) {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        gate.as_fd(),
        nix::poll::PollFlags::empty(),
    )];
    // Bounded: a startContainer hook that hangs has its own timeout.
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(60_000u16));
}

/// The message may exceed the pipe's atomic size: write it blocking.
fn set_blocking(f: &fs::File) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no memory is passed.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error()).context("fcntl on the start FIFO");
        }
    }
    Ok(())
}
