//! The root `nook run` builds: /dev, /proc and /sys with the OCI masks and read-only paths,
//! the built-in `host` image, `--read-only` and `--tmpfs`.

use std::path::Path;

use nook_tests::*;

fn mounts_inside(extra: &[&str]) -> (Vec<Mount>, Output) {
    let mut args = vec!["--rm"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["host", "cat", "/proc/self/mountinfo"]);
    let o = run(&args);
    o.success();
    (parse_mountinfo(&o.out()), o)
}

#[test]
fn dev_holds_exactly_the_safe_devices() {
    assert_unprivileged();
    let o = run(&["--rm", "host", "ls", "-A", "/dev"]);
    o.success();
    let out = o.out();
    let entries: Vec<&str> = out.lines().collect();
    let required = [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue",
    ];
    for r in required {
        assert!(entries.contains(&r), "/dev/{r} missing\n{o}");
    }
    // podman's extras are fine (console with -t, fd/stdin/stdout/stderr links, later
    // issues' fuse and net/tun); any other host device is a leak.
    let allowed_extra = [
        "console", "fd", "stdin", "stdout", "stderr", "core", "fuse", "net",
    ];
    let leaked: Vec<&&str> = entries
        .iter()
        .filter(|e| !required.contains(e) && !allowed_extra.contains(e))
        .collect();
    assert!(
        leaked.is_empty(),
        "host devices visible in the container's /dev: {leaked:?}\n{o}"
    );
}

#[test]
fn dev_nodes_work() {
    assert_unprivileged();
    let script = "
        for d in null zero full random urandom tty; do test -c /dev/$d || echo \"not a char device: $d\"; done
        echo discard > /dev/null || echo 'cannot write /dev/null'
        head -c 4 /dev/zero | od -An -tx1 | tr -d ' \\n'; echo
        head -c 16 /dev/urandom | wc -c
        head -c 16 /dev/random | wc -c
        if echo x 2>/dev/null > /dev/full; then echo '/dev/full accepted a write'; else echo full-ok; fi
        echo shm > /dev/shm/f && cat /dev/shm/f
    ";
    let o = run(&["--rm", "host", "sh", "-c", script]);
    o.success();
    assert_eq!(o.out(), "00000000\n16\n16\nfull-ok\nshm\n", "{o}");
}

#[test]
fn devpts_is_a_new_instance_with_a_working_ptmx() {
    assert_unprivileged();
    let (mounts, o) = mounts_inside(&[]);
    let pts = mount_at(&mounts, "/dev/pts").unwrap_or_else(|| panic!("no mount at /dev/pts\n{o}"));
    assert_eq!(pts.fstype, "devpts", "{o}");
    let host = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    if let Some(host_pts) = mount_at(&host, "/dev/pts") {
        assert_ne!(
            pts.dev, host_pts.dev,
            "/dev/pts is the host's devpts, not a newinstance\n{o}"
        );
    }
    assert!(
        pts.super_opts.contains("ptmxmode=666"),
        "devpts should have ptmxmode=0666: {pts:?}\n{o}"
    );
    let shm = mount_at(&mounts, "/dev/shm").unwrap_or_else(|| panic!("no mount at /dev/shm\n{o}"));
    assert_eq!(shm.fstype, "tmpfs", "{o}");
    let mq =
        mount_at(&mounts, "/dev/mqueue").unwrap_or_else(|| panic!("no mount at /dev/mqueue\n{o}"));
    assert_eq!(mq.fstype, "mqueue", "{o}");
    // A pty can be allocated inside (script(1)-free: python-free: just open ptmx).
    let o = run(&[
        "--rm",
        "host",
        "sh",
        "-c",
        "exec 3<>/dev/ptmx && ls /dev/pts",
    ]);
    o.success();
    assert!(
        o.out().lines().any(|l| l == "0"),
        "opening /dev/ptmx made no /dev/pts/0\n{o}"
    );
}

