//! `kill ID [SIGNAL]`: a signal by name (`KILL`, `SIGKILL`) or number, to the
//! container's process or, with `--all`, to every process of the container.

use anyhow::{bail, Result};
use clap::Args;

use super::container::{Container, Status};
use super::global::Global;

#[derive(Args, Debug)]
pub struct KillArgs {
    /// The container's ID
    pub id: String,
    /// Signal name or number (default: SIGTERM)
    pub signal: Option<String>,
    /// Signal every process of the container, not only its first
    #[arg(long, short = 'a')]
    pub all: bool,
}

pub fn kill(global: &Global, args: &KillArgs) -> Result<()> {
    let sig = parse_signal(args.signal.as_deref().unwrap_or("SIGTERM"))?;
    let c = Container::load(global, &args.id)?;
    if args.all {
        // As runc: also for a stopped container, whose processes may outlive its first
        // (containerd's shim sends `kill --all ID 9` when the first of a container in a
        // shared pid namespace exits).
        for pid in c.pids() {
            // SAFETY: kill(2) with a pid and signal number has no memory effects.
            unsafe { libc::kill(pid, sig) };
        }
        return Ok(());
    }
    if c.status() == Status::Stopped {
        // runc's words: containerd's shim and podman read "container not running" as
        // "already finished", not as a failure.
        bail!("cannot signal container {}: container not running", args.id);
    }
    c.signal(sig)
}

/// `KILL`, `SIGKILL`, `sigkill`, `9`.
pub fn parse_signal(text: &str) -> Result<i32> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("invalid signal number {n}");
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Some(rt) = name.strip_prefix("SIGRTMIN") {
        let base = libc::SIGRTMIN();
        let off: i32 = match rt {
            "" => 0,
            s => s.trim_start_matches('+').parse().unwrap_or(-1),
        };
        if (0..=libc::SIGRTMAX() - base).contains(&off) {
            return Ok(base + off);
        }
    }
    match name.parse::<nix::sys::signal::Signal>() {
        Ok(sig) => Ok(sig as i32),
        Err(_) => bail!("unknown signal {text:?}: use a name such as TERM or KILL, or a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("usr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("RTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }
}
