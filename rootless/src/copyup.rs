//! `tmpcopyup`: a new tmpfs starts with a copy of what the image has at its mount point.
//!
//! podman asks for it on every tmpfs it adds (`--tmpfs`, `--mount type=tmpfs`, the
//! /run, /tmp and /var/tmp of `--read-only`, the systemd mode's /run and /var/log/journal),
//! so an image's own /run/lock or /var/tmp content is still there on the tmpfs; runc and
//! crun implement it. The tree below the mount point is read before the tmpfs hides it,
//! through a descriptor opened on it first (a directory descriptor keeps reaching the
//! covered directory), and copied into the tmpfs's root with owners, modes and times.
//!
//! The source is the image's (untrusted) content: every entry is opened relative to its
//! directory's descriptor with `O_NOFOLLOW`, so a symlink is copied as a symlink and
//! never followed, and a directory swapped for a symlink mid-copy (by a process writing
//! into a `--rootfs` tree) fails the copy instead of leading it elsewhere. Device nodes
//! cannot be made in a user namespace and are left out (an image's /dev content is
//! never copied: /dev is nook's own tmpfs). Hard links become separate copies and
//! extended attributes are not copied, as in crun.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Deeper trees are refused: each level holds two descriptors while it is copied.
const MAX_DEPTH: usize = 128;

/// Copies the content of the directory `src` into the directory `dst` (both open,
/// `O_RDONLY|O_DIRECTORY`). `dst` itself gets `src`'s owner, mode and times unless the
/// mount options set them (`keep_root_mode`, `keep_root_owner`).
pub(crate) fn copy_up(
    src: &OwnedFd,
    dst: &OwnedFd,
    keep_root_mode: bool,
    keep_root_owner: bool,
) -> io::Result<()> {
    copy_dir(src, dst, 0)?;
    let st = nook_at::fstatat(src.as_raw_fd(), c"", libc::AT_EMPTY_PATH)?;
    if !keep_root_owner {
        nook_at::chown_at(dst.as_raw_fd(), c"", st.st_uid, st.st_gid)?;
    }
    if !keep_root_mode {
        nook_at::fchmod(dst.as_raw_fd(), st.st_mode & 0o7777)?;
    }
    set_times(dst.as_raw_fd(), c"", &st)
}

fn copy_dir(src: &OwnedFd, dst: &OwnedFd, depth: usize) -> io::Result<()> {
    if depth >= MAX_DEPTH {
        return Err(io::Error::other(format!(
            "directories nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    for name in nook_at::read_dir_names(src)? {
        let st = nook_at::fstatat(s, &name, libc::AT_SYMLINK_NOFOLLOW)?;
        let what = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("{}: {e}", String::from_utf8_lossy(name.to_bytes())),
            )
        };
        copy_entry(s, d, &name, &st, depth).map_err(what)?;
    }
    Ok(())
}

fn copy_entry(s: RawFd, d: RawFd, name: &CStr, st: &libc::stat, depth: usize) -> io::Result<()> {
    let nofollow = libc::O_NOFOLLOW;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            let sub = nook_at::openat(s, name, libc::O_RDONLY | libc::O_DIRECTORY | nofollow, 0)?;
            nook_at::mkdirat(d, name, 0o700)?;
            let dsub = nook_at::openat(d, name, libc::O_RDONLY | libc::O_DIRECTORY | nofollow, 0)?;
            copy_dir(&sub, &dsub, depth + 1)?;
            finish(dsub.as_raw_fd(), c"", st, true)
        }
        libc::S_IFREG => {
            let from = nook_at::openat(s, name, libc::O_RDONLY | nofollow, 0)?;
            let to = nook_at::openat(
                d,
                name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | nofollow,
                0o600,
            )?;
            let mut to = std::fs::File::from(to);
            // std's copy uses copy_file_range / sendfile between two files.
            io::copy(&mut std::fs::File::from(from), &mut to)?;
            finish(to.as_raw_fd(), c"", st, true)
        }
        libc::S_IFLNK => {
            let target = nook_at::readlinkat(s, name)?;
            nook_at::symlinkat(&nook_at::cstr(&target)?, d, name)?;
            finish(d, name, st, false)
        }
        libc::S_IFIFO | libc::S_IFSOCK => {
            nook_at::mknodat(d, name, st.st_mode & libc::S_IFMT | 0o600, 0)?;
            finish(d, name, st, false)
        }
        // Device nodes: mknod needs privilege a user namespace does not give.
        _ => Ok(()),
    }
}

