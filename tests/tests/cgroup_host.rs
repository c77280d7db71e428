//! Resource flags on a host that cannot enforce them (this CI host is hybrid: v1
//! controllers plus a controller-less cgroup2). A run without limits works and keeps
//! stderr clean; a limit that cannot be enforced fails with 125 and one line saying why;
//! the "running without resource limits" notice appears on a terminal, once.
//!
//! On a host that does delegate cgroup v2 to the user, the tests that expect a refusal
//! print SKIP (the VM lane's tests cover that case).

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nook_tests::*;

/// Whether this host offers no delegated cgroup v2 to us (hybrid, v1, or not delegated):
/// what `nook run --memory` must refuse.
fn limits_unavailable() -> bool {
    let pure_v2 = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
    if !pure_v2 {
        return true;
    }
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    let dir = format!("/sys/fs/cgroup{path}");
    let writable = |p: &str| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    !(writable(&format!("{dir}/cgroup.procs"))
        || std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some())
}

#[test]
fn a_run_without_limits_works_and_keeps_stderr_clean() {
    assert_unprivileged();
    let o = run(&["--rm", "--network=none", "host", "echo", "ok"]);
    o.success();
    assert_eq!(o.out(), "ok\n", "{o}");
    assert!(o.stderr.is_empty(), "no notice off a terminal\n{o}");
}

#[test]
fn a_memory_limit_that_cannot_be_enforced_fails_with_125() {
    assert_unprivileged();
    if !limits_unavailable() {
        skip(
            "a_memory_limit_that_cannot_be_enforced_fails_with_125",
            "this host delegates cgroup v2: limits are enforced (the VM lane tests them)",
        );
        return;
    }
    let o = run(&["--rm", "--network=none", "--memory", "64m", "host", "true"]);
    o.assert_error_line(125, &["cannot enforce", "--memory"]);
    let err = o.err();
    assert!(
        err.contains("hybrid") || err.contains("v1") || err.contains("delegated"),
        "the error should say why: {err}"
    );
    let o = run(&[
        "--rm",
        "--network=none",
        "--cpus",
        "1",
        "--pids-limit",
        "10",
        "host",
        "true",
    ]);
    o.assert_error_line(125, &["--cpus", "--pids-limit"]);
}

#[test]
fn cgroups_disabled_refuses_limits_and_runs_without() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "--network=none",
        "--cgroups=disabled",
        "--pids-limit",
        "10",
        "host",
        "true",
    ]);
    o.assert_error_line(125, &["--pids-limit", "--cgroups=disabled"]);
    run(&[
        "--rm",
        "--network=none",
        "--cgroups=disabled",
        "host",
        "true",
    ])
    .success();
    let o = run(&["--rm", "--network=none", "--cgroups=split", "host", "true"]);
    o.assert_error_line(125, &["--cgroups"]);
}

#[test]
fn bad_limit_values_fail_with_125_before_anything_runs() {
    assert_unprivileged();
    for (flag, value) in [
        ("--memory", "12x"),
        ("--cpus", "lots"),
        ("--cpuset-cpus", "3-1"),
        ("--memory", "1k"),
    ] {
        let o = run(&["--rm", "--network=none", flag, value, "host", "echo", "ran"]);
        o.assert_error_line(125, &[flag]);
        assert!(!o.out().contains("ran"), "{o}");
    }
}

#[test]
fn pause_and_stats_say_what_is_missing() {
    assert_unprivileged();
    let nosuch = format!("nosuch-{}", token());
    let o = spawn(nook().args(["pause", &nosuch])).wait(TIMEOUT);
    o.assert_error_line(125, &["no such container", &nosuch]);
    if !limits_unavailable() {
        return;
    }
    let name = format!("nocg-{}", token());
    let mut p = spawn(nook().args([
        "run",
        "--rm",
        "--init",
        "--network=none",
        "--name",
        &name,
        "host",
        "sh",
        "-c",
        "echo ready; exec sleep 100",
    ]));
    p.wait_for("ready", TIMEOUT);
    let o = spawn(nook().args(["pause", &name])).wait(TIMEOUT);
    o.assert_error_line(125, &["has no cgroup"]);
    let o = spawn(nook().args(["stats", "--no-stream"])).wait(TIMEOUT);
    o.success();
    assert!(o.out().starts_with("ID "), "{o}");
    assert!(!o.out().contains(&name), "{o}");
    p.signal(Signal::SIGTERM);
    p.wait(TIMEOUT).assert_code(143);
}

/// Runs `nook run ... true` with stderr on a pseudo-terminal; returns what it printed there.
fn stderr_on_a_terminal(runtime: &std::path::Path) -> String {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let master = pty.master;
    let mut child = nook()
        .args(["run", "--rm", "--network=none", "host", "true"])
        .env("XDG_RUNTIME_DIR", runtime)
        .stdout(Stdio::null())
        .stderr(Stdio::from(pty.slave))
        .spawn()
        .expect("spawn nook");
    let end = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("nook did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(child);
    assert!(status.success(), "nook run failed: {status:?}");
    let flags = nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
    let mut out = Vec::new();
    let mut f = fs::File::from(master);
    let mut buf = [0u8; 4096];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_no_limits_notice_shows_once_on_a_terminal() {
    assert_unprivileged();
    if !limits_unavailable() {
        skip(
            "the_no_limits_notice_shows_once_on_a_terminal",
            "this host delegates cgroup v2: there is nothing to notice",
        );
        return;
    }
    let runtime = tempdir();
    fs::set_permissions(
        runtime.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let first = stderr_on_a_terminal(runtime.path());
    assert!(
        first.contains("running without resource limits") && first.lines().count() == 1,
        "one notice line expected on the first run: {first:?}"
    );
    let second = stderr_on_a_terminal(runtime.path());
    assert!(second.is_empty(), "the notice repeats: {second:?}");
}
