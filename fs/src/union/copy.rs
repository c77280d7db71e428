//! The copy driver: the layers flattened into one plain directory, the container's root.
//!
//! The last resort when neither overlayfs nor FUSE can be mounted. The flattening itself
//! is `crate::flatten` (shared with the image side): each layer, lowest first, applied
//! onto the destination, whiteouts deleting and opaque directories hiding what lies
//! below. Owners are kept, which needs the caller to run this inside a user namespace
//! with the container's ID map (the rootless crate's `run_in_user_namespace`).
//!
//! The tree is built in `copy.tmp/` and renamed to `copy/` when complete, so an
//! interrupted copy is never mistaken for a finished one; a finished `copy/` is reused
//! (that is how the copy driver's root persists across runs).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::union::{ContainerLayer, Layers, Result, UnionError};

/// Builds (or reuses) the container's flattened root and returns its path.
pub fn prepare(layers: &Layers, container: &ContainerLayer) -> Result<PathBuf> {
    let done = container.copy();
    if done.is_dir() {
        return Ok(done);
    }
    let tmp = container.dir.join("copy.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)
            .map_err(|e| UnionError::io(format!("removing {}", tmp.display()), e))?;
    }
    flatten(layers, &tmp)?;
    fs::rename(&tmp, &done)
        .map_err(|e| UnionError::io(format!("renaming {}", tmp.display()), e))?;
    Ok(done)
}

/// Applies every layer of `layers` onto a fresh directory `dest`: the image side's
/// flattener (`crate::flatten`), which walks both trees through descriptors and never
/// follows a symlink of the layers.
pub fn flatten(layers: &Layers, dest: &Path) -> Result<()> {
    // The container's /: 0755 (the layers' own root entry may change it), not the umask's.
    fs::DirBuilder::new()
        .mode(0o755)
        .create(dest)
        .and_then(|()| fs::set_permissions(dest, fs::Permissions::from_mode(0o755)))
        .map_err(|e| UnionError::io(format!("creating {}", dest.display()), e))?;
    crate::flatten::flatten(&layers.lower, dest)
        .map_err(|e| UnionError::io(format!("copying the layers into {}", dest.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::union::{make_whiteout, set_opaque};
    use std::ffi::OsStr;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn whiteouts_opaque_and_links() {
        let base = std::env::temp_dir().join(format!("nook-copy-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (l1, l2, out) = (base.join("l1"), base.join("l2"), base.join("out"));
        fs::create_dir_all(l1.join("d/sub")).unwrap();
        fs::create_dir_all(l1.join("o")).unwrap();
        fs::write(l1.join("d/sub/x"), "x").unwrap();
        fs::write(l1.join("o/old"), "old").unwrap();
        fs::write(l1.join("gone"), "g").unwrap();
        fs::write(l1.join("h1"), "h").unwrap();
        fs::hard_link(l1.join("h1"), l1.join("h2")).unwrap();
        fs::create_dir_all(l2.join("o")).unwrap();
        set_opaque(&l2.join("o")).unwrap();
        fs::write(l2.join("o/new"), "new").unwrap();
        make_whiteout(&l2, OsStr::new("gone")).unwrap();
        fs::write(
            l2.join("d/sub/x").parent().map(|_| l2.join("top")).unwrap(),
            "t",
        )
        .unwrap();
        let layers = Layers::new(vec![l1, l2]).unwrap();
        flatten(&layers, &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("d/sub/x")).unwrap(), "x");
        assert!(!out.join("gone").exists());
        assert!(!out.join("o/old").exists());
        assert_eq!(fs::read_to_string(out.join("o/new")).unwrap(), "new");
        assert_eq!(fs::metadata(out.join("h1")).unwrap().nlink(), 2);
        assert_eq!(fs::read_to_string(out.join("top")).unwrap(), "t");
        fs::remove_dir_all(&base).unwrap();
    }
}