#[test]
fn proc_is_fresh_and_masked_files_read_empty() {
    assert_unprivileged();
    let (mounts, o) = mounts_inside(&[]);
    let proc_ = mount_at(&mounts, "/proc").unwrap_or_else(|| panic!("no mount at /proc\n{o}"));
    assert_eq!(proc_.fstype, "proc", "{o}");
    let files = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/latency_stats",
        "/proc/timer_stats",
    ];
    let present: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| Path::new(f).exists())
        .collect();
    assert!(
        !present.is_empty(),
        "none of the masked /proc files exists on this kernel?"
    );
    let script: String = present
        .iter()
        .map(|f| format!("printf '%s ' {f}; (cat {f} 2>/dev/null || true) | wc -c; "))
        .collect();
    let o = run(&["--rm", "host", "sh", "-c", &script]);
    o.success();
    for f in &present {
        assert!(
            o.out().lines().any(|l| l == format!("{f} 0")),
            "{f} should read as empty inside\n{o}"
        );
    }
}

#[test]
fn masked_directories_are_empty_and_read_only() {
    assert_unprivileged();
    let dirs = [
        "/proc/acpi",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ];
    let present: Vec<&str> = dirs
        .iter()
        .copied()
        .filter(|d| Path::new(d).is_dir())
        .collect();
    if present.is_empty() {
        skip(
            "masked_directories_are_empty_and_read_only",
            "none of the masked directories exists on this kernel",
        );
        return;
    }
    let script: String = present
        .iter()
        .map(|d| format!("printf '%s %s ' {d} \"$(ls -A {d} | wc -l)\"; if touch {d}/x 2>/dev/null; then echo writable; else echo ro; fi; "))
        .collect();
    let o = run(&["--rm", "host", "sh", "-c", &script]);
    o.success();
    for d in &present {
        assert!(
            o.out().lines().any(|l| l == format!("{d} 0 ro")),
            "{d} should be an empty read-only dir\n{o}"
        );
    }
}

#[test]
fn proc_sys_and_friends_are_read_only() {
    assert_unprivileged();
    let (mounts, o) = mounts_inside(&[]);
    for p in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
    ] {
        if !Path::new(p).exists() {
            continue;
        }
        let m =
            mount_at(&mounts, p).unwrap_or_else(|| panic!("{p} is not a (read-only) mount\n{o}"));
        assert!(m.read_only(), "{p} should be mounted read-only: {m:?}\n{o}");
    }
    // Even with CAP_SYS_ADMIN, which would allow the (uts-namespaced) write otherwise.
    let o = run(&[
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "host",
        "sh",
        "-c",
        "if echo x 2>/dev/null > /proc/sys/kernel/hostname; then echo wrote; else echo refused; fi",
    ]);
    o.success();
    assert_eq!(o.line(), "refused", "writing /proc/sys must fail\n{o}");
}

#[test]
fn sys_is_read_only() {
    assert_unprivileged();
    let (mounts, o) = mounts_inside(&[]);
    let sys = mount_at(&mounts, "/sys").unwrap_or_else(|| panic!("no mount at /sys\n{o}"));
    assert!(sys.read_only(), "/sys should be read-only: {sys:?}\n{o}");
    assert!(
        sys.fstype == "sysfs" || sys.fstype == "tmpfs",
        "odd /sys: {sys:?}\n{o}"
    );
    let o = run(&[
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "host",
        "sh",
        "-c",
        "if mkdir /sys/nook-x 2>/dev/null || touch /sys/kernel/nook-x 2>/dev/null; then echo wrote; else echo refused; fi; test -d /sys/kernel && echo has-kernel",
    ]);
    o.success();
    assert_eq!(o.out(), "refused\nhas-kernel\n", "{o}");
}

#[test]
fn root_is_a_fresh_tmpfs_entered_with_pivot_root() {
    assert_unprivileged();
    let (mounts, o) = mounts_inside(&[]);
    let root = mount_at(&mounts, "/")
        .unwrap_or_else(|| panic!("no mount at / in the container's table\n{o}"));
    assert_eq!(
        root.fstype, "tmpfs",
        "the host image's root is a fresh tmpfs\n{o}"
    );
    assert_eq!(root.root, "/", "{o}");
    // After pivot_root the old root is detached: no host mount reappears inside, except
    // the image's binds and what /dev, /proc and /sys are made of.
    let host = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    let under = |p: &str, dirs: &[&str]| {
        dirs.iter()
            .any(|d| p == *d || p.starts_with(&format!("{d}/")))
    };
    let image = [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
    ];
    for m in &mounts {
        if under(&m.point, &["/dev", "/proc", "/sys"]) {
            continue;
        }
        if let Some(h) = host.iter().find(|h| h.dev == m.dev && h.root == m.root) {
            assert!(
                under(&h.point, &image),
                "the host's mount at {} is visible inside at {}: is the old root still attached?\n{o}",
                h.point,
                m.point
            );
        }
    }
}

