//! Copy-up: a file or directory of a read-only layer becomes the upper layer's before
//! anything changes it. Data (reflink or sparse copy_file_range) goes into `work/`,
//! then owner, mode, xattrs and times, then an atomic rename into the upper layer, after
//! the parent directories were copied up the same way; a detached file is copied to an
//! unnamed file. Called without the tree lock: it takes it itself, and copies the data
//! without it, so a large file blocks no rename.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuser::Errno;

use super::attr::{errno, R};
use super::layers::{Layer, Tree, UPPER};
use super::nodes::{Key, DETACHED};
use crate::at;
use crate::union::fuse::beneath::{self, fstat, open_at, open_dir_at};

/// The work directory and what serialises copy-ups (one at a time: two requests for
/// the same file must not both copy it).
pub(super) struct CopyUp {
    work: Layer,
    lock: Mutex<()>,
    tmp_seq: AtomicU64,
}

impl CopyUp {
    pub fn new(work: Layer) -> CopyUp {
        CopyUp {
            work,
            lock: Mutex::new(()),
            tmp_seq: AtomicU64::new(0),
        }
    }

    /// Makes sure the directory node `ino` exists in the upper layer.
    pub fn copy_up_dir(&self, tree: &Tree, ino: u64) -> R<()> {
        let parent = {
            let nodes = tree.nodes();
            let n = nodes.get(ino)?;
            let dirs = n.dirs.as_ref().ok_or(Errno::ENOTDIR)?;
            if dirs.first() == Some(&UPPER) {
                return Ok(());
            }
            n.parent
        };
        if parent == DETACHED {
            return Err(Errno::ENOENT);
        }
        self.copy_up_dir(tree, parent)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let t = tree.read();
        let (layer, name, parent) = {
            let nodes = tree.nodes();
            let n = nodes.get(ino)?;
            if n.dirs.as_ref().is_some_and(|d| d.first() == Some(&UPPER)) {
                return Ok(());
            }
            if n.parent == DETACHED {
                return Err(Errno::ENOENT);
            }
            (n.layer, n.name.clone(), n.parent)
        };
        let src = tree.dir_fd(&t, ino, layer)?;
        let pfd = tree.dir_fd(&t, parent, UPPER)?;
        match at::mkdirat(pfd.as_raw_fd(), &name, 0o700) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(errno(e)),
            _ => {}
        }
        let dst = Arc::new(open_dir_at(pfd.as_raw_fd(), &name).map_err(errno)?);
        beneath::copy_metadata(src.as_raw_fd(), dst.as_raw_fd(), false);
        let st = fstat(dst.as_raw_fd()).map_err(errno)?;
        let mut nodes = tree.nodes();
        {
            let n = nodes.get_mut(ino)?;
            n.layer = UPPER;
            if let Some(d) = n.dirs.as_mut() {
                d.insert(0, UPPER);
            }
        }
        nodes.rekey(ino, Key::of(&st))?;
        nodes.cache_dir(ino, UPPER, dst);
        Ok(())
    }

    /// Copies the node `ino` up (a file's data unless `truncate`).
    pub fn copy_up(&self, tree: &Tree, ino: u64, truncate: bool) -> R<()> {
        let (dir, layer, parent) = {
            let nodes = tree.nodes();
            let n = nodes.get(ino)?;
            (n.dirs.is_some(), n.layer, n.parent)
        };
        if dir {
            return self.copy_up_dir(tree, ino);
        }
        if layer == UPPER {
            return Ok(());
        }
        if parent != DETACHED {
            self.copy_up_dir(tree, parent)?;
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (src, fmt) = {
            let t = tree.read();
            let (layer, fmt) = {
                let nodes = tree.nodes();
                let n = nodes.get(ino)?;
                (n.layer, n.fmt)
            };
            if layer == UPPER {
                return Ok(()); // another thread finished it while we waited
            }
            (tree.node_fd(&t, ino)?, fmt)
        };
        // The data is copied without the tree lock: a large file blocks no rename.
        let tmp = CString::new(format!(
            "copyup-{}-{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ))
        .expect("no NUL");
        if let Err(e) = self.copy_to_work(&src, fmt, &tmp, truncate) {
            let _ = at::unlinkat(self.work.raw(), &tmp, 0);
            return Err(e);
        }
        let t = tree.read();
        let (parent, name) = {
            let nodes = tree.nodes();
            let n = nodes.get(ino)?;
            (n.parent, n.name.clone())
        };
        let mut unnamed = parent == DETACHED;
        let mut fd = None;
        if !unnamed {
            let pfd = tree.dir_fd(&t, parent, UPPER)?;
            // Never over an existing entry.
            match beneath::rename_at(
                self.work.raw(),
                &tmp,
                pfd.as_raw_fd(),
                &name,
                libc::RENAME_NOREPLACE,
            ) {
                Ok(()) => {
                    fd = Some(open_at(pfd.as_raw_fd(), &name, libc::O_PATH, 0).map_err(errno)?)
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => unnamed = true,
                Err(e) => {
                    let _ = at::unlinkat(self.work.raw(), &tmp, 0);
                    return Err(errno(e));
                }
            }
        }
        let fd = match fd {
            Some(fd) => fd,
            None => {
                // Detached (or its name taken): the copy is reachable by its node only.
                let fd = open_at(self.work.raw(), &tmp, libc::O_PATH, 0);
                let _ = at::unlinkat(self.work.raw(), &tmp, 0);
                fd.map_err(errno)?
            }
        };
        let st = fstat(fd.as_raw_fd()).map_err(errno)?;
        let mut nodes = tree.nodes();
        {
            let n = nodes.get_mut(ino)?;
            n.layer = UPPER;
            n.pinned = unnamed.then(|| Arc::new(fd));
        }
        nodes.rekey(ino, Key::of(&st))
    }

    /// Makes `work/tmp` a copy of the file `src` (an O_PATH descriptor).
    fn copy_to_work(&self, src: &OwnedFd, fmt: u32, tmp: &CStr, truncate: bool) -> R<()> {
        let work = self.work.raw();
        let src = src.as_raw_fd();
        match fmt {
            libc::S_IFREG => {
                let to = open_at(
                    work,
                    tmp,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )
                .map_err(errno)?;
                if !truncate {
                    let from = beneath::reopen(src, libc::O_RDONLY).map_err(errno)?;
                    let size = fstat(from.as_raw_fd()).map_err(errno)?.st_size as u64;
                    crate::union::sys::copy_data(from.as_fd(), to.as_fd(), size).map_err(errno)?;
                }
                beneath::copy_metadata(src, to.as_raw_fd(), false);
            }
            libc::S_IFLNK => {
                let target = CString::new(beneath::readlink_fd(src).map_err(errno)?)
                    .map_err(|_| Errno::EINVAL)?;
                // The target is stored, never resolved here.
                at::symlinkat(&target, work, tmp).map_err(errno)?;
                let l = open_at(work, tmp, libc::O_PATH, 0).map_err(errno)?;
                beneath::copy_metadata(src, l.as_raw_fd(), true);
            }
            _ => {
                let st = fstat(src).map_err(errno)?;
                at::mknodat(work, tmp, st.st_mode, st.st_rdev).map_err(errno)?;
                let l = open_at(work, tmp, libc::O_PATH, 0).map_err(errno)?;
                beneath::copy_metadata(src, l.as_raw_fd(), false);
            }
        }
        Ok(())
    }
}
