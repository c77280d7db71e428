//! See main.rs: this module's attempts are listed there and in docs/security.md.
//!
//! What a container inherits of its caller's signal state and terminal: a caller that
//! ignores SIGINT/SIGQUIT/SIGHUP and blocks SIGUSR1 (a script's background job, `nohup`,
//! `trap '' INT`) must not hand that on (SigIgn and SigBlk of /proc/self/status inside
//! are zero, for run, run --init and exec); a container must not push input into its
//! caller's terminal with TIOCSTI, with or without -t (it is not in the caller's session,
//! and under -t holds no descriptor of that terminal at all); ^C typed at the caller's
//! terminal still reaches the container, through nook, which forwards it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use nix::pty::openpty;
use nook_tests::*;

use super::fds::Store;

/// Makes `cmd`'s process ignore SIGINT, SIGQUIT and SIGHUP and block SIGUSR1, as a
/// caller in a script's background job or under `nohup` would hand nook.
fn as_a_background_job(cmd: &mut Command) {
    // SAFETY: signal and sigprocmask are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_IGN);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

#[test]
fn caller_ignored_and_blocked_signals_do_not_reach_the_container() {
    let store = Store::new();
    let name = store.idle(&[]);
    let runs: [Vec<&str>; 3] = [
        vec!["run", "--rm", "--network=none", "host"],
        vec!["run", "--rm", "--network=none", "--init", "host"],
        vec!["exec", &name],
    ];
    for args in runs {
        let mut cmd = store.cmd(&args);
        cmd.args(["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"]);
        as_a_background_job(&mut cmd);
        let o = spawn(&mut cmd).wait(TIMEOUT);
        o.success();
        assert!(o.out().contains("SigBlk:\t0000000000000000\n"), "{o}");
        assert!(o.out().contains("SigIgn:\t0000000000000000\n"), "{o}");
    }
}

/// nook on a pty of the test's as its controlling terminal, as under a shell; a thread
/// collects what the terminal shows (its output, read on the master side).
struct OnTerminal {
    master: File,
    slave: OwnedFd,
    out_rx: Receiver<Vec<u8>>,
    shown: Vec<u8>,
    status_rx: Option<Receiver<std::process::ExitStatus>>,
}

impl OnTerminal {
    /// `raw`: non-canonical input without signals, so a pushed byte is readable at once.
    fn new(raw: bool) -> OnTerminal {
        let pty = openpty(None, None).expect("openpty");
        if raw {
            let mut t = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
            nix::sys::termios::cfmakeraw(&mut t);
            nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t)
                .unwrap();
        }
        let master = File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (tx, out_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OnTerminal {
            master,
            slave: pty.slave,
            out_rx,
            shown: Vec::new(),
            status_rx: None,
        }
    }

    /// Starts `cmd` with this terminal as its stdio and controlling terminal.
    fn start(&mut self, cmd: &mut Command) {
        on_terminal(cmd, &self.slave);
        let mut child = cmd.spawn().expect("spawn nook");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().expect("wait for nook"));
        });
        self.status_rx = Some(rx);
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.shown).into_owned()
    }

    /// Waits until the terminal has shown `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.text().contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out_rx.recv_timeout(left) {
                Ok(chunk) => self.shown.extend(chunk),
                Err(_) => panic!("the terminal did not show {needle:?}:\n{}", self.text()),
            }
        }
    }

    /// Waits for nook's exit; returns its code once the terminal showed `last`.
    fn finish(&mut self, last: &str) -> i32 {
        self.wait_for(last);
        let status = self
            .status_rx
            .take()
            .expect("started")
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("nook did not exit:\n{}", self.text()));
        status.code().unwrap_or(-1)
    }

    /// Input waiting on the terminal: what the caller's shell would read next.
    fn pending_input(&self) -> Vec<u8> {
        let slave = File::from(self.slave.try_clone().unwrap());
        set_nonblocking(&slave);
        let mut input = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = (&slave).read(&mut buf) {
            if n == 0 {
                break;
            }
            input.extend_from_slice(&buf[..n]);
        }
        input
    }

    /// "DEV.INO" of the terminal, as fstat in the container reports a descriptor of it.
    fn id(&self) -> String {
        let m = std::fs::metadata(format!("/proc/self/fd/{}", self.slave.as_raw_fd())).unwrap();
        format!("{}.{}", m.dev(), m.ino())
    }
}

