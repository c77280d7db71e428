//! The kernel's interfaces from inside a container: writes to /proc/sys, /proc/sysrq-trigger
//! and /sys; reads of the paths nook masks; procfs or sysfs mounted anew (also after
//! unshare inside, also a cgroup v1 hierarchy for its release_agent) or a mask or
//! read-only mount taken away; read-only mounts made writable; nook's own processes
//! (supervisor, netns agent, logger) reached by pid; /proc/PID/root and /proc/PID/exe
//! aimed at the host; file handles forged for host files (Shocker); host devices changed
//! or created. Every attempt is made by the `nook-attack` probe as the container's root,
//! with nook's default capabilities unless a test says otherwise, and each asserts the
//! errno and that the host's side is unchanged.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nook_tests::*;

/// Runs `attempts` in a `host` container with the probe bound in and `extra` flags.
fn attempt(extra: &[&str], attempts: &Attempts) -> (Output, BTreeMap<String, String>) {
    let vol = attack_volume();
    let mut args = vec!["--rm", "-v", &vol];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["host", "sh", "-c", attempts.script()]);
    let o = run(&args);
    assert_ne!(o.code(), 125, "nook failed to start the container\n{o}");
    let r = attempt_results(&o);
    (o, r)
}

/// sysctl files (under /proc/sys) and a value to try; the host's are read before and
/// after. Namespaced ones (hostname, domainname, shmmax, net.*) as well as global ones.
const SYSCTLS: [(&str, &str); 14] = [
    ("kernel/hostname", "nook-attack"),
    ("kernel/domainname", "nook-attack"),
    ("kernel/shmmax", "4096"),
    ("kernel/panic", "7"),
    ("kernel/core_pattern", "|/tmp/nook-attack"),
    ("kernel/modprobe", "/tmp/nook-attack"),
    ("kernel/randomize_va_space", "0"),
    ("vm/overcommit_memory", "1"),
    ("vm/swappiness", "1"),
    ("vm/drop_caches", "3"),
    ("net/ipv4/ip_forward", "1"),
    ("net/core/somaxconn", "1"),
    ("fs/file-max", "1000"),
    ("user/max_user_namespaces", "0"),
];

/// sysfs files a container must not change, and a value to try.
const SYSFS: [(&str, &str); 7] = [
    ("/sys/kernel/mm/transparent_hugepage/enabled", "never"),
    ("/sys/kernel/uevent_helper", "/tmp/nook-attack"),
    ("/sys/kernel/profiling", "1"),
    ("/sys/power/state", "mem"),
    ("/sys/module/printk/parameters/time", "N"),
    ("/sys/class/net/lo/mtu", "1000"),
    ("/sys/fs/cgroup/cgroup.subtree_control", "+pids"),
];

/// Every path nook masks in `nook run` (cli/src/spec.rs: the runtime-spec's defaults from
/// oci_spec plus EXTRA_MASKED_PATHS); keep in step.
const MASKED: [&str; 14] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/sys/devices/virtual/powercap",
    "/sys/dev/block",
    "/sys/fs/selinux",
    "/proc/interrupts",
];

