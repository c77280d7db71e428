//! nook's engine: the library that makes containers from a [`RunRequest`].
//!
//! The CLI (`cli/`) parses flags into a request and formats what comes back; the engine
//! does the work below that line. It never prints: what a person should learn on the
//! way goes through [`Notify`], which the caller implements; settings come in as
//! [`Settings`], not from a global.
//!
//! The `nook run` path, each step in one module:
//! request ([`request`]) → image → root → spec ([`spec`], with [`env`], [`users`],
//! [`seccomp`], [`resources`], [`network`]) → spawn → supervise.

pub mod apt_sandbox;
pub mod container;
pub mod copies;
pub mod cp;
pub mod env;
pub mod error;
pub mod helpers;
pub mod image;
pub mod network;
pub mod request;
pub mod resources;
pub mod run;
pub mod seccomp;
pub mod spec;
pub mod stats;
pub mod storage;
pub mod store_helper;
pub mod users;
pub mod values;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::{Error, Result};
pub use request::RunRequest;

/// How the engine tells a person something while it works. The CLI writes these on
/// stderr as `nook: ...`; a program embedding the engine may log or collect them.
pub trait Notify: Send + Sync {
    /// Something worth knowing that changes nothing (an ignored flag, a fallback).
    fn notice(&self, text: &str);
    /// Something went wrong on the way and the operation went on without it.
    fn warn(&self, text: &str);
    /// Whether a person reads these as they come (a terminal): a notice that repeats
    /// on every run on a host is shown only to one.
    fn interactive(&self) -> bool {
        false
    }
    /// A notice worth showing once per account, not on every run (the marker `name`
    /// remembers it; `fallback` is where to keep it when the account's state directory
    /// cannot be written).
    fn notice_once(&self, name: &str, text: &str, fallback: Option<&std::path::Path>) {
        let _ = (name, fallback);
        self.notice(text);
    }
}

/// A [`Notify`] that drops everything (tests, callers with nobody to tell).
pub struct Quiet;

impl Notify for Quiet {
    fn notice(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}

/// The settings the engine takes from the caller's configuration (config.toml).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// The userspace network's MTU when `--network nook` gives no `mtu=`.
    pub network_mtu: Option<u32>,
    /// The registries.conf to use instead of the default one.
    pub registries_config: Option<std::path::PathBuf>,
}

/// What every engine operation takes from its caller: where the store is, the
/// settings of its configuration, who hears notices, and how records of an older nook
/// are read.
#[derive(Clone)]
pub struct Engine {
    /// `--root` / `$NOOK_ROOT` (None: the default store of the account).
    pub store_root: Option<PathBuf>,
    pub settings: Settings,
    pub notify: Arc<dyn Notify>,
    /// See [`container::record::Migrate`].
    pub migrate: Option<container::record::Migrate>,
}

impl Engine {
    /// The container records of this engine's store.
    pub fn places(&self) -> Result<container::record::Places> {
        Ok(container::record::Places::open(self.store_root.clone())?.migrating(self.migrate))
    }
}
