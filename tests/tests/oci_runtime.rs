//! `nook oci ...`, the OCI runtime command line, driven as podman's conmon drives a
//! runtime: bundles from `nook oci spec --rootless` around a busybox root, then create,
//! state, start, kill, delete; hooks with the state on stdin; a seccomp profile and
//! rlimits from the spec.
//!
//! The test process makes itself a child subreaper: after `create` exits, the
//! container's process becomes its child, so its exit status is observed with waitpid
//! (as conmon does), never by sleeping.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use nook_tests::*;
use serde_json::{json, Value};

fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with an integer argument; no memory is passed.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
    });
}

/// A bundle: config.json from `nook oci spec --rootless`, a busybox root, a host
/// directory bound at /hold for files and FIFOs shared with the test, a state root.
struct Bundle {
    dir: tempfile::TempDir,
    rootfs: Rootfs,
    hold: tempfile::TempDir,
    state_root: tempfile::TempDir,
}

impl Bundle {
    /// None (after a SKIP line) where busybox is missing.
    fn new(test: &str, args: &[&str]) -> Option<Bundle> {
        assert_unprivileged();
        become_subreaper();
        let rootfs = match busybox_rootfs() {
            Ok(r) => r,
            Err(why) => {
                skip(test, &why);
                return None;
            }
        };
        let b = Bundle {
            dir: tempdir(),
            rootfs,
            hold: tempdir(),
            state_root: tempdir(),
        };
        let mut cmd = nook();
        cmd.args(["oci", "spec", "--rootless", "--bundle"])
            .arg(b.dir.path());
        spawn(&mut cmd).wait(TIMEOUT).success();
        b.edit(|c| {
            c["root"]["path"] = json!(b.rootfs.path_str());
            c["root"]["readonly"] = json!(false);
            c["process"]["args"] = json!(args);
            c["process"]["terminal"] = json!(false);
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/hold", "type": "bind",
                "source": b.hold.path(), "options": ["rbind", "rw"]
            }));
        });
        Some(b)
    }

    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let path = self.dir.path().join("config.json");
        let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        f(&mut config);
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    fn hold(&self, name: &str) -> PathBuf {
        self.hold.path().join(name)
    }

    /// `nook oci --root R ARGS` run to completion; stdio piped (no container outlives it).
    fn oci(&self, args: &[&str]) -> Output {
        let mut cmd = nook();
        cmd.arg("oci")
            .arg("--root")
            .arg(self.state_root.path())
            .args(args);
        spawn(&mut cmd).wait(TIMEOUT)
    }

    /// `create`, with the container's stdout and stderr going to files in /hold (they
    /// outlive the create process); returns the container's pid from `state`.
    fn create(&self, id: &str) -> i32 {
        let out = fs::File::create(self.hold("stdout")).unwrap();
        let err = fs::File::create(self.hold("stderr")).unwrap();
        let status = Command::new(nook_bin())
            .arg("oci")
            .arg("--root")
            .arg(self.state_root.path())
            .args(["create", "--bundle"])
            .arg(self.dir.path())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .expect("run nook oci create");
        assert!(
            status.success(),
            "create failed: {status}\n{}",
            fs::read_to_string(self.hold("stderr")).unwrap_or_default()
        );
        let state = self.state(id);
        assert_eq!(state["status"], "created", "{state}");
        state["pid"]
            .as_i64()
            .expect("a created container has a pid") as i32
    }

    fn state(&self, id: &str) -> Value {
        let o = self.oci(&["state", id]);
        o.success();
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("state JSON: {e}\n{o}"))
    }

    fn stdout(&self) -> String {
        fs::read_to_string(self.hold("stdout")).unwrap_or_default()
    }
}

/// The exit of a container process (our child once its creator exited).
fn wait_exit(pid: i32) -> WaitStatus {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return st,
            other => panic!("waitpid {pid}: {other:?}"),
        }
    }
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
}