fn set_nonblocking(f: &File) {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// In the container: TIOCSTI of a marker line on stdin, stdout, stderr and /dev/tty,
/// each reported as `N=ok` or `N=ERRNO`, with the terminal's identity (`DEV.INO`).
const PUSH: &str = r#"
import errno, fcntl, os, termios
def push(fd):
    try:
        for b in b"echo pushed-by-container\n":
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([b]))
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
res = []
for fd in (0, 1, 2):
    st = os.fstat(fd)
    res.append(f"{fd}={push(fd)}:{st.st_dev}.{st.st_ino}")
try:
    t = os.open("/dev/tty", os.O_RDWR)
    st = os.fstat(t)
    res.append(f"tty={push(t)}:{st.st_dev}.{st.st_ino}")
except OSError as e:
    res.append(f"tty=open-{errno.errorcode.get(e.errno, e.errno)}")
print("result", " ".join(res), flush=True)
"#;

fn result_line(shown: &str) -> String {
    shown
        .lines()
        .find(|l| l.starts_with("result "))
        .unwrap_or_else(|| panic!("no result line on the terminal:\n{shown}"))
        .trim_end_matches('\r')
        .to_string()
}

#[test]
fn tiocsti_cannot_reach_the_callers_terminal() {
    assert_unprivileged();
    if !has("python3") {
        return skip(
            "tiocsti_cannot_reach_the_callers_terminal",
            "python3 is not installed (the `host` image runs the host's)",
        );
    }
    let store = Store::new();
    // Without -t: the terminal is the container's stdin (-i), stdout and stderr, but not
    // its controlling terminal (it has a session of its own): TIOCSTI is refused.
    let mut term = OnTerminal::new(true);
    term.start(&mut store.cmd(&[
        "run",
        "--rm",
        "-i",
        "--network=none",
        "host",
        "python3",
        "-c",
        PUSH,
    ]));
    let code = term.finish("result ");
    let shown = term.text();
    assert_eq!(code, 0, "{shown}");
    let line = result_line(&shown);
    for fd in ["0=EPERM", "1=EPERM", "2=EPERM", "tty=open-"] {
        assert!(line.contains(fd), "expected {fd}: {line}\n{shown}");
    }
    let input = term.pending_input();
    assert!(
        input.is_empty(),
        "input pushed into the caller's terminal: {input:?}"
    );

    // With -t: the container's terminal is a pty of its own; nothing it holds is the
    // caller's terminal, so whatever it pushes stays in its own.
    let mut term = OnTerminal::new(true);
    let caller = term.id();
    term.start(&mut store.cmd(&[
        "run",
        "--rm",
        "-i",
        "-t",
        "--network=none",
        "host",
        "python3",
        "-c",
        PUSH,
    ]));
    let code = term.finish("result ");
    let shown = term.text();
    assert_eq!(code, 0, "{shown}");
    let line = result_line(&shown);
    for part in line.split_whitespace().skip(1) {
        let id = part.rsplit(':').next().unwrap();
        assert_ne!(
            id, caller,
            "the container holds the caller's terminal: {line}"
        );
    }
    let input = term.pending_input();
    assert!(
        input.is_empty(),
        "input pushed into the caller's terminal: {input:?}"
    );
}

/// ^C at the caller's terminal (no -t): the line discipline signals nook, the terminal's
/// foreground process group (the container is in a session of its own), and nook
/// forwards SIGINT to the container.
#[test]
fn ctrl_c_at_the_callers_terminal_still_reaches_the_container() {
    assert_unprivileged();
    let mut term = OnTerminal::new(false);
    term.start(nook().args([
        "run",
        "--rm",
        "--network=none",
        "host",
        "sh",
        "-c",
        "trap 'echo got-INT; exit 42' INT; echo ready; sleep 1000 & wait",
    ]));
    term.wait_for("ready");
    term.master.write_all(b"\x03").unwrap();
    let code = term.finish("got-INT");
    assert_eq!(code, 42, "{}", term.text());
}
