//! stdin, stdout, stderr and pipes pass through `nook run` byte-exact; without `-i` the
//! container's stdin is /dev/null.

use std::process::Stdio;

use nook_tests::*;
use sha2::{Digest, Sha256};

const TEN_MIB: usize = 10 << 20;

fn run_with_input(args: &[&str], input: Vec<u8>) -> Output {
    let mut cmd = nook();
    cmd.args(["run", "--rm"]).args(args).stdin(Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.feed_stdin(input);
    p.wait(TIMEOUT)
}

#[test]
fn ten_mib_of_random_bytes_through_cat_unchanged() {
    assert_unprivileged();
    let input = random_bytes(TEN_MIB);
    let o = run_with_input(&["--rm", "-i", "host", "cat"], input.clone());
    assert_eq!(o.code(), 0, "stderr: {}", o.err());
    assert_eq!(o.stdout.len(), input.len(), "byte count changed");
    assert!(
        o.stdout == input,
        "the bytes changed on the way through `-i host cat`"
    );
    assert!(o.stderr.is_empty(), "unexpected stderr: {}", o.err());
}

#[test]
fn ten_mib_of_random_bytes_hash_the_same_inside() {
    assert_unprivileged();
    let input = random_bytes(TEN_MIB);
    let want = format!("{:x}", Sha256::digest(&input));
    let o = run_with_input(&["--rm", "-i", "host", "sha256sum"], input);
    o.success();
    assert_eq!(o.out(), format!("{want}  -\n"), "{o}");
}

#[test]
fn stderr_is_byte_exact_and_separate_from_stdout() {
    assert_unprivileged();
    let input = random_bytes(1 << 20);
    let o = run_with_input(
        &[
            "--rm",
            "-i",
            "host",
            "sh",
            "-c",
            "cat >&2; printf 'out\\000\\377\\n'",
        ],
        input.clone(),
    );
    assert_eq!(o.code(), 0, "stdout: {}", o.out());
    assert!(
        o.stderr == input,
        "stderr changed ({} bytes in, {} out)",
        input.len(),
        o.stderr.len()
    );
    assert_eq!(o.stdout, b"out\0\xff\n", "stdout");
}

#[test]
fn pipes_inside_and_outside_compose() {
    assert_unprivileged();
    let input: Vec<u8> = (0..100_000)
        .map(|i| format!("line {i}\n"))
        .collect::<String>()
        .into_bytes();
    let o = run_with_input(
        &[
            "--rm",
            "-i",
            "host",
            "sh",
            "-c",
            "grep -c '7$' | tr -d '\\n'",
        ],
        input,
    );
    o.success();
    assert_eq!(o.out(), "10000", "{o}");
}

#[test]
fn without_i_stdin_is_dev_null() {
    assert_unprivileged();
    // nook's stdin carries data, but the container must not see it (podman without -i).
    // (stdin may be the host's /dev/null opened before pivot_root, so check the device
    // number, 1:3, rather than the path readlink shows.)
    let o = run_with_input(
        &[
            "--rm",
            "host",
            "sh",
            "-c",
            "wc -c; stat -L -c %t:%T /proc/self/fd/0",
        ],
        b"not for you\n".to_vec(),
    );
    o.success();
    assert_eq!(o.out(), "0\n1:3\n", "{o}");
}

#[test]
fn stdin_eof_reaches_the_container() {
    assert_unprivileged();
    // `cat` only exits once nook passes on the end of its stdin.
    let o = run_with_input(
        &[
            "--rm",
            "-i",
            "host",
            "sh",
            "-c",
            "cat >/dev/null; echo eof-seen",
        ],
        b"abc".to_vec(),
    );
    o.success();
    assert_eq!(o.out(), "eof-seen\n", "{o}");
}

#[test]
fn interactive_stdin_can_be_driven_line_by_line() {
    assert_unprivileged();
    let mut cmd = nook();
    cmd.args([
        "run",
        "--rm",
        "-i",
        "host",
        "sh",
        "-c",
        "echo ready; while read l; do echo \"echo:$l\"; done; echo done",
    ]);
    cmd.stdin(Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.wait_for("ready", TIMEOUT);
    p.write_stdin(b"one\n");
    assert_eq!(p.wait_for("echo:", TIMEOUT), "echo:one");
    p.write_stdin(b"two\n");
    assert_eq!(p.wait_for("echo:", TIMEOUT), "echo:two");
    p.close_stdin();
    p.wait_for("done", TIMEOUT);
    p.wait(TIMEOUT).success();
}

#[test]
fn large_output_without_input() {
    assert_unprivileged();
    // 10 MiB out of the container with stdin closed: exact count and content.
    let o = run(&[
        "--rm",
        "host",
        "sh",
        "-c",
        "head -c 10485760 /dev/zero | tr '\\000' 'z'",
    ]);
    o.success();
    assert_eq!(o.stdout.len(), TEN_MIB, "byte count");
    assert!(o.stdout.iter().all(|&b| b == b'z'), "content changed");
}
