//! The union filesystem behind the FUSE driver: overlayfs semantics over plain layer
//! directories, answering the kernel's requests through `fuser`.
//!
//! Confinement (the invariant of beneath.rs): the server never resolves a path. Each
//! layer is held open as a directory descriptor; every other file is reached from it one
//! name at a time with O_NOFOLLOW, through the descriptors of the directories on the way
//! (cached, see below), and acted on through its parent's descriptor without following a
//! final symlink, or through a descriptor of its own. A symlink in a layer is data, never
//! a path the server follows, whatever a container plants or swaps.
//!
//! Nodes follow the kernel's view of open files. A node (one per inode the kernel knows)
//! records the parent and name it was last looked up as, the topmost layer holding it,
//! for a directory the layers that make up its merged view (cut at an opaque directory
//! or a whiteout), and its file type. When the name a node is recorded under stops
//! naming it (unlink, rmdir, a rename over it), the node is detached: it keeps an O_PATH
//! descriptor of its inode, opened before the name went, and from then on is reached
//! only through it, as the kernel still reaches it through open files, until the kernel
//! forgets it or finds it again under another name (a hard link). Operations on an open
//! file (read, write, fsync, fallocate, lseek, ftruncate, getattr with a handle) use the
//! descriptor opened at OPEN time. Namespace changes (unlink, rmdir, rename) hold the
//! tree lock exclusively, everything that resolves a record holds it shared, so a record
//! is always the name the layers hold. Node IDs are never reused; hardlinks are one
//! node, found again by the (device, inode) of the underlying file.
//!
//! Directory descriptors are cached per (node, layer), at most [`UnionFs::new`]'s share
//! of RLIMIT_NOFILE: a lookup is one fstatat on the parent's descriptor. A miss reopens
//! the directory from its parent's, up to the layer root.
//!
//! Round trips to the kernel cost more than anything done here, so the kernel is let
//! cache entries, attributes and misses (negative entries) for [`TTL`], FLUSH is
//! declined once, and a new entry is answered from the stat of what was just made.
//!
//! Reads and writes go straight to the open upper or lower file (pread/pwrite on the
//! handle, no lock taken). Opening for write, and any metadata change, first copies the
//! file up: data (reflink or sparse copy_file_range) into `work/`, then owner, mode,
//! xattrs and times, then an atomic rename into the upper layer, after the parent
//! directories were copied up the same way; a detached file is copied to an unnamed
//! file. Deleting a name that a lower layer still has leaves a whiteout; a directory
//! created where a lower one was deleted is marked opaque; renaming a directory that is
//! not purely in the upper layer is EXDEV, as in overlayfs with `userxattr` (no
//! redirect_dir).
//!
//! Directory listings: a directory of one layer is streamed from that layer (offsets
//! are the filesystem's own; a handle holds a descriptor and at most [`STREAM_BUF`]
//! bytes read ahead); a merged one is
//! read once into a listing shared by every handle opened while the directory is
//! unchanged, all listings together at most [`LISTING_BUDGET`] bytes (beyond it opendir
//! fails with ENOMEM).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::beneath::{self, component, fstat, open_at, open_dir_at, stat_at, Xattr};
use super::splice::SpliceReplies;
use crate::union::{ContainerLayer, Layers};

/// How long the kernel may trust entries and attributes. Every change to the layers
/// passes through this filesystem, which tells the kernel; the timeout only bounds
/// the effect of a change made behind its back.
const TTL: Duration = Duration::from_secs(10);
const ROOT: u64 = 1;
const UPPER: usize = 0;
/// The parent of a detached node (no node has ID 0).
const DETACHED: u64 = 0;
/// The most bytes all merged-directory listings may hold together.
pub const LISTING_BUDGET: usize = 64 << 20;
/// Directory descriptors cached, at most (and at most a quarter of RLIMIT_NOFILE).
const DIR_FD_CACHE_MAX: usize = 16384;

const OPAQUE: &CStr = c"user.overlay.opaque";
const WHITEOUT: &CStr = c"user.overlay.whiteout";

type R<T> = std::result::Result<T, Errno>;

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn errno_last() -> Errno {
    Errno::from(io::Error::last_os_error())
}

fn cname(name: &OsStr) -> R<CString> {
    component(name).map_err(errno)
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn kind_of_dtype(t: u8) -> Option<FileType> {
    Some(match t {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_REG => FileType::RegularFile,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => return None,
    })
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new((-sec) as u64, 0) + Duration::new(0, nsec as u32)
    }
}

fn attr_of(ino: u64, st: &libc::stat, merged_dir: bool) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        // overlayfs reports 1 ("unknown") for merged directories: the count of one
        // layer would be wrong, and tools like find treat 1 as "do not guess".
        nlink: if merged_dir { 1 } else { st.st_nlink as u32 },
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn check(r: libc::c_int) -> R<()> {
    if r < 0 {
        Err(errno_last())
    } else {
        Ok(())
    }
}

fn unlink_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> R<()> {
    // SAFETY: `name` is one NUL-terminated component below an open directory.
    check(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) })
}

struct Node {
    /// The directory node it was last looked up in, [`DETACHED`] once that name is gone.
    parent: u64,
    name: CString,
    layer: usize,
    /// Directories: the layers of the merged view, topmost first.
    dirs: Option<Vec<usize>>,
    /// The node's own descriptor: a detached node's (O_PATH, or the directory's) or an
    /// unnamed copy-up's. Reached through it, never through a name.
    pinned: Option<Arc<OwnedFd>>,
    key: Key,
    /// The file type bits (S_IFMT) of the inode; a node never changes type.
    fmt: u32,
    nlookup: u64,
    /// Directories: bumped at every change of its entries (shared listings).
    gen: u64,
}

struct Nodes {
    map: HashMap<u64, Node>,
    keys: HashMap<Key, u64>,
    next: u64,
    /// Directory descriptors per (node, layer), opened one name at a time below the
    /// layer root. A descriptor names its directory for as long as it lives, whatever
    /// is renamed, so an entry never goes stale; the cache is only emptied when full.
    dirfds: HashMap<(u64, usize), Arc<OwnedFd>>,
    dirfd_cap: usize,
}

impl Nodes {
    fn get(&self, ino: u64) -> R<&Node> {
        self.map.get(&ino).ok_or(Errno::ESTALE)
    }

    fn get_mut(&mut self, ino: u64) -> R<&mut Node> {
        self.map.get_mut(&ino).ok_or(Errno::ESTALE)
    }

    fn cache_dir(&mut self, ino: u64, layer: usize, fd: Arc<OwnedFd>) {
        if self.dirfds.len() >= self.dirfd_cap {
            self.dirfds.clear();
        }
        self.dirfds.insert((ino, layer), fd);
    }

    fn bump(&mut self, dir: u64) {
        if let Some(n) = self.map.get_mut(&dir) {
            n.gen += 1;
        }
    }
}