#[test]
fn create_start_state_delete() {
    let Some(b) = Bundle::new(
        "create_start_state_delete",
        &[
            "sh",
            "-c",
            "echo started; read line < /hold/go; echo \"got $line\"; exit 3",
        ],
    ) else {
        return;
    };
    mkfifo(&b.hold("go"));
    let pid = b.create("lc1");
    // Parked: the command has not run yet.
    assert_eq!(b.stdout(), "", "the process ran before start");
    let st = b.state("lc1");
    assert_eq!(st["id"], "lc1");
    assert_eq!(
        st["bundle"],
        json!(fs::canonicalize(b.dir.path()).unwrap()),
        "{st}"
    );
    b.oci(&["start", "lc1"]).success();
    // Blocks until the container opens the FIFO: it runs.
    fs::write(b.hold("go"), "x\n").unwrap();
    assert_eq!(wait_exit(pid), WaitStatus::Exited(Pid::from_raw(pid), 3));
    assert_eq!(b.stdout(), "started\ngot x\n");
    let st = b.state("lc1");
    assert_eq!(st["status"], "stopped", "{st}");
    b.oci(&["start", "lc1"])
        .assert_error_line(1, &["lc1", "stopped"]);
    b.oci(&["delete", "lc1"]).success();
    b.oci(&["state", "lc1"])
        .assert_error_line(1, &["lc1", "does not exist"]);
}

#[test]
fn kill_by_name_and_number() {
    let Some(b) = Bundle::new(
        "kill_by_name_and_number",
        &[
            "sh",
            "-c",
            "trap 'exit 5' USR1; echo ready > /hold/ready; sleep 1000 & wait",
        ],
    ) else {
        return;
    };
    mkfifo(&b.hold("ready"));
    let pid = b.create("k1");
    // Flags after the ID, as youki's contest passes them.
    b.oci(&["start", "k1"]).success();
    // The trap is set once the container has written to the FIFO.
    assert_eq!(fs::read_to_string(b.hold("ready")).unwrap(), "ready\n");
    assert_eq!(b.state("k1")["status"], "running");
    b.oci(&["kill", "k1", "USR1"]).success();
    assert_eq!(wait_exit(pid), WaitStatus::Exited(Pid::from_raw(pid), 5));
    b.oci(&["kill", "k1", "KILL"])
        .assert_error_line(1, &["k1", "not running"]);
    b.oci(&["delete", "k1"]).success();

    // A created container can be killed by number, then deleted.
    let pid = b.create("k2");
    b.oci(&["kill", "k2", "9"]).success();
    assert_eq!(
        wait_exit(pid),
        WaitStatus::Signaled(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL, false)
    );
    b.oci(&["delete", "k2"]).success();
}

#[test]
fn delete_force_kills_a_running_container() {
    let Some(b) = Bundle::new(
        "delete_force_kills_a_running_container",
        &["sh", "-c", "echo up > /hold/up; exec sleep 1000"],
    ) else {
        return;
    };
    mkfifo(&b.hold("up"));
    let pid = b.create("f1");
    b.oci(&["start", "f1"]).success();
    assert_eq!(fs::read_to_string(b.hold("up")).unwrap(), "up\n");
    b.oci(&["delete", "f1"])
        .assert_error_line(1, &["f1", "running", "--force"]);
    b.oci(&["delete", "--force", "f1"]).success();
    assert!(matches!(
        wait_exit(pid),
        WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
    ));
    b.oci(&["state", "f1"])
        .assert_error_line(1, &["does not exist"]);
}

