//! Another account's containers and store. Account A (`nooktest`) runs a detached
//! container; account B (`nooktest2`) tries every container command on it: with B's own
//! store and runtime directory, then pointed at A's (`--root`, `NOOK_ROOT`,
//! `XDG_RUNTIME_DIR`, the OCI runtime's `--root`); B's probe tries A's files, the attach
//! socket, the container's processes. Each must be refused, with a clear error where nook
//! is the one refusing, and A's container must run on untouched.
//!
//! One process cannot be two accounts, and switching needs root: these tests run as root
//! (tests/run.sh does, with `NOOK_CROSS_USERS="nooktest nooktest2"`), and root only
//! orchestrates. Every nook command and every attempt runs as A or B through
//! `runuser`, each asserted to be an unprivileged uid; nothing here runs a container as
//! root. Started as anything but root they say SKIP.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nook_tests::*;

struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    /// Its XDG_RUNTIME_DIR (0700, its own) and its store (created by nook).
    runtime: PathBuf,
    store: PathBuf,
}

/// A's and B's places under one temporary directory (0755, root's).
struct World {
    a: Account,
    b: Account,
    _base: tempfile::TempDir,
}

fn world(test: &str) -> Option<World> {
    if !nix::unistd::geteuid().is_root() {
        skip(
            test,
            "needs two accounts: run as root, which drives `nooktest` and `nooktest2` \
             through runuser (tests/run.sh does)",
        );
        return None;
    }
    let names = std::env::var("NOOK_CROSS_USERS").unwrap_or_else(|_| "nooktest nooktest2".into());
    let names: Vec<&str> = names.split_whitespace().collect();
    let base = tempfile::Builder::new()
        .prefix("nook-cross-user-")
        .tempdir()
        .unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut accounts = Vec::new();
    for name in names.iter().take(2) {
        let Some(user) = nix::unistd::User::from_name(name).ok().flatten() else {
            skip(test, &format!("no account {name}: tests/run.sh creates it"));
            return None;
        };
        let (uid, gid) = (user.uid, user.gid);
        assert!(!uid.is_root(), "{name} must be an unprivileged account");
        let runtime = base.path().join(format!("{name}-run"));
        let own = base.path().join(name);
        for (dir, mode) in [(&runtime, 0o700), (&own, 0o755)] {
            fs::create_dir(dir).unwrap();
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
            nix::unistd::chown(dir.as_path(), Some(uid), Some(gid)).unwrap();
        }
        accounts.push(Account {
            name: name.to_string(),
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            home: user.dir,
            runtime,
            store: own.join("store"),
        });
    }
    if accounts.len() < 2 {
        skip(test, "NOOK_CROSS_USERS names fewer than two accounts");
        return None;
    }
    let b = accounts.pop().unwrap();
    let a = accounts.pop().unwrap();
    Some(World { a, b, _base: base })
}

/// `cmd ARGS` as `who`, with a clean environment: its own HOME, and XDG_RUNTIME_DIR and
/// NOOK_ROOT as given (an account's own, or the other's).
fn as_user(who: &Account, runtime: &Path, store: &Path, cmd: &Path, args: &[&str]) -> Output {
    assert_ne!(
        who.uid, 0,
        "{} runs the attempt: it must not be root",
        who.name
    );
    let mut c = Command::new("runuser");
    c.args(["-u", &who.name, "--", "env", "-i"])
        .arg(format!("HOME={}", who.home.display()))
        .arg(format!("USER={}", who.name))
        .arg(format!("LOGNAME={}", who.name))
        .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .arg("LANG=C.UTF-8")
        .arg(format!("XDG_RUNTIME_DIR={}", runtime.display()))
        .arg(format!("NOOK_ROOT={}", store.display()))
        .arg(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(&mut c).wait(TIMEOUT)
}

/// nook as `who` in its own places.
fn nook_as(who: &Account, args: &[&str]) -> Output {
    as_user(who, &who.runtime, &who.store, &nook_bin(), args)
}

/// The probe as `who`: one attempt, its result line.
fn probe_as(who: &Account, args: &[&str]) -> String {
    let o = as_user(who, &who.runtime, &who.store, &attack_bin(), args);
    o.line()
}

/// A's detached container printing a line every 200 ms; removed (as A) when dropped, so
/// a failed assertion leaves nothing running.
struct Victim<'a> {
    w: &'a World,
    name: String,
    id: String,
}

impl<'a> Victim<'a> {
    fn start(w: &'a World) -> Victim<'a> {
        let name = format!("victim-{}", token());
        let o = nook_as(
            &w.a,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "host",
                "sh",
                "-c",
                "echo started; while :; do echo tick; sleep 0.2; done",
            ],
        );
        o.success();
        Victim {
            w,
            name,
            id: o.line(),
        }
    }
}

