//! READ replies spliced from the layer file into /dev/fuse: the file's pages enter a
//! pipe by reference and the kernel copies them once, into the pages of the request,
//! where a reply through fuser costs a pread into a buffer and then a copy of it.
//!
//! fuser has no splice path, so the reply is written here, on a duplicate of the
//! connection's descriptor, and fuser's reply object is then disposed of without
//! answering a second time. A reply must reach the descriptor whose queue holds the
//! request, so the session runs its threads on one descriptor (mod.rs), not on clones.
//! Anything this cannot send (no pipe, a request larger than the pipe, a file that
//! changed size meanwhile) goes back to the caller and takes the ordinary path.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use fuser::ReplyData;

/// What the pipe is asked to hold: a 128 KiB readahead READ (the kernel's usual) and
/// its header, with room to spare; a larger READ takes the ordinary path. Kept small:
/// a pipe's size counts against the user's pipe-user-pages-soft (64 MiB by default)
/// for as long as it exists, and past that every new pipe of the user's, in any
/// program, gets two pages. 256 KiB per request thread is 2 MiB for 8 threads.
const PIPE_SIZE: libc::c_int = 256 << 10;
/// fuse_out_header: len, error, unique.
const HEADER_LEN: usize = 16;

thread_local! {
    /// One pipe per request thread, made at its first READ (None: pipes unavailable).
    static PIPE: RefCell<Option<Option<Pipe>>> = const { RefCell::new(None) };
}

/// Sends READ replies by splice on the connection `dev`.
pub struct SpliceReplies {
    dev: OwnedFd,
}

impl SpliceReplies {
    pub fn new(dev: OwnedFd) -> SpliceReplies {
        SpliceReplies { dev }
    }

    /// Answers READ request `unique` (`size` bytes of `file` at `offset`) with the
    /// data, spliced. Hands `reply` back, unanswered, when it could not.
    pub fn read(
        &self,
        unique: u64,
        file: &File,
        offset: u64,
        size: u32,
        reply: ReplyData,
    ) -> Result<(), ReplyData> {
        let sent = PIPE.with(|cell| {
            let mut cell = cell.borrow_mut();
            let pipe = cell.get_or_insert_with(|| Pipe::new().ok()).as_ref()?;
            send(&self.dev, pipe, unique, file, offset, size).ok()
        });
        match sent {
            Some(()) => {
                // Answered on the device already: dropping `reply` would answer again
                // (fuser sends EIO for a reply dropped unused). What forget leaks is one
                // count on fuser's shared handle of the device, no memory.
                std::mem::forget(reply);
                Ok(())
            }
            None => Err(reply),
        }
    }
}

/// Header, then the file's pages, into the pipe; the whole message into the device.
fn send(
    dev: &OwnedFd,
    pipe: &Pipe,
    unique: u64,
    file: &File,
    offset: u64,
    size: u32,
) -> io::Result<()> {
    let file_size = file.metadata()?.len();
    let len = u64::from(size).min(file_size.saturating_sub(offset));
    if len == 0 || len > pipe.capacity {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let r = (|| {
        write_all(pipe.write.as_raw_fd(), &reply_header(unique, len as u32))?;
        let mut moved = 0u64;
        while moved < len {
            let mut from = (offset + moved) as libc::loff_t;
            // SAFETY: open descriptors; `from` is a valid loff_t the call may advance.
            let n = unsafe {
                libc::splice(
                    file.as_raw_fd(),
                    &mut from,
                    pipe.write.as_raw_fd(),
                    std::ptr::null_mut(),
                    (len - moved) as usize,
                    libc::SPLICE_F_NONBLOCK,
                )
            };
            match n {
                n if n > 0 => moved += n as u64,
                // Shorter than it was a moment ago: let the ordinary path answer.
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                _ => return Err(io::Error::last_os_error()),
            }
        }
        let total = HEADER_LEN + len as usize;
        // SAFETY: open descriptors; a pipe and a character device take no offsets.
        let n = unsafe {
            libc::splice(
                pipe.read.as_raw_fd(),
                std::ptr::null_mut(),
                dev.as_raw_fd(),
                std::ptr::null_mut(),
                total,
                0,
            )
        };
        match n {
            n if n >= 0 && n as usize == total => Ok(()),
            n if n < 0 => Err(io::Error::last_os_error()),
            _ => Err(io::Error::from(io::ErrorKind::WriteZero)),
        }
    })();
    if r.is_err() {
        pipe.drain();
    }
    r
}

/// fuse_out_header { len, error: 0, unique } in native byte order.
fn reply_header(unique: u64, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&(HEADER_LEN as u32 + len).to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}

fn write_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: `buf` is valid for reads of its length.
    match unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) } {
        n if n >= 0 && n as usize == buf.len() => Ok(()),
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::from(io::ErrorKind::WriteZero)),
    }
}