/// The runtime-spec's read-only paths, which nook applies.
const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn read_host(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// The host's values of the sysctls that exist here and can be read (drop_caches is
/// write-only: its presence is enough).
fn host_sysctls() -> Vec<(&'static str, &'static str, Option<String>)> {
    SYSCTLS
        .iter()
        .filter(|(k, _)| Path::new("/proc/sys").join(k).exists())
        .map(|(k, v)| (*k, *v, read_host(&format!("/proc/sys/{k}"))))
        .collect()
}

#[test]
fn proc_sys_and_sysrq_trigger_writes_are_refused_and_the_host_keeps_its_values() {
    assert_unprivileged();
    let sysctls = host_sysctls();
    assert!(
        sysctls.len() >= 8,
        "too few sysctls on this kernel: {sysctls:?}"
    );
    let mut a = Attempts::new();
    for (k, v, _) in &sysctls {
        a.probe(k, &["write", &format!("/proc/sys/{k}"), v]);
    }
    let sysrq = Path::new("/proc/sysrq-trigger").exists();
    a.probe("sysrq", &["write", "/proc/sysrq-trigger", "h"]);
    // binfmt_misc: a handler registered for the host would run as root on the host.
    a.probe(
        "binfmt",
        &[
            "write",
            "/proc/sys/fs/binfmt_misc/register",
            ":nook:E::nook::/tmp/x:",
        ],
    );
    // kernel.hostname is namespaced: in a UTS namespace of its own (nested, with a user
    // namespace) the kernel would let the container set it, but the default seccomp
    // profile (podman's) refuses sethostname without CAP_SYS_ADMIN in the container's
    // bounding set; either way neither its own hostname nor the host's changes.
    a.shell("hostname-before", "cat /proc/sys/kernel/hostname");
    a.probe(
        "nested-uts",
        &[
            "in-ns",
            "user,uts",
            "sethostname",
            "nook-nested",
            "+",
            "read",
            "/proc/sys/kernel/hostname",
        ],
    );
    a.shell("hostname-after", "cat /proc/sys/kernel/hostname");
    let host_name = nix::unistd::gethostname().unwrap();
    let (o, r) = attempt(&[], &a);
    let nested = &r["nested-uts"];
    assert!(
        // 12 bytes: "nook-nested\n", read back inside the nested namespace.
        nested == "ok + ok 12" || nested.starts_with("err EPERM"),
        "sethostname in a nested UTS namespace: {nested}\n{o}"
    );
    assert_eq!(r.get("hostname-before"), r.get("hostname-after"), "{o}");
    assert_eq!(nix::unistd::gethostname().unwrap(), host_name, "{o}");
    for (k, _, before) in &sysctls {
        // O_WRONLY without O_CREAT: the permission check (EACCES: the file is the host's
        // root's) may come before the read-only mount's (EROFS).
        assert_refused(&r, k, &["EROFS", "EACCES", "EPERM"], &o);
        assert_eq!(
            &read_host(&format!("/proc/sys/{k}")),
            before,
            "the host's {k} changed\n{o}"
        );
    }
    if sysrq {
        assert_refused(&r, "sysrq", &["EROFS", "EACCES"], &o);
    } else {
        assert_refused(&r, "sysrq", &["ENOENT"], &o);
        eprintln!("proc_sys: this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ)");
    }
    // Inside, binfmt_misc is not mounted at all (ENOENT), or read-only.
    assert_refused(&r, "binfmt", &["ENOENT", "EROFS", "EACCES"], &o);
}

#[test]
fn sysfs_writes_are_refused_and_the_host_keeps_its_values() {
    assert_unprivileged();
    let present: Vec<(&str, &str, Option<String>)> = SYSFS
        .iter()
        .filter(|(p, _)| Path::new(p).exists())
        .map(|(p, v)| (*p, *v, read_host(p)))
        .collect();
    assert!(present.len() >= 3, "too few sysfs files here: {present:?}");
    let mut a = Attempts::new();
    for (p, v, _) in &present {
        a.probe(p, &["write", p, v]);
    }
    // A block device's queue knobs: the first disk the host has.
    let disk = fs::read_dir("/sys/block")
        .ok()
        .and_then(|d| d.flatten().map(|e| e.file_name()).next())
        .map(|n| format!("/sys/block/{}/queue/read_ahead_kb", n.to_string_lossy()));
    let disk_before = disk.as_deref().and_then(read_host);
    if let Some(d) = &disk {
        a.probe("disk", &["write", d, "0"]);
    }
    let (o, r) = attempt(&[], &a);
    for (p, _, before) in &present {
        // ENOENT: not there inside at all (the cgroup hierarchy without a cgroup of the
        // container's own; uevent_helper where the container's sysfs lacks it).
        assert_refused(&r, p, &["EROFS", "EACCES", "ENOENT"], &o);
        assert_eq!(&read_host(p), before, "the host's {p} changed\n{o}");
    }
    for always in [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/class/net/lo/mtu",
    ] {
        if r.contains_key(always) {
            assert_refused(&r, always, &["EROFS", "EACCES"], &o);
        }
    }
    if let Some(d) = &disk {
        assert_refused(&r, "disk", &["EROFS", "EACCES"], &o);
        assert_eq!(read_host(d), disk_before, "the host's {d} changed\n{o}");
    }
}

#[test]
fn with_cap_sys_admin_the_kernel_still_refuses_global_knobs_and_namespaced_ones_stay_inside() {
    assert_unprivileged();
    // --cap-add SYS_ADMIN lets the container remount its own /proc/sys and /sys bind
    // writable (as in podman: those mounts are the container's own). What then holds is
    // the kernel: global sysctl files belong to the host's root, the container's sysfs
    // is read-only at its superblock, and the namespaced knobs are the container's own.
    let sysctls = host_sysctls();
    let host_name = nix::unistd::gethostname().unwrap();
    let shmmax = read_host("/proc/sys/kernel/shmmax");
    let thp = "/sys/kernel/mm/transparent_hugepage/enabled";
    let thp_before = read_host(thp);
    let mut a = Attempts::new();
    a.probe(
        "remount-proc-sys",
        &["mount", "-", "/proc/sys", "-", "remount,bind"],
    );
    a.probe("remount-sys", &["mount", "-", "/sys", "-", "remount,bind"]);
    for (k, v, _) in &sysctls {
        a.probe(k, &["write", &format!("/proc/sys/{k}"), v]);
    }
    a.probe("sethostname", &["sethostname", "nook-attack-inside"]);
    a.shell(
        "hostname-inside",
        "echo \"$(cat /proc/sys/kernel/hostname)\"",
    );
    a.probe("thp", &["write", thp, "never"]);
    let (o, r) = attempt(&["--cap-add", "SYS_ADMIN"], &a);
    for (k, _, before) in &sysctls {
        // The container's own IPC, UTS, network and user namespaces: the kernel may let
        // their root change them; what matters is that the host's stay.
        let namespaced = ["kernel/shmmax", "kernel/hostname", "kernel/domainname"].contains(k)
            || k.starts_with("net/")
            || k.starts_with("user/");
        if !namespaced {
            assert_refused(&r, k, &["EACCES", "EPERM", "EROFS"], &o);
        }
        assert_eq!(
            &read_host(&format!("/proc/sys/{k}")),
            before,
            "the host's {k} changed\n{o}"
        );
    }
    assert_ok(&r, "sethostname", &o);
    assert_eq!(
        r.get("hostname-inside").map(String::as_str),
        Some("nook-attack-inside"),
        "{o}"
    );
    assert_eq!(nix::unistd::gethostname().unwrap(), host_name, "{o}");
    assert_eq!(read_host("/proc/sys/kernel/shmmax"), shmmax, "{o}");
    if thp_before.is_some() {
        assert_refused(&r, "thp", &["EROFS", "EACCES"], &o);
        assert_eq!(read_host(thp), thp_before, "{o}");
    }
}

#[test]
fn masked_paths_read_empty() {
    assert_unprivileged();
    let present: Vec<&str> = MASKED
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    let absent: Vec<&str> = MASKED
        .iter()
        .copied()
        .filter(|p| !present.contains(p))
        .collect();
    eprintln!("masked_paths_read_empty: not on this kernel: {absent:?}");
    assert!(
        present.len() >= 3,
        "too few masked paths exist here: {present:?}"
    );
    let mut a = Attempts::new();
    for p in &present {
        a.probe(p, &["read", p]);
    }
    let (o, r) = attempt(&[], &a);
    for p in &present {
        let got = r.get(*p).map(String::as_str);
        let empty = if Path::new(p).is_dir() {
            "ok dir 0"
        } else {
            "ok 0"
        };
        // EACCES: a file the container's root may not read at all is as good as empty.
        assert!(
            got == Some(empty) || got == Some("err EACCES"),
            "{p} should read empty inside, got {got:?}\n{o}"
        );
    }
}

#[test]
fn procfs_and_sysfs_cannot_be_mounted_anew_nor_masks_taken_away() {
    assert_unprivileged();
    let masks: Vec<&str> = MASKED
        .iter()
        .chain(&READ_ONLY)
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    let mut a = Attempts::new();
    a.raw("mkdir -p /tmp/p");
    // In the container itself, with the default capabilities.
    a.probe("mount-proc", &["mount", "proc", "/tmp/p", "proc", "-"]);
    a.probe("mount-sysfs", &["mount", "sysfs", "/tmp/p", "sysfs", "-"]);
    for m in &masks {
        a.probe(&format!("umount{m}"), &["umount", m]);
        a.probe(&format!("detach{m}"), &["umount", m, "detach"]);
    }
    a.probe("unshare-mnt", &["in-ns", "mnt", "umount", "/proc/sys"]);
    // In a user namespace of its own, nested in the container's: every mount made by
    // nook is locked there, and procfs/sysfs may be mounted only where an existing
    // mount of them shows everything (it does not: the masks cover part of it).
    let nested = |a: &mut Attempts, key: &str, kinds: &str, op: &[&str]| {
        let mut args = vec!["in-ns", kinds];
        args.extend_from_slice(op);
        a.probe(key, &args);
    };
    nested(
        &mut a,
        "nested-proc",
        "user,mnt",
        &["mount", "proc", "/tmp/p", "proc", "-"],
    );
    nested(
        &mut a,
        "nested-pidns-proc",
        "user,mnt,pid",
        &["mount", "proc", "/tmp/p", "proc", "-"],
    );
    nested(
        &mut a,
        "nested-netns-sysfs",
        "user,mnt,net",
        &["mount", "sysfs", "/tmp/p", "sysfs", "-"],
    );
    for m in &masks {
        nested(
            &mut a,
            &format!("nested-umount{m}"),
            "user,mnt",
            &["umount", m],
        );
    }
    nested(
        &mut a,
        "nested-remount-proc-sys",
        "user,mnt",
        &["mount", "-", "/proc/sys", "-", "remount,bind"],
    );
    // CVE-2022-0492: a cgroup v1 hierarchy mounted in a new cgroup namespace, then its
    // release_agent (run by the host's kernel as root when a cgroup empties).
    let mut cgroup_hierarchies = Vec::new();
    if let Ok(text) = fs::read_to_string("/proc/cgroups") {
        for l in text.lines().skip(1) {
            if let Some(name) = l.split_whitespace().next() {
                cgroup_hierarchies.push(name.to_string());
            }
        }
    }
    cgroup_hierarchies.push("none,name=systemd".into());
    for h in &cgroup_hierarchies {
        nested(
            &mut a,
            &format!("cgroup-v1-{h}"),
            "user,mnt,cgroup",
            &[
                "mount",
                "cgroup",
                "/tmp/p",
                "cgroup",
                "-",
                h,
                "+",
                "write",
                "/tmp/p/release_agent",
                "/tmp/nook-attack",
            ],
        );
    }
    // And after all that, the masks are still in place.
    for m in masks.iter().filter(|m| MASKED.contains(m)) {
        a.probe(&format!("after{m}"), &["read", m]);
    }
    let release_agents: Vec<(String, Option<String>)> = ["memory", "systemd", "cpu", "pids"]
        .iter()
        .map(|h| format!("/sys/fs/cgroup/{h}/release_agent"))
        .map(|p| {
            let v = read_host(&p);
            (p, v)
        })
        .collect();
    let (o, r) = attempt(&[], &a);
    for key in ["mount-proc", "mount-sysfs"] {
        assert_refused(&r, key, &["EPERM"], &o);
    }
    for m in &masks {
        assert_refused(&r, &format!("umount{m}"), &["EPERM"], &o);
        assert_refused(&r, &format!("detach{m}"), &["EPERM"], &o);
        // Locked in the nested namespace: EINVAL (or EPERM).
        assert_refused(&r, &format!("nested-umount{m}"), &["EINVAL", "EPERM"], &o);
    }
    assert_refused(&r, "unshare-mnt", &["EPERM"], &o);
    for key in [
        "nested-proc",
        "nested-pidns-proc",
        "nested-netns-sysfs",
        "nested-remount-proc-sys",
    ] {
        assert_refused(&r, key, &["EPERM"], &o);
    }
    for h in &cgroup_hierarchies {
        let key = format!("cgroup-v1-{h}");
        let got = r
            .get(&key)
            .unwrap_or_else(|| panic!("no result for {key}\n{o}"));
        // Either the mount is refused, or (an existing hierarchy, seen from the new
        // cgroup namespace) release_agent is absent or not writable.
        let steps: Vec<&str> = got.split(" + ").collect();
        let refused = |s: &str| s.starts_with("err ");
        assert!(
            refused(steps[0]) || steps.get(1).is_some_and(|s| refused(s)),
            "{key}: the cgroup v1 release_agent was written: {got}\n{o}"
        );
    }
    for (p, before) in &release_agents {
        assert_eq!(&read_host(p), before, "the host's {p} changed\n{o}");
    }
    for m in masks.iter().filter(|m| MASKED.contains(m)) {
        let got = r.get(&format!("after{m}")).map(String::as_str);
        assert!(
            matches!(got, Some("ok 0" | "ok dir 0" | "err EACCES")),
            "{m} is no longer masked: {got:?}\n{o}"
        );
    }
}

#[test]
fn read_only_mounts_stay_read_only() {
    assert_unprivileged();
    let vol = tempdir();
    let canary = vol.path().join("canary");
    fs::write(&canary, "host-canary\n").unwrap();
    fs::set_permissions(&canary, fs::Permissions::from_mode(0o666)).unwrap();
    let ro = format!("{}:/v:ro", vol.path().display());
    let mut targets = vec!["/v", "/usr", "/etc", "/sys", "/"];
    targets.extend(READ_ONLY.iter().filter(|p| Path::new(p).is_dir()));
    let mut a = Attempts::new();
    a.probe("write-volume", &["write", "/v/canary", "pwned"]);
    for m in &targets {
        a.probe(
            &format!("remount{m}"),
            &["mount", "-", m, "-", "remount,bind"],
        );
        a.probe(
            &format!("nested-remount{m}"),
            &["in-ns", "user,mnt", "mount", "-", m, "-", "remount,bind"],
        );
    }
    a.probe(
        "nested-remount-then-write",
        &[
            "in-ns",
            "user,mnt",
            "mount",
            "-",
            "/v",
            "-",
            "remount,bind",
            "+",
            "write",
            "/v/canary",
            "pwned",
        ],
    );
    a.probe("umount-volume", &["umount", "/v"]);
    let (o, r) = attempt(&["--read-only", "-v", &ro], &a);
    assert_refused(&r, "write-volume", &["EROFS"], &o);
    for m in &targets {
        assert_refused(&r, &format!("remount{m}"), &["EPERM"], &o);
        assert_refused(&r, &format!("nested-remount{m}"), &["EPERM"], &o);
    }
    let got = &r["nested-remount-then-write"];
    assert!(
        got.starts_with("err ") && got.ends_with("err EROFS"),
        "a nested namespace made the volume writable: {got}\n{o}"
    );
    assert_refused(&r, "umount-volume", &["EPERM"], &o);
    assert_eq!(fs::read_to_string(&canary).unwrap(), "host-canary\n", "{o}");
}

/// Host processes of a nook run that are not the container's: the supervisor `top` and
/// its descendants outside the container's pid namespace (netns agent, logger).
fn nook_processes(top: i32) -> Vec<i32> {
    let inner = |p: &i32| {
        fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("NSpid:"))
                    .map(|l| l.split_whitespace().count() > 2)
            })
            .unwrap_or(true)
    };
    let mut pids = vec![top];
    pids.extend(descendants(top).into_iter().filter(|p| !inner(p)));
    pids
}

