//! `nook run` isolates every namespace: user, mount, pid, uts, ipc, cgroup, net; and never
//! changes the host's mount table.

use nook_tests::*;

#[test]
fn every_namespace_differs_from_the_host() {
    assert_unprivileged();
    let kinds = ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect();
    let o = run(&["--rm", "host", "sh", "-c", &script]);
    o.success();
    let inside: Vec<String> = o.out().lines().map(str::to_string).collect();
    assert_eq!(inside.len(), kinds.len(), "one line per namespace\n{o}");
    for (k, link) in kinds.iter().zip(&inside) {
        let host = host_ns(k);
        assert!(
            link.starts_with(&format!("{k}:[")),
            "{k}: odd link {link:?}\n{o}"
        );
        assert_ne!(
            *link, host,
            "the container shares the host's {k} namespace\n{o}"
        );
    }
}

#[test]
fn command_is_pid_1_and_sees_only_its_own_processes() {
    assert_unprivileged();
    let o = run(&["--rm", "host", "sh", "-c", "echo $$; ls -d /proc/[0-9]*"]);
    o.success();
    let out = o.out();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "the command should be pid 1\n{o}");
    let pids: Vec<&str> = lines.collect();
    assert!(
        pids.contains(&"/proc/1"),
        "/proc/1 missing: is /proc a fresh procfs?\n{o}"
    );
    // sh (1) and ls; a supervisor does not belong in there, nor any host process.
    assert!(
        pids.len() <= 2,
        "the container sees processes that are not its own: {pids:?}\n{o}"
    );
    let me = format!("/proc/{}", std::process::id());
    assert!(
        !pids.contains(&me.as_str()),
        "the test's own pid is visible inside\n{o}"
    );
}

#[test]
fn default_hostname_is_the_container_id() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "host",
        "sh",
        "-c",
        "uname -n; cat /proc/sys/kernel/hostname",
    ]);
    o.success();
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{o}");
    assert_eq!(lines[0], lines[1], "uname and procfs disagree\n{o}");
    let h = lines[0];
    assert!(
        h.len() == 12
            && h.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "default hostname should be the 12-hex-digit container id, got {h:?}\n{o}"
    );
    // Two containers, two ids.
    let o2 = run(&["--rm", "host", "uname", "-n"]);
    o2.success();
    assert_ne!(o2.line(), h, "two containers got the same id\n{o2}");
}

#[test]
fn hostname_option_sets_the_uts_name_and_the_host_keeps_its_own() {
    assert_unprivileged();
    let host_before = nix::unistd::gethostname().unwrap();
    let o = run(&["--rm", "--hostname", "nook-box", "host", "uname", "-n"]);
    o.success();
    assert_eq!(o.line(), "nook-box", "{o}");
    // Changing it inside (with CAP_SYS_ADMIN) changes only the container's.
    let o = run(&[
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "--hostname",
        "nook-box",
        "host",
        "sh",
        "-c",
        "hostname changed && uname -n",
    ]);
    o.success();
    assert_eq!(
        o.line(),
        "changed",
        "sethostname inside the uts namespace\n{o}"
    );
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host_before,
        "the host's hostname changed!\n{o}"
    );
}

#[test]
fn a_mount_inside_is_invisible_outside_and_the_host_table_is_unchanged() {
    assert_unprivileged();
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let marker = format!("nookmark{}", token());
    let script = format!(
        "mkdir -p /tmp/m && mount -t tmpfs {marker} /tmp/m && grep -c {marker} /proc/self/mountinfo"
    );
    let o = run(&[
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "host",
        "sh",
        "-c",
        &script,
    ]);
    o.success();
    assert_eq!(o.line(), "1", "the mount should be visible inside\n{o}");
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !after.contains(&marker),
        "the container's mount leaked to the host\n{o}"
    );
    assert_eq!(
        before, after,
        "the host's mount table changed during `nook run`\n{o}"
    );
}

#[test]
fn mount_needs_cap_sys_admin_which_is_not_granted_by_default() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "host",
        "sh",
        "-c",
        "mkdir -p /tmp/m && mount -t tmpfs x /tmp/m",
    ]);
    assert_ne!(
        o.code(),
        0,
        "mount succeeded without --cap-add SYS_ADMIN\n{o}"
    );
}

#[test]
fn ipc_namespace_is_private() {
    assert_unprivileged();
    // A System V message queue made inside is not seen by the host or another container.
    let o = run(&[
        "--rm",
        "host",
        "sh",
        "-c",
        "ipcmk -Q >/dev/null && ipcs -q | grep -c '^0x'",
    ]);
    o.success();
    assert_eq!(o.line(), "1", "one queue inside after ipcmk\n{o}");
    let o2 = run(&[
        "--rm",
        "host",
        "sh",
        "-c",
        "ipcs -q | grep -c '^0x' || true",
    ]);
    o2.success();
    assert_eq!(
        o2.line(),
        "0",
        "a fresh container sees another's queue\n{o2}"
    );
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    assert_unprivileged();
    // (Only the explicit option: the default network changes when the userspace network
    // lands, after which the default has tap0 as well.)
    for extra in [&["--network", "none"][..], &["--network=none"][..]] {
        let mut args = vec!["--rm"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "host",
            "sh",
            "-c",
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip -o link show lo",
        ]);
        let o = run(&args);
        o.success();
        let out = o.out();
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("lo"),
            "interfaces inside ({extra:?})\n{o}"
        );
        let ip = lines
            .next()
            .unwrap_or_else(|| panic!("no `ip link` line ({extra:?})\n{o}"));
        assert!(ip.contains("lo:"), "{o}");
        let flags = ip
            .split('<')
            .nth(1)
            .and_then(|s| s.split('>').next())
            .unwrap_or("");
        assert!(
            flags.split(',').any(|f| f == "UP"),
            "lo is not UP ({extra:?}): {ip}\n{o}"
        );
        assert_eq!(lines.next(), None, "more than lo inside ({extra:?})\n{o}");
    }
}

#[test]
fn network_host_shares_the_host_interfaces() {
    assert_unprivileged();
    let ifaces = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|s| s.trim().to_string())
            .collect();
        v.sort();
        v
    };
    let host = ifaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    let o = run(&[
        "--rm",
        "--network",
        "host",
        "host",
        "sh",
        "-c",
        "readlink /proc/self/ns/net; cat /proc/net/dev",
    ]);
    o.success();
    let out = o.out();
    let (ns, dev) = out.split_once('\n').unwrap_or(("", ""));
    assert_eq!(
        ns,
        host_ns("net"),
        "--network host should share the host's netns\n{o}"
    );
    assert_eq!(ifaces(dev), host, "{o}");
}

#[test]
fn default_user_is_root_inside_mapped_to_the_user() {
    assert_unprivileged();
    let o = run(&[
        "--rm",
        "host",
        "sh",
        "-c",
        "id -u; id -g; head -n1 /proc/self/uid_map; head -n1 /proc/self/gid_map",
    ]);
    o.success();
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{o}");
    assert_eq!(lines[0], "0", "the user should be uid 0 inside\n{o}");
    assert_eq!(
        lines[1], "0",
        "the user's group should be gid 0 inside\n{o}"
    );
    // Container 0 maps to the user's own ids (single-ID map, or podman's full map).
    let first = |l: &str| {
        l.split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        first(lines[2]),
        ["0".to_string(), uid().to_string()],
        "uid_map\n{o}"
    );
    assert_eq!(
        first(lines[3]),
        ["0".to_string(), gid().to_string()],
        "gid_map\n{o}"
    );
}
