//! Differential test of nook's ID-map helpers against shadow's (issue 3).
//!
//! Every request in [`cases`] is run twice, once through shadow's `/usr/bin/newuidmap` /
//! `/usr/bin/newgidmap` (Debian package `uidmap`) and once through nook's
//! `nook-newuidmap` / `nook-newgidmap`, each time on a fresh target process. The two must
//! agree on accept/refuse, and when both accept, the resulting uid_map/gid_map and setgroups
//! must be identical. Where nook is deliberately stricter the row says so and why
//! ([`Nook::Stricter`]): there shadow must accept and nook must refuse. Shadow's decision is
//! also checked against the row's expectation, so a machine set up differently from the
//! contract below fails loudly instead of "agreeing" on refusing everything.
//!
//! # Setup contract (the root phase of tests/run.sh)
//! - Runs as an UNPRIVILEGED account (here `nooktest`) whose real gid is its primary gid
//!   (`runuser -u nooktest -- ...`). As root, or without the variables below, it prints
//!   `SKIP: ...` and returns.
//! - `NOOK_TEST_NEWUIDMAP` / `NOOK_TEST_NEWGIDMAP`: paths of nook's helpers, installed with
//!   `install -m 4755 -o root -g root` in a root-owned directory.
//! - shadow's helpers at /usr/bin/newuidmap and /usr/bin/newgidmap (package `uidmap`),
//!   setuid root as the package installs them.
//! - BOTH /etc/subuid and /etc/subgid, as this process sees them, contain these lines,
//!   where USER is the account's name and UID its numeric uid (e.g. `nooktest` and
//!   `1001`), and no other line granting USER or UID ids in 0..400000:
//!   ```text
//!   USER:100000:65536          # by name: the range podman and nook use
//!   UID:165536:4464            # by numeric uid, touching the first: 100000..170000 in all
//!   nook-nobody:300000:65536   # someone else's range (the account need not exist)
//!   ```
//! - Those are files of the test's own, bound over /etc/subuid and /etc/subgid in a
//!   private mount namespace, never lines of the host's files: fixed ranges there could be
//!   real accounts' (a workstation's users often hold 100000..). Both helpers open the
//!   files by path, and a setuid program started inside a mount namespace reads what is
//!   mounted there. The test checks that both paths are mount points. tests/run.sh does
//!   it, as root, roughly:
//!   ```sh
//!   u=nooktest; id=$(id -u $u); d=$(mktemp -d); chmod 755 $d
//!   printf '%s\n' "$u:100000:65536" "$id:165536:4464" "nook-nobody:300000:65536" >$d/subuid
//!   cp $d/subuid $d/subgid; chmod 644 $d/sub?id
//!   unshare --mount --propagation private -- sh -c \
//!     "mount --bind $d/subuid /etc/subuid && mount --bind $d/subgid /etc/subgid &&
//!      exec runuser -u $u -- env NOOK_TEST_NEWUIDMAP=... NOOK_TEST_NEWGIDMAP=... TEST"
//!   ```
//!   If the helpers are configured but the files are not so, the test fails saying what
//!   is missing: that is a setup bug, not a reason to skip.
//!
//! # Targets
//! Each target is `/bin/cat` reading a pipe, started through `pre_exec` (fork, then in the
//! child `unshare(CLONE_NEWUSER)` and optionally setgroups/map writes, then exec): it waits
//! on the pipe until the test has read its maps, then is killed and reaped. "Another user's
//! process" is pid 1; a "dead pid" is a child that has been reaped.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SHADOW_NEWUIDMAP: &str = "/usr/bin/newuidmap";
const SHADOW_NEWGIDMAP: &str = "/usr/bin/newgidmap";
/// The first subordinate id (USER:100000:65536).
const S: u32 = 100000;

/// Which map a request writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Uid,
    Gid,
}

/// How a fresh target prepares itself after unshare(CLONE_NEWUSER), before exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prep {
    Bare,
    /// Writes "deny" to its own setgroups.
    SetgroupsDeny,
    /// Maps its own uid (`0 UID 1`) itself: the uid map is already written.
    OwnUidMap,
    /// Denies setgroups and maps its own gid itself: the gid map is already written.
    OwnGidMap,
}