fn unreachable_attempts(pids: &str) -> String {
    let mut a = Attempts::new();
    a.raw(&format!("for p in {pids}; do"));
    a.shell_keyed("kill-$p", &format!("{ATTACK} kill $p 0"));
    a.shell_keyed("ptrace-$p", &format!("{ATTACK} ptrace $p"));
    a.shell_keyed("vmread-$p", &format!("{ATTACK} vmread $p 400000"));
    a.shell_keyed("pidfd-$p", &format!("{ATTACK} pidfd $p"));
    a.shell_keyed("mem-$p", &format!("{ATTACK} open /proc/$p/mem r"));
    a.raw("done");
    // Every process the container sees is its own: none runs nook.
    a.shell(
        "visible",
        "echo $(for d in /proc/[0-9]*; do readlink $d/exe; done | sort -u)",
    );
    a.script().to_string()
}

fn assert_unreachable(pids: &[i32], r: &BTreeMap<String, String>, o: &Output) {
    for p in pids {
        for what in ["kill", "ptrace", "vmread", "pidfd"] {
            assert_refused(r, &format!("{what}-{p}"), &["ESRCH"], o);
        }
        assert_refused(r, &format!("mem-{p}"), &["ENOENT"], o);
    }
    let nook = nook_bin().canonicalize().unwrap();
    let visible = r.get("visible").cloned().unwrap_or_default();
    assert!(
        !visible.contains(nook.to_str().unwrap()),
        "a nook process is visible inside: {visible}\n{o}"
    );
}