#[test]
fn exec_runs_in_the_container() {
    let Some(b) = Bundle::new(
        "exec_runs_in_the_container",
        &["sh", "-c", "echo up > /hold/up; exec sleep 1000"],
    ) else {
        return;
    };
    mkfifo(&b.hold("up"));
    let pid = b.create("e1");
    b.oci(&["start", "e1"]).success();
    assert_eq!(fs::read_to_string(b.hold("up")).unwrap(), "up\n");
    let o = b.oci(&[
        "exec",
        "e1",
        "sh",
        "-c",
        "echo inside $$; cat /etc/nook-rootfs-marker",
    ]);
    o.success();
    let marker = fs::read_to_string(b.rootfs.path().join("etc/nook-rootfs-marker")).unwrap();
    // Its own pid in the container's pid namespace (the first process is 1).
    assert!(o.out().starts_with("inside "), "{o}");
    assert!(o.out().ends_with(&marker), "{o}");
    b.oci(&["exec", "e1", "sh", "-c", "exit 7"]).assert_code(7);
    let o = b.oci(&["ps", "--format", "json", "e1"]);
    o.success();
    let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(pids.contains(&pid), "{o}");
    b.oci(&["delete", "--force", "e1"]).success();
    assert!(matches!(wait_exit(pid), WaitStatus::Signaled(..)));
}

#[test]
fn bad_bundle_is_a_clear_error() {
    let Some(b) = Bundle::new("bad_bundle_is_a_clear_error", &["true"]) else {
        return;
    };
    b.oci(&["create", "--bundle", "/nonexistent/bundle", "x1"])
        .assert_error_line(1, &["/nonexistent/bundle"]);
    let empty = tempdir();
    let o = b.oci(&["create", "x2", "--bundle", empty.path().to_str().unwrap()]);
    o.assert_error_line(1, &["config.json", "nook oci spec"]);
    b.edit(|c| c["root"]["path"] = json!("no-such-rootfs"));
    b.oci(&["create", "--bundle", b.dir.path().to_str().unwrap(), "x3"])
        .assert_error_line(1, &["no-such-rootfs", "not a directory"]);
    // Nothing is left of the failed creates.
    assert_eq!(fs::read_dir(b.state_root.path()).unwrap().count(), 0);

    // The same binary answers as `nook-runtime`.
    let links = tempdir();
    let runtime = links.path().join("nook-runtime");
    std::os::unix::fs::symlink(nook_bin(), &runtime).unwrap();
    let mut cmd = Command::new(&runtime);
    cmd.arg("--root")
        .arg(b.state_root.path())
        .args(["state", "nope"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(&mut cmd)
        .wait(TIMEOUT)
        .assert_error_line(1, &["nope", "does not exist"]);
}

#[test]
fn hooks_get_the_state_on_stdin() {
    let Some(b) = Bundle::new(
        "hooks_get_the_state_on_stdin",
        &["sh", "-c", "echo main >> /hold/order"],
    ) else {
        return;
    };
    let host_hook = |name: &str| {
        let out = b.hold(name);
        json!({"path": "/bin/sh", "args": ["sh", "-c",
            format!("cat > {}.json; echo {name} >> {}", out.display(), b.hold("order").display())],
            "timeout": 30})
    };
    let hooks = json!({
        "createRuntime": [host_hook("createRuntime")],
        "createContainer": [host_hook("createContainer")],
        // Runs inside the container: its paths are the container's.
        "startContainer": [{"path": "/bin/sh",
            "args": ["sh", "-c", "cat > /hold/startContainer.json; echo startContainer >> /hold/order"]}],
        "poststart": [host_hook("poststart")],
        "poststop": [host_hook("poststop")],
    });
    b.edit(|c| c["hooks"] = hooks);
    let pid = b.create("h1");
    b.oci(&["start", "h1"]).success();
    assert!(matches!(wait_exit(pid), WaitStatus::Exited(_, 0)));
    b.oci(&["delete", "h1"]).success();
    for (stage, status) in [
        ("createRuntime", "created"),
        ("createContainer", "created"),
        ("startContainer", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let text = fs::read_to_string(b.hold(&format!("{stage}.json")))
            .unwrap_or_else(|e| panic!("the {stage} hook did not run: {e}"));
        let state: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{stage}: {e}: {text}"));
        assert_eq!(state["id"], "h1", "{stage}: {state}");
        assert_eq!(state["status"], status, "{stage}: {state}");
    }
    let order = fs::read_to_string(b.hold("order")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    // poststart may run before or after the container's command.
    assert_eq!(
        &order[..3],
        ["createRuntime", "createContainer", "startContainer"],
        "{order:?}"
    );
    assert_eq!(order.last(), Some(&"poststop"), "{order:?}");
    assert!(
        order.contains(&"main") && order.contains(&"poststart"),
        "{order:?}"
    );
}

#[test]
fn seccomp_profile_denies_with_errno() {
    let Some(b) = Bundle::new(
        "seccomp_profile_denies_with_errno",
        &[
            "sh",
            "-c",
            "mkdir /tmp/denied; echo rc=$?; touch /tmp/f; chmod 700 /tmp/f; echo rc=$?; \
             chmod 755 /tmp/f && echo changed",
        ],
    ) else {
        return;
    };
    // mkdir always fails with EXDEV; chmod only when the mode is 0700 (argument
    // conditions), so `chmod 755` still works.
    let deny = |names: &[&str], cond: Option<u32>| {
        let mut rule = json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 18});
        if let Some(index) = cond {
            rule["args"] = json!([{"index": index, "value": 0o700, "op": "SCMP_CMP_EQ"}]);
        }
        rule
    };
    b.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [deny(&["mkdir", "mkdirat"], None), deny(&["chmod"], Some(1)),
                         deny(&["fchmodat", "fchmodat2"], Some(2))]
        })
    });
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "s1"]);
    o.success();
    assert_eq!(o.out(), "rc=1\nrc=1\nchanged\n", "{o}");
    assert!(
        o.err().contains("Invalid cross-device link"),
        "EXDEV from the profile\n{o}"
    );
}

