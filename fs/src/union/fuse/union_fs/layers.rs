//! Layer resolution: the layers held open, the tree lock, and how a node or a name is
//! reached in them: directory descriptors opened one name at a time from a layer root
//! (cached in the inode table), a name resolved top-down through a merged directory's
//! layers, whiteouts and opaque directories cutting the view (overlayfs' format with
//! `userxattr`, crate::union). Everything here only reads the layers.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fuser::{Errno, FileAttr};

use super::attr::{attr_of, errno, is_dir, R};
use super::nodes::{Key, Nodes, DETACHED, ROOT};
use crate::union::fuse::beneath::{self, fstat, open_at, open_dir_at, stat_at};

/// The writable layer's index; read-only layers follow, topmost first.
pub(super) const UPPER: usize = 0;

pub(super) const OPAQUE: &CStr = c"user.overlay.opaque";
pub(super) const WHITEOUT: &CStr = c"user.overlay.whiteout";

/// One read-only or writable layer, held open.
pub(super) struct Layer {
    pub fd: Arc<OwnedFd>,
}

impl Layer {
    pub fn open(path: &Path) -> io::Result<Layer> {
        Ok(Layer {
            fd: Arc::new(crate::at::open_dir(path)?),
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Proof that the caller holds the tree lock (shared or exclusive): records are the
/// names the layers hold while it lives.
pub(super) enum Held<'a> {
    Shared { _g: RwLockReadGuard<'a, ()> },
    Exclusive { _g: RwLockWriteGuard<'a, ()> },
}

/// Where a node's inode is: a name in a directory, or a descriptor of its own.
pub(super) enum Place {
    At(Arc<OwnedFd>, CString),
    Fd(Arc<OwnedFd>),
}

impl Place {
    pub fn stat(&self) -> R<libc::stat> {
        match self {
            Place::At(d, n) => stat_at(d.as_raw_fd(), n),
            Place::Fd(f) => fstat(f.as_raw_fd()),
        }
        .map_err(errno)
    }

    /// An O_PATH descriptor of the inode itself (a symlink is not followed).
    pub fn fd(&self) -> R<Arc<OwnedFd>> {
        match self {
            Place::At(d, n) => Ok(Arc::new(
                open_at(d.as_raw_fd(), n, libc::O_PATH, 0).map_err(errno)?,
            )),
            Place::Fd(f) => Ok(f.clone()),
        }
    }

    pub fn open(&self, flags: libc::c_int) -> R<OwnedFd> {
        match self {
            Place::At(d, n) => open_at(d.as_raw_fd(), n, flags, 0),
            Place::Fd(f) => beneath::reopen(f.as_raw_fd(), flags),
        }
        .map_err(errno)
    }
}

/// What a name resolves to in a merged directory, with why it is absent.
pub(super) enum Resolved {
    Found(Found),
    /// A whiteout in this layer hides the name.
    Whiteout(usize),
    /// No layer has an entry of that name.
    Missing,
}

/// What a name resolves to in a merged directory.
pub(super) struct Found {
    pub layer: usize,
    pub st: libc::stat,
    /// Directories: the layers of the merged view, and a descriptor for each.
    pub dirs: Option<Vec<(usize, Arc<OwnedFd>)>>,
}

impl Found {
    pub fn key(&self, parent: u64, name: &CStr) -> Key {
        let mut k = Key::of(&self.st);
        if self.layer != UPPER && self.dirs.is_none() && self.st.st_nlink > 1 {
            k.at = Some((parent, name.to_owned()));
        }
        k
    }

    pub fn same_inode(&self, other: &Found) -> bool {
        (self.st.st_dev, self.st.st_ino) == (other.st.st_dev, other.st.st_ino)
    }
}

/// The layers and the inode table, with the tree lock: namespace changes (unlink,
/// rmdir, rename) hold it exclusively, everything that resolves a record holds it
/// shared, so a record is always the name the layers hold.
pub(super) struct Tree {
    /// The upper layer first ([`UPPER`]), then the read-only ones, topmost first.
    pub layers: Vec<Layer>,
    lock: RwLock<()>,
    nodes: Mutex<Nodes>,
}

impl Tree {
    pub fn new(layers: Vec<Layer>) -> io::Result<Tree> {
        let root_dirs = root_layers(&layers);
        let st = fstat(layers[UPPER].raw())?;
        Ok(Tree {
            layers,
            lock: RwLock::new(()),
            nodes: Mutex::new(Nodes::new(UPPER, root_dirs, Key::of(&st))),
        })
    }

    pub fn read(&self) -> Held<'_> {
        Held::Shared {
            _g: self.lock.read().unwrap_or_else(|e| e.into_inner()),
        }
    }

    pub fn write(&self) -> Held<'_> {
        Held::Exclusive {
            _g: self.lock.write().unwrap_or_else(|e| e.into_inner()),
        }
    }

    pub fn nodes(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The descriptor of directory node `ino` in `layer` (which must be one of its
    /// layers): cached, or opened from its parent's, one name with O_NOFOLLOW.
    // `t` is the proof that the tree lock is held: it is only passed down, by design.
    #[allow(clippy::only_used_in_recursion)]
    pub fn dir_fd(&self, t: &Held, ino: u64, layer: usize) -> R<Arc<OwnedFd>> {
        if ino == ROOT {
            return Ok(self.layers[layer].fd.clone());
        }
        let (parent, name) = {
            let nodes = self.nodes();
            if let Some(fd) = nodes.dirfds.get(&(ino, layer)) {
                return Ok(fd.clone());
            }
            let n = nodes.get(ino)?;
            if let Some(p) = &n.pinned {
                return if n.layer == layer {
                    Ok(p.clone())
                } else {
                    Err(Errno::ENOENT)
                };
            }
            if n.parent == DETACHED {
                return Err(Errno::ENOENT);
            }
            (n.parent, n.name.clone())
        };
        let pfd = self.dir_fd(t, parent, layer)?;
        let fd = Arc::new(open_dir_at(pfd.as_raw_fd(), &name).map_err(errno)?);
        self.nodes().cache_dir(ino, layer, fd.clone());
        Ok(fd)
    }

    pub fn place(&self, t: &Held, ino: u64) -> R<Place> {
        let (parent, name, layer, dir) = {
            let nodes = self.nodes();
            let n = nodes.get(ino)?;
            if let Some(p) = &n.pinned {
                return Ok(Place::Fd(p.clone()));
            }
            (n.parent, n.name.clone(), n.layer, n.dirs.is_some())
        };
        if dir {
            return Ok(Place::Fd(self.dir_fd(t, ino, layer)?));
        }
        if parent == DETACHED {
            return Err(Errno::ESTALE);
        }
        Ok(Place::At(self.dir_fd(t, parent, layer)?, name))
    }

    /// A descriptor of the node's own inode, checked to be the node's file (a record
    /// that went astray is ESTALE, never another file).
    pub fn node_fd(&self, t: &Held, ino: u64) -> R<Arc<OwnedFd>> {
        let place = self.place(t, ino)?;
        let fd = place.fd()?;
        if let Place::At(..) = place {
            let st = fstat(fd.as_raw_fd()).map_err(errno)?;
            if !self.nodes().get(ino)?.key.is(&st) {
                return Err(Errno::ESTALE);
            }
        }
        Ok(fd)
    }

    pub fn dirs_of(&self, ino: u64) -> R<Vec<usize>> {
        self.nodes().get(ino)?.dirs.clone().ok_or(Errno::ENOTDIR)
    }

    /// Resolves `name` in the merged directory `parent` made of `layers`.
    pub fn resolve(&self, t: &Held, parent: u64, layers: &[usize], name: &CStr) -> R<Resolved> {
        for (k, &i) in layers.iter().enumerate() {
            let pfd = self.dir_fd(t, parent, i)?;
            let st = match stat_at(pfd.as_raw_fd(), name) {
                Ok(st) => st,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => return Err(errno(e)),
            };
            if is_whiteout(pfd.as_raw_fd(), name, &st) {
                return Ok(Resolved::Whiteout(i));
            }
            let dirs = if is_dir(&st) {
                let fd = Arc::new(open_dir_at(pfd.as_raw_fd(), name).map_err(errno)?);
                let stop = opaque(fd.as_raw_fd());
                let mut d = vec![(i, fd)];
                if !stop {
                    for &j in &layers[k + 1..] {
                        let pj = self.dir_fd(t, parent, j)?;
                        match stat_at(pj.as_raw_fd(), name) {
                            Ok(s) if is_dir(&s) => {
                                let fj =
                                    Arc::new(open_dir_at(pj.as_raw_fd(), name).map_err(errno)?);
                                let stop = opaque(fj.as_raw_fd());
                                d.push((j, fj));
                                if stop {
                                    break;
                                }
                            }
                            Ok(_) => break,
                            Err(_) => continue,
                        }
                    }
                }
                Some(d)
            } else {
                None
            };
            return Ok(Resolved::Found(Found { layer: i, st, dirs }));
        }
        Ok(Resolved::Missing)
    }

    pub fn find(&self, t: &Held, parent: u64, layers: &[usize], name: &CStr) -> R<Option<Found>> {
        Ok(match self.resolve(t, parent, layers, name)? {
            Resolved::Found(f) => Some(f),
            _ => None,
        })
    }

    /// True when a layer below the upper one shows `name` in this merged directory.
    pub fn in_lower(&self, t: &Held, parent: u64, layers: &[usize], name: &CStr) -> R<bool> {
        let lower: Vec<usize> = layers.iter().copied().filter(|&i| i != UPPER).collect();
        Ok(self.find(t, parent, &lower, name)?.is_some())
    }

    /// Registers a lookup of `found` as `name` in `parent`; returns its node ID. A node
    /// found again by its inode is (re)attached under this name.
    pub fn remember(&self, parent: u64, name: &CStr, found: Found) -> R<u64> {
        let key = found.key(parent, name);
        let layers = found
            .dirs
            .as_ref()
            .map(|d| d.iter().map(|(l, _)| *l).collect::<Vec<_>>());
        let fmt = found.st.st_mode & libc::S_IFMT;
        let mut nodes = self.nodes();
        let ino = nodes.attach(key, parent, name, found.layer, layers, fmt)?;
        for (l, fd) in found.dirs.into_iter().flatten() {
            nodes.cache_dir(ino, l, fd);
        }
        Ok(ino)
    }

    pub fn lookup_entry(&self, t: &Held, parent: u64, name: &CStr) -> R<(u64, FileAttr)> {
        let layers = self.dirs_of(parent)?;
        let found = self.find(t, parent, &layers, name)?.ok_or(Errno::ENOENT)?;
        let merged = found.dirs.as_ref().is_some_and(|d| d.len() > 1);
        let st = found.st;
        let ino = self.remember(parent, name, found)?;
        Ok((ino, attr_of(ino, &st, merged)))
    }

    pub fn stat_node(&self, t: &Held, ino: u64) -> R<FileAttr> {
        let st = self.place(t, ino)?.stat()?;
        let merged = self
            .nodes()
            .get(ino)?
            .dirs
            .as_ref()
            .is_some_and(|d| d.len() > 1);
        Ok(attr_of(ino, &st, merged))
    }
}

/// The root's merged view: the upper layer, then each lower one down to an opaque one.
fn root_layers(layers: &[Layer]) -> Vec<usize> {
    let mut v = vec![UPPER];
    if opaque(layers[UPPER].raw()) {
        return v;
    }
    for (i, layer) in layers.iter().enumerate().skip(1) {
        v.push(i);
        if opaque(layer.raw()) {
            break;
        }
    }
    v
}

/// Whether directory `dir` is opaque (hides the layers below it).
pub(super) fn opaque(dir: RawFd) -> bool {
    beneath::get_xattr(dir, OPAQUE).is_some_and(|v| v == b"y")
}

/// Whether directory `dir` holds whiteouts in the xattr form.
pub(super) fn xattr_whiteouts(dir: RawFd) -> bool {
    beneath::get_xattr(dir, OPAQUE).is_some_and(|v| v == b"x")
}

/// Whether `name` in `dir`, of stat `st`, is a whiteout (either form).
pub(super) fn is_whiteout(dir: RawFd, name: &CStr, st: &libc::stat) -> bool {
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFCHR {
        return st.st_rdev == 0;
    }
    // The xattr form counts only in a directory marked as holding such whiteouts.
    fmt == libc::S_IFREG
        && st.st_size == 0
        && xattr_whiteouts(dir)
        && open_at(dir, name, libc::O_PATH, 0)
            .is_ok_and(|f| beneath::get_xattr(f.as_raw_fd(), WHITEOUT).is_some())
}

/// Whether a directory entry of type `dtype` is a whiteout (only character devices
/// and regular files can be; DT_UNKNOWN is looked at).
pub(super) fn entry_is_whiteout(dir: RawFd, name: &CStr, dtype: u8) -> bool {
    match dtype {
        libc::DT_CHR | libc::DT_REG | libc::DT_UNKNOWN => {
            stat_at(dir, name).is_ok_and(|st| is_whiteout(dir, name, &st))
        }
        _ => false,
    }
}
