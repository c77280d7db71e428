//! The helpers nook runs by re-executing its own binary, named and spelled in one place.
//!
//! Some work cannot run in the process that asks for it: a user namespace needs a
//! single-threaded process (`__store-helper`: unpack, copy, remove trees of subordinate
//! IDs), the FUSE union server lives as long as its container (`__fuse-server`), and a
//! detached container needs a supervisor that outlives the command (`__supervise`).
//! Each is `nook` itself with a hidden subcommand; the CLI dispatches those back into
//! the engine (store_helper::main, storage::fuse_server_main, supervisor::main). The
//! names and the command lines are built here and nowhere else (flags.rs names its
//! hidden subcommands with these constants; a CLI test parses what [`Supervise`]
//! builds).

use std::path::PathBuf;
use std::process::Command;

use crate::error::{Context, Result};

/// `nook __store-helper`: a job as JSON on stdin, its outcome as JSON on stdout.
pub const STORE_HELPER: &str = "__store-helper";
/// `nook __fuse-server`: a job as JSON on stdin, the FUSE socket on fd 3.
pub const FUSE_SERVER: &str = "__fuse-server";
/// `nook __supervise [--root STORE] [...] DIR`: the supervisor of one container.
pub const SUPERVISE: &str = "__supervise";

/// The executable that implements these helpers: this process's own, unless a program
/// embedding the engine named the `nook` binary ([`use_executable`]).
static EXECUTABLE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Names the `nook` binary that runs the helpers, for a program that links the engine
/// and is not itself `nook` (it has no `__supervise`). Once per process: the first
/// call wins, and returns false for any later one.
pub fn use_executable(nook: PathBuf) -> bool {
    EXECUTABLE.set(nook).is_ok()
}

fn own_exe() -> Result<PathBuf> {
    match EXECUTABLE.get() {
        Some(exe) => Ok(exe.clone()),
        None => std::env::current_exe().context("finding nook's own executable"),
    }
}

/// The store helper's command (stdio left to the caller).
pub fn store_helper() -> Result<Command> {
    let mut cmd = Command::new(own_exe()?);
    cmd.arg(STORE_HELPER);
    Ok(cmd)
}

/// The FUSE server's command (stdio left to the caller).
pub fn fuse_server() -> Result<Command> {
    let mut cmd = Command::new(own_exe()?);
    cmd.arg(FUSE_SERVER);
    Ok(cmd)
}

/// What the supervisor of one container is told on its command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Supervise {
    /// The container's record directory.
    pub dir: PathBuf,
    /// The image store the record belongs to (`--root`).
    pub store: Option<PathBuf>,
    /// fd 3 is the first attached client (`start -a`).
    pub attach_first: bool,
    /// fds 3..3+N are the container's (`--preserve-fds`, LISTEN_FDS).
    pub pass_fds: u32,
    /// They are socket activation's.
    pub listen: bool,
    /// Their LISTEN_FDNAMES.
    pub listen_fdnames: Option<String>,
}

impl Supervise {
    /// The arguments after the program name.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![SUPERVISE.into()];
        if let Some(store) = &self.store {
            args.push("--root".into());
            args.push(store.into());
        }
        if self.attach_first {
            args.push("--attach-first".into());
        }
        if self.pass_fds > 0 {
            args.push(format!("--pass-fds={}", self.pass_fds).into());
            if self.listen {
                args.push("--listen".into());
            }
            if let Some(names) = &self.listen_fdnames {
                args.push(format!("--listen-fdnames={names}").into());
            }
        }
        args.push(self.dir.as_os_str().into());
        args
    }

    /// The supervisor's command (environment, stdio and session left to the caller).
    pub fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(own_exe()?);
        cmd.args(self.args());
        Ok(cmd)
    }
}

/// Whether `arg` (nook's first argument) names one of these helpers, or another
/// internal command (`__...`): those skip what only a person's command needs.
pub fn is_internal(arg: &std::ffi::OsStr) -> bool {
    arg.as_encoded_bytes().starts_with(b"__")
}
