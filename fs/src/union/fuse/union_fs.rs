//! The union filesystem behind the FUSE driver: overlayfs semantics over plain layer
//! directories, answering the kernel's requests through `fuser`.
//!
//! Data path. Layers are index 0 (the writable upper, `diff/`) then the read-only ones
//! topmost first; each is held open as an O_PATH directory descriptor and addressed
//! with `*at` calls and paths relative to it. A node (one per inode the kernel knows)
//! records its parent and name (its path is rebuilt by walking parents), the topmost
//! layer holding it, for a directory the layers that make up its merged view (cut at
//! an opaque directory or a whiteout), and its file type. Requests reach a file by
//! one `*at` call on its path relative to its layer (no descriptor opened per
//! request); only a node copied up by this server holds an O_PATH descriptor, which
//! keeps a copy reachable that was deleted or replaced while open. Node IDs are never
//! reused. Hardlinks are one node: nodes are found again by the (device, inode) of the
//! underlying file.
//!
//! Round trips to the kernel cost more than anything done here, so the kernel is let
//! cache entries, attributes and misses (negative entries) for [`TTL`], FLUSH is
//! declined once, and a new entry is answered from the stat of what was just made.
//!
//! Reads and writes go straight to the open upper or lower file (pread/pwrite on the
//! handle, no lock taken). Opening for write, and any metadata change, first copies the
//! file up: data (reflink or sparse copy_file_range) into `work/`, then owner, mode,
//! xattrs and times, then an atomic rename into the upper layer, after the parent
//! directories were copied up the same way. Deleting a name that a lower layer still
//! has leaves a whiteout; a directory created where a lower one was deleted is marked
//! opaque; renaming a directory that is not purely in the upper layer is EXDEV, as in
//! overlayfs with `userxattr` (no redirect_dir). Directory listings are merged once at
//! opendir into a snapshot, so offsets are stable indexes for the life of the handle.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::splice::SpliceReplies;
use crate::union::{ContainerLayer, Layers, OPAQUE_XATTR, WHITEOUT_XATTR};

/// How long the kernel may trust entries and attributes. Every change to the layers
/// passes through this filesystem, which tells the kernel; the timeout only bounds
/// the effect of a change made behind its back.
const TTL: Duration = Duration::from_secs(10);
const ROOT: u64 = 1;
const UPPER: usize = 0;

type R<T> = std::result::Result<T, Errno>;
/// (path relative to the layer roots, topmost layer, merged-dir layers, O_PATH fd).
type NodeInfo = (PathBuf, usize, Option<Vec<usize>>, Option<Arc<OwnedFd>>);

fn errno_last() -> Errno {
    Errno::from(io::Error::last_os_error())
}

