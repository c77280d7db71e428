//! Who the caller is, by real uid, through the system's passwd database (NSS: files, LDAP,
//! sssd; HPC sites rarely keep users in /etc/passwd).
//!
//! The lookup runs after privilege is dropped (see [`crate::privilege`]), so NSS modules
//! execute as the caller, not as root. The name is needed because /etc/subuid is mostly
//! keyed by login name; the primary gid because shadow refuses a caller whose real gid is not
//! it (after `newgrp`), and nook keeps that decision.

use crate::error::Error;
use crate::sys;

/// The caller's passwd entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
}

/// Looks up `uid`; no entry is an error (nothing can be matched in /etc/subuid without it).
pub fn lookup(uid: u32) -> Result<Account, Error> {
    match sys::getpwuid(uid) {
        Ok(Some((name, uid, gid))) => Ok(Account { name, uid, gid }),
        Ok(None) => Err(Error::NoAccount { uid }),
        Err(source) => Err(Error::Io {
            what: format!("looking up uid {uid} in the passwd database"),
            source,
        }),
    }
}
