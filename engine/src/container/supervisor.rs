//! The supervisor of a detached container: `nook __supervise DIR`, started by `nook run
//! -d` / `nook start` in a new session, outliving the command that started it.
//!
//! ```text
//! nook run -d ──spawn (setsid, nook's own variables only)───► nook __supervise DIR
//!     ▲ stderr pipe: errors, then "started"            │ fork (single-threaded still)
//!     │                                                ├──► logger: container stdout/stderr
//!     │                                                │    pipes → log file + attach
//!     │                                                │    clients; clients → stdin pipe
//!     └────────────────────────────────────────────────┴─ run_container (the same path as
//!                                                          a foreground `nook run`; its
//!                                                          fds 0/1/2 are the pipes)
//! ```
//!
//! The container inherits the supervisor's stdio, exactly as under a foreground `nook run`,
//! so the execution path has no detached special case: only what fds 0, 1 and 2 are
//! differs. The supervisor rebuilds the container from its record's request alone: it
//! gets no command line to re-parse, and of the starting command's environment only
//! the variables nook itself reads ([`SUPERVISOR_ENV`]). The logger is a process, not a thread, so the supervisor stays single-threaded
//! for every clone its restart policy asks for. It exits when the last writer of the
//! output pipes (the supervisor and the container) is gone.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use crate::bail;
use crate::error::{Context, Error, Result};

use super::logger;
use super::record::{Container, Places};
use crate::run::Passing;
use crate::{Engine, Notify};

/// The variables the supervisor keeps from the command that starts it: those nook
/// reads itself (where its runtime dir, store, config and credentials are, how to
/// reach newuidmap and systemd). Nothing else of the caller's shell reaches it.
const SUPERVISOR_ENV: &[&str] = &[
    "HOME",
    "PATH",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_DATA_HOME",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "REGISTRY_AUTH_FILE",
    "NOOK_ROOT",
    "NOOK_CONFIG",
    "NOOK_LOG",
    "NOOK_NO_MOUNT_API",
    "NOOK_PODMAN_SECCOMP",
];

/// Marker of the exit code after a start failure, on the same pipe.
const EXIT_CODE: &str = "\u{1}nook-exit-code ";

/// Marker the supervisor writes on its stderr pipe once the container runs.
const STARTED: &str = "\u{1}nook-started\n";

/// Starts `ctr`'s supervisor in the background and waits until the container runs (or
/// failed to start: its error, on stderr, and exit code are returned).
pub fn spawn(ctr: &Container, notify: &dyn Notify) -> Result<()> {
    spawn_with(ctr, None, &crate::run::Passing::default(), notify)
}

/// The descriptor on which `__supervise --attach-first` finds its first client.
const ATTACH_FD: i32 = 3;

