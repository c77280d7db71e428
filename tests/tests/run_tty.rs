//! `nook run -t` under a real terminal: the test opens a pty pair, makes its slave side
//! nook's controlling terminal (as a shell would) and reads the master side.
//!
//! Checked: the container gets a pty of its own with the outer window size; the outer
//! terminal is raw while the container runs and its termios is restored on exit; a window
//! size change (SIGWINCH) reaches the container; input typed reaches it with `-i`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags, Termios};
use nook_tests::*;

struct TtyRun {
    pid: i32,
    master: File,
    slave: Option<OwnedFd>,
    out_rx: Receiver<Vec<u8>>,
    out: Vec<u8>,
    seen: usize,
    status_rx: Receiver<ExitStatus>,
    done: bool,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl TtyRun {
    fn start(args: &[&str], rows: u16, cols: u16) -> (TtyRun, Termios) {
        let pty = openpty(Some(&winsize(rows, cols)), None).expect("openpty");
        let before = tcgetattr(&pty.slave).expect("tcgetattr");
        let mut cmd = nook();
        cmd.args(["run", "--rm"]).args(args);
        on_terminal(&mut cmd, &pty.slave);
        let mut child: Child = cmd.spawn().expect("spawn nook");
        drop(cmd); // closes the Command's copies of the slave
        let pid = child.id() as i32;
        let (tx, status_rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait().expect("wait"));
        });
        let master = File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (otx, out_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once no slave fd is left open.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || otx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let run = TtyRun {
            pid,
            master,
            slave: Some(pty.slave),
            out_rx,
            out: Vec::new(),
            seen: 0,
            status_rx,
            done: false,
        };
        (run, before)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    fn kill(&self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid), Signal::SIGKILL);
        for p in descendants(self.pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
    }

    /// Waits for `needle` in the terminal output after what was consumed before.
    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = find(&self.out[self.seen..], needle.as_bytes()) {
                self.seen += i + needle.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out_rx.recv_timeout(left) {
                Ok(c) => self.out.extend(c),
                Err(e) => {
                    self.kill();
                    let why = if e == RecvTimeoutError::Timeout {
                        "timed out"
                    } else {
                        "terminal closed"
                    };
                    panic!(
                        "{why} waiting for {needle:?}; terminal output so far:\n{}",
                        self.text()
                    );
                }
            }
        }
    }

    fn set_size(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ as _, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig).expect("kill nook");
    }

    fn termios(&self) -> Termios {
        tcgetattr(self.slave.as_ref().unwrap()).expect("tcgetattr")
    }

    /// Waits for nook to exit; returns its exit code and the terminal's termios then.
    fn finish(&mut self, timeout: Duration) -> (i32, Termios) {
        let st = match self.status_rx.recv_timeout(timeout) {
            Ok(st) => st,
            Err(_) => {
                self.kill();
                panic!(
                    "nook -t did not exit within {timeout:?}; terminal output:\n{}",
                    self.text()
                );
            }
        };
        self.done = true;
        let after = self.termios();
        // Close our slave: the reader then sees EIO once the container's copies are gone.
        self.slave = None;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out_rx.recv_timeout(left) {
                Ok(c) => self.out.extend(c),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    panic!(
                        "the terminal stayed open after nook exited; output:\n{}",
                        self.text()
                    )
                }
            }
        }
        let code = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
        (code, after)
    }
}

