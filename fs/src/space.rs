//! Running out of disk space: the one error a user can fix only if told how much was
//! needed, how much is free, and where. `No space left on device` alone says none of it.
//!
//! The store (blobs), the unpacker (layers) and the copy driver (a container's copy of
//! its image) turn ENOSPC and EDQUOT into [`NoSpace`]: what was being written, the
//! filesystem it went to, the bytes it needed (the blob's size; a layer's or an image's
//! size unpacked, counted when the write failed) and the bytes free there once the
//! partial result is gone.

use std::io;
use std::path::{Path, PathBuf};

/// Whether `e` means the filesystem (or the user's quota on it) is full.
/// (By errno: the matching `io::ErrorKind`s are newer than nook's minimum Rust; an error
/// that wraps one must keep its errno, as `flatten` does.)
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

fn is_quota(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EDQUOT)
}

/// Bytes an unprivileged writer may still use on the filesystem that holds `path` (or
/// its nearest existing ancestor).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let at = path.ancestors().find(|a| a.exists())?;
    let st = nix::sys::statvfs::statvfs(at).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// `n` bytes for a person: decimal units, three significant digits ("420 MB", "1.25 GB").
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 999.5 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if v >= 99.95 {
        format!("{v:.0} {}", UNITS[unit])
    } else if v >= 9.995 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// A write that found its filesystem full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct NoSpace {
    /// What was being written ("storing layer sha256:…", "unpacking the image's layers").
    pub what: String,
    /// Where, in words and path ("the image store /home/a/.local/share/nook").
    pub place: String,
    /// A directory on that filesystem, for [`free_bytes`].
    pub path: PathBuf,
    /// Bytes the whole write needed, when known.
    pub needed: Option<u64>,
    /// `needed` is only what the write had got to (its source's size is unknown: a pipe).
    pub at_least: bool,
    /// Bytes free there when the error was made (the partial result removed).
    pub free: Option<u64>,
    /// EDQUOT: the user's quota, not the filesystem, is full.
    pub quota: bool,
    /// What the user can do.
    pub fix: String,
}

impl NoSpace {
    /// For the error `e` (which [`is_no_space`]) while writing `what` to `path`.
    pub fn new(
        e: &io::Error,
        what: impl Into<String>,
        place: impl Into<String>,
        path: &Path,
        fix: impl Into<String>,
    ) -> NoSpace {
        NoSpace {
            what: what.into(),
            place: place.into(),
            path: path.to_path_buf(),
            needed: None,
            at_least: false,
            free: free_bytes(path),
            quota: is_quota(e),
            fix: fix.into(),
        }
    }

    /// With the size the whole write needed.
    pub fn needing(mut self, bytes: u64) -> NoSpace {
        self.needed = Some(bytes);
        self.at_least = false;
        self
    }

    /// With the bytes the write had got to when it failed, where the whole is unknown.
    pub fn needing_more_than(mut self, bytes: u64) -> NoSpace {
        if self.needed.is_none() || self.at_least {
            self.needed = Some(bytes);
            self.at_least = true;
        }
        self
    }

    /// Measures the free space again (after the partial result was removed).
    pub fn measure(mut self) -> NoSpace {
        self.free = free_bytes(&self.path);
        self
    }

    fn message(&self) -> String {
        let full = if self.quota {
            "your disk quota is used up on"
        } else {
            "no space left on the filesystem of"
        };
        let about = if self.at_least { "more than" } else { "about" };
        let sizes = match (self.needed, self.free) {
            (Some(n), Some(f)) => format!(" (needs {about} {}, {} free)", human(n), human(f)),
            (Some(n), None) => format!(" (needs {about} {})", human(n)),
            (None, Some(f)) => format!(" ({} free)", human(f)),
            (None, None) => String::new(),
        };
        format!("{}: {full} {}{sizes}; {}", self.what, self.place, self.fix)
    }
}

/// The fix for a full image store.
pub const STORE_FIX: &str = "make room there, or keep the store on a larger filesystem with \
     --root DIR (or NOOK_ROOT)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1000), "1.00 kB");
        assert_eq!(human(203_796_000), "204 MB");
        assert_eq!(human(12_345_678), "12.3 MB");
        assert_eq!(human(1_250_000_000), "1.25 GB");
        assert_eq!(human(999_999), "1.00 MB");
    }

    #[test]
    fn the_message_says_what_where_how_much_and_what_to_do() {
        let enospc = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_no_space(&enospc));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EIO)));
        let mut e = NoSpace::new(
            &enospc,
            "storing the tarball",
            "the image store /s",
            Path::new("/"),
            STORE_FIX,
        )
        .needing(420_000_000);
        e.free = Some(12_300_000);
        let text = e.to_string();
        assert_eq!(
            text,
            "storing the tarball: no space left on the filesystem of the image store /s \
             (needs about 420 MB, 12.3 MB free); make room there, or keep the store on a \
             larger filesystem with --root DIR (or NOOK_ROOT)"
        );
        assert!(
            !text.contains("os error"),
            "the errno text adds nothing here"
        );
        let quota = NoSpace::new(
            &io::Error::from_raw_os_error(libc::EDQUOT),
            "x",
            "y",
            Path::new("/nonexistent/below"),
            "z",
        );
        assert!(quota.to_string().contains("quota"));
        assert!(
            quota.free.is_some(),
            "measured at the nearest existing ancestor"
        );
        let mut piped =
            NoSpace::new(&enospc, "x", "y", Path::new("/"), "z").needing_more_than(2_000_000);
        piped.free = Some(0);
        assert!(
            piped
                .to_string()
                .contains("(needs more than 2.00 MB, 0 B free)"),
            "{piped}"
        );
        assert!(!piped.needing(3_000_000).at_least);
    }
}
