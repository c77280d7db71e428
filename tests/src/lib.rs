//! Helpers for nook's integration tests (the `integration` executable, tests/tests/main.rs).
//!
//! The tests drive the real `nook` binary as an unprivileged user, with real kernel
//! namespaces and real processes. `tests/run.sh` builds everything and, when started by
//! root, prepares the account `nooktest` and runs the test executable as that user with
//! `NOOK_BIN` pointing at a copy of the binary.
//!
//! Rules every test here follows:
//! - no sleeps for synchronisation: a test that must act while the container runs waits for
//!   a line the container prints ([`Proc::wait_for`]);
//! - every wait has a deadline: a hang kills nook's process group (and the container) and
//!   fails the test instead of blocking the suite;
//! - nothing is skipped silently: a test that cannot run here calls [`skip`], which prints
//!   `SKIP: test: why` straight to stderr (past libtest's capture) for the runner to count;
//! - a container test calls [`assert_unprivileged`] first: run as root it would prove
//!   nothing about the rootless path, so it fails.

pub mod registry;

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;

/// Deadline for one container run. Generous: CI has two cores and runs tests in parallel.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The nook binary under test: `$NOOK_BIN`, else `target/debug/nook` beside the test
/// executable (`target/debug/deps/<test>-<hash>`), else `<workspace>/target/debug/nook`.
pub fn nook_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NOOK_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            let candidate = dir.join("nook");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/nook")
}

/// A `Command` for the nook binary: stdin `/dev/null`, stdout and stderr piped.
pub fn nook() -> Command {
    let bin = nook_bin();
    assert!(
        bin.is_file(),
        "nook binary not found at {} (build it with `cargo build -p nook-cli`, or set NOOK_BIN)",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `nook run <args>`, run to completion with [`TIMEOUT`].
pub fn run(args: &[&str]) -> Output {
    let mut cmd = nook();
    // A test leaves no container behind unless it says so.
    cmd.arg("run");
    if !args.contains(&"--rm") {
        cmd.arg("--rm");
    }
    cmd.args(args);
    spawn(&mut cmd).wait(TIMEOUT)
}

/// Fails the test when it runs as root: the container tests prove the rootless path.
pub fn assert_unprivileged() {
    let euid = nix::unistd::geteuid();
    assert!(
        !euid.is_root(),
        "this test must run as an unprivileged user, not root: run `bash tests/run.sh`, which \
         runs the integration tests as the account `nooktest` when started as root"
    );
}

/// Says loudly that a test could not run here, and why. The line goes straight to fd 2,
/// past libtest's output capture, so it shows in every run; tests/run.sh counts them.
pub fn skip(test: &str, why: &str) {
    // One write, so the line is not split by libtest's own output on the same pipe.
    let line = format!("SKIP: {test}: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The runtime state directory nook uses: `$XDG_RUNTIME_DIR/nook` or `$TMPDIR/nook-$UID`
/// (TMPDIR defaults to /tmp; unless someone else holds that, see tests/tests/security/files.rs).
pub fn state_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("nook"),
        _ => std::env::temp_dir().join(format!("nook-{}", nix::unistd::getuid())),
    }
}

pub fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

pub fn gid() -> u32 {
    nix::unistd::getgid().as_raw()
}

/// The inode link of one of this process's namespaces, e.g. `ipc:[4026531839]`.
pub fn host_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap_or_else(|e| panic!("readlink /proc/self/ns/{kind}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// A short random hex token (for unique names and markers), from the kernel's RNG.
pub fn token() -> String {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `n` pseudo-random bytes (xorshift seeded from /dev/urandom): all 256 byte values, fast.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut seed = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .expect("read /dev/urandom");
    let mut x = u64::from_le_bytes(seed) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

// ---------------------------------------------------------------------------------------
// Running nook

/// What a finished nook run left: its status and everything it wrote.
pub struct Output {
    pub desc: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// The exit code as a shell reports it: the status, or 128+N when nook itself died of
    /// signal N.
    pub fn code(&self) -> i32 {
        match (self.status.code(), self.status.signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => -1,
        }
    }
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// stdout without the trailing newline(s).
    pub fn line(&self) -> String {
        self.out().trim_end_matches(['\n', '\r']).to_string()
    }
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "unexpected exit status\n{self}");
        self
    }
    #[track_caller]
    pub fn success(&self) -> &Self {
        self.assert_code(0)
    }
    /// Asserts nook failed with `code` and said why in exactly one line on stderr that
    /// starts with `nook: ` or `Error: ` and contains every one of `mentions`.
    #[track_caller]
    pub fn assert_error_line(&self, code: i32, mentions: &[&str]) -> &Self {
        self.assert_code(code);
        let err = self.err();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr\n{self}"
        );
        let line = lines[0];
        assert!(
            line.starts_with("nook: ") || line.starts_with("Error: "),
            "the error line should start with `nook: ` or `Error: `\n{self}"
        );
        for m in mentions {
            assert!(
                line.contains(m),
                "the error line should mention {m:?}\n{self}"
            );
        }
        assert_no_repeats(line);
        self
    }
}

/// Fails when a fragment of an error line (a part between ": " or "; ", 16 characters
/// or more) appears in it twice: a cause said twice, as anyhow's `{:#}` prints an error
/// whose message already shows its source.
#[track_caller]
pub fn assert_no_repeats(line: &str) {
    if let Some(fragment) = repeated_fragment(line, 16) {
        panic!("the error line repeats {fragment:?}:\n{line}");
    }
}

/// A fragment of `line` (its parts between ": " and "; ") of at least `min` characters
/// that appears in it more than once.
pub fn repeated_fragment(line: &str, min: usize) -> Option<String> {
    line.split(": ")
        .flat_map(|part| part.split("; "))
        .map(str::trim)
        .filter(|f| f.chars().count() >= min)
        .find(|f| line.matches(f).count() > 1)
        .map(str::to_string)
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.desc)?;
        writeln!(f, "exit: {} ({:?})", self.code(), self.status)?;
        writeln!(
            f,
            "--- stdout ({} bytes) ---\n{}",
            self.stdout.len(),
            clip(&self.stdout)
        )?;
        write!(
            f,
            "--- stderr ({} bytes) ---\n{}",
            self.stderr.len(),
            clip(&self.stderr)
        )
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn clip(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(4000)]).into_owned();
    if b.len() > 4000 {
        s + "\n[... clipped]"
    } else {
        s
    }
}

