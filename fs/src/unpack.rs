//! Layer unpack: one layer tarball → one directory, every path confined to it.
//!
//! Data path: blob file → decompressor (gzip, zstd or none, told by the magic bytes) →
//! [`HashingReader`] (the uncompressed stream must match the config's diff_id) → tar
//! entries → files created through descriptors under [`Root`].
//!
//! It runs in the user namespace with the container's ID map (see the cli's store
//! helper), so an entry owned by uid 33 becomes a file the container sees as uid 33.
//! What an unprivileged user cannot create is skipped and counted: device nodes,
//! xattrs outside the user/security namespaces; an owner the map lacks is squashed.
//!
//! Safety rules, whatever the order of entries:
//! - a name is cleaned lexically; a `..` that climbs above the root is refused, a leading
//!   `/` is dropped (as GNU tar does);
//! - the parent directory is resolved inside the root (symlinks included: an absolute
//!   one restarts at the layer root, as containerd resolves it) and created there when
//!   missing, a dangling symlink's target included; the final component is created
//!   with `*at` calls through that parent, never followed;
//! - a hard link's target is resolved the same way and linked without following it;
//! - whiteouts name one plain component (never `.`, `..` or empty).
//!
//! Whiteouts are written in the form overlayfs reads with `userxattr`, so the union
//! driver (issue 5) can stack these directories as they are: `.wh.NAME` becomes a 0/0
//! character device NAME, and `.wh..wh..opq` sets `user.overlay.opaque=y` on its directory.
//! The copy driver ([`crate::flatten`]) reads the same form.
//!
//! Regular files are written sparse: runs of zero blocks become holes, so a layer that
//! expands to gigabytes of zeros (a decompression bomb) costs time, not disk.
//!
//! Sparse files as archived: GNU's old format (type `S`) is expanded by the tar crate;
//! GNU's PAX forms (`tar --sparse --posix`), which the tar crate passes on as a plain
//! file of the stored data, are read here: 1.0 (`GNU.sparse.major=1`, `minor=0`, the real
//! name in `GNU.sparse.name`, the size in `GNU.sparse.realsize`, the map at the start
//! of the data), 0.1 (`GNU.sparse.map`) and 0.0 (repeated `GNU.sparse.offset` /
//! `numbytes`). Each data segment is written at its offset, the rest is a hole. A map
//! that is malformed, overlaps, runs past the real size or disagrees with the stored
//! data, or a version nook does not know, fails the unpack: never stored as its raw
//! map (what the file would be to a reader that ignores the PAX keys).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::at::{self, Root};
use crate::digest::{Digest, HashingReader};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads for an opaque directory when mounted with `userxattr`.
pub const OPAQUE_XATTR: &CStr = c"user.overlay.opaque";
/// The xattr of a whiteout in the fallback form (an empty regular file carrying it).
pub const WHITEOUT_XATTR: &CStr = c"user.overlay.whiteout";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("hostile layer: entry {0:?} climbs out of the layer root with ..")]
    Escape(String),
    #[error("hostile layer: whiteout {0:?} does not name a plain file")]
    BadWhiteout(String),
    #[error("hostile layer: hard link {name:?} → {target:?}: {why}")]
    BadLink {
        name: String,
        target: String,
        why: String,
    },
    #[error("layer content does not match its digest: expected {expected}, got {actual} (the blob or the image config is corrupt)")]
    DiffId { expected: Digest, actual: Digest },
    #[error("reading the layer archive: {0}")]
    Archive(io::Error),
    // Not `source`: thiserror would make it one, and the message already shows it.
    #[error("unpacking {path:?}: {error}")]
    Io { path: String, error: io::Error },
    /// The destination's filesystem is full; `needed` is the layer's size unpacked.
    #[error(transparent)]
    NoSpace(Box<crate::space::NoSpace>),
    #[error("layer entry {path:?} is a sparse file in a form nook cannot read ({why}); nothing was stored: rebuild the layer without sparse files (GNU tar without --sparse) or with GNU's PAX sparse format 0.0, 0.1 or 1.0")]
    Sparse { path: String, why: String },
}

/// What an unpack did that the user may want to know.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    pub devices_skipped: u64,
    pub xattrs_skipped: u64,
    pub owners_squashed: u64,
}

