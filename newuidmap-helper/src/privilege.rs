//! The helpers' privilege, from exec to exit. Installed setuid root, a helper starts with
//! real uid = the caller, effective and saved uid = 0, and every capability; it needs exactly
//! one of them (CAP_SETUID for uid maps, CAP_SETGID for gid maps) for exactly one write.
//!
//! Timeline (who we are, what we hold, why):
//! 1. [`sanitize_process`], first line of main, still root: clear the environment (nothing
//!    below may depend on the caller's LANG, PATH, NSS or locale variables), make sure fds
//!    0-2 are open (otherwise the map file could be opened as fd 2 and receive our error
//!    messages), close every other inherited fd.
//! 2. Still root: read /etc/subuid or /etc/subgid, a fixed path, as shadow does (some sites
//!    make it root-only). Nothing caller-controlled is opened with root's rights.
//! 3. [`drop_to_caller`]: real, effective and saved uid and gid all become the caller's;
//!    PR_SET_KEEPCAPS carries the permitted set across, then it is cut to the one capability
//!    the write needs (plus CAP_SETFCAP when host uid 0 is mapped, which the kernel requires
//!    since 5.12), with nothing effective. The process is made non-dumpable (the caller cannot
//!    ptrace it or read its memory) and no_new_privs. It is checked that root cannot be
//!    regained.
//! 4. As the caller, with no effective capability: passwd lookup (NSS modules run
//!    unprivileged), all checks on the target, the decision, setgroups (the namespace owner
//!    may write it without any capability).
//! 5. [`Held::use_once`]: the capability is made effective only for opening and writing the
//!    map file, then removed from every set for good. Because the euid is then the caller's,
//!    the kernel itself requires the namespace to be owned by the caller (CAP_SYS_ADMIN over it
//!    comes only from ownership), on top of the helper's own checks; a setuid helper that
//!    wrote as euid 0 would be trusted for any namespace.

use crate::args::IdRange;
use crate::error::Error;
use crate::sys;
use crate::MapKind;

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETFCAP: u32 = 31;

/// The caller's real ids, read before anything changes them. Every check uses these, never
/// the effective ids (which are root's until [`drop_to_caller`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealIds {
    pub uid: u32,
    pub gid: u32,
}

/// Step 1: environment, standard fds, inherited fds. Exits with 1 if fds 0-2 cannot be made
/// safe, since no message could be shown.
pub fn sanitize_process() {
    sys::clear_env();
    for fd in 0..3 {
        if !sys::fd_is_open(fd) && sys::open_dev_null_into_lowest_slot().is_err() {
            sys::exit_now(1);
        }
    }
    sys::close_from(3);
}

/// The caller's real uid and gid.
pub fn real_ids() -> RealIds {
    RealIds {
        uid: sys::getresuid().0,
        gid: sys::getresgid().0,
    }
}

/// The capability bits the map write needs.
pub fn needed_caps(kind: MapKind, ranges: &[IdRange]) -> u32 {
    match kind {
        MapKind::Uid if ranges.iter().any(|r| r.outside == 0) => 1 << CAP_SETUID | 1 << CAP_SETFCAP,
        MapKind::Uid => 1 << CAP_SETUID,
        MapKind::Gid => 1 << CAP_SETGID,
    }
}

/// Proof that step 3 happened: the process runs as the caller and holds `caps` permitted,
/// none effective.
#[derive(Debug)]
pub struct Held {
    caps: u32,
}

/// Step 3: become the caller, keeping only `caps` (permitted, not effective).
pub fn drop_to_caller(ids: RealIds, kind: MapKind, caps: u32) -> Result<Held, Error> {
    let (_, permitted) = sys::capget().map_err(|e| io_err("reading capabilities", e))?;
    if permitted & caps != caps {
        return Err(Error::NotPrivileged { kind });
    }
    set(libc::PR_SET_KEEPCAPS, 1, "prctl(PR_SET_KEEPCAPS)")?;
    sys::setresgid(ids.gid, ids.gid, ids.gid).map_err(|e| io_err("setresgid", e))?;
    sys::setresuid(ids.uid, ids.uid, ids.uid).map_err(|e| io_err("setresuid", e))?;
    sys::capset(0, caps).map_err(|e| io_err("capset", e))?;
    set(libc::PR_SET_KEEPCAPS, 0, "prctl(PR_SET_KEEPCAPS)")?;
    set(libc::PR_SET_DUMPABLE, 0, "prctl(PR_SET_DUMPABLE)")?;
    set(libc::PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")?;
    verify_dropped(ids, caps)?;
    Ok(Held { caps })
}

/// Belt and braces after step 3: the ids are the caller's everywhere, nothing is effective,
/// and uid 0 cannot be taken back.
fn verify_dropped(ids: RealIds, caps: u32) -> Result<(), Error> {
    let uids = sys::getresuid();
    let gids = sys::getresgid();
    let capsets = sys::capget().map_err(|e| io_err("reading capabilities", e))?;
    let regained_root = ids.uid != 0 && sys::setresuid(0, 0, 0).is_ok();
    if uids != (ids.uid, ids.uid, ids.uid)
        || gids != (ids.gid, ids.gid, ids.gid)
        || capsets != (0, caps)
        || regained_root
    {
        // Never continue in an unknown privilege state; the caller exits on this error.
        return Err(io_err(
            "the kernel did not apply it",
            std::io::Error::other(format!("uids {uids:?}, gids {gids:?}, caps {capsets:?}")),
        ));
    }
    Ok(())
}

impl Held {
    /// Step 5: `f` runs with the capabilities effective; afterwards every capability is gone
    /// for good, whatever `f` returned.
    pub fn use_once<T>(self, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        sys::capset(self.caps, self.caps).map_err(|e| io_err("capset", e))?;
        let result = f();
        if sys::capset(0, 0).is_err() {
            sys::exit_now(1);
        }
        result
    }
}

fn set(option: libc::c_int, value: libc::c_ulong, what: &str) -> Result<(), Error> {
    sys::prctl(option, value).map_err(|e| io_err(what, e))
}

fn io_err(what: &str, source: std::io::Error) -> Error {
    Error::Io {
        what: format!("dropping privilege: {what}"),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(outside: u32) -> IdRange {
        IdRange {
            inside: 0,
            outside,
            count: 1,
        }
    }

    #[test]
    fn needs_only_the_one_capability() {
        assert_eq!(needed_caps(MapKind::Uid, &[r(1000)]), 1 << CAP_SETUID);
        assert_eq!(needed_caps(MapKind::Gid, &[r(1000)]), 1 << CAP_SETGID);
        assert_eq!(needed_caps(MapKind::Gid, &[r(0)]), 1 << CAP_SETGID);
    }

    #[test]
    fn mapping_host_root_needs_setfcap_for_uid_maps() {
        assert_eq!(
            needed_caps(MapKind::Uid, &[r(1000), r(0)]),
            1 << CAP_SETUID | 1 << CAP_SETFCAP
        );
    }
}