impl Drop for Victim<'_> {
    fn drop(&mut self) {
        let _ = nook_as(&self.w.a, &["rm", "-f", &self.name]);
    }
}

/// Asserts A's container still runs, untouched.
#[track_caller]
fn assert_victim_running(v: &Victim) {
    let (w, name, id) = (v.w, &v.name, &v.id);
    let o = nook_as(&w.a, &["ps", "--format", "{{.ID}} {{.Status}}"]);
    o.success();
    assert!(
        o.out()
            .lines()
            .any(|l| id.starts_with(l.split(' ').next().unwrap_or("-")) && l.contains("Up")),
        "{name} is no longer running for its owner\n{o}"
    );
    let logs = nook_as(&w.a, &["logs", name]);
    logs.success();
    assert!(logs.out().starts_with("started\n"), "{logs}");
}

/// The container commands B tries on A's container.
fn commands(name: &str, dest: &str) -> Vec<Vec<String>> {
    let cp_src = format!("{name}:/etc/hostname");
    [
        &["inspect", name][..],
        &["logs", name],
        &["exec", name, "true"],
        &["kill", name],
        &["stop", "-t", "1", name],
        &["rm", "-f", name],
        &["cp", &cp_src, dest],
        &["attach", "--no-stdin", name],
        &["port", name],
        &["top", name],
        &["pause", name],
        &["restart", name],
    ]
    .iter()
    .map(|c| c.iter().map(|s| s.to_string()).collect())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn another_accounts_containers_are_invisible_and_untouchable() {
    let test = "another_accounts_containers_are_invisible_and_untouchable";
    let Some(w) = world(test) else { return };
    let v = Victim::start(&w);
    let (name, id) = (v.name.clone(), v.id.clone());
    let dest = w.b.runtime.join("copied").display().to_string();
    let short = &id[..12];

    // B in its own places: A's container does not exist for B.
    let ps = nook_as(&w.b, &["ps", "-a"]);
    ps.success();
    assert!(
        !ps.out().contains(short) && !ps.out().contains(&name),
        "{ps}"
    );
    for args in commands(&name, &dest) {
        let args = strs(&args);
        let o = nook_as(&w.b, &args);
        assert_ne!(o.code(), 0, "B's `{}` succeeded\n{o}", args.join(" "));
        assert!(!o.out().contains(short), "{o}");
    }
    assert_victim_running(&v);

    // B pointed at A's store (NOOK_ROOT, or --root): refused before anything is read.
    let a_store = w.a.store.display().to_string();
    let mut owned: Vec<Vec<String>> = vec![vec!["ps".into(), "-a".into()], vec!["images".into()]];
    owned.extend(commands(&name, &dest));
    let attempts: Vec<Vec<&str>> = owned.iter().map(|v| strs(v)).collect();
    for args in &attempts {
        for flag in [false, true] {
            let mut full: Vec<&str> = Vec::new();
            if flag {
                full.extend_from_slice(&["--root", &a_store]);
            }
            full.extend_from_slice(args);
            let store = if flag { &w.b.store } else { &w.a.store };
            let o = as_user(&w.b, &w.b.runtime, store, &nook_bin(), &full);
            o.assert_error_line(125, &[&a_store, "belongs to uid", &w.a.uid.to_string()]);
        }
    }
    assert_victim_running(&v);

    // B's runtime directory set to A's: passed over (not B's), so A's containers stay
    // invisible; nook never lists or follows A's files.
    for args in &attempts {
        let o = as_user(&w.b, &w.a.runtime, &w.b.store, &nook_bin(), args);
        assert!(!o.out().contains(short), "{o}");
        if args[0] != "ps" && args[0] != "images" {
            assert_ne!(o.code(), 0, "B's `{}` succeeded\n{o}", args.join(" "));
        }
    }
    // Both of A's places at once.
    for args in &attempts {
        let o = as_user(&w.b, &w.a.runtime, &w.a.store, &nook_bin(), args);
        o.assert_error_line(125, &[&a_store, "belongs to uid"]);
    }
    assert_victim_running(&v);

    // The OCI runtime's state directory: A's, by --root.
    for dir in [w.a.runtime.clone(), w.a.runtime.join("nook/oci")] {
        let root = dir.display().to_string();
        for op in ["state", "kill", "delete"] {
            let o = as_user(
                &w.b,
                &w.b.runtime,
                &w.b.store,
                &nook_bin(),
                &["oci", "--root", &root, op, &id],
            );
            assert_ne!(o.code(), 0, "{o}");
            assert!(
                o.err().contains(&root) && o.err().contains("your own"),
                "{o}"
            );
        }
    }
    assert_victim_running(&v);
}

#[test]
fn another_accounts_store_runtime_dir_and_processes_are_out_of_reach() {
    let test = "another_accounts_store_runtime_dir_and_processes_are_out_of_reach";
    let Some(w) = world(test) else { return };
    let v = Victim::start(&w);
    let (name, id) = (v.name.clone(), v.id.clone());
    let pid = nook_as(&w.a, &["inspect", "--format", "{{.State.Pid}}", &name]).line();
    assert!(pid.parse::<u32>().is_ok(), "no pid for {name}: {pid:?}");
    // The modes nook gave A's directories.
    let record = w.a.store.join("containers").join(&id);
    let rundir = w.a.runtime.join("nook");
    for dir in [&w.a.store, &w.a.store.join("containers"), &record, &rundir] {
        let mode = fs::metadata(dir).unwrap().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is open to others: {mode:o}",
            dir.display()
        );
    }
    let container_run = rundir.join("containers").join(&id);
    let sock = container_run.join("attach.sock");
    let files = [
        (w.a.store.display().to_string(), "read"),
        (record.join("config.json").display().to_string(), "read"),
        (record.join("state.json").display().to_string(), "read"),
        (record.join("ctr.log").display().to_string(), "read"),
        (rundir.display().to_string(), "read"),
        (container_run.join("hostname").display().to_string(), "read"),
        (record.join("state.json").display().to_string(), "write"),
        (record.join("ctr.log").display().to_string(), "write"),
    ];
    for (path, op) in &files {
        let args: Vec<&str> = if *op == "read" {
            vec!["read", path]
        } else {
            vec!["write", path, "pwned"]
        };
        let got = probe_as(&w.b, &args);
        assert_eq!(got, "err EACCES", "B's {op} of {path}");
    }
    assert_eq!(
        probe_as(&w.b, &["unix-read", &sock.display().to_string()]),
        "err EACCES"
    );
    // Its processes: signals and tracing are the kernel's to refuse (other uid).
    assert_eq!(probe_as(&w.b, &["kill", &pid, "9"]), "err EPERM");
    assert_eq!(probe_as(&w.b, &["ptrace", &pid]), "err EPERM");
    assert_eq!(
        probe_as(&w.b, &["open", &format!("/proc/{pid}/mem"), "r"]),
        "err EACCES"
    );
    assert_eq!(
        probe_as(&w.b, &["read", &format!("/proc/{pid}/root")]),
        "err EACCES"
    );
    assert_victim_running(&v);
    drop(v);

    // A store made beforehand with the umask's modes is made private at first use.
    let early = w.a.store.with_file_name("early-store");
    fs::create_dir(&early).unwrap();
    fs::set_permissions(&early, fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(
        &early,
        Some(nix::unistd::Uid::from_raw(w.a.uid)),
        Some(nix::unistd::Gid::from_raw(w.a.gid)),
    )
    .unwrap();
    let o = as_user(&w.a, &w.a.runtime, &early, &nook_bin(), &["ps", "-a"]);
    o.success();
    assert_eq!(fs::metadata(&early).unwrap().mode() & 0o777, 0o700, "{o}");
}

#[test]
fn the_attach_socket_serves_only_its_own_account() {
    let test = "the_attach_socket_serves_only_its_own_account";
    let Some(w) = world(test) else { return };
    let v = Victim::start(&w);
    let id = v.id.clone();
    // Open the way to the socket, as a careless chmod of the runtime directory would: the
    // logger itself must still turn B away (and serve A).
    let container_run = w.a.runtime.join("nook/containers").join(&id);
    for dir in [
        w.a.runtime.clone(),
        w.a.runtime.join("nook"),
        w.a.runtime.join("nook/containers"),
        container_run.clone(),
    ] {
        let mode = fs::metadata(&dir).unwrap().mode() & 0o7777;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o011)).unwrap();
    }
    let sock = container_run.join("attach.sock");
    let mode = fs::metadata(&sock).unwrap().mode() & 0o7777;
    fs::set_permissions(&sock, fs::Permissions::from_mode(mode | 0o066)).unwrap();
    let s = sock.display().to_string();
    let b = probe_as(&w.b, &["unix-read", &s]);
    let a = probe_as(&w.a, &["unix-read", &s]);
    drop(v);
    assert_eq!(b, "ok eof", "B was served by A's container's logger");
    // A frame: stream 1 (stdout), a length, `tick`.
    assert!(
        a.starts_with("ok ") && a.contains("tick"),
        "A was not served: {a:?}"
    );
}