#[test]
fn nooks_supervisor_and_netns_agent_cannot_be_named_from_inside() {
    assert_unprivileged();
    let script = format!("echo ready; read pids\n{}", unreachable_attempts("$pids"));
    let vol = attack_volume();
    let mut cmd = nook();
    cmd.args(["run", "--rm", "-i", "-v", &vol, "host", "sh", "-c", &script])
        .stdin(std::process::Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.wait_for("ready", TIMEOUT);
    let pids = nook_processes(p.pid);
    assert!(
        pids.len() >= 2,
        "expected the supervisor and its netns agent, found {pids:?}"
    );
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    p.write_stdin(format!("{}\n", list.join(" ")).as_bytes());
    p.close_stdin();
    let o = p.wait(TIMEOUT);
    let r = attempt_results(&o);
    assert_unreachable(&pids, &r, &o);
}

#[test]
fn a_detached_containers_supervisor_and_logger_cannot_be_named_from_inside() {
    assert_unprivileged();
    let runtime = tempdir();
    fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let store = tempdir();
    let shared = tempdir();
    let fifo = shared.path().join("pids");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let env = |cmd: &mut std::process::Command| {
        cmd.env("XDG_RUNTIME_DIR", runtime.path())
            .env("NOOK_ROOT", store.path().join("store"));
    };
    let script = format!("read pids </v/pids\n{}", unreachable_attempts("$pids"));
    let vol = attack_volume();
    let shared_vol = format!("{}:/v", shared.path().display());
    let mut cmd = nook();
    env(&mut cmd);
    cmd.args([
        "run",
        "-d",
        "-v",
        &vol,
        "-v",
        &shared_vol,
        "host",
        "sh",
        "-c",
        &script,
    ]);
    let started = spawn(&mut cmd).wait(TIMEOUT);
    started.success();
    let id = started.line();
    // The supervisor: the process running `__supervise` for this store's container.
    let supervisor = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("__supervise") && c.contains(&id)
                })
                .unwrap_or(false)
        });
    let cleanup = |id: &str| {
        let mut rm = nook();
        env(&mut rm);
        rm.args(["rm", "-f", id]);
        let _ = spawn(&mut rm).wait(TIMEOUT);
    };
    let Some(supervisor) = supervisor else {
        cleanup(&id);
        panic!("no supervisor process found for container {id}");
    };
    let pids = nook_processes(supervisor);
    // The container opened the FIFO for reading (or will): this open waits for it, with
    // a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let line = format!("{}\n", list.join(" "));
    let fifo2 = fifo.clone();
    std::thread::spawn(move || {
        let r = fs::OpenOptions::new()
            .write(true)
            .open(&fifo2)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(())) => {}
        other => {
            cleanup(&id);
            panic!("could not hand the pids to the container: {other:?}");
        }
    }
    let mut wait = nook();
    env(&mut wait);
    wait.args(["wait", &id]);
    let waited = spawn(&mut wait).wait(TIMEOUT);
    let mut logs = nook();
    env(&mut logs);
    logs.args(["logs", &id]);
    let o = spawn(&mut logs).wait(TIMEOUT);
    cleanup(&id);
    waited.success();
    o.success();
    assert!(pids.len() >= 3, "supervisor, logger, agent: {pids:?}\n{o}");
    let r = attempt_results(&o);
    assert_unreachable(&pids, &r, &o);
}

