//! Full subordinate-ID containers (issue 3), as the unprivileged account.
//!
//! tests/run.sh gives the account a range in /etc/subuid and /etc/subgid and installs the
//! setuid helpers; `nook info --format json` tells these tests whether that is so here, and
//! a test that needs it says SKIP when it is not.

use std::os::unix::fs::MetadataExt;

use nook_tests::*;

/// The first subordinate range of this user in `file`, as (start, count).
fn first_range(file: &str) -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()??
        .name;
    let uid = uid().to_string();
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.trim().split(':').collect();
            if f.len() == 3 && (f[0] == user || f[0] == uid) {
                Some((f[1].parse().ok()?, f[2].parse().ok()?))
            } else {
                None
            }
        })
}

/// Whether `nook info` finds a usable helper and both ranges.
fn full_map_available(test: &str) -> Option<((u32, u32), (u32, u32))> {
    let mut cmd = nook();
    cmd.args(["info", "--format", "json"]);
    let info = spawn(&mut cmd).wait(TIMEOUT);
    info.success();
    let text = info.out();
    let status_of = |name: &str| {
        let at = text.find(&format!("\"name\": \"{name}\""))?;
        let rest = &text[at..];
        let s = rest.find("\"status\": \"")? + 11;
        Some(rest[s..].split('"').next()?.to_string())
    };
    let helper_ok = status_of("helper").as_deref() == Some("ok");
    match (
        helper_ok,
        first_range("/etc/subuid"),
        first_range("/etc/subgid"),
    ) {
        (true, Some(u), Some(g)) => Some((u, g)),
        _ => {
            skip(
                test,
                "needs a setuid newuidmap helper and /etc/subuid + /etc/subgid ranges for this \
                 user (tests/run.sh sets both up when started as root)",
            );
            None
        }
    }
}

#[test]
fn default_map_is_root_then_the_subordinate_range() {
    assert_unprivileged();
    let Some(((sub_uid, uid_count), (sub_gid, gid_count))) =
        full_map_available("default_map_is_root_then_the_subordinate_range")
    else {
        return;
    };
    let out = run(&[
        "--rm",
        "host",
        "sh",
        "-c",
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map",
    ]);
    out.success();
    let text = out.out();
    let lines: Vec<Vec<u64>> = text
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .collect();
    assert_eq!(lines[0], vec![0], "id -u\n{out}");
    assert_eq!(lines[1], vec![0], "id -g\n{out}");
    assert_eq!(lines[2], vec![0, uid() as u64, 1], "uid_map line 1\n{out}");
    assert_eq!(
        lines[3],
        vec![1, sub_uid as u64, uid_count as u64],
        "uid_map line 2\n{out}"
    );
    assert_eq!(lines[4], vec![0, gid() as u64, 1], "gid_map line 1\n{out}");
    assert_eq!(
        lines[5],
        vec![1, sub_gid as u64, gid_count as u64],
        "gid_map line 2\n{out}"
    );
    assert!(
        !out.err().contains("single-ID"),
        "no fallback notice expected\n{out}"
    );
}

#[test]
fn chown_inside_shows_as_the_subordinate_id_outside() {
    assert_unprivileged();
    let Some(((sub_uid, _), (sub_gid, _))) =
        full_map_available("chown_inside_shows_as_the_subordinate_id_outside")
    else {
        return;
    };
    let dir = tempdir();
    let volume = format!("{}:/data", dir.path().display());
    run(&[
        "--rm",
        "-v",
        &volume,
        "host",
        "sh",
        "-c",
        "touch /data/f && chown 1000:1000 /data/f",
    ])
    .success();
    let meta = std::fs::metadata(dir.path().join("f")).expect("file written in the volume");
    assert_eq!(
        meta.uid(),
        sub_uid + 999,
        "container uid 1000 is subuid start + 999"
    );
    assert_eq!(
        meta.gid(),
        sub_gid + 999,
        "container gid 1000 is subgid start + 999"
    );

    // `nook unshare` sees the same owners and can remove what the container left.
    let mut cmd = nook();
    cmd.args(["unshare", "sh", "-c"]).arg(format!(
        "stat -c %u:%g {0}/f && rm {0}/f",
        dir.path().display()
    ));
    let out = spawn(&mut cmd).wait(TIMEOUT);
    out.success();
    assert_eq!(out.line(), "1000:1000", "{out}");
    assert!(!dir.path().join("f").exists());
}

