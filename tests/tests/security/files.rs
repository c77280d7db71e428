//! See main.rs: this module's attempts are listed there and in docs/security.md.
//!
//! What nook writes for itself is private whatever the caller's umask (records, state,
//! logs, sockets, the store), and a runtime directory another user prepared in the
//! shared /tmp is never used.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nook_tests::*;
use serde_json::json;

/// A private store, runtime directory and home for one test.
struct Env {
    store: tempfile::TempDir,
    runtime: tempfile::TempDir,
    umask_000: bool,
}

impl Env {
    fn new(umask_000: bool) -> Env {
        assert_unprivileged();
        let runtime = tempdir();
        fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o700)).unwrap();
        Env {
            store: tempdir(),
            runtime,
            umask_000,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = nook();
        c.env("NOOK_ROOT", self.store.path())
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .args(args);
        if self.umask_000 {
            // SAFETY: umask(2) is async-signal-safe and touches no memory.
            unsafe {
                c.pre_exec(|| {
                    libc::umask(0);
                    Ok(())
                });
            }
        }
        c
    }

    fn nook(&self, args: &[&str]) -> Output {
        spawn(&mut self.cmd(args)).wait(TIMEOUT)
    }
}

/// Files nook writes for a container to read (bound into it): readable by all.
const SHARED: [&str; 3] = ["hosts", "hostname", "resolv.conf"];
/// Directories whose content is the image's (its modes are the image's own).
const IMAGE_CONTENT: [&str; 4] = ["diff", "merged", "work", "rootfs"];

/// Every entry under `dir` that others could write, or (a record) read.
fn exposed(dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(m) = fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = m.mode() & 0o7777;
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = m.file_type();
        if ft.is_symlink() {
            continue;
        }
        let bad = if ft.is_dir() || SHARED.contains(&name.as_str()) {
            mode & 0o022 != 0
        } else {
            mode & 0o077 != 0
        };
        if bad {
            found.push(format!("{mode:04o} {}", path.display()));
        }
        if ft.is_dir() && !IMAGE_CONTENT.contains(&name.as_str()) {
            exposed(&path, found);
        }
    }
}

#[test]
fn records_are_private_under_umask_000() {
    let test = "records_are_private_under_umask_000";
    let env = Env::new(true);
    if !has("tar") {
        skip(test, "no tar to build the image from");
        return;
    }
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(why) => {
            skip(test, &why);
            return;
        }
    };
    let work = tempdir();
    let tarball = work.path().join("rootfs.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs.path())
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success(), "tar failed");
    let image = format!("umask-{}", token());
    env.nook(&["import", tarball.to_str().unwrap(), &image])
        .success();
    env.nook(&["run", "--rm", &image, "true"]).success();
    env.nook(&["run", "--rm", "host", "true"]).success();
    let created = format!("um-c-{}", token());
    env.nook(&["create", "--name", &created, &image, "sleep", "1000"])
        .success();
    let detached = format!("um-d-{}", token());
    env.nook(&["run", "-d", "--name", &detached, &image, "sleep", "1000"])
        .success();
    let logs = env.nook(&["logs", &detached]);
    logs.success();

    // An OCI container, its state under the runtime directory.
    let bundle = tempdir();
    env.nook(&[
        "oci",
        "spec",
        "--rootless",
        "--bundle",
        bundle.path().to_str().unwrap(),
    ])
    .success();
    let config = bundle.path().join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    c["root"]["path"] = json!(rootfs.path_str());
    c["process"]["args"] = json!(["sleep", "1000"]);
    c["process"]["terminal"] = json!(false);
    fs::write(&config, serde_json::to_vec(&c).unwrap()).unwrap();
    let oci_id = format!("um-o-{}", token());
    let pid_file = work.path().join("oci.pid");
    // The container's process keeps create's stdio: files, not pipes that stay open.
    let err_file = work.path().join("oci.err");
    let oci = env
        .cmd(&[
            "oci",
            "create",
            "--bundle",
            bundle.path().to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            &oci_id,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&err_file).unwrap())
        .status()
        .unwrap();

    let mut found = Vec::new();
    exposed(env.store.path(), &mut found);
    exposed(env.runtime.path(), &mut found);
    let pid_mode = fs::metadata(&pid_file).map(|m| m.mode() & 0o7777);

    env.nook(&["oci", "delete", "--force", &oci_id]);
    env.nook(&["rm", "--force", &created, &detached]).success();
    env.nook(&["rmi", &image]);
    assert!(
        oci.success(),
        "oci create: {oci}\n{}",
        fs::read_to_string(&err_file).unwrap_or_default()
    );
    assert!(
        found.is_empty(),
        "under umask 000, nook left files others can write (or read, for records):\n{}",
        found.join("\n")
    );
    assert_eq!(pid_mode.unwrap(), 0o644, "the --pid-file");
}

/// The shared-/tmp fallback (`$TMPDIR/nook-UID`) prepared by someone else: nook runs
/// anyway, says so once, and never puts anything there.
#[test]
fn squatted_runtime_fallback_is_never_used() {
    assert_unprivileged();
    let tmp = tempdir();
    let home = tempdir();
    let squat = tmp.path().join(format!("nook-{}", uid()));
    fs::create_dir(&squat).unwrap();
    fs::set_permissions(&squat, fs::Permissions::from_mode(0o777)).unwrap();
    // What a squatter leaves there: a file of another uid where the ID map allows it
    // (a container's uid 1000 is a subordinate uid on the host), else one of ours.
    let planted = run(&[
        "-v",
        &format!("{}:/sq", squat.display()),
        "--user",
        "1000:1000",
        "host",
        "touch",
        "/sq/planted",
    ]);
    if planted.code() != 0 {
        fs::write(squat.join("planted"), "").unwrap();
    }
    let before = listing(&squat);
    let cmd = |args: &[&str]| {
        let mut c = nook();
        c.env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_STATE_HOME")
            .env("TMPDIR", tmp.path())
            .env("HOME", home.path())
            .env("NOOK_ROOT", home.path().join("store"))
            .args(args);
        spawn(&mut c).wait(TIMEOUT)
    };

    let first = cmd(&["run", "--rm", "host", "echo", "ran"]);
    first.success();
    assert_eq!(first.line(), "ran");
    let notice: Vec<String> = first.err().lines().map(str::to_string).collect();
    assert_eq!(notice.len(), 1, "one notice line\n{first}");
    assert!(
        notice[0].contains(&squat.display().to_string()) && notice[0].contains("not safe"),
        "the notice names the squatted directory\n{first}"
    );
    // The next commands find the same private directory, silently.
    let name = format!("sq-{}", token());
    let second = cmd(&["run", "-d", "--name", &name, "host", "sleep", "1000"]);
    second.success();
    assert_eq!(second.err(), "", "said again\n{second}");
    let ps = cmd(&["ps", "--format", "{{.Names}}"]);
    assert!(ps.out().contains(&name), "ps did not see it\n{ps}");
    cmd(&["rm", "--force", &name]).success();

    let private: Vec<PathBuf> = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != &squat)
        .collect();
    assert_eq!(private.len(), 1, "one private directory: {private:?}");
    let m = fs::symlink_metadata(&private[0]).unwrap();
    assert!(m.is_dir() && m.uid() == uid() && m.mode() & 0o777 == 0o700);
    assert_eq!(
        listing(&squat),
        before,
        "nook wrote into the squatted directory"
    );
    assert_eq!(
        fs::symlink_metadata(&squat).unwrap().mode() & 0o7777,
        0o777,
        "nook changed the squatted directory"
    );
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
