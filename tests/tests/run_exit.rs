//! Exit status of `nook run` (podman's codes) and what it says about bad input.

use nook_tests::*;

#[test]
fn status_zero() {
    assert_unprivileged();
    let o = run(&["--rm", "host", "true"]);
    o.success();
    assert!(o.stdout.is_empty(), "{o}");
}

#[test]
fn status_of_the_command_is_passed_through() {
    assert_unprivileged();
    run(&["--rm", "host", "sh", "-c", "exit 3"]).assert_code(3);
    run(&["--rm", "host", "false"]).assert_code(1);
    run(&["--rm", "host", "sh", "-c", "exit 255"]).assert_code(255);
}

#[test]
fn default_command_is_bin_sh() {
    assert_unprivileged();
    // Without -i stdin is /dev/null: the shell reads EOF and exits 0 at once.
    let o = run(&["--rm", "host"]);
    o.success();
    // With -i the script comes from stdin.
    let mut cmd = nook();
    cmd.args(["run", "--rm", "-i", "host"])
        .stdin(std::process::Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.feed_stdin(b"echo from-stdin-sh $$; exit 7\n".to_vec());
    let o = p.wait(TIMEOUT);
    o.assert_code(7);
    assert_eq!(o.out(), "from-stdin-sh 1\n", "{o}");
}

#[test]
fn killed_by_sigkill_is_137_under_init() {
    assert_unprivileged();
    let o = run(&["--rm", "--init", "host", "sh", "-c", "echo $$; kill -9 $$"]);
    o.assert_code(137);
    assert_eq!(o.line(), "2", "under --init the command is pid 2\n{o}");
}

#[test]
fn container_init_killed_from_outside_is_137() {
    assert_unprivileged();
    let mut cmd = nook();
    cmd.args([
        "run",
        "--rm",
        "host",
        "sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    let mut p = spawn(&mut cmd);
    p.wait_for("ready", TIMEOUT);
    let init = container_init(p.pid).unwrap_or_else(|| {
        p.kill_all();
        panic!(
            "found no descendant of nook ({}) that is pid 1 in its pid namespace",
            p.pid
        )
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), Signal::SIGKILL).unwrap();
    let o = p.wait(TIMEOUT);
    o.assert_code(137);
}

#[test]
fn command_not_found_is_127_with_one_line() {
    assert_unprivileged();
    let o = run(&["--rm", "host", "nook-no-such-command"]);
    o.assert_error_line(127, &["nook-no-such-command"]);
    let o = run(&["--rm", "host", "/no/such/path/cmd"]);
    o.assert_error_line(127, &["/no/such/path/cmd"]);
}

#[test]
fn command_not_executable_is_126_with_one_line() {
    assert_unprivileged();
    let o = run(&["--rm", "host", "/etc/passwd"]);
    o.assert_error_line(126, &["/etc/passwd"]);
}

#[test]
fn unknown_image_is_125_with_one_line() {
    assert_unprivileged();
    let o = run(&["--rm", "nosuchimage", "true"]);
    o.assert_error_line(125, &["nosuchimage"]);
}

#[test]
fn missing_rootfs_is_125_with_one_line() {
    assert_unprivileged();
    let dir = tempdir();
    let missing = dir.path().join("no-such-rootfs");
    let missing = missing.to_str().unwrap();
    let o = run(&["--rm", "--rootfs", missing, "/bin/sh", "-c", "true"]);
    o.assert_error_line(125, &[missing]);
}

#[test]
fn bad_volume_specs_are_125_with_one_line() {
    assert_unprivileged();
    let dir = tempdir();
    let host = dir.path().to_str().unwrap();
    let missing = format!("{host}/no-such-dir");
    let cases: Vec<(String, &str)> = vec![
        // container path not absolute
        (format!("{host}:relative/path"), "relative/path"),
        // unknown option
        (format!("{host}:/data:bogus"), "bogus"),
        // host path that does not exist
        (format!("{missing}:/data"), "no-such-dir"),
        // no container path at all
        (String::new(), ""),
    ];
    for (spec, mention) in &cases {
        let o = run(&["--rm", "-v", spec, "host", "true"]);
        let mentions: Vec<&str> = if mention.is_empty() {
            vec![]
        } else {
            vec![mention]
        };
        o.assert_error_line(125, &mentions);
    }
}

#[test]
fn unknown_option_is_125() {
    assert_unprivileged();
    let o = run(&["--no-such-option", "host", "true"]);
    o.assert_code(125);
    assert!(o.err().contains("--no-such-option"), "{o}");
}