impl Drop for TtyRun {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn assert_same_termios(before: &Termios, after: &Termios, out: &str) {
    assert_eq!(
        before.input_flags, after.input_flags,
        "c_iflag not restored; output:\n{out}"
    );
    assert_eq!(
        before.output_flags, after.output_flags,
        "c_oflag not restored; output:\n{out}"
    );
    assert_eq!(
        before.control_flags, after.control_flags,
        "c_cflag not restored; output:\n{out}"
    );
    assert_eq!(
        before.local_flags, after.local_flags,
        "c_lflag not restored; output:\n{out}"
    );
    assert_eq!(
        before.control_chars, after.control_chars,
        "c_cc not restored; output:\n{out}"
    );
}

#[test]
fn tty_has_the_outer_window_size_and_restores_the_terminal() {
    assert_unprivileged();
    let (mut r, before) = TtyRun::start(
        &[
            "--rm",
            "-t",
            "host",
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo is-a-tty; stty size; tty; echo \"dev=$(stat -L -c '%d:%i' /proc/self/fd/0)\"; exit 5",
        ],
        37,
        101,
    );
    let outer = nix::sys::stat::fstat(r.slave.as_ref().unwrap().as_raw_fd()).unwrap();
    let outer_id = format!("dev={}:{}", outer.st_dev, outer.st_ino);
    let (code, after) = r.finish(TIMEOUT);
    let out = r.text();
    assert_eq!(code, 5, "exit status through -t; output:\n{out}");
    assert!(
        out.contains("is-a-tty"),
        "stdin/stdout inside are not a terminal; output:\n{out}"
    );
    assert!(
        out.contains("37 101"),
        "`stty size` inside should show the outer 37x101; output:\n{out}"
    );
    assert!(
        out.contains("/dev/pts/"),
        "`tty` inside should name a /dev/pts device; output:\n{out}"
    );
    assert!(out.contains("dev="), "no device line; output:\n{out}");
    assert!(
        !out.contains(&outer_id),
        "the container uses the outer terminal itself, not a pty of its own; output:\n{out}"
    );
    assert_same_termios(&before, &after, &out);
}

#[test]
fn tty_is_raw_while_running_and_input_reaches_the_container() {
    assert_unprivileged();
    let (mut r, before) = TtyRun::start(
        &[
            "--rm",
            "-i",
            "-t",
            "host",
            "sh",
            "-c",
            "echo ready; read line; echo \"got:$line\"",
        ],
        24,
        80,
    );
    r.wait_for("ready", TIMEOUT);
    let during = r.termios();
    assert!(
        !during.local_flags.contains(LocalFlags::ICANON)
            && !during.local_flags.contains(LocalFlags::ECHO),
        "the outer terminal should be raw (no ICANON, no ECHO) while the container runs: {:?}",
        during.local_flags
    );
    r.master.write_all(b"hello nook\n").unwrap();
    r.wait_for("got:hello nook", TIMEOUT);
    let (code, after) = r.finish(TIMEOUT);
    let out = r.text();
    assert_eq!(code, 0, "output:\n{out}");
    assert_same_termios(&before, &after, &out);
}

#[test]
fn window_size_change_is_forwarded() {
    assert_unprivileged();
    let (mut r, before) = TtyRun::start(
        &[
            "--rm",
            "-t",
            "host",
            "sh",
            "-c",
            "trap 'stty size; exit 0' WINCH; stty size; echo ready; sleep 1000 & wait",
        ],
        30,
        90,
    );
    r.wait_for("30 90", TIMEOUT);
    r.wait_for("ready", TIMEOUT);
    // The kernel sends SIGWINCH to nook (the pty's foreground process group).
    r.set_size(50, 120);
    r.wait_for("50 120", TIMEOUT);
    let (code, after) = r.finish(TIMEOUT);
    let out = r.text();
    assert_eq!(code, 0, "output:\n{out}");
    assert_same_termios(&before, &after, &out);
}

#[test]
fn sigterm_under_tty_reaches_the_container_and_the_terminal_is_restored() {
    assert_unprivileged();
    let (mut r, before) = TtyRun::start(
        &[
            "--rm",
            "-t",
            "host",
            "sh",
            "-c",
            "trap 'echo got-TERM; exit 42' TERM; echo ready; sleep 1000 & wait",
        ],
        24,
        80,
    );
    r.wait_for("ready", TIMEOUT);
    r.signal(Signal::SIGTERM);
    r.wait_for("got-TERM", TIMEOUT);
    let (code, after) = r.finish(TIMEOUT);
    let out = r.text();
    assert_eq!(code, 42, "output:\n{out}");
    assert_same_termios(&before, &after, &out);
}

#[test]
fn ctrl_c_typed_reaches_the_container() {
    assert_unprivileged();
    // The outer terminal is raw, so ^C is a byte for the container's own terminal, whose
    // line discipline turns it into SIGINT for the container's foreground process group.
    let (mut r, before) = TtyRun::start(
        &[
            "--rm",
            "-i",
            "-t",
            "host",
            "sh",
            "-c",
            "trap 'echo got-INT; exit 42' INT; echo ready; sleep 1000 & wait",
        ],
        24,
        80,
    );
    r.wait_for("ready", TIMEOUT);
    r.master.write_all(b"\x03").unwrap();
    r.wait_for("got-INT", TIMEOUT);
    let (code, after) = r.finish(TIMEOUT);
    let out = r.text();
    assert_eq!(code, 42, "output:\n{out}");
    assert_same_termios(&before, &after, &out);
}

#[test]
fn without_t_the_container_has_no_terminal() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "host",
        "sh",
        "-c",
        "if test -t 0 || test -t 1; then echo tty; else echo no-tty; fi",
    ]);
    o.success();
    assert_eq!(o.line(), "no-tty", "{o}");
}
