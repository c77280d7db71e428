//! The FUSE root under kill -9: of the supervisor (nook itself) and of the container.
//! Either way every process of the container and the FUSE server must be gone (no
//! process left, none in D state: the mount went with the container's mount namespace),
//! and what the container wrote must be in its writable layer.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nook_tests::*;

fn state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Waits until none of `pids` exists (zombies of other parents count as gone); fails
/// on a D-state process or at the deadline.
fn all_gone(pids: &[i32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive: Vec<(i32, char)> = pids
            .iter()
            .filter_map(|&p| state(p).map(|s| (p, s)))
            .filter(|&(_, s)| s != 'Z')
            .collect();
        if alive.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: processes left behind (pid, state): {alive:?}");
        }
        // Polling /proc with a deadline: there is nothing to wait on for other
        // processes' children.
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(test: &str) -> Option<(Rootfs, tempfile::TempDir, Proc)> {
    assert_unprivileged();
    let base = match busybox_rootfs() {
        Ok(r) => r,
        Err(e) => {
            skip(test, &e);
            return None;
        }
    };
    let ctr = tempdir();
    let mut cmd = nook();
    cmd.args(["run", "--rm", "--storage-driver", "fuse", "--layer"])
        .arg(base.path())
        .arg("--rootfs")
        .arg(ctr.path())
        .args([
            "/bin/sh",
            "-c",
            "echo written > /f && echo ready && exec sleep 1000",
        ]);
    let mut p = spawn(&mut cmd);
    p.wait_for("ready", TIMEOUT);
    Some((base, ctr, p))
}

fn check_upper(ctr: &Path) {
    assert_eq!(fs::read_to_string(ctr.join("diff/f")).unwrap(), "written\n");
}

#[test]
fn fuse_root_survives_kill_9_of_the_supervisor() {
    let test = "fuse_root_survives_kill_9_of_the_supervisor";
    let Some((_base, ctr, p)) = start(test) else {
        return;
    };
    let victims = descendants(p.pid);
    assert!(
        victims.len() >= 2,
        "expected the container and the FUSE server: {victims:?}"
    );
    p.signal(Signal::SIGKILL);
    let out = p.wait(TIMEOUT);
    assert_eq!(out.status.signal(), Some(9), "{}", out.desc);
    all_gone(&victims, "after kill -9 of nook");
    check_upper(ctr.path());
    let _ = std::process::Command::new(nook_bin())
        .args(["unshare", "rm", "-rf"])
        .arg(ctr.path().join("diff"))
        .output();
}

#[test]
fn fuse_root_survives_kill_9_of_the_container() {
    let test = "fuse_root_survives_kill_9_of_the_container";
    let Some((_base, ctr, p)) = start(test) else {
        return;
    };
    let victims = descendants(p.pid);
    let init = container_init(p.pid).expect("the container's pid 1");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), Signal::SIGKILL).unwrap();
    let out = p.wait(TIMEOUT);
    assert_eq!(out.code(), 137, "{}: {}", out.desc, out.err());
    all_gone(&victims, "after kill -9 of the container");
    check_upper(ctr.path());
}

use std::os::unix::process::ExitStatusExt;
