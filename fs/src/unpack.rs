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
//! - the parent directory is resolved inside the root (symlinks included) and the final
//!   component is created with `*at` calls through that parent, never followed;
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
        let raw = entry.path_bytes().into_owned();
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
        let (mut uid, mut gid) = (
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        );
        let mut xattrs = Vec::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"uid" {
                    uid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(uid);
                } else if key == b"gid" {
                    gid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(gid);
                }
            }
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
                let size = write_sparse(entry, &mut file, &mut self.buf).map_err(err)?;
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

    /// The parent directory of an entry, created (0755, owned by the container's root)
    /// when the layer did not list it.
    fn parent(&mut self, rel: &Path) -> io::Result<OwnedFd> {
        if let Some((p, fd)) = &self.cached_parent {
            if p == rel {
                return at::openat(fd.as_raw_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0);
            }
        }
        let fd = match self.root.open_in(rel, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.create_parents(rel)?,
            Err(e) => return Err(e),
        };
        let keep = at::openat(fd.as_raw_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)?;
        self.cached_parent = Some((rel.to_path_buf(), keep));
        Ok(fd)
    }

    fn create_parents(&mut self, rel: &Path) -> io::Result<OwnedFd> {
        let mut cur = PathBuf::new();
        let mut fd = self
            .root
            .open_in(Path::new(""), libc::O_PATH | libc::O_DIRECTORY)?;
        for comp in rel.iter() {
            cur.push(comp);
            fd = match self.root.open_in(&cur, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(next) => next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // The component may be a dangling symlink: resolution then names a
                    // missing target, which is refused rather than created through it.
                    let name = at::cstr(comp)?;
                    if at::lstat_opt(fd.as_raw_fd(), &name)?.is_some() {
                        return Err(e);
                    }
                    at::mkdirat(fd.as_raw_fd(), &name, 0o755)?;
                    let dir = at::openat(
                        fd.as_raw_fd(),
                        &name,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                        0,
                    )?;
                    // 0755 exactly: under umask 077 mkdirat alone would hide the
                    // directory from the container's other users.
                    at::fchmod(dir.as_raw_fd(), 0o755)?;
                    dir
                }
                Err(e) => return Err(e),
            };
        }
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
    if pending_hole {
        file.set_len(size)?;
    }
    Ok(size)
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