/// A running nook process. stdout and stderr are drained by threads; the process has its
/// own process group, so a timeout can kill it with everything it started.
pub struct Proc {
    pub pid: i32,
    desc: String,
    stdin: Option<ChildStdin>,
    writer: Option<thread::JoinHandle<()>>,
    out_rx: Receiver<Vec<u8>>,
    out: Vec<u8>,
    out_eof: bool,
    /// How much of `out` `wait_for` has consumed.
    seen: usize,
    err_rx: Receiver<Vec<u8>>,
    status_rx: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
}

fn reader(mut r: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    rx
}

/// Spawns `cmd` in a new process group. stdout and stderr must be piped (as [`nook`] sets
/// them); stdin is whatever `cmd` says.
pub fn spawn(cmd: &mut Command) -> Proc {
    cmd.process_group(0);
    spawn_raw(cmd)
}

/// Makes the pty's `slave` the stdio and the controlling terminal of `cmd`, in a session
/// of its own: nook is then the foreground process group, as under an interactive shell.
/// Spawn it with [`spawn_raw`] or `Command::spawn` (the session is its own group).
pub fn on_terminal(cmd: &mut Command, slave: &std::os::fd::OwnedFd) {
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: setsid and ioctl are async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Spawns `cmd` as it is (the caller arranged its process group or session).
pub fn spawn_raw(cmd: &mut Command) -> Proc {
    let desc = describe(cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let pid = child.id() as i32;
    let out_rx = reader(child.stdout.take().expect("stdout must be piped"));
    let err_rx = reader(child.stderr.take().expect("stderr must be piped"));
    let stdin = child.stdin.take();
    let (tx, status_rx) = mpsc::channel();
    thread::spawn(move || {
        let st = child.wait().expect("wait for nook");
        let _ = tx.send(st);
    });
    Proc {
        pid,
        desc,
        stdin,
        writer: None,
        out_rx,
        out: Vec::new(),
        out_eof: false,
        seen: 0,
        err_rx,
        status_rx,
        status: None,
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$;&|<>()`\\".contains(c)) {
            s += &format!(" '{}'", a.replace('\'', "'\\''"));
        } else {
            s += &format!(" {a}");
        }
    }
    s
}

impl Proc {
    /// Writes `data` to the process's stdin from a thread, then closes it (EOF).
    pub fn feed_stdin(&mut self, data: Vec<u8>) {
        let mut stdin = self.stdin.take().expect("stdin must be piped to feed it");
        self.writer = Some(thread::spawn(move || {
            // EPIPE is fine: the container may stop reading early (that is its business).
            let _ = stdin.write_all(&data);
        }));
    }

    /// Writes `data` to stdin and keeps it open.
    pub fn write_stdin(&mut self, data: &[u8]) {
        self.stdin
            .as_mut()
            .expect("stdin must be piped to write to it")
            .write_all(data)
            .expect("write to nook's stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits until stdout holds a line containing `needle` (after what earlier calls
    /// consumed) and returns that line. Fails the test on EOF or at the deadline.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(nl) = self.out[self.seen..].iter().position(|&b| b == b'\n') {
                let line =
                    String::from_utf8_lossy(&self.out[self.seen..self.seen + nl]).into_owned();
                self.seen += nl + 1;
                if line.contains(needle) {
                    return line;
                }
            }
            if self.out_eof {
                self.fail(&format!(
                    "stdout closed before a line containing {needle:?}"
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out_rx.recv_timeout(left) {
                Ok(chunk) => self.out.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) => self.out_eof = true,
                Err(RecvTimeoutError::Timeout) => self.fail(&format!(
                    "no line containing {needle:?} on stdout within {timeout:?}"
                )),
            }
        }
    }

    /// Sends `sig` to the nook process itself (not its group).
    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid));
    }

    /// Kills nook's process group and every descendant (they may have left the group).
    pub fn kill_all(&self) {
        let victims = descendants(self.pid);
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), Signal::SIGKILL);
        for p in victims {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        self.kill_all();
        let status = self
            .status
            .or_else(|| self.status_rx.recv_timeout(Duration::from_secs(10)).ok());
        let mut err = Vec::new();
        while let Ok(c) = self.err_rx.recv_timeout(Duration::from_millis(500)) {
            err.extend(c);
        }
        while let Ok(c) = self.out_rx.try_recv() {
            self.out.extend(c);
        }
        panic!(
            "{why}\ncommand: {}\nstatus: {status:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.desc,
            clip(&self.out),
            clip(&err)
        );
    }

    /// Waits for nook to exit and for its stdout and stderr to close, all within `timeout`;
    /// at the deadline kills everything and fails the test.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        if self.status.is_none() {
            match self.status_rx.recv_timeout(timeout) {
                Ok(st) => self.status = Some(st),
                Err(_) => self.fail(&format!("nook did not exit within {timeout:?}")),
            }
        }
        while !self.out_eof {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out_rx.recv_timeout(left) {
                Ok(c) => self.out.extend(c),
                Err(RecvTimeoutError::Disconnected) => self.out_eof = true,
                Err(RecvTimeoutError::Timeout) => self.fail(
                    "nook exited but its stdout stayed open: a container process outlived it",
                ),
            }
        }
        let mut err = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err_rx.recv_timeout(left) {
                Ok(c) => err.extend(c),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => self.fail(
                    "nook exited but its stderr stayed open: a container process outlived it",
                ),
            }
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        Output {
            desc: std::mem::take(&mut self.desc),
            status: self.status.unwrap(),
            stdout: std::mem::take(&mut self.out),
            stderr: err,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            // A test failed (panicked) while nook ran: leave no container behind.
            self.kill_all();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Processes

fn ppid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn children(pid: i32) -> Vec<i32> {
    // /proc/PID/task/TID/children needs CONFIG_PROC_CHILDREN; scanning /proc always works.
    let mut kids = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
                if ppid(p) == Some(pid) {
                    kids.push(p);
                }
            }
        }
    }
    kids
}

/// Every live descendant of `pid` (host pids).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children(p) {
            all.push(c);
            todo.push(c);
        }
    }
    all
}

/// The host pid of the container's pid 1 (the descendant of `nook_pid` whose pid in its
/// innermost pid namespace is 1).
pub fn container_init(nook_pid: i32) -> Option<i32> {
    descendants(nook_pid).into_iter().find(|&p| {
        fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("NSpid:")).map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() >= 3 && f[f.len() - 1] == "1"
                })
            })
            .unwrap_or(false)
    })
}

// ---------------------------------------------------------------------------------------
// Root filesystems

/// The static busybox to build a root filesystem from, or why there is none.
pub fn static_busybox() -> Result<PathBuf, String> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let p = Path::new(p);
        if p.is_file() {
            return if is_static_elf(p) {
                Ok(p.to_path_buf())
            } else {
                Err(format!(
                    "{} is dynamically linked: install busybox-static",
                    p.display()
                ))
            };
        }
    }
    Err("no /bin/busybox: install busybox-static".into())
}

/// True when the ELF file has no PT_INTERP program header (needs no dynamic loader).
fn is_static_elf(p: &Path) -> bool {
    let Ok(b) = fs::read(p) else { return false };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false; // only ELF64 here
    }
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16at(0x36), u16at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) != 3
    })
}

/// A busybox root filesystem in a fresh temporary directory: /bin/busybox with a symlink
/// per applet, minimal /etc, empty /proc /dev /sys /tmp /root, and a marker file
/// `/etc/nook-rootfs-marker` holding the returned token.
pub struct Rootfs {
    pub dir: tempfile::TempDir,
    pub marker: String,
}

impl Rootfs {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn path_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }
}

pub fn busybox_rootfs() -> Result<Rootfs, String> {
    let bb = static_busybox()?;
    let dir = tempfile::Builder::new()
        .prefix("nook-rootfs-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let root = dir.path();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "dev", "sys", "tmp", "root", "run",
        "var/tmp",
    ] {
        fs::create_dir_all(root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))
        .map_err(|e| e.to_string())?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    fs::copy(&bb, root.join("bin/busybox")).map_err(|e| format!("copy busybox: {e}"))?;
    let list = Command::new(&bb)
        .arg("--list-full")
        .output()
        .map_err(|e| format!("busybox --list-full: {e}"))?;
    let mut n = 0;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        if !link.exists() {
            symlink("/bin/busybox", &link).map_err(|e| format!("symlink {applet}: {e}"))?;
            n += 1;
        }
    }
    if n < 50 || !root.join("bin/sh").exists() {
        return Err(format!("busybox --list-full gave only {n} applets"));
    }
    let marker = token();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(|e| e.to_string())?;
    fs::write(root.join("etc/group"), "root:x:0:\n").map_err(|e| e.to_string())?;
    fs::write(root.join("etc/nook-rootfs-marker"), &marker).map_err(|e| e.to_string())?;
    Ok(Rootfs { dir, marker })
}

/// A fresh temporary directory (for volumes, env files ...), world-readable so a mapped
/// user inside can read it.
pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("nook-test-")
        .tempdir()
        .expect("create a temp dir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    d
}

/// Parses `/proc/self/mountinfo`-format text into (mount point, fstype, mount options,
/// super options, major:minor, root) per mount.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(Mount {
                dev: pre.get(2)?.to_string(),
                root: unescape(pre.get(3)?),
                point: unescape(pre.get(4)?),
                opts: pre.get(5)?.to_string(),
                fstype: post.first()?.to_string(),
                source: post.get(1).map(|s| unescape(s)).unwrap_or_default(),
                super_opts: post.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[derive(Debug, Clone)]
pub struct Mount {
    pub dev: String,
    pub root: String,
    pub point: String,
    pub opts: String,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.opts.split(',').any(|o| o == "ro")
    }
}

/// The topmost mount at `point` in a mount table (the last one listed).
pub fn mount_at<'a>(mounts: &'a [Mount], point: &str) -> Option<&'a Mount> {
    mounts.iter().rev().find(|m| m.point == point)
}

/// Whether /dev/net/tun can be opened (the userspace network needs it); says SKIP if not.
pub fn tun_usable(test: &str) -> bool {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => true,
        Err(e) => {
            skip(
                test,
                &format!(
                    "/dev/net/tun is not usable ({e}): tests/run.sh makes it 0666 when run as root"
                ),
            );
            false
        }
    }
}

/// Whether `cmd` is on PATH.
pub fn has(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// Attempts from inside a container (the escape regression suite, tests/tests/security/)

/// The probe binary `nook-attack` (tests/src/bin/nook-attack.rs): `$NOOK_ATTACK_BIN`,
/// else beside the nook binary under test (tests/run.sh copies both to one directory;
/// cargo builds both into target/debug).
pub fn attack_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NOOK_ATTACK_BIN") {
        return PathBuf::from(p);
    }
    let bin = nook_bin().with_file_name("nook-attack");
    assert!(
        bin.is_file(),
        "the probe binary is not at {} (build it with `cargo build -p nook-tests`, or set \
         NOOK_ATTACK_BIN)",
        bin.display()
    );
    bin
}

/// Where [`attack_volume`] puts the probe inside a container.
pub const ATTACK: &str = "/nook-attack";

/// `-v` argument that binds the probe read-only at [`ATTACK`] (for the `host` image, whose
/// libraries are the host's, so the dynamically linked probe runs).
pub fn attack_volume() -> String {
    format!("{}:{ATTACK}:ro", attack_bin().display())
}

/// A word quoted for sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A shell script of attempts, each printing one line `KEY RESULT` (RESULT as the probe
/// prints it: `ok[ DETAIL]`, `err ENAME[ (where)]` or `timeout`); read the lines back
/// with [`attempt_results`].
#[derive(Default)]
pub struct Attempts {
    script: String,
}

impl Attempts {
    pub fn new() -> Attempts {
        Attempts::default()
    }

    /// `nook-attack ARGS` under `key`.
    pub fn probe(&mut self, key: &str, args: &[&str]) -> &mut Attempts {
        let words: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
        self.shell(key, &format!("{ATTACK} {}", words.join(" ")))
    }

    /// A shell command that prints one line, under `key`.
    pub fn shell(&mut self, key: &str, command: &str) -> &mut Attempts {
        assert!(!key.contains(char::is_whitespace), "key {key:?}");
        self.script += &format!("printf '%s ' {}; {command}\n", sh_quote(key));
        self
    }

    /// Like [`Attempts::shell`], with a key the shell expands (`"kill-$p"` in a loop).
    pub fn shell_keyed(&mut self, key_expr: &str, command: &str) -> &mut Attempts {
        assert!(!key_expr.contains(['"', '\\', '`']), "key {key_expr:?}");
        self.script += &format!("printf '%s ' \"{key_expr}\"; {command}\n");
        self
    }

    /// Raw script text (setup steps between attempts).
    pub fn raw(&mut self, text: &str) -> &mut Attempts {
        self.script += text;
        self.script.push('\n');
        self
    }

    pub fn script(&self) -> &str {
        &self.script
    }
}

/// The `KEY RESULT` lines of an [`Attempts`] run, by key. With `NOOK_TEST_SHOW=1` the
/// whole run is printed (`--nocapture` to see it), for reading what each attempt got.
pub fn attempt_results(o: &Output) -> std::collections::BTreeMap<String, String> {
    if std::env::var_os("NOOK_TEST_SHOW").is_some() {
        eprintln!("{o}");
    }
    o.out()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Asserts that attempt `key` failed with one of `errnos` (names as `EPERM`).
#[track_caller]
pub fn assert_refused(
    results: &std::collections::BTreeMap<String, String>,
    key: &str,
    errnos: &[&str],
    o: &Output,
) {
    let got = results
        .get(key)
        .unwrap_or_else(|| panic!("no result for attempt {key}\n{o}"));
    let errno = got
        .strip_prefix("err ")
        .and_then(|e| e.split_whitespace().next());
    assert!(
        errno.is_some_and(|e| errnos.contains(&e)),
        "attempt {key} should have been refused with {errnos:?}, got {got:?}\n{o}"
    );
}

/// Asserts that attempt `key` succeeded (a control: the probe could have seen it).
#[track_caller]
pub fn assert_ok(results: &std::collections::BTreeMap<String, String>, key: &str, o: &Output) {
    let got = results
        .get(key)
        .unwrap_or_else(|| panic!("no result for attempt {key}\n{o}"));
    assert!(
        got == "ok" || got.starts_with("ok "),
        "attempt {key} should have succeeded, got {got:?}\n{o}"
    );
}

// ---------------------------------------------------------------------------------------
// What a killed nook leaves running

/// The process state letter of `pid` (`R`, `S`, `D`, `Z` ...), None when it is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Live (not zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            found.push(pid);
        }
    }
    found
}

