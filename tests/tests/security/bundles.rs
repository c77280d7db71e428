//! See main.rs: this module's attempts are listed there and in docs/security.md.
//!
//! Hostile bundles handed to `nook oci create` / `nook oci run`: each is refused by
//! `create` itself, with one error line that names the field, before anything of the
//! container exists (no state directory, no process, no hook run).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nook_tests::*;
use serde_json::{json, Value};

/// A bundle from `nook oci spec --rootless` around a busybox root, and a state root.
struct Bundle {
    dir: tempfile::TempDir,
    _rootfs: Rootfs,
    state_root: tempfile::TempDir,
}

impl Bundle {
    fn new(test: &str) -> Option<Bundle> {
        assert_unprivileged();
        let rootfs = match busybox_rootfs() {
            Ok(r) => r,
            Err(why) => {
                skip(test, &why);
                return None;
            }
        };
        let b = Bundle {
            dir: tempdir(),
            _rootfs: rootfs,
            state_root: tempdir(),
        };
        let mut cmd = nook();
        cmd.args(["oci", "spec", "--rootless", "--bundle"])
            .arg(b.dir.path());
        spawn(&mut cmd).wait(TIMEOUT).success();
        let root = b._rootfs.path_str().to_string();
        b.edit(|c| {
            c["root"]["path"] = json!(root);
            c["process"]["args"] = json!(["/bin/true"]);
            c["process"]["terminal"] = json!(false);
        });
        Some(b)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut config: Value = serde_json::from_slice(&fs::read(self.config()).unwrap()).unwrap();
        f(&mut config);
        fs::write(self.config(), serde_json::to_vec(&config).unwrap()).unwrap();
    }

    /// `nook oci --root STATE OP --bundle DIR ID` with extra environment.
    fn oci(&self, op: &str, id: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = nook();
        cmd.arg("oci")
            .arg("--root")
            .arg(self.state_root.path())
            .args([op, "--bundle"])
            .arg(self.dir.path())
            .arg(id)
            .envs(env.iter().copied());
        spawn(&mut cmd).wait(TIMEOUT)
    }

    /// Nothing of a container was left: no state directory under the root.
    #[track_caller]
    fn assert_nothing_created(&self) {
        let left: Vec<_> = fs::read_dir(self.state_root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "create left {left:?} in its state root");
    }
}

#[test]
fn oversized_environment_is_refused_by_create() {
    let Some(b) = Bundle::new("oversized_environment_is_refused_by_create") else {
        return;
    };
    b.edit(|c| {
        let env = c["process"]["env"].as_array_mut().unwrap();
        env.extend((0..200_000).map(|i| json!(format!("V{i}=x"))));
    });
    b.oci("create", "big-env", &[]).assert_error_line(
        1,
        &[
            "process.env",
            "200",
            "the kernel accepts at most",
            "stack limit",
        ],
    );
    b.assert_nothing_created();
}

#[test]
fn oversized_arguments_are_refused_by_run() {
    let Some(b) = Bundle::new("oversized_arguments_are_refused_by_run") else {
        return;
    };
    b.edit(|c| {
        let mut args = vec![json!("/bin/true")];
        args.extend((0..5000).map(|_| json!("a".repeat(1024))));
        c["process"]["args"] = json!(args);
    });
    // Exit 126 with no message before: the exec failed after `start`, unseen.
    b.oci("run", "big-args", &[])
        .assert_error_line(1, &["process.args", "5001 entries", "the kernel accepts"]);
    b.assert_nothing_created();
}

#[test]
fn one_overlong_argument_is_refused() {
    let Some(b) = Bundle::new("one_overlong_argument_is_refused") else {
        return;
    };
    b.edit(|c| c["process"]["args"] = json!(["/bin/true", "x", "a".repeat(300_000)]));
    b.oci("create", "long-arg", &[])
        .assert_error_line(1, &["process.args[2]", "300000 bytes"]);
    b.assert_nothing_created();
}

#[test]
fn wrong_json_type_names_the_field() {
    let Some(b) = Bundle::new("wrong_json_type_names_the_field") else {
        return;
    };
    b.edit(|c| c["process"]["args"] = json!(["/bin/true", "x", 3]));
    b.oci("create", "bad-type", &[]).assert_error_line(
        1,
        &[
            "config.json",
            "process.args[2]: invalid type: integer `3`, expected a string",
        ],
    );
    b.assert_nothing_created();
    b.edit(|c| c["linux"]["uidMappings"][0]["hostID"] = json!("1000"));
    b.edit(|c| c["process"]["args"] = json!(["/bin/true"]));
    b.oci("create", "bad-type", &[])
        .assert_error_line(1, &["linux.uidMappings[0].hostID: invalid type: string"]);
    b.assert_nothing_created();
}

#[test]
fn relative_hook_path_is_refused_and_never_looked_up() {
    let Some(b) = Bundle::new("relative_hook_path_is_refused_and_never_looked_up") else {
        return;
    };
    // A program of that name on nook's PATH that would leave a canary if run.
    let bin = tempdir();
    let canary = bin.path().join("canary");
    let name = format!("nook-hook-{}", token());
    let script = bin.path().join(&name);
    fs::write(
        &script,
        format!("#!/bin/sh\necho ran > {}\n", canary.display()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.path().display());
    for stage in ["prestart", "createRuntime", "poststop"] {
        b.edit(|c| {
            c["hooks"] = json!({
                "createContainer": [{"path": "/bin/true"}],
                stage: [{"path": "/bin/true"}, {"path": name.as_str()}],
            })
        });
        b.oci("run", "rel-hook", &[("PATH", path.as_str())])
            .assert_error_line(1, &[&format!("hooks.{stage}[1].path"), &name, "absolute"]);
        b.assert_nothing_created();
        assert!(
            !exists(&canary),
            "the relative hook {name} was run ({stage})"
        );
    }
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}
