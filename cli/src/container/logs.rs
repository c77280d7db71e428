//! `nook logs`: reads the log file the logger writes (k8s-file or json-file, the rotated
//! `ctr.log.1` first). With -f it follows through the logger's `logs.sock` (logger.rs):
//! its history comes as descriptors of the two files and the current file's length at
//! that moment, then every line the logger writes, so no rotation, however fast, loses
//! or repeats a line. Where there is no logger to ask (it has ended, or a foreground
//! container's), the file is followed by path: each file kept open and drained before
//! the next (rotation told by its inode), as podman follows its k8s-file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::flags::LogsArgs;
use nook_engine::container::record::ProcessId;

/// One log entry.
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub time: String,
    pub stderr: bool,
    /// The text, with its newline when the entry ends a line.
    pub text: Vec<u8>,
}

/// Parses one line of either format.
pub fn parse_line(line: &[u8]) -> Option<Entry> {
    if line.first() == Some(&b'{') {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        return Some(Entry {
            time: v["time"].as_str()?.to_string(),
            stderr: v["stream"] == "stderr",
            text: v["log"].as_str()?.as_bytes().to_vec(),
        });
    }
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let stream = parts.next()?;
    let tag = parts.next()?;
    let mut text = parts.next().unwrap_or_default().to_vec();
    if tag == b"F" {
        text.push(b'\n');
    }
    Some(Entry {
        time,
        stderr: stream == b"stderr",
        text,
    })
}

pub fn logs_cmd(args: LogsArgs, store_root: Option<std::path::PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let ctr = places.find(&args.container)?;
    if ctr.record.request.log_driver == nook_engine::request::LogDriver::None {
        bail!(
            "container {} was created with --log-driver=none: it has no logs",
            ctr.record.name
        );
    }
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let history = |mut entries: Vec<Entry>| {
        if let Some(since) = since {
            entries.retain(|e| humantime::parse_rfc3339(&e.time).is_ok_and(|t| t >= since));
        }
        if let Some(n) = args.tail {
            let skip = entries.len().saturating_sub(n);
            entries.drain(..skip);
        }
        print_entries(&entries, args.timestamps);
    };
    if args.follow && ctr.supervised() {
        let socket = nook_engine::container::logger::logs_socket(
            &ctr.runtime_dir(&places).join("attach.sock"),
        );
        if let Some(mut live) = Live::connect(&socket) {
            history(live.history()?);
            live.follow(&socket, args.timestamps)?;
            return Ok(0);
        }
    }
    let path = ctr.log_path();
    let rotated = path.with_extension("log.1");
    let mut entries = Vec::new();
    for p in [&rotated, &path] {
        if let Ok(f) = File::open(p) {
            read_entries(&mut BufReader::new(f), &mut entries);
        }
    }
    history(entries);
    if args.follow {
        follow(&path, &ctr, args.timestamps)?;
    }
    Ok(0)
}

/// A follower of the logger's socket (logger.rs has the other side).
struct Live {
    conn: UnixStream,
    /// The rotated file (if any) then the current one, as the logger had them.
    files: Vec<File>,
    /// How much of the current file was written when they were handed over.
    current_len: u64,
}

impl Live {
    /// Connects and takes the history message; None where no logger answers (ended,
    /// or too many followers).
    fn connect(socket: &Path) -> Option<Live> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let conn = nook_engine::container::logger::connect_short(socket).ok()?;
        let mut hello = [0u8; 10];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 2]);
        let mut iov = [std::io::IoSliceMut::new(&mut hello)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        let received = msg.bytes;
        let mut files = Vec::new();
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed this descriptor for us.
                    files.push(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        let count = usize::from(hello[1]);
        if received != hello.len() || hello[0] != b'H' || files.len() != count || count == 0 {
            return None;
        }
        let current_len = u64::from_be_bytes(hello[2..10].try_into().expect("8 bytes"));
        Some(Live {
            conn,
            files,
            current_len,
        })
    }

    /// Every entry the files held when the logger handed them over.
    fn history(&mut self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let last = self.files.len() - 1;
        for (i, f) in self.files.drain(..).enumerate() {
            let limit = if i == last {
                self.current_len
            } else {
                u64::MAX
            };
            read_entries(&mut BufReader::new(f.take(limit)), &mut entries);
        }
        Ok(entries)
    }

    /// Prints the lines the logger sends until the end frame. Dropped for falling too
    /// far behind (the socket ends without it), it says so and goes on from where the
    /// logger is, as long as there is one.
    fn follow(&mut self, socket: &Path, timestamps: bool) -> Result<()> {
        loop {
            // Ended without the end frame, or broken: dropped, or the logger is gone.
            if let Ok(true) = read_frames(&mut self.conn, timestamps) {
                return Ok(());
            }
            let Some(again) = Live::connect(socket) else {
                // No logger any more: the container's output is over.
                return Ok(());
            };
            eprintln!(
                "nook: logs -f fell too far behind the container's output: lines were                  skipped (it goes on from the latest)"
            );
            *self = again;
            self.files.clear();
        }
    }
}