/// Opens a (possibly compressed) layer blob as an uncompressed tar stream.
pub fn decompress(file: File) -> io::Result<Box<dyn Read + Send>> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    let magic = {
        use std::io::BufRead;
        r.fill_buf()?
            .get(..4)
            .map(|m| m.to_vec())
            .unwrap_or_default()
    };
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// Unpacks the layer in `blob` into `dest` (an existing, empty directory), checking the
/// uncompressed stream against `diff_id` when given.
pub fn unpack_layer(
    blob: &Path,
    diff_id: Option<&Digest>,
    dest: &Path,
) -> Result<UnpackStats, UnpackError> {
    let io_err = |error| UnpackError::Io {
        path: blob.display().to_string(),
        error,
    };
    let file = File::open(blob).map_err(io_err)?;
    let mut stream = HashingReader::new(decompress(file).map_err(io_err)?);
    let stats = match unpack_tar(&mut stream, dest) {
        Ok((stats, _)) => stats,
        Err(UnpackError::Io { path, error }) if crate::space::is_no_space(&error) => {
            // What the user needs to know is the layer's size unpacked: read the rest of
            // the stream, writing nothing (a few seconds, only on this failure).
            let _ = io::copy(&mut stream, &mut io::sink());
            let full = crate::space::NoSpace::new(
                &error,
                format!("unpacking {path:?}"),
                format!("{}", dest.display()),
                dest,
                "make room there",
            );
            return Err(UnpackError::NoSpace(Box::new(full.needing(stream.count()))));
        }
        Err(e) => return Err(e),
    };
    // The digest covers the whole stream, the end-of-archive blocks and padding too.
    io::copy(&mut stream, &mut io::sink()).map_err(UnpackError::Archive)?;
    let (actual, _) = stream.finish();
    if let Some(expected) = diff_id {
        if &actual != expected {
            return Err(UnpackError::DiffId {
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(stats)
}

/// Unpacks the (uncompressed) tar stream `stream` into `dest`, an existing directory,
/// and gives the stream back positioned after the last entry. In-process, no helper:
/// run as the root of a user namespace (the store helper's, or a single-ID one as the
/// `unpack` fuzz target makes for itself), an owner the map lacks is squashed and
/// counted.
pub fn unpack_tar<R: Read>(stream: R, dest: &Path) -> Result<(UnpackStats, R), UnpackError> {
    let root = Root::open(dest).map_err(|error| UnpackError::Io {
        path: dest.display().to_string(),
        error,
    })?;
    let mut unpacker = Unpacker::new(root);
    let mut archive = tar::Archive::new(stream);
    let entries = archive.entries().map_err(UnpackError::Archive)?;
    for entry in entries {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish()?;
    Ok((std::mem::take(&mut unpacker.stats), archive.into_inner()))
}

/// The part of the data path after decompression, reusable for any tar source.
pub struct Unpacker {
    root: Root,
    pub stats: UnpackStats,
    /// Directory mtimes, set at the end: creating children changes them.
    dir_times: Vec<(PathBuf, i64)>,
    /// The parent resolved for the previous entry (entries come grouped by directory).
    cached_parent: Option<(PathBuf, OwnedFd)>,
    buf: Vec<u8>,
}

impl Unpacker {
    pub fn new(root: Root) -> Unpacker {
        Unpacker {
            root,
            stats: UnpackStats::default(),
            dir_times: Vec::new(),
            cached_parent: None,
            buf: vec![0u8; 256 << 10],
        }
    }

    pub fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), UnpackError> {
        let (mut uid, mut gid) = (
            entry.header().uid().unwrap_or(0) as u32,
            entry.header().gid().unwrap_or(0) as u32,
        );
        let mut xattrs = Vec::new();
        let mut sparse = PaxSparse::default();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"uid" {
                    uid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(uid);
                } else if key == b"gid" {
                    gid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(gid);
                } else if let Some(k) = key.strip_prefix(b"GNU.sparse.") {
                    sparse.add(k, ext.value_bytes());
                }
            }
        }
        // A PAX sparse 1.0 file's header names a stand-in (`GNUSparseFile.PID/NAME`);
        // its own name is GNU.sparse.name.
        let raw = match &sparse.name {
            Some(name) => name.clone(),
            None => entry.path_bytes().into_owned(),
        };
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path =
            clean(OsStr::from_bytes(&raw)).ok_or_else(|| UnpackError::Escape(shown.clone()))?;
        self.stats.entries += 1;
        let err = |error: io::Error| UnpackError::Io {
            path: shown.clone(),
            error,
        };
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(err)? & 0o7777;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let sparse = sparse.form().map_err(|why| UnpackError::Sparse {
            path: shown.clone(),
            why,
        })?;
        if sparse.is_some() && !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous)
        {
            return Err(UnpackError::Sparse {
                path: shown,
                why: "sparse keys on an entry that is not a regular file".into(),
            });
        }
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let Some(path) = path else {
            // The layer's root directory itself: only its metadata applies.
            if kind.is_dir() {
                let fd = self.root.fd();
                self.apply_meta(fd, c"", uid, gid, Some(mode), &xattrs)
                    .map_err(err)?;
                self.dir_times.push((PathBuf::new(), mtime));
            }
            return Ok(());
        };
        let name = path
            .file_name()
            .expect("a cleaned path ends in a name")
            .to_os_string();
        let parent_path = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let name_bytes = name.as_bytes();

        if let Some(target) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let parent = self.parent(&parent_path).map_err(err)?;
            if name_bytes == OPAQUE_MARKER.as_bytes() {
                let dir = at::openat(
                    parent.as_raw_fd(),
                    c".",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
                .map_err(err)?;
                at::fsetxattr(dir.as_raw_fd(), OPAQUE_XATTR, b"y").map_err(err)?;
                self.stats.whiteouts += 1;
                return Ok(());
            }
            if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // Other `.wh..wh.` names are aufs metadata (hard link dirs): not content.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
                return Err(UnpackError::BadWhiteout(shown));
            }
            let leaf = at::cstr(OsStr::from_bytes(target)).map_err(err)?;
            self.clear(parent.as_raw_fd(), &leaf, false).map_err(err)?;
            if let Err(e) = at::mknodat(parent.as_raw_fd(), &leaf, libc::S_IFCHR, 0) {
                // Before Linux 5.8 a 0/0 device needs CAP_MKNOD: use the xattr form the
                // union drivers also read (an empty file marked user.overlay.whiteout,
                // its directory marked user.overlay.opaque=x unless already opaque).
                if e.raw_os_error() != Some(libc::EPERM) {
                    return Err(err(e));
                }
                let f = at::openat(
                    parent.as_raw_fd(),
                    &leaf,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(err)?;
                at::fsetxattr(f.as_raw_fd(), WHITEOUT_XATTR, b"y").map_err(err)?;
                let dir = at::openat(
                    parent.as_raw_fd(),
                    c".",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
                .map_err(err)?;
                if at::fgetxattr(dir.as_raw_fd(), OPAQUE_XATTR).is_none() {
                    at::fsetxattr(dir.as_raw_fd(), OPAQUE_XATTR, b"x").map_err(err)?;
                }
            }
            self.stats.whiteouts += 1;
            return Ok(());
        }

        let leaf = at::cstr(&name).map_err(err)?;
        let parent = self.parent(&parent_path).map_err(err)?;
        let pfd = parent.as_raw_fd();
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match at::lstat_opt(pfd, &leaf).map_err(err)? {
                    Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                    Some(_) => {
                        self.clear(pfd, &leaf, true).map_err(err)?;
                        at::mkdirat(pfd, &leaf, 0o700).map_err(err)?;
                    }
                    None => at::mkdirat(pfd, &leaf, 0o700).map_err(err)?,
                }
                let dir = at::openat(
                    pfd,
                    &leaf,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(err)?;
                self.apply_meta(dir.as_raw_fd(), c"", uid, gid, Some(mode), &xattrs)
                    .map_err(err)?;
                self.dir_times.push((path, mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.clear(pfd, &leaf, true).map_err(err)?;
                let fd = at::openat(
                    pfd,
                    &leaf,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(err)?;
                // SAFETY: `fd` is a freshly opened, owned descriptor; File takes it over.
                let mut file =
                    unsafe { File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
                let size = match sparse {
                    None => write_sparse(entry, &mut file, &mut self.buf).map_err(err)?,
                    Some(form) => {
                        let stored = entry.size();
                        write_pax_sparse(entry, stored, &mut file, form, &mut self.buf).map_err(
                            |e| match e {
                                SparseError::Io(e) => err(e),
                                SparseError::Form(why) => UnpackError::Sparse {
                                    path: shown.clone(),
                                    why,
                                },
                            },
                        )?
                    }
                };
                self.stats.bytes += size;
                self.apply_meta(file.as_raw_fd(), c"", uid, gid, Some(mode), &xattrs)
                    .map_err(err)?;
                at::set_times_at(file.as_raw_fd(), c"", mtime, false).map_err(err)?;
            }
            T::Symlink => {
                let target =
                    link.ok_or_else(|| err(io::Error::other("symlink without a target")))?;
                self.clear(pfd, &leaf, true).map_err(err)?;
                at::symlinkat(
                    &at::cstr(OsStr::from_bytes(&target)).map_err(err)?,
                    pfd,
                    &leaf,
                )
                .map_err(err)?;
                self.chown(pfd, &leaf, uid, gid).map_err(err)?;
                at::set_times_at(pfd, &leaf, mtime, true).map_err(err)?;
            }
            T::Link => {
                let target =
                    link.ok_or_else(|| err(io::Error::other("hard link without a target")))?;
                let shown_target = String::from_utf8_lossy(&target).into_owned();
                let bad = |why: &str| UnpackError::BadLink {
                    name: shown.clone(),
                    target: shown_target.clone(),
                    why: why.to_string(),
                };
                let target = clean(OsStr::from_bytes(&target))
                    .ok_or_else(|| bad("the target climbs out of the layer root"))?
                    .ok_or_else(|| bad("the target is the layer root"))?;
                let tname = at::cstr(target.file_name().expect("cleaned")).map_err(err)?;
                let tparent = self
                    .root
                    .open_in(
                        target.parent().unwrap_or(Path::new("")),
                        libc::O_PATH | libc::O_DIRECTORY,
                    )
                    .map_err(|e| {
                        bad(&format!(
                            "its directory cannot be resolved in the layer: {e}"
                        ))
                    })?;
                let st = at::lstat_opt(tparent.as_raw_fd(), &tname)
                    .map_err(err)?
                    .ok_or_else(|| bad("the target does not exist (earlier) in this layer"))?;
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Err(bad("the target is a directory"));
                }
                if target == path {
                    return Ok(());
                }
                self.clear(pfd, &leaf, true).map_err(err)?;
                at::linkat(tparent.as_raw_fd(), &tname, pfd, &leaf).map_err(err)?;
            }
            T::Fifo => {
                self.clear(pfd, &leaf, true).map_err(err)?;
                at::mknodat(pfd, &leaf, libc::S_IFIFO | 0o600, 0).map_err(err)?;
                self.chown(pfd, &leaf, uid, gid).map_err(err)?;
                let fd = at::openat(pfd, &leaf, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(err)?;
                chmod_path_fd(&fd, mode).map_err(err)?;
                at::set_times_at(pfd, &leaf, mtime, true).map_err(err)?;
            }
            T::Char | T::Block => self.stats.devices_skipped += 1,
            // Global headers, GNU volume labels and the like carry no file.
            _ => {}
        }
        Ok(())
    }

    /// The parent directory of an entry, resolved inside the layer root, symlinks
    /// included (an absolute one restarts at the layer root), as containerd resolves
    /// it. What is missing on the way is created there (0755, owned by the container's
    /// root), the target of a dangling symlink included: `var/run -> /run` then
    /// `var/run/x` puts x in the layer's /run, created if the layer has none.
    fn parent(&mut self, rel: &Path) -> io::Result<OwnedFd> {
        if let Some((p, fd)) = &self.cached_parent {
            if p == rel {
                return at::openat(fd.as_raw_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0);
            }
        }
        let fd = match self.root.open_in(rel, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let fd = self.root.open_or_create(rel, at::Make::Dir)?;
                // What it returns is the object itself: it must be a directory.
                at::openat(fd.as_raw_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)?
            }
            Err(e) => return Err(e),
        };
        let keep = at::openat(fd.as_raw_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)?;
        self.cached_parent = Some((rel.to_path_buf(), keep));
        Ok(fd)
    }

    /// Removes whatever is at `leaf` so an entry can take its place (a directory stays
    /// when `keep_dir` is false and it is one... never for files: tar replaces).
    fn clear(&mut self, pfd: RawFd, leaf: &CStr, _replace: bool) -> io::Result<()> {
        if at::lstat_opt(pfd, leaf)?.is_some() {
            // Removing may unlink a directory the cached parent points into.
            self.cached_parent = None;
            at::remove_all_at(pfd, leaf)?;
        }
        Ok(())
    }

    fn chown(&mut self, dirfd: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
        if !at::chown_at(dirfd, name, uid, gid)? {
            self.stats.owners_squashed += 1;
        }
        Ok(())
    }

    /// Owner, then mode (chown clears set-id bits), then xattrs (chown clears file
    /// capabilities), on an open descriptor (`name` empty) .
    fn apply_meta(
        &mut self,
        fd: RawFd,
        name: &CStr,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> io::Result<()> {
        self.chown(fd, name, uid, gid)?;
        if let Some(mode) = mode {
            at::fchmod(fd, mode)?;
        }
        for (k, v) in xattrs {
            // Only namespaces a user namespace may write; trusted.* and the overlay's
            // own names would be refused or would confuse the union driver.
            let allowed = (k.starts_with(b"user.") && !k.starts_with(b"user.overlay."))
                || k.starts_with(b"security.");
            let set = allowed
                && CString::new(k.clone())
                    .map(|k| at::fsetxattr(fd, &k, v).is_ok())
                    .unwrap_or(false);
            if !set {
                self.stats.xattrs_skipped += 1;
            }
        }
        Ok(())
    }

    /// Sets the directory times recorded during the unpack.
    pub fn finish(&mut self) -> Result<(), UnpackError> {
        self.cached_parent = None;
        for (path, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            // A later entry may have replaced the directory: times are best effort.
            if let Ok(fd) = self
                .root
                .open_in(&path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            {
                let _ = at::set_times_at(fd.as_raw_fd(), c"", mtime, false);
            }
        }
        Ok(())
    }
}

/// chmod through an O_PATH descriptor (fchmod refuses those): via /proc/self/fd.
fn chmod_path_fd(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    let p = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    // SAFETY: `p` is NUL-terminated; the magic link names exactly the inode `fd` holds.
    let r = unsafe { libc::chmod(p.as_ptr(), mode) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Copies `src` to `file`, turning every all-zero block into a hole.
fn write_sparse(src: &mut impl Read, file: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let (size, pending_hole) = copy_sparse(src, file, buf)?;
    if pending_hole {
        file.set_len(size)?;
    }
    Ok(size)
}

/// Copies `src` to `file` from its current offset, seeking over all-zero blocks; returns
/// the bytes copied and whether they ended in such a seek (the file is then shorter
/// than its offset until the caller sets its length).
fn copy_sparse(src: &mut impl Read, file: &mut File, buf: &mut [u8]) -> io::Result<(u64, bool)> {
    let mut size = 0u64;
    let mut pending_hole = false;
    loop {
        let n = match src.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        if is_zero(chunk) {
            file.seek(SeekFrom::Current(n as i64))?;
            pending_hole = true;
        } else {
            file.write_all(chunk)?;
            pending_hole = false;
        }
        size += n as u64;
    }
    Ok((size, pending_hole))
}

/// The GNU.sparse.* PAX keys of one entry, as found.
#[derive(Default)]
struct PaxSparse {
    any: bool,
    major: Option<String>,
    minor: Option<String>,
    name: Option<Vec<u8>>,
    realsize: Option<String>,
    size: Option<String>,
    numblocks: Option<String>,
    map: Option<String>,
    offsets: Vec<String>,
    numbytes: Vec<String>,
}

/// How a PAX sparse file's data is laid out.
#[derive(Debug, PartialEq, Eq)]
enum SparseForm {
    /// 1.0: the map (decimal numbers, one a line, block-padded) leads the data.
    MapInData { realsize: u64 },
    /// 0.0 / 0.1: the map was in the PAX header; the data is the segments.
    Map { realsize: u64, map: Vec<(u64, u64)> },
}

enum SparseError {
    Io(io::Error),
    Form(String),
}

impl From<io::Error> for SparseError {
    fn from(e: io::Error) -> SparseError {
        SparseError::Io(e)
    }
}

/// The longest 1.0 map read from the data (as Go's archive/tar allows).
const MAX_SPARSE_MAP: u64 = 1 << 20;

impl PaxSparse {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        self.any = true;
        let text = || String::from_utf8_lossy(value).into_owned();
        match key {
            b"major" => self.major = Some(text()),
            b"minor" => self.minor = Some(text()),
            b"name" => self.name = Some(value.to_vec()),
            b"realsize" => self.realsize = Some(text()),
            b"size" => self.size = Some(text()),
            b"numblocks" => self.numblocks = Some(text()),
            b"map" => self.map = Some(text()),
            // 0.0 repeats these two keys, in order, once per segment.
            b"offset" => self.offsets.push(text()),
            b"numbytes" => self.numbytes.push(text()),
            _ => {}
        }
    }

    /// The form this entry's keys describe: None for a plain file, an error for a form
    /// nook does not read or keys that contradict each other.
    fn form(&self) -> Result<Option<SparseForm>, String> {
        if !self.any {
            return Ok(None);
        }
        let number = |what: &str, v: &Option<String>| -> Result<u64, String> {
            let v = v
                .as_deref()
                .ok_or_else(|| format!("no GNU.sparse.{what}"))?;
            v.trim()
                .parse()
                .map_err(|_| format!("GNU.sparse.{what}={v:?} is not a number"))
        };
        match (self.major.as_deref(), self.minor.as_deref()) {
            (Some("1"), Some("0")) => Ok(Some(SparseForm::MapInData {
                realsize: number("realsize", &self.realsize)?,
            })),
            (None, None) | (Some("0"), Some("0" | "1")) => {
                let realsize = number("size", &self.size)?;
                let flat: Vec<&str> = match &self.map {
                    Some(map) if map.trim().is_empty() => Vec::new(),
                    Some(map) => map.split(',').collect(),
                    None if self.offsets.len() != self.numbytes.len() => {
                        return Err("GNU.sparse.offset and numbytes do not pair up".into())
                    }
                    None if self.offsets.is_empty() && self.numblocks.is_none() => {
                        return Err("GNU.sparse keys without a sparse map".into())
                    }
                    None => self
                        .offsets
                        .iter()
                        .zip(&self.numbytes)
                        .flat_map(|(o, n)| [o.as_str(), n.as_str()])
                        .collect(),
                };
                if !flat.len().is_multiple_of(2) {
                    return Err("the sparse map has an odd count of numbers".into());
                }
                let mut map = Vec::with_capacity(flat.len() / 2);
                for pair in flat.chunks(2) {
                    let n = |v: &str| {
                        v.trim()
                            .parse::<u64>()
                            .map_err(|_| format!("sparse map value {v:?} is not a number"))
                    };
                    map.push((n(pair[0])?, n(pair[1])?));
                }
                if let Some(blocks) = &self.numblocks {
                    if blocks.trim().parse::<usize>().ok() != Some(map.len()) {
                        return Err(format!(
                            "GNU.sparse.numblocks={blocks} but the map has {} entries",
                            map.len()
                        ));
                    }
                }
                Ok(Some(SparseForm::Map { realsize, map }))
            }
            (major, minor) => Err(format!(
                "GNU sparse format {}.{}",
                major.unwrap_or("?"),
                minor.unwrap_or("?")
            )),
        }
    }
}

/// Reads a 1.0 map from the start of the entry's data: the count, then offset and size
/// of each segment, each a decimal number ending in a newline, padded to whole 512-byte
/// blocks. Returns the map and the bytes it took.
fn read_sparse_map(
    src: &mut impl Read,
    stored: u64,
) -> Result<(Vec<(u64, u64)>, u64), SparseError> {
    let mut numbers: Vec<u64> = Vec::new();
    let mut want: Option<u64> = None;
    let mut cur: Option<u64> = None;
    let mut used = 0u64;
    let mut block = [0u8; 512];
    loop {
        if used >= stored.min(MAX_SPARSE_MAP) {
            return Err(SparseError::Form(
                "the sparse map does not end within the entry (or within 1 MiB)".into(),
            ));
        }
        src.read_exact(&mut block)?;
        used += 512;
        for &b in &block {
            match b {
                b'0'..=b'9' => {
                    let v = cur
                        .unwrap_or(0)
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')))
                        .ok_or_else(|| SparseError::Form("a sparse map number overflows".into()))?;
                    cur = Some(v);
                }
                b'\n' => {
                    let v = cur
                        .take()
                        .ok_or_else(|| SparseError::Form("an empty sparse map line".into()))?;
                    match want {
                        None => {
                            // Each entry takes at least four bytes of the map.
                            if v > MAX_SPARSE_MAP / 4 {
                                return Err(SparseError::Form(format!(
                                    "a sparse map of {v} entries"
                                )));
                            }
                            want = Some(v);
                        }
                        Some(_) => numbers.push(v),
                    }
                }
                _ => {
                    return Err(SparseError::Form(format!(
                        "byte {b:#04x} in the sparse map"
                    )))
                }
            }
            if want.is_some_and(|w| numbers.len() as u64 == 2 * w) {
                let map = numbers.chunks(2).map(|p| (p[0], p[1])).collect();
                return Ok((map, used));
            }
        }
    }
}

/// Writes a PAX sparse file: each segment of the stored data at its offset, holes
/// between, the whole `realsize` long. Returns the real size.
fn write_pax_sparse(
    src: &mut impl Read,
    stored: u64,
    file: &mut File,
    form: SparseForm,
    buf: &mut [u8],
) -> Result<u64, SparseError> {
    let (realsize, map, data) = match form {
        SparseForm::MapInData { realsize } => {
            let (map, used) = read_sparse_map(src, stored)?;
            (realsize, map, stored.saturating_sub(used))
        }
        SparseForm::Map { realsize, map } => (realsize, map, stored),
    };
    check_sparse_map(&map, realsize, data).map_err(SparseError::Form)?;
    for &(offset, len) in &map {
        file.seek(SeekFrom::Start(offset))?;
        let (copied, _) = copy_sparse(&mut src.take(len), file, buf)?;
        if copied != len {
            return Err(SparseError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a sparse file's data",
            )));
        }
    }
    file.set_len(realsize)?;
    Ok(realsize)
}

/// Segments in order, not overlapping, within the real size, and together exactly the
/// stored data.
fn check_sparse_map(map: &[(u64, u64)], realsize: u64, data: u64) -> Result<(), String> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(offset, len) in map {
        let seg_end = offset
            .checked_add(len)
            .ok_or("a sparse map segment overflows")?;
        if offset < end {
            return Err("sparse map segments overlap or are out of order".into());
        }
        if seg_end > realsize {
            return Err(format!(
                "a sparse map segment ends at {seg_end}, past the file's size {realsize}"
            ));
        }
        end = seg_end;
        total += len;
    }
    if total != data {
        return Err(format!(
            "the sparse map covers {total} bytes but the entry stores {data}"
        ));
    }
    Ok(())
}

fn is_zero(b: &[u8]) -> bool {
    let (head, mid, tail) = {
        // SAFETY: u128 has no invalid bit patterns; align_to splits at aligned boundaries.
        unsafe { b.align_to::<u128>() }
    };
    head.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0) && tail.iter().all(|&x| x == 0)
}

/// The entry name as a path inside the root: `None` inside means the root itself; the
/// outer `None` means a `..` climbs above the root.
pub fn clean(raw: &OsStr) -> Option<Option<PathBuf>> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(n) => parts.push(n),
        }
    }
    Some((!parts.is_empty()).then(|| parts.iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_or_refused() {
        let c = |s: &str| clean(OsStr::new(s));
        assert_eq!(c("./a/b"), Some(Some(PathBuf::from("a/b"))));
        assert_eq!(c("/etc/passwd"), Some(Some(PathBuf::from("etc/passwd"))));
        assert_eq!(c("a/../b"), Some(Some(PathBuf::from("b"))));
        assert_eq!(c("./"), Some(None));
        assert_eq!(c("../x"), None);
        assert_eq!(c("a/../../x"), None);
    }

    /// A tar built entry by entry, owned by the caller (a user namespace is not needed
    /// to chown to oneself).
    #[derive(Default)]
    struct TarBuf(Vec<u8>);

    impl TarBuf {
        fn entry(
            &mut self,
            name: &str,
            kind: tar::EntryType,
            link: &str,
            data: &[u8],
        ) -> &mut Self {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_uid(nix::unistd::getuid().as_raw().into());
            h.set_gid(nix::unistd::getgid().as_raw().into());
            h.set_mtime(1_700_000_000);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_cksum();
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            self.0.resize(self.0.len().div_ceil(512) * 512, 0);
            self
        }
        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.entry(name, tar::EntryType::Regular, "", data)
        }
        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name, tar::EntryType::Symlink, target, b"")
        }
        /// A PAX extended header with `records` for the next entry.
        fn pax(&mut self, records: &[(&str, &str)]) -> &mut Self {
            let mut body = Vec::new();
            for (k, v) in records {
                let rest = format!(" {k}={v}\n");
                let mut len = rest.len() + 1;
                while format!("{len}").len() + rest.len() != len {
                    len += 1;
                }
                body.extend_from_slice(format!("{len}{rest}").as_bytes());
            }
            self.entry("PaxHeaders/x", tar::EntryType::XHeader, "", &body)
        }
        fn unpack(&mut self, dest: &Path) -> Result<UnpackStats, UnpackError> {
            self.0.extend_from_slice(&[0u8; 1024]);
            unpack_tar(&self.0[..], dest).map(|(stats, _)| stats)
        }
    }

    /// The content of a sparse test file: `hello` at 4096, `end` at 10000, 20000 long.
    fn expected_sparse() -> Vec<u8> {
        let mut v = vec![0u8; 20000];
        v[4096..4101].copy_from_slice(b"hello");
        v[10000..10003].copy_from_slice(b"end");
        v
    }

    #[test]
    fn pax_sparse_files_are_expanded() {
        // 1.0: the map leads the data, block-padded; the header names a stand-in.
        let dir = tempfile::tempdir().unwrap();
        let mut map = b"3\n4096\n5\n10000\n3\n20000\n0\n".to_vec();
        map.resize(512, 0);
        map.extend_from_slice(b"helloend");
        TarBuf::default()
            .pax(&[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", "d/f"),
                ("GNU.sparse.realsize", "20000"),
            ])
            .file("d/GNUSparseFile.1/f", &map)
            .unpack(dir.path())
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("d/f")).unwrap(),
            expected_sparse()
        );
        assert!(!dir.path().join("d/GNUSparseFile.1").exists());

        // 0.1: the map in one key.
        let dir = tempfile::tempdir().unwrap();
        TarBuf::default()
            .pax(&[
                ("GNU.sparse.size", "20000"),
                ("GNU.sparse.numblocks", "2"),
                ("GNU.sparse.name", "f"),
                ("GNU.sparse.map", "4096,5,10000,3"),
            ])
            .file("GNUSparseFile.1/f", b"helloend")
            .unpack(dir.path())
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("f")).unwrap(),
            expected_sparse()
        );

        // 0.0: offset/numbytes repeated, the header's own name.
        let dir = tempfile::tempdir().unwrap();
        TarBuf::default()
            .pax(&[
                ("GNU.sparse.size", "20000"),
                ("GNU.sparse.numblocks", "2"),
                ("GNU.sparse.offset", "4096"),
                ("GNU.sparse.numbytes", "5"),
                ("GNU.sparse.offset", "10000"),
                ("GNU.sparse.numbytes", "3"),
            ])
            .file("f", b"helloend")
            .unpack(dir.path())
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("f")).unwrap(),
            expected_sparse()
        );
    }

    #[test]
    fn sparse_forms_nook_cannot_read_are_refused() {
        let refused = |records: &[(&str, &str)], data: &[u8]| {
            let dir = tempfile::tempdir().unwrap();
            let e = TarBuf::default()
                .pax(records)
                .file("f", data)
                .unpack(dir.path())
                .unwrap_err();
            assert!(matches!(e, UnpackError::Sparse { .. }), "{records:?}: {e}");
            e.to_string()
        };
        let e = refused(
            &[
                ("GNU.sparse.major", "2"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.realsize", "10"),
            ],
            b"",
        );
        assert!(
            e.contains("GNU sparse format 2.0") && e.contains("\"f\""),
            "{e}"
        );
        // Overlapping segments, a segment past the size, a map that is not the data.
        refused(
            &[("GNU.sparse.size", "100"), ("GNU.sparse.map", "0,5,3,5")],
            b"0123456789",
        );
        refused(
            &[("GNU.sparse.size", "100"), ("GNU.sparse.map", "98,5")],
            b"01234",
        );
        refused(
            &[("GNU.sparse.size", "100"), ("GNU.sparse.map", "0,5")],
            b"0123456789",
        );
        refused(
            &[("GNU.sparse.size", "100"), ("GNU.sparse.map", "0,x")],
            b"",
        );
        refused(&[("GNU.sparse.size", "100")], b"");
        // The real name is an entry name like any other: `..` above the root refused.
        let dir = tempfile::tempdir().unwrap();
        let mut empty_map = b"0\n".to_vec();
        empty_map.resize(512, 0);
        let e = TarBuf::default()
            .pax(&[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", "../../escaped"),
                ("GNU.sparse.realsize", "0"),
            ])
            .file("GNUSparseFile.1/f", &empty_map)
            .unpack(dir.path())
            .unwrap_err();
        assert!(matches!(e, UnpackError::Escape(_)), "{e}");
        let mut bad_map = b"1\n0\nten\n".to_vec();
        bad_map.resize(512, 0);
        refused(
            &[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.realsize", "10"),
            ],
            &bad_map,
        );
    }

    /// What GNU tar itself writes with `--sparse --posix`, in each PAX sparse version.
    #[test]
    fn gnu_tar_sparse_archives_round_trip() {
        let ok = std::process::Command::new("tar")
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"));
        if !ok {
            eprintln!("SKIP: gnu_tar_sparse_archives_round_trip: no GNU tar here");
            return;
        }
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("sparse");
        {
            let mut f = File::create(&file).unwrap();
            f.set_len(10 << 20).unwrap();
            f.seek(SeekFrom::Start(4096)).unwrap();
            f.write_all(b"hello").unwrap();
            f.seek(SeekFrom::Start((10 << 20) - 3)).unwrap();
            f.write_all(b"end").unwrap();
        }
        let want = std::fs::read(&file).unwrap();
        for version in ["1.0", "0.1", "0.0"] {
            let out = std::process::Command::new("tar")
                .args(["--sparse", "--posix", "--numeric-owner"])
                .arg(format!("--sparse-version={version}"))
                .arg(format!("--owner={}", nix::unistd::getuid()))
                .arg(format!("--group={}", nix::unistd::getgid()))
                .arg("-C")
                .arg(src.path())
                .args(["-cf", "-", "sparse"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let dest = tempfile::tempdir().unwrap();
            let (stats, _) = unpack_tar(&out.stdout[..], dest.path()).unwrap();
            assert_eq!(stats.bytes, 10 << 20, "{version}");
            let got = dest.path().join("sparse");
            assert!(
                std::fs::read(&got).unwrap() == want,
                "{version}: content differs"
            );
            use std::os::unix::fs::MetadataExt;
            assert!(
                std::fs::metadata(&got).unwrap().blocks() * 512 < 1 << 20,
                "{version}: written sparse"
            );
            let names: Vec<_> = std::fs::read_dir(dest.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(names, ["sparse"], "{version}");
        }
    }

    /// An absolute symlink in a layer resolves inside the layer, and a missing target
    /// directory is created there (containerd's rule); the host is never touched.
    #[test]
    fn parents_through_symlinks_resolve_inside_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let out = outside.path().to_str().unwrap();
        TarBuf::default()
            .entry("var/", tar::EntryType::Directory, "", b"")
            .symlink("var/run", "/run")
            .file("var/run/x", b"x")
            .symlink("abs", out)
            .file("abs/y", b"y")
            .symlink("rel", "../../../../../../../../run/sub")
            .file("rel/z", b"z")
            .unpack(dir.path())
            .unwrap();
        let root = dir.path();
        assert_eq!(std::fs::read(root.join("run/x")).unwrap(), b"x");
        assert!(std::fs::symlink_metadata(root.join("var/run"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read(root.join(out.trim_start_matches('/')).join("y")).unwrap(),
            b"y"
        );
        assert_eq!(std::fs::read(root.join("run/sub/z")).unwrap(), b"z");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);

        // A parent that resolves to a file: one clear error, its cause said once.
        let dir = tempfile::tempdir().unwrap();
        let e = TarBuf::default()
            .file("etc", b"not a directory")
            .symlink("link", "/etc")
            .file("link/passwd", b"x")
            .unpack(dir.path())
            .unwrap_err();
        let mut chain = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            chain = format!("{chain}: {c}");
            cause = c.source();
        }
        assert_eq!(chain.matches("Not a directory").count(), 1, "{chain}");
        assert!(chain.contains("link/passwd"), "{chain}");
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 1000]));
        let mut v = vec![0u8; 1000];
        v[999] = 1;
        assert!(!is_zero(&v));
        v[999] = 0;
        v[3] = 1;
        assert!(!is_zero(&v[1..]));
    }
}