/// Owner, mode (not for symlinks) and times of `st` onto `name` in `dir` (or `dir`
/// itself with an empty name; `open` says it is an open descriptor of its own).
fn finish(dir: RawFd, name: &CStr, st: &libc::stat, open: bool) -> io::Result<()> {
    // An owner that is not mapped in the container (seen as the overflow ID) cannot be
    // given: the copy stays the container root's.
    nook_at::chown_at(dir, name, st.st_uid, st.st_gid)?;
    let kind = st.st_mode & libc::S_IFMT;
    if open {
        // After the chown, which clears the set-ID bits.
        nook_at::fchmod(dir, st.st_mode & 0o7777)?;
    } else if kind != libc::S_IFLNK {
        // SAFETY: `name` is NUL-terminated (a FIFO or socket just made, not a symlink).
        let r = unsafe { libc::fchmodat(dir, name.as_ptr(), st.st_mode & 0o7777, 0) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    set_times(dir, name, st)
}

/// atime and mtime of `st`, to the nanosecond, not following a symlink.
fn set_times(dir: RawFd, name: &CStr, st: &libc::stat) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ];
    let r = if name.is_empty() {
        // SAFETY: `times` holds two valid timespecs; `dir` is an open descriptor.
        unsafe { libc::futimens(dir, times.as_ptr()) }
    } else {
        // SAFETY: `name` is NUL-terminated and `times` holds two valid timespecs.
        unsafe {
            libc::utimensat(
                dir,
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        }
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("nook-copyup-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir(&p).unwrap();
            Scratch(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn copies_a_tree_without_following_symlinks() {
        let src = Scratch::new("src1");
        let dst = Scratch::new("dst1");
        let p = src.path();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/b/f"), b"content").unwrap();
        std::fs::set_permissions(p.join("a/b"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(p.join("a/b/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        symlink("/etc/passwd", p.join("link")).unwrap();
        nix::unistd::mkfifo(
            &p.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let open = |d: &Path| nook_at::open_dir(d).unwrap();
        copy_up(&open(p), &open(dst.path()), false, false).unwrap();
        let q = dst.path();
        assert_eq!(std::fs::read(q.join("a/b/f")).unwrap(), b"content");
        let mode = |path: &Path| std::fs::symlink_metadata(path).unwrap().mode();
        assert_eq!(
            mode(&q.join("a/b")) & 0o7777,
            0o777,
            "mode kept, umask or not"
        );
        assert_eq!(mode(&q.join("a/b/f")) & 0o7777, 0o640);
        assert_eq!(mode(q) & 0o7777, 0o1777, "the root takes the source's mode");
        assert_eq!(
            std::fs::read_link(q.join("link")).unwrap(),
            Path::new("/etc/passwd"),
            "a symlink is copied as a symlink"
        );
        assert_eq!(mode(&q.join("fifo")) & libc::S_IFMT, libc::S_IFIFO);
        let mtime = |path: &Path| std::fs::metadata(path).unwrap().mtime_nsec();
        assert_eq!(mtime(&q.join("a/b/f")), mtime(&p.join("a/b/f")));
    }

    #[test]
    fn the_root_keeps_the_options_mode() {
        let src = Scratch::new("src2");
        let dst = Scratch::new("dst2");
        std::fs::set_permissions(src.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dst.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let open = |d: &Path| nook_at::open_dir(d).unwrap();
        copy_up(&open(src.path()), &open(dst.path()), true, true).unwrap();
        let mode = std::fs::metadata(dst.path()).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }
}