/// runtime-tools' linux_seccomp: a profile that denies getcwd(2) runs, with or without
/// no_new_privs, through `run`, `create`/`start` and `exec`. nook's check that the working
/// directory is inside the root needs getcwd, so it is made before the filter goes on.
#[test]
fn a_profile_may_deny_getcwd() {
    let Some(b) = Bundle::new(
        "a_profile_may_deny_getcwd",
        &["sh", "-c", "echo up > /hold/up; exec sleep 1000"],
    ) else {
        return;
    };
    mkfifo(&b.hold("up"));
    let bundle = b.dir.path().to_str().unwrap().to_string();
    for nnp in [false, true] {
        b.edit(|c| {
            c["process"]["cwd"] = json!("/tmp");
            c["process"]["noNewPrivileges"] = json!(nnp);
            c["process"]["args"] = json!(["sh", "-c", "echo up > /hold/up; exec sleep 1000"]);
            c["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]
            });
        });
        let id = format!("g{}", nnp as u8);
        let pid = b.create(&id);
        b.oci(&["start", &id]).success();
        assert_eq!(fs::read_to_string(b.hold("up")).unwrap(), "up\n");
        // The profile is in force (pwd -P, which needs getcwd, prints nothing) and the
        // process runs in /tmp.
        let o = b.oci(&[
            "exec",
            &id,
            "sh",
            "-c",
            "echo \"pwd=$(pwd -P) cwd=$(readlink /proc/self/cwd)\"",
        ]);
        o.success();
        assert_eq!(o.out(), "pwd= cwd=/tmp\n", "nnp={nnp}\n{o}");
        b.oci(&["delete", "--force", &id]).success();
        assert!(matches!(wait_exit(pid), WaitStatus::Signaled(..)));

        b.edit(|c| c["process"]["args"] = json!(["sh", "-c", "echo ran"]));
        let o = b.oci(&["run", "--bundle", &bundle, &format!("r{}", nnp as u8)]);
        o.success();
        assert_eq!(o.out(), "ran\n", "nnp={nnp}\n{o}");
    }
}

#[test]
fn rlimits_are_set() {
    let Some(b) = Bundle::new("rlimits_are_set", &["cat", "/proc/self/limits"]) else {
        return;
    };
    b.edit(|c| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        ])
    });
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "r1"]);
    o.success();
    let line = |name: &str| {
        o.out()
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no {name} line\n{o}"))
    };
    assert!(
        line("Max open files").starts_with("Max open files 123 456"),
        "{o}"
    );
    assert!(
        line("Max core file size").starts_with("Max core file size 0 0"),
        "{o}"
    );
}

