//! The logger of a detached container: a process forked by its supervisor that owns the
//! read ends of the container's stdout and stderr pipes and the write end of its stdin.
//!
//! Every chunk of output becomes log entries (k8s-file: `TIME STREAM F|P TEXT`, as
//! podman writes; json-file: docker's `{"log","stream","time"}`) in `ctr.log`, rotated to
//! `ctr.log.1` past `--log-opt max-size`, and goes to every client attached on the unix
//! socket as a frame `[stream: u8][length: u32 BE][bytes]`. Bytes a client sends go to the
//! container's stdin (when it was created with -i). A client that cannot keep up is
//! dropped rather than allowed to stall the container's output.
//!
//! `nook logs -f` is served on a second socket, `logs.sock`, so that rotation cannot
//! lose its lines (a follower of the files alone cannot tell how many files were
//! rotated away while it slept, and the logger keeps one rotated file only). A
//! follower gets, at once, read-only descriptors of the rotated and the current file
//! and the current file's length then (its history: what it reads through them, whatever
//! is renamed or deleted later), and from then on every log line the logger writes, in
//! frames, as written to the file. The logger is one thread: nothing falls between the
//! two. What a follower has not taken yet waits in memory, at most
//! [`FOLLOWER_BACKLOG`]; past that the follower is dropped and says so.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::request::LogDriver;

use super::record::Container;

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// Follower frames (logs.sock): log lines as written to the file, and the end (the
/// container's output is over; nothing more will come).
pub const FRAME_LINES: u8 = b'L';
pub const FRAME_END: u8 = b'E';
/// Log bytes a follower may be behind before it is dropped.
const FOLLOWER_BACKLOG: usize = 16 << 20;
const MAX_FOLLOWERS: usize = 16;
/// How long the last lines may take to reach the followers once the output is over.
const FOLLOWER_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// The follower socket beside the attach socket.
pub fn logs_socket(attach_socket: &Path) -> PathBuf {
    attach_socket.with_file_name("logs.sock")
}

/// Forks the logger and makes this process's fds 0/1/2 the container's pipes.
/// `first_client` is attached before any output is read (`nook start -a`: nothing the
/// container prints is missed).
/// Returns the logger's pid. The logger keeps none of the supervisor's other descriptors:
/// not the pipe to the starting command (`ready`), nor those `run -d` hands to the
/// container (a caller's socket or pipe must close when the container closes it).
pub fn start(
    ctr: &Container,
    socket: &Path,
    ready: &OwnedFd,
    first_client: Option<UnixStream>,
) -> Result<i32> {
    let (out_r, out_w) = nix::unistd::pipe().context("pipe")?;
    let (err_r, err_w) = nix::unistd::pipe().context("pipe")?;
    let (in_r, in_w) = nix::unistd::pipe().context("pipe")?;
    let _ = std::fs::remove_file(socket);
    let listener = bind_short(socket)
        .with_context(|| format!("creating the attach socket {}", socket.display()))?;
    let follow_socket = logs_socket(socket);
    let _ = std::fs::remove_file(&follow_socket);
    let follow_listener = bind_short(&follow_socket)
        .with_context(|| format!("creating the log socket {}", follow_socket.display()))?;
    follow_listener
        .set_nonblocking(true)
        .context("the log socket")?;
    let log = LogWriter::open(ctr)?;
    let interactive = ctr.record.request.interactive;
    // SAFETY: this process is single-threaded here (the supervisor starts no thread
    // before this point), so the child may go on with ordinary Rust code.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            drop((out_w, err_w, in_r));
            let mut keep = vec![
                0,
                1,
                2,
                out_r.as_raw_fd(),
                err_r.as_raw_fd(),
                in_w.as_raw_fd(),
                listener.as_raw_fd(),
                follow_listener.as_raw_fd(),
            ];
            keep.extend(log.file.as_ref().map(|f| f.as_raw_fd()));
            keep.extend(first_client.as_ref().map(|c| c.as_raw_fd()));
            debug_assert!(!keep.contains(&ready.as_raw_fd()));
            nook_rootless::fds::close_all_except(&keep);
            detach_stdio();
            let mut logger = Logger {
                out: Some(File::from(out_r)),
                err: Some(File::from(err_r)),
                input: interactive.then(|| File::from(in_w)),
                listener,
                clients: Vec::new(),
                follow_listener,
                followers: Vec::new(),
                log,
            };
            if let Some(conn) = first_client {
                let _ = conn.set_nonblocking(true);
                logger.clients.push(Client {
                    conn,
                    reading: true,
                });
            }
            logger.run();
            logger.end_followers();
            // SAFETY: _exit ends the forked child without the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            for (fd, target) in [(&in_r, 0), (&out_w, 1), (&err_w, 2)] {
                nix::unistd::dup2(fd.as_raw_fd(), target).context("dup2")?;
            }
            Ok(child.as_raw())
        }
    }
}

