//! The engine's error: what failed, with the context the engine added on the way up.
//!
//! One enum, as the other library crates have theirs (thiserror): the errors of the
//! crates below pass through unchanged (their `source()` chains intact, so the CLI's
//! one-line rendering and exit-code mapping see them), and [`Context`] wraps any of them
//! in a sentence saying what the engine was doing, as anyhow's `context` does in a
//! binary. [`chain_line`] renders an error and its causes for a person, each fragment
//! once (see [`join`]).

use std::fmt::Display;

/// An engine operation's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine's own refusal or finding, said for a person.
    #[error("{0}")]
    Msg(String),
    /// What the engine was doing when `source` failed.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
    /// A start failure with the exit code the container's state recorded (125/126/127).
    #[error("{1}")]
    Exit(i32, String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Sys(#[from] nix::errno::Errno),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Spec(#[from] oci_spec::OciSpecError),
    #[error(transparent)]
    Rootless(#[from] nook_rootless::Error),
    #[error(transparent)]
    Net(#[from] nook_net::Error),
    #[error(transparent)]
    Union(#[from] nook_fs::union::UnionError),
    #[error(transparent)]
    Store(#[from] nook_fs::store::StoreError),
    /// Boxed: it carries a report of what was needed and what is free.
    #[error(transparent)]
    NoSpace(Box<nook_fs::space::NoSpace>),
    #[error(transparent)]
    Unpack(#[from] nook_fs::unpack::UnpackError),
    #[error(transparent)]
    Pull(#[from] nook_fs::pull::PullError),
    #[error(transparent)]
    Registry(#[from] nook_fs::registry::RegistryError),
    #[error(transparent)]
    Reference(#[from] nook_fs::reference::RefError),
    #[error(transparent)]
    Rootfs(#[from] nook_fs::rootfs_dir::RootfsError),
    #[error(transparent)]
    Dir(#[from] nook_fs::paths::DirError),
    #[error(transparent)]
    Auth(#[from] nook_fs::auth::AuthError),
    #[error(transparent)]
    Manifest(#[from] nook_fs::manifest::ManifestError),
    #[error(transparent)]
    Archive(#[from] nook_fs::archive::ArchiveError),
    /// Any other library's error (a dependency's own type, kept whole as the cause).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// An error that is only a message.
    pub fn msg(text: impl Display) -> Error {
        Error::Msg(text.to_string())
    }

    /// Any error type, kept whole (as the cause under a context, usually).
    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Other(Box::new(e))
    }

    /// The exit status podman gives this failure: the container's recorded code for a
    /// start failure, 126/127 where the command could not be run, else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exit(code, _) => *code,
            Error::Rootless(e) => e.exit_code(),
            Error::Context { source, .. } => source.exit_code(),
            _ => 125,
        }
    }
}

/// anyhow's `context`/`with_context`, for the engine's [`Result`] and for `Option`.
pub trait Context<T> {
    fn context<C: Display>(self, context: C) -> Result<T>;
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context.to_string(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f().to_string(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::Msg(context.to_string()))
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::Msg(f().to_string()))
    }
}

/// An [`Error::Msg`] from a format string.
#[macro_export]
macro_rules! format_err {
    ($($arg:tt)*) => {
        $crate::error::Error::Msg(format!($($arg)*))
    };
}

/// Returns an [`Error::Msg`] from a format string (or an error value) early.
#[macro_export]
macro_rules! bail {
    ($fmt:literal $($arg:tt)*) => {
        return Err($crate::error::Error::Msg(format!($fmt $($arg)*)))
    };
    ($e:expr) => {
        return Err($crate::error::Error::from($e))
    };
}

/// Errors of other crates kept whole as [`Error::Other`].
macro_rules! other_from {
    ($($t:ty),+ $(,)?) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Other(Box::new(e))
            }
        })+
    };
}

other_from!(
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::num::TryFromIntError,
    std::string::FromUtf8Error,
    std::str::Utf8Error,
    std::time::SystemTimeError,
);

impl From<nook_fs::space::NoSpace> for Error {
    fn from(e: nook_fs::space::NoSpace) -> Error {
        Error::NoSpace(Box::new(e))
    }
}

impl From<String> for Error {
    fn from(text: String) -> Error {
        Error::Msg(text)
    }
}

/// `cause` without a start the line already ends with ("loading /x.tar" then
/// "/x.tar: not an archive" → "not an archive"): a context naming what it worked on,
/// around an error that names it again.
fn without_restated_start<'a>(line: &str, cause: &'a str) -> &'a str {
    cause
        .match_indices(": ")
        .map(|(at, _)| at)
        .filter(|&at| at >= 4 && line.ends_with(&cause[..at]))
        .last()
        .map_or(cause, |at| &cause[at + 2..])
}

/// The line for an error and its causes, outermost first, each fragment once: a cause
/// whose text the line already holds is left out, one that holds the whole line so
/// far replaces it, one that restates the line's end loses that start. (A library error
/// whose text quotes the error it also returns as its source would otherwise be said
/// twice, as anyhow's `{:#}` does.)
pub fn join(causes: impl IntoIterator<Item = String>) -> String {
    let mut line = String::new();
    for cause in causes {
        let cause = cause.trim();
        if cause.is_empty() || line.contains(cause) {
            continue;
        }
        let cause = without_restated_start(&line, cause);
        if line.is_empty() || cause.contains(line.as_str()) {
            line = cause.to_string();
        } else {
            line.push_str(": ");
            line.push_str(cause);
        }
    }
    line
}

/// An error and its `source()` chain as one line ([`join`]).
pub fn chain_line(e: &(dyn std::error::Error + 'static)) -> String {
    join(std::iter::successors(Some(e), |e| e.source()).map(|c| c.to_string()))
}
