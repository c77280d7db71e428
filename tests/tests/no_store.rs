//! An unusable HOME (read-only, or another account's as `setpriv` and `sudo -u` leave
//! it) does not stop what needs no store (issue 15, point 4): `--rm` runs of `host` and
//! of a `--rootfs` directory create nothing of the store and run; what needs a store
//! fails with one line that names NOOK_ROOT and --root; a config file that is not there
//! (or cannot be reached) is no error. `--rm` runs keep their names in the runtime dir,
//! and a name is still taken once across kept and `--rm` containers of a store.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use nook_tests::*;

/// `nook ARGS` with only HOME (and a private runtime dir) set: no NOOK_ROOT, no XDG_*.
fn with_home(home: &Path, runtime: &Path, args: &[&str]) -> Output {
    let mut c = nook();
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", runtime)
        .args(args);
    spawn(&mut c).wait(TIMEOUT)
}

fn private_runtime() -> tempfile::TempDir {
    let rt = tempdir();
    fs::set_permissions(rt.path(), fs::Permissions::from_mode(0o700)).unwrap();
    rt
}

/// The runs that need no store work with `home`; nothing appears in it.
fn storeless_runs_work(home: &Path, rootfs: &Rootfs) {
    let rt = private_runtime();
    let before = entries(home);
    let name = format!("nostore-{}", token());
    let o = with_home(home, rt.path(), &["run", "--rm", "host", "echo", "in-host"]);
    o.success();
    assert_eq!(o.line(), "in-host");
    assert_eq!(o.err(), "", "no warning, no notice about the store\n{o}");
    with_home(
        home,
        rt.path(),
        &["run", "--rm", "--name", &name, "host", "true"],
    )
    .success();
    let o = with_home(
        home,
        rt.path(),
        &[
            "run",
            "--rm",
            "--rootfs",
            rootfs.path_str(),
            "cat",
            "/etc/nook-rootfs-marker",
        ],
    );
    o.success();
    assert_eq!(o.out(), rootfs.marker);
    if fs::read_dir(home).is_ok() {
        assert_eq!(entries(home), before, "nothing of the store in HOME");
    }
}

#[test]
fn a_read_only_home_runs_what_needs_no_store_and_names_the_fix_for_the_rest() {
    assert_unprivileged();
    let test = "a_read_only_home_runs_what_needs_no_store_and_names_the_fix_for_the_rest";
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(e) => return skip(test, &e),
    };
    let home = tempdir();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o555)).unwrap();
    storeless_runs_work(home.path(), &rootfs);
    let rt = private_runtime();
    with_home(home.path(), rt.path(), &["images"]).assert_error_line(125, &["NOOK_ROOT", "--root"]);
    with_home(home.path(), rt.path(), &["run", "host", "true"])
        .assert_error_line(125, &["NOOK_ROOT", "--root"]);
    assert_eq!(entries(home.path()), Vec::<String>::new());
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn another_accounts_home_runs_what_needs_no_store() {
    assert_unprivileged();
    let test = "another_accounts_home_runs_what_needs_no_store";
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(e) => return skip(test, &e),
    };
    // What `setpriv --reuid` leaves: HOME=/root, which this account cannot search. Made
    // here with a directory of ours that we cannot search either, so the test does not
    // depend on /root's mode; /root too when it is closed to us.
    let outer = tempdir();
    let home = outer.path().join("home");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(outer.path(), fs::Permissions::from_mode(0o000)).unwrap();
    let mut homes = vec![home.clone()];
    if fs::metadata("/root/.config").is_err_and(|e| e.raw_os_error() == Some(libc::EACCES)) {
        homes.push("/root".into());
    } else {
        skip(
            test,
            "/root is open to this account: tried only a closed HOME of ours",
        );
    }
    let rt = private_runtime();
    for h in &homes {
        storeless_runs_work(h, &rootfs);
        with_home(h, rt.path(), &["images"]).assert_error_line(125, &["NOOK_ROOT", "--root"]);
        with_home(h, rt.path(), &["run", "host", "true"])
            .assert_error_line(125, &["NOOK_ROOT", "--root"]);
    }
    fs::set_permissions(outer.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_writable_home_gets_no_store_from_rm_runs() {
    assert_unprivileged();
    let test = "a_writable_home_gets_no_store_from_rm_runs";
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(e) => return skip(test, &e),
    };
    let home = tempdir();
    storeless_runs_work(home.path(), &rootfs);
    assert_eq!(entries(home.path()), Vec::<String>::new(), "no ~/.local");
}

#[test]
fn a_config_file_that_is_not_there_is_no_error() {
    assert_unprivileged();
    let rt = private_runtime();
    let outer = tempdir();
    let closed = outer.path().join("closed");
    fs::create_dir(&closed).unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o000)).unwrap();
    let run = |config_home: &Path| {
        let mut c = nook();
        c.env("XDG_CONFIG_HOME", config_home)
            .env("XDG_RUNTIME_DIR", rt.path())
            .env_remove("NOOK_CONFIG")
            .args(["run", "--rm", "host", "true"]);
        spawn(&mut c).wait(TIMEOUT)
    };
    for dir in [outer.path().join("missing/deeper"), closed.join("sub")] {
        let o = run(&dir);
        o.success();
        assert_eq!(o.err(), "", "{o}");
    }
    // A file that is there but unreadable is still an error, naming it.
    let open = outer.path().join("open");
    fs::create_dir_all(open.join("nook")).unwrap();
    let file = open.join("nook/config.toml");
    fs::write(&file, "").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).unwrap();
    run(&open).assert_error_line(125, &[file.to_str().unwrap()]);
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_name_is_taken_once_across_kept_and_rm_containers() {
    assert_unprivileged();
    let env = Sandbox::new();
    let name = format!("once-{}", token());
    // A kept container holds the name (in the store): a --rm run cannot take it.
    env.nook(&["create", "--name", &name, "host", "true"])
        .success();
    env.nook(&["run", "--rm", "--name", &name, "host", "true"])
        .assert_error_line(125, &["in use"]);
    env.nook(&["rm", &name]).success();
    // A running --rm container holds it (in the runtime dir): a kept one cannot.
    let mut cmd = env.cmd(&[
        "run",
        "--rm",
        "-i",
        "--name",
        &name,
        "host",
        "sh",
        "-c",
        "echo ready; exec cat",
    ]);
    cmd.stdin(std::process::Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.wait_for("ready", TIMEOUT);
    env.nook(&["create", "--name", &name, "host", "true"])
        .assert_error_line(125, &["in use"]);
    // Another store has names of its own.
    let other = Command::new(nook_bin())
        .args(["run", "--rm", "--name", &name, "host", "true"])
        .env("NOOK_ROOT", env.home.path().join("other-store"))
        .env("XDG_RUNTIME_DIR", env.runtime.path())
        .output()
        .unwrap();
    assert!(other.status.success(), "{other:?}");
    p.close_stdin();
    p.wait(TIMEOUT).success();
    // Released with the container: free again for a kept one.
    env.nook(&["create", "--name", &name, "host", "true"])
        .success();
}
