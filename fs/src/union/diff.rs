//! A container's changes, read from its upper layer: `nook diff` and `nook commit`.
//!
//! [`changes`] lists what the upper layer adds (A), changes (C) and deletes (D)
//! relative to the read-only layers below, as `podman diff` prints them. [`write_layer`]
//! turns the upper layer into an OCI layer tarball: whiteouts (device or xattr form)
//! become `.wh.NAME` entries and an opaque directory gets `.wh..wh..opq`, the inverse
//! of what the unpacker does.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::at;
use crate::union::{is_whiteout, Layers, Result, UnionError};
use crate::unpack::{OPAQUE_XATTR as OPAQUE_XATTR_C, WHITEOUT_XATTR as WHITEOUT_XATTR_C};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute path inside the container.
    pub path: PathBuf,
}

fn in_lower(layers: &Layers, rel: &Path) -> bool {
    for l in layers.top_down() {
        let p = l.join(rel);
        if let Ok(m) = fs::symlink_metadata(&p) {
            return !is_whiteout(&p, &m);
        }
    }
    false
}

/// The changes in `upper` over `layers`, sorted by path.
pub fn changes(upper: &Path, layers: &Layers) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(upper, Path::new(""), layers, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(upper: &Path, rel: &Path, layers: &Layers, out: &mut Vec<Change>) -> Result<()> {
    let dir = upper.join(rel);
    let rd = fs::read_dir(&dir).map_err(|e| UnionError::io(dir.display().to_string(), e))?;
    for e in rd {
        let e = e.map_err(|e| UnionError::io(dir.display().to_string(), e))?;
        let rel_child = rel.join(e.file_name());
        let p = e.path();
        let m = fs::symlink_metadata(&p).map_err(|e| UnionError::io(p.display().to_string(), e))?;
        let shown = Path::new("/").join(&rel_child);
        if is_whiteout(&p, &m) {
            if in_lower(layers, &rel_child) {
                out.push(Change {
                    kind: ChangeKind::Deleted,
                    path: shown,
                });
            }
            continue;
        }
        let kind = if in_lower(layers, &rel_child) {
            ChangeKind::Changed
        } else {
            ChangeKind::Added
        };
        out.push(Change { kind, path: shown });
        if m.is_dir() {
            walk(upper, &rel_child, layers, out)?;
        }
    }
    Ok(())
}

/// Writes `upper` as an uncompressed OCI layer tar to `w`.
///
/// The upper layer is written by the container, which may still run: the tree is read
/// through directory descriptors, one component at a time, nothing followed, so a
/// directory swapped for a symlink to a host path while the commit runs cannot put the
/// host's files into the image.
pub fn write_layer<W: Write>(upper: &Path, w: W) -> Result<W> {
    let mut b = tar::Builder::new(w);
    let root = at::open_dir(upper).map_err(|e| UnionError::io(upper.display().to_string(), e))?;
    add_dir(&mut b, &root, Path::new(""))?;
    b.into_inner()
        .map_err(|e| UnionError::io("finishing the layer tar", e))
}

/// The tar header of the entry `st` describes (as tar's `HeaderMode::Complete`).
fn header(st: &libc::stat, kind: tar::EntryType) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid.into());
    h.set_gid(st.st_gid.into());
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(libc::major(st.st_rdev))?;
        h.set_device_minor(libc::minor(st.st_rdev))?;
    }
    Ok(h)
}

