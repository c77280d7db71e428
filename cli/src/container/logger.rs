//! The logger of a detached container: a process forked by its supervisor that owns the
//! read ends of the container's stdout and stderr pipes and the write end of its stdin.
//!
//! Every chunk of output becomes log entries (k8s-file: `TIME STREAM F|P TEXT`, as
//! podman writes; json-file: docker's `{"log","stream","time"}`) in `ctr.log`, rotated to
//! `ctr.log.1` past `--log-opt max-size`, and goes to every client attached on the unix
//! socket as a frame `[stream: u8][length: u32 BE][bytes]`. Bytes a client sends go to the
//! container's stdin (when it was created with -i). A client that cannot keep up is
//! dropped rather than allowed to stall the container's output.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::record::Container;

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

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
    let log = LogWriter::open(ctr)?;
    let interactive = ctr.record.interactive;
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
    let pidfd = super::record::ProcessId::of(logger).and_then(super::lifecycle::PidFd::open);
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
    log: LogWriter,
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
                        self.log.write(stream, &buf[..n]);
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
            self.pump_clients(&ready[first_client..], &mut buf);
        }
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
        let file = match ctr.record.log_driver.as_str() {
            "none" => None,
            _ => Some(open_append(&path)?),
        };
        let written = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Ok(LogWriter {
            file,
            path,
            json: ctr.record.log_driver == "json-file",
            max: ctr.record.log_size_max,
            written,
        })
    }

    fn write(&mut self, stream: u8, data: &[u8]) {
        if self.file.is_none() {
            return;
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