#[test]
fn keep_id_keeps_the_users_uid_with_a_full_map() {
    assert_unprivileged();
    let Some(((sub_uid, _), _)) = full_map_available("keep_id_keeps_the_users_uid_with_a_full_map")
    else {
        return;
    };
    let out = run(&[
        "--rm",
        "--userns=keep-id",
        "host",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    out.success();
    let text = out.out();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(uid().to_string().as_str()), "{out}");
    let map: Vec<Vec<u32>> = lines
        .map(|l| {
            l.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .collect();
    assert!(
        map.contains(&vec![uid(), uid(), 1]),
        "own id maps to itself\n{out}"
    );
    assert!(
        map.iter().any(|r| r[0] == 0 && r[1] == sub_uid),
        "container root is the first subordinate id\n{out}"
    );
}

/// `nook run --rm host ...` through a copy of nook with no helper next to it and none
/// on PATH, with the account's state in `state`.
fn run_without_helper(copy: &std::path::Path, state: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(copy);
    cmd.env("PATH", copy.parent().expect("a directory"))
        .env("XDG_STATE_HOME", state)
        .args(args)
        .args(["run", "--rm", "host", "cat", "/proc/self/uid_map"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    spawn(&mut cmd).wait(TIMEOUT)
}

#[test]
fn without_a_helper_the_single_id_map_runs_and_says_so_once() {
    assert_unprivileged();
    // No helper next to a copy of nook and none on PATH: nook must fall back, not fail.
    let dir = tempdir();
    let copy = dir.path().join("bin/nook");
    std::fs::create_dir(dir.path().join("bin")).expect("mkdir");
    std::fs::copy(nook_bin(), &copy).expect("copy nook");
    let state = dir.path().join("state");
    // A CI job of three runs: the notice once, on the first.
    let runs: Vec<Output> = (0..3)
        .map(|_| run_without_helper(&copy, &state, &[]))
        .collect();
    for out in &runs {
        out.success();
        let map: Vec<Vec<u32>> = out
            .out()
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .collect();
        assert_eq!(map, vec![vec![0, uid(), 1]], "single-ID map\n{out}");
    }
    let first = runs[0].err();
    assert_eq!(
        first.lines().count(),
        1,
        "exactly one notice line\n{}",
        runs[0]
    );
    assert!(first.contains("single-ID map"), "{}", runs[0]);
    assert!(first.contains("APT::Sandbox::User=root"), "{}", runs[0]);
    for out in &runs[1..] {
        assert_eq!(out.err(), "", "the notice is shown once per account\n{out}");
    }
    // Kept in the account's state directory, private.
    let marker = state.join("nook/single-id-notice");
    let meta = std::fs::metadata(&marker).expect("the notice's marker");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // --log-level info shows it every time; error never, and does not use it up.
    let info = run_without_helper(&copy, &state, &["--log-level", "info"]);
    info.success();
    assert!(info.err().contains("single-ID map"), "{info}");
    let fresh = dir.path().join("fresh");
    let quiet = run_without_helper(&copy, &fresh, &["--log-level", "error"]);
    quiet.success();
    assert_eq!(quiet.err(), "", "{quiet}");
    let after = run_without_helper(&copy, &fresh, &[]);
    assert!(after.err().contains("single-ID map"), "{after}");
}

#[test]
fn explicit_maps_and_bad_ones() {
    assert_unprivileged();
    let Some(((sub_uid, _), (sub_gid, _))) = full_map_available("explicit_maps_and_bad_ones")
    else {
        return;
    };
    let out = run(&[
        "--rm",
        "--uidmap",
        "0:0:1",
        "--uidmap",
        "1:1:100",
        "--gidmap",
        "0:0:1",
        "--gidmap",
        "1:11:100",
        "host",
        "cat",
        "/proc/self/uid_map",
        "/proc/self/gid_map",
    ]);
    out.success();
    let text = out.out();
    assert!(text.contains(&format!(" {sub_uid} ")), "{out}");
    assert!(text.contains(&format!(" {} ", sub_gid + 10)), "{out}");
    run(&[
        "--rm", "--uidmap", "0:1:10", "--gidmap", "0:0:1", "host", "true",
    ])
    .assert_error_line(125, &["own uid"]);
    run(&[
        "--rm", "--uidmap", "0:0", "--gidmap", "0:0:1", "host", "true",
    ])
    .assert_error_line(125, &["0:0"]);
}