#[test]
fn host_image_binds_system_dirs_read_only_and_makes_fresh_scratch_dirs() {
    assert_unprivileged();
    let host_marker = tempfile::Builder::new()
        .prefix("nook-host-marker-")
        .tempfile_in("/tmp")
        .unwrap();
    let marker_name = host_marker.path().to_str().unwrap().to_string();
    let script = format!(
        "for d in /usr /etc /usr/bin; do if touch $d/nook-x 2>/dev/null; then echo \"$d writable\"; fi; done
         touch /nook-root-file && echo root-writable
         for d in /tmp /run /var/tmp; do touch $d/f && echo \"$d writable\"; done
         test -e {marker_name} && echo 'host /tmp visible'
         ls -A /tmp
         cat /etc/os-release | cksum
         test -x /bin/sh && test -x /usr/bin/env && echo bins"
    );
    let o = run(&["--rm", "host", "sh", "-c", &script]);
    o.success();
    let host_sum = {
        let c = std::process::Command::new("sh")
            .args(["-c", "cat /etc/os-release | cksum"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&c.stdout).into_owned()
    };
    let expect = format!(
        "root-writable\n/tmp writable\n/run writable\n/var/tmp writable\nf\n{host_sum}bins\n"
    );
    assert_eq!(o.out(), expect, "{o}");
    let (mounts, o) = mounts_inside(&[]);
    for p in ["/usr", "/etc"] {
        let m = mount_at(&mounts, p).unwrap_or_else(|| panic!("{p} is not bound\n{o}"));
        assert!(m.read_only(), "{p} should be a read-only bind: {m:?}\n{o}");
    }
}

#[test]
fn read_only_root_keeps_tmp_run_var_tmp_writable() {
    assert_unprivileged();
    let script = "if touch /nook-x 2>/dev/null; then echo 'root writable'; else echo root-ro; fi
                  for d in /tmp /run /var/tmp; do touch $d/f && echo \"$d ok\"; done";
    let o = run(&["--rm", "--read-only", "host", "sh", "-c", script]);
    o.success();
    assert_eq!(o.out(), "root-ro\n/tmp ok\n/run ok\n/var/tmp ok\n", "{o}");
    let (mounts, o) = mounts_inside(&["--read-only"]);
    let root = mount_at(&mounts, "/").unwrap();
    assert!(
        root.read_only(),
        "--read-only root should be mounted ro: {root:?}\n{o}"
    );
}

#[test]
fn tmpfs_option_mounts_a_tmpfs_with_size_and_mode() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch:size=1m,mode=1777",
        "--tmpfs",
        "/plain",
        "host",
        "sh",
        "-c",
        "stat -c %a /scratch; echo hi > /scratch/f && cat /scratch/f; echo x > /plain/y && echo plain-ok; grep -E ' /(scratch|plain) ' /proc/self/mountinfo",
    ]);
    o.success();
    let out = o.out();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1777"), "mode=1777\n{o}");
    assert_eq!(lines.next(), Some("hi"), "{o}");
    assert_eq!(lines.next(), Some("plain-ok"), "{o}");
    let rest: String = lines.collect::<Vec<_>>().join("\n");
    let mounts = parse_mountinfo(&rest);
    let scratch = mount_at(&mounts, "/scratch").unwrap_or_else(|| panic!("no /scratch mount\n{o}"));
    assert_eq!(scratch.fstype, "tmpfs", "{o}");
    assert!(
        scratch.super_opts.contains("size=1024k"),
        "size=1m not applied: {scratch:?}\n{o}"
    );
    assert_eq!(
        mount_at(&mounts, "/plain").map(|m| m.fstype.as_str()),
        Some("tmpfs"),
        "{o}"
    );
}