/// The PID argument of a request.
#[derive(Clone, Copy, Debug)]
enum Pid {
    /// A fresh process in a new user namespace.
    Fresh(Prep),
    /// A fresh process, its pid written with this prefix (e.g. "+").
    Prefixed(&'static str),
    /// The test account's own process, still in the initial user namespace.
    NoUserns,
    /// pid 1: another user's (root's) process.
    Init,
    /// A process that has exited and been reaped.
    Dead,
    /// A literal argument.
    Literal(&'static str),
}

/// What shadow does with the request on a machine set up as documented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Accept,
    Refuse,
}

/// How nook's decision relates to shadow's.
#[derive(Clone, Copy, Debug)]
enum Nook {
    Same,
    /// Shadow accepts, nook refuses on purpose: the reason.
    Stricter(&'static str),
}

struct Case {
    name: &'static str,
    tool: Tool,
    pid: Pid,
    args: Vec<String>,
    shadow: Expect,
    nook: Nook,
}

/// What one helper run did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    accepted: bool,
    stderr: String,
    /// uid_map, gid_map and setgroups of a fresh target after the run.
    state: Option<(String, String, String)>,
}

/// Reason for the strict-number rows.
const STRICT_NUMBERS: &str = "nook reads numbers as plain decimal only; shadow's strtoul(.., 0) \
    also takes hex, octal (so `010` means 8), a sign and leading blanks, and a map should mean \
    the same to every reader";

fn case(name: &'static str, tool: Tool, pid: Pid, args: &str, shadow: Expect) -> Case {
    Case {
        name,
        tool,
        pid,
        args: split(args),
        shadow,
        nook: Nook::Same,
    }
}

fn split(args: &str) -> Vec<String> {
    args.split(' ')
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

/// `n` one-id lines `i S+i 1`.
fn one_id_lines(n: u32) -> String {
    (0..n).map(|i| format!("{i} {} 1 ", S + i)).collect()
}

/// The table. `u`/`g` are the account's uid and gid.
fn cases(u: u32, g: u32) -> Vec<Case> {
    use Expect::{Accept, Refuse};
    use Pid::*;
    use Prep::*;
    use Tool::{Gid, Uid};
    let fresh = Fresh(Bare);
    let s = S;
    // keep-id: ids below the user's map to the range, the user's to itself, then 10 more.
    let k = u.min(60000);
    let mut t = vec![
        // Own id.
        case(
            "uid: own uid alone",
            Uid,
            fresh,
            &format!("0 {u} 1"),
            Accept,
        ),
        case(
            "uid: own uid to itself",
            Uid,
            fresh,
            &format!("{u} {u} 1"),
            Accept,
        ),
        case(
            "uid: own uid, count 2",
            Uid,
            fresh,
            &format!("0 {u} 2"),
            Refuse,
        ),
        case(
            "uid: own uid twice",
            Uid,
            fresh,
            &format!("0 {u} 1 1 {u} 1"),
            Refuse,
        ),
        case(
            "uid: another uid",
            Uid,
            fresh,
            &format!("0 {} 1", u + 1),
            Refuse,
        ),
        case("uid: host root", Uid, fresh, "0 0 1", Refuse),
        // Subordinate ranges.
        case(
            "uid: whole named range",
            Uid,
            fresh,
            &format!("0 {s} 65536"),
            Accept,
        ),
        case(
            "uid: podman default",
            Uid,
            fresh,
            &format!("0 {u} 1 1 {s} 65536"),
            Accept,
        ),
        case(
            "uid: keep-id layout",
            Uid,
            fresh,
            &format!("0 {s} {k} {u} {u} 1 {} {} 10", u + 1, s + k),
            Accept,
        ),
        case(
            "uid: middle of range",
            Uid,
            fresh,
            &format!("1000 {} 10", s + 5),
            Accept,
        ),
        case(
            "uid: last id of named range",
            Uid,
            fresh,
            "0 165535 1",
            Accept,
        ),
        case("uid: starts before range", Uid, fresh, "0 99999 10", Refuse),
        case(
            "uid: numeric-uid entry whole",
            Uid,
            fresh,
            "0 165536 4464",
            Accept,
        ),
        case(
            "uid: numeric-uid entry part",
            Uid,
            fresh,
            "0 166000 100",
            Accept,
        ),
        case(
            "uid: past numeric-uid entry",
            Uid,
            fresh,
            "0 166000 4001",
            Refuse,
        ),
        case(
            "uid: spans name + numeric entries",
            Uid,
            fresh,
            "0 100000 70000",
            Accept,
        ),
        case(
            "uid: one past both entries",
            Uid,
            fresh,
            "0 100000 70001",
            Refuse,
        ),
        case("uid: other user's range", Uid, fresh, "0 300000 10", Refuse),
        // Shape of the triples.
        case("uid: count 0", Uid, fresh, &format!("0 {s} 0"), Refuse),
        case(
            "uid: outside overlap",
            Uid,
            fresh,
            "0 100000 10 10 100005 10",
            Refuse,
        ),
        case(
            "uid: inside overlap",
            Uid,
            fresh,
            "0 100000 10 5 100100 10",
            Refuse,
        ),
        case(
            "uid: duplicate triple",
            Uid,
            fresh,
            "0 100000 10 0 100000 10",
            Refuse,
        ),
        case(
            "uid: touching, no overlap",
            Uid,
            fresh,
            "0 100000 10 10 100010 10",
            Accept,
        ),
        case(
            "uid: inside 4294967294",
            Uid,
            fresh,
            "4294967294 100000 1",
            Accept,
        ),
        case(
            "uid: inside 4294967295",
            Uid,
            fresh,
            "4294967295 100000 1",
            Refuse,
        ),
        case(
            "uid: inside + count overflow",
            Uid,
            fresh,
            "4294967290 100000 10",
            Refuse,
        ),
        case(
            "uid: outside 4294967295",
            Uid,
            fresh,
            "0 4294967295 1",
            Refuse,
        ),
        case(
            "uid: value past u32",
            Uid,
            fresh,
            "4294967296 100000 1",
            Refuse,
        ),
        case("uid: negative", Uid, fresh, "-1 100000 1", Refuse),
        case("uid: non-numeric", Uid, fresh, "abc 100000 1", Refuse),
        case("uid: two arguments", Uid, fresh, "0 100000", Refuse),
        case("uid: four arguments", Uid, fresh, "0 100000 1 2", Refuse),
        case("uid: no triples", Uid, fresh, "", Refuse),
        case("uid: 200 lines", Uid, fresh, &one_id_lines(200), Accept),
        case(
            "uid: 340 lines (over a page)",
            Uid,
            fresh,
            &one_id_lines(340),
            Refuse,
        ),
        case("uid: 341 lines", Uid, fresh, &one_id_lines(341), Refuse),
        // Targets.
        case(
            "uid: pid 1 (another user)",
            Uid,
            Init,
            "0 100000 10",
            Refuse,
        ),
        case("uid: dead pid", Uid, Dead, "0 100000 10", Refuse),
        case("uid: pid 0", Uid, Literal("0"), "0 100000 10", Refuse),
        case(
            "uid: non-numeric pid",
            Uid,
            Literal("abc"),
            "0 100000 10",
            Refuse,
        ),
        case(
            "uid: own process, no new userns",
            Uid,
            NoUserns,
            "0 100000 10",
            Refuse,
        ),
        case(
            "uid: map already written",
            Uid,
            Fresh(OwnUidMap),
            "0 100000 10",
            Refuse,
        ),
        // gid maps and setgroups (CVE-2018-7169).
        case(
            "gid: own gid alone (deny)",
            Gid,
            fresh,
            &format!("0 {g} 1"),
            Accept,
        ),
        case(
            "gid: own gid to itself",
            Gid,
            fresh,
            &format!("{g} {g} 1"),
            Accept,
        ),
        case(
            "gid: own gid, count 2",
            Gid,
            fresh,
            &format!("0 {g} 2"),
            Refuse,
        ),
        case(
            "gid: another gid",
            Gid,
            fresh,
            &format!("0 {} 1", g + 1),
            Refuse,
        ),
        case(
            "gid: subgid range (allow)",
            Gid,
            fresh,
            &format!("0 {s} 65536"),
            Accept,
        ),
        case(
            "gid: podman default",
            Gid,
            fresh,
            &format!("0 {g} 1 1 {s} 65536"),
            Accept,
        ),
        case(
            "gid: own gid, deny already",
            Gid,
            Fresh(SetgroupsDeny),
            &format!("0 {g} 1"),
            Accept,
        ),
        case(
            "gid: range, deny already",
            Gid,
            Fresh(SetgroupsDeny),
            "0 100000 10",
            Accept,
        ),
        case(
            "gid: numeric-uid entry",
            Gid,
            fresh,
            "0 165536 4464",
            Accept,
        ),
        case(
            "gid: spans both entries",
            Gid,
            fresh,
            "0 100000 70000",
            Accept,
        ),
        case(
            "gid: one past both entries",
            Gid,
            fresh,
            "0 100000 70001",
            Refuse,
        ),
        case("gid: other user's range", Gid, fresh, "0 300000 10", Refuse),
        case("gid: count 0", Gid, fresh, "0 100000 0", Refuse),
        case(
            "gid: outside overlap",
            Gid,
            fresh,
            "0 100000 10 10 100005 10",
            Refuse,
        ),
        case(
            "gid: own gid, map already written",
            Gid,
            Fresh(OwnGidMap),
            &format!("0 {g} 1"),
            Refuse,
        ),
        case(
            "gid: range, map already written",
            Gid,
            Fresh(OwnGidMap),
            "0 100000 10",
            Refuse,
        ),
        case(
            "gid: pid 1 (another user)",
            Gid,
            Init,
            "0 100000 10",
            Refuse,
        ),
        case("gid: dead pid", Gid, Dead, "0 100000 10", Refuse),
    ];
    // Deliberate differences: shadow accepts, nook refuses.
    let stricter = [
        ("uid: hex outside id", Uid, fresh, "0 0x186a0 10"),
        ("uid: octal outside id", Uid, fresh, "0 0303240 10"),
        ("uid: plus sign", Uid, fresh, "+0 100000 10"),
        ("uid: leading blank", Uid, fresh, " 0 100000 10"),
        ("uid: plus-signed pid", Uid, Prefixed("+"), "0 100000 10"),
        ("gid: hex outside id", Gid, fresh, "0 0x186a0 10"),
    ];
    for (name, tool, pid, args) in stricter {
        let mut row = case(name, tool, pid, args, Accept);
        if name.ends_with("leading blank") {
            // One argument with a blank in it, as `newuidmap PID " 0" ...` passes it.
            row.args = vec![" 0".into(), "100000".into(), "10".into()];
        }
        row.nook = Nook::Stricter(STRICT_NUMBERS);
        t.push(row);
    }
    t
}

#[test]
fn nook_helpers_decide_like_shadow() {
    let Some(env) = Env::from_environment() else {
        return;
    };
    let rows = cases(env.uid, env.gid);
    let mut failures = Vec::new();
    let mut deliberate = 0;
    let mut reasons = std::collections::BTreeSet::new();
    for row in &rows {
        let shadow = run_case(row, env.shadow(row.tool));
        let nook = run_case(row, env.nook(row.tool));
        let verdict = judge(row, &shadow, &nook);
        if let Nook::Stricter(reason) = row.nook {
            deliberate += 1;
            reasons.insert(reason);
        }
        println!(
            "{:4} {:40} shadow={:6} nook={:6}",
            if verdict.is_ok() { "ok" } else { "FAIL" },
            row.name,
            word(shadow.accepted),
            word(nook.accepted)
        );
        if let Err(why) = verdict {
            failures.push(format!(
                "{}: {why}\n    args: {:?}\n    shadow: {shadow:?}\n    nook:   {nook:?}",
                row.name, row.args
            ));
        }
    }
    println!(
        "{} requests, {} deliberately stricter in nook, {} disagreements",
        rows.len(),
        deliberate,
        failures.len()
    );
    for reason in reasons {
        println!("deliberately stricter: {reason}");
    }
    assert!(rows.len() >= 40);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn word(accepted: bool) -> &'static str {
    if accepted {
        "accept"
    } else {
        "refuse"
    }
}

/// Compares the two outcomes under the row's rules.
fn judge(row: &Case, shadow: &Outcome, nook: &Outcome) -> Result<(), String> {
    if shadow.accepted != (row.shadow == Expect::Accept) {
        return Err(format!(
            "shadow's decision is not the expected {:?}: is the machine set up as the \
             comment at the top of this file says?",
            row.shadow
        ));
    }
    check_nook_message(row, nook)?;
    match row.nook {
        Nook::Stricter(reason) if nook.accepted => Err(format!(
            "nook should refuse, deliberately stricter: {reason}"
        )),
        Nook::Stricter(_) => Ok(()),
        Nook::Same if nook.accepted != shadow.accepted => Err("decisions differ".into()),
        Nook::Same if shadow.state != nook.state => {
            Err("same decision but different resulting map or setgroups".into())
        }
        Nook::Same => Ok(()),
    }
}

/// nook says nothing on success and exactly one line, prefixed with its name, on refusal.
fn check_nook_message(row: &Case, nook: &Outcome) -> Result<(), String> {
    let prefix = match row.tool {
        Tool::Uid => "nook-newuidmap: ",
        Tool::Gid => "nook-newgidmap: ",
    };
    let lines: Vec<&str> = nook.stderr.lines().collect();
    match (nook.accepted, lines.as_slice()) {
        (true, []) => Ok(()),
        (false, [line]) if line.starts_with(prefix) => Ok(()),
        _ => Err(format!(
            "nook's stderr should be empty on success and one `{prefix}...` line on refusal"
        )),
    }
}

/// Runs one helper on a target made for the row.
fn run_case(row: &Case, helper: &Path) -> Outcome {
    let ids = (uid(), gid());
    let mut target = match row.pid {
        Pid::Fresh(prep) => Some(spawn_target(Some(prep), ids)),
        Pid::Prefixed(_) => Some(spawn_target(Some(Prep::Bare), ids)),
        Pid::NoUserns => Some(spawn_target(None, ids)),
        _ => None,
    };
    let pid_arg = match (row.pid, &target) {
        (Pid::Prefixed(prefix), Some(child)) => format!("{prefix}{}", child.id()),
        (_, Some(child)) => child.id().to_string(),
        (Pid::Init, None) => "1".into(),
        (Pid::Dead, None) => dead_pid().to_string(),
        (Pid::Literal(text), None) => text.into(),
        _ => unreachable!(),
    };
    let output = Command::new(helper)
        .arg(&pid_arg)
        .args(&row.args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helper.display()));
    let state = target.as_ref().and_then(|child| read_state(child.id()));
    if let Some(child) = target.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Outcome {
        accepted: output.status.success(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        state,
    }
}

fn read_state(pid: u32) -> Option<(String, String, String)> {
    let read = |name: &str| fs::read_to_string(format!("/proc/{pid}/{name}")).ok();
    Some((read("uid_map")?, read("gid_map")?, read("setgroups")?))
}

/// A target: `/bin/cat` waiting on a pipe. With `prep`, it is in a new user namespace,
/// prepared as asked; without, it stays in ours.
fn spawn_target(prep: Option<Prep>, (uid, gid): (u32, u32)) -> Child {
    // Everything the child touches between fork and exec is allocated here, before the fork:
    // the test harness is multi-threaded, so the child may only make system calls.
    let uid_map = CString::new(format!("0 {uid} 1\n")).unwrap();
    let gid_map = CString::new(format!("0 {gid} 1\n")).unwrap();
    let mut cmd = Command::new("/bin/cat");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(prep) = prep {
        let hook = move || prepare_child(prep, &uid_map, &gid_map);
        // SAFETY: the hook makes only async-signal-safe system calls (unshare, open, write,
        // close) on memory allocated before the fork; it neither allocates nor takes locks.
        unsafe { cmd.pre_exec(hook) };
    }
    cmd.spawn()
        .expect("starting a target process in a new user namespace")
}

/// In the forked child, before exec.
fn prepare_child(prep: Prep, uid_map: &CString, gid_map: &CString) -> io::Result<()> {
    // SAFETY: unshare takes a flag and touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(io::Error::last_os_error());
    }
    match prep {
        Prep::Bare => Ok(()),
        Prep::SetgroupsDeny => write_proc(c"/proc/self/setgroups", b"deny\n"),
        Prep::OwnUidMap => write_proc(c"/proc/self/uid_map", uid_map.as_bytes()),
        Prep::OwnGidMap => {
            write_proc(c"/proc/self/setgroups", b"deny\n")?;
            write_proc(c"/proc/self/gid_map", gid_map.as_bytes())
        }
    }
}

/// open + write + close, usable between fork and exec.
fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call; no O_CREAT, so no mode.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `data` is valid for `data.len()` bytes; `fd` was just opened by us.
    let written = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let result = if written == data.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    result
}

