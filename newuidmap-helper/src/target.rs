//! The target process, reached only through one /proc/PID directory descriptor.
//!
//! Security reasoning: a pid is only a number, and the process behind it can exit and the
//! number be reused by someone else's process between a check and a write. The kernel ties a
//! /proc/PID directory fd to the process (its `struct pid`) it was opened for: once that
//! process is gone, every `openat` through the fd fails, and it never resolves to a newer
//! process with the same number. So the directory is opened once, first, and every later
//! step — ownership checks, setgroups, the map write — goes through `openat`/`fstat` on that
//! fd; /proc/PID is never looked up by path again. (A pidfd would add nothing here: the dir
//! fd already pins the process, and the checks read /proc files that a pidfd cannot reach.)
//!
//! What must hold before anything is written (all compared with the caller's *real* ids):
//! - the fd is on procfs;
//! - the directory's owner (the target's euid/egid while it is dumpable) is the caller's uid
//!   and gid — shadow's check;
//! - every uid and gid in the target's status (real, effective, saved, filesystem) is the
//!   caller's — stricter than shadow, so a setuid program the caller started cannot be a
//!   target;
//! - the target's user namespace is owned by the caller (NS_GET_OWNER_UID) and is a direct
//!   child of the helper's own namespace (the only place the kernel lets us write from);
//! - its map has not been written yet (the kernel allows one write; checking first gives a
//!   clear message).
//!
//! Those checks run as the caller with no effective capability (see [`crate::privilege`]),
//! and the map file is opened with the caller's euid, so the kernel re-checks the namespace
//! ownership itself at the moment of the write.

use crate::error::Error;
use crate::sys;
use crate::MapKind;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};

/// procfs's magic number (statfs f_type).
const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// Upper bound for the small /proc files read here.
const PROC_FILE_LIMIT: u64 = 64 * 1024;

/// An opened target.
#[derive(Debug)]
pub struct Target {
    pid: u32,
    dir: OwnedFd,
}

impl Target {
    /// Opens /proc/PID: the only path lookup of the target.
    pub fn open(pid: u32) -> Result<Target, Error> {
        let path = CString::new(format!("/proc/{pid}")).expect("digits contain no NUL");
        let dir = sys::open(&path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW).map_err(
            |e| match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ESRCH) => Error::target(pid, "no such process"),
                _ => Error::target(pid, format!("cannot open /proc/{pid}: {e}")),
            },
        )?;
        let target = Target { pid, dir };
        let fs = sys::fs_type(target.dir.as_fd()).map_err(|e| target.io("statfs", e))?;
        if fs != PROC_SUPER_MAGIC {
            return Err(target.problem("/proc is not procfs"));
        }
        Ok(target)
    }

    /// The target's ids and its /proc directory's owner are the caller's.
    pub fn verify_owner(&self, uid: u32, gid: u32) -> Result<(), Error> {
        let st = sys::fstat(self.dir.as_fd()).map_err(|e| self.io("fstat", e))?;
        if st.st_uid != uid || st.st_gid != gid {
            return Err(self.problem(format!(
                "is owned by uid {} gid {}, not by you (uid {uid} gid {gid})",
                st.st_uid, st.st_gid
            )));
        }
        let status = self.read(c"status")?;
        for (key, want) in [("Uid:", uid), ("Gid:", gid)] {
            match status_ids(&status, key) {
                Some(ids) if ids.iter().all(|&id| id == want) => {}
                Some(ids) => {
                    return Err(self.problem(format!(
                        "runs with {key} {ids:?}, not only your id {want} (real, effective, \
                         saved and filesystem ids must all be yours)"
                    )))
                }
                None => return Err(self.problem(format!("no {key} line in its status"))),
            }
        }
        Ok(())
    }

    /// The target's user namespace is owned by `uid` and is a child of our own.
    pub fn verify_userns(&self, uid: u32) -> Result<(), Error> {
        let ns = self.open_at(c"ns/user", libc::O_RDONLY)?;
        let owner = sys::ns_owner_uid(ns.as_fd()).map_err(|e| self.io("NS_GET_OWNER_UID", e))?;
        if owner != uid {
            return Err(self.problem(format!(
                "its user namespace is owned by uid {owner}, not by you (uid {uid}); the \
                 target must be a process that created a new user namespace"
            )));
        }
        let parent = sys::ns_parent(ns.as_fd())
            .map_err(|_| self.problem("is not in a user namespace created from yours"))?;
        let own = sys::open(c"/proc/self/ns/user", libc::O_RDONLY).map_err(|source| Error::Io {
            what: "opening /proc/self/ns/user".into(),
            source,
        })?;
        if !same_file(&parent, &own).map_err(|e| self.io("fstat of a namespace", e))? {
            return Err(self.problem(
                "its user namespace is not a direct child of yours; write its map from the \
                 parent namespace",
            ));
        }
        Ok(())
    }

    /// The uid_map/gid_map is still empty.
    pub fn verify_map_unset(&self, kind: MapKind) -> Result<(), Error> {
        let map = self.read(kind.map_file())?;
        if !map.trim().is_empty() {
            return Err(self.problem(format!(
                "already has a {} (it can be written only once): {}",
                kind.map_file().to_string_lossy(),
                map.lines().next().unwrap_or_default().trim()
            )));
        }
        Ok(())
    }

    /// shadow's rule after CVE-2018-7169: a gid map authorized only by the caller's own gid
    /// must not leave setgroups allowed, or the caller could drop supplementary groups used
    /// as negative ACLs ("deny group X"). So unless /etc/subgid authorized some range, write
    /// "deny" (if not already). Needs no capability: the namespace owner may write it.
    /// Returns a warning to show when the kernel has no setgroups file (before 3.19).
    pub fn deny_setgroups(&self) -> Result<Option<String>, Error> {
        if !self.has(c"setgroups") && self.alive() {
            return Ok(Some(
                "kernel has no setgroups restriction; not denied".into(),
            ));
        }
        let mut file = File::from(self.open_at(c"setgroups", libc::O_RDWR)?);
        let mut current = String::new();
        file.read_to_string(&mut current)
            .map_err(|e| self.io("reading setgroups", e))?;
        if current.trim() == "deny" {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(b"deny\n"))
            .map_err(|e| self.io("writing \"deny\" to setgroups", e))?;
        Ok(None)
    }

    /// Opens the map file and writes `text` in one write. Called inside
    /// [`crate::privilege::Held::use_once`]: the open must happen with the capability
    /// effective, because the kernel checks the opener's credentials.
    pub fn write_map(&self, kind: MapKind, text: &str) -> Result<(), Error> {
        let name = kind.map_file().to_string_lossy();
        let mut file = File::from(self.open_at(kind.map_file(), libc::O_WRONLY)?);
        match file.write(text.as_bytes()) {
            Ok(n) if n == text.len() => Ok(()),
            Ok(n) => Err(self.problem(format!("short write to {name}: {n} of {}", text.len()))),
            Err(e) => Err(self.io(&format!("writing {name}"), e)),
        }
    }

    fn open_at(&self, name: &CStr, flags: libc::c_int) -> Result<OwnedFd, Error> {
        // No O_NOFOLLOW: ns/user is one of procfs's "magic" links, and every name opened
        // here is a fixed procfs entry, not something the caller can plant.
        sys::openat(self.dir.as_fd(), name, flags).map_err(|e| {
            match e.raw_os_error() {
                // The process behind the fd is gone: never fall back to the path.
                Some(libc::ENOENT) | Some(libc::ESRCH) if !self.alive() => self.problem("exited"),
                _ => self.io(&format!("opening {}", name.to_string_lossy()), e),
            }
        })
    }

    fn read(&self, name: &CStr) -> Result<String, Error> {
        let mut text = String::new();
        File::from(self.open_at(name, libc::O_RDONLY)?)
            .take(PROC_FILE_LIMIT)
            .read_to_string(&mut text)
            .map_err(|e| self.io(&format!("reading {}", name.to_string_lossy()), e))?;
        Ok(text)
    }

    /// Whether `name` exists in the directory (an O_PATH open through the fd).
    fn has(&self, name: &CStr) -> bool {
        sys::openat(self.dir.as_fd(), name, libc::O_PATH).is_ok()
    }

    /// Whether the process behind the fd still exists: its status can still be opened.
    fn alive(&self) -> bool {
        sys::openat(self.dir.as_fd(), c"status", libc::O_RDONLY).is_ok()
    }

    fn problem(&self, text: impl Into<String>) -> Error {
        Error::target(self.pid, text)
    }

    fn io(&self, what: &str, source: io::Error) -> Error {
        self.problem(format!("{what}: {source}"))
    }
}

