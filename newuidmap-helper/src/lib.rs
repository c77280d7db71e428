//! nook-newuidmap / nook-newgidmap: the setuid-root helpers that write a user namespace's
//! uid_map / gid_map for an unprivileged caller, drop-in compatible with shadow's
//! newuidmap / newgidmap (same arguments `PID INSIDE OUTSIDE COUNT [...]`, exit status 0 on
//! success and 1 on any failure with one line on stderr).
//!
//! Install: `install -m 4755 -o root -g root nook-newuidmap nook-newgidmap /usr/local/libexec/nook/`
//! (or, instead of the setuid bit, `setcap cap_setuid+ep nook-newuidmap` and
//! `setcap cap_setgid+ep nook-newgidmap`).
//!
//! # Why this is safe to run setuid root
//! The kernel lets an unprivileged user map only their own id. Mapping subordinate ids needs
//! CAP_SETUID / CAP_SETGID in the parent namespace, which these helpers hold, so everything
//! they write must be something the administrator granted in /etc/subuid or /etc/subgid, to a
//! namespace that the caller owns. The crate is split so that the decision is pure code, easy
//! to test and fuzz, and the privileged part is a short, fixed sequence:
//!
//! - [`args`]: argv → [`args::Request`] (pure; strict decimal only).
//! - [`subid`]: /etc/subuid text → the caller's [`subid::Coverage`] (pure).
//! - [`validate`]: request + coverage + own id → allowed or the refused triple (pure).
//! - [`privilege`]: the privilege state machine: hold only CAP_SETUID/CAP_SETGID, as the
//!   caller's uid, and raise it only around the one write.
//! - [`target`]: the target process, reached only through a /proc/PID directory fd opened
//!   once, so a recycled pid cannot be mapped.
//! - [`helper`]: the order in which the above run; [`helper::main_entry`] is each binary's main.
//!
//! Test seam: the pure modules take file contents and arguments as parameters; only
//! [`helper`] knows the fixed paths (/etc/subuid, /etc/subgid, /proc). Nothing reads the
//! environment, so no caller can redirect the setuid binary to other files.

pub mod args;
pub mod error;
pub mod helper;
pub mod passwd;
pub mod privilege;
pub mod subid;
mod sys;
pub mod target;
pub mod validate;

pub use error::Error;

use std::ffi::CStr;

/// Which map a binary writes; everything that differs between the two helpers hangs off this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// nook-newuidmap: /proc/PID/uid_map from /etc/subuid, needs CAP_SETUID.
    Uid,
    /// nook-newgidmap: /proc/PID/gid_map from /etc/subgid, needs CAP_SETGID, and handles
    /// /proc/PID/setgroups.
    Gid,
}

impl MapKind {
    /// The program name used as the prefix of every message. Fixed rather than taken from
    /// argv\[0\], which the caller controls (it could carry terminal escapes).
    pub fn program(self) -> &'static str {
        match self {
            MapKind::Uid => "nook-newuidmap",
            MapKind::Gid => "nook-newgidmap",
        }
    }

    /// "uid" or "gid", for messages.
    pub fn id_word(self) -> &'static str {
        match self {
            MapKind::Uid => "uid",
            MapKind::Gid => "gid",
        }
    }

    /// The subordinate-id file. Only [`helper`] opens it; tests pass contents instead.
    pub fn subid_path(self) -> &'static str {
        match self {
            MapKind::Uid => "/etc/subuid",
            MapKind::Gid => "/etc/subgid",
        }
    }

    /// The map file's name inside /proc/PID.
    pub fn map_file(self) -> &'static CStr {
        match self {
            MapKind::Uid => c"uid_map",
            MapKind::Gid => c"gid_map",
        }
    }
}
