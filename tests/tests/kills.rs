//! kill -9 (and SIGTERM) of nook at the points where it leaves the most behind: a pull
//! mid-download, an import and a load mid-unpack, the copy driver mid-flatten, a copy
//! driver container mid-run. After each, no process of that nook is left (its helpers
//! die with it, whoever ends it), the next nook command of any kind removes what it
//! left, and `nook system check` finds nothing wrong (issue 15, point 2).
//!
//! Each test has its own store, HOME and runtime dir. The kill comes at an observable
//! point (a file under tmp/ or copies/, a helper process, a line from the container),
//! never after a sleep.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nook_tests::registry::{sha_hex, Auth, Registry, StallingProxy};
use nook_tests::*;

const LONG: Duration = Duration::from_secs(180);

struct Env {
    home: tempfile::TempDir,
    runtime: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        assert_unprivileged();
        let runtime = tempdir();
        fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o700)).unwrap();
        Env {
            home: tempdir(),
            runtime,
        }
    }

    fn root(&self) -> PathBuf {
        self.home.path().join("store")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = nook();
        c.env("HOME", self.home.path())
            .env("NOOK_ROOT", self.root())
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NOOK_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .args(args);
        c
    }

    fn nook(&self, args: &[&str]) -> Output {
        spawn(&mut self.cmd(args)).wait(LONG)
    }

    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn tmp(&self) -> Vec<String> {
        Self::entries(&self.root().join("tmp"))
    }

    fn copies_dir(&self) -> PathBuf {
        self.runtime.path().join("nook/copies")
    }

    /// `system check` is clean: it succeeds and names nothing corrupt or missing, and
    /// nothing is left under tmp/ or copies/.
    #[track_caller]
    fn assert_clean(&self) -> Output {
        let check = self.nook(&["system", "check"]);
        check.success();
        for bad in ["corrupt", "missing", "warning"] {
            assert!(!check.out().contains(bad), "{check}");
            assert!(!check.err().contains(bad), "{check}");
        }
        assert_eq!(
            self.tmp(),
            Vec::<String>::new(),
            "tmp/ after `system check`"
        );
        assert_eq!(
            Self::entries(&self.copies_dir()),
            Vec::<String>::new(),
            "copies/ after `system check`"
        );
        check
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // The store holds files of subordinate IDs: nook removes them.
        let _ = self.cmd(&["system", "reset", "--force"]).output();
    }
}

/// A busybox root filesystem with `many` small files under /many and `big` random
/// bytes in /big, as a tarball with owners 0 (in the container: root, which is you).
fn rootfs_tar(env: &Env, name: &str, many: usize, big: usize) -> Result<PathBuf, String> {
    let rootfs = busybox_rootfs()?;
    let dir = rootfs.path().join("many");
    fs::create_dir(&dir).map_err(|e| e.to_string())?;
    for i in 0..many {
        fs::write(dir.join(format!("f{i:05}")), format!("file {i}\n"))
            .map_err(|e| e.to_string())?;
    }
    if big > 0 {
        fs::write(rootfs.path().join("big"), random_bytes(big)).map_err(|e| e.to_string())?;
    }
    let tar = env.home.path().join(format!("{name}.tar"));
    let out = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(rootfs.path())
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if !out.status.success() {
        return Err(format!("tar: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(tar)
}

/// An OCI layout at `dir` holding the one-layer image of `tar` as tag `v1`.
fn oci_layout(dir: &Path, tar: &Path) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let hex = sha_hex(data);
        fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let (layer, layer_size) = put(&fs::read(tar).unwrap());
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/bin:/usr/bin"]}},"rootfs":{{"type":"layers","diff_ids":["{layer}"]}}}}"#
    );
    let (config, config_size) = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_size}}}]}}"#
    );
    let (manifest, manifest_size) = put(manifest.as_bytes());
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#
        ),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Sends `sig` to nook alone, waits for it, and then until every process it had started
/// (its helpers, a container) is gone.
fn kill_and_wait(p: Proc, sig: Signal, what: &str) -> Output {
    let victims = descendants(p.pid);
    let pgid = p.pid;
    p.signal(sig);
    // Also fails when a helper outlives nook: it holds nook's stderr open.
    let out = p.wait(TIMEOUT);
    wait_all_gone(&victims, pgid, what);
    out
}

/// A layer being unpacked under tmp/ (its diff/ has files) by a live store helper.
fn unpacking(env: &Env, pid: i32) -> bool {
    env.tmp().iter().any(|e| {
        e.contains("-layer-")
            && fs::read_dir(env.root().join("tmp").join(e).join("diff"))
                .is_ok_and(|mut d| d.next().is_some())
    }) && has_store_helper(pid)
}

fn prepared(test: &str) -> Option<Env> {
    if let Err(why) = static_busybox() {
        skip(test, &why);
        return None;
    }
    if !has("tar") {
        skip(test, "no tar: install it");
        return None;
    }
    Some(Env::new())
}