/// Waits until none of `pids` runs (a zombie another parent has not reaped counts as
/// gone) and no live process is left in process group `pgid`; fails at the deadline
/// with what is left, and at once on a process in D state.
pub fn wait_all_gone(pids: &[i32], pgid: i32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left: Vec<(i32, char)> = pids
            .iter()
            .filter_map(|&p| proc_state(p).map(|s| (p, s)))
            .filter(|&(_, s)| s != 'Z')
            .collect();
        for p in group_members(pgid) {
            if !left.iter().any(|&(q, _)| q == p) {
                left.push((p, proc_state(p).unwrap_or('?')));
            }
        }
        if left.is_empty() {
            return;
        }
        let cmdlines = || {
            left.iter()
                .map(|(p, s)| {
                    let cmd = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    format!(
                        "{p} {s} {}",
                        String::from_utf8_lossy(&cmd).replace('\0', " ")
                    )
                })
                .collect::<Vec<_>>()
        };
        if Instant::now() > deadline {
            panic!("{what}: processes left running: {:?}", cmdlines());
        }
        // Polling /proc with a deadline: there is nothing to wait on for processes
        // that are not our children.
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `ready` (a file appearing, a process starting: something observable) every
/// few milliseconds until it holds, and fails at the deadline saying `what`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a descendant of `pid` runs nook's store helper (`nook __store-helper`).
pub fn has_store_helper(pid: i32) -> bool {
    descendants(pid).iter().any(|p| {
        fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__store-helper"))
    })
}

// ---------------------------------------------------------------------------------------
// A store of the test's own

/// Deadline for store commands that unpack or copy big images.
pub const LONG: Duration = Duration::from_secs(180);

/// The names in `dir` (none when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A test's own store, HOME and runtime dir, for tests that look at everything nook
/// leaves behind; removed with `nook system reset` when dropped (the store holds files
/// of subordinate IDs, which only nook can remove).
pub struct Sandbox {
    pub home: tempfile::TempDir,
    pub runtime: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        assert_unprivileged();
        let runtime = tempdir();
        fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o700)).unwrap();
        Sandbox {
            home: tempdir(),
            runtime,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.home.path().join("store")
    }

    /// `nook ARGS` with this store, HOME and runtime dir, and no outside settings.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = nook();
        c.env("HOME", self.home.path())
            .env("NOOK_ROOT", self.root())
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NOOK_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .args(args);
        c
    }

    pub fn nook(&self, args: &[&str]) -> Output {
        spawn(&mut self.cmd(args)).wait(LONG)
    }

    /// What is in the store's tmp/.
    pub fn tmp(&self) -> Vec<String> {
        entries(&self.root().join("tmp"))
    }

    /// Where the copy driver keeps its container roots.
    pub fn copies_dir(&self) -> PathBuf {
        self.runtime.path().join("nook/copies")
    }

    /// `system check` is clean: it succeeds and names nothing corrupt or missing, and
    /// nothing is left under tmp/ or copies/. Returns its output.
    #[track_caller]
    pub fn assert_clean(&self) -> Output {
        let check = self.nook(&["system", "check"]);
        check.success();
        for bad in ["corrupt", "missing", "warning"] {
            assert!(!check.out().contains(bad), "{check}");
            assert!(!check.err().contains(bad), "{check}");
        }
        assert_eq!(
            self.tmp(),
            Vec::<String>::new(),
            "tmp/ after `system check`"
        );
        assert_eq!(
            entries(&self.copies_dir()),
            Vec::<String>::new(),
            "copies/ after `system check`"
        );
        check
    }

    /// A busybox root filesystem with `many` small files under /many and `big` random
    /// bytes in /big, as a tarball `NAME.tar` in HOME with owners 0 (the container's
    /// root, which is you).
    pub fn rootfs_tar(&self, name: &str, many: usize, big: usize) -> Result<PathBuf, String> {
        let rootfs = busybox_rootfs()?;
        let dir = rootfs.path().join("many");
        fs::create_dir(&dir).map_err(|e| e.to_string())?;
        for i in 0..many {
            fs::write(dir.join(format!("f{i:05}")), format!("file {i}\n"))
                .map_err(|e| e.to_string())?;
        }
        if big > 0 {
            fs::write(rootfs.path().join("big"), random_bytes(big)).map_err(|e| e.to_string())?;
        }
        let tar = self.home.path().join(format!("{name}.tar"));
        let out = Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
            .arg(rootfs.path())
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .map_err(|e| format!("tar: {e}"))?;
        if !out.status.success() {
            return Err(format!("tar: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(tar)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.cmd(&["system", "reset", "--force"]).output();
    }
}