/// The four ids on a `Uid:`/`Gid:` line of /proc/PID/status.
pub fn status_ids(status: &str, key: &str) -> Option<[u32; 4]> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut ids = line[key.len()..].split_ascii_whitespace().map(str::parse);
    let out = [
        ids.next()?.ok()?,
        ids.next()?.ok()?,
        ids.next()?.ok()?,
        ids.next()?.ok()?,
    ];
    ids.next().is_none().then_some(out)
}

/// Whether two fds are the same inode (namespaces compare by nsfs dev + inode).
fn same_file(a: &OwnedFd, b: &OwnedFd) -> io::Result<bool> {
    let (a, b) = (sys::fstat(a.as_fd())?, sys::fstat(b.as_fd())?);
    Ok(a.st_dev == b.st_dev && a.st_ino == b.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\n\
        Uid:\t1001\t1001\t1001\t1001\nGid:\t1001\t1002\t1001\t1001\nGroups:\t1001\n";

    #[test]
    fn reads_the_four_ids() {
        assert_eq!(status_ids(STATUS, "Uid:"), Some([1001; 4]));
        assert_eq!(status_ids(STATUS, "Gid:"), Some([1001, 1002, 1001, 1001]));
    }

    #[test]
    fn malformed_status_lines_give_none() {
        assert_eq!(status_ids("Uid:\t1\t2\t3\n", "Uid:"), None);
        assert_eq!(status_ids("Uid:\t1\t2\t3\t4\t5\n", "Uid:"), None);
        assert_eq!(status_ids("Uid:\t1\tx\t3\t4\n", "Uid:"), None);
        assert_eq!(status_ids("Name:\tx\n", "Uid:"), None);
    }

    #[test]
    fn own_process_is_owned_but_not_in_a_child_namespace() {
        // Runs as any user: this process passes the owner check but is in the initial
        // namespace (or the CI's), never a child of itself.
        let me = std::process::id();
        let target = Target::open(me).unwrap();
        let (uid, gid) = (sys::getresuid().0, sys::getresgid().0);
        if sys::getresuid() == (uid, uid, uid) && sys::getresgid() == (gid, gid, gid) {
            target.verify_owner(uid, gid).unwrap();
        }
        assert!(target.verify_userns(uid).is_err());
        assert!(
            target.verify_map_unset(MapKind::Uid).is_err(),
            "map already set"
        );
    }

    #[test]
    fn missing_process_is_refused() {
        let err = Target::open(i32::MAX as u32).unwrap_err();
        assert!(err.to_string().contains("no such process"), "{err}");
    }
}
