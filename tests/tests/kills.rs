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

use nook_tests::registry::{oci_layout, Auth, Registry, StallingProxy};
use nook_tests::*;

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
fn unpacking(env: &Sandbox, pid: i32) -> bool {
    env.tmp().iter().any(|e| {
        e.contains("-layer-")
            && fs::read_dir(env.root().join("tmp").join(e).join("diff"))
                .is_ok_and(|mut d| d.next().is_some())
    }) && has_store_helper(pid)
}

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
    let tar = env.rootfs_tar("big", 0, 8 << 20).unwrap();
    let layout = tempdir();
    oci_layout(layout.path(), &[&tar]);
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
    let tar = env.rootfs_tar("many", 20_000, 0).unwrap();
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
        entries(&env.root().join("blobs/sha256")),
        Vec::<String>::new()
    );
}

#[test]
fn load_terminated_mid_unpack_leaves_nothing() {
    let test = "load_terminated_mid_unpack_leaves_nothing";
    let Some(env) = prepared(test) else { return };
    let tar = env.rootfs_tar("many", 20_000, 0).unwrap();
    let layout = tempdir();
    oci_layout(layout.path(), &[&tar]);
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
    let tar = env.rootfs_tar("many", 20_000, 0).unwrap();
    env.nook(&["import", tar.to_str().unwrap(), "many:v1"])
        .success();
    let p = spawn(&mut env.cmd(&["run", "--rm", "--storage-driver", "copy", "many:v1", "true"]));
    let pid = p.pid;
    let copies = env.copies_dir();
    wait_until("the copy under way", LONG, || {
        entries(&copies).iter().any(|c| {
            fs::read_dir(copies.join(c).join("rootfs")).is_ok_and(|mut d| d.next().is_some())
        }) && has_store_helper(pid)
    });
    let out = kill_and_wait(p, Signal::SIGKILL, "run killed mid-copy");
    assert_eq!(out.code(), 137, "{out}");
    assert_eq!(entries(&copies).len(), 1, "the killed run's copy is there");
    // The next command, whatever it is (here a run that needs no image), removes it.
    env.nook(&["run", "--rm", "host", "true"]).success();
    assert_eq!(entries(&copies), Vec::<String>::new());
    env.assert_clean();
}

#[test]
fn copy_root_of_a_killed_run_is_removed_by_any_command() {
    let test = "copy_root_of_a_killed_run_is_removed_by_any_command";
    let Some(env) = prepared(test) else { return };
    let tar = env.rootfs_tar("small", 10, 0).unwrap();
    env.nook(&["import", tar.to_str().unwrap(), "small:v1"])
        .success();
    // The container plants links to a host directory in its root: removing the root
    // of a killed run must not follow them (the canary stays).
    let host = tempdir();
    let canary = host.path().join("canary");
    fs::write(&canary, "host data").unwrap();
    let plant = format!(
        "ln -s {0} /to-host && ln -s {0}/canary /to-canary && mkdir -p /d && ln -s {0} /d/up \
         && echo ready; exec sleep 1000",
        host.path().display()
    );
    let mut p = spawn(&mut env.cmd(&[
        "run",
        "--rm",
        "--storage-driver",
        "copy",
        "small:v1",
        "sh",
        "-c",
        &plant,
    ]));
    p.wait_for("ready", TIMEOUT);
    assert!(container_init(p.pid).is_some(), "the container runs");
    // Its processes are among those that must all be gone.
    let out = kill_and_wait(p, Signal::SIGKILL, "run killed while its container ran");
    assert_eq!(out.code(), 137, "{out}");
    assert_eq!(entries(&env.copies_dir()).len(), 1);
    env.nook(&["images"]).success();
    assert_eq!(entries(&env.copies_dir()), Vec::<String>::new());
    assert_eq!(
        fs::read_to_string(&canary).unwrap(),
        "host data",
        "the sweep followed a link out of the copy"
    );
    assert_eq!(entries(host.path()), ["canary"]);
    assert_eq!(env.nook(&["ps", "-aq"]).success().out(), "");
    env.assert_clean();
}