/// Proof that the caller holds the tree lock (shared or exclusive): records are the
/// names the layers hold while it lives.
enum Held<'a> {
    Shared { _g: RwLockReadGuard<'a, ()> },
    Exclusive { _g: RwLockWriteGuard<'a, ()> },
}

/// Where a node's inode is: a name in a directory, or a descriptor of its own.
enum Place {
    At(Arc<OwnedFd>, CString),
    Fd(Arc<OwnedFd>),
}

impl Place {
    fn stat(&self) -> R<libc::stat> {
        match self {
            Place::At(d, n) => stat_at(d.as_raw_fd(), n),
            Place::Fd(f) => fstat(f.as_raw_fd()),
        }
        .map_err(errno)
    }

    /// An O_PATH descriptor of the inode itself (a symlink is not followed).
    fn fd(&self) -> R<Arc<OwnedFd>> {
        match self {
            Place::At(d, n) => Ok(Arc::new(
                open_at(d.as_raw_fd(), n, libc::O_PATH, 0).map_err(errno)?,
            )),
            Place::Fd(f) => Ok(f.clone()),
        }
    }

    fn open(&self, flags: libc::c_int) -> R<OwnedFd> {
        match self {
            Place::At(d, n) => open_at(d.as_raw_fd(), n, flags, 0),
            Place::Fd(f) => beneath::reopen(f.as_raw_fd(), flags),
        }
        .map_err(errno)
    }
}

/// What a name resolves to in a merged directory, with why it is absent.
enum Resolved {
    Found(Found),
    /// A whiteout in this layer hides the name.
    Whiteout(usize),
    /// No layer has an entry of that name.
    Missing,
}

/// What a name resolves to in a merged directory.
struct Found {
    layer: usize,
    st: libc::stat,
    /// Directories: the layers of the merged view, and a descriptor for each.
    dirs: Option<Vec<(usize, Arc<OwnedFd>)>>,
}

impl Found {
    fn key(&self, parent: u64, name: &CStr) -> Key {
        let mut k = Key::of(&self.st);
        if self.layer != UPPER && self.dirs.is_none() && self.st.st_nlink > 1 {
            k.at = Some((parent, name.to_owned()));
        }
        k
    }

    fn same_inode(&self, other: &Found) -> bool {
        (self.st.st_dev, self.st.st_ino) == (other.st.st_dev, other.st.st_ino)
    }
}

/// How a node is found again: the (device, inode) of its file; for a file with several
/// names in a read-only layer also the name, since overlayfs (without index) breaks such
/// a link at copy-up: each name is a file of its own, and a write through one name must
/// copy up that name.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    at: Option<(u64, CString)>,
}

impl Key {
    fn of(st: &libc::stat) -> Key {
        Key {
            dev: st.st_dev,
            ino: st.st_ino,
            at: None,
        }
    }

    fn is(&self, st: &libc::stat) -> bool {
        (self.dev, self.ino) == (st.st_dev, st.st_ino)
    }
}

/// A merged directory's entries, read once, shared by the handles opened on the same
/// state of the directory. Names are packed in one buffer.
struct Listing {
    names: Vec<u8>,
    ents: Vec<ListEnt>,
    budget: Arc<AtomicUsize>,
}

struct ListEnt {
    end: u32,
    kind: FileType,
    ino: u64,
}

impl Listing {
    fn bytes(&self) -> usize {
        self.names.capacity() + self.ents.capacity() * std::mem::size_of::<ListEnt>()
    }

    fn name(&self, i: usize) -> &OsStr {
        let start = if i == 0 {
            0
        } else {
            self.ents[i - 1].end as usize
        };
        OsStr::from_bytes(&self.names[start..self.ents[i].end as usize])
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes(), Ordering::Relaxed);
    }
}

/// A directory of one layer, read straight from it: the offsets are its own.
struct Stream {
    fd: OwnedFd,
    /// The directory holds whiteouts in the xattr form (`user.overlay.opaque=x`).
    xattr_whiteouts: bool,
    /// Records read and not yet sent (`buf[start..end]`), which continue the listing at
    /// offset `next`: a reply holds fewer entries than one getdents gives. At most
    /// [`STREAM_BUF`] bytes, freed at the end of the directory.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    next: u64,
}

/// The getdents buffer of a streamed directory handle.
const STREAM_BUF: usize = 4096;

enum Handle {
    File(Arc<File>),
    Listing(Arc<Listing>),
    Stream(Arc<Mutex<Stream>>),
}

/// One read-only or writable layer, held open.
struct Layer {
    fd: Arc<OwnedFd>,
}