/// A unix socket path is limited to 107 bytes, and `$XDG_RUNTIME_DIR/nook/containers/
/// <64 hex>/attach.sock` can be longer: the directory is reached through a descriptor
/// (`/proc/self/fd/N/attach.sock`), which is short whatever the directory's path.
pub fn short_socket_path(socket: &Path) -> std::io::Result<(File, PathBuf)> {
    let dir = File::open(socket.parent().unwrap_or(Path::new(".")))?;
    let name = socket.file_name().unwrap_or_default();
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    Ok((dir, short))
}

fn bind_short(socket: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, short) = short_socket_path(socket)?;
    let listener = UnixListener::bind(&short)?;
    // bind(2) gives the socket 0777 less the umask; connecting needs write permission.
    // Its directory is private already; the socket is too, whatever the umask.
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The connection, if its peer runs as this account. The socket's directory is private
/// (0700), so no one else can reach it; should its modes ever be opened up, another
/// account's process still gets neither the container's output nor its stdin.
fn own(conn: UnixStream) -> Option<UnixStream> {
    let peer = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials);
    (peer.ok()?.uid() == nix::unistd::getuid().as_raw()).then_some(conn)
}

/// Connects to a socket made by [`bind_short`].
pub fn connect_short(socket: &Path) -> std::io::Result<UnixStream> {
    let (_dir, short) = short_socket_path(socket)?;
    UnixStream::connect(short)
}

/// Lets the logger finish: closes this process's ends of the pipes (fds 0/1/2), then
/// waits until the logger has written the last output and exited (bounded: a process
/// that escaped the container could hold a pipe open).
pub fn finish(logger: i32) {
    detach_stdio();
    let pidfd = super::record::ProcessId::of(logger).and_then(super::record::ProcessId::pidfd);
    if let Some(pidfd) = pidfd {
        pidfd.wait(Some(std::time::Duration::from_secs(5)));
    }
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(logger),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

fn detach_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for target in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), target);
        }
    }
}

struct Logger {
    out: Option<File>,
    err: Option<File>,
    input: Option<File>,
    listener: UnixListener,
    clients: Vec<Client>,
    follow_listener: UnixListener,
    followers: Vec<Follower>,
    log: LogWriter,
}

/// A `nook logs -f` client: the frames it has not taken yet.
struct Follower {
    conn: UnixStream,
    pending: Vec<u8>,
}

/// An attached client; `reading` until it has closed its sending side.
struct Client {
    conn: UnixStream,
    reading: bool,
}

