//! Errors of the runtime. Each says what failed and, where there is one, what to do.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // A variant either shows its cause in its message or returns it as `source()`, never
    // both: a chain printer (anyhow's `{:#}`) would say it twice.
    #[error("{what}: {error}")]
    Sys { what: String, error: std::io::Error },
    #[error("cannot create the container's namespaces: {0}{hint}", hint = userns_hint(*.0))]
    Clone(nix::errno::Errno),
    #[error("cannot write the ID map of the container ({path}): {error}")]
    IdMap {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The container's setup failed inside the child; the message was written there.
    #[error("{0}")]
    Setup(String),
    /// The command could not be executed (podman's 126/127).
    #[error("{}", exec_message(command, *errno))]
    Exec { command: String, errno: i32 },
    #[error("invalid container configuration: {0}")]
    Spec(String),
    /// The container's network (`--network=nook`) could not be set up.
    #[error(transparent)]
    Network(#[from] nook_net::Error),
    /// A resource limit that cannot be applied, or a cgroup operation that failed.
    #[error("{0}")]
    Cgroup(String),
    /// `exec` into a container whose first process has exited.
    #[error("the container is not running (its first process, pid {pid}, has exited)")]
    NotRunning { pid: i32 },
    #[error("runtime directory {path}: {why}")]
    RuntimeDir { path: PathBuf, why: String },
}

impl Error {
    pub fn sys(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Error::Sys {
            what: what.into(),
            error: source.into(),
        }
    }
}

fn exec_message(command: &str, errno: i32) -> String {
    let reason = std::io::Error::from_raw_os_error(errno);
    if errno == libc::ENOENT && !command.contains('/') {
        format!("executable file `{command}` not found in $PATH: {reason}")
    } else {
        format!("cannot execute `{command}`: {reason}")
    }
}

impl Error {
    /// The exit status podman uses for this error: 126/127 for exec failures, else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exec { errno, .. } => crate::exec::exec_failure_status(*errno),
            _ => 125,
        }
    }
}

fn userns_hint(errno: nix::errno::Errno) -> &'static str {
    match errno {
        nix::errno::Errno::EPERM | nix::errno::Errno::ENOSPC | nix::errno::Errno::EUSERS => {
            " (unprivileged user namespaces look disabled: an administrator can enable them \
             with `sysctl user.max_user_namespaces=15000` and, on Debian/Ubuntu, \
             `sysctl kernel.unprivileged_userns_clone=1`; see `nook info`)"
        }
        _ => "",
    }
}

/// Adds "what was being done" to an io/nix error.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(what(), e))
    }
}