#[test]
fn the_init_reaper_cannot_be_traced_from_inside() {
    assert_unprivileged();
    let mut a = Attempts::new();
    a.probe("ptrace", &["ptrace", "1"]);
    a.probe("mem", &["open", "/proc/1/mem", "r"]);
    a.probe("exe", &["readlink", "/proc/1/exe"]);
    a.probe("fds", &["read", "/proc/1/fd"]);
    a.probe("environ", &["read", "/proc/1/environ"]);
    let (o, r) = attempt(&["--init"], &a);
    assert_refused(&r, "ptrace", &["EPERM"], &o);
    for key in ["mem", "exe", "fds", "environ"] {
        assert_refused(&r, key, &["EACCES", "EPERM"], &o);
    }
}

#[test]
fn proc_root_cwd_and_exe_links_lead_nowhere_on_the_host() {
    assert_unprivileged();
    let secret = tempdir();
    let canary = secret.path().join("canary");
    fs::write(&canary, "host-secret\n").unwrap();
    fs::set_permissions(&canary, fs::Permissions::from_mode(0o644)).unwrap();
    let c = canary.display().to_string();
    let sh = fs::canonicalize("/bin/sh").unwrap();
    let sh_before = fs::metadata(&sh).unwrap();
    let mut a = Attempts::new();
    a.probe("root-link", &["readlink", "/proc/1/root"]);
    a.probe("cwd-link", &["readlink", "/proc/1/cwd"]);
    a.probe("self-root", &["read", &format!("/proc/self/root{c}")]);
    a.probe(
        "self-root-dotdot",
        &["read", &format!("/proc/self/root/../../..{c}")],
    );
    a.probe("cwd", &["read", &format!("/proc/1/cwd{c}")]);
    a.raw("for d in /proc/[0-9]*; do");
    a.shell_keyed("root-$d", &format!("{ATTACK} read $d/root{}", sh_quote(&c)));
    a.raw("done");
    // The container's own programs are the host's (the host image): its /proc/PID/exe
    // opened for writing, from the probe and from the shell.
    a.probe("self-exe", &["open", "/proc/self/exe", "w"]);
    a.shell("shell-exe", &format!("{ATTACK} open /proc/$$/exe w"));
    a.shell("shell-exe-link", &format!("{ATTACK} readlink /proc/$$/exe"));
    let (o, r) = attempt(&[], &a);
    assert_eq!(r.get("root-link").map(String::as_str), Some("ok /"), "{o}");
    assert_eq!(r.get("cwd-link").map(String::as_str), Some("ok /"), "{o}");
    for key in ["self-root", "self-root-dotdot", "cwd"] {
        assert_refused(&r, key, &["ENOENT"], &o);
    }
    let per_pid: Vec<&String> = r.keys().filter(|k| k.starts_with("root-/proc/")).collect();
    assert!(!per_pid.is_empty(), "{o}");
    for k in per_pid {
        assert_refused(&r, k, &["ENOENT", "EACCES"], &o);
    }
    assert!(!o.out().contains("host-secret"), "{o}");
    for key in ["self-exe", "shell-exe"] {
        assert_refused(&r, key, &["EACCES", "EROFS", "ETXTBSY"], &o);
    }
    // The link names a path inside the container, not one only the host has.
    let link = r.get("shell-exe-link").cloned().unwrap_or_default();
    assert!(
        link.starts_with("ok /usr/") || link.starts_with("ok /bin/"),
        "{o}"
    );
    let sh_after = fs::metadata(&sh).unwrap();
    assert_eq!(
        (sh_before.len(), sh_before.mtime(), sh_before.ino()),
        (sh_after.len(), sh_after.mtime(), sh_after.ino()),
        "the host's {} changed\n{o}",
        sh.display()
    );
}

