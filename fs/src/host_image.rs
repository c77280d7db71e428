//! The built-in `host` image: the host's own programs and libraries, read-only, on a
//! fresh writable root.
//!
//! Nothing is copied or downloaded. The container root is a new tmpfs; the host's
//! /usr, /bin, /sbin, /lib*, /etc are bound read-only into it, and /tmp, /run, /var/tmp
//! are fresh tmpfs mounts, so what the container writes never reaches the host. A
//! merged-/usr host's `/bin -> usr/bin` is bound through the link (the container sees a
//! directory with the same content).

use std::path::{Path, PathBuf};

/// The name users type: `nook run host CMD`.
pub const NAME: &str = "host";

/// Host directories the image shows read-only, in mount order.
const SHARED_DIRS: [&str; 8] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// A writable scratch directory of the image.
pub struct ScratchDir {
    pub path: &'static str,
    pub mode: u32,
}

/// Fresh, writable, empty at every start.
pub const SCRATCH_DIRS: [ScratchDir; 3] = [
    ScratchDir {
        path: "/tmp",
        mode: 0o1777,
    },
    ScratchDir {
        path: "/run",
        mode: 0o755,
    },
    ScratchDir {
        path: "/var/tmp",
        mode: 0o1777,
    },
];

/// The host directories to bind read-only: those of `SHARED_DIRS` that exist here.
pub fn shared_dirs() -> Vec<PathBuf> {
    shared_dirs_under(Path::new("/"))
}

fn shared_dirs_under(host_root: &Path) -> Vec<PathBuf> {
    SHARED_DIRS
        .iter()
        .map(|d| PathBuf::from(*d))
        .filter(|d| host_root.join(d.strip_prefix("/").unwrap_or(d)).is_dir())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_existing_directories() {
        let dirs = shared_dirs();
        assert!(dirs.contains(&PathBuf::from("/usr")));
        assert!(dirs.contains(&PathBuf::from("/etc")));
        assert!(dirs.iter().all(|d| d.is_dir()));
    }

    #[test]
    fn nothing_under_an_empty_root() {
        let empty = std::env::temp_dir().join(format!("nook-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        assert!(shared_dirs_under(&empty).is_empty());
        std::fs::remove_dir(&empty).unwrap();
    }
}
