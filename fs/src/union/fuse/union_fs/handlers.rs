//! The FUSE side: [`UnionFs`] holds the parts (the tree of layers and nodes, copy-up,
//! shared listings, open handles) and answers the kernel's requests with them. Reads
//! and writes go straight to the open upper or lower file (pread/pwrite on the handle,
//! no lock taken; READ replies spliced where the connection allows, splice.rs).
//! Operations on an open file (read, write, fsync, fallocate, lseek, ftruncate, getattr
//! with a handle) use the descriptor opened at OPEN time.
//!
//! Round trips to the kernel cost more than anything done here, so the kernel is let
//! cache entries, attributes and misses (negative entries) for [`TTL`], FLUSH is
//! declined once, and a new entry is answered from the stat of what was just made.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::attr::{attr_of, cname, errno, errno_last, negative_attr, timespec, R};
use super::copy_up::CopyUp;
use super::layers::{Layer, Place, Tree, OPAQUE, UPPER};
use super::listing::{DirHandle, Listings};
use super::namespace::{own, Namespace};
use super::nodes::ROOT;
use crate::at;
use crate::union::fuse::beneath::{self, fstat, open_at, open_dir_at, stat_at, Xattr};
use crate::union::fuse::splice::SpliceReplies;
use crate::union::{ContainerLayer, Layers};

/// How long the kernel may trust entries and attributes. Every change to the layers
/// passes through this filesystem, which tells the kernel; the timeout only bounds
/// the effect of a change made behind its back.
const TTL: Duration = Duration::from_secs(10);

enum Handle {
    File(Arc<File>),
    Dir(DirHandle),
}

/// The union filesystem served over FUSE.
pub struct UnionFs {
    tree: Tree,
    copy: CopyUp,
    listings: Listings,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    splice: Option<SpliceReplies>,
}

impl UnionFs {
    pub fn new(layers: &Layers, container: &ContainerLayer) -> io::Result<UnionFs> {
        let mut all = vec![Layer::open(&container.diff())?];
        for l in layers.top_down() {
            all.push(Layer::open(l)?);
        }
        let work = Layer::open(&container.work())?;
        Ok(UnionFs {
            tree: Tree::new(all)?,
            copy: CopyUp::new(work),
            listings: Listings::new(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            splice: None,
        })
    }

    /// Sends READ replies by splice (splice.rs) on the connection being served.
    pub fn set_splice(&mut self, splice: SpliceReplies) {
        self.splice = Some(splice);
    }

    fn ns(&self) -> Namespace<'_> {
        Namespace {
            tree: &self.tree,
            copy: &self.copy,
        }
    }

    /// A new non-directory entry `name` in the upper copy of `parent`, made by `make`
    /// (given the parent's descriptor and the name), owned by the caller, recorded as a
    /// node: the common steps of mknod and symlink.
    fn new_entry(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        make: impl FnOnce(RawFd, &CString) -> io::Result<()>,
    ) -> R<(u64, FileAttr)> {
        let name = cname(name)?;
        self.copy.copy_up_dir(&self.tree, parent)?;
        let t = self.tree.read();
        let (pfd, _) = self.ns().prepare_new(&t, parent, &name)?;
        make(pfd.as_raw_fd(), &name).map_err(errno)?;
        own(&pfd, &name, req)?;
        let st = stat_at(pfd.as_raw_fd(), &name).map_err(errno)?;
        self.ns().new_upper_entry(parent, &name, st, None)
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

    /// Walks the directory handle `fh` from `offset` (listing.rs).
    fn walk_dir(
        &self,
        fh: FileHandle,
        offset: u64,
        add: impl FnMut(u64, u64, FileType, &OsStr) -> bool,
    ) -> R<()> {
        let dir = match self.handles.lock().unwrap().get(&fh.0) {
            Some(Handle::Dir(d)) => d.clone(),
            _ => return Err(Errno::EBADF),
        };
        dir.walk(offset, add)
    }

    /// Opens the node's file with `flags` (after copy-up when writing).
    fn open_node(&self, ino: u64, flags: i32) -> R<File> {
        let acc = flags & libc::O_ACCMODE;
        let trunc = flags & libc::O_TRUNC != 0;
        if acc != libc::O_RDONLY || trunc {
            self.copy.copy_up(&self.tree, ino, trunc)?;
        }
        // The kernel sends every write with its offset, O_APPEND ones at the size it
        // knows (all writes pass through it), so the file is opened for positional
        // writes. Write-only opens stay read-write as under the writeback cache: the
        // server may read the file anyway, and it keeps one kind of handle.
        let mut flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_APPEND);
        if acc == libc::O_WRONLY {
            flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR;
        }
        let t = self.tree.read();
        let fd = self.tree.place(&t, ino)?.open(flags)?;
        Ok(File::from(fd))
    }
}

