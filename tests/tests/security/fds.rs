//! See main.rs: this module's attempts are listed there and in docs/security.md.
//!
//! Descriptors of nook's caller, or of nook itself, reaching a container: a canary file
//! the caller holds on fd 7 (as a shell's `7>file`) must not be in the container for
//! `run`, `create`+`start`, `run -d`, `exec` and `oci run`; a working directory through
//! /proc/self/fd or /proc/self/cwd must not lead out of the container's root; a detached
//! container must not hold the caller's pipes (`x=$(nook run -d ...)` returns); what is
//! passed on purpose (`--preserve-fds N`, LISTEN_FDS) does cross, and nothing more. The
//! exec'd process's own /proc/PID/fd before it execs is exe.rs's watcher test.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nook_tests::*;
use serde_json::json;

/// The fd number a shell script would use for its own file (`exec 7>file`).
const CALLER_FD: RawFd = 7;

/// A private store and runtime directory: `rm`/`ps` see only this test's containers.
pub(crate) struct Store {
    root: tempfile::TempDir,
    runtime: tempfile::TempDir,
    names: std::cell::RefCell<Vec<String>>,
}

impl Store {
    pub(crate) fn new() -> Store {
        assert_unprivileged();
        let runtime = tempdir();
        std::fs::set_permissions(
            runtime.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Store {
            root: tempdir(),
            runtime,
            names: Default::default(),
        }
    }

    /// `nook ARGS` against this store (stdin /dev/null, stdout and stderr piped).
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_with(&nook_bin(), args)
    }

    /// [`Store::cmd`] with another copy of the nook binary.
    pub(crate) fn cmd_with(&self, bin: &std::path::Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.env("NOOK_ROOT", self.root.path())
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    }

    pub(crate) fn nook(&self, args: &[&str]) -> Output {
        spawn(&mut self.cmd(args)).wait(TIMEOUT)
    }

    /// A detached container that idles until the test ends; returns its name.
    pub(crate) fn idle(&self, flags: &[&str]) -> String {
        let name = format!("idle-{}", token());
        let mut args = vec!["run", "-d", "--network=none", "--name", &name];
        args.extend_from_slice(flags);
        args.extend(["host", "sleep", "1000"]);
        self.nook(&args).success();
        self.names.borrow_mut().push(name.clone());
        name
    }

    /// Removes `name` when the test ends (it was created by the test itself).
    pub(crate) fn forget_later(&self, name: &str) {
        self.names.borrow_mut().push(name.to_string());
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for name in self.names.borrow().iter() {
            let _ = spawn(&mut self.cmd(&["rm", "-f", name])).wait(TIMEOUT);
        }
    }
}

