//! A container's changes, read from its upper layer: `nook diff` and `nook commit`.
//!
//! [`changes`] lists what the upper layer adds (A), changes (C) and deletes (D)
//! relative to the read-only layers below, as `podman diff` prints them. [`write_layer`]
//! turns the upper layer into an OCI layer tarball: whiteouts (device or xattr form)
//! become `.wh.NAME` entries and an opaque directory gets `.wh..wh..opq`, the inverse
//! of what the unpacker does.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::union::{is_opaque, is_whiteout, Layers, Result, UnionError};

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
pub fn write_layer<W: Write>(upper: &Path, w: W) -> Result<W> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    add_dir(&mut b, upper, Path::new(""))?;
    b.into_inner()
        .map_err(|e| UnionError::io("finishing the layer tar", e))
}

fn add_dir<W: Write>(b: &mut tar::Builder<W>, upper: &Path, rel: &Path) -> Result<()> {
    let dir = upper.join(rel);
    let io = |e: std::io::Error| UnionError::io(dir.display().to_string(), e);
    if !rel.as_os_str().is_empty() && is_opaque(&dir) {
        empty_entry(b, &rel.join(".wh..wh..opq")).map_err(io)?;
    }
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(io)?
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel_child = rel.join(e.file_name());
        let m = fs::symlink_metadata(&p).map_err(io)?;
        if is_whiteout(&p, &m) {
            let mut name = std::ffi::OsString::from(".wh.");
            name.push(e.file_name());
            empty_entry(b, &rel.join(name)).map_err(io)?;
            continue;
        }
        b.append_path_with_name(&p, &rel_child).map_err(io)?;
        if m.is_dir() {
            add_dir(b, upper, &rel_child)?;
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
}