/// `name_to_handle_at` on the host: the handle type and bytes, as hex.
fn file_handle(path: &Path) -> Option<(i32, String)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut raw = vec![0u8; 8 + 128];
    raw[..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` is a file_handle with room for the 128 bytes its header announces;
    // the kernel writes at most that, and mount_id is a valid int.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            raw.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            0,
        )
    };
    if r != 0 {
        return None;
    }
    let n = u32::from_ne_bytes(raw[..4].try_into().unwrap()) as usize;
    let typ = i32::from_ne_bytes(raw[4..8].try_into().unwrap());
    let hex: String = raw[8..8 + n].iter().map(|b| format!("{b:02x}")).collect();
    Some((typ, hex))
}

#[test]
fn file_handles_do_not_open_host_files_outside_a_volume() {
    assert_unprivileged();
    // Shocker (2014): open_by_handle_at with a handle forged for a file outside the
    // bind-mounted directory, on the same filesystem. The handle here is a real one,
    // made on the host for a secret beside the volume.
    let base = tempdir();
    let vol = base.path().join("vol");
    let secret = base.path().join("secret");
    fs::create_dir(&vol).unwrap();
    fs::create_dir(&secret).unwrap();
    fs::write(vol.join("own"), "volume-file\n").unwrap();
    fs::write(secret.join("canary"), "host-secret\n").unwrap();
    for p in [&vol, &secret] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let Some((typ, outside)) = file_handle(&secret.join("canary")) else {
        skip(
            "file_handles_do_not_open_host_files_outside_a_volume",
            "the filesystem of the temporary directory has no file handles",
        );
        return;
    };
    let (own_typ, own) = file_handle(&vol.join("own")).unwrap();
    let v = format!("{}:/v", vol.display());
    for caps in [&[][..], &["--cap-add", "DAC_READ_SEARCH"][..]] {
        let mut a = Attempts::new();
        a.probe("outside", &["handle", "/v", &typ.to_string(), &outside]);
        a.probe("own", &["handle", "/v", &own_typ.to_string(), &own]);
        let mut extra = vec!["-v", &v];
        extra.extend_from_slice(caps);
        let (o, r) = attempt(&extra, &a);
        // open_by_handle_at needs CAP_DAC_READ_SEARCH over the filesystem's user
        // namespace (the host's); since Linux 6.12 a handle that resolves outside the
        // caller's mount is refused as well.
        assert_refused(&r, "outside", &["EPERM", "ESTALE", "EACCES"], &o);
        assert_refused(&r, "own", &["EPERM", "ESTALE", "EACCES"], &o);
        assert!(!o.out().contains("host-secret"), "{o}");
    }
}

#[test]
fn host_devices_can_be_neither_created_nor_changed() {
    assert_unprivileged();
    let root_dev = fs::metadata("/").unwrap().dev();
    let (major, minor) = (libc::major(root_dev), libc::minor(root_dev));
    let devices = ["null", "zero", "full", "random", "urandom", "tty"];
    let before: Vec<_> = devices
        .iter()
        .filter_map(|d| fs::metadata(format!("/dev/{d}")).ok().map(|m| (d, m)))
        .map(|(d, m)| (*d, m.mode(), m.uid(), m.gid(), m.ino()))
        .collect();
    for caps in [
        &[][..],
        &["--cap-add", "MKNOD"][..],
        &["--cap-add", "ALL"][..],
    ] {
        let mut a = Attempts::new();
        a.probe(
            "mknod-disk",
            &[
                "mknod",
                "/tmp/disk",
                "b",
                &major.to_string(),
                &minor.to_string(),
            ],
        );
        a.probe("mknod-mem", &["mknod", "/tmp/mem", "c", "1", "1"]);
        a.probe("mknod-kmsg", &["mknod", "/dev/shm/kmsg", "c", "1", "11"]);
        for d in &devices {
            a.probe(
                &format!("chmod-{d}"),
                &["chmod", &format!("/dev/{d}"), "777"],
            );
            a.probe(
                &format!("chown-{d}"),
                &["chown", &format!("/dev/{d}"), "0", "0"],
            );
        }
        a.probe("write-full", &["write", "/dev/full", "x"]);
        let (o, r) = attempt(caps, &a);
        for key in ["mknod-disk", "mknod-mem", "mknod-kmsg"] {
            assert_refused(&r, key, &["EPERM"], &o);
        }
        for d in &devices {
            assert_refused(&r, &format!("chmod-{d}"), &["EPERM"], &o);
            assert_refused(&r, &format!("chown-{d}"), &["EPERM", "EINVAL"], &o);
        }
        assert_refused(&r, "write-full", &["ENOSPC"], &o);
        let after: Vec<_> = devices
            .iter()
            .filter_map(|d| fs::metadata(format!("/dev/{d}")).ok().map(|m| (d, m)))
            .map(|(d, m)| (*d, m.mode(), m.uid(), m.gid(), m.ino()))
            .collect();
        assert_eq!(before, after, "a host device node changed ({caps:?})\n{o}");
    }
}