fn hidden_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay.")
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
            let t = self.tree.read();
            self.tree.lookup_entry(&t, parent.0, &name)
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
        let dir = self
            .tree
            .nodes()
            .forget(ino.0, nlookup, self.tree.layers.len());
        if dir {
            self.listings.forget(ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = match fh.and_then(|fh| self.file(fh).ok()) {
            Some(f) => fstat(f.as_raw_fd())
                .map(|st| attr_of(ino.0, &st, false))
                .map_err(errno),
            None => {
                let t = self.tree.read();
                self.tree.stat_node(&t, ino.0)
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
                let t = self.tree.read();
                return self.tree.stat_node(&t, ino.0);
            }
            let truncate_all = size == Some(0) && mode.is_none() && uid.is_none();
            self.copy.copy_up(&self.tree, ino.0, truncate_all)?;
            let t = self.tree.read();
            // Owner and times are set through the parent's descriptor without following
            // the name (the *at calls' NOFOLLOW forms); mode and size, which have no such
            // form on every kernel, through a descriptor of the node's own inode checked
            // to be the node's (or the open file's): never a name swapped for a symlink.
            let place = self.tree.place(&t, ino.0)?;
            let (fmt, merged) = {
                let nodes = self.tree.nodes();
                let n = nodes.get(ino.0)?;
                (n.fmt, n.dirs.as_ref().is_some_and(|d| d.len() > 1))
            };
            let mut own: Option<Arc<OwnedFd>> = None;
            let mut target = || -> R<RawFd> {
                if own.is_none() {
                    own = Some(self.tree.node_fd(&t, ino.0)?);
                }
                Ok(own.as_ref().expect("just set").as_raw_fd())
            };
            if uid.is_some() || gid.is_some() {
                let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
                match &place {
                    Place::At(d, n) => beneath::chown_at(d.as_raw_fd(), n, u, g).map_err(errno)?,
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
                    Place::At(d, n) => beneath::utimens_at(d.as_raw_fd(), n, &ts).map_err(errno)?,
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
            let t = self.tree.read();
            let fd = self.tree.node_fd(&t, ino.0)?;
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
        let r = self.new_entry(req, parent.0, name, |pfd, name| {
            at::mknodat(pfd, name, mode & !umask, rdev as libc::dev_t)
        });
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
            self.copy.copy_up_dir(&self.tree, parent.0)?;
            let t = self.tree.read();
            let (pfd, hid_lower) = self.ns().prepare_new(&t, parent.0, &name)?;
            at::mkdirat(pfd.as_raw_fd(), &name, (mode & !umask) as libc::mode_t).map_err(errno)?;
            let d = Arc::new(open_dir_at(pfd.as_raw_fd(), &name).map_err(errno)?);
            if hid_lower {
                beneath::xattr_fd(d.as_raw_fd(), Xattr::Set(OPAQUE, b"y", 0)).map_err(errno)?;
            }
            own(&pfd, &name, req)?;
            let st = fstat(d.as_raw_fd()).map_err(errno)?;
            self.ns().new_upper_entry(parent.0, &name, st, Some(d))
        })();
        match r {
            Ok((_, attr)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.ns().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.ns().remove(parent.0, name, true) {
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
        let r = CString::new(target.as_os_str().as_bytes())
            .map_err(|_| Errno::EINVAL)
            .and_then(|target| {
                // The target is stored, never resolved here.
                self.new_entry(req, parent.0, link_name, |pfd, name| {
                    at::symlinkat(&target, pfd, name)
                })
            });
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
        match self
            .ns()
            .rename(parent.0, name, newparent.0, newname, flags)
        {
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
            self.copy.copy_up(&self.tree, ino.0, false)?;
            self.copy.copy_up_dir(&self.tree, newparent.0)?;
            let t = self.tree.read();
            let src = self.tree.node_fd(&t, ino.0)?;
            let (pfd, _) = self.ns().prepare_new(&t, newparent.0, &name)?;
            beneath::link_fd(src.as_raw_fd(), pfd.as_raw_fd(), &name).map_err(errno)?;
            self.tree.nodes().bump(newparent.0);
            self.tree.lookup_entry(&t, newparent.0, &name)
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
        match self.listings.open(&self.tree, ino.0) {
            Ok(h) => {
                let fh = self.add_handle(Handle::Dir(h));
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
        let t = self.tree.read();
        let dir_attr = match self.tree.stat_node(&t, ino.0) {
            Ok(a) => a,
            Err(e) => return reply.error(e),
        };
        let r = self.walk_dir(fh, offset, |child, off, _, name| {
            if child == 0 {
                return reply.add(ino, off, name, &TTL, &dir_attr, Generation(0));
            }
            let Ok(n) = cname(name) else { return false };
            let Ok((child, attr)) = self.tree.lookup_entry(&t, ino.0, &n) else {
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
            let t = self.tree.read();
            let layer = self.tree.nodes().get(ino.0)?.layer;
            if layer == UPPER {
                let d = self.tree.dir_fd(&t, ino.0, UPPER)?;
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
        if unsafe { libc::fstatvfs(self.tree.layers[UPPER].raw(), &mut st) } < 0 {
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
            self.copy.copy_up(&self.tree, ino.0, false)?;
            let t = self.tree.read();
            let fd = self.tree.node_fd(&t, ino.0)?;
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
            let t = self.tree.read();
            let fd = self.tree.node_fd(&t, ino.0)?;
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
            let t = self.tree.read();
            let fd = self.tree.node_fd(&t, ino.0)?;
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
            self.copy.copy_up(&self.tree, ino.0, false)?;
            let t = self.tree.read();
            let fd = self.tree.node_fd(&t, ino.0)?;
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
            self.copy.copy_up_dir(&self.tree, parent.0)?;
            let t = self.tree.read();
            let (pfd, _) = self.ns().prepare_new(&t, parent.0, &name)?;
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
            own(&pfd, &name, req)?;
            let st = fstat(file.as_raw_fd()).map_err(errno)?;
            let (ino, attr) = self.ns().new_upper_entry(parent.0, &name, st, None)?;
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