fn add_dir<W: Write>(b: &mut tar::Builder<W>, dir: &OwnedFd, rel: &Path) -> Result<()> {
    let shown = || Path::new("/").join(rel).display().to_string();
    let io = |e: std::io::Error| UnionError::io(shown(), e);
    let d = dir.as_raw_fd();
    if !rel.as_os_str().is_empty() && at::fgetxattr(d, OPAQUE_XATTR_C).is_some_and(|v| v == b"y") {
        empty_entry(b, &rel.join(".wh..wh..opq")).map_err(io)?;
    }
    let mut names = at::read_dir_names(dir).map_err(io)?;
    names.sort();
    for name in names {
        let rel_child = rel.join(OsStr::from_bytes(name.to_bytes()));
        let st = at::fstatat(d, &name, libc::AT_SYMLINK_NOFOLLOW).map_err(io)?;
        let whiteout_name = || {
            let mut w = std::ffi::OsString::from(".wh.");
            w.push(OsStr::from_bytes(name.to_bytes()));
            rel.join(w)
        };
        use tar::EntryType as T;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let sub = at::openat(
                    d,
                    &name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(io)?;
                let mut h = header(&st, T::Directory).map_err(io)?;
                b.append_data(&mut h, &rel_child, std::io::empty())
                    .map_err(io)?;
                add_dir(b, &sub, &rel_child)?;
            }
            libc::S_IFREG => {
                let f = at::openat(
                    d,
                    &name,
                    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                    0,
                )
                .map_err(io)?;
                let file = std::fs::File::from(f);
                let meta = file.metadata().map_err(io)?;
                if !meta.is_file() {
                    return Err(UnionError::Other(format!(
                        "{}: changed while the layer was read",
                        Path::new("/").join(&rel_child).display()
                    )));
                }
                if meta.len() == 0 && at::fgetxattr(file.as_raw_fd(), WHITEOUT_XATTR_C).is_some() {
                    empty_entry(b, &whiteout_name()).map_err(io)?;
                    continue;
                }
                let mut h = header(&st, T::Regular).map_err(io)?;
                h.set_size(meta.len());
                // A file that shrinks meanwhile is padded, so the archive stays whole.
                let data =
                    std::io::Read::chain(std::io::Read::take(file, meta.len()), std::io::repeat(0));
                b.append_data(&mut h, &rel_child, std::io::Read::take(data, meta.len()))
                    .map_err(io)?;
            }
            libc::S_IFLNK => {
                let target = at::readlinkat(d, &name).map_err(io)?;
                let mut h = header(&st, T::Symlink).map_err(io)?;
                b.append_link(&mut h, &rel_child, target).map_err(io)?;
            }
            libc::S_IFCHR if st.st_rdev == 0 => {
                empty_entry(b, &whiteout_name()).map_err(io)?;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let kind = match st.st_mode & libc::S_IFMT {
                    libc::S_IFCHR => T::Char,
                    libc::S_IFBLK => T::Block,
                    _ => T::Fifo,
                };
                let mut h = header(&st, kind).map_err(io)?;
                b.append_data(&mut h, &rel_child, std::io::empty())
                    .map_err(io)?;
            }
            // Sockets have no archive form (tar's append_path skips them too).
            _ => {}
        }
    }
    Ok(())
}

fn empty_entry<W: Write>(b: &mut tar::Builder<W>, path: &Path) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, path, std::io::empty())
}

/// Host owner of a file, for callers that need to check a commit's content.
pub fn owner(p: &Path) -> Option<(u32, u32)> {
    fs::symlink_metadata(p).ok().map(|m| (m.uid(), m.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::union::{make_whiteout, set_opaque};
    use std::ffi::OsStr;

    #[test]
    fn lists_and_exports() {
        let base = std::env::temp_dir().join(format!("nook-diff-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (low, up) = (base.join("low"), base.join("up"));
        fs::create_dir_all(low.join("etc")).unwrap();
        fs::create_dir_all(low.join("o")).unwrap();
        fs::write(low.join("etc/a"), "a").unwrap();
        fs::write(low.join("gone"), "g").unwrap();
        fs::create_dir_all(up.join("etc")).unwrap();
        fs::create_dir_all(up.join("o")).unwrap();
        set_opaque(&up.join("o")).unwrap();
        fs::write(up.join("etc/a"), "b").unwrap();
        fs::write(up.join("new"), "n").unwrap();
        make_whiteout(&up, OsStr::new("gone")).unwrap();
        let layers = Layers::new(vec![low]).unwrap();
        let c = changes(&up, &layers).unwrap();
        let show: Vec<String> = c
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
            .collect();
        assert_eq!(show, ["C /etc", "C /etc/a", "D /gone", "A /new", "C /o"]);
        let tar = write_layer(&up, Vec::new()).unwrap();
        let mut names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
        assert!(names.contains(&"o/.wh..wh..opq".to_string()), "{names:?}");
        fs::remove_dir_all(&base).unwrap();
    }

    /// A running container flips a directory of its upper layer with a symlink to a
    /// host directory while the layer is committed: no entry ever comes from the host.
    #[test]
    fn a_swapped_directory_never_exports_host_files() {
        use std::os::unix::ffi::OsStrExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let base = std::env::temp_dir().join(format!("nook-diff-swap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (up, host) = (base.join("up"), base.join("host"));
        fs::create_dir_all(up.join("d")).unwrap();
        fs::create_dir_all(&host).unwrap();
        fs::write(up.join("d/own"), "own").unwrap();
        fs::write(host.join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(&host, up.join("alt")).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            let a = std::ffi::CString::new(up.join("d").as_os_str().as_bytes()).unwrap();
            let b = std::ffi::CString::new(up.join("alt").as_os_str().as_bytes()).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: two NUL-terminated paths; RENAME_EXCHANGE swaps them.
                    unsafe {
                        libc::syscall(
                            libc::SYS_renameat2,
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                }
            })
        };
        for _ in 0..300 {
            let Ok(tar) = write_layer(&up, Vec::new()) else {
                continue; // changed while read: refused, which is safe
            };
            let mut archive = tar::Archive::new(&tar[..]);
            for entry in archive.entries().unwrap() {
                let entry = entry.unwrap();
                let path = entry.path().unwrap().into_owned();
                assert!(!path.ends_with("secret"), "exported the host's {path:?}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        fs::remove_dir_all(&base).unwrap();
    }
}