#[test]
fn pull_killed_mid_download_leaves_nothing() {
    let test = "pull_killed_mid_download_leaves_nothing";
    let Some(env) = prepared(test) else { return };
    if !has("docker-registry") || !has("skopeo") {
        skip(
            test,
            "needs docker-registry and skopeo (tests/run.sh installs them)",
        );
        return;
    }
    let tar = rootfs_tar(&env, "big", 0, 8 << 20).unwrap();
    let layout = tempdir();
    oci_layout(layout.path(), &tar);
    let reg = Registry::start(Auth::None);
    reg.push(layout.path(), "v1", "big", &[]);
    // Responses past 1 MiB stop: the layer's download hangs half done.
    let proxy = StallingProxy::start(reg.port, 1 << 20);
    let image = format!("{}/big:v1", proxy.host());
    let p = spawn(&mut env.cmd(&["pull", "-q", "--tls-verify=false", &image]));
    wait_until("a download half done in tmp/", LONG, || {
        env.tmp().iter().any(|e| {
            e.contains("-blob-")
                && fs::metadata(env.root().join("tmp").join(e)).is_ok_and(|m| m.len() >= 512 << 10)
        })
    });
    let out = kill_and_wait(p, Signal::SIGKILL, "pull killed mid-download");
    assert_eq!(out.code(), 137, "{out}");
    drop(proxy);
    env.assert_clean();
    // The same image from the registry itself: a whole pull, and it runs.
    let direct = format!("{}/big:v1", reg.host());
    env.nook(&["pull", "-q", "--tls-verify=false", &direct])
        .success();
    env.nook(&["run", "--rm", &direct, "test", "-s", "/big"])
        .success();
    env.assert_clean();
}

#[test]
fn import_killed_mid_unpack_leaves_nothing_and_prune_reclaims_its_blobs() {
    let test = "import_killed_mid_unpack_leaves_nothing_and_prune_reclaims_its_blobs";
    let Some(env) = prepared(test) else { return };
    let tar = rootfs_tar(&env, "many", 20_000, 0).unwrap();
    let p = spawn(&mut env.cmd(&["import", tar.to_str().unwrap(), "many:v1"]));
    let pid = p.pid;
    wait_until("the import's unpack under way", LONG, || {
        unpacking(&env, pid)
    });
    let out = kill_and_wait(p, Signal::SIGKILL, "import killed mid-unpack");
    assert_eq!(out.code(), 137, "{out}");
    assert_eq!(
        env.nook(&["images", "-q"]).success().out(),
        "",
        "a killed import shows no image"
    );
    // The tarball it stored is no image's: reported, not a problem, then reclaimed.
    let check = env.assert_clean();
    assert!(check.out().contains("reclaimable: "), "{check}");
    let prune = env.nook(&["system", "prune", "--force"]);
    prune.success();
    assert!(prune.out().contains("reclaimed"), "{prune}");
    let check = env.assert_clean();
    assert!(!check.out().contains("reclaimable"), "{check}");
    assert_eq!(
        Env::entries(&env.root().join("blobs/sha256")),
        Vec::<String>::new()
    );
}

#[test]
fn load_terminated_mid_unpack_leaves_nothing() {
    let test = "load_terminated_mid_unpack_leaves_nothing";
    let Some(env) = prepared(test) else { return };
    let tar = rootfs_tar(&env, "many", 20_000, 0).unwrap();
    let layout = tempdir();
    oci_layout(layout.path(), &tar);
    let p = spawn(&mut env.cmd(&["load", "-i", layout.path().to_str().unwrap()]));
    let pid = p.pid;
    wait_until("the load's unpack under way", LONG, || unpacking(&env, pid));
    let out = kill_and_wait(p, Signal::SIGTERM, "load terminated mid-unpack");
    assert_eq!(out.code(), 128 + 15, "{out}");
    env.assert_clean();
    // Loading again completes (what was complete is reused) and leaves nothing over.
    env.nook(&["load", "-q", "-i", layout.path().to_str().unwrap()])
        .success();
    let check = env.assert_clean();
    assert!(!check.out().contains("reclaimable"), "{check}");
}

#[test]
fn copy_root_killed_mid_flatten_is_removed_by_the_next_run() {
    let test = "copy_root_killed_mid_flatten_is_removed_by_the_next_run";
    let Some(env) = prepared(test) else { return };
    let tar = rootfs_tar(&env, "many", 20_000, 0).unwrap();
    env.nook(&["import", tar.to_str().unwrap(), "many:v1"])
        .success();
    let p = spawn(&mut env.cmd(&["run", "--rm", "--storage-driver", "copy", "many:v1", "true"]));
    let pid = p.pid;
    let copies = env.copies_dir();
    wait_until("the copy under way", LONG, || {
        Env::entries(&copies).iter().any(|c| {
            fs::read_dir(copies.join(c).join("rootfs")).is_ok_and(|mut d| d.next().is_some())
        }) && has_store_helper(pid)
    });
    let out = kill_and_wait(p, Signal::SIGKILL, "run killed mid-copy");
    assert_eq!(out.code(), 137, "{out}");
    assert_eq!(
        Env::entries(&copies).len(),
        1,
        "the killed run's copy is there"
    );
    // The next command, whatever it is (here a run that needs no image), removes it.
    env.nook(&["run", "--rm", "host", "true"]).success();
    assert_eq!(Env::entries(&copies), Vec::<String>::new());
    env.assert_clean();
}

#[test]
fn copy_root_of_a_killed_run_is_removed_by_any_command() {
    let test = "copy_root_of_a_killed_run_is_removed_by_any_command";
    let Some(env) = prepared(test) else { return };
    let tar = rootfs_tar(&env, "small", 10, 0).unwrap();
    env.nook(&["import", tar.to_str().unwrap(), "small:v1"])
        .success();
    let mut p = spawn(&mut env.cmd(&[
        "run",
        "--rm",
        "--storage-driver",
        "copy",
        "small:v1",
        "sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]));
    p.wait_for("ready", TIMEOUT);
    assert!(container_init(p.pid).is_some(), "the container runs");
    // Its processes are among those that must all be gone.
    let out = kill_and_wait(p, Signal::SIGKILL, "run killed while its container ran");
    assert_eq!(out.code(), 137, "{out}");
    assert_eq!(Env::entries(&env.copies_dir()).len(), 1);
    env.nook(&["images"]).success();
    assert_eq!(Env::entries(&env.copies_dir()), Vec::<String>::new());
    assert_eq!(env.nook(&["ps", "-aq"]).success().out(), "");
    env.assert_clean();
}
