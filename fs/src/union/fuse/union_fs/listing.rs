//! Directory listings. A directory of one layer is streamed from that layer (offsets are
//! the filesystem's own; a handle holds a descriptor and at most [`STREAM_BUF`] bytes
//! read ahead); a merged one is read once into a listing shared by every handle opened
//! while the directory is unchanged, all listings together at most [`LISTING_BUDGET`]
//! bytes (beyond it opendir fails with ENOMEM). Whiteouts are left out, and a name is
//! shown from the topmost layer that has it.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use fuser::{Errno, FileType};

use super::attr::{errno, errno_last, kind_of, kind_of_dtype, R};
use super::layers::{entry_is_whiteout, xattr_whiteouts, Tree};
use super::nodes::DETACHED;
use crate::union::fuse::beneath::{self, open_at, stat_at};

/// The most bytes all merged-directory listings may hold together.
pub(super) const LISTING_BUDGET: usize = 64 << 20;
/// A merged directory's entries, read once, shared by the handles opened on the same
/// state of the directory. Names are packed in one buffer.
pub(super) struct Listing {
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
pub(super) struct Stream {
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

/// An open directory.
#[derive(Clone)]
pub(super) enum DirHandle {
    Listing(Arc<Listing>),
    Stream(Arc<Mutex<Stream>>),
}

/// The merged listings shared between handles: per directory node, the generation of
/// its entries it was built at (nodes.rs), and the bytes all of them hold.
pub(super) struct Listings {
    shared: Mutex<HashMap<u64, (u64, Weak<Listing>)>>,
    bytes: Arc<AtomicUsize>,
}

impl Listings {
    pub fn new() -> Listings {
        Listings {
            shared: Mutex::new(HashMap::new()),
            bytes: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The kernel forgot directory node `ino`: its listing is no longer shared.
    pub fn forget(&self, ino: u64) {
        self.shared.lock().unwrap().remove(&ino);
    }

    /// The merged listing of a directory, built within what is left of the budget.
    fn build(&self, dirs: &[(usize, Arc<OwnedFd>)]) -> R<Listing> {
        let mut seen: HashSet<CString> = HashSet::new();
        let mut names = Vec::new();
        let mut ents = Vec::new();
        let left = LISTING_BUDGET.saturating_sub(self.bytes.load(Ordering::Relaxed));
        for (_, fd) in dirs {
            let d = fd.as_raw_fd();
            beneath::read_dir(d, |name, dtype, ino| {
                if seen.contains(name) {
                    return Ok(true);
                }
                seen.insert(name.to_owned());
                if entry_is_whiteout(d, name, dtype) {
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
            budget: self.bytes.clone(),
        };
        let bytes = listing.bytes();
        if self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes > LISTING_BUDGET {
            // Dropping it gives the bytes back.
            return Err(Errno::ENOMEM);
        }
        Ok(listing)
    }

    /// A handle on directory node `ino`: a stream of its one layer, or the merged
    /// listing of its current state (shared, or built now).
    pub fn open(&self, tree: &Tree, ino: u64) -> R<DirHandle> {
        let t = tree.read();
        let (layers, gen, detached) = {
            let nodes = tree.nodes();
            let n = nodes.get(ino)?;
            (
                n.dirs.clone().ok_or(Errno::ENOTDIR)?,
                n.gen,
                n.parent == DETACHED,
            )
        };
        if layers.len() == 1 || detached {
            let d = tree.dir_fd(&t, ino, layers[0])?;
            let fd = open_at(d.as_raw_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(errno)?;
            return Ok(DirHandle::Stream(Arc::new(Mutex::new(Stream {
                xattr_whiteouts: xattr_whiteouts(fd.as_raw_fd()),
                fd,
                buf: Vec::new(),
                start: 0,
                end: 0,
                next: 0,
            }))));
        }
        if let Some((g, w)) = self.shared.lock().unwrap().get(&ino) {
            if *g == gen {
                if let Some(l) = w.upgrade() {
                    return Ok(DirHandle::Listing(l));
                }
            }
        }
        let fds = layers
            .iter()
            .map(|&l| Ok((l, tree.dir_fd(&t, ino, l)?)))
            .collect::<R<Vec<_>>>()?;
        let listing = Arc::new(self.build(&fds)?);
        self.shared
            .lock()
            .unwrap()
            .insert(ino, (gen, Arc::downgrade(&listing)));
        Ok(DirHandle::Listing(listing))
    }
}

impl DirHandle {
    /// Walks the handle from `offset`, giving each entry (inode of the layer,
    /// next offset, type, name) to `add` until it says the reply is full.
    pub fn walk(
        &self,
        offset: u64,
        mut add: impl FnMut(u64, u64, FileType, &OsStr) -> bool,
    ) -> R<()> {
        match self {
            DirHandle::Listing(list) => {
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
            DirHandle::Stream(stream) => {
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
                        && entry_is_whiteout(fd, e.name, e.kind);
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
}

/// Whether the merged directory made of `dirs` (topmost first) shows no entry.
pub(super) fn merged_is_empty(dirs: &[(usize, Arc<OwnedFd>)]) -> R<bool> {
    let mut hidden: HashSet<CString> = HashSet::new();
    for (_, fd) in dirs {
        let d = fd.as_raw_fd();
        let mut empty = true;
        beneath::read_dir(d, |name, dtype, _| {
            if hidden.contains(name) {
                return Ok(true);
            }
            if entry_is_whiteout(d, name, dtype) {
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