/// What crun's `spec --rootless` writes (and podman's rootless specs resemble): no cgroup
/// namespace but a cgroup mount, and ambient capabilities that are not inheritable.
#[test]
fn a_crun_style_rootless_spec_runs() {
    let Some(b) = Bundle::new(
        "a_crun_style_rootless_spec_runs",
        &[
            "sh",
            "-c",
            "grep CapAmb /proc/self/status; ls /sys/fs/cgroup | head -n1",
        ],
    ) else {
        return;
    };
    b.edit(|c| {
        let namespaces = c["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "cgroup");
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
        mounts.push(json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
        }));
        let caps = &mut c["process"]["capabilities"];
        caps["ambient"] = json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        caps["inheritable"] = json!([]);
    });
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "c1"]);
    o.success();
    let out = o.out();
    let amb = out.lines().next().unwrap_or_default();
    // CAP_KILL is bit 5, CAP_NET_BIND_SERVICE bit 10.
    assert!(
        amb.ends_with("0000000000000420"),
        "ambient caps raised: {o}"
    );
    assert!(
        out.lines().nth(1).is_some(),
        "the host's cgroups are visible: {o}"
    );
}

/// HOME, where config.json's environment has none (`nook oci spec` writes none): the
/// user's home in the container's /etc/passwd, else `/` (runc's and crun's rule).
#[test]
fn home_is_set_from_the_containers_passwd() {
    let Some(b) = Bundle::new(
        "home_is_set_from_the_containers_passwd",
        &["sh", "-c", "echo \"[$HOME]\""],
    ) else {
        return;
    };
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "h1"]);
    o.success();
    assert_eq!(o.line(), "[/root]", "{o}");
    b.edit(|c| c["process"]["user"]["uid"] = json!(4242));
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "h2"]);
    o.success();
    assert_eq!(o.line(), "[/]", "a uid without an entry\n{o}");
    b.edit(|c| {
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("HOME=/given"))
    });
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "h3"]);
    o.success();
    assert_eq!(o.line(), "[/given]", "the spec's own HOME stays\n{o}");
    // `exec` of a process without HOME (the saved spec's environment has none).
    b.edit(|c| {
        c["process"]["user"]["uid"] = json!(0);
        c["process"]["env"] = json!(["PATH=/bin:/usr/bin"]);
        c["process"]["args"] = json!(["sleep", "1000"]);
    });
    let pid = b.create("h4");
    b.oci(&["start", "h4"]).success();
    let o = b.oci(&["exec", "h4", "sh", "-c", "echo \"[$HOME]\""]);
    o.success();
    assert_eq!(o.line(), "[/root]", "exec\n{o}");
    b.oci(&["delete", "--force", "h4"]).success();
    assert!(matches!(wait_exit(pid), WaitStatus::Signaled(..)));
}

/// devpts `gid=5` (the runtime-spec's default) with a single-ID map, where gid 5 is not
/// mapped: dropped, as crun does, instead of failing the mount (EINVAL).
#[test]
fn devpts_gid_unmapped_in_a_single_id_map() {
    let Some(b) = Bundle::new(
        "devpts_gid_unmapped_in_a_single_id_map",
        &[
            "sh",
            "-c",
            "cat /proc/self/gid_map; grep devpts /proc/self/mounts",
        ],
    ) else {
        return;
    };
    b.edit(|c| {
        for m in c["mounts"].as_array_mut().unwrap() {
            if m["type"] == "devpts" {
                m["options"].as_array_mut().unwrap().push(json!("gid=5"));
            }
        }
        let one = json!([{"containerID": 0, "hostID": gid(), "size": 1}]);
        c["linux"]["gidMappings"] = one;
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": uid(), "size": 1}]);
    });
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "d1"]);
    o.success();
    let out = o.out();
    assert!(out.contains("devpts /dev/pts devpts"), "{o}");
    assert!(!out.contains("gid=5"), "{o}");
}