fn cstr(p: &Path) -> R<CString> {
    if p.as_os_str().is_empty() {
        return Ok(c".".to_owned());
    }
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn stat_at(dir: RawFd, rel: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; all-zero is valid to be filled.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: rel is NUL-terminated, st writable.
    let r = unsafe { libc::fstatat(dir, rel.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn fstat(fd: RawFd) -> R<libc::stat> {
    // SAFETY: as in stat_at.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open, st writable.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(errno_last());
    }
    Ok(st)
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

/// One read-only or writable layer, held open.
struct Layer {
    fd: OwnedFd,
    path: PathBuf,
}

impl Layer {
    fn open(path: &Path) -> io::Result<Layer> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: c is NUL-terminated.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Layer {
            // SAFETY: fd was just opened and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

struct Node {
    parent: u64,
    name: OsString,
    layer: usize,
    /// Directories: the layers of the merged view, topmost first.
    dirs: Option<Vec<usize>>,
    /// Non-directories: O_PATH descriptor of the underlying file.
    fd: Option<Arc<OwnedFd>>,
    key: (u64, u64),
    /// The file type bits (S_IFMT) of the inode; a node never changes type.
    fmt: u32,
    nlookup: u64,
}

#[derive(Default)]
struct Nodes {
    map: HashMap<u64, Node>,
    keys: HashMap<(u64, u64), u64>,
    next: u64,
}

impl Nodes {
    fn rel(&self, mut ino: u64) -> R<PathBuf> {
        let mut parts = Vec::new();
        while ino != ROOT {
            let n = self.map.get(&ino).ok_or(Errno::ESTALE)?;
            parts.push(n.name.clone());
            ino = n.parent;
        }
        Ok(parts.iter().rev().collect())
    }

    fn get(&self, ino: u64) -> R<&Node> {
        self.map.get(&ino).ok_or(Errno::ESTALE)
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
    dirs: Option<Vec<usize>>,
}

enum Handle {
    File(Arc<File>),
    Dir(Arc<Vec<DirEnt>>),
}

struct DirEnt {
    name: OsString,
    kind: FileType,
    ino: u64,
}

/// The union filesystem served over FUSE.
pub struct UnionFs {
    layers: Vec<Layer>,
    work: Layer,
    nodes: Mutex<Nodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    copy_up_lock: Mutex<()>,
    tmp_seq: AtomicU64,
    splice: Option<SpliceReplies>,
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
            nodes: Mutex::new(Nodes {
                next: ROOT + 1,
                ..Nodes::default()
            }),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            copy_up_lock: Mutex::new(()),
            tmp_seq: AtomicU64::new(0),
            splice: None,
        };
        let root_dirs = fs.root_layers();
        let top = root_dirs.first().copied().unwrap_or(UPPER);
        let st = stat_at(fs.layers[top].raw(), c".")?;
        fs.nodes.lock().unwrap().map.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: OsString::new(),
                layer: top,
                dirs: Some(root_dirs),
                fd: None,
                key: (st.st_dev, st.st_ino),
                fmt: libc::S_IFDIR,
                nlookup: 1,
            },
        );
        Ok(fs)
    }

    /// Sends READ replies by splice (splice.rs) on the connection being served.
    pub fn set_splice(&mut self, splice: SpliceReplies) {
        self.splice = Some(splice);
    }

    fn root_layers(&self) -> Vec<usize> {
        let mut v = vec![UPPER];
        if self.opaque(UPPER, Path::new("")) {
            return v;
        }
        for i in 1..self.layers.len() {
            v.push(i);
            if self.opaque(i, Path::new("")) {
                break;
            }
        }
        v
    }

    fn abs(&self, layer: usize, rel: &Path) -> PathBuf {
        self.layers[layer].path.join(rel)
    }

    fn opaque(&self, layer: usize, rel: &Path) -> bool {
        crate::union::sys::get_xattr(&self.abs(layer, rel), OPAQUE_XATTR).is_some_and(|v| v == b"y")
    }

    fn whiteout(&self, layer: usize, rel: &Path, st: &libc::stat) -> bool {
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFCHR {
            return st.st_rdev == 0;
        }
        // The xattr form counts only in a directory marked as holding such whiteouts.
        fmt == libc::S_IFREG
            && st.st_size == 0
            && crate::union::sys::has_xattr(&self.abs(layer, rel), WHITEOUT_XATTR)
            && rel.parent().is_some_and(|p| {
                crate::union::sys::get_xattr(&self.abs(layer, p), OPAQUE_XATTR)
                    .is_some_and(|v| v == b"x")
            })
    }

    /// Resolves `name` in the merged directory at `dir` made of `layers`.
    fn find(&self, dir: &Path, layers: &[usize], name: &OsStr) -> R<Option<Found>> {
        Ok(match self.resolve(dir, layers, name)? {
            Resolved::Found(f) => Some(f),
            _ => None,
        })
    }

    /// [`Self::find`], telling a whiteout from a name no layer has.
    fn resolve(&self, dir: &Path, layers: &[usize], name: &OsStr) -> R<Resolved> {
        let rel = dir.join(name);
        let c = cstr(&rel)?;
        for (k, &i) in layers.iter().enumerate() {
            let st = match stat_at(self.layers[i].raw(), &c) {
                Ok(st) => st,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            if self.whiteout(i, &rel, &st) {
                return Ok(Resolved::Whiteout(i));
            }
            let dirs = if is_dir(&st) {
                let mut d = vec![i];
                if !self.opaque(i, &rel) {
                    for &j in &layers[k + 1..] {
                        match stat_at(self.layers[j].raw(), &c) {
                            Ok(s) if is_dir(&s) => {
                                d.push(j);
                                if self.opaque(j, &rel) {
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

    /// True when a layer below the upper one shows `name` in this merged directory.
    fn in_lower(&self, dir: &Path, layers: &[usize], name: &OsStr) -> R<bool> {
        let lower: Vec<usize> = layers.iter().copied().filter(|&i| i != UPPER).collect();
        Ok(self.find(dir, &lower, name)?.is_some())
    }

    /// Node info needed by most operations: (relative path, layer, dir layers, fd).
    fn info(&self, ino: u64) -> R<NodeInfo> {
        let nodes = self.nodes.lock().unwrap();
        let n = nodes.get(ino)?;
        Ok((nodes.rel(ino)?, n.layer, n.dirs.clone(), n.fd.clone()))
    }

    fn dir_info(&self, ino: u64) -> R<(PathBuf, Vec<usize>)> {
        let (rel, _, dirs, _) = self.info(ino)?;
        Ok((rel, dirs.ok_or(Errno::ENOTDIR)?))
    }

    /// Registers a lookup of `found` as `name` in `parent`; returns its node ID.
    fn remember(&self, parent: u64, name: &OsStr, found: &Found) -> R<u64> {
        let key = (found.st.st_dev, found.st.st_ino);
        // No descriptor is kept per node: the kernel keeps every looked-up inode until
        // memory is short, and a descriptor each would exhaust RLIMIT_NOFILE on a tree
        // of 20k files. Only an anonymous copy-up (deleted while open) holds one.
        let fd: Option<Arc<OwnedFd>> = None;
        let mut nodes = self.nodes.lock().unwrap();
        if let Some(&ino) = nodes.keys.get(&key) {
            if let Some(n) = nodes.map.get_mut(&ino) {
                if n.dirs.is_some() == found.dirs.is_some() {
                    n.nlookup += 1;
                    n.parent = parent;
                    n.name = name.to_os_string();
                    n.layer = found.layer;
                    if found.dirs.is_some() {
                        n.dirs = found.dirs.clone();
                    } else {
                        n.fd = fd;
                    }
                    return Ok(ino);
                }
            }
        }
        let ino = nodes.next;
        nodes.next += 1;
        nodes.map.insert(
            ino,
            Node {
                parent,
                name: name.to_os_string(),
                layer: found.layer,
                dirs: found.dirs.clone(),
                fd,
                key,
                fmt: found.st.st_mode & libc::S_IFMT,
                nlookup: 1,
            },
        );
        nodes.keys.insert(key, ino);
        Ok(ino)
    }

    fn open_path(&self, layer: usize, rel: &Path) -> R<OwnedFd> {
        let c = cstr(rel)?;
        // SAFETY: c is NUL-terminated; the layer fd is open.
        let fd = unsafe {
            libc::openat(
                self.layers[layer].raw(),
                c.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(errno_last());
        }
        // SAFETY: fd was just opened.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn lookup_entry(&self, parent: u64, name: &OsStr) -> R<(u64, FileAttr)> {
        let (dir, layers) = self.dir_info(parent)?;
        let found = self.find(&dir, &layers, name)?.ok_or(Errno::ENOENT)?;
        let ino = self.remember(parent, name, &found)?;
        let merged = found.dirs.as_ref().is_some_and(|d| d.len() > 1);
        Ok((ino, attr_of(ino, &found.st, merged)))
    }

    fn stat_node(&self, ino: u64) -> R<FileAttr> {
        let (rel, layer, dirs, fd) = self.info(ino)?;
        let st = match &fd {
            Some(fd) => fstat(fd.as_raw_fd())?,
            None => stat_at(self.layers[layer].raw(), &cstr(&rel)?)?,
        };
        let merged = dirs.as_ref().is_some_and(|d| d.len() > 1);
        Ok(attr_of(ino, &st, merged))
    }

    /// An O_PATH descriptor of a non-directory node (its own, or a fresh one).
    fn node_fd(&self, ino: u64) -> R<Option<Arc<OwnedFd>>> {
        let (rel, layer, dirs, fd) = self.info(ino)?;
        if dirs.is_some() {
            return Ok(None);
        }
        match fd {
            Some(fd) => Ok(Some(fd)),
            None => Ok(Some(Arc::new(self.open_path(layer, &rel)?))),
        }
    }

    /// A path through which calls that take no descriptor reach the node's file itself
    /// (never a symlink's target), and the descriptor that keeps that path valid.
    fn node_path(&self, ino: u64) -> R<(CString, Option<Arc<OwnedFd>>)> {
        match self.node_fd(ino)? {
            Some(fd) => Ok((
                CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap(),
                Some(fd),
            )),
            None => {
                let (rel, layer, _, _) = self.info(ino)?;
                Ok((cstr(&self.abs(layer, &rel))?, None))
            }
        }
    }

    // -----------------------------------------------------------------------------
    // Copy-up

    /// Makes sure the directory node `ino` exists in the upper layer.
    fn copy_up_dir(&self, ino: u64) -> R<PathBuf> {
        let (rel, layer, dirs, _) = self.info(ino)?;
        let dirs = dirs.ok_or(Errno::ENOTDIR)?;
        if layer == UPPER || dirs.first() == Some(&UPPER) {
            return Ok(rel);
        }
        let parent = self.nodes.lock().unwrap().get(ino)?.parent;
        if ino != ROOT {
            self.copy_up_dir(parent)?;
        }
        let _guard = self.copy_up_lock.lock().unwrap();
        let c = cstr(&rel)?;
        let src = stat_at(self.layers[layer].raw(), &c)?;
        // SAFETY: c is NUL-terminated; the upper fd is open.
        let r = unsafe { libc::mkdirat(self.layers[UPPER].raw(), c.as_ptr(), 0o700) };
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(errno_last());
        }
        let dst = self.abs(UPPER, &rel);
        crate::union::copy::copy_metadata(&self.abs(layer, &rel), &dst);
        let _ = src;
        let mut nodes = self.nodes.lock().unwrap();
        if let Some(n) = nodes.map.get_mut(&ino) {
            n.layer = UPPER;
            if let Some(d) = n.dirs.as_mut() {
                if d.first() != Some(&UPPER) {
                    d.insert(0, UPPER);
                }
            }
        }
        Ok(rel)
    }

    /// Copies the non-directory node `ino` up (data unless `truncate`). Returns its path.
    fn copy_up(&self, ino: u64, truncate: bool) -> R<PathBuf> {
        let (rel, layer, dirs, _) = self.info(ino)?;
        if dirs.is_some() {
            return self.copy_up_dir(ino);
        }
        if layer == UPPER {
            return Ok(rel);
        }
        let parent = self.nodes.lock().unwrap().get(ino)?.parent;
        self.copy_up_dir(parent)?;
        let _guard = self.copy_up_lock.lock().unwrap();
        // Another thread may have finished it while we waited.
        let (rel, layer, _, _) = self.info(ino)?;
        if layer == UPPER {
            return Ok(rel);
        }
        let src = self.abs(layer, &rel);
        let meta = std::fs::symlink_metadata(&src).map_err(Errno::from)?;
        let tmp_name = format!(
            "copyup-{}-{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = self.work.path.join(&tmp_name);
        let result = if truncate && meta.is_file() {
            File::create(&tmp)
                .map(drop)
                .map_err(|e| crate::union::UnionError::io("copy-up", e))
                .map(|()| crate::union::copy::copy_metadata(&src, &tmp))
        } else {
            crate::union::copy::copy_entry(&src, &tmp, &meta)
        };
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(match e {
                crate::union::UnionError::Io { source, .. } => Errno::from(source),
                _ => Errno::EIO,
            });
        }
        let tmp_c = CString::new(tmp_name).unwrap();
        let c = cstr(&rel)?;
        // Never over an existing entry: if the name is taken (the file was deleted or
        // replaced while open), the copy stays anonymous, reachable only by its node.
        // SAFETY: NUL-terminated names relative to open directory fds.
        let r = unsafe {
            libc::renameat2(
                self.work.raw(),
                tmp_c.as_ptr(),
                self.layers[UPPER].raw(),
                c.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        let fd = if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
            // SAFETY: NUL-terminated name relative to the work dir fd.
            let fd = unsafe {
                libc::openat(
                    self.work.raw(),
                    tmp_c.as_ptr(),
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            // SAFETY: as above.
            unsafe { libc::unlinkat(self.work.raw(), tmp_c.as_ptr(), 0) };
            if fd < 0 {
                return Err(errno_last());
            }
            // SAFETY: fd was just opened.
            Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })
        } else if r < 0 {
            let e = errno_last();
            // SAFETY: as above.
            unsafe { libc::unlinkat(self.work.raw(), tmp_c.as_ptr(), 0) };
            return Err(e);
        } else {
            Arc::new(self.open_path(UPPER, &rel)?)
        };
        let st = fstat(fd.as_raw_fd())?;
        let mut nodes = self.nodes.lock().unwrap();
        let key = (st.st_dev, st.st_ino);
        if let Some(n) = nodes.map.get_mut(&ino) {
            n.layer = UPPER;
            n.fd = Some(fd);
            n.key = key;
        }
        nodes.keys.insert(key, ino);
        Ok(rel)
    }

    /// Prepares `name` in directory `parent` for a new entry: the directory is copied
    /// up and a whiteout there removed. Returns (path of the entry, whether a lower
    /// layer had the name, i.e. a new directory must be opaque).
    fn prepare_new(&self, parent: u64, name: &OsStr) -> R<(PathBuf, bool)> {
        let (dir, layers) = self.dir_info(parent)?;
        let resolved = self.resolve(&dir, &layers, name)?;
        if matches!(resolved, Resolved::Found(_)) {
            return Err(Errno::EEXIST);
        }
        let upper_seen = layers.first() == Some(&UPPER);
        self.copy_up_dir(parent)?;
        let rel = dir.join(name);
        let c = cstr(&rel)?;
        if upper_seen {
            // The resolution above looked at every layer, the upper one first: a name no
            // layer has needs nothing more (the common case: tar, compilers, package
            // managers creating new files).
            match resolved {
                Resolved::Missing => return Ok((rel, false)),
                Resolved::Whiteout(i) if i != UPPER => return Ok((rel, true)),
                _ => {}
            }
        }
        let mut hid_lower = false;
        if let Ok(st) = stat_at(self.layers[UPPER].raw(), &c) {
            if self.whiteout(UPPER, &rel, &st) || st.st_mode & libc::S_IFMT == libc::S_IFCHR {
                // SAFETY: NUL-terminated path relative to the upper fd.
                if unsafe { libc::unlinkat(self.layers[UPPER].raw(), c.as_ptr(), 0) } < 0 {
                    return Err(errno_last());
                }
                hid_lower = true;
            }
        }
        if !hid_lower {
            hid_lower = layers
                .iter()
                .any(|&i| i != UPPER && stat_at(self.layers[i].raw(), &c).is_ok());
        }
        Ok((rel, hid_lower))
    }

    /// Gives a new upper entry the requesting container user as owner (the server
    /// creates as its own root). A set-group-ID directory passes its group on.
    fn own(&self, rel: &Path, req: &Request, parent_rel: &Path) -> R<()> {
        let mut gid = req.gid();
        if let Ok(st) = stat_at(self.layers[UPPER].raw(), &cstr(parent_rel)?) {
            if st.st_mode & libc::S_ISGID != 0 {
                gid = st.st_gid;
            }
        }
        if req.uid() == 0 && gid == 0 {
            return Ok(());
        }
        let c = cstr(rel)?;
        // SAFETY: NUL-terminated path relative to the upper fd; no symlink is followed.
        let r = unsafe {
            libc::fchownat(
                self.layers[UPPER].raw(),
                c.as_ptr(),
                req.uid(),
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r < 0 {
            return Err(errno_last());
        }
        Ok(())
    }

    fn new_entry(&self, parent: u64, name: &OsStr) -> R<(u64, FileAttr)> {
        self.lookup_entry(parent, name)
    }

    /// Registers an entry this server just made in the upper layer, from its stat: no
    /// second resolution across the layers (a new directory is purely upper: either no
    /// lower layer had the name or it was made opaque).
    fn new_upper_entry(&self, parent: u64, name: &OsStr, st: libc::stat) -> R<(u64, FileAttr)> {
        let dirs = is_dir(&st).then(|| vec![UPPER]);
        let found = Found {
            layer: UPPER,
            st,
            dirs,
        };
        let ino = self.remember(parent, name, &found)?;
        Ok((ino, attr_of(ino, &found.st, false)))
    }

    /// Removes `name` from `parent` (a file, or with `dir` an empty directory).
    fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> R<()> {
        let (pdir, layers) = self.dir_info(parent)?;
        let found = self.find(&pdir, &layers, name)?.ok_or(Errno::ENOENT)?;
        match (dir, found.dirs.is_some()) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        let rel = pdir.join(name);
        if let Some(dirs) = &found.dirs {
            if !self.merged_entries(&rel, dirs)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let lower = self.in_lower(&pdir, &layers, name)?;
        self.copy_up_dir(parent)?;
        let c = cstr(&rel)?;
        if found.layer == UPPER {
            if dir {
                self.clear_whiteouts(&rel)?;
            }
            let flag = if dir { libc::AT_REMOVEDIR } else { 0 };
            // SAFETY: NUL-terminated path relative to the upper fd.
            if unsafe { libc::unlinkat(self.layers[UPPER].raw(), c.as_ptr(), flag) } < 0 {
                return Err(errno_last());
            }
        }
        if lower {
            crate::union::make_whiteout(&self.abs(UPPER, &pdir), name).map_err(|e| match e {
                crate::union::UnionError::Io { source, .. } => Errno::from(source),
                _ => Errno::EIO,
            })?;
        }
        // A later file may get the same inode number: forget the key once it is gone.
        let key = (found.st.st_dev, found.st.st_ino);
        let mut nodes = self.nodes.lock().unwrap();
        if let Some(&ino) = nodes.keys.get(&key) {
            let gone = found.st.st_nlink <= 1;
            if (gone || found.layer != UPPER) && nodes.map.contains_key(&ino) {
                nodes.keys.remove(&key);
            }
        }
        Ok(())
    }

    /// Deletes the whiteouts left in an upper directory whose merged view is empty.
    fn clear_whiteouts(&self, rel: &Path) -> R<()> {
        let abs = self.abs(UPPER, rel);
        for e in std::fs::read_dir(&abs).map_err(Errno::from)? {
            let e = e.map_err(Errno::from)?;
            let p = e.path();
            std::fs::remove_file(&p).map_err(Errno::from)?;
        }
        Ok(())
    }

    /// The merged listing of the directory at `rel` (without `.` and `..`).
    fn merged_entries(&self, rel: &Path, layers: &[usize]) -> R<Vec<DirEnt>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for &i in layers {
            let abs = self.abs(i, rel);
            let rd = match std::fs::read_dir(&abs) {
                Ok(rd) => rd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let xattr_whiteouts =
                crate::union::sys::get_xattr(&abs, OPAQUE_XATTR).is_some_and(|v| v == b"x");
            for e in rd {
                let e = e.map_err(Errno::from)?;
                let name = e.file_name();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let ft = e.file_type().map_err(Errno::from)?;
                use std::os::unix::fs::{DirEntryExt, FileTypeExt};
                if ft.is_char_device() || (xattr_whiteouts && ft.is_file()) {
                    let child = rel.join(&name);
                    if let Ok(st) = stat_at(self.layers[i].raw(), &cstr(&child)?) {
                        if self.whiteout(i, &child, &st) {
                            continue;
                        }
                    }
                }
                let kind = if ft.is_dir() {
                    FileType::Directory
                } else if ft.is_symlink() {
                    FileType::Symlink
                } else if ft.is_file() {
                    FileType::RegularFile
                } else if ft.is_char_device() {
                    FileType::CharDevice
                } else if ft.is_block_device() {
                    FileType::BlockDevice
                } else if ft.is_fifo() {
                    FileType::NamedPipe
                } else {
                    FileType::Socket
                };
                out.push(DirEnt {
                    name,
                    kind,
                    ino: e.ino(),
                });
            }
        }
        Ok(out)
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
        // One open: through the descriptor the node holds, or by its path relative to
        // its layer (a regular file; the kernel opens no symlinks here).
        let (rel, layer, _, held) = self.info(ino)?;
        let rel = cstr(&rel)?;
        // SAFETY: NUL-terminated paths; the layer fd is open.
        let fd = unsafe {
            match &held {
                Some(h) => libc::open(proc_fd_path(h).as_ptr(), flags | libc::O_CLOEXEC),
                None => libc::openat(
                    self.layers[layer].raw(),
                    rel.as_ptr(),
                    flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                ),
            }
        };
        if fd < 0 {
            return Err(errno_last());
        }
        // SAFETY: fd was just opened.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Where the xattr calls reach the node's own inode, without opening anything: the
    /// descriptor a node holds (through /proc/self/fd, which resolves to that inode even
    /// for a symlink, so the following calls are right: `true`), or else its path in its
    /// layer (for the calls that do not follow a final symlink: `false`).
    fn xattr_target(&self, ino: u64) -> R<(CString, bool, Option<Arc<OwnedFd>>)> {
        let (rel, layer, _, fd) = self.info(ino)?;
        Ok(match fd {
            Some(fd) => (proc_fd_path(&fd), true, Some(fd)),
            None => (cstr(&self.abs(layer, &rel))?, false, None),
        })
    }

    /// The node's place after a copy-up, for the metadata calls of setattr.
    fn target(&self, ino: u64) -> R<(CString, usize, Option<Arc<OwnedFd>>, u32)> {
        let nodes = self.nodes.lock().unwrap();
        let n = nodes.get(ino)?;
        Ok((cstr(&nodes.rel(ino)?)?, n.layer, n.fd.clone(), n.fmt))
    }
}

fn proc_fd_path(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
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
        match self.lookup_entry(parent.0, name) {
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
        let mut nodes = self.nodes.lock().unwrap();
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
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = match fh.and_then(|fh| self.file(fh).ok()) {
            Some(f) => fstat(f.as_raw_fd()).map(|st| attr_of(ino.0, &st, false)),
            None => self.stat_node(ino.0),
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
                // Only ctime (the writeback cache reports it after unlink, link, rename):
                // nothing to change, and a deleted lower file must not be copied up.
                return self.stat_node(ino.0);
            }
            let truncate_all = size == Some(0) && mode.is_none() && uid.is_none();
            self.copy_up(ino.0, truncate_all)?;
            // Each change is one call on the node's path relative to its layer (or on
            // the descriptor it holds): no descriptor is opened per request.
            let (rel, layer, fd, fmt) = self.target(ino.0)?;
            let dirfd = self.layers[layer].raw();
            if uid.is_some() || gid.is_some() {
                let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
                // SAFETY: an open descriptor with an empty path, or a NUL-terminated path
                // relative to the open layer fd; no symlink is followed.
                let r = unsafe {
                    match &fd {
                        Some(fd) => {
                            libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), u, g, libc::AT_EMPTY_PATH)
                        }
                        None => {
                            libc::fchownat(dirfd, rel.as_ptr(), u, g, libc::AT_SYMLINK_NOFOLLOW)
                        }
                    }
                };
                if r < 0 {
                    return Err(errno_last());
                }
            }
            // Symlinks have no mode of their own to change (fchmodat would follow them).
            if let Some(mode) = mode.filter(|_| fmt != libc::S_IFLNK) {
                let mode = (mode & 0o7777) as libc::mode_t;
                // SAFETY: NUL-terminated paths; the node is no symlink.
                let r = unsafe {
                    match &fd {
                        Some(fd) => libc::chmod(proc_fd_path(fd).as_ptr(), mode),
                        None => libc::fchmodat(dirfd, rel.as_ptr(), mode, 0),
                    }
                };
                if r < 0 {
                    return Err(errno_last());
                }
            }
            if let Some(size) = size {
                let r = match fh.and_then(|fh| self.file(fh).ok()) {
                    Some(f) => f.set_len(size).map_err(Errno::from),
                    None => {
                        let path = match &fd {
                            Some(fd) => proc_fd_path(fd),
                            None => cstr(
                                &self.abs(layer, Path::new(OsStr::from_bytes(rel.as_bytes()))),
                            )?,
                        };
                        // SAFETY: NUL-terminated path.
                        match unsafe { libc::truncate(path.as_ptr(), size as i64) } {
                            0 => Ok(()),
                            _ => Err(errno_last()),
                        }
                    }
                };
                r?;
            }
            if atime.is_some() || mtime.is_some() {
                let ts = [timespec(atime), timespec(mtime)];
                // SAFETY: NUL-terminated paths and two timespecs.
                let r = unsafe {
                    match &fd {
                        Some(fd) => libc::utimensat(
                            libc::AT_FDCWD,
                            proc_fd_path(fd).as_ptr(),
                            ts.as_ptr(),
                            0,
                        ),
                        None => libc::utimensat(
                            dirfd,
                            rel.as_ptr(),
                            ts.as_ptr(),
                            libc::AT_SYMLINK_NOFOLLOW,
                        ),
                    }
                };
                if r < 0 {
                    return Err(errno_last());
                }
            }
            let st = match &fd {
                Some(fd) => fstat(fd.as_raw_fd())?,
                None => stat_at(dirfd, &rel)?,
            };
            let merged = self
                .nodes
                .lock()
                .unwrap()
                .get(ino.0)?
                .dirs
                .as_ref()
                .is_some_and(|d| d.len() > 1);
            Ok(attr_of(ino.0, &st, merged))
        })();
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = (|| -> R<Vec<u8>> {
            let fd = self.node_fd(ino.0)?.ok_or(Errno::EINVAL)?;
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: an O_PATH fd of a symlink with an empty path reads that link.
            let n = unsafe {
                libc::readlinkat(
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(errno_last());
            }
            buf.truncate(n as usize);
            Ok(buf)
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
            let (rel, _) = self.prepare_new(parent.0, name)?;
            let c = cstr(&rel)?;
            // SAFETY: NUL-terminated path relative to the upper fd.
            if unsafe {
                libc::mknodat(
                    self.layers[UPPER].raw(),
                    c.as_ptr(),
                    mode & !umask,
                    rdev as libc::dev_t,
                )
            } < 0
            {
                return Err(errno_last());
            }
            self.own(&rel, req, rel.parent().unwrap_or(Path::new("")))?;
            self.new_entry(parent.0, name)
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
            let (rel, hid_lower) = self.prepare_new(parent.0, name)?;
            let c = cstr(&rel)?;
            // SAFETY: NUL-terminated path relative to the upper fd.
            if unsafe {
                libc::mkdirat(
                    self.layers[UPPER].raw(),
                    c.as_ptr(),
                    (mode & !umask) as libc::mode_t,
                )
            } < 0
            {
                return Err(errno_last());
            }
            if hid_lower {
                crate::union::set_opaque(&self.abs(UPPER, &rel)).map_err(|_| Errno::EIO)?;
            }
            self.own(&rel, req, rel.parent().unwrap_or(Path::new("")))?;
            let st = stat_at(self.layers[UPPER].raw(), &c).map_err(Errno::from)?;
            self.new_upper_entry(parent.0, name, st)
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
            let (rel, _) = self.prepare_new(parent.0, link_name)?;
            let c = cstr(&rel)?;
            let t = CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
            // SAFETY: NUL-terminated strings; the upper fd is open.
            if unsafe { libc::symlinkat(t.as_ptr(), self.layers[UPPER].raw(), c.as_ptr()) } < 0 {
                return Err(errno_last());
            }
            self.own(&rel, req, rel.parent().unwrap_or(Path::new("")))?;
            self.new_entry(parent.0, link_name)
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
            self.copy_up(ino.0, false)?;
            let (rel, _) = self.prepare_new(newparent.0, newname)?;
            let (src, _keep) = self.node_path(ino.0)?;
            let c = cstr(&rel)?;
            // SAFETY: NUL-terminated paths; the /proc/self/fd path names the open file.
            let r = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    src.as_ptr(),
                    self.layers[UPPER].raw(),
                    c.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            };
            if r < 0 {
                return Err(errno_last());
            }
            self.new_entry(newparent.0, newname)
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
        let r = self
            .dir_info(ino.0)
            .and_then(|(rel, layers)| self.merged_entries(&rel, &layers));
        match r {
            Ok(list) => {
                let fh = self.add_handle(Handle::Dir(Arc::new(list)));
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
        let list = match self.handles.lock().unwrap().get(&fh.0) {
            Some(Handle::Dir(l)) => l.clone(),
            _ => return reply.error(Errno::EBADF),
        };
        // Offsets: 1 is ".", 2 is "..", 3 + i is list[i].
        let mut off = offset;
        while off < 2 {
            let name = if off == 0 { "." } else { ".." };
            if reply.add(ino, off + 1, FileType::Directory, name) {
                return reply.ok();
            }
            off += 1;
        }
        for (i, e) in list.iter().enumerate().skip((off - 2) as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 3, e.kind, &e.name) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let list = match self.handles.lock().unwrap().get(&fh.0) {
            Some(Handle::Dir(l)) => l.clone(),
            _ => return reply.error(Errno::EBADF),
        };
        let mut off = offset;
        if off < 2 {
            let attr = match self.stat_node(ino.0) {
                Ok(a) => a,
                Err(e) => return reply.error(e),
            };
            while off < 2 {
                let name = if off == 0 { "." } else { ".." };
                if reply.add(ino, off + 1, name, &TTL, &attr, Generation(0)) {
                    return reply.ok();
                }
                off += 1;
            }
        }
        for (i, e) in list.iter().enumerate().skip((off - 2) as usize) {
            let Ok((child, attr)) = self.lookup_entry(ino.0, &e.name) else {
                continue; // removed since opendir
            };
            if reply.add(
                INodeNo(child),
                i as u64 + 3,
                &e.name,
                &TTL,
                &attr,
                Generation(0),
            ) {
                // Not sent: undo the lookup it counted.
                self.forget(_req, INodeNo(child), 1);
                break;
            }
        }
        reply.ok()
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
            let (rel, layer, _, _) = self.info(ino.0)?;
            if layer == UPPER {
                let d = File::open(self.abs(UPPER, &rel)).map_err(Errno::from)?;
                d.sync_all().map_err(Errno::from)?;
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
            self.copy_up(ino.0, false)?;
            let (p, follow, _keep) = self.xattr_target(ino.0)?;
            let n = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            let set = if follow {
                libc::setxattr
            } else {
                libc::lsetxattr
            };
            // SAFETY: NUL-terminated strings; value readable for its length.
            if unsafe {
                set(
                    p.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                )
            } < 0
            {
                return Err(errno_last());
            }
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
            let (p, follow, _keep) = self.xattr_target(ino.0)?;
            let n = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            let mut buf = vec![0u8; size as usize];
            let ptr = if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            };
            // SAFETY: NUL-terminated strings; buf writable for its length (or a null
            // buffer of size 0, which only asks for the length).
            let r = unsafe {
                if follow {
                    libc::getxattr(p.as_ptr(), n.as_ptr(), ptr, buf.len())
                } else {
                    libc::lgetxattr(p.as_ptr(), n.as_ptr(), ptr, buf.len())
                }
            };
            if r < 0 {
                return Err(errno_last());
            }
            if size == 0 {
                buf.resize(r as usize, 0);
            } else {
                buf.truncate(r as usize);
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
            let (p, follow, _keep) = self.xattr_target(ino.0)?;
            let list = |buf: &mut [u8]| {
                let ptr = if buf.is_empty() {
                    std::ptr::null_mut()
                } else {
                    buf.as_mut_ptr().cast()
                };
                // SAFETY: NUL-terminated path; buf writable for its length (or null).
                unsafe {
                    if follow {
                        libc::listxattr(p.as_ptr(), ptr, buf.len())
                    } else {
                        libc::llistxattr(p.as_ptr(), ptr, buf.len())
                    }
                }
            };
            // Ask the length, then the names (hidden ones are filtered out below, so the
            // kernel's size cannot be passed on); again if they grew in between.
            let mut buf = Vec::new();
            let r = loop {
                let n = list(&mut []);
                if n < 0 {
                    return Err(errno_last());
                }
                buf.resize(n as usize, 0);
                let r = list(&mut buf);
                if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
                    break r;
                }
            };
            if r < 0 {
                return Err(errno_last());
            }
            buf.truncate(r as usize);
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
            self.copy_up(ino.0, false)?;
            let (p, follow, _keep) = self.xattr_target(ino.0)?;
            let n = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            let remove = if follow {
                libc::removexattr
            } else {
                libc::lremovexattr
            };
            // SAFETY: NUL-terminated strings.
            if unsafe { remove(p.as_ptr(), n.as_ptr()) } < 0 {
                return Err(errno_last());
            }
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
            let (rel, _) = self.prepare_new(parent.0, name)?;
            let c = cstr(&rel)?;
            let mut oflags = flags & !(libc::O_APPEND | libc::O_NOCTTY);
            if oflags & libc::O_ACCMODE == libc::O_WRONLY {
                oflags = (oflags & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            // SAFETY: NUL-terminated path relative to the upper fd.
            let fd = unsafe {
                libc::openat(
                    self.layers[UPPER].raw(),
                    c.as_ptr(),
                    oflags | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    (mode & !umask & 0o7777) as libc::c_uint,
                )
            };
            if fd < 0 {
                return Err(errno_last());
            }
            // SAFETY: fd was just opened.
            let file = unsafe { File::from_raw_fd(fd) };
            self.own(&rel, req, rel.parent().unwrap_or(Path::new("")))?;
            let st = fstat(file.as_raw_fd())?;
            let (ino, attr) = self.new_upper_entry(parent.0, name, st)?;
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

impl UnionFs {
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
        let (sdir, slayers) = self.dir_info(parent)?;
        let (ddir, dlayers) = self.dir_info(newparent)?;
        let src = self.find(&sdir, &slayers, name)?.ok_or(Errno::ENOENT)?;
        let dst = self.find(&ddir, &dlayers, newname)?;
        let srel = sdir.join(name);
        let drel = ddir.join(newname);
        if srel == drel {
            return Ok(());
        }
        if let Some(d) = &src.dirs {
            // Only a directory entirely in the upper layer can move (no redirect_dir).
            if d.as_slice() != [UPPER] {
                return Err(Errno::EXDEV);
            }
        }
        if let Some(dst) = &dst {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (&src.dirs, &dst.dirs) {
                (None, Some(_)) => return Err(Errno::EISDIR),
                (Some(_), None) => return Err(Errno::ENOTDIR),
                (Some(_), Some(dd)) => {
                    if !self.merged_entries(&drel, dd)?.is_empty() {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
                (None, None) => {}
            }
        }
        let src_ino = self
            .nodes
            .lock()
            .unwrap()
            .keys
            .get(&(src.st.st_dev, src.st.st_ino))
            .copied();
        match src_ino {
            Some(ino) => {
                self.copy_up(ino, false)?;
            }
            None if src.layer != UPPER => return Err(Errno::EXDEV),
            None => {}
        }
        let src_lower = self.in_lower(&sdir, &slayers, name)?;
        let dst_lower = self.in_lower(&ddir, &dlayers, newname)?;
        self.copy_up_dir(parent)?;
        self.copy_up_dir(newparent)?;
        let dc = cstr(&drel)?;
        if let Ok(st) = stat_at(self.layers[UPPER].raw(), &dc) {
            if is_dir(&st) {
                self.clear_whiteouts(&drel)?;
            } else if self.whiteout(UPPER, &drel, &st) && src.dirs.is_some() {
                // A directory cannot replace the whiteout device: remove it first.
                // SAFETY: NUL-terminated path relative to the upper fd.
                if unsafe { libc::unlinkat(self.layers[UPPER].raw(), dc.as_ptr(), 0) } < 0 {
                    return Err(errno_last());
                }
            }
        }
        let sc = cstr(&srel)?;
        // SAFETY: NUL-terminated paths relative to the upper fd.
        let r = unsafe {
            libc::renameat(
                self.layers[UPPER].raw(),
                sc.as_ptr(),
                self.layers[UPPER].raw(),
                dc.as_ptr(),
            )
        };
        if r < 0 {
            return Err(errno_last());
        }
        if src_lower {
            crate::union::make_whiteout(&self.abs(UPPER, &sdir), name).map_err(|_| Errno::EIO)?;
        }
        if src.dirs.is_some() && dst_lower {
            crate::union::set_opaque(&self.abs(UPPER, &drel)).map_err(|_| Errno::EIO)?;
        }
        let mut nodes = self.nodes.lock().unwrap();
        if let Some(dst) = &dst {
            let key = (dst.st.st_dev, dst.st.st_ino);
            if dst.layer == UPPER && dst.st.st_nlink <= 1 {
                nodes.keys.remove(&key);
            }
        }
        if let Some(ino) = src_ino {
            if let Some(n) = nodes.map.get_mut(&ino) {
                n.parent = newparent;
                n.name = newname.to_os_string();
                if n.dirs.is_some() {
                    n.dirs = Some(vec![UPPER]);
                }
            }
        }
        Ok(())
    }
}