/// The pid of a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("/bin/true")
        .spawn()
        .expect("spawning /bin/true");
    child.wait().expect("reaping /bin/true");
    child.id()
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

fn gid() -> u32 {
    // SAFETY: getgid cannot fail and touches no memory.
    unsafe { libc::getgid() }
}

/// Prints a SKIP line past libtest's output capture.
fn skip(why: &str) {
    let _ = writeln!(io::stderr(), "SKIP: idmap_helper_diff: {why}");
}

/// The checked environment.
struct Env {
    uid: u32,
    gid: u32,
    nook_uid: PathBuf,
    nook_gid: PathBuf,
}

impl Env {
    /// `None` (after printing SKIP) where the test cannot run; panics where the setup is
    /// broken.
    fn from_environment() -> Option<Env> {
        // SAFETY: geteuid cannot fail and touches no memory.
        if unsafe { libc::geteuid() } == 0 {
            skip("runs as root; run it as the unprivileged test account");
            return None;
        }
        let (Some(nook_uid), Some(nook_gid)) = (
            std::env::var_os("NOOK_TEST_NEWUIDMAP"),
            std::env::var_os("NOOK_TEST_NEWGIDMAP"),
        ) else {
            skip("NOOK_TEST_NEWUIDMAP / NOOK_TEST_NEWGIDMAP are not set (nook's helpers are not installed setuid)");
            return None;
        };
        let env = Env {
            uid: uid(),
            gid: gid(),
            nook_uid: nook_uid.into(),
            nook_gid: nook_gid.into(),
        };
        for helper in [
            env.nook_uid.as_path(),
            env.nook_gid.as_path(),
            Path::new(SHADOW_NEWUIDMAP),
            Path::new(SHADOW_NEWGIDMAP),
        ] {
            assert_setuid_root(helper);
        }
        env.assert_subid_lines();
        if !userns_available() {
            skip("this kernel does not let an unprivileged user create user namespaces");
            return None;
        }
        Some(env)
    }

