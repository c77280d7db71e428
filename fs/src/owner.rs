//! Ownership locks: how a command marks what it leaves in a shared place (the store's
//! `tmp/`, the runtime dir's `copies/`) as "mine while I live", so that the next command
//! tells a killed owner's leftovers from a live one's work without trusting pids (they
//! are recycled) and without waiting.
//!
//! The owner holds an exclusive `flock` on a lock file (or on the directory it fills)
//! for as long as it, or a helper process it passed the descriptor to, may write there.
//! The kernel drops a flock when the last descriptor of it closes, and a process's
//! descriptors close as it exits, after its last system call: a lock that another
//! process can take belongs to an owner that writes no more, helpers included.
//!
//! A lock is made in two steps (create, then lock), and a sweeper could take a fresh
//! one in between, take it for a dead owner's and remove it. So the owner checks, once it
//! holds the lock, that the path still names what it locked, and starts again if not;
//! a sweeper removes what it found only while it holds the lock, and only when the path
//! still names what it locked.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A held ownership lock (released when dropped, or by [`OwnerLock::remove`]).
#[derive(Debug)]
pub struct OwnerLock {
    file: File,
    path: PathBuf,
}

/// What [`probe`] found at a lock's path.
#[derive(Debug)]
pub enum Owner {
    /// Someone holds it: its owner (or one of its helpers) lives.
    Live,
    /// Nobody held it; now the caller does, until it drops or removes the lock.
    Dead(OwnerLock),
    /// Nothing there.
    Missing,
}

/// How many times an owner starts again when sweepers keep taking its fresh lock.
const ATTEMPTS: u32 = 16;

impl OwnerLock {
    /// Creates the file `path` (0600; it must not exist) and holds it.
    pub fn create_file(path: &Path) -> io::Result<OwnerLock> {
        Self::create(path, |p| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(p)
        })
    }

    /// Creates the directory `path` (0700; it must not exist) and holds it: whatever is
    /// put inside is the owner's.
    pub fn create_dir(path: &Path) -> io::Result<OwnerLock> {
        Self::create(path, |p| {
            fs::DirBuilder::new().mode(0o700).create(p)?;
            open_nofollow(p)
        })
    }

    fn create(path: &Path, make: impl Fn(&Path) -> io::Result<File>) -> io::Result<OwnerLock> {
        for _ in 0..ATTEMPTS {
            let file = make(path)?;
            // Blocking: a sweeper holds a fresh lock only while it removes it.
            flock(&file, libc::LOCK_EX)?;
            if names_same(path, &file)? {
                return Ok(OwnerLock {
                    file,
                    path: path.to_path_buf(),
                });
            }
            // A sweeper took it for a dead owner's and removed it: make it again.
        }
        Err(io::Error::other(format!(
            "{}: removed under us {ATTEMPTS} times by other nook processes",
            path.display()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file (or the directory, which must be empty by now) while still
    /// holding it, then releases it.
    pub fn remove(self) -> io::Result<()> {
        let r = if self.file.metadata()?.is_dir() {
            fs::remove_dir(&self.path)
        } else {
            fs::remove_file(&self.path)
        };
        match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl AsFd for OwnerLock {
    /// The descriptor a helper process inherits to hold the lock with its owner.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Whether the owner of the lock at `path` lives; a dead owner's lock is returned held.
pub fn probe(path: &Path) -> io::Result<Owner> {
    let file = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Owner::Missing),
        Err(e) => return Err(e),
    };
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(Owner::Live),
        Err(e) => return Err(e),
    }
    // Replaced between our open and our lock (removed by another sweeper, made again by
    // a new owner): not the one we looked at. Leave it for the next look.
    if !names_same(path, &file)? {
        return Ok(Owner::Live);
    }
    Ok(Owner::Dead(OwnerLock {
        file,
        path: path.to_path_buf(),
    }))
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    // O_NONBLOCK: whatever is at the path, opening it never waits (a FIFO would);
    // flock's waiting is its own (LOCK_NB), not the descriptor's.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor we own; no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `path` still names the file `file` is open on.
fn names_same(path: &Path, file: &File) -> io::Result<bool> {
    let held = file.metadata()?;
    Ok(match fs::symlink_metadata(path) {
        Ok(m) => m.dev() == held.dev() && m.ino() == held.ino(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nook-owner-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn a_held_lock_is_live_and_a_dropped_one_dead() {
        let d = scratch("file");
        let p = d.join("x.lock");
        let held = OwnerLock::create_file(&p).unwrap();
        assert!(matches!(probe(&p).unwrap(), Owner::Live));
        drop(held);
        let Owner::Dead(lock) = probe(&p).unwrap() else {
            panic!("a released lock is a dead owner's");
        };
        // While the sweeper holds it, it is live to everyone else.
        assert!(matches!(probe(&p).unwrap(), Owner::Live));
        lock.remove().unwrap();
        assert!(matches!(probe(&p).unwrap(), Owner::Missing));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_lock_covers_its_contents() {
        let d = scratch("dir");
        let p = d.join("ctr");
        let held = OwnerLock::create_dir(&p).unwrap();
        fs::write(p.join("data"), b"x").unwrap();
        assert!(matches!(probe(&p).unwrap(), Owner::Live));
        // A duplicate (what a helper inherits) keeps it held after the owner's is gone.
        let dup = held.file.try_clone().unwrap();
        drop(held);
        assert!(matches!(probe(&p).unwrap(), Owner::Live));
        drop(dup);
        let Owner::Dead(lock) = probe(&p).unwrap() else {
            panic!("dead once every descriptor is closed");
        };
        fs::remove_file(p.join("data")).unwrap();
        lock.remove().unwrap();
        assert!(!p.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_replaced_path_is_not_the_lock_held() {
        let d = scratch("race");
        let p = d.join("y.lock");
        // What an owner sees when a sweeper removed its fresh file before it locked it,
        // and what a sweeper sees when the file it opened was replaced meanwhile.
        let old = File::create(&p).unwrap();
        assert!(names_same(&p, &old).unwrap());
        fs::remove_file(&p).unwrap();
        assert!(!names_same(&p, &old).unwrap());
        File::create(&p).unwrap();
        assert!(!names_same(&p, &old).unwrap());
        // create_file refuses a name in use: tokens are unique, a clash is a bug.
        assert!(OwnerLock::create_file(&p).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
