//! See main.rs: this module's attempts are listed there and in docs/security.md.
//!
//! The nook binary through /proc/PID/exe (CVE-2019-5736): each test runs a copy of nook
//! that the test's account owns and may write, as a user's own install would be, and
//! checks afterwards that not a byte of it changed. Attempts, from inside the container:
//! the `--init` reaper (nook, pid 1 for the container's lifetime), the process `nook
//! exec` starts, caught and stopped by a watcher before it execs (its fd/, cwd, root and
//! environ too: descriptors of the host there were the way out of CVE-2024-21626), and
//! nook's own binary given as the command, directly or as a script's interpreter.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nook_tests::*;

use super::fds::Store;

/// A copy of nook owned and writable by the test's account.
struct OwnCopy {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// Size, modification and change times: any write through any path changes them.
    stamp: (u64, i64, i64, i64, i64),
}

fn stamp(path: &std::path::Path) -> (u64, i64, i64, i64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

impl OwnCopy {
    fn new() -> OwnCopy {
        let dir = tempdir();
        let path = dir.path().join("nook");
        std::fs::copy(nook_bin(), &path).expect("copy the nook binary");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        OwnCopy {
            _dir: dir,
            stamp: stamp(&path),
            path,
        }
    }

    /// "DEV INO" of the copy, as fstat in the container reports them.
    fn id(&self) -> String {
        let m = std::fs::metadata(&self.path).unwrap();
        format!("{} {}", m.dev(), m.ino())
    }

    /// Not written to (its times), and byte for byte the binary it was copied from.
    #[track_caller]
    fn assert_unchanged(&self, context: &dyn std::fmt::Display) {
        assert_eq!(
            stamp(&self.path),
            self.stamp,
            "the nook binary was written\n{context}"
        );
        let same = std::process::Command::new("cmp")
            .args(["-s"])
            .arg(nook_bin())
            .arg(&self.path)
            .status()
            .expect("run cmp");
        assert!(same.success(), "the nook binary changed\n{context}");
    }
}

/// Python in the container: `attempt(name, f)` prints `name=OPEN` or `name=ERRNO`.
const ATTEMPT: &str = r#"
import errno, os, sys
def attempt(name, f):
    try:
        f()
        return f"{name}=OPEN"
    except OSError as e:
        return f"{name}={errno.errorcode.get(e.errno, e.errno)}"
def closed(pid):
    tries = [
        ("exe-read", lambda: os.open(f"/proc/{pid}/exe", os.O_RDONLY)),
        ("exe-write", lambda: os.open(f"/proc/{pid}/exe", os.O_WRONLY)),
        ("exe-path", lambda: os.open(f"/proc/{pid}/exe", os.O_PATH)),
        ("exe-link", lambda: os.readlink(f"/proc/{pid}/exe")),
        ("fd", lambda: os.listdir(f"/proc/{pid}/fd")),
        ("cwd", lambda: os.listdir(f"/proc/{pid}/cwd")),
        ("root", lambda: os.listdir(f"/proc/{pid}/root")),
        ("environ", lambda: open(f"/proc/{pid}/environ", "rb").read()),
        ("mem", lambda: os.open(f"/proc/{pid}/mem", os.O_RDONLY)),
    ]
    out = [attempt(n, f) for n, f in tries]
    for n in range(0, 64):
        r = attempt(f"fd{n}", lambda: os.open(f"/proc/{pid}/fd/{n}", os.O_PATH))
        if r.endswith("=OPEN"):
            out.append(r)
    return " ".join(out)
def reached(own):
    hits = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                fd = os.open(f"/proc/{p}/exe", os.O_PATH)
            except OSError:
                continue
            st = os.fstat(fd)
            os.close(fd)
            if f"{st.st_dev} {st.st_ino}" == own:
                hits.append(p)
    return hits
"#;

const CLOSED: [&str; 9] = [
    "exe-read=EACCES",
    "exe-write=EACCES",
    "exe-path=EACCES",
    "exe-link=EACCES",
    "fd=EACCES",
    "cwd=EACCES",
    "root=EACCES",
    "environ=EACCES",
    "mem=EACCES",
];

#[track_caller]
fn assert_closed(line: &str, context: &dyn std::fmt::Display) {
    for want in CLOSED {
        assert!(
            line.split_whitespace().any(|w| w == want),
            "expected {want} in {line:?}\n{context}"
        );
    }
    assert!(!line.contains("=OPEN"), "opened: {line:?}\n{context}");
}

fn python(test: &str) -> bool {
    if has("python3") {
        return true;
    }
    skip(
        test,
        "python3 is not installed (the `host` image runs the host's)",
    );
    false
}

/// The `--init` reaper stays nook, as pid 1, for the container's life: its exe, fd/,
/// environ (nook's own, the caller's environment) and memory are closed to the container,
/// and its command line, which anyone may read, shows nothing of the caller's.
#[test]
fn init_reaper_is_closed_to_the_container() {
    if !python("init_reaper_is_closed_to_the_container") {
        return;
    }
    let store = Store::new();
    let copy = OwnCopy::new();
    let secret = format!("secret-{}", token());
    let script = format!(
        "{ATTEMPT}\nprint('pid1', closed(1))\n\
         print('cmdline=' + open('/proc/1/cmdline', 'rb').read().replace(b'\\0', b' ').decode().strip())\n\
         print('reached', reached(sys.argv[1]))\n"
    );
    let o = spawn(&mut store.cmd_with(
        &copy.path,
        &[
            "run",
            "--rm",
            "--init",
            "--network=none",
            "-e",
            &format!("NOOK_TEST_SECRET={secret}"),
            "host",
            "python3",
            "-c",
            &script,
            &copy.id(),
        ],
    ))
    .wait(TIMEOUT);
    o.success();
    let out = o.out();
    let pid1 = out
        .lines()
        .find(|l| l.starts_with("pid1 "))
        .expect("pid1 line");
    assert_closed(pid1, &o);
    assert!(out.contains("cmdline=nook-init\n"), "{o}");
    assert!(
        !out.contains(&secret),
        "the caller's command line is visible\n{o}"
    );
    assert!(out.contains("reached []\n"), "{o}");
    copy.assert_unchanged(&o);
}

/// A watcher in the container stops every nook process it sees (the process `nook exec`
/// starts, between its birth in the container's pid namespace and its exec; a long PATH
/// to search makes that window wide) and tries its /proc entries: all closed.
#[test]
fn exec_process_is_closed_to_the_container_before_it_execs() {
    if !python("exec_process_is_closed_to_the_container_before_it_execs") {
        return;
    }
    let store = Store::new();
    let copy = OwnCopy::new();
    let name = format!("watch-{}", token());
    let watcher = format!(
        "{ATTEMPT}
import signal, time
seen = set()
print('watching', flush=True)
deadline = time.time() + 50
while time.time() < deadline:
    for p in os.listdir('/proc'):
        if not p.isdigit() or p in seen:
            continue
        try:
            comm = open(f'/proc/{{p}}/comm').read().strip()
        except OSError:
            continue
        seen.add(p)
        if comm != 'nook':
            continue
        try:
            os.kill(int(p), signal.SIGSTOP)
        except OSError:
            continue
        # Once stopped it cannot exec: it is still nook only if its name still says so.
        state = ''
        for _ in range(100000):
            try:
                stat = open(f'/proc/{{p}}/stat').read()
                state = stat[stat.rfind(')') + 2]
                comm = open(f'/proc/{{p}}/comm').read().strip()
            except OSError:
                break
            if state == 'T':
                break
        if state != 'T' or comm != 'nook':
            try:
                os.kill(int(p), signal.SIGCONT)
            except OSError:
                pass
            continue
        result = closed(p)
        hits = reached(sys.argv[1])
        os.kill(int(p), signal.SIGCONT)
        print('caught', result, 'reached', hits, flush=True)
        sys.exit(0)
print('none caught', flush=True)
"
    );
    let mut run = spawn(&mut store.cmd_with(
        &copy.path,
        &[
            "run",
            "--rm",
            "--network=none",
            "--name",
            &name,
            "host",
            "python3",
            "-c",
            &watcher,
            &copy.id(),
        ],
    ));
    run.wait_for("watching", TIMEOUT);
    let path: Vec<String> = (0..5000)
        .map(|i| format!("/nonexistent/{i}"))
        .chain(["/usr/bin".to_string(), "/bin".to_string()])
        .collect();
    let path = format!("PATH={}", path.join(":"));
    let stop = Arc::new(AtomicBool::new(false));
    let execs = {
        let stop = stop.clone();
        let mut exec = store.cmd_with(&copy.path, &["exec", "-e", &path, &name, "true"]);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Once the watcher is done the container is gone and exec fails: fine.
                let _ = spawn(&mut exec).wait(TIMEOUT);
            }
        })
    };
    let line = run.wait_for("caught", TIMEOUT);
    stop.store(true, Ordering::Relaxed);
    let o = run.wait(TIMEOUT);
    execs.join().unwrap();
    assert_closed(&line, &o);
    assert!(line.ends_with("reached []"), "{line}\n{o}");
    copy.assert_unchanged(&o);
}

