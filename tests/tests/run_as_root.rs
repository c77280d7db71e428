//! `nook run` started by root (CI runners often are): the container still gets a user
//! namespace of its own and every other namespace. tests/run.sh runs this file as root;
//! run as anyone else it says SKIP and passes.

use nook_tests::*;

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(
        test,
        "needs euid 0: run `bash tests/run.sh` as root, which runs this test as root",
    );
    false
}

#[test]
fn started_by_root() {
    if !root_or_skip("started_by_root") {
        return;
    }
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let kinds = ["user", "mnt", "pid", "uts", "ipc", "net", "cgroup"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect::<String>()
        + "echo $$; id -u";
    let o = run(&["--rm", "host", "sh", "-c", &script]);
    o.success();
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), kinds.len() + 2, "{o}");
    for (k, link) in kinds.iter().zip(&lines) {
        assert_ne!(
            *link,
            host_ns(k),
            "started by root, the container shares the host's {k} namespace\n{o}"
        );
    }
    assert_eq!(lines[kinds.len()], "1", "pid 1 inside\n{o}");
    assert_eq!(lines[kinds.len() + 1], "0", "uid 0 inside\n{o}");
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(before, after, "the host's mount table changed");
}

#[test]
fn started_by_root_exit_codes_and_rootfs() {
    if !root_or_skip("started_by_root_exit_codes_and_rootfs") {
        return;
    }
    run(&["--rm", "host", "sh", "-c", "exit 3"]).assert_code(3);
    run(&["--rm", "host", "nook-no-such-command"]).assert_code(127);
    run(&["--rm", "nosuchimage", "true"]).assert_code(125);
    let rootfs = busybox_rootfs().unwrap_or_else(|why| panic!("{why}"));
    let o = run(&[
        "--rm",
        "--rootfs",
        rootfs.path_str(),
        "/bin/sh",
        "-c",
        "cat /etc/nook-rootfs-marker; echo; echo $$",
    ]);
    o.success();
    assert_eq!(o.out(), format!("{}\n1\n", rootfs.marker), "{o}");
}
