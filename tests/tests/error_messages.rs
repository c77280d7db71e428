//! One message per error (issue 15): representative failures, each one line on stderr
//! that says every cause once and, where there is one, the fix: a port below
//! net.ipv4.ip_unprivileged_port_start, a port in use, a full image store (a blob, a
//! layer unpacked), a full runtime directory under the copy driver, /dev/fuse without
//! access, and the everyday mistakes (missing command, rootfs, volume, container,
//! a bad reference). `assert_error_line` also fails on a fragment said twice.
//!
//! A full filesystem and an unopenable /dev/fuse cannot be arranged on the host by an
//! unprivileged account, and must not be: those cases run nook inside `unshare --user
//! --map-root-user --mount`, a user and mount namespace of the test's own, where a 2 MB
//! tmpfs or a bind mount over /dev/fuse changes nothing outside it. nook is root of that
//! namespace there (one ID mapped), which these paths do not depend on.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nook_tests::*;

/// `nook` with its own store and runtime directory in `dir`.
fn nook_in(dir: &Path) -> Command {
    let mut cmd = nook();
    cmd.env("NOOK_ROOT", dir.join("store"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("XDG_STATE_HOME", dir.join("state"));
    let _ = std::fs::create_dir_all(dir.join("run"));
    let _ = std::fs::set_permissions(
        dir.join("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    );
    cmd
}

fn nook_line(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = nook_in(dir);
    cmd.args(args);
    spawn(&mut cmd).wait(TIMEOUT)
}

#[test]
fn everyday_mistakes_are_one_line_each_cause_once() {
    assert_unprivileged();
    let dir = tempdir();
    let d = dir.path();
    nook_line(d, &["run", "--rm", "host", "/nonexistent/cmd"])
        .assert_error_line(127, &["/nonexistent/cmd", "No such file"]);
    nook_line(d, &["run", "--rm", "--rootfs", "/nonexistent/dir", "true"])
        .assert_error_line(125, &["/nonexistent/dir"]);
    nook_line(
        d,
        &["run", "--rm", "-v", "/nonexistent/src:/x", "host", "true"],
    )
    .assert_error_line(125, &["/nonexistent/src"]);
    nook_line(d, &["pull", "Bad Ref"]).assert_error_line(125, &["Bad Ref"]);
    let name = format!("nosuch-{}", token());
    nook_line(d, &["rm", &name]).assert_error_line(125, &[&name]);
    nook_line(d, &["exec", &name, "true"]).assert_error_line(125, &[&name]);
    nook_line(d, &["load", "-i", "/nonexistent/image.tar"])
        .assert_error_line(125, &["/nonexistent/image.tar"]);
}

#[test]
fn a_port_below_the_unprivileged_start_names_the_sysctl_and_its_value() {
    assert_unprivileged();
    let test = "a_port_below_the_unprivileged_start_names_the_sysctl_and_its_value";
    let start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if start <= 1 {
        skip(
            test,
            "net.ipv4.ip_unprivileged_port_start lets anyone bind every port here",
        );
        return;
    }
    let port = (start - 1).min(80);
    let dir = tempdir();
    let publish = format!("127.0.0.1:{port}:80");
    let out = nook_line(dir.path(), &["run", "--rm", "-p", &publish, "host", "true"]);
    out.assert_error_line(
        125,
        &[
            &format!("cannot listen on 127.0.0.1:{port}"),
            "Permission denied",
            &format!("net.ipv4.ip_unprivileged_port_start is {start}"),
            &format!("sysctl net.ipv4.ip_unprivileged_port_start={port}"),
            ":80)",
        ],
    );
}

#[test]
fn a_port_in_use_says_so_once() {
    assert_unprivileged();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = taken.local_addr().expect("its address").port();
    let dir = tempdir();
    let publish = format!("127.0.0.1:{port}:80");
    nook_line(dir.path(), &["run", "--rm", "-p", &publish, "host", "true"]).assert_error_line(
        125,
        &[
            &format!("cannot listen on 127.0.0.1:{port}"),
            "another host port",
        ],
    );
}

// ---------------------------------------------------------------------------------------
// In a user and mount namespace of the test's own

/// Runs `script` with `sh` as root of a new user and mount namespace (one ID: this
/// account), `$NOOK` the binary and `$D` a fresh directory, or None (after SKIP) where
/// such a namespace cannot be made.
fn in_private_ns(test: &str, script: &str, d: &Path) -> Option<Output> {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        skip(
            test,
            "`unshare --user --map-root-user --mount` fails here (util-linux's unshare and \
             unprivileged user namespaces are needed)",
        );
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .env("NOOK", nook_bin())
        .env("D", d)
        .env_remove("NOOK_ROOT")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Some(spawn(&mut cmd).wait(TIMEOUT))
}

/// Prepares `$D` for a nook of its own: store in `$D/store` (or `$D/small/store`, a 2 MB
/// tmpfs), runtime and state directories there too.
const SETUP: &str = r#"
set -u
mkdir -p "$D/small" "$D/run" "$D/home" && chmod 700 "$D/run" || exit 90
mount -t tmpfs -o size=2m tmpfs "$D/small" || exit 91
export XDG_RUNTIME_DIR="$D/run" HOME="$D/home" XDG_STATE_HOME="$D/home/state"
"#;

/// A tar of one file of `len` bytes of `byte` (None: random, so it does not compress),
/// gzip-compressed when `gzip`. Returns its path and length.
fn tarball(dir: &Path, name: &str, len: usize, byte: Option<u8>, gzip: bool) -> (String, u64) {
    let tree = dir.join(format!("{name}.tree"));
    std::fs::create_dir_all(&tree).unwrap();
    let data = match byte {
        Some(b) => vec![b; len],
        None => {
            let mut v = vec![0u8; len];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut v))
                .expect("random data");
            v
        }
    };
    std::fs::File::create(tree.join("big"))
        .and_then(|mut f| f.write_all(&data))
        .expect("writing the file");
    let path = dir.join(name);
    let status = Command::new("tar")
        .arg(if gzip { "-czf" } else { "-cf" })
        .arg(&path)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(status.success(), "tar failed");
    std::fs::remove_dir_all(&tree).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    (path.display().to_string(), len)
}

/// What nook prints for `n` bytes in these messages (decimal, three digits).
fn mb(n: u64) -> String {
    let v = n as f64 / 1e6;
    if v >= 9.995 {
        format!("{v:.1} MB")
    } else {
        format!("{v:.2} MB")
    }
}

#[test]
fn a_full_store_says_what_was_needed_what_is_free_and_where() {
    assert_unprivileged();
    let test = "a_full_store_says_what_was_needed_what_is_free_and_where";
    let dir = tempdir();
    let d = dir.path();
    // 3 MB that do not compress: the blob itself does not fit in 2 MB.
    let (big, big_len) = tarball(d, "big.tar", 3_000_000, None, false);
    // 8 MB of one letter: a tiny blob whose layer does not fit unpacked.
    let (small, _) = tarball(d, "bomb.tar.gz", 8_000_000, Some(b'a'), true);
    let script = format!(
        "{SETUP}export NOOK_ROOT=\"$D/small/store\"\n\
         \"$NOOK\" import {big} big; echo \"blob rc=$?\" >&2\n\
         \"$NOOK\" import {small} bomb; echo \"layer rc=$?\" >&2\n\
         echo \"tmp: $(ls -A \"$NOOK_ROOT/tmp\")\"\n"
    );
    let Some(out) = in_private_ns(test, &script, d) else {
        return;
    };
    let err = out.err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "one line per failure, then its status\n{out}"
    );
    assert_eq!(lines[1], "blob rc=125", "{out}");
    assert_eq!(lines[3], "layer rc=125", "{out}");
    let store = d.join("small/store").display().to_string();
    for (line, what, needs) in [
        (
            lines[0],
            "storing the tarball",
            format!("needs about {}", mb(big_len)),
        ),
        (
            lines[2],
            "unpacking layer sha256:",
            "needs about 8.0".to_string(),
        ),
    ] {
        assert_no_repeats(line);
        for m in [
            "nook: ",
            what,
            &format!("no space left on the filesystem of the image store {store} ("),
            &needs,
            " free); ",
            "--root DIR (or NOOK_ROOT)",
        ] {
            assert!(line.contains(m), "{m:?} missing in\n{line}\n{out}");
        }
        assert!(
            !line.contains("os error 28"),
            "the errno adds nothing\n{out}"
        );
    }
    // What failed to fit is gone (the free space said is what the user has).
    assert_eq!(
        out.line(),
        "tmp: ",
        "partial blob or layer left in tmp/\n{out}"
    );
}

#[test]
fn a_full_runtime_dir_under_the_copy_driver_points_to_the_union_drivers() {
    assert_unprivileged();
    let test = "a_full_runtime_dir_under_the_copy_driver_points_to_the_union_drivers";
    let dir = tempdir();
    let d = dir.path();
    let (image, _) = tarball(d, "img.tar.gz", 4_000_000, Some(b'b'), true);
    // The store has room; the runtime dir, where a --rm run's copy goes, has 2 MB.
    let script = format!(
        "{SETUP}export NOOK_ROOT=\"$D/store\" XDG_RUNTIME_DIR=\"$D/small/run\"\n\
         mkdir -m 700 \"$XDG_RUNTIME_DIR\" || exit 92\n\
         \"$NOOK\" import {image} img >/dev/null || exit 93\n\
         exec \"$NOOK\" run --rm --storage-driver copy img /big\n"
    );
    let Some(out) = in_private_ns(test, &script, d) else {
        return;
    };
    out.assert_error_line(
        125,
        &[
            "copying the image for --storage-driver copy",
            "no space left on the filesystem of ",
            "needs about 4.0",
            " free); ",
            "--storage-driver overlay or fuse",
        ],
    );
}

#[test]
fn fuse_without_access_names_the_drivers_that_work_and_the_fix() {
    assert_unprivileged();
    let test = "fuse_without_access_names_the_drivers_that_work_and_the_fix";
    // A root-owned file nobody else may write, bound over /dev/fuse in the namespace: an
    // open for reading and writing fails there as on a host whose /dev/fuse is 0600.
    let Some(stand_in) = ["/etc/shadow", "/etc/gshadow", "/etc/sudoers"]
        .into_iter()
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.uid() == 0 && m.mode() & 0o002 == 0)
        })
    else {
        skip(
            test,
            "no root-owned file to stand in for an unopenable /dev/fuse",
        );
        return;
    };
    let dir = tempdir();
    let d = dir.path();
    let (image, _) = tarball(d, "img.tar", 1000, Some(b'c'), false);
    let script = format!(
        "{SETUP}export NOOK_ROOT=\"$D/store\"\n\
         mount --bind {stand_in} /dev/fuse || exit 94\n\
         \"$NOOK\" import {image} img >/dev/null || exit 93\n\
         exec \"$NOOK\" run --rm --storage-driver fuse img true\n"
    );
    let Some(out) = in_private_ns(test, &script, d) else {
        return;
    };
    out.assert_error_line(
        125,
        &[
            "storage driver fuse is not usable here",
            "you may not open /dev/fuse read-write (mode 0",
            "chmod 0666 /dev/fuse",
            "works here",
            "--storage-driver ",
        ],
    );
}
