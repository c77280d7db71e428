//! See main.rs: this module's attempts are listed there and in docs/security.md.
//!
//! The default seccomp profile (podman's) of `nook run` and `nook exec`, tried from
//! inside with raw syscalls (python3's ctypes, from the `host` image): each refusal is
//! asserted by its errno, and where the kernel itself would answer differently, by
//! comparing with the same attempt under `--security-opt seccomp=unconfined`, which
//! proves the filter, not the kernel, refused. What podman's profile allows (keyctl,
//! unshare and clone with namespace flags) must reach the kernel: those answers equal
//! the unconfined ones. Then: a profile file of the user's, a bad one, `--privileged`.

use std::collections::BTreeMap;
use std::path::Path;

use nook_tests::*;

/// Syscall numbers of this architecture for the attempts.
fn numbers() -> Option<BTreeMap<&'static str, u32>> {
    let table: &[(&str, u32)] = if cfg!(target_arch = "x86_64") {
        &[
            ("add_key", 248),
            ("bpf", 321),
            ("clone", 56),
            ("getpid", 39),
            ("init_module", 175),
            ("kexec_load", 246),
            ("keyctl", 250),
            ("perf_event_open", 298),
            ("personality", 135),
            ("sethostname", 170),
            ("setns", 308),
            ("socket", 41),
            ("unshare", 272),
            ("userfaultfd", 323),
        ]
    } else if cfg!(target_arch = "aarch64") {
        &[
            ("add_key", 217),
            ("bpf", 280),
            ("clone", 220),
            ("getpid", 172),
            ("init_module", 105),
            ("kexec_load", 104),
            ("keyctl", 219),
            ("perf_event_open", 241),
            ("personality", 92),
            ("sethostname", 161),
            ("setns", 268),
            ("socket", 198),
            ("unshare", 97),
            ("userfaultfd", 282),
        ]
    } else {
        return None;
    };
    Some(table.iter().copied().collect())
}