/// Resource values that change nothing (containerd's default spec asks for CPU shares
/// 1024, the default weight) need no cgroup: accepted on a host without a delegated one.
/// A real limit there is refused with the reason; with a cgroup it is in force.
#[test]
fn default_resource_values_need_no_cgroup() {
    let Some(b) = Bundle::new(
        "default_resource_values_need_no_cgroup",
        &["sh", "-c", "echo ran"],
    ) else {
        return;
    };
    b.edit(|c| {
        c["linux"]["resources"] = json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "cpu": {"shares": 1024},
            "memory": {"limit": -1},
            "pids": {"limit": -1}
        })
    });
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "r1"]);
    o.success();
    assert_eq!(o.line(), "ran", "{o}");
    b.edit(|c| c["linux"]["resources"]["cpu"]["shares"] = json!(512));
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "r2"]);
    if o.code() != 0 {
        o.assert_error_line(1, &["cannot enforce the CPU shares"]);
        assert!(
            b.oci(&["state", "r2"]).code() != 0,
            "a refused create left state"
        );
    }
}

/// `tmpcopyup` copies the image's content before pivot_root, where the host's paths are
/// reachable: an image's symlinks (to a host file, to a host directory) must be copied
/// as symlinks, never followed, and a mount point that is a symlink to a host directory
/// is resolved inside the root. The host's canaries must not show up in the container.
#[test]
fn tmpcopyup_never_follows_the_images_symlinks() {
    let Some(b) = Bundle::new(
        "tmpcopyup_never_follows_the_images_symlinks",
        &[
            "sh",
            "-c",
            "for f in /data/file /data/abs /data/dir /data2; do \
               if [ -L $f ]; then echo \"$f link $(readlink $f)\"; \
               elif [ -e $f ]; then echo \"$f there\"; else echo \"$f absent\"; fi; done; \
             cat /data/abs /data/dir/canary /data2/canary 2>/dev/null; \
             grep ' tmpfs ' /proc/self/mounts | cut -d' ' -f2",
        ],
    ) else {
        return;
    };
    let host = tempdir();
    let secret = token();
    fs::write(host.path().join("canary"), &secret).unwrap();
    let root = b.rootfs.path();
    fs::create_dir(root.join("data")).unwrap();
    fs::write(root.join("data/file"), "image").unwrap();
    std::os::unix::fs::symlink(host.path().join("canary"), root.join("data/abs")).unwrap();
    std::os::unix::fs::symlink(host.path(), root.join("data/dir")).unwrap();
    std::os::unix::fs::symlink(host.path(), root.join("data2")).unwrap();
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        for dest in ["/data", "/data2"] {
            mounts.push(json!({
                "destination": dest, "type": "tmpfs", "source": "tmpfs",
                "options": ["rw", "nosuid", "nodev", "tmpcopyup"]
            }));
        }
    });
    let o = b.oci(&["run", "--bundle", b.dir.path().to_str().unwrap(), "t1"]);
    o.success();
    let out = o.out();
    assert!(out.contains("/data/file there"), "{o}");
    assert!(
        out.contains(&format!("/data/abs link {}/canary", host.path().display())),
        "{o}"
    );
    assert!(
        out.contains(&format!("/data/dir link {}", host.path().display())),
        "{o}"
    );
    assert!(
        !out.contains(&secret),
        "a host file reached the container\n{o}"
    );
    let points: Vec<&str> = out.lines().collect();
    assert!(points.contains(&"/data"), "{o}");
    // /data2 leads to that path inside the root, where the tmpfs went.
    let inside = host.path().to_str().unwrap();
    assert!(points.contains(&inside), "{o}");
    assert_eq!(
        fs::read_to_string(host.path().join("canary")).unwrap(),
        secret,
        "the host's canary changed"
    );
    assert_eq!(fs::read_dir(host.path()).unwrap().count(), 1);
}