/// nook's own binary as the container's command (`/proc/self/exe`, or the interpreter of a
/// script from the image) would make nook a process of the container, dumpable, with the
/// host's binary as its /proc/PID/exe: refused, for run and for exec.
#[test]
fn nook_binary_as_the_command_is_refused() {
    let store = Store::new();
    let copy = OwnCopy::new();
    let dir = tempdir();
    let script = dir.path().join("s");
    std::fs::write(&script, "#!/proc/self/exe --version\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let chained = dir.path().join("t");
    std::fs::write(&chained, "#!/x/s\n").unwrap();
    std::fs::set_permissions(&chained, std::fs::Permissions::from_mode(0o755)).unwrap();
    let volume = format!("{}:/x", dir.path().display());
    for command in ["/proc/self/exe", "/x/s", "/x/t"] {
        let o = spawn(&mut store.cmd_with(
            &copy.path,
            &[
                "run",
                "--rm",
                "--network=none",
                "-v",
                &volume,
                "host",
                command,
            ],
        ))
        .wait(TIMEOUT);
        o.assert_error_line(125, &["refusing to run", command, "nook's own binary"]);
        copy.assert_unchanged(&o);
    }
    let name = store.idle(&["-v", &volume]);
    let o = spawn(&mut store.cmd_with(&copy.path, &["exec", &name, "/x/s"])).wait(TIMEOUT);
    o.assert_error_line(125, &["refusing to run", "nook's own binary"]);
    copy.assert_unchanged(&o);
}
