//! podman as nook's client: `podman --runtime <nook-runtime> ...` with a locally built
//! busybox image, rootless. podman drives the runtime through conmon with the runc
//! command line (create/start/state/kill/delete/exec), so this is the acceptance test of
//! `nook-runtime` against a real engine: run --rm, run -d, exec, logs, ps, stop, kill,
//! and pause/unpause where podman has a cgroup to freeze.
//!
//! Each test gets its own podman: storage, run root, tmpdir (which holds podman's pause
//! process pid file), XDG dirs and nook's state all live in one temporary directory, so
//! nothing of the account's own podman or nook use is touched and nothing is left
//! behind (the guard removes the containers, the subordinate-ID-owned storage and the
//! pause process).
//!
//! podman itself, not nook, needs the account's subordinate ID range and a working
//! rootless setup: where the podman-only `import` fails the test SKIPs with podman's
//! error. Once the image is in, every failure is the runtime's.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nook_tests::*;

const IMAGE: &str = "localhost/nook-podman-test:latest";

/// One isolated podman with nook as its runtime.
struct Podman {
    dir: tempfile::TempDir,
    runtime: PathBuf,
    /// The token in the image's /etc/nook-rootfs-marker.
    marker: String,
}

impl Podman {
    /// None (after a SKIP line) where podman or busybox is missing, or podman cannot
    /// work rootless here (its own `import` fails).
    fn new(test: &str) -> Option<Podman> {
        assert_unprivileged();
        if !has("podman") {
            skip(test, "podman is not installed (apt-get install podman)");
            return None;
        }
        let rootfs = match busybox_rootfs() {
            Ok(r) => r,
            Err(why) => {
                skip(test, &why);
                return None;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("nook-podman-")
            .tempdir()
            .expect("create a temp dir");
        for d in ["bin", "xdg-run", "xdg-config", "xdg-data", "tmp"] {
            let p = dir.path().join(d);
            fs::create_dir(&p).expect("mkdir in the temp dir");
            // podman insists on a private XDG_RUNTIME_DIR.
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
        }
        let runtime = runtime_link(dir.path());
        let p = Podman {
            dir,
            runtime,
            marker: rootfs.marker.clone(),
        };

        let tar = p.dir.path().join("image.tar");
        let out = spawn(
            Command::new("tar")
                .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
                .arg(rootfs.path())
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .wait(TIMEOUT);
        out.success();
        let import = p.podman(&["import", tar.to_str().unwrap(), IMAGE]);
        if import.code() != 0 {
            skip(
                test,
                &format!(
                    "podman cannot work rootless here (its own `podman import` failed, no \
                     runtime involved): {}",
                    import.err().trim().replace('\n', " | ")
                ),
            );
            return None;
        }
        Some(p)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `podman` with this instance's storage, runtime and environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("XDG_RUNTIME_DIR", self.path("xdg-run"))
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            .env("XDG_DATA_HOME", self.path("xdg-data"))
            .arg("--root")
            .arg(self.path("storage"))
            .arg("--runroot")
            .arg(self.path("runroot"))
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn podman(&self, args: &[&str]) -> Output {
        spawn(&mut self.cmd(args)).wait(TIMEOUT)
    }

    /// `podman ARGS`, which must succeed.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        let out = self.podman(args);
        assert_eq!(out.code(), 0, "podman failed\n{out}");
        out
    }

    /// A detached busybox container that says `ready`, answers SIGUSR1 with `got-usr1`
    /// and SIGTERM with `got-term` and status 3. `wait` is interruptible by a trapped
    /// signal, a foreground `sleep` would delay the trap until it ends.
    fn run_detached(&self, name: &str) {
        let script = "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 3' TERM; \
                      echo ready; while :; do sleep 1000 & wait $!; done";
        self.ok(&["run", "-d", "--name", name, IMAGE, "sh", "-c", script]);
        self.wait_log(name, "ready");
    }

    /// Waits (with a deadline) until the container's log has a line containing `needle`.
    fn wait_log(&self, name: &str, needle: &str) {
        let mut follow = spawn(&mut self.cmd(&["logs", "-f", name]));
        follow.wait_for(needle, TIMEOUT);
        follow.kill_all();
        let _ = follow.wait(TIMEOUT);
    }

    fn inspect(&self, name: &str, field: &str) -> String {
        self.ok(&["inspect", "--format", &format!("{{{{{field}}}}}"), name])
            .line()
    }

    /// nook's state directories left in its default root (podman passes no --root).
    fn nook_states(&self) -> Vec<String> {
        match fs::read_dir(self.path("xdg-run/nook/oci")) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The runtime path to give podman: `nook-runtime` beside NOOK_BIN when there is one,
/// else a link of that name to NOOK_BIN in `dir/bin` (nook picks its runc command line
/// by the name it is invoked as).
fn runtime_link(dir: &Path) -> PathBuf {
    let bin = nook_bin();
    let beside = bin.with_file_name("nook-runtime");
    if beside.exists() {
        return beside;
    }
    let link = dir.join("bin/nook-runtime");
    symlink(&bin, &link).expect("symlink nook-runtime");
    link
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Best effort, so that a failed test leaves no container, storage or pause
        // process behind: storage files belong to subordinate IDs, so only podman's own
        // user namespace can remove them.
        let _ = spawn(&mut self.cmd(&["rm", "-a", "-f", "-t", "0"])).wait(TIMEOUT);
        let _ = spawn(
            self.cmd(&["unshare", "rm", "-rf"])
                .args([self.path("storage"), self.path("runroot")]),
        )
        .wait(TIMEOUT);
        if let Some(pid) = fs::read_to_string(self.path("tmp/pause.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let ours = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "podman pause")
                .unwrap_or(false);
            if ours {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

#[test]
fn run_rm_echo() {
    let Some(p) = Podman::new("run_rm_echo") else {
        return;
    };
    let out = p.ok(&["run", "--rm", IMAGE, "echo", "hi"]);
    assert_eq!(out.line(), "hi", "{out}");
    // The container ran in the image's root, not the host's.
    let out = p.ok(&["run", "--rm", IMAGE, "cat", "/etc/nook-rootfs-marker"]);
    assert_eq!(out.line(), p.marker, "{out}");
    assert!(
        p.ok(&["ps", "-a", "-q"]).line().is_empty(),
        "run --rm left a container"
    );
    assert_eq!(
        p.nook_states(),
        Vec::<String>::new(),
        "nook left state behind"
    );
}

#[test]
fn run_rm_status_and_root() {
    let Some(p) = Podman::new("run_rm_status_and_root") else {
        return;
    };
    let out = p.podman(&["run", "--rm", IMAGE, "sh", "-c", "cat /etc/passwd; exit 7"]);
    assert_eq!(out.code(), 7, "the container's exit status\n{out}");
    assert!(out.out().contains("root:x:0:0"), "{out}");
}

#[test]
fn detached_logs_ps_stop() {
    let Some(p) = Podman::new("detached_logs_ps_stop") else {
        return;
    };
    p.run_detached("c1");
    let ps = p.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]).out();
    assert!(
        ps.lines().any(|l| l.starts_with("c1 Up")),
        "podman ps should list c1 as Up:\n{ps}"
    );
    assert_eq!(p.inspect("c1", ".State.Status"), "running");
    p.ok(&["stop", "-t", "30", "c1"]);
    assert_eq!(p.inspect("c1", ".State.Status"), "exited");
    assert_eq!(
        p.inspect("c1", ".State.ExitCode"),
        "3",
        "stop should deliver SIGTERM, which the container traps"
    );
    let logs = p.ok(&["logs", "c1"]).out();
    assert!(
        logs.contains("ready") && logs.contains("got-term"),
        "logs:\n{logs}"
    );
    // A stopped container starts again.
    p.ok(&["start", "c1"]);
    p.wait_log("c1", "ready");
    assert_eq!(p.inspect("c1", ".State.Status"), "running");
    p.ok(&["rm", "-f", "-t", "0", "c1"]);
    assert!(p.ok(&["ps", "-a", "-q"]).line().is_empty());
    assert_eq!(
        p.nook_states(),
        Vec::<String>::new(),
        "nook left state behind"
    );
}

#[test]
fn detached_exec() {
    let Some(p) = Podman::new("detached_exec") else {
        return;
    };
    p.run_detached("c1");
    let out = p.ok(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "echo exec-$((6*7)); cat /etc/nook-rootfs-marker; echo; cat /proc/1/cmdline",
    ]);
    let text = out.out();
    assert!(
        text.starts_with(&format!("exec-42\n{}\n", p.marker)),
        "exec should run in the container's root\n{out}"
    );
    assert!(
        text.contains("echo ready"),
        "exec should run in the container's pid namespace, where pid 1 is its shell\n{out}"
    );
    let out = p.podman(&["exec", "c1", "sh", "-c", "exit 5"]);
    assert_eq!(out.code(), 5, "exec's exit status\n{out}");
    p.ok(&["rm", "-f", "-t", "0", "c1"]);
}

#[test]
fn detached_kill() {
    let Some(p) = Podman::new("detached_kill") else {
        return;
    };
    p.run_detached("c1");
    p.ok(&["kill", "--signal", "USR1", "c1"]);
    p.wait_log("c1", "got-usr1");
    assert_eq!(p.inspect("c1", ".State.Status"), "running");
    p.ok(&["kill", "c1"]);
    let out = spawn(&mut p.cmd(&["wait", "c1"])).wait(TIMEOUT);
    assert_eq!(out.line(), "137", "podman kill sends SIGKILL\n{out}");
    p.ok(&["rm", "c1"]);
    assert_eq!(
        p.nook_states(),
        Vec::<String>::new(),
        "nook left state behind"
    );
}

#[test]
fn detached_pause() {
    let Some(p) = Podman::new("detached_pause") else {
        return;
    };
    p.run_detached("c1");
    let out = p.podman(&["pause", "c1"]);
    if out.code() != 0 && out.err().to_lowercase().contains("cgroup") {
        // podman checks for a cgroup before it asks the runtime: rootless on cgroup v1
        // (this hybrid host included) its containers have none.
        skip(
            "detached_pause",
            &format!(
                "podman refuses to pause here, before calling the runtime: {}",
                out.err().trim().replace('\n', " | ")
            ),
        );
        p.ok(&["rm", "-f", "-t", "0", "c1"]);
        return;
    }
    assert_eq!(out.code(), 0, "podman pause\n{out}");
    assert_eq!(p.inspect("c1", ".State.Status"), "paused");
    p.ok(&["unpause", "c1"]);
    assert_eq!(p.inspect("c1", ".State.Status"), "running");
    p.ok(&["kill", "--signal", "USR1", "c1"]);
    p.wait_log("c1", "got-usr1");
    p.ok(&["rm", "-f", "-t", "0", "c1"]);
}

/// Issue 17, point 1: podman's tmpfs mounts carry options of its own (`tmpcopyup`) that
/// must not reach the kernel; `tmpcopyup` is honoured (the image's files at the mount
/// point are on the tmpfs), `notmpcopyup` gives an empty one, `--read-only` gets its
/// writable /tmp, /run and /var/tmp.
#[test]
fn tmpfs_mounts_with_podmans_options() {
    let Some(p) = Podman::new("tmpfs_mounts_with_podmans_options") else {
        return;
    };
    let script = "set -e; grep -E ' /(etc|vol1|vol2) ' /proc/mounts | cut -d' ' -f2,3 | sort; \
                  cat /etc/nook-rootfs-marker; echo; stat -c '%a' /vol2; \
                  echo new > /etc/new-file; cat /etc/new-file; \
                  grep -c size=1024k /proc/mounts";
    let out = p.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/etc",
        "--tmpfs",
        "/vol1:size=1m",
        "--mount",
        "type=tmpfs,dst=/vol2,tmpfs-mode=0700",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..3],
        &["/etc tmpfs", "/vol1 tmpfs", "/vol2 tmpfs"],
        "{out}"
    );
    assert_eq!(
        lines[3], p.marker,
        "tmpcopyup: the image's /etc is on the tmpfs\n{out}"
    );
    assert_eq!(lines[4], "700", "tmpfs-mode\n{out}");
    assert_eq!(lines[5], "new", "{out}");
    assert_eq!(lines[6], "1", "size=1m reached the tmpfs\n{out}");
    // notmpcopyup: an empty tmpfs over the image's /etc.
    let out = p.podman(&[
        "run",
        "--rm",
        "--tmpfs",
        "/etc:notmpcopyup",
        IMAGE,
        "sh",
        "-c",
        "test ! -e /etc/nook-rootfs-marker && echo empty",
    ]);
    assert_eq!(out.code(), 0, "{out}");
    assert_eq!(out.line(), "empty", "{out}");
    // --read-only: the root refuses writes, podman's tmpfs on /tmp /run /var/tmp take them.
    let out = p.podman(&[
        "run",
        "--rm",
        "--read-only",
        IMAGE,
        "sh",
        "-c",
        "touch /tmp/a /run/b /var/tmp/c && stat -c %a /tmp && ! touch /x 2>/dev/null && echo ro",
    ]);
    assert_eq!(out.code(), 0, "{out}");
    assert_eq!(out.out(), "1777\nro\n", "{out}");
}

/// Issue 17, point 2: a command that cannot be executed fails `create` (missing, or on
/// a noexec volume) or `start` (a script whose interpreter is missing), with the
/// reason, as crun does; never a container that "started" and quietly exited 127.
#[test]
fn a_command_that_cannot_run_is_an_error() {
    let Some(p) = Podman::new("a_command_that_cannot_run_is_an_error") else {
        return;
    };
    let out = p.podman(&["run", "--rm", IMAGE, "/no/such/command"]);
    assert_eq!(out.code(), 127, "{out}");
    let err = out.err().to_lowercase();
    assert!(
        err.contains("/no/such/command") && err.contains("no such file or directory"),
        "{out}"
    );
    p.ok(&["create", "--name", "c1", IMAGE, "/no/such/command"]);
    let out = p.podman(&["start", "c1"]);
    assert_eq!(
        out.code(),
        125,
        "podman start of a command that is missing\n{out}"
    );
    assert!(out.err().contains("/no/such/command"), "{out}");

    let vol = tempdir();
    let script = vol.path().join("script");
    fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let bad = vol.path().join("bad-interpreter");
    fs::write(&bad, "#!/no/such/interpreter\necho ran\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).unwrap();
    let noexec = format!("{}:/v:noexec", vol.path().display());
    let out = p.podman(&["run", "--rm", "-v", &noexec, IMAGE, "/v/script"]);
    assert_eq!(out.code(), 126, "a noexec volume\n{out}");
    assert!(
        out.err().to_lowercase().contains("permission denied"),
        "{out}"
    );
    assert!(!out.out().contains("ran"), "{out}");
    // Only execve can tell: `start` hears of it from the container's process.
    let volume = format!("{}:/v", vol.path().display());
    let out = p.podman(&["run", "--rm", "-v", &volume, IMAGE, "/v/bad-interpreter"]);
    assert_ne!(out.code(), 0, "{out}");
    let err = out.err().to_lowercase();
    assert!(
        err.contains("/v/bad-interpreter") && err.contains("no such file or directory"),
        "{out}"
    );
    // The one that can run, runs.
    let out = p.ok(&["run", "--rm", "-v", &volume, IMAGE, "/v/script"]);
    assert_eq!(out.line(), "ran", "{out}");
}

/// Issue 17, point 3: the container's process leads a session of its own (not conmon's
/// process group), so `podman run --timeout` (conmon kills the container's process
/// group) ends the container and podman sees the exit.
#[test]
fn own_session_and_run_timeout() {
    let Some(p) = Podman::new("own_session_and_run_timeout") else {
        return;
    };
    // Fields 5 and 6 of /proc/self/stat: process group and session, both the shell
    // (pid 1 in the container's pid namespace); 0 if they were outside it.
    let out = p.ok(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "read -r l < /proc/self/stat; set -- ${l##*) }; echo $3 $4",
    ]);
    assert_eq!(out.line(), "1 1", "process group and session\n{out}");
    let start = std::time::Instant::now();
    let out = p.podman(&[
        "run",
        "--name",
        "t1",
        "--timeout",
        "2",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert_ne!(out.code(), 0, "{out}");
    assert!(
        start.elapsed() < TIMEOUT,
        "the timeout did not end the container"
    );
    assert_eq!(p.inspect("t1", ".State.Status"), "exited");
    p.ok(&["rm", "t1"]);
}

/// Issue 17, point 4: without HOME in the spec (`--unsetenv HOME`), HOME is the user's
/// home in the container's /etc/passwd, else `/`, as runc and crun set it.
#[test]
fn home_comes_from_the_containers_passwd() {
    let Some(p) = Podman::new("home_comes_from_the_containers_passwd") else {
        return;
    };
    let out = p.ok(&[
        "run",
        "--rm",
        "--unsetenv",
        "HOME",
        IMAGE,
        "sh",
        "-c",
        "echo \"[$HOME]\"",
    ]);
    assert_eq!(out.line(), "[/root]", "{out}");
    let out = p.ok(&[
        "run",
        "--rm",
        "--unsetenv",
        "HOME",
        "--user",
        "4242",
        IMAGE,
        "sh",
        "-c",
        "echo \"[$HOME]\"",
    ]);
    assert_eq!(out.line(), "[/]", "a uid without a passwd entry\n{out}");
}

/// Issue 17, point 5: `podman update` reaches `nook-runtime update --resources FILE`:
/// values that change nothing are accepted; a real limit without a delegated cgroup is
/// refused with the reason (with one, the VM lane's cgroup_vm test checks memory.max).
#[test]
fn podman_update() {
    let Some(p) = Podman::new("podman_update") else {
        return;
    };
    p.run_detached("c1");
    p.ok(&["update", "--cpu-shares", "1024", "c1"]);
    let out = p.podman(&["update", "--memory", "64m", "c1"]);
    if out.code() == 0 {
        // A host with a delegated cgroup: the limit is in force.
        let limit = p
            .ok(&["exec", "c1", "cat", "/sys/fs/cgroup/memory.max"])
            .line();
        assert_eq!(limit, (64u64 << 20).to_string(), "{out}");
    } else {
        assert!(out.err().contains("without a cgroup"), "{out}");
    }
    assert_eq!(p.inspect("c1", ".State.Status"), "running");
    p.ok(&["rm", "-f", "-t", "0", "c1"]);
}

/// Issue 17, point 6: `--userns=nomap` (podman's own ID is not mapped: nook must act as
/// the container's root before the setup) and single-ID maps (devpts `gid=5` unmapped).
#[test]
fn userns_nomap_and_single_id_maps() {
    let Some(p) = Podman::new("userns_nomap_and_single_id_maps") else {
        return;
    };
    let script = "id -u; ls -d /dev/pts; touch /tmp/x && echo written";
    let out = p.ok(&["run", "--rm", "--userns=nomap", IMAGE, "sh", "-c", script]);
    assert_eq!(out.out(), "0\n/dev/pts\nwritten\n", "{out}");
    let out = p.ok(&[
        "run", "--rm", "--uidmap", "0:1:1", "--gidmap", "0:1:1", IMAGE, "sh", "-c", script,
    ]);
    assert_eq!(out.out(), "0\n/dev/pts\nwritten\n", "{out}");
}

/// Issue 17, point 7: a copy of the binary under another name (not nook-runtime) is
/// still the runtime for podman's command lines (`create --bundle`, `start ID`,
/// `kill ID SIG`, `delete --force ID` ...).
#[test]
fn runtime_under_another_name() {
    let Some(mut p) = Podman::new("runtime_under_another_name") else {
        return;
    };
    let copy = p.path("bin/some-runtime-copy");
    fs::copy(nook_bin(), &copy).expect("copy nook");
    p.runtime = copy;
    let out = p.ok(&["run", "--rm", IMAGE, "echo", "hi"]);
    assert_eq!(out.line(), "hi", "{out}");
    p.run_detached("c1");
    assert_eq!(p.ok(&["exec", "c1", "echo", "in"]).line(), "in");
    p.ok(&["kill", "--signal", "USR1", "c1"]);
    p.wait_log("c1", "got-usr1");
    p.ok(&["stop", "-t", "30", "c1"]);
    assert_eq!(p.inspect("c1", ".State.ExitCode"), "3");
    p.ok(&["rm", "c1"]);
    assert_eq!(p.nook_states(), Vec::<String>::new());
}

/// Issue 17, point 8: without XDG_RUNTIME_DIR, nook's state goes to $TMPDIR/nook-UID
/// with UID the caller's uid on the host, not its uid inside podman's user namespace (0
/// there, shared with every other user's podman).
#[test]
fn state_dir_without_xdg_runtime_dir() {
    let Some(mut p) = Podman::new("state_dir_without_xdg_runtime_dir") else {
        return;
    };
    let tmp = p.path("runtime-tmp");
    fs::create_dir(&tmp).unwrap();
    let wrapper = p.path("bin/no-xdg-runtime");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec env -u XDG_RUNTIME_DIR TMPDIR={} {} \"$@\"\n",
            tmp.display(),
            p.runtime.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    p.runtime = wrapper;
    p.run_detached("c1");
    let mut dirs: Vec<String> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        vec![format!("nook-{}", uid())],
        "in {}",
        tmp.display()
    );
    let states = fs::read_dir(tmp.join(format!("nook-{}/oci", uid())))
        .unwrap()
        .count();
    assert_eq!(states, 1, "the running container's state");
    p.ok(&["rm", "-f", "-t", "0", "c1"]);
}
