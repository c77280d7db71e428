//! The inode table: one node per inode the kernel knows, the names and layers it was
//! found under, and the directory descriptors cached per (node, layer). Pure
//! bookkeeping under the table's mutex: nothing here touches a layer.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use fuser::Errno;

use super::attr::R;

/// The root directory's node ID (the kernel's FUSE_ROOT_ID).
pub(super) const ROOT: u64 = 1;
/// The parent of a detached node (no node has ID 0).
pub(super) const DETACHED: u64 = 0;
/// Directory descriptors cached, at most (and at most a quarter of RLIMIT_NOFILE).
const DIR_FD_CACHE_MAX: usize = 16384;

pub(super) struct Node {
    /// The directory node it was last looked up in, [`DETACHED`] once that name is gone.
    pub parent: u64,
    pub name: CString,
    pub layer: usize,
    /// Directories: the layers of the merged view, topmost first.
    pub dirs: Option<Vec<usize>>,
    /// The node's own descriptor: a detached node's (O_PATH, or the directory's) or an
    /// unnamed copy-up's. Reached through it, never through a name.
    pub pinned: Option<Arc<OwnedFd>>,
    pub key: Key,
    /// The file type bits (S_IFMT) of the inode; a node never changes type.
    pub fmt: u32,
    pub nlookup: u64,
    /// Directories: bumped at every change of its entries (shared listings).
    pub gen: u64,
}

pub(super) struct Nodes {
    pub map: HashMap<u64, Node>,
    pub keys: HashMap<Key, u64>,
    next: u64,
    /// Directory descriptors per (node, layer), opened one name at a time below the
    /// layer root. A descriptor names its directory for as long as it lives, whatever
    /// is renamed, so an entry never goes stale; the cache is only emptied when full.
    pub dirfds: HashMap<(u64, usize), Arc<OwnedFd>>,
    dirfd_cap: usize,
}

/// How a node is found again: the (device, inode) of its file; for a file with several
/// names in a read-only layer also the name, since overlayfs (without index) breaks such
/// a link at copy-up: each name is a file of its own, and a write through one name must
/// copy up that name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub dev: u64,
    pub ino: u64,
    pub at: Option<(u64, CString)>,
}

impl Key {
    pub fn of(st: &libc::stat) -> Key {
        Key {
            dev: st.st_dev,
            ino: st.st_ino,
            at: None,
        }
    }

    pub fn is(&self, st: &libc::stat) -> bool {
        (self.dev, self.ino) == (st.st_dev, st.st_ino)
    }
}

fn fd_limit() -> usize {
    // SAFETY: getrlimit fills a plain struct.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

impl Nodes {
    /// The table with only the root directory, found in `layer`, made of `dirs`.
    pub fn new(layer: usize, dirs: Vec<usize>, key: Key) -> Nodes {
        let mut nodes = Nodes {
            map: HashMap::new(),
            keys: HashMap::new(),
            next: ROOT + 1,
            dirfds: HashMap::new(),
            dirfd_cap: (fd_limit() / 4).clamp(64, DIR_FD_CACHE_MAX),
        };
        nodes.map.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: CString::default(),
                layer,
                dirs: Some(dirs),
                pinned: None,
                key,
                fmt: libc::S_IFDIR,
                nlookup: 1,
                gen: 0,
            },
        );
        nodes
    }

    pub fn get(&self, ino: u64) -> R<&Node> {
        self.map.get(&ino).ok_or(Errno::ESTALE)
    }

    pub fn get_mut(&mut self, ino: u64) -> R<&mut Node> {
        self.map.get_mut(&ino).ok_or(Errno::ESTALE)
    }

    pub fn cache_dir(&mut self, ino: u64, layer: usize, fd: Arc<OwnedFd>) {
        if self.dirfds.len() >= self.dirfd_cap {
            self.dirfds.clear();
        }
        self.dirfds.insert((ino, layer), fd);
    }

    pub fn bump(&mut self, dir: u64) {
        if let Some(n) = self.map.get_mut(&dir) {
            n.gen += 1;
        }
    }

    /// Counts a lookup of the inode `key` as `name` in `parent`, found in `layer`
    /// (directories: made of `dirs`); returns its node ID. A node found again by its
    /// inode is (re)attached under this name.
    pub fn attach(
        &mut self,
        key: Key,
        parent: u64,
        name: &CStr,
        layer: usize,
        dirs: Option<Vec<usize>>,
        fmt: u32,
    ) -> R<u64> {
        let existing = self.keys.get(&key).copied().filter(|ino| {
            self.map
                .get(ino)
                .is_some_and(|n| n.dirs.is_some() == dirs.is_some())
        });
        Ok(match existing {
            Some(ino) => {
                let n = self.get_mut(ino)?;
                n.nlookup += 1;
                n.parent = parent;
                n.name = name.to_owned();
                n.layer = layer;
                n.pinned = None;
                if dirs.is_some() {
                    n.dirs = dirs;
                }
                ino
            }
            None => {
                let ino = self.next;
                self.next += 1;
                self.map.insert(
                    ino,
                    Node {
                        parent,
                        name: name.to_owned(),
                        layer,
                        dirs,
                        pinned: None,
                        key: key.clone(),
                        fmt,
                        nlookup: 1,
                        gen: 0,
                    },
                );
                self.keys.insert(key, ino);
                ino
            }
        })
    }

    /// The node's name is gone: from now on it is reached through `fd` only.
    pub fn detach(&mut self, ino: u64, fd: Arc<OwnedFd>) {
        let named = match self.map.get_mut(&ino) {
            Some(n) => {
                n.parent = DETACHED;
                n.pinned = Some(fd);
                n.key.at.is_some().then(|| n.key.clone())
            }
            None => None,
        };
        // A name-bound key names nothing any more.
        if let Some(k) = named {
            if self.keys.get(&k) == Some(&ino) {
                self.keys.remove(&k);
            }
        }
    }

    /// The node's inode is now the one `key` names (after a copy-up).
    pub fn rekey(&mut self, ino: u64, key: Key) -> R<()> {
        let old = std::mem::replace(&mut self.get_mut(ino)?.key, key.clone());
        if self.keys.get(&old) == Some(&ino) {
            self.keys.remove(&old);
        }
        self.keys.insert(key, ino);
        Ok(())
    }

    /// The kernel forgets `nlookup` lookups of `ino`; at none left the node goes, with
    /// its cached descriptors of any of `layers` layers. True when a directory went.
    pub fn forget(&mut self, ino: u64, nlookup: u64, layers: usize) -> bool {
        let remove = match self.map.get_mut(&ino) {
            Some(n) => {
                n.nlookup = n.nlookup.saturating_sub(nlookup);
                n.nlookup == 0
            }
            None => false,
        };
        if !remove {
            return false;
        }
        let Some(n) = self.map.remove(&ino) else {
            return false;
        };
        if self.keys.get(&n.key) == Some(&ino) {
            self.keys.remove(&n.key);
        }
        if n.dirs.is_none() {
            return false;
        }
        for l in 0..layers {
            self.dirfds.remove(&(ino, l));
        }
        true
    }
}