    fn shadow(&self, tool: Tool) -> &Path {
        Path::new(match tool {
            Tool::Uid => SHADOW_NEWUIDMAP,
            Tool::Gid => SHADOW_NEWGIDMAP,
        })
    }

    fn nook(&self, tool: Tool) -> &Path {
        match tool {
            Tool::Uid => &self.nook_uid,
            Tool::Gid => &self.nook_gid,
        }
    }

    /// The lines documented at the top of this file, in files bound over the host's.
    fn assert_subid_lines(&self) {
        let mounts = fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
        for file in ["/etc/subuid", "/etc/subgid"] {
            assert!(
                mounts.lines().any(|l| l.split(' ').nth(4) == Some(file)),
                "{file} is not a file bound over the host's in a private mount namespace: the \
                 differential test's fixed lines must never be the host's (see the top of \
                 tests/tests/idmap_helper_diff.rs; tests/run.sh sets it up)"
            );
        }
        let name = Command::new("id")
            .arg("-un")
            .output()
            .expect("running id -un");
        let name = String::from_utf8_lossy(&name.stdout).trim().to_string();
        let wanted = [
            format!("{name}:100000:65536"),
            format!("{}:165536:4464", self.uid),
            "nook-nobody:300000:65536".to_string(),
        ];
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = fs::read_to_string(file).unwrap_or_default();
            for line in &wanted {
                assert!(
                    text.lines().any(|l| l == line),
                    "{file} lacks the line `{line}`: the differential test needs, in both \
                     files bound over /etc/subuid and /etc/subgid: {wanted:?} (see the top \
                     of tests/tests/idmap_helper_diff.rs)"
                );
            }
        }
    }
}

fn assert_setuid_root(path: &Path) {
    let meta = fs::metadata(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (shadow's come from the Debian package uidmap; nook's must be installed \
             with install -m 4755 -o root)",
            path.display()
        )
    });
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.uid() == 0 && meta.permissions().mode() & 0o4000 != 0,
        "{} must be owned by root and setuid (install -m 4755 -o root)",
        path.display()
    );
}

fn userns_available() -> bool {
    let mut child = spawn_target_checked();
    match child.as_mut() {
        Some(c) => {
            let _ = c.kill();
            let _ = c.wait();
            true
        }
        None => false,
    }
}

/// Like [`spawn_target`] but reports failure instead of panicking.
fn spawn_target_checked() -> Option<Child> {
    let empty = CString::default();
    let mut cmd = Command::new("/bin/cat");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: as in spawn_target: only system calls on memory allocated before the fork.
    unsafe { cmd.pre_exec(move || prepare_child(Prep::Bare, &empty, &empty)) };
    cmd.spawn().ok()
}