impl Logger {
    fn run(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        while self.out.is_some() || self.err.is_some() {
            let mut fds = Vec::new();
            let streams = [(STDOUT, self.out.as_ref()), (STDERR, self.err.as_ref())];
            for (_, f) in streams.iter() {
                if let Some(f) = f {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                }
            }
            let first_client = fds.len() + 1;
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for c in self.clients.iter().filter(|c| c.reading) {
                fds.push(PollFd::new(c.conn.as_fd(), PollFlags::POLLIN));
            }
            let follow_at = fds.len();
            fds.push(PollFd::new(self.follow_listener.as_fd(), PollFlags::POLLIN));
            for f in &self.followers {
                // Room for what waits; else only their hang-up (they send nothing).
                let want = if f.pending.is_empty() {
                    PollFlags::POLLIN
                } else {
                    PollFlags::POLLOUT
                };
                fds.push(PollFd::new(f.conn.as_fd(), want));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
                Ok(_) => {}
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|e| !e.is_empty()))
                .collect();
            drop(fds);
            let mut i = 0;
            for stream in [STDOUT, STDERR] {
                let slot = if stream == STDOUT {
                    &mut self.out
                } else {
                    &mut self.err
                };
                if slot.is_none() {
                    continue;
                }
                if ready[i] {
                    let n = slot.as_mut().map_or(0, |f| f.read(&mut buf).unwrap_or(0));
                    if n == 0 {
                        *slot = None;
                    } else {
                        let lines = self.log.write(stream, &buf[..n]);
                        self.queue_for_followers(&lines);
                        self.broadcast(stream, &buf[..n]);
                    }
                }
                i += 1;
            }
            if ready[i] {
                if let Some(conn) = self.listener.accept().ok().and_then(|(c, _)| own(c)) {
                    let _ = conn.set_nonblocking(true);
                    self.clients.push(Client {
                        conn,
                        reading: true,
                    });
                }
            }
            let polled_followers = ready[follow_at + 1..].to_vec();
            self.pump_clients(&ready[first_client..follow_at], &mut buf);
            self.serve_followers(ready[follow_at], &polled_followers);
        }
    }

    /// New followers get their history; the others get what waits for them.
    /// `polled`: which followers had an event, in the order they were polled.
    fn serve_followers(&mut self, listening: bool, polled: &[bool]) {
        let mut polled = polled.iter().copied();
        self.followers.retain_mut(|f| {
            let event = polled.next().unwrap_or(false);
            if event && f.pending.is_empty() {
                // They send nothing: readable means gone.
                let mut byte = [0u8; 1];
                return matches!(f.conn.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            }
            flush_follower(f)
        });
        // Newcomers after the others: a newcomer's history is what the file holds now,
        // and nothing written before it is queued for it.
        if !listening {
            return;
        }
        while let Ok((conn, _)) = self.follow_listener.accept() {
            let Some(conn) = own(conn) else {
                continue;
            };
            if self.followers.len() >= MAX_FOLLOWERS || self.log.file.is_none() {
                continue;
            }
            if self.log.send_history(&conn).is_ok() && conn.set_nonblocking(true).is_ok() {
                self.followers.push(Follower {
                    conn,
                    pending: Vec::new(),
                });
            }
        }
    }

    /// `lines`, as written to the log, for every follower; one that is too far behind
    /// is dropped (it sees its socket end without the end frame).
    fn queue_for_followers(&mut self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        self.followers.retain_mut(|f| {
            if f.pending.len() + lines.len() > FOLLOWER_BACKLOG {
                return false;
            }
            f.pending.push(FRAME_LINES);
            f.pending
                .extend_from_slice(&(lines.len() as u32).to_be_bytes());
            f.pending.extend_from_slice(lines);
            flush_follower(f)
        });
    }

    /// The output is over: the followers get what waits for them (for a little while)
    /// and the end frame.
    fn end_followers(&mut self) {
        let deadline = std::time::Instant::now() + FOLLOWER_FLUSH;
        for f in &mut self.followers {
            f.pending.push(FRAME_END);
            f.pending.extend_from_slice(&0u32.to_be_bytes());
            while !f.pending.is_empty() && flush_follower(f) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(f.conn.as_fd(), PollFlags::POLLOUT)];
                if f.pending.is_empty()
                    || ms == 0
                    || poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) == 0
                {
                    break;
                }
            }
        }
        self.followers.clear();
    }

    fn broadcast(&mut self, stream: u8, data: &[u8]) {
        let mut frame = Vec::with_capacity(data.len() + 5);
        frame.push(stream);
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        self.clients
            .retain_mut(|c| write_all_nonblocking(&mut c.conn, &frame));
    }

    /// Input from the clients that are `reading`, in the order they were polled.
    fn pump_clients(&mut self, ready: &[bool], buf: &mut [u8]) {
        let mut polled = ready.iter().copied();
        self.clients.retain_mut(|c| {
            if !c.reading || !polled.next().unwrap_or(false) {
                return true;
            }
            match c.conn.read(buf) {
                // Done sending; it still receives the output.
                Ok(0) => c.reading = false,
                Ok(n) => {
                    if let Some(input) = &mut self.input {
                        let _ = input.write_all(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
            true
        });
    }
}

/// Writes `frame` to a non-blocking client, waiting a little for room; false when the
/// client is gone or too slow (it is then dropped).
fn write_all_nonblocking(c: &mut UnixStream, frame: &[u8]) -> bool {
    let mut done = 0;
    while done < frame.len() {
        match c.write(&frame[done..]) {
            Ok(0) => return false,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(c.as_fd(), PollFlags::POLLOUT)];
                if poll(&mut fds, PollTimeout::from(1000u16)).unwrap_or(0) == 0 {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Writes what `f.pending` holds as far as the socket takes it now; false when the
/// follower is gone.
fn flush_follower(f: &mut Follower) -> bool {
    let mut done = 0;
    while done < f.pending.len() {
        match f.conn.write(&f.pending[done..]) {
            Ok(0) => return false,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    f.pending.drain(..done);
    true
}

/// The log file in the container's format, rotated by size.
struct LogWriter {
    file: Option<File>,
    path: PathBuf,
    json: bool,
    max: Option<u64>,
    written: u64,
}

impl LogWriter {
    fn open(ctr: &Container) -> Result<LogWriter> {
        let path = ctr.log_path();
        let file = match ctr.record.request.log_driver {
            LogDriver::None => None,
            LogDriver::K8sFile | LogDriver::JsonFile => Some(open_append(&path)?),
        };
        let written = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Ok(LogWriter {
            file,
            path,
            json: ctr.record.request.log_driver == LogDriver::JsonFile,
            max: ctr.record.request.log_size_max,
            written,
        })
    }

    /// Writes `data` of `stream` as log entries; returns them as written.
    fn write(&mut self, stream: u8, data: &[u8]) -> Vec<u8> {
        if self.file.is_none() {
            return Vec::new();
        }
        let entries = format_entries(self.json, stream, data, SystemTime::now());
        // Line by line, so that no file grows past the limit by more than one line.
        for line in entries.split_inclusive(|&b| b == b'\n') {
            let full = self.written + line.len() as u64;
            if self.max.is_some_and(|m| full > m) && self.written > 0 {
                self.rotate();
            }
            if let Some(f) = &mut self.file {
                if f.write_all(line).is_ok() {
                    self.written += line.len() as u64;
                }
            }
        }
        entries
    }

    /// A follower's history, sent on `conn` in one message: `H`, the number of files, the
    /// current file's length now (u64 BE), and read-only descriptors of the rotated
    /// file (when there is one) and the current one. Opened by path: only this process
    /// renames them.
    fn send_history(&self, conn: &UnixStream) -> std::io::Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let rotated = File::open(self.path.with_extension("log.1")).ok();
        let current = File::open(&self.path)?;
        let files: Vec<std::os::fd::RawFd> = rotated
            .iter()
            .chain([&current])
            .map(|f| f.as_raw_fd())
            .collect();
        let mut hello = vec![b'H', files.len() as u8];
        hello.extend_from_slice(&self.written.to_be_bytes());
        sendmsg::<()>(
            conn.as_raw_fd(),
            &[std::io::IoSlice::new(&hello)],
            &[ControlMessage::ScmRights(&files)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(std::io::Error::from)?;
        Ok(())
    }

    fn rotate(&mut self) {
        let old = self.path.with_extension("log.1");
        if std::fs::rename(&self.path, old).is_ok() {
            if let Ok(f) = open_append(&self.path) {
                self.file = Some(f);
                self.written = 0;
            }
        }
    }
}

fn open_append(path: &Path) -> Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = nook_rootless::state::PRIVATE_FILE;
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("opening the container's log {}", path.display()))?;
    // A log kept from an older nook may be wider: the container's output is private.
    let _ = f.set_permissions(std::fs::Permissions::from_mode(mode));
    Ok(f)
}

/// One chunk of a stream as log lines: each complete line an `F` entry, a trailing
/// partial line a `P` entry (json-file: the text without its newline).
pub fn format_entries(json: bool, stream: u8, data: &[u8], at: SystemTime) -> Vec<u8> {
    let time = humantime::format_rfc3339_nanos(at).to_string();
    let name = if stream == STDERR { "stderr" } else { "stdout" };
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut rest = data;
    while !rest.is_empty() {
        let (line, full, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        if json {
            let mut text = String::from_utf8_lossy(line).into_owned();
            if full {
                text.push('\n');
            }
            let entry = serde_json::json!({"log": text, "stream": name, "time": time});
            out.extend_from_slice(entry.to_string().as_bytes());
        } else {
            let tag = if full { "F" } else { "P" };
            out.extend_from_slice(format!("{time} {name} {tag} ").as_bytes());
            out.extend_from_slice(line);
        }
        out.push(b'\n');
        rest = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k8s_file_lines_full_and_partial() {
        let t = SystemTime::UNIX_EPOCH;
        let out = format_entries(false, STDOUT, b"one\ntwo", t);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" stdout F one"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout P two"), "{}", lines[1]);
    }

    #[test]
    fn json_file_keeps_the_newline_in_the_text() {
        let out = format_entries(true, STDERR, b"oops\n", SystemTime::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_slice(out.trim_ascii_end()).unwrap();
        assert_eq!(v["log"], "oops\n");
        assert_eq!(v["stream"], "stderr");
    }
}