impl Layer {
    fn open(path: &Path) -> io::Result<Layer> {
        Ok(Layer {
            fd: Arc::new(crate::at::open_dir(path)?),
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The union filesystem served over FUSE.
pub struct UnionFs {
    layers: Vec<Layer>,
    work: Layer,
    tree: RwLock<()>,
    nodes: Mutex<Nodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    listings: Mutex<HashMap<u64, (u64, Weak<Listing>)>>,
    listing_bytes: Arc<AtomicUsize>,
    next_fh: AtomicU64,
    copy_up_lock: Mutex<()>,
    tmp_seq: AtomicU64,
    splice: Option<SpliceReplies>,
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

impl UnionFs {
    pub fn new(layers: &Layers, container: &ContainerLayer) -> io::Result<UnionFs> {
        let mut all = vec![Layer::open(&container.diff())?];
        for l in layers.top_down() {
            all.push(Layer::open(l)?);
        }
        let work = Layer::open(&container.work())?;
        let fs = UnionFs {
            layers: all,
            work,
            tree: RwLock::new(()),
            nodes: Mutex::new(Nodes {
                map: HashMap::new(),
                keys: HashMap::new(),
                next: ROOT + 1,
                dirfds: HashMap::new(),
                dirfd_cap: (fd_limit() / 4).clamp(64, DIR_FD_CACHE_MAX),
            }),
            handles: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
            listing_bytes: Arc::new(AtomicUsize::new(0)),
            next_fh: AtomicU64::new(1),
            copy_up_lock: Mutex::new(()),
            tmp_seq: AtomicU64::new(0),
            splice: None,
        };
        let root_dirs = fs.root_layers();
        let st = fstat(fs.layers[UPPER].raw())?;
        fs.nodes.lock().unwrap().map.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: CString::default(),
                layer: UPPER,
                dirs: Some(root_dirs),
                pinned: None,
                key: Key::of(&st),
                fmt: libc::S_IFDIR,
                nlookup: 1,
                gen: 0,
            },
        );
        Ok(fs)
    }

    /// Sends READ replies by splice (splice.rs) on the connection being served.
    pub fn set_splice(&mut self, splice: SpliceReplies) {
        self.splice = Some(splice);
    }

    fn read(&self) -> Held<'_> {
        Held::Shared {
            _g: self.tree.read().unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn write(&self) -> Held<'_> {
        Held::Exclusive {
            _g: self.tree.write().unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn root_layers(&self) -> Vec<usize> {
        let mut v = vec![UPPER];
        if opaque(self.layers[UPPER].raw()) {
            return v;
        }
        for i in 1..self.layers.len() {
            v.push(i);
            if opaque(self.layers[i].raw()) {
                break;
            }
        }
        v
    }

    // -----------------------------------------------------------------------------
    // Reaching nodes

    /// The descriptor of directory node `ino` in `layer` (which must be one of its
    /// layers): cached, or opened from its parent's, one name with O_NOFOLLOW.
    // `t` is the proof that the tree lock is held: it is only passed down, by design.
    #[allow(clippy::only_used_in_recursion)]
    fn dir_fd(&self, t: &Held, ino: u64, layer: usize) -> R<Arc<OwnedFd>> {
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

    fn place(&self, t: &Held, ino: u64) -> R<Place> {
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
    fn node_fd(&self, t: &Held, ino: u64) -> R<Arc<OwnedFd>> {
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

    fn dirs_of(&self, ino: u64) -> R<Vec<usize>> {
        self.nodes().get(ino)?.dirs.clone().ok_or(Errno::ENOTDIR)
    }

    fn is_whiteout(&self, dir: RawFd, name: &CStr, st: &libc::stat) -> bool {
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

    /// Resolves `name` in the merged directory `parent` made of `layers`.
    fn resolve(&self, t: &Held, parent: u64, layers: &[usize], name: &CStr) -> R<Resolved> {
        for (k, &i) in layers.iter().enumerate() {
            let pfd = self.dir_fd(t, parent, i)?;
            let st = match stat_at(pfd.as_raw_fd(), name) {
                Ok(st) => st,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => return Err(errno(e)),
            };
            if self.is_whiteout(pfd.as_raw_fd(), name, &st) {
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

    fn find(&self, t: &Held, parent: u64, layers: &[usize], name: &CStr) -> R<Option<Found>> {
        Ok(match self.resolve(t, parent, layers, name)? {
            Resolved::Found(f) => Some(f),
            _ => None,
        })
    }

    /// True when a layer below the upper one shows `name` in this merged directory.
    fn in_lower(&self, t: &Held, parent: u64, layers: &[usize], name: &CStr) -> R<bool> {
        let lower: Vec<usize> = layers.iter().copied().filter(|&i| i != UPPER).collect();
        Ok(self.find(t, parent, &lower, name)?.is_some())
    }

    /// Registers a lookup of `found` as `name` in `parent`; returns its node ID. A node
    /// found again by its inode is (re)attached under this name.
    fn remember(&self, parent: u64, name: &CStr, found: Found) -> R<u64> {
        let key = found.key(parent, name);
        let layers = found
            .dirs
            .as_ref()
            .map(|d| d.iter().map(|(l, _)| *l).collect::<Vec<_>>());
        let mut nodes = self.nodes();
        let existing = nodes.keys.get(&key).copied().filter(|ino| {
            nodes
                .map
                .get(ino)
                .is_some_and(|n| n.dirs.is_some() == found.dirs.is_some())
        });
        let ino = match existing {
            Some(ino) => {
                let n = nodes.get_mut(ino)?;
                n.nlookup += 1;
                n.parent = parent;
                n.name = name.to_owned();
                n.layer = found.layer;
                n.pinned = None;
                if layers.is_some() {
                    n.dirs = layers;
                }
                ino
            }
            None => {
                let ino = nodes.next;
                nodes.next += 1;
                nodes.map.insert(
                    ino,
                    Node {
                        parent,
                        name: name.to_owned(),
                        layer: found.layer,
                        dirs: layers,
                        pinned: None,
                        key: key.clone(),
                        fmt: found.st.st_mode & libc::S_IFMT,
                        nlookup: 1,
                        gen: 0,
                    },
                );
                nodes.keys.insert(key, ino);
                ino
            }
        };
        for (l, fd) in found.dirs.into_iter().flatten() {
            nodes.cache_dir(ino, l, fd);
        }
        Ok(ino)
    }

    fn lookup_entry(&self, t: &Held, parent: u64, name: &CStr) -> R<(u64, FileAttr)> {
        let layers = self.dirs_of(parent)?;
        let found = self.find(t, parent, &layers, name)?.ok_or(Errno::ENOENT)?;
        let merged = found.dirs.as_ref().is_some_and(|d| d.len() > 1);
        let st = found.st;
        let ino = self.remember(parent, name, found)?;
        Ok((ino, attr_of(ino, &st, merged)))
    }

    fn stat_node(&self, t: &Held, ino: u64) -> R<FileAttr> {
        let st = self.place(t, ino)?.stat()?;
        let merged = self
            .nodes()
            .get(ino)?
            .dirs
            .as_ref()
            .is_some_and(|d| d.len() > 1);
        Ok(attr_of(ino, &st, merged))
    }

    // -----------------------------------------------------------------------------
    // Copy-up (called without the tree lock: it takes it itself)

    /// Makes sure the directory node `ino` exists in the upper layer.
    fn copy_up_dir(&self, ino: u64) -> R<()> {
        let parent = {
            let nodes = self.nodes();
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
        self.copy_up_dir(parent)?;
        let _guard = self.copy_up_lock.lock().unwrap_or_else(|e| e.into_inner());
        let t = self.read();
        let (layer, name, parent) = {
            let nodes = self.nodes();
            let n = nodes.get(ino)?;
            if n.dirs.as_ref().is_some_and(|d| d.first() == Some(&UPPER)) {
                return Ok(());
            }
            if n.parent == DETACHED {
                return Err(Errno::ENOENT);
            }
            (n.layer, n.name.clone(), n.parent)
        };
        let src = self.dir_fd(&t, ino, layer)?;
        let pfd = self.dir_fd(&t, parent, UPPER)?;
        // SAFETY: one NUL-terminated component below an open directory.
        let r = unsafe { libc::mkdirat(pfd.as_raw_fd(), name.as_ptr(), 0o700) };
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(errno_last());
        }
        let dst = Arc::new(open_dir_at(pfd.as_raw_fd(), &name).map_err(errno)?);
        beneath::copy_metadata(src.as_raw_fd(), dst.as_raw_fd(), false);
        let st = fstat(dst.as_raw_fd()).map_err(errno)?;
        let mut nodes = self.nodes();
        let old = {
            let n = nodes.get_mut(ino)?;
            n.layer = UPPER;
            if let Some(d) = n.dirs.as_mut() {
                d.insert(0, UPPER);
            }
            std::mem::replace(&mut n.key, Key::of(&st))
        };
        if nodes.keys.get(&old) == Some(&ino) {
            nodes.keys.remove(&old);
        }
        nodes.keys.insert(Key::of(&st), ino);
        nodes.cache_dir(ino, UPPER, dst);
        Ok(())
    }

    /// Copies the non-directory node `ino` up (data unless `truncate`).
    fn copy_up(&self, ino: u64, truncate: bool) -> R<()> {
        let (dir, layer, parent) = {
            let nodes = self.nodes();
            let n = nodes.get(ino)?;
            (n.dirs.is_some(), n.layer, n.parent)
        };
        if dir {
            return self.copy_up_dir(ino);
        }
        if layer == UPPER {
            return Ok(());
        }
        if parent != DETACHED {
            self.copy_up_dir(parent)?;
        }
        let _guard = self.copy_up_lock.lock().unwrap_or_else(|e| e.into_inner());
        let (src, fmt) = {
            let t = self.read();
            let (layer, fmt) = {
                let nodes = self.nodes();
                let n = nodes.get(ino)?;
                (n.layer, n.fmt)
            };
            if layer == UPPER {
                return Ok(()); // another thread finished it while we waited
            }
            (self.node_fd(&t, ino)?, fmt)
        };
        // The data is copied without the tree lock: a large file blocks no rename.
        let tmp = CString::new(format!(
            "copyup-{}-{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ))
        .expect("no NUL");
        if let Err(e) = self.copy_to_work(&src, fmt, &tmp, truncate) {
            let _ = unlink_at(self.work.raw(), &tmp, 0);
            return Err(e);
        }
        let t = self.read();
        let (parent, name) = {
            let nodes = self.nodes();
            let n = nodes.get(ino)?;
            (n.parent, n.name.clone())
        };
        let mut unnamed = parent == DETACHED;
        let mut fd = None;
        if !unnamed {
            let pfd = self.dir_fd(&t, parent, UPPER)?;
            // Never over an existing entry.
            // SAFETY: single NUL-terminated components below open directories.
            let r = unsafe {
                libc::renameat2(
                    self.work.raw(),
                    tmp.as_ptr(),
                    pfd.as_raw_fd(),
                    name.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )
            };
            if r == 0 {
                fd = Some(open_at(pfd.as_raw_fd(), &name, libc::O_PATH, 0).map_err(errno)?);
            } else if io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
                unnamed = true;
            } else {
                let e = errno_last();
                let _ = unlink_at(self.work.raw(), &tmp, 0);
                return Err(e);
            }
        }
        let fd = match fd {
            Some(fd) => fd,
            None => {
                // Detached (or its name taken): the copy is reachable by its node only.
                let fd = open_at(self.work.raw(), &tmp, libc::O_PATH, 0);
                let _ = unlink_at(self.work.raw(), &tmp, 0);
                fd.map_err(errno)?
            }
        };
        let st = fstat(fd.as_raw_fd()).map_err(errno)?;
        let key = Key::of(&st);
        let mut nodes = self.nodes();
        let old = {
            let n = nodes.get_mut(ino)?;
            n.layer = UPPER;
            n.pinned = unnamed.then(|| Arc::new(fd));
            std::mem::replace(&mut n.key, key.clone())
        };
        if nodes.keys.get(&old) == Some(&ino) {
            nodes.keys.remove(&old);
        }
        nodes.keys.insert(key, ino);
        Ok(())
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
                // SAFETY: NUL-terminated strings; `tmp` is one component below work/.
                check(unsafe { libc::symlinkat(target.as_ptr(), work, tmp.as_ptr()) })?;
                let l = open_at(work, tmp, libc::O_PATH, 0).map_err(errno)?;
                beneath::copy_metadata(src, l.as_raw_fd(), true);
            }
            _ => {
                let st = fstat(src).map_err(errno)?;
                // SAFETY: `tmp` is one component below work/.
                check(unsafe { libc::mknodat(work, tmp.as_ptr(), st.st_mode, st.st_rdev) })?;
                let l = open_at(work, tmp, libc::O_PATH, 0).map_err(errno)?;
                beneath::copy_metadata(src, l.as_raw_fd(), false);
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------
    // Namespace changes

    /// Prepares `name` in directory `parent` (already copied up) for a new entry: a
    /// whiteout there is removed. Returns (the upper directory, whether a lower layer
    /// had the name, i.e. a new directory must be opaque).
    fn prepare_new(&self, t: &Held, parent: u64, name: &CStr) -> R<(Arc<OwnedFd>, bool)> {
        let layers = self.dirs_of(parent)?;
        if layers.first() != Some(&UPPER) {
            return Err(Errno::ENOENT); // a detached directory (copy-up refused)
        }
        let pfd = self.dir_fd(t, parent, UPPER)?;
        let hid_lower = match self.resolve(t, parent, &layers, name)? {
            Resolved::Found(_) => return Err(Errno::EEXIST),
            Resolved::Missing => false,
            Resolved::Whiteout(UPPER) => {
                match unlink_at(pfd.as_raw_fd(), name, 0) {
                    Err(e) if e != Errno::ENOENT => return Err(e),
                    _ => {}
                }
                true
            }
            Resolved::Whiteout(_) => true,
        };
        Ok((pfd, hid_lower))
    }

    /// Gives a new upper entry the requesting container user as owner (the server
    /// creates as its own root). A set-group-ID directory passes its group on.
    fn own(&self, dir: &OwnedFd, name: &CStr, req: &Request) -> R<()> {
        let mut gid = req.gid();
        if let Ok(st) = fstat(dir.as_raw_fd()) {
            if st.st_mode & libc::S_ISGID != 0 {
                gid = st.st_gid;
            }
        }
        if req.uid() == 0 && gid == 0 {
            return Ok(());
        }
        // SAFETY: one NUL-terminated component below an open directory; no symlink is
        // followed.
        check(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                req.uid(),
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// Registers an entry this server just made in the upper layer, from its stat: no
    /// second resolution across the layers (a new directory is purely upper: either no
    /// lower layer had the name or it was made opaque).
    fn new_upper_entry(
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
        let ino = self.remember(parent, name, found)?;
        self.nodes().bump(parent);
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
            let nodes = self.nodes();
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
                let pfd = self.dir_fd(t, parent, found.layer)?;
                Arc::new(open_at(pfd.as_raw_fd(), name, libc::O_PATH, 0).map_err(errno)?)
            }
        };
        Ok(Some((ino, fd)))
    }

    fn detach(&self, what: Option<(u64, Arc<OwnedFd>)>) {
        if let Some((ino, fd)) = what {
            let mut nodes = self.nodes();
            let named = match nodes.map.get_mut(&ino) {
                Some(n) => {
                    n.parent = DETACHED;
                    n.pinned = Some(fd);
                    n.key.at.is_some().then(|| n.key.clone())
                }
                None => None,
            };
            // A name-bound key names nothing any more.
            if let Some(k) = named {
                if nodes.keys.get(&k) == Some(&ino) {
                    nodes.keys.remove(&k);
                }
            }
        }
    }

    /// Removes `name` from `parent` (a file, or with `dir` an empty directory).
    fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> R<()> {
        let name = cname(name)?;
        {
            let t = self.read();
            let layers = self.dirs_of(parent)?;
            self.find(&t, parent, &layers, &name)?
                .ok_or(Errno::ENOENT)?;
        }
        self.copy_up_dir(parent)?;
        let t = self.write();
        let layers = self.dirs_of(parent)?;
        let found = self
            .find(&t, parent, &layers, &name)?
            .ok_or(Errno::ENOENT)?;
        match (dir, found.dirs.is_some()) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        if let Some(dirs) = &found.dirs {
            if !self.merged_is_empty(dirs)? {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let lower = self.in_lower(&t, parent, &layers, &name)?;
        let pfd = self.dir_fd(&t, parent, UPPER)?;
        let detach = self.to_detach(&t, parent, &name, &found)?;
        if found.layer == UPPER {
            if let Some(dirs) = &found.dirs {
                clear_whiteouts(dirs[0].1.as_raw_fd())?;
            }
            let flag = if dir { libc::AT_REMOVEDIR } else { 0 };
            unlink_at(pfd.as_raw_fd(), &name, flag)?;
        }
        if lower {
            make_whiteout(pfd.as_raw_fd(), &name)?;
        }
        self.detach(detach);
        self.nodes().bump(parent);
        Ok(())
    }

    fn do_rename(
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
            let t = self.read();
            let layers = self.dirs_of(parent)?;
            let src = self.find(&t, parent, &layers, &sn)?.ok_or(Errno::ENOENT)?;
            if let Some(d) = &src.dirs {
                // Only a directory entirely in the upper layer can move (no redirect_dir).
                if d.len() != 1 || d[0].0 != UPPER {
                    return Err(Errno::EXDEV);
                }
            }
            let ino = self.nodes().keys.get(&src.key(parent, &sn)).copied();
            if ino.is_none() && src.layer != UPPER {
                return Err(Errno::EXDEV);
            }
            ino
        };
        if let Some(ino) = src_ino {
            self.copy_up(ino, false)?;
        }
        self.copy_up_dir(parent)?;
        self.copy_up_dir(newparent)?;
        let t = self.write();
        let slayers = self.dirs_of(parent)?;
        let dlayers = self.dirs_of(newparent)?;
        let src = self.find(&t, parent, &slayers, &sn)?.ok_or(Errno::ENOENT)?;
        if src.layer != UPPER {
            return Err(Errno::EXDEV);
        }
        if src.dirs.as_ref().is_some_and(|d| d.len() != 1) {
            return Err(Errno::EXDEV);
        }
        let dst = self.find(&t, newparent, &dlayers, &dn)?;
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
                    if !self.merged_is_empty(dd)? {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                (None, None) => {}
            }
        }
        let src_lower = self.in_lower(&t, parent, &slayers, &sn)?;
        let dst_lower = self.in_lower(&t, newparent, &dlayers, &dn)?;
        let spfd = self.dir_fd(&t, parent, UPPER)?;
        let dpfd = self.dir_fd(&t, newparent, UPPER)?;
        let src_node = self.nodes().keys.get(&src.key(parent, &sn)).copied();
        let detach = match &dst {
            Some(d) if !d.same_inode(&src) => self.to_detach(&t, newparent, &dn, d)?,
            _ => None,
        };
        if let Ok(st) = stat_at(dpfd.as_raw_fd(), &dn) {
            if is_dir(&st) {
                let d = open_dir_at(dpfd.as_raw_fd(), &dn).map_err(errno)?;
                clear_whiteouts(d.as_raw_fd())?;
            } else if self.is_whiteout(dpfd.as_raw_fd(), &dn, &st) && src.dirs.is_some() {
                // A directory cannot replace the whiteout device: remove it first.
                unlink_at(dpfd.as_raw_fd(), &dn, 0)?;
            }
        }
        // SAFETY: single NUL-terminated components below open directories.
        check(unsafe {
            libc::renameat(spfd.as_raw_fd(), sn.as_ptr(), dpfd.as_raw_fd(), dn.as_ptr())
        })?;
        if src_lower {
            make_whiteout(spfd.as_raw_fd(), &sn)?;
        }
        if src.dirs.is_some() && dst_lower {
            let d = open_dir_at(dpfd.as_raw_fd(), &dn).map_err(errno)?;
            beneath::xattr_fd(d.as_raw_fd(), Xattr::Set(OPAQUE, b"y", 0)).map_err(errno)?;
        }
        self.detach(detach);
        let mut nodes = self.nodes();
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

    // -----------------------------------------------------------------------------
    // Directory listings

    /// Whether the merged directory made of `dirs` (topmost first) shows no entry.
    fn merged_is_empty(&self, dirs: &[(usize, Arc<OwnedFd>)]) -> R<bool> {
        let mut hidden: HashSet<CString> = HashSet::new();
        for (_, fd) in dirs {
            let d = fd.as_raw_fd();
            let mut empty = true;
            beneath::read_dir(d, |name, dtype, _| {
                if hidden.contains(name) {
                    return Ok(true);
                }
                if self.entry_is_whiteout(d, name, dtype) {
                    hidden.insert(name.to_owned());
                    return Ok(true);
                }
                empty = false;
                Ok(false)
            })
            .map_err(errno)?;
            if !empty {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn entry_is_whiteout(&self, dir: RawFd, name: &CStr, dtype: u8) -> bool {
        match dtype {
            libc::DT_CHR | libc::DT_REG | libc::DT_UNKNOWN => {
                stat_at(dir, name).is_ok_and(|st| self.is_whiteout(dir, name, &st))
            }
            _ => false,
        }
    }

    /// The merged listing of a directory, built within what is left of the budget.
    fn build_listing(&self, dirs: &[(usize, Arc<OwnedFd>)]) -> R<Listing> {
        let mut seen: HashSet<CString> = HashSet::new();
        let mut names = Vec::new();
        let mut ents = Vec::new();
        let left = LISTING_BUDGET.saturating_sub(self.listing_bytes.load(Ordering::Relaxed));
        for (_, fd) in dirs {
            let d = fd.as_raw_fd();
            beneath::read_dir(d, |name, dtype, ino| {
                if seen.contains(name) {
                    return Ok(true);
                }
                seen.insert(name.to_owned());
                if self.entry_is_whiteout(d, name, dtype) {
                    return Ok(true);
                }
                let kind = match kind_of_dtype(dtype) {
                    Some(k) => k,
                    None => kind_of(stat_at(d, name)?.st_mode),
                };
                names.extend_from_slice(name.to_bytes());
                ents.push(ListEnt {
                    end: names.len() as u32,
                    kind,
                    ino,
                });
                if names.len() + ents.len() * std::mem::size_of::<ListEnt>() > left
                    || names.len() > u32::MAX as usize / 2
                {
                    return Err(io::Error::from_raw_os_error(libc::ENOMEM));
                }
                Ok(true)
            })
            .map_err(errno)?;
        }
        names.shrink_to_fit();
        ents.shrink_to_fit();
        let listing = Listing {
            names,
            ents,
            budget: self.listing_bytes.clone(),
        };
        let bytes = listing.bytes();
        if self.listing_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > LISTING_BUDGET {
            // Dropping it gives the bytes back.
            return Err(Errno::ENOMEM);
        }
        Ok(listing)
    }

    fn open_dir_handle(&self, ino: u64) -> R<Handle> {
        let t = self.read();
        let (layers, gen, detached) = {
            let nodes = self.nodes();
            let n = nodes.get(ino)?;
            (
                n.dirs.clone().ok_or(Errno::ENOTDIR)?,
                n.gen,
                n.parent == DETACHED,
            )
        };
        if layers.len() == 1 || detached {
            let d = self.dir_fd(&t, ino, layers[0])?;
            let fd = open_at(d.as_raw_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(errno)?;
            return Ok(Handle::Stream(Arc::new(Mutex::new(Stream {
                xattr_whiteouts: xattr_whiteouts(fd.as_raw_fd()),
                fd,
                buf: Vec::new(),
                start: 0,
                end: 0,
                next: 0,
            }))));
        }
        if let Some((g, w)) = self.listings.lock().unwrap().get(&ino) {
            if *g == gen {
                if let Some(l) = w.upgrade() {
                    return Ok(Handle::Listing(l));
                }
            }
        }
        let fds = layers
            .iter()
            .map(|&l| Ok((l, self.dir_fd(&t, ino, l)?)))
            .collect::<R<Vec<_>>>()?;
        let listing = Arc::new(self.build_listing(&fds)?);
        self.listings
            .lock()
            .unwrap()
            .insert(ino, (gen, Arc::downgrade(&listing)));
        Ok(Handle::Listing(listing))
    }

    /// Walks a directory handle from `offset`, giving each entry (inode of the layer,
    /// next offset, type, name) to `add` until it says the reply is full.
    fn walk_dir(
        &self,
        fh: FileHandle,
        offset: u64,
        mut add: impl FnMut(u64, u64, FileType, &OsStr) -> bool,
    ) -> R<()> {
        let handle = match self.handles.lock().unwrap().get(&fh.0) {
            Some(Handle::Listing(l)) => Ok(l.clone()),
            Some(Handle::Stream(s)) => Err(s.clone()),
            _ => return Err(Errno::EBADF),
        };
        match handle {
            Ok(list) => {
                // Offsets: 1 is ".", 2 is "..", 3 + i is list[i].
                let mut off = offset;
                while off < 2 {
                    let name = if off == 0 { "." } else { ".." };
                    if add(0, off + 1, FileType::Directory, OsStr::new(name)) {
                        return Ok(());
                    }
                    off += 1;
                }
                for i in (off - 2) as usize..list.ents.len() {
                    let e = &list.ents[i];
                    if add(e.ino, i as u64 + 3, e.kind, list.name(i)) {
                        break;
                    }
                }
                Ok(())
            }
            Err(stream) => {
                let mut guard = stream.lock().unwrap_or_else(|e| e.into_inner());
                let Stream {
                    fd,
                    xattr_whiteouts,
                    buf,
                    start,
                    end,
                    next,
                } = &mut *guard;
                let fd = fd.as_raw_fd();
                if offset != *next || *start >= *end {
                    // A seek (or nothing read ahead): from the filesystem's offset.
                    // SAFETY: lseek on our own directory descriptor, to an offset the
                    // filesystem gave (or 0).
                    if unsafe { libc::lseek(fd, offset as i64, libc::SEEK_SET) } < 0 {
                        return Err(errno_last());
                    }
                    *start = 0;
                    *end = 0;
                }
                // The offset the kernel asks for next: that of the last entry it got.
                let mut sent = offset;
                loop {
                    if *start >= *end {
                        buf.resize(STREAM_BUF, 0);
                        let n = beneath::getdents(fd, buf).map_err(errno)?;
                        if n == 0 {
                            *buf = Vec::new();
                            *start = 0;
                            *end = 0;
                            return Ok(());
                        }
                        *start = 0;
                        *end = n;
                    }
                    let Some(e) = beneath::Dirents::new(&buf[*start..*end]).next() else {
                        *start = *end; // a torn record: read on
                        continue;
                    };
                    let len = e.len;
                    let dot = e.name == c"." || e.name == c"..";
                    let skip = !dot
                        && (e.kind == libc::DT_CHR
                            || e.kind == libc::DT_UNKNOWN
                            || (*xattr_whiteouts && e.kind == libc::DT_REG))
                        && self.entry_is_whiteout(fd, e.name, e.kind);
                    let kind = match kind_of_dtype(e.kind) {
                        Some(k) => Some(k),
                        None => stat_at(fd, e.name).ok().map(|st| kind_of(st.st_mode)),
                    };
                    if let (false, Some(kind)) = (skip, kind) {
                        let ino = if dot { 0 } else { e.ino };
                        let off = e.off as u64;
                        if add(ino, off, kind, OsStr::from_bytes(e.name.to_bytes())) {
                            // Full: this record goes first in the next reply.
                            *next = sent;
                            return Ok(());
                        }
                        sent = off;
                    }
                    *start += len;
                    *next = sent;
                }
            }
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(fh, h);
        fh
    }

    fn file(&self, fh: FileHandle) -> R<Arc<File>> {
        match self.handles.lock().unwrap().get(&fh.0) {
            Some(Handle::File(f)) => Ok(f.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    /// Opens the node's file with `flags` (after copy-up when writing).
    fn open_node(&self, ino: u64, flags: i32) -> R<File> {
        let acc = flags & libc::O_ACCMODE;
        let trunc = flags & libc::O_TRUNC != 0;
        if acc != libc::O_RDONLY || trunc {
            self.copy_up(ino, trunc)?;
        }
        // The kernel sends every write with its offset, O_APPEND ones at the size it
        // knows (all writes pass through it), so the file is opened for positional
        // writes. Write-only opens stay read-write as under the writeback cache: the
        // server may read the file anyway, and it keeps one kind of handle.
        let mut flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_APPEND);
        if acc == libc::O_WRONLY {
            flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR;
        }
        let t = self.read();
        let fd = self.place(&t, ino)?.open(flags)?;
        Ok(File::from(fd))
    }
}

/// Whether directory `dir` is opaque (hides the layers below it).
fn opaque(dir: RawFd) -> bool {
    beneath::get_xattr(dir, OPAQUE).is_some_and(|v| v == b"y")
}

/// Whether directory `dir` holds whiteouts in the xattr form.
fn xattr_whiteouts(dir: RawFd) -> bool {
    beneath::get_xattr(dir, OPAQUE).is_some_and(|v| v == b"x")
}

/// Creates a whiteout `name` in `dir`: the device form where the kernel allows it, else
/// the xattr form (crate::union's layer format).
fn make_whiteout(dir: RawFd, name: &CStr) -> R<()> {
    // SAFETY: one NUL-terminated component below an open directory.
    if unsafe { libc::mknodat(dir, name.as_ptr(), libc::S_IFCHR, 0) } == 0 {
        return Ok(());
    }
    if io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return Err(errno_last());
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
        match unlink_at(dir, &n, 0) {
            Err(e) if e == Errno::EISDIR => return Err(Errno::ENOTEMPTY),
            r => r?,
        }
    }
    Ok(())
}

/// The attributes of a negative entry: only the node ID (0) matters to the kernel.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn hidden_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay.")
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            }
        }
    }
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // No FUSE_WRITEBACK_CACHE: with it the kernel drops the cached i_blocks at every
        // close() of any file (fuse_flush), so the next stat of that file costs a
        // GETATTR round trip; tools that open and stat many files (stat or ls -l reading
        // /etc/passwd per name, tar, package managers) paid one per file, a third of the
        // requests of `find | xargs stat`. Writes are 1 MiB requests either way.
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_BIG_WRITES,
            InitFlags::FUSE_ASYNC_READ,
        ] {
            let _ = config.add_capabilities(flag);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = cname(name).and_then(|name| {
            let t = self.read();
            self.lookup_entry(&t, parent.0, &name)
        });
        match r {
            Ok((_, attr)) => reply.entry(&TTL, &attr, Generation(0)),
            // A negative entry (node ID 0 with a timeout): the kernel caches the miss,
            // so programs probing for absent files (tar's unlink before create, loaders
            // walking search paths, /etc/group lookups) ask once. Names only appear
            // through this filesystem, which the kernel sees.
            Err(e) if e == Errno::ENOENT => reply.entry(&TTL, &negative_attr(), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == ROOT {
            return;
        }
        let mut nodes = self.nodes();
        let remove = match nodes.map.get_mut(&ino.0) {
            Some(n) => {
                n.nlookup = n.nlookup.saturating_sub(nlookup);
                n.nlookup == 0
            }
            None => false,
        };
        if remove {
            if let Some(n) = nodes.map.remove(&ino.0) {
                if nodes.keys.get(&n.key) == Some(&ino.0) {
                    nodes.keys.remove(&n.key);
                }
                if n.dirs.is_some() {
                    for l in 0..self.layers.len() {
                        nodes.dirfds.remove(&(ino.0, l));
                    }
                    drop(nodes);
                    self.listings.lock().unwrap().remove(&ino.0);
                }
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = match fh.and_then(|fh| self.file(fh).ok()) {
            Some(f) => fstat(f.as_raw_fd())
                .map(|st| attr_of(ino.0, &st, false))
                .map_err(errno),
            None => {
                let t = self.read();
                self.stat_node(&t, ino.0)
            }
        };
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = (|| -> R<FileAttr> {
            if mode.is_none()
                && uid.is_none()
                && gid.is_none()
                && size.is_none()
                && atime.is_none()
                && mtime.is_none()
            {
                // Only ctime: nothing to change, and a deleted lower file must not be
                // copied up.
                let t = self.read();
                return self.stat_node(&t, ino.0);
            }
            let truncate_all = size == Some(0) && mode.is_none() && uid.is_none();
            self.copy_up(ino.0, truncate_all)?;
            let t = self.read();
            // Owner and times are set through the parent's descriptor without following
            // the name (the *at calls' NOFOLLOW forms); mode and size, which have no such
            // form on every kernel, through a descriptor of the node's own inode checked
            // to be the node's (or the open file's): never a name swapped for a symlink.
            let place = self.place(&t, ino.0)?;
            let (fmt, merged) = {
                let nodes = self.nodes();
                let n = nodes.get(ino.0)?;
                (n.fmt, n.dirs.as_ref().is_some_and(|d| d.len() > 1))
            };
            let mut own: Option<Arc<OwnedFd>> = None;
            let mut target = || -> R<RawFd> {
                if own.is_none() {
                    own = Some(self.node_fd(&t, ino.0)?);
                }
                Ok(own.as_ref().expect("just set").as_raw_fd())
            };
            if uid.is_some() || gid.is_some() {
                let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
                match &place {
                    // SAFETY: one NUL-terminated component below an open directory; the
                    // final name is not followed.
                    Place::At(d, n) => check(unsafe {
                        libc::fchownat(d.as_raw_fd(), n.as_ptr(), u, g, libc::AT_SYMLINK_NOFOLLOW)
                    })?,
                    Place::Fd(f) => beneath::chown_fd(f.as_raw_fd(), u, g).map_err(errno)?,
                }
            }
            // Symlinks have no mode of their own to change.
            if let Some(mode) = mode.filter(|_| fmt != libc::S_IFLNK) {
                beneath::chmod_fd(target()?, (mode & 0o7777) as libc::mode_t).map_err(errno)?;
            }
            if let Some(size) = size {
                match fh.and_then(|fh| self.file(fh).ok()) {
                    Some(f) => f.set_len(size).map_err(Errno::from)?,
                    None if fmt != libc::S_IFREG => return Err(Errno::EINVAL),
                    None => beneath::truncate_fd(target()?, size as i64).map_err(errno)?,
                }
            }
            if atime.is_some() || mtime.is_some() {
                let ts = [timespec(atime), timespec(mtime)];
                match &place {
                    // SAFETY: as for fchownat above; two timespecs.
                    Place::At(d, n) => check(unsafe {
                        libc::utimensat(
                            d.as_raw_fd(),
                            n.as_ptr(),
                            ts.as_ptr(),
                            libc::AT_SYMLINK_NOFOLLOW,
                        )
                    })?,
                    Place::Fd(f) => beneath::utimens_fd(f.as_raw_fd(), &ts).map_err(errno)?,
                }
            }
            let st = match own {
                Some(f) => fstat(f.as_raw_fd()).map_err(errno)?,
                None => place.stat()?,
            };
            Ok(attr_of(ino.0, &st, merged))
        })();
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = (|| -> R<Vec<u8>> {
            let t = self.read();
            let fd = self.node_fd(&t, ino.0)?;
            beneath::readlink_fd(fd.as_raw_fd()).map_err(errno)
        })();
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = (|| -> R<(u64, FileAttr)> {
            let name = cname(name)?;
            self.copy_up_dir(parent.0)?;
            let t = self.read();
            let (pfd, _) = self.prepare_new(&t, parent.0, &name)?;
            // SAFETY: one NUL-terminated component below the open upper directory.
            check(unsafe {
                libc::mknodat(
                    pfd.as_raw_fd(),
                    name.as_ptr(),
                    mode & !umask,
                    rdev as libc::dev_t,
                )
            })?;
            self.own(&pfd, &name, req)?;
            let st = stat_at(pfd.as_raw_fd(), &name).map_err(errno)?;
            self.new_upper_entry(parent.0, &name, st, None)
        })();
        match r {
            Ok((_, attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = (|| -> R<(u64, FileAttr)> {
            let name = cname(name)?;
            self.copy_up_dir(parent.0)?;
            let t = self.read();
            let (pfd, hid_lower) = self.prepare_new(&t, parent.0, &name)?;
            // SAFETY: one NUL-terminated component below the open upper directory.
            check(unsafe {
                libc::mkdirat(
                    pfd.as_raw_fd(),
                    name.as_ptr(),
                    (mode & !umask) as libc::mode_t,
                )
            })?;
            let d = Arc::new(open_dir_at(pfd.as_raw_fd(), &name).map_err(errno)?);
            if hid_lower {
                beneath::xattr_fd(d.as_raw_fd(), Xattr::Set(OPAQUE, b"y", 0)).map_err(errno)?;
            }
            self.own(&pfd, &name, req)?;
            let st = fstat(d.as_raw_fd()).map_err(errno)?;
            self.new_upper_entry(parent.0, &name, st, Some(d))
        })();
        match r {
            Ok((_, attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = (|| -> R<(u64, FileAttr)> {
            let name = cname(link_name)?;
            let target = CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
            self.copy_up_dir(parent.0)?;
            let t = self.read();
            let (pfd, _) = self.prepare_new(&t, parent.0, &name)?;
            // SAFETY: NUL-terminated strings; `name` is one component below the open
            // upper directory. The target is stored, never resolved here.
            check(unsafe { libc::symlinkat(target.as_ptr(), pfd.as_raw_fd(), name.as_ptr()) })?;
            self.own(&pfd, &name, req)?;
            let st = stat_at(pfd.as_raw_fd(), &name).map_err(errno)?;
            self.new_upper_entry(parent.0, &name, st, None)
        })();
        match r {
            Ok((_, attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = (|| -> R<(u64, FileAttr)> {
            let name = cname(newname)?;
            self.copy_up(ino.0, false)?;
            self.copy_up_dir(newparent.0)?;
            let t = self.read();
            let src = self.node_fd(&t, ino.0)?;
            let (pfd, _) = self.prepare_new(&t, newparent.0, &name)?;
            beneath::link_fd(src.as_raw_fd(), pfd.as_raw_fd(), &name).map_err(errno)?;
            self.nodes().bump(newparent.0);
            self.lookup_entry(&t, newparent.0, &name)
        })();
        match r {
            Ok((_, attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_node(ino.0, flags.0) {
            Ok(f) => {
                let fh = self.add_handle(Handle::File(Arc::new(f)));
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let reply = match &self.splice {
            Some(splice) => match splice.read(req.unique().0, &f, offset, size, reply) {
                Ok(()) => return,
                Err(unsent) => unsent,
            },
            None => reply,
        };
        READ_BUF.with(|b| {
            let mut buf = b.borrow_mut();
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let mut done = 0usize;
            while done < size as usize {
                match f.read_at(&mut buf[done..size as usize], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return reply.error(e.into()),
                }
            }
            reply.data(&buf[..done])
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .file(fh)
            .and_then(|f| f.write_all_at(data, offset).map_err(Errno::from))
        {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close (writes reach the layer file as they come, and the
        // kernel writes dirty pages back before it would send FLUSH). ENOSYS makes the
        // kernel stop sending FLUSH for good: one round trip less per close().
        reply.error(Errno::ENOSYS)
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().unwrap().remove(&fh.0);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.file(fh).and_then(|f| {
            if datasync {
                f.sync_data()
            } else {
                f.sync_all()
            }
            .map_err(Errno::from)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_dir_handle(ino.0) {
            Ok(h) => {
                let fh = self.add_handle(h);
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.walk_dir(fh, offset, |child, off, kind, name| {
            let child = if child == 0 { ino } else { INodeNo(child) };
            reply.add(child, off, kind, name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let t = self.read();
        let dir_attr = match self.stat_node(&t, ino.0) {
            Ok(a) => a,
            Err(e) => return reply.error(e),
        };
        let r = self.walk_dir(fh, offset, |child, off, _, name| {
            if child == 0 {
                return reply.add(ino, off, name, &TTL, &dir_attr, Generation(0));
            }
            let Ok(n) = cname(name) else { return false };
            let Ok((child, attr)) = self.lookup_entry(&t, ino.0, &n) else {
                return false; // removed since opendir, or a whiteout
            };
            if reply.add(INodeNo(child), off, name, &TTL, &attr, Generation(0)) {
                // Not sent: undo the lookup it counted.
                self.forget(req, INodeNo(child), 1);
                return true;
            }
            false
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().unwrap().remove(&fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = (|| -> R<()> {
            let t = self.read();
            let layer = self.nodes().get(ino.0)?.layer;
            if layer == UPPER {
                let d = self.dir_fd(&t, ino.0, UPPER)?;
                let f = open_at(d.as_raw_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(errno)?;
                File::from(f).sync_all().map_err(Errno::from)?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // SAFETY: statvfs is plain data; the upper fd is open.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstatvfs(self.layers[UPPER].raw(), &mut st) } < 0 {
            return reply.error(errno_last());
        }
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        )
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if hidden_xattr(name.as_bytes()) {
            return reply.error(Errno::EPERM);
        }
        let r = (|| -> R<()> {
            let n = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            self.copy_up(ino.0, false)?;
            let t = self.read();
            let fd = self.node_fd(&t, ino.0)?;
            beneath::xattr_fd(fd.as_raw_fd(), Xattr::Set(&n, value, flags)).map_err(errno)?;
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if hidden_xattr(name.as_bytes()) {
            return reply.error(Errno::ENODATA);
        }
        // The kernel's buffer size is passed on as it is (0: the size is asked, the
        // usual first call, and the kernel's own security.capability probes on write
        // and chown), so neither side allocates more than the caller wants.
        let r = (|| -> R<Vec<u8>> {
            let n = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            let t = self.read();
            let fd = self.node_fd(&t, ino.0)?;
            let mut buf = vec![0u8; size as usize];
            let len = beneath::xattr_fd(fd.as_raw_fd(), Xattr::Get(&n, &mut buf)).map_err(errno)?;
            if size == 0 {
                buf.resize(len, 0);
            } else {
                buf.truncate(len);
            }
            Ok(buf)
        })();
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = (|| -> R<Vec<u8>> {
            let t = self.read();
            let fd = self.node_fd(&t, ino.0)?;
            let buf = beneath::list_xattrs(fd.as_raw_fd()).map_err(errno)?;
            let mut out = Vec::with_capacity(buf.len());
            for name in buf
                .split(|&b| b == 0)
                .filter(|n| !n.is_empty() && !hidden_xattr(n))
            {
                out.extend_from_slice(name);
                out.push(0);
            }
            Ok(out)
        })();
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if hidden_xattr(name.as_bytes()) {
            return reply.error(Errno::ENODATA);
        }
        let r = (|| -> R<()> {
            let n = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            self.copy_up(ino.0, false)?;
            let t = self.read();
            let fd = self.node_fd(&t, ino.0)?;
            beneath::xattr_fd(fd.as_raw_fd(), Xattr::Remove(&n)).map_err(errno)?;
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel has checked the mode bits already.
        reply.ok()
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| -> R<(u64, FileAttr, File)> {
            let name = cname(name)?;
            self.copy_up_dir(parent.0)?;
            let t = self.read();
            let (pfd, _) = self.prepare_new(&t, parent.0, &name)?;
            let mut oflags = flags & !(libc::O_APPEND | libc::O_NOCTTY);
            if oflags & libc::O_ACCMODE == libc::O_WRONLY {
                oflags = (oflags & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            let fd = open_at(
                pfd.as_raw_fd(),
                &name,
                oflags | libc::O_CREAT | libc::O_EXCL,
                (mode & !umask & 0o7777) as libc::mode_t,
            )
            .map_err(errno)?;
            let file = File::from(fd);
            self.own(&pfd, &name, req)?;
            let st = fstat(file.as_raw_fd()).map_err(errno)?;
            let (ino, attr) = self.new_upper_entry(parent.0, &name, st, None)?;
            Ok((ino, attr, file))
        })();
        match r {
            Ok((_, attr, file)) => {
                let fh = self.add_handle(Handle::File(Arc::new(file)));
                reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.file(fh).and_then(|f| {
            // SAFETY: an open descriptor and plain integers.
            match unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, length as i64) } {
                0 => Ok(()),
                _ => Err(errno_last()),
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = self.file(fh).and_then(|f| {
            // SAFETY: an open descriptor; SEEK_DATA/SEEK_HOLE do not move shared state
            // that another request relies on (I/O here is positional).
            match unsafe { libc::lseek(f.as_raw_fd(), offset, whence) } {
                n if n >= 0 => Ok(n),
                _ => Err(errno_last()),
            }
        });
        match r {
            Ok(n) => reply.offset(n),
            Err(e) => reply.error(e),
        }
    }
}
