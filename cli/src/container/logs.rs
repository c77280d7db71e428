//! `nook logs`: reads the log file the logger writes (k8s-file or json-file, the rotated
//! `ctr.log.1` first) and, with -f, follows it through inotify until the container's
//! supervisor has ended.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::lifecycle::PidFd;
use super::record::Places;
use crate::flags::LogsArgs;

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
    let places = Places::open(store_root)?;
    let ctr = places.find(&args.container)?;
    if ctr.record.log_driver == "none" {
        bail!(
            "container {} was created with --log-driver=none: it has no logs",
            ctr.record.name
        );
    }
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let path = ctr.log_path();
    let rotated = path.with_extension("log.1");
    let mut entries = Vec::new();
    for p in [&rotated, &path] {
        if let Ok(f) = File::open(p) {
            read_entries(&mut BufReader::new(f), &mut entries);
        }
    }
    if let Some(since) = since {
        entries.retain(|e| humantime::parse_rfc3339(&e.time).is_ok_and(|t| t >= since));
    }
    if let Some(n) = args.tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    for e in &entries {
        print_entry(e, args.timestamps);
    }
    if args.follow {
        follow(&path, &ctr, args.timestamps)?;
    }
    Ok(0)
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

fn print_entry(e: &Entry, timestamps: bool) {
    let write = |w: &mut dyn Write| {
        if timestamps {
            let _ = write!(w, "{} ", e.time);
        }
        let _ = w.write_all(&e.text);
        let _ = w.flush();
    };
    if e.stderr {
        write(&mut std::io::stderr().lock());
    } else {
        write(&mut std::io::stdout().lock());
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

/// Prints what is appended to the log until the container's supervisor has ended.
fn follow(path: &Path, ctr: &super::record::Container, timestamps: bool) -> Result<()> {
    let inotify =
        Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).context("inotify")?;
    // The directory: the file may not exist yet, and rotation replaces it.
    inotify
        .add_watch(
            &ctr.dir,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
        )
        .context("watching the container's log")?;
    let supervisor = ctr.recorded_state().supervisor.and_then(PidFd::open);
    let mut file = File::open(path).ok();
    let mut offset = file
        .as_mut()
        .and_then(|f| f.seek(SeekFrom::End(0)).ok())
        .unwrap_or(0);
    loop {
        let done = supervisor
            .as_ref()
            .is_none_or(|s| s.wait(Some(Duration::ZERO)));
        // Read what is there (after the supervisor ended too: its last words).
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        if len < offset || file.is_none() {
            // Rotated: a new file from its start.
            file = File::open(path).ok();
            offset = 0;
        }
        if let Some(f) = &mut file {
            f.seek(SeekFrom::Start(offset))?;
            let mut entries = Vec::new();
            offset += read_entries(&mut BufReader::new(&mut *f), &mut entries);
            for e in &entries {
                print_entry(e, timestamps);
            }
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
