//! nook-engine driven in-process, as a Rust program embedding it would: pull from the
//! suite's loopback registry → create → start → wait → rm through the engine's API, no
//! `nook` command line in between (the engine re-executes the `nook` binary only for
//! its helpers: the store helper that unpacks, the container's supervisor).

use std::sync::{Arc, Mutex};

use nook_engine::container::lifecycle::{self, IfRunning};
use nook_engine::container::supervisor;
use nook_engine::image::{self, PullFrom};
use nook_engine::request::PullPolicy;
use nook_engine::{Engine, Notify, RunRequest, Settings};
use nook_tests::registry::{oci_layout, Auth, Registry};
use nook_tests::*;

/// Notices kept for the test to look at, as an embedding program might log them.
#[derive(Default)]
struct Kept(Mutex<Vec<String>>);

impl Notify for Kept {
    fn notice(&self, text: &str) {
        self.0.lock().unwrap().push(text.to_string());
    }
    fn warn(&self, text: &str) {
        self.0.lock().unwrap().push(format!("warning: {text}"));
    }
}

#[test]
fn pull_create_start_wait_rm_through_the_engine_api() {
    let test = "pull_create_start_wait_rm_through_the_engine_api";
    let env = Sandbox::new();
    if let Err(why) = static_busybox() {
        return skip(test, &why);
    }
    if !has("docker-registry") || !has("skopeo") || !has("tar") {
        return skip(
            test,
            "needs docker-registry, skopeo and tar (tests/run.sh installs them)",
        );
    }
    let tar = env.rootfs_tar("api", 0, 0).unwrap();
    let layout = tempdir();
    oci_layout(layout.path(), &[&tar]);
    let reg = Registry::start(Auth::None);
    reg.push(layout.path(), "v1", "api", &[]);
    let name = format!("{}/api:v1", reg.host());

    // The helpers (store helper, supervisor) are the nook binary's.
    nook_engine::helpers::use_executable(nook_bin());
    let kept = Arc::new(Kept::default());
    let eng = Engine {
        store_root: Some(env.root()),
        settings: Settings::default(),
        notify: kept.clone(),
        migrate: None,
    };

    // Pull.
    let store = image::open_store(eng.store_root.clone(), &*eng.notify).unwrap();
    let from = PullFrom {
        tls_verify: Some(false),
        ..PullFrom::default()
    };
    let pulled = image::pull_image(
        &store,
        &name,
        &from,
        &eng.settings,
        &nook_fs::pull::Quiet,
        &*eng.notify,
    )
    .unwrap();

    // Create: the request as a program would build it, no flags involved.
    let ctr_name = format!("api{}", token());
    let request = RunRequest {
        image: name.clone(),
        pull: PullPolicy::Never,
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo from-the-api $GREETING; exit 7".into(),
        ],
        env: vec!["GREETING=hello".into()],
        name: Some(ctr_name.clone()),
        network: "none".into(),
        ..RunRequest::default()
    };
    let ctr = nook_engine::run::create(&eng, &request, None, &nook_fs::pull::Quiet).unwrap();
    assert_eq!(ctr.record.image_id.as_deref(), Some(pulled.id.hex()));
    assert_eq!(ctr.record.request, request);

    // Start (its supervisor, detached), wait for its exit code.
    supervisor::spawn(&ctr, &*eng.notify).unwrap();
    assert_eq!(lifecycle::wait(&ctr).unwrap(), 7);
    let log = std::fs::read_to_string(ctr.log_path()).unwrap();
    assert!(log.contains("from-the-api hello"), "{log}");

    // The CLI sees what the API made.
    let ps = env.nook(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(ps.success().out(), format!("{ctr_name} exited\n"));

    // Remove: nothing of it left, its name free.
    let places = eng.places().unwrap();
    lifecycle::remove(&places, &ctr, IfRunning::Refuse, &*eng.notify).unwrap();
    assert!(!ctr.dir.exists(), "{} is left", ctr.dir.display());
    assert!(places.find(&ctr_name).is_err());
    assert_eq!(env.nook(&["ps", "-aq"]).success().out(), "");
    let notices = kept.0.lock().unwrap();
    assert!(
        !notices.iter().any(|n| n.starts_with("warning")),
        "{notices:?}"
    );
}