/// Makes each `(file, fd)` descriptor `fd` of `cmd`'s process, inheritable, as a shell's
/// `7>file` does. The sources are first moved above every target, so that no target
/// overwrites a source not yet placed.
pub(crate) fn give_fds(cmd: &mut Command, files: &[(&File, RawFd)]) {
    let pairs: Vec<(RawFd, RawFd)> = files.iter().map(|(f, fd)| (f.as_raw_fd(), *fd)).collect();
    // SAFETY: fcntl and dup2 are async-signal-safe; the closure allocates nothing (the
    // vector was built before the fork and is only read).
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0 as RawFd; 16];
            for (i, (src, _)) in pairs.iter().enumerate().take(16) {
                high[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, target)) in pairs.iter().enumerate().take(16) {
                if libc::dup2(high[i], *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A canary file the caller holds, and what it must still hold afterwards (nothing).
struct Canary {
    _dir: tempfile::TempDir,
    file: File,
    path: std::path::PathBuf,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempdir();
        let path = dir.path().join("canary");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        Canary {
            _dir: dir,
            file,
            path,
        }
    }

    #[track_caller]
    fn assert_untouched(&self, o: &Output) {
        let content = std::fs::read(&self.path).unwrap();
        assert!(
            content.is_empty(),
            "the container wrote {:?} into the caller's file\n{o}",
            String::from_utf8_lossy(&content)
        );
    }
}

/// In the container, shell: lists the shell's own descriptors (`ls` runs as its child,
/// with no substitution pipe open), between `fds:` and `:fds` lines.
const LIST_FDS: &str = "echo fds:; ls /proc/$$/fd; echo :fds";

/// [`LIST_FDS`], then a write to fd 7, which must fail (a shell error on stderr).
const PROBE: &str = "echo fds:; ls /proc/$$/fd; echo :fds; echo pwned >&7 && echo WROTE";

/// The descriptors [`LIST_FDS`] printed, in order: "0 1 2".
pub(crate) fn listed_fds(out: &str) -> String {
    let mut fds: Vec<u32> = out
        .lines()
        .skip_while(|l| *l != "fds:")
        .skip(1)
        .take_while(|l| *l != ":fds")
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    fds.sort_unstable();
    fds.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

#[track_caller]
fn assert_no_caller_fd(o: &Output, canary: &Canary) {
    assert_eq!(
        listed_fds(&o.out()),
        "0 1 2",
        "descriptors beyond stdio\n{o}"
    );
    assert!(!o.out().contains("WROTE"), "fd 7 was writable\n{o}");
    assert!(o.err().contains("Bad file descriptor"), "{o}");
    canary.assert_untouched(o);
}

#[test]
fn caller_fd_stays_out_of_run() {
    let store = Store::new();
    let canary = Canary::new();
    for flags in [&["--read-only"][..], &["--init"][..]] {
        let mut cmd = store.cmd(&["run", "--rm", "--network=none"]);
        cmd.args(flags).args(["host", "sh", "-c", PROBE]);
        give_fds(&mut cmd, &[(&canary.file, CALLER_FD)]);
        let o = spawn(&mut cmd).wait(TIMEOUT);
        assert_no_caller_fd(&o, &canary);
    }
}

#[test]
fn caller_fd_stays_out_of_create_and_start() {
    let store = Store::new();
    let canary = Canary::new();
    let name = format!("cs-{}", token());
    let mut create = store.cmd(&[
        "create",
        "--network=none",
        "--name",
        &name,
        "host",
        "sh",
        "-c",
        PROBE,
    ]);
    give_fds(&mut create, &[(&canary.file, CALLER_FD)]);
    spawn(&mut create).wait(TIMEOUT).success();
    store.forget_later(&name);
    let mut start = store.cmd(&["start", "-a", &name]);
    give_fds(&mut start, &[(&canary.file, CALLER_FD)]);
    let o = spawn(&mut start).wait(TIMEOUT);
    assert_no_caller_fd(&o, &canary);
}

#[test]
fn caller_fd_stays_out_of_run_detached() {
    let store = Store::new();
    let canary = Canary::new();
    let name = format!("rd-{}", token());
    let mut run = store.cmd(&[
        "run",
        "-d",
        "--network=none",
        "--name",
        &name,
        "host",
        "sh",
        "-c",
        PROBE,
    ]);
    give_fds(&mut run, &[(&canary.file, CALLER_FD)]);
    spawn(&mut run).wait(TIMEOUT).success();
    store.forget_later(&name);
    store.nook(&["wait", &name]).success();
    let o = store.nook(&["logs", &name]);
    o.success();
    // `logs` interleaves the container's stdout and stderr on its own stdout and stderr.
    assert_eq!(listed_fds(&o.out()), "0 1 2", "{o}");
    assert!(!o.out().contains("WROTE"), "{o}");
    canary.assert_untouched(&o);
}

#[test]
fn caller_fd_stays_out_of_exec() {
    let store = Store::new();
    let canary = Canary::new();
    let name = store.idle(&[]);
    for flags in [&[][..], &["-i"][..], &["-d"][..]] {
        let mut cmd = store.cmd(&["exec"]);
        cmd.args(flags).args([&name, "sh", "-c", PROBE]);
        give_fds(&mut cmd, &[(&canary.file, CALLER_FD)]);
        let o = spawn(&mut cmd).wait(TIMEOUT);
        if flags == ["-d"] {
            o.success();
        } else {
            assert_no_caller_fd(&o, &canary);
        }
    }
    // The detached one wrote (or failed to) on its own time: it had the caller's stdout.
    canary.assert_untouched(&store.nook(&["ps"]));
}

/// A host directory given as fd 7: through /proc/self/fd/7 a working directory would be
/// the host's. Refused for run and exec; and /proc/self/cwd is the container's own root.
#[test]
fn workdir_through_proc_self_fd_is_refused() {
    let store = Store::new();
    let host_dir = tempdir();
    std::fs::write(host_dir.path().join("host-canary"), "x").unwrap();
    let dir = File::open(host_dir.path()).unwrap();
    let probe = "pwd -P; ls";
    let mut cmd = store.cmd(&[
        "run",
        "--rm",
        "--network=none",
        "-w",
        "/proc/self/fd/7",
        "host",
        "sh",
        "-c",
        probe,
    ]);
    give_fds(&mut cmd, &[(&dir, CALLER_FD)]);
    let o = spawn(&mut cmd).wait(TIMEOUT);
    o.assert_error_line(125, &["working directory", "/proc/self/fd/7"]);
    assert!(!o.out().contains("host-canary"), "{o}");

    let name = store.idle(&[]);
    // Whatever numbers nook's own descriptors have: none is a directory of the host.
    for n in 3..24 {
        let w = format!("/proc/self/fd/{n}");
        let mut cmd = store.cmd(&["exec", "-w", &w, &name, "sh", "-c", probe]);
        give_fds(&mut cmd, &[(&dir, CALLER_FD)]);
        let o = spawn(&mut cmd).wait(TIMEOUT);
        o.assert_error_line(125, &["working directory", &w]);
        assert!(!o.out().contains("host-canary"), "{o}");
    }
    // /proc/self/cwd is the process's own working directory: the container's root.
    let o = store.nook(&["exec", "-w", "/proc/self/cwd", &name, "sh", "-c", probe]);
    o.success();
    assert!(o.out().starts_with("/\n"), "{o}");
    assert!(!o.out().contains("host-canary"), "{o}");
}

/// A host directory passed on purpose (`--preserve-fds`) is the container's to read, but
/// no working directory through it: the path is a /proc magic link, which the resolver
/// refuses, and the chdir would lead outside the container's root, which the check after
/// it refuses (runc's fix of CVE-2024-21626).
#[test]
fn workdir_through_a_passed_host_directory_is_refused() {
    let store = Store::new();
    let host_dir = tempdir();
    std::fs::write(host_dir.path().join("host-canary"), "x").unwrap();
    let dir = File::open(host_dir.path()).unwrap();
    let name = store.idle(&[]);
    let runs: [Vec<&str>; 2] = [
        vec![
            "run",
            "--rm",
            "--network=none",
            "--preserve-fds",
            "1",
            "-w",
            "/proc/self/fd/3",
            "host",
        ],
        vec![
            "exec",
            "--preserve-fds",
            "1",
            "-w",
            "/proc/self/fd/3",
            &name,
        ],
    ];
    for args in runs {
        let mut cmd = store.cmd(&args);
        cmd.args(["sh", "-c", "pwd; ls"]);
        give_fds(&mut cmd, &[(&dir, 3)]);
        let o = spawn(&mut cmd).wait(TIMEOUT);
        // `run` creates a missing working directory first, and the resolver already
        // refuses a /proc magic link there; `exec` creates nothing, and the check after
        // the chdir refuses.
        o.assert_error_line(125, &["/proc/self/fd/3"]);
        let err = o.err();
        assert!(
            err.contains("outside the container's root") || err.contains("magic link"),
            "{o}"
        );
        assert!(!o.out().contains("host-canary"), "{o}");
    }
}

#[test]
fn preserve_fds_passes_exactly_those() {
    let store = Store::new();
    let dir = tempdir();
    let passed = dir.path().join("passed");
    std::fs::write(&passed, "passed-content\n").unwrap();
    let third = File::open(&passed).unwrap();
    let canary = Canary::new();
    let probe = format!("{LIST_FDS}; cat <&3");
    let name = store.idle(&[]);
    let detached = format!("pd-{}", token());
    store.forget_later(&detached);
    let runs: [Vec<&str>; 4] = [
        vec![
            "run",
            "--rm",
            "--network=none",
            "--preserve-fds",
            "1",
            "host",
        ],
        vec![
            "run",
            "--rm",
            "--network=none",
            "--init",
            "--preserve-fds",
            "1",
            "host",
        ],
        vec!["exec", "--preserve-fds", "1", &name],
        // Detached: through the supervisor, whose logger keeps none of them; `start -a`
        // of the same container later passes nothing (those descriptors are gone).
        vec![
            "run",
            "-d",
            "--network=none",
            "--name",
            &detached,
            "--preserve-fds",
            "1",
            "host",
        ],
    ];
    for args in runs {
        // Opened anew for each: the container reads it to its end.
        let third = File::open(&passed).unwrap();
        let mut cmd = store.cmd(&args);
        cmd.args(["sh", "-c", &probe]);
        // fd 4 is the caller's too, and not passed.
        give_fds(&mut cmd, &[(&third, 3), (&canary.file, 4)]);
        let mut o = spawn(&mut cmd).wait(TIMEOUT);
        o.success();
        if args[1] == "-d" {
            store.nook(&["wait", &detached]).success();
            o = store.nook(&["logs", &detached]);
        }
        assert_eq!(listed_fds(&o.out()), "0 1 2 3", "{o}");
        assert!(o.out().contains("passed-content"), "{o}");
    }
    let o = store.nook(&["start", "-a", &detached]);
    assert_eq!(listed_fds(&o.out()), "0 1 2", "{o}");
    // Asking for more than is open is a clear error, not one of nook's own descriptors.
    let mut cmd = store.cmd(&[
        "run",
        "--rm",
        "--network=none",
        "--preserve-fds",
        "2",
        "host",
        "true",
    ]);
    give_fds(&mut cmd, &[(&third, 3)]);
    spawn(&mut cmd)
        .wait(TIMEOUT)
        .assert_error_line(125, &["--preserve-fds 2", "descriptor 4 is not open"]);
    spawn(&mut store.cmd(&["create", "--preserve-fds", "1", "host", "true"]))
        .wait(TIMEOUT)
        .assert_error_line(125, &["--preserve-fds", "nook run"]);
}

/// Socket activation as systemd hands it on: LISTEN_FDS descriptors from 3, for the
/// process LISTEN_PID names. The command gets them, told with its own pid (1; 2 under
/// --init, where the reaper is 1).
#[test]
fn listen_fds_pass_socket_activation() {
    let store = Store::new();
    let dir = tempdir();
    let sock = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
    let listener = File::from(std::os::fd::OwnedFd::from(sock));
    let probe = format!(
        "echo env=$LISTEN_FDS,$LISTEN_PID,$LISTEN_FDNAMES; {LIST_FDS}; \
         test -S /proc/$$/fd/3 && echo socket"
    );
    for (flags, pid) in [(&[][..], "1"), (&["--init"][..], "2")] {
        // `exec` keeps the shell's pid: LISTEN_PID=$$ names nook.
        let mut args = vec!["run", "--rm", "--network=none"];
        args.extend_from_slice(flags);
        args.extend(["host", "sh", "-c", &probe]);
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec \"$@\"",
            "sh",
        ])
        .arg(nook_bin())
        .args(&args)
        .env("NOOK_ROOT", store.root.path())
        .env("XDG_RUNTIME_DIR", store.runtime.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        give_fds(&mut cmd, &[(&listener, 3)]);
        let o = spawn(&mut cmd).wait(TIMEOUT);
        o.success();
        assert!(o.out().contains(&format!("env=1,{pid},web\n")), "{o}");
        assert_eq!(listed_fds(&o.out()), "0 1 2 3", "{o}");
        assert!(o.out().contains("socket\n"), "{o}");
    }
    // LISTEN_PID naming another process (a variable inherited from a socket-activated
    // parent): nothing is passed, and nothing announced.
    let mut cmd = store.cmd(&["run", "--rm", "--network=none", "host", "sh", "-c", &probe]);
    cmd.env("LISTEN_PID", "1").env("LISTEN_FDS", "1");
    give_fds(&mut cmd, &[(&listener, 3)]);
    let o = spawn(&mut cmd).wait(TIMEOUT);
    assert!(o.out().contains("env=,,\n"), "{o}");
    assert_eq!(listed_fds(&o.out()), "0 1 2", "{o}");
}

/// `x=$(nook run -d ...)` and `nook run -d ... | cat` return while the container runs,
/// although the shell's pipe is also on fd 9 (a script's redirection): neither the
/// container nor its supervisor or logger hold it.
#[test]
fn run_detached_returns_under_command_substitution_and_pipes() {
    let store = Store::new();
    let name = format!("sub-{}", token());
    let script = format!(
        "x=$(exec 9>&1; \"$0\" run -d --network=none --name {name} host sleep 1000); \
         echo \"id=$x\"; \
         exec 9>&1; \"$0\" run -d --network=none --name {name}-pipe host sleep 1000 | cat"
    );
    store.forget_later(&name);
    store.forget_later(&format!("{name}-pipe"));
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .arg(nook_bin())
        .env("NOOK_ROOT", store.root.path())
        .env("XDG_RUNTIME_DIR", store.runtime.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // wait() fails the test if the shell, or its stdout, stays open past the deadline:
    // the containers sleep far longer.
    let o = spawn(&mut cmd).wait(TIMEOUT);
    o.success();
    let lines: Vec<&str> = o
        .stdout
        .split(|&b| b == b'\n')
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    assert!(
        lines[0].starts_with("id=") && lines[0].len() == 3 + 64,
        "{o}"
    );
    assert_eq!(lines[1].len(), 64, "{o}");
    let ps = store.nook(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.out().contains(&format!("{name} Up")), "{ps}");
}

/// `nook oci run`, as conmon drives a runtime: the caller's fd 7 stays out, fd 3 passed
/// with `--preserve-fds 1` comes in.
#[test]
fn oci_run_passes_only_what_is_preserved() {
    assert_unprivileged();
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(why) => return skip("oci_run_passes_only_what_is_preserved", &why),
    };
    let bundle = tempdir();
    let state = tempdir();
    spawn(
        nook()
            .args(["oci", "spec", "--rootless", "--bundle"])
            .arg(bundle.path()),
    )
    .wait(TIMEOUT)
    .success();
    let config = bundle.path().join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    c["root"]["path"] = json!(rootfs.path_str());
    c["root"]["readonly"] = json!(false);
    c["process"]["terminal"] = json!(false);
    c["process"]["args"] = json!([
        "sh",
        "-c",
        "echo fds:; ls /proc/$$/fd; echo :fds; cat <&3; echo pwned >&7 && echo WROTE"
    ]);
    std::fs::write(&config, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    let dir = tempdir();
    let passed_path = dir.path().join("passed");
    std::fs::write(&passed_path, "passed-content\n").unwrap();
    let passed = File::open(&passed_path).unwrap();
    let canary = Canary::new();
    let mut cmd = nook();
    cmd.args(["oci", "--root"])
        .arg(state.path())
        .args(["run", "--preserve-fds", "1", "--bundle"])
        .arg(bundle.path())
        .arg(format!("fd-{}", token()));
    give_fds(&mut cmd, &[(&passed, 3), (&canary.file, CALLER_FD)]);
    let o = spawn(&mut cmd).wait(TIMEOUT);
    assert_eq!(listed_fds(&o.out()), "0 1 2 3", "{o}");
    assert!(o.out().contains("passed-content"), "{o}");
    assert!(!o.out().contains("WROTE"), "{o}");
    canary.assert_untouched(&o);
}