/// A python3 program that makes each attempt and prints `NAME RESULT` (`ok` or the
/// errno's name). unshare(CLONE_NEWUSER) goes last: it changes the process.
fn attempts_script(nr: &BTreeMap<&str, u32>) -> String {
    format!(
        r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
def attempt(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(L(nr), *[L(a) for a in args])
    e = ctypes.get_errno()
    print(name, "ok" if r != -1 else errno.errorcode.get(e, str(e)), flush=True)
    return r
attempt("getpid", {getpid})
attempt("keyctl", {keyctl}, 0, -2, 0)           # KEYCTL_GET_KEYRING_ID, process keyring
attempt("add_key", {add_key}, 0, 0, 0, 0, 0)
attempt("bpf", {bpf}, 0, 0, 0)
attempt("perf_event_open", {perf_event_open}, 0, 0, -1, -1, 0)
attempt("userfaultfd", {userfaultfd}, 0)
attempt("kexec_load", {kexec_load}, 0, 0, 0, 0)
attempt("init_module", {init_module}, 0, 0, 0)
attempt("sethostname", {sethostname}, 0, 0)
attempt("setns", {setns}, -1, 0)
attempt("personality_query", {personality}, 0xffffffff)
attempt("personality_exec", {personality}, 0x0400000)   # READ_IMPLIES_EXEC
attempt("socket_audit", {socket}, 16, 3, 9)             # AF_NETLINK, SOCK_RAW, NETLINK_AUDIT
attempt("socket_inet", {socket}, 2, 2, 0)
ctypes.set_errno(0)
r = libc.syscall(L({clone}), L(0x10000000 | 17), L(0), L(0), L(0), L(0))  # CLONE_NEWUSER|SIGCHLD
if r == 0:
    os._exit(0)
e = ctypes.get_errno()
if r > 0:
    os.waitpid(r, 0)
print("clone_newuser", "ok" if r > 0 else errno.errorcode.get(e, str(e)), flush=True)
attempt("unshare_newuser", {unshare}, 0x10000000)
"#,
        getpid = nr["getpid"],
        keyctl = nr["keyctl"],
        add_key = nr["add_key"],
        bpf = nr["bpf"],
        perf_event_open = nr["perf_event_open"],
        userfaultfd = nr["userfaultfd"],
        kexec_load = nr["kexec_load"],
        init_module = nr["init_module"],
        sethostname = nr["sethostname"],
        setns = nr["setns"],
        personality = nr["personality"],
        socket = nr["socket"],
        clone = nr["clone"],
        unshare = nr["unshare"],
    )
}

/// What each attempt got, in a container run with `flags`.
fn attempts(test: &str, flags: &[&str]) -> Option<BTreeMap<String, String>> {
    let Some(nr) = numbers() else {
        skip(test, "no syscall table for this architecture in the test");
        return None;
    };
    if !has("python3") {
        skip(test, "no python3 on the host (the `host` image runs it)");
        return None;
    }
    let script = attempts_script(&nr);
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(["host", "python3", "-c", &script]);
    let o = run(&args);
    o.success();
    Some(
        o.out()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in\n{status}"))
}

#[test]
fn default_profile_refuses_what_podmans_refuses() {
    assert_unprivileged();
    let test = "default_profile_refuses_what_podmans_refuses";
    let Some(filtered) = attempts(test, &[]) else {
        return;
    };
    let Some(open) = attempts(test, &["--security-opt", "seccomp=unconfined"]) else {
        return;
    };
    let got = |k: &str| filtered.get(k).map(String::as_str).unwrap_or("(missing)");
    let kernel = |k: &str| open.get(k).map(String::as_str).unwrap_or("(missing)");
    // Refused by the profile with EPERM: the kernel is never asked.
    for name in [
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "kexec_load",
        "init_module",
        "sethostname",
    ] {
        assert_eq!(got(name), "EPERM", "{name}: {filtered:?}");
    }
    // Where the kernel would say something else, the difference shows the filter acted.
    assert_eq!(kernel("perf_event_open"), "EFAULT", "{open:?}");
    // Not in the allow-list at all: ENOSYS, as if this kernel had no add_key.
    assert_eq!(got("add_key"), "ENOSYS", "{filtered:?}");
    assert_ne!(kernel("add_key"), "ENOSYS", "{open:?}");
    // personality: only the personas programs set; socket: no kernel audit netlink.
    assert_eq!(got("personality_query"), "ok", "{filtered:?}");
    assert_eq!(got("personality_exec"), "ENOSYS", "{filtered:?}");
    assert_eq!(kernel("personality_exec"), "ok", "{open:?}");
    assert_eq!(got("socket_audit"), "EINVAL", "{filtered:?}");
    assert_ne!(kernel("socket_audit"), "EINVAL", "{open:?}");
    assert_eq!(got("socket_inet"), "ok", "{filtered:?}");
    // What podman's profile allows reaches the kernel: the same answer as unconfined.
    // (setns: podman lists it as allowed before its CAP_SYS_ADMIN rule, and the first
    // rule wins in libseccomp.)
    for name in [
        "getpid",
        "keyctl",
        "setns",
        "clone_newuser",
        "unshare_newuser",
    ] {
        assert_eq!(got(name), kernel(name), "{name}: {filtered:?} vs {open:?}");
    }
    assert_eq!(got("getpid"), "ok");
}

#[test]
fn the_filter_is_in_force_and_ordinary_programs_run() {
    assert_unprivileged();
    let o = run(&[
        "host",
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/d && ls -d /tmp/d \
         && uname -s && hostname",
    ]);
    o.success();
    let out = o.out();
    assert_eq!(status_field(&out, "Seccomp:"), "2", "{o}");
    assert!(out.contains("/tmp/d\nLinux\n"), "{o}");
}

#[test]
fn unconfined_runs_without_a_filter() {
    assert_unprivileged();
    let o = run(&[
        "--security-opt",
        "seccomp=unconfined",
        "host",
        "grep",
        "^Seccomp:",
        "/proc/self/status",
    ]);
    o.success();
    assert_eq!(status_field(&o.out(), "Seccomp:"), "0", "{o}");
}

#[test]
fn a_profile_file_denies_what_it_says_with_its_errno() {
    assert_unprivileged();
    let dir = tempdir();
    let profile = dir.path().join("deny-mkdir.json");
    // Docker's/podman's format: an errno by name, a capability-conditional entry that
    // does not apply (the container has no CAP_SYS_ADMIN), unknown keys.
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errno": "EXDEV",
               "comment": "no new directories"},
              {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
               "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {"minKernel": "4.8"}}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let canary = format!("/tmp/nook-seccomp-canary-{}", token());
    let script = format!(
        "grep ^Seccomp: /proc/self/status; mkdir {canary}; echo mkdir=$?; pwd; \
         test -e {canary} && echo created; true"
    );
    let o = run(&[
        "--security-opt",
        &opt,
        "-v",
        "/tmp:/tmp",
        "host",
        "sh",
        "-c",
        &script,
    ]);
    o.success();
    let out = o.out();
    assert_eq!(status_field(&out, "Seccomp:"), "2", "{o}");
    assert!(
        out.contains("mkdir=1\n/\n"),
        "mkdir refused, getcwd not\n{o}"
    );
    assert!(!out.contains("created"), "{o}");
    assert!(
        o.err().contains("Invalid cross-device link"),
        "EXDEV from the file\n{o}"
    );
    assert!(!Path::new(&canary).exists(), "the host's /tmp is untouched");
}

#[test]
fn a_bad_profile_file_fails_with_one_clear_line() {
    assert_unprivileged();
    let dir = tempdir();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "errno.json",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getuid"],
                "action":"SCMP_ACT_ERRNO","errnoRet":4294967295}]}"#,
            &[
                "errno.json",
                "syscalls[0].errnoRet",
                "4294967295",
                "1..4095",
            ],
        ),
        (
            "action.json",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getuid"],
                "action":"SCMP_ACT_MAYBE"}]}"#,
            &["action.json", "syscalls[0].action", "SCMP_ACT_MAYBE"],
        ),
        (
            "syntax.json",
            "{\"defaultAction\": ",
            &["syntax.json", "not valid JSON"],
        ),
        (
            "empty.json",
            "{}",
            &["empty.json", "defaultAction is missing"],
        ),
    ];
    for (name, text, mentions) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let opt = format!("seccomp={}", path.display());
        run(&["--security-opt", &opt, "host", "true"]).assert_error_line(125, mentions);
    }
    let missing = format!("seccomp={}", dir.path().join("absent.json").display());
    run(&["--security-opt", &missing, "host", "true"])
        .assert_error_line(125, &["absent.json", "cannot read the profile"]);
}