/// [`spawn`]; with `attach`, that socket is the logger's first client, attached before
/// the container prints anything (`nook start -a`). The descriptors `passing` names (fds
/// 3..3+N of `nook run -d`) are the supervisor's too, for the container; no other of
/// ours crosses (every one is close-on-exec since nook started, see main.rs).
pub fn spawn_with(
    ctr: &Container,
    attach: Option<UnixStream>,
    passing: &Passing,
    notify: &dyn Notify,
) -> Result<()> {
    let attach_first = attach.is_some();
    if attach_first && passing.fds.count > 0 {
        bail!("a container started with `start -a` is passed no descriptors");
    }
    // Close-on-exec: the supervisor gets the write end as its stderr, never the read end.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let mut cmd = crate::helpers::Supervise {
        dir: ctr.dir.clone(),
        // The store the record belongs to, whichever `--root` or NOOK_ROOT named it.
        store: ctr
            .record
            .store
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf),
        attach_first,
        pass_fds: passing.fds.count,
        listen: passing.fds.listen,
        listen_fdnames: passing.names.clone(),
    }
    .command()?;
    let passed = passing.fds.range();
    let cwd = &ctr.record.request.cwd;
    cmd.env_clear()
        .envs(
            SUPERVISOR_ENV
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        .current_dir(if cwd.is_dir() {
            cwd.as_path()
        } else {
            Path::new("/")
        })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::from(write_end));
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from our terminal
    // and process group, so ^C here or the shell's exit does not reach it.
    let attach_fd = attach.as_ref().map(|a| a.as_raw_fd());
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if let Some(fd) = attach_fd {
                // dup2 clears close-on-exec on the copy: the supervisor inherits it.
                nix::unistd::dup2(fd, ATTACH_FD)?;
            }
            // fcntl only: async-signal-safe.
            nook_rootless::fds::make_inheritable(passed.clone());
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the container's supervisor")?;
    drop(cmd);
    drop(attach);
    // Read until the marker, not to EOF: processes the supervisor forks (the netns
    // agent) may hold a copy of the pipe for the container's lifetime.
    let mut pipe = File::from(read_end);
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = pipe
            .read(&mut chunk)
            .context("reading from the container's supervisor")?;
        raw.extend_from_slice(&chunk[..n]);
        if n == 0 || raw.windows(STARTED.len()).any(|w| w == STARTED.as_bytes()) {
            break;
        }
    }
    let messages = String::from_utf8_lossy(&raw).into_owned();
    if let Some((before, _)) = messages.split_once(STARTED) {
        // What the supervisor said before the start (warnings, notices), said again.
        for line in before.lines().filter(|l| !l.trim().is_empty()) {
            let line = line.strip_prefix("nook: ").unwrap_or(line);
            match line.strip_prefix("warning: ") {
                Some(warning) => notify.warn(warning),
                None => notify.notice(line),
            }
        }
        // Reaped by init once it exits; nothing of ours waits for it.
        std::mem::forget(child);
        return Ok(());
    }
    let _ = child.wait();
    // The supervisor's last line is its exit code (a `--rm` record is gone by now).
    let (message, code) = match messages.trim_end().rsplit_once(EXIT_CODE) {
        Some((message, code)) => (message.trim_end(), code.trim().parse().unwrap_or(125)),
        None => (messages.trim_end(), 125),
    };
    if message.is_empty() {
        return Err(Error::Exit(
            code,
            "the container's supervisor failed to start it".into(),
        ));
    }
    Err(Error::Exit(
        code,
        message.trim_start_matches("nook: ").to_string(),
    ))
}

/// `nook __supervise DIR`: `passing` are the descriptors `run -d` handed on (none for a
/// later `start`, whatever the recorded flags say: those descriptors are gone).
pub fn main(eng: &Engine, dir: &Path, attach_first: bool, passing: &Passing) -> Result<i32> {
    let ctr = Container::load(dir, eng.migrate)?;
    let places = Places::for_run(eng.store_root.clone(), &ctr.record.request)?;
    // Our stderr is the pipe to the starting command until the container runs; a
    // close-on-exec copy stays with us once fd 2 becomes the container's stderr.
    let ready = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("dup of stderr")?;
    let _runtime = crate::run::RuntimeFiles::new(&places, &ctr)?;
    let attach_socket = ctr.runtime_dir(&places).join("attach.sock");
    // `start -a`: the client's end of a socket pair, inherited as fd 3.
    // SAFETY: fd 3 was set up for us by `spawn_with` and nothing else owns it.
    let first_client = attach_first.then(|| unsafe { UnixStream::from_raw_fd(ATTACH_FD) });
    let logger = logger::start(&ctr, &attach_socket, &ready, first_client)?;
    let ready = Arc::new(Mutex::new(Some(File::from(ready))));

    let started = {
        let ready = ready.clone();
        Arc::new(move || {
            if let Some(mut f) = ready.lock().map(|mut r| r.take()).ok().flatten() {
                let _ = f.write_all(STARTED.as_bytes());
            }
        }) as Arc<dyn Fn() + Send + Sync>
    };
    let image = crate::run::recorded_image(eng, &ctr);
    let result = image.and_then(|image| {
        crate::run::run_container(eng, &places, &ctr, &image, Some(started), passing)
    });
    if let Err(e) = &result {
        if let Some(mut f) = ready.lock().ok().and_then(|mut r| r.take()) {
            let code = e.exit_code();
            let _ = write!(
                f,
                "nook: {why}\n{EXIT_CODE}{code}\n",
                why = crate::error::chain_line(e)
            );
        }
    }
    // The log is complete before this process, which `nook wait` waits for, ends.
    logger::finish(logger);
    result
}
