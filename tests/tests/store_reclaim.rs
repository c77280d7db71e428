//! What no image references is reclaimed (issue 15, point 3): a failed import's blobs
//! are reported by `system check` and `system df` and removed by `system prune` and
//! `system check --repair`; a pull in progress keeps what it holds through a prune and
//! an `rmi`; `system df` shows images, containers and what is reclaimable.

use std::process::Command;

use nook_tests::registry::{oci_layout, Auth, Registry, StallingProxy};
use nook_tests::*;
use serde_json::Value;

fn prepared(test: &str) -> Option<Sandbox> {
    if let Err(why) = static_busybox() {
        skip(test, &why);
        return None;
    }
    if !has("tar") {
        skip(test, "no tar: install it");
        return None;
    }
    Some(Sandbox::new())
}

/// `system df --format json`, by row type.
fn df(env: &Sandbox) -> std::collections::BTreeMap<String, Value> {
    let out = env.nook(&["system", "df", "--format", "json"]);
    out.success();
    let rows: Vec<Value> =
        serde_json::from_str(&out.out()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    rows.into_iter()
        .map(|r| (r["Type"].as_str().unwrap().to_string(), r))
        .collect()
}

fn num(row: &Value, field: &str) -> u64 {
    row[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {row}"))
}

/// A tarball cut short: stored whole by `import`, which then fails to unpack it.
fn truncated(env: &Sandbox) -> std::path::PathBuf {
    let tar = env.rootfs_tar("whole", 2000, 0).unwrap();
    let data = std::fs::read(&tar).unwrap();
    let cut = env.home.path().join("cut.tar");
    std::fs::write(&cut, &data[..data.len() * 2 / 3]).unwrap();
    cut
}

#[test]
fn a_failed_imports_blobs_are_reported_and_pruned() {
    let test = "a_failed_imports_blobs_are_reported_and_pruned";
    let Some(env) = prepared(test) else { return };
    let good = env.rootfs_tar("good", 0, 0).unwrap();
    env.nook(&["import", good.to_str().unwrap(), "good:v1"])
        .success();
    let blobs_before = entries(&env.root().join("blobs/sha256"));
    let cut = truncated(&env);
    let failed = env.nook(&["import", cut.to_str().unwrap(), "cut:v1"]);
    assert_eq!(failed.code(), 125, "{failed}");
    // Reported as reclaimable, which is not a problem.
    let check = env.assert_clean();
    assert!(
        check.out().contains("reclaimable: ") && check.out().contains("blob(s)"),
        "{check}"
    );
    let rows = df(&env);
    let unref = &rows["Unreferenced data"];
    assert!(num(unref, "Total") >= 1, "{unref}");
    assert!(num(unref, "RawSize") > 0, "{unref}");
    assert_eq!(
        num(unref, "RawReclaimable"),
        num(unref, "RawSize"),
        "{unref}"
    );
    let prune = env.nook(&["system", "prune", "--force"]);
    prune.success();
    assert!(prune.out().contains("reclaimed"), "{prune}");
    let check = env.assert_clean();
    assert!(!check.out().contains("reclaimable"), "{check}");
    assert_eq!(num(&df(&env)["Unreferenced data"], "RawSize"), 0);
    let mut after = entries(&env.root().join("blobs/sha256"));
    let mut before = blobs_before;
    after.sort();
    before.sort();
    assert_eq!(after, before, "the good image's blobs stay, the rest went");
    env.nook(&["run", "--rm", "good:v1", "true"]).success();
}

#[test]
fn check_repair_reclaims_what_no_image_uses() {
    let test = "check_repair_reclaims_what_no_image_uses";
    let Some(env) = prepared(test) else { return };
    let cut = truncated(&env);
    assert_eq!(
        env.nook(&["import", cut.to_str().unwrap(), "cut:v1"])
            .code(),
        125
    );
    // An image removed while a writer holds the store: its layer stays, unreferenced.
    let good = env.rootfs_tar("good", 0, 0).unwrap();
    env.nook(&["import", good.to_str().unwrap(), "good:v1"])
        .success();
    let held = Command::new("flock")
        .arg("-s")
        .arg(env.root().join("gc.lock"))
        .arg(nook_bin())
        .args(["rmi", "good:v1"])
        .env("HOME", env.home.path())
        .env("NOOK_ROOT", env.root())
        .env("XDG_RUNTIME_DIR", env.runtime.path())
        .output()
        .unwrap();
    assert!(held.status.success(), "{held:?}");
    assert!(
        String::from_utf8_lossy(&held.stderr).contains("system prune"),
        "rmi says its data stays: {held:?}"
    );
    let check = env.nook(&["system", "check"]);
    check.success();
    assert!(check.out().contains("1 layer(s)"), "{check}");
    let repair = env.nook(&["system", "check", "--repair"]);
    repair.success();
    assert!(repair.out().contains("reclaimed"), "{repair}");
    assert_eq!(
        entries(&env.root().join("blobs/sha256")),
        Vec::<String>::new()
    );
    assert_eq!(entries(&env.root().join("layers")), Vec::<String>::new());
    let check = env.assert_clean();
    assert!(!check.out().contains("reclaimable"), "{check}");
}

#[test]
fn a_pull_in_progress_keeps_its_blobs_through_prune() {
    let test = "a_pull_in_progress_keeps_its_blobs_through_prune";
    let Some(env) = prepared(test) else { return };
    if !has("docker-registry") || !has("skopeo") {
        skip(
            test,
            "needs docker-registry and skopeo (tests/run.sh installs them)",
        );
        return;
    }
    // Two layers: busybox (about 2 MB, passes) and 8 MB that stop half way.
    let base = env.rootfs_tar("base", 0, 0).unwrap();
    let big = env.home.path().join("big.tar");
    {
        let dir = tempdir();
        std::fs::write(dir.path().join("big"), random_bytes(8 << 20)).unwrap();
        let out = Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
            .arg(dir.path())
            .arg("-cf")
            .arg(&big)
            .arg("big")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let layout = tempdir();
    oci_layout(layout.path(), &[&base, &big]);
    let reg = Registry::start(Auth::None);
    reg.push(layout.path(), "v1", "two", &[]);
    let proxy = StallingProxy::start(reg.port, 4 << 20);
    let image = format!("{}/two:v1", proxy.host());
    let pull = spawn(&mut env.cmd(&["pull", "-q", "--tls-verify=false", &image]));
    let blobs = env.root().join("blobs/sha256");
    // The manifest, the config and the first layer (as the registry has it: skopeo
    // compressed it) stored; the second layer half downloaded.
    wait_until("the first layer stored, the second half done", LONG, || {
        entries(&blobs).len() >= 3
            && env.tmp().iter().any(|e| {
                e.contains("-blob-")
                    && std::fs::metadata(env.root().join("tmp").join(e))
                        .is_ok_and(|m| m.len() >= 1 << 20)
            })
    });
    let held = entries(&blobs);
    // No image references them yet: still, nothing goes while the pull runs.
    let prune = env.nook(&["system", "prune", "--force"]);
    prune.success();
    assert!(prune.err().contains("is running"), "{prune}");
    let check = env.nook(&["system", "check"]);
    check.success();
    assert!(check.out().contains("no image references yet"), "{check}");
    let repair = env.nook(&["system", "check", "--repair"]);
    repair.success();
    assert_eq!(entries(&blobs), held, "the pull's blobs are kept");
    proxy.release();
    pull.wait(LONG).success();
    env.nook(&["run", "--rm", &image, "test", "-s", "/big"])
        .success();
    let check = env.assert_clean();
    assert!(!check.out().contains("reclaimable"), "{check}");
}

#[test]
fn df_shows_images_containers_and_what_is_reclaimable() {
    let test = "df_shows_images_containers_and_what_is_reclaimable";
    let Some(env) = prepared(test) else { return };
    let tar = env.rootfs_tar("img", 0, 0).unwrap();
    env.nook(&["import", tar.to_str().unwrap(), "img:v1"])
        .success();
    let rows = df(&env);
    let images = &rows["Images"];
    assert_eq!((num(images, "Total"), num(images, "Active")), (1, 0));
    assert!(num(images, "RawSize") > 1_000_000, "{images}");
    assert_eq!(num(images, "RawReclaimable"), num(images, "RawSize"));
    assert_eq!(num(&rows["Containers"], "Total"), 0);

    // A stopped container that wrote 2 MB, and a running one.
    let name = format!("df-{}", token());
    env.nook(&[
        "run",
        "--name",
        &name,
        "img:v1",
        "dd",
        "if=/dev/zero",
        "of=/data",
        "bs=1M",
        "count=2",
    ])
    .success();
    let running = env.nook(&["run", "-d", "img:v1", "sleep", "1000"]);
    running.success();
    let rows = df(&env);
    let images = &rows["Images"];
    assert_eq!((num(images, "Total"), num(images, "Active")), (1, 1));
    assert_eq!(num(images, "RawReclaimable"), 0, "an image in use is not");
    let ctrs = &rows["Containers"];
    assert_eq!((num(ctrs, "Total"), num(ctrs, "Active")), (2, 1), "{ctrs}");
    // With the copy driver a stopped container keeps no writable layer.
    if env.nook(&["info"]).out().contains("driver copy") {
        skip(test, "the copy driver keeps no writable layer to measure");
    } else {
        assert!(num(ctrs, "RawSize") >= 2 << 20, "{ctrs}");
        assert!(num(ctrs, "RawReclaimable") >= 2 << 20, "{ctrs}");
    }
    // The table, as podman prints it.
    let table = env.nook(&["system", "df"]);
    table.success();
    let text = table.out();
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        "{table}"
    );

    env.nook(&["rm", "-f", running.line().trim()]).success();
    env.nook(&["rm", &name]).success();
    env.nook(&["rmi", "img:v1"]).success();
    let rows = df(&env);
    for kind in ["Images", "Containers", "Unreferenced data"] {
        assert_eq!(num(&rows[kind], "Total"), 0, "{kind}: {}", rows[kind]);
        assert_eq!(num(&rows[kind], "RawSize"), 0, "{kind}: {}", rows[kind]);
    }
}