/// A pipe, non-blocking at both ends (a full pipe must fail, not wait for a reader
/// that is this same thread).
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// The most data one message may carry: the pipe's size less a page for the
    /// header and one for data that does not start on a page boundary.
    capacity: u64,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just opened both.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on an open pipe; a refused size leaves the default one.
        let size = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let capacity = (size.max(0) as u64).saturating_sub(2 * 4096);
        if capacity == 0 {
            return Err(io::Error::other("pipe too small"));
        }
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Empties the pipe after a failed message, so the next starts with its header.
    fn drain(&self) {
        let mut buf = [0u8; 16 << 10];
        // SAFETY: `buf` is valid for writes of its length; the read end does not block.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_the_kernel_layout() {
        let h = reply_header(0x1234, 4096);
        assert_eq!(u32::from_ne_bytes(h[0..4].try_into().unwrap()), 16 + 4096);
        assert_eq!(i32::from_ne_bytes(h[4..8].try_into().unwrap()), 0);
        assert_eq!(u64::from_ne_bytes(h[8..16].try_into().unwrap()), 0x1234);
    }

    #[test]
    fn a_pipe_holds_a_readahead_request() {
        let pipe = Pipe::new().unwrap();
        assert!(pipe.capacity >= 128 << 10, "capacity {}", pipe.capacity);
    }

    #[test]
    fn a_message_is_the_header_then_the_file_bytes_up_to_its_end() {
        use std::io::Write;
        let mut file = tempfile_in_tmp();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        // Another pipe stands in for /dev/fuse: it takes the message as the device would.
        let device = Pipe::new().unwrap();
        let pipe = Pipe::new().unwrap();
        // Asked for 8 KiB at 3000 of a 10 000-byte file: the 7000 bytes to its end.
        send(&device.write, &pipe, 42, &file, 3000, 8192).unwrap();
        let mut got = vec![0u8; 20_000];
        // SAFETY: `got` is valid for writes of its length; the read end does not block.
        let n = unsafe { libc::read(device.read.as_raw_fd(), got.as_mut_ptr().cast(), got.len()) };
        assert_eq!(n as usize, HEADER_LEN + 7000);
        assert_eq!(got[..HEADER_LEN], reply_header(42, 7000));
        assert_eq!(got[HEADER_LEN..n as usize], data[3000..]);
        // Past the end there is nothing to splice: the ordinary reply answers.
        assert!(send(&device.write, &pipe, 43, &file, 10_000, 4096).is_err());
    }

    fn tempfile_in_tmp() -> File {
        let path = std::env::temp_dir().join(format!("nook-splice-test-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn a_failed_message_leaves_the_pipe_empty() {
        // A "device" that refuses the message: the read end of another pipe.
        let other = Pipe::new().unwrap();
        let pipe = Pipe::new().unwrap();
        let file = File::open("/proc/self/exe").unwrap();
        assert!(send(&other.read, &pipe, 1, &file, 0, 4096).is_err());
        let mut byte = [0u8; 1];
        // SAFETY: a one-byte buffer; the read end does not block.
        let n = unsafe { libc::read(pipe.read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        assert!(n <= 0, "pipe not drained");
    }
}