#[test]
fn privileged_has_every_capability_no_filter_and_unmasked_proc() {
    assert_unprivileged();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let all = (1u64 << (last + 1)) - 1;
    let script = "grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; \
                  echo ---; cat /proc/self/mountinfo";
    let o = run(&["--privileged", "host", "sh", "-c", script]);
    o.success();
    let out = o.out();
    let (status, mountinfo) = out.split_once("---\n").unwrap();
    assert_eq!(
        u64::from_str_radix(&status_field(status, "CapEff:"), 16).unwrap(),
        all,
        "every capability of the user namespace\n{o}"
    );
    assert_eq!(status_field(status, "Seccomp:"), "0", "{o}");
    let mounts = parse_mountinfo(mountinfo);
    // Masked and read-only paths of an ordinary container are plain /proc here (those
    // this kernel has).
    let masked: Vec<&str> = ["/proc/kcore", "/proc/keys", "/proc/timer_list"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(
        !masked.is_empty(),
        "none of the masked /proc files exists here"
    );
    for m in &masked {
        assert!(mount_at(&mounts, m).is_none(), "{m} masked\n{o}");
    }
    assert!(
        mount_at(&mounts, "/proc/sys").is_none(),
        "/proc/sys read-only\n{o}"
    );
    let sys = mount_at(&mounts, "/sys").expect("/sys");
    assert!(!sys.read_only(), "/sys writable: {sys:?}");

    // The same, unprivileged: masked, read-only, filtered, podman's capabilities.
    let o = run(&["host", "sh", "-c", script]);
    o.success();
    let out = o.out();
    let (status, mountinfo) = out.split_once("---\n").unwrap();
    assert_eq!(status_field(status, "CapEff:"), "00000000800405fb", "{o}");
    assert_eq!(status_field(status, "Seccomp:"), "2", "{o}");
    let mounts = parse_mountinfo(mountinfo);
    for m in &masked {
        assert!(mount_at(&mounts, m).is_some(), "{m} not masked\n{o}");
    }
    assert!(
        mount_at(&mounts, "/proc/sys").is_some_and(|m| m.read_only()),
        "{o}"
    );
}

#[test]
fn privileged_binds_the_devices_the_user_can_open() {
    assert_unprivileged();
    let test = "privileged_binds_the_devices_the_user_can_open";
    let Some(dev) = ["/dev/fuse", "/dev/net/tun", "/dev/kvm"]
        .into_iter()
        .find(|d| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(d)
                .is_ok()
        })
    else {
        skip(
            test,
            "none of /dev/fuse, /dev/net/tun, /dev/kvm can be opened here",
        );
        return;
    };
    let probe = format!("test -c {dev} && echo present; ls /dev/ptmx /dev/console 2>&1; true");
    let o = run(&["--privileged", "host", "sh", "-c", &probe]);
    o.success();
    assert!(o.out().starts_with("present\n"), "{dev}\n{o}");
    // The container's own ptmx (a link into its devpts), never the host's console.
    assert!(o.out().contains("/dev/ptmx"), "{o}");
    assert!(o.out().contains("cannot access '/dev/console'"), "{o}");
    let o = run(&["host", "sh", "-c", &probe]);
    o.success();
    assert!(
        !o.out().contains("present"),
        "{dev} only under --privileged\n{o}"
    );
}