/// Prints the line frames on `conn`; true at the end frame, false when the socket ended
/// without it.
fn read_frames(conn: &mut UnixStream, timestamps: bool) -> std::io::Result<bool> {
    use nook_engine::container::logger::{FRAME_END, FRAME_LINES};
    let mut reader = BufReader::with_capacity(256 << 10, conn);
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 5];
        match reader.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
        match head[0] {
            FRAME_LINES => {
                let mut entries = Vec::new();
                read_entries(&mut &body[..], &mut entries);
                print_entries(&entries, timestamps);
            }
            FRAME_END => return Ok(true),
            _ => return Ok(false),
        }
    }
}

/// Reads whole lines as entries; returns the bytes they took (a line still being
/// written is left for the next read).
fn read_entries(reader: &mut impl BufRead, out: &mut Vec<Entry>) -> u64 {
    let mut consumed = 0;
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        if line.last() != Some(&b'\n') {
            break;
        }
        consumed += line.len() as u64;
        line.pop();
        if let Some(e) = parse_line(&line) {
            out.push(e);
        }
        line.clear();
    }
    consumed
}

/// Prints entries in order, each run of one stream in one write.
fn print_entries(entries: &[Entry], timestamps: bool) {
    let mut run = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if timestamps {
            run.extend_from_slice(e.time.as_bytes());
            run.push(b' ');
        }
        run.extend_from_slice(&e.text);
        if entries
            .get(i + 1)
            .is_none_or(|next| next.stderr != e.stderr)
        {
            let write = |w: &mut dyn Write| w.write_all(&run).and_then(|()| w.flush());
            let written = match e.stderr {
                true => write(&mut std::io::stderr().lock()),
                false => write(&mut std::io::stdout().lock()),
            };
            // The reader went away (`nook logs CTR | head -1`): done, quietly, also
            // when following.
            if written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
                std::process::exit(0);
            }
            run.clear();
        }
    }
}

/// `--since`: an RFC 3339 time, or an age such as `10m`.
fn parse_since(text: &str) -> Result<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        anyhow!("bad --since {text:?}: use a time (2026-11-28T10:00:00Z) or an age (10m, 2h)")
    })?;
    Ok(SystemTime::now() - age)
}

/// Prints what is appended to the log until the container's supervisor has ended,
/// where no logger serves followers. The file is kept open and read to its end before
/// the next one is opened, so one rotation between two reads loses nothing; files
/// rotated away entirely in between cannot be read by anyone.
fn follow(
    path: &Path,
    ctr: &nook_engine::container::record::Container,
    timestamps: bool,
) -> Result<()> {
    let inotify =
        Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).context("inotify")?;
    // The directory: the file may not exist yet, and rotation replaces it.
    inotify
        .add_watch(
            &ctr.dir,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
        )
        .context("watching the container's log")?;
    let supervisor = ctr.recorded_state().supervisor.and_then(ProcessId::pidfd);
    let mut file = File::open(path).ok();
    let mut offset = file
        .as_mut()
        .and_then(|f| f.seek(SeekFrom::End(0)).ok())
        .unwrap_or(0);
    let same = |f: &File, p: &std::fs::Metadata| {
        f.metadata()
            .is_ok_and(|m| m.dev() == p.dev() && m.ino() == p.ino())
    };
    loop {
        let done = supervisor
            .as_ref()
            .is_none_or(|s| s.wait(Some(Duration::ZERO)));
        // Read what is there (after the supervisor ended too: its last words), then
        // what replaced the file, if it was rotated.
        loop {
            // Looked at before the read: a file found rotated gets no more lines, so
            // the read below takes all it has left.
            let now = std::fs::metadata(path).ok();
            let rotated = match (&file, &now) {
                (Some(f), Some(m)) => !same(f, m),
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if let Some(f) = &mut file {
                f.seek(SeekFrom::Start(offset))?;
                let mut entries = Vec::new();
                offset += read_entries(&mut BufReader::new(&mut *f), &mut entries);
                print_entries(&entries, timestamps);
            }
            if !rotated {
                break;
            }
            file = File::open(path).ok();
            offset = 0;
        }
        if done {
            return Ok(());
        }
        let mut fds = vec![PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        if let Some(s) = &supervisor {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) | Ok(_) => {}
            Err(e) => return Err(e).context("poll"),
        }
        while inotify.read_events().is_ok_and(|ev| !ev.is_empty()) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_parse() {
        let e = parse_line(b"2026-11-28T01:00:00.000000000Z stderr F hello world").unwrap();
        assert!(e.stderr);
        assert_eq!(e.text, b"hello world\n");
        let p = parse_line(b"2026-11-28T01:00:00Z stdout P part").unwrap();
        assert_eq!(p.text, b"part");
        let j = parse_line(br#"{"log":"x\n","stream":"stdout","time":"2026-11-28T01:00:00Z"}"#)
            .unwrap();
        assert!(!j.stderr);
        assert_eq!(j.text, b"x\n");
    }

    #[test]
    fn since_takes_ages_and_times() {
        assert!(parse_since("10m").unwrap() < SystemTime::now());
        assert!(parse_since("2026-11-28T10:00:00Z").is_ok());
        assert!(parse_since("yesterday-ish").is_err());
    }
}
