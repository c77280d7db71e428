//! Thin syscall wrappers the union drivers share: extended attributes on paths (never
//! following a final symlink), sparse-aware file copies with reflink first, and the
//! NUL-terminated path conversion they all need.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cname(n: &str) -> io::Result<CString> {
    CString::new(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The value of xattr `name` on `path` (not following a final symlink).
pub(crate) fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = cpath(path).ok()?;
    let n = cname(name).ok()?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: p and n are NUL-terminated; buf is writable for buf.len() bytes.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Some(buf);
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || buf.len() > 65536 {
            return None;
        }
        buf.resize(buf.len() * 4, 0);
    }
}

pub(crate) fn has_xattr(path: &Path, name: &str) -> bool {
    let (Ok(p), Ok(n)) = (cpath(path), cname(name)) else {
        return false;
    };
    // SAFETY: NUL-terminated strings; a zero-size query writes nothing.
    unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name)?;
    // SAFETY: NUL-terminated strings; value is readable for value.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies the whole content of `src` to `dst` (both open; `dst` empty): a reflink
/// (FICLONE) where the filesystem shares extents, else copy_file_range over the data
/// segments only (SEEK_DATA/SEEK_HOLE), so sparse files stay sparse; plain read/write
/// when neither is possible. Sets `dst`'s size to `size`.
pub(crate) fn copy_data(src: BorrowedFd, dst: BorrowedFd, size: u64) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
    if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let mut pos: i64 = 0;
    let end = size as i64;
    while pos < end {
        // SAFETY: lseek on an open fd.
        let data = unsafe { libc::lseek(src.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            // SEEK_DATA unsupported: treat everything as data.
            copy_range(src, dst, pos, end - pos)?;
            break;
        }
        // SAFETY: as above.
        let mut hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 || hole > end {
            hole = end;
        }
        copy_range(src, dst, data, hole - data)?;
        pos = hole;
    }
    // SAFETY: ftruncate on an open fd.
    if unsafe { libc::ftruncate(dst.as_raw_fd(), size as i64) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn copy_range(src: BorrowedFd, dst: BorrowedFd, mut off: i64, mut len: i64) -> io::Result<()> {
    let mut fallback = false;
    while len > 0 {
        let chunk = len.min(1 << 30) as usize;
        let n = if fallback {
            copy_rw(src, dst, off, chunk)?
        } else {
            let mut a = off;
            let mut b = off;
            // SAFETY: valid fds and pointers to local offsets.
            let r = unsafe {
                libc::copy_file_range(src.as_raw_fd(), &mut a, dst.as_raw_fd(), &mut b, chunk, 0)
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EXDEV)
                    | Some(libc::ENOSYS)
                    | Some(libc::EINVAL)
                    | Some(libc::EOPNOTSUPP) => {
                        fallback = true;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            r as usize
        };
        if n == 0 {
            break; // the source shrank
        }
        off += n as i64;
        len -= n as i64;
    }
    Ok(())
}

fn copy_rw(src: BorrowedFd, dst: BorrowedFd, off: i64, len: usize) -> io::Result<usize> {
    let mut buf = vec![0u8; len.min(1 << 20)];
    // SAFETY: buf is writable for its length.
    let r = unsafe { libc::pread(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut done = 0usize;
    while done < r as usize {
        // SAFETY: buf[done..r] is initialised and readable.
        let w = unsafe {
            libc::pwrite(
                dst.as_raw_fd(),
                buf[done..].as_ptr().cast(),
                r as usize - done,
                off + done as i64,
            )
        };
        if w < 0 {
            return Err(io::Error::last_os_error());
        }
        done += w as usize;
    }
    Ok(r as usize)
}
