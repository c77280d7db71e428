//! Namespace changes in the union: new entries, unlink and rmdir, rename, under
//! overlayfs' rules. Deleting a name that a lower layer still has leaves a whiteout; a
//! directory created where a lower one was deleted is marked opaque; renaming a
//! directory that is not purely in the upper layer is EXDEV, as in overlayfs with
//! `userxattr` (no redirect_dir). The parents are copied up first, without the tree
//! lock; the change itself holds it exclusively, and a node whose name goes is
//! detached (kept reachable through a descriptor of its own, nodes.rs).

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use fuser::{Errno, FileAttr, RenameFlags, Request};

use super::attr::{attr_of, cname, errno, is_dir, R};
use super::copy_up::CopyUp;
use super::layers::{is_whiteout, opaque, Found, Held, Resolved, Tree, OPAQUE, UPPER, WHITEOUT};
use super::listing::merged_is_empty;
use crate::at;
use crate::union::fuse::beneath::{self, fstat, open_at, open_dir_at, stat_at, Xattr};

/// The union as namespace changes see it: the tree they change, and the copy-up that
/// makes a parent directory upper first.
pub(super) struct Namespace<'a> {
    pub tree: &'a Tree,
    pub copy: &'a CopyUp,
}

impl Namespace<'_> {
    /// Prepares `name` in directory `parent` (already copied up) for a new entry: a
    /// whiteout there is removed. Returns (the upper directory, whether a lower layer
    /// had the name, i.e. a new directory must be opaque).
    pub fn prepare_new(&self, t: &Held, parent: u64, name: &CStr) -> R<(Arc<OwnedFd>, bool)> {
        let layers = self.tree.dirs_of(parent)?;
        if layers.first() != Some(&UPPER) {
            return Err(Errno::ENOENT); // a detached directory (copy-up refused)
        }
        let pfd = self.tree.dir_fd(t, parent, UPPER)?;
        let hid_lower = match self.tree.resolve(t, parent, &layers, name)? {
            Resolved::Found(_) => return Err(Errno::EEXIST),
            Resolved::Missing => false,
            Resolved::Whiteout(UPPER) => {
                match at::unlinkat(pfd.as_raw_fd(), name, 0) {
                    Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(errno(e)),
                    _ => {}
                }
                true
            }
            Resolved::Whiteout(_) => true,
        };
        Ok((pfd, hid_lower))
    }

    /// Registers an entry this server just made in the upper layer, from its stat: no
    /// second resolution across the layers (a new directory is purely upper: either no
    /// lower layer had the name or it was made opaque).
    pub fn new_upper_entry(
        &self,
        parent: u64,
        name: &CStr,
        st: libc::stat,
        dir: Option<Arc<OwnedFd>>,
    ) -> R<(u64, FileAttr)> {
        let found = Found {
            layer: UPPER,
            st,
            dirs: dir.map(|d| vec![(UPPER, d)]),
        };
        let ino = self.tree.remember(parent, name, found)?;
        self.tree.nodes().bump(parent);
        Ok((ino, attr_of(ino, &st, false)))
    }

    /// The node known under `name` in `parent`, if the kernel knows one, with a
    /// descriptor of its inode to keep it reachable once the name is gone.
    fn to_detach(
        &self,
        t: &Held,
        parent: u64,
        name: &CStr,
        found: &Found,
    ) -> R<Option<(u64, Arc<OwnedFd>)>> {
        let ino = {
            let nodes = self.tree.nodes();
            match nodes
                .keys
                .get(&found.key(parent, name))
                .and_then(|i| nodes.map.get(i).map(|n| (i, n)))
            {
                Some((&i, n)) if n.parent == parent && n.name.as_c_str() == name => i,
                _ => return Ok(None),
            }
        };
        let fd = match &found.dirs {
            Some(d) => d[0].1.clone(),
            None => {
                let pfd = self.tree.dir_fd(t, parent, found.layer)?;
                Arc::new(open_at(pfd.as_raw_fd(), name, libc::O_PATH, 0).map_err(errno)?)
            }
        };
        Ok(Some((ino, fd)))
    }

    fn detach(&self, what: Option<(u64, Arc<OwnedFd>)>) {
        if let Some((ino, fd)) = what {
            self.tree.nodes().detach(ino, fd);
        }
    }

    /// Removes `name` from `parent` (a file, or with `dir` an empty directory).
    pub fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> R<()> {
        let name = cname(name)?;
        {
            let t = self.tree.read();
            let layers = self.tree.dirs_of(parent)?;
            self.tree
                .find(&t, parent, &layers, &name)?
                .ok_or(Errno::ENOENT)?;
        }
        self.copy.copy_up_dir(self.tree, parent)?;
        let t = self.tree.write();
        let layers = self.tree.dirs_of(parent)?;
        let found = self
            .tree
            .find(&t, parent, &layers, &name)?
            .ok_or(Errno::ENOENT)?;
        match (dir, found.dirs.is_some()) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        if let Some(dirs) = &found.dirs {
            if !merged_is_empty(dirs)? {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let lower = self.tree.in_lower(&t, parent, &layers, &name)?;
        let pfd = self.tree.dir_fd(&t, parent, UPPER)?;
        let detach = self.to_detach(&t, parent, &name, &found)?;
        if found.layer == UPPER {
            if let Some(dirs) = &found.dirs {
                clear_whiteouts(dirs[0].1.as_raw_fd())?;
            }
            let flag = if dir { libc::AT_REMOVEDIR } else { 0 };
            at::unlinkat(pfd.as_raw_fd(), &name, flag).map_err(errno)?;
        }
        if lower {
            make_whiteout(pfd.as_raw_fd(), &name)?;
        }
        self.detach(detach);
        self.tree.nodes().bump(parent);
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> R<()> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let (sn, dn) = (cname(name)?, cname(newname)?);
        // Copy-ups first, without the tree lock (they take it themselves).
        let src_ino = {
            let t = self.tree.read();
            let layers = self.tree.dirs_of(parent)?;
            let src = self
                .tree
                .find(&t, parent, &layers, &sn)?
                .ok_or(Errno::ENOENT)?;
            if let Some(d) = &src.dirs {
                // Only a directory entirely in the upper layer can move (no redirect_dir).
                if d.len() != 1 || d[0].0 != UPPER {
                    return Err(Errno::EXDEV);
                }
            }
            let ino = self.tree.nodes().keys.get(&src.key(parent, &sn)).copied();
            if ino.is_none() && src.layer != UPPER {
                return Err(Errno::EXDEV);
            }
            ino
        };
        if let Some(ino) = src_ino {
            self.copy.copy_up(self.tree, ino, false)?;
        }
        self.copy.copy_up_dir(self.tree, parent)?;
        self.copy.copy_up_dir(self.tree, newparent)?;
        let t = self.tree.write();
        let slayers = self.tree.dirs_of(parent)?;
        let dlayers = self.tree.dirs_of(newparent)?;
        let src = self
            .tree
            .find(&t, parent, &slayers, &sn)?
            .ok_or(Errno::ENOENT)?;
        if src.layer != UPPER {
            return Err(Errno::EXDEV);
        }
        if src.dirs.as_ref().is_some_and(|d| d.len() != 1) {
            return Err(Errno::EXDEV);
        }
        let dst = self.tree.find(&t, newparent, &dlayers, &dn)?;
        if parent == newparent && sn == dn {
            return Ok(());
        }
        if let Some(dst) = &dst {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (&src.dirs, &dst.dirs) {
                (None, Some(_)) => return Err(Errno::EISDIR),
                (Some(_), None) => return Err(Errno::ENOTDIR),
                (Some(_), Some(dd)) => {
                    if !merged_is_empty(dd)? {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                (None, None) => {}
            }
        }
        let src_lower = self.tree.in_lower(&t, parent, &slayers, &sn)?;
        let dst_lower = self.tree.in_lower(&t, newparent, &dlayers, &dn)?;
        let spfd = self.tree.dir_fd(&t, parent, UPPER)?;
        let dpfd = self.tree.dir_fd(&t, newparent, UPPER)?;
        let src_node = self.tree.nodes().keys.get(&src.key(parent, &sn)).copied();
        let detach = match &dst {
            Some(d) if !d.same_inode(&src) => self.to_detach(&t, newparent, &dn, d)?,
            _ => None,
        };
        if let Ok(st) = stat_at(dpfd.as_raw_fd(), &dn) {
            if is_dir(&st) {
                let d = open_dir_at(dpfd.as_raw_fd(), &dn).map_err(errno)?;
                clear_whiteouts(d.as_raw_fd())?;
            } else if is_whiteout(dpfd.as_raw_fd(), &dn, &st) && src.dirs.is_some() {
                // A directory cannot replace the whiteout device: remove it first.
                at::unlinkat(dpfd.as_raw_fd(), &dn, 0).map_err(errno)?;
            }
        }
        beneath::rename_at(spfd.as_raw_fd(), &sn, dpfd.as_raw_fd(), &dn, 0).map_err(errno)?;
        if src_lower {
            make_whiteout(spfd.as_raw_fd(), &sn)?;
        }
        if src.dirs.is_some() && dst_lower {
            let d = open_dir_at(dpfd.as_raw_fd(), &dn).map_err(errno)?;
            beneath::xattr_fd(d.as_raw_fd(), Xattr::Set(OPAQUE, b"y", 0)).map_err(errno)?;
        }
        self.detach(detach);
        let mut nodes = self.tree.nodes();
        if let Some(ino) = src_node {
            if let Some(n) = nodes.map.get_mut(&ino) {
                if n.parent == parent && n.name == sn {
                    n.parent = newparent;
                    n.name = dn;
                }
                if n.dirs.is_some() {
                    n.dirs = Some(vec![UPPER]);
                }
            }
        }
        nodes.bump(parent);
        nodes.bump(newparent);
        Ok(())
    }
}

/// Gives a new upper entry the requesting container user as owner (the server
/// creates as its own root). A set-group-ID directory passes its group on.
pub(super) fn own(dir: &OwnedFd, name: &CStr, req: &Request) -> R<()> {
    let mut gid = req.gid();
    if let Ok(st) = fstat(dir.as_raw_fd()) {
        if st.st_mode & libc::S_ISGID != 0 {
            gid = st.st_gid;
        }
    }
    if req.uid() == 0 && gid == 0 {
        return Ok(());
    }
    beneath::chown_at(dir.as_raw_fd(), name, req.uid(), gid).map_err(errno)
}

/// Creates a whiteout `name` in `dir`: the device form where the kernel allows it, else
/// the xattr form (crate::union's layer format).
fn make_whiteout(dir: RawFd, name: &CStr) -> R<()> {
    match at::mknodat(dir, name, libc::S_IFCHR, 0) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() != Some(libc::EPERM) => return Err(errno(e)),
        Err(_) => {}
    }
    let f = open_at(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
    .map_err(errno)?;
    beneath::xattr_fd(f.as_raw_fd(), Xattr::Set(WHITEOUT, b"y", 0)).map_err(errno)?;
    if !opaque(dir) {
        let _ = beneath::xattr_fd(dir, Xattr::Set(OPAQUE, b"x", 0));
    }
    Ok(())
}

/// Deletes the whiteouts left in an upper directory whose merged view is empty.
fn clear_whiteouts(dir: RawFd) -> R<()> {
    let mut names = Vec::new();
    beneath::read_dir(dir, |n, _, _| {
        names.push(n.to_owned());
        Ok(true)
    })
    .map_err(errno)?;
    for n in names {
        match at::unlinkat(dir, &n, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => return Err(Errno::ENOTEMPTY),
            r => r.map_err(errno)?,
        }
    }
    Ok(())
}