/// A container of its own store that idles, for `nook exec`.
struct Idle {
    root: tempfile::TempDir,
    name: String,
    fg: Option<Proc>,
}

impl Idle {
    fn start(flags: &[&str]) -> Idle {
        let root = tempdir();
        let name = format!("sec{}", token());
        let mut args = vec!["run", "--rm", "--name", &name];
        args.extend_from_slice(flags);
        args.extend(["host", "sh", "-c", "echo ready; exec sleep 1000"]);
        let mut cmd = nook();
        cmd.env("NOOK_ROOT", root.path()).args(&args);
        let mut fg = spawn(&mut cmd);
        fg.wait_for("ready", TIMEOUT);
        Idle {
            root,
            name,
            fg: Some(fg),
        }
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut cmd = nook();
        cmd.env("NOOK_ROOT", self.root.path())
            .args(["exec", &self.name])
            .args(args);
        spawn(&mut cmd).wait(TIMEOUT)
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        let mut cmd = nook();
        cmd.env("NOOK_ROOT", self.root.path())
            .args(["rm", "-f", &self.name]);
        let _ = spawn(&mut cmd).wait(TIMEOUT);
        if let Some(fg) = self.fg.take() {
            fg.kill_all();
        }
    }
}

#[test]
fn exec_gets_the_containers_filter() {
    assert_unprivileged();
    let test = "exec_gets_the_containers_filter";
    let Some(nr) = numbers() else {
        skip(test, "no syscall table for this architecture in the test");
        return;
    };
    if !has("python3") {
        skip(test, "no python3 on the host (the `host` image runs it)");
        return;
    }
    // add_key is outside podman's allow-list (ENOSYS); the kernel's own answer to
    // these arguments is EFAULT.
    let add_key = format!(
        "import ctypes, errno; l = ctypes.CDLL(None, use_errno=True); \
         r = l.syscall({}, 0, 0, 0, 0, 0); print('add_key', errno.errorcode[ctypes.get_errno()])",
        nr["add_key"]
    );
    let check = |ctr: &Idle| -> (String, String) {
        let o = ctr.exec(&["sh", "-c", "grep ^Seccomp: /proc/self/status"]);
        o.success();
        let seccomp = status_field(&o.out(), "Seccomp:");
        let o = ctr.exec(&["python3", "-c", &add_key]);
        o.success();
        (seccomp, o.line())
    };

    // The default profile: filtered, add_key refused by it.
    let ctr = Idle::start(&[]);
    assert_eq!(check(&ctr), ("2".into(), "add_key ENOSYS".into()));
    drop(ctr);

    // Unconfined: so is the exec'd process.
    let ctr = Idle::start(&["--security-opt", "seccomp=unconfined"]);
    assert_eq!(check(&ctr), ("0".into(), "add_key EFAULT".into()));
    drop(ctr);

    // A file's profile: its errno, even after the file is gone.
    let dir = tempdir();
    let profile = dir.path().join("p.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["add_key"],"action":"SCMP_ACT_ERRNO","errno":"EXDEV"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let ctr = Idle::start(&["--security-opt", &opt]);
    std::fs::remove_file(&profile).unwrap();
    assert_eq!(check(&ctr), ("2".into(), "add_key EXDEV".into()));
}

/// The OCI runtime runs a bundle's profile as given, but not an errno the kernel would
/// turn into a bogus result: `errnoRet` 4294967295 made getuid return 4294963201.
#[test]
fn an_oci_profile_with_an_errno_out_of_range_is_refused() {
    assert_unprivileged();
    let test = "an_oci_profile_with_an_errno_out_of_range_is_refused";
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(why) => return skip(test, &why),
    };
    let bundle = tempdir();
    let state = tempdir();
    let mut cmd = nook();
    cmd.args(["oci", "spec", "--rootless", "--bundle"])
        .arg(bundle.path());
    spawn(&mut cmd).wait(TIMEOUT).success();
    let config = bundle.path().join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    c["root"]["path"] = serde_json::json!(rootfs.path_str());
    c["process"]["args"] = serde_json::json!(["id", "-u"]);
    c["process"]["terminal"] = serde_json::json!(false);
    c["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4294967295u64}]
    });
    std::fs::write(&config, serde_json::to_vec(&c).unwrap()).unwrap();
    let mut cmd = nook();
    cmd.arg("oci")
        .arg("--root")
        .arg(state.path())
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(format!("errno{}", token()));
    spawn(&mut cmd).wait(TIMEOUT).assert_error_line(
        1,
        &[
            "linux.seccomp.syscalls[0].errnoRet",
            "4294967295",
            "1..4095",
        ],
    );
}
