//! Which command line the binary was given: nook's own, or runc's (the OCI runtime).
//!
//! The name decides first: `nook-runtime` is always the runtime, `nook oci ...` always
//! is. Under any other name (a client may copy the runtime to a name of its own, or
//! resolve the `nook-runtime` link to `nook`), the command line is runc's when it
//! cannot be nook's, or when it names a container only the runtime knows:
//!
//! 1. a runc global flag nook's CLI does not have, before the subcommand: `--log`,
//!    `--log-format`, `--systemd-cgroup`, `--debug`, `--criu`, `--rootless` (`--root`
//!    is both: nook's image store, runc's state directory);
//! 2. a subcommand only the runtime has: `state`, `delete`, `features`, `spec`,
//!    `resume`, `update`, `list`, `events`, `checkpoint`, `restore`;
//! 3. `create`/`run`/`exec` with one of runc's own flags for them (`--bundle`/`-b`,
//!    `--pid-file`, `--console-socket`, `--process`/`-p` ...), before the first word
//!    that is not a flag or right after it (runc takes flags after the ID, as youki's
//!    contest writes them; in nook's form that word would be the container's command,
//!    and no program is called `--bundle`);
//! 4. `ps` with a word that is no flag's value (nook's `ps` takes none);
//! 5. `start`, `kill`, `pause` (the same shape in both): when their first word is the
//!    ID of a container in the runtime's state directory (`--root`, else the default
//!    one) and names no container of nook's own. Such a command line fails in nook's
//!    CLI anyway; one that names a nook container keeps its meaning.
//!
//! Everything else is nook's: a command that works in nook's CLI never changes meaning.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// runc's global flags that nook's CLI lacks, and whether each takes a value.
const RUNTIME_GLOBALS: [(&str, bool); 6] = [
    ("--log", true),
    ("--log-format", true),
    ("--systemd-cgroup", false),
    ("--debug", false),
    ("--criu", true),
    ("--rootless", true),
];

/// Subcommands only the runtime has.
const RUNTIME_ONLY: [&str; 10] = [
    "state",
    "delete",
    "features",
    "spec",
    "resume",
    "update",
    "list",
    "events",
    "checkpoint",
    "restore",
];

/// runc's flags of `create` and `run` that nook's `create` and `run` do not have.
const CREATE_FLAGS: [&str; 8] = [
    "--bundle",
    "-b",
    "--console-socket",
    "--pid-file",
    "--no-pivot",
    "--no-new-keyring",
    "--no-subreaper",
    "--keep",
];

/// runc's flags of `exec` that nook's `exec` does not have.
const EXEC_FLAGS: [&str; 12] = [
    "--process",
    "-p",
    "--console-socket",
    "--pid-file",
    "--cwd",
    "--cap",
    "-c",
    "--no-new-privs",
    "--process-label",
    "--apparmor",
    "--ignore-paused",
    "--cgroup",
];

/// nook's `ps` flags that take a value (the rest are switches).
const NOOK_PS_VALUES: [&str; 3] = ["--format", "-f", "--filter"];

/// What the classification needs to know about existing containers.
pub trait Containers {
    /// Whether the runtime's state directory (`root`, else the default) holds `id`.
    fn runtime_has(&self, root: Option<&Path>, id: &str) -> bool;
    /// Whether nook's own CLI knows a container by this name or ID (`store`: nook's
    /// `--root`).
    fn nook_has(&self, store: Option<&Path>, key: &str) -> bool;
}

/// Whether `args` (program name first) is runc's command line (see the module doc).
pub fn is_runtime_form(args: &[OsString], containers: &dyn Containers) -> bool {
    let mut i = 1;
    let mut root: Option<PathBuf> = None;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        if !arg.starts_with('-') {
            break;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, _)) => (n, true),
            None => (arg, false),
        };
        if RUNTIME_GLOBALS.iter().any(|(g, _)| *g == name) {
            return true;
        }
        if name == "--root" {
            if inline {
                root = arg.split_once('=').map(|(_, v)| PathBuf::from(v));
                i += 1;
            } else {
                root = args.get(i + 1).map(PathBuf::from);
                i += 2;
            }
            continue;
        }
        // nook's own global flags (--log-level, --help, --version) or a mistake: nook's
        // parser says which.
        return false;
    }
    let Some(sub) = args.get(i).and_then(|a| a.to_str()) else {
        return false;
    };
    if RUNTIME_ONLY.contains(&sub) {
        return true;
    }
    let rest: Vec<&OsStr> = args[i + 1..].iter().map(OsString::as_os_str).collect();
    match sub {
        "create" | "run" => has_runtime_flag(&rest, &CREATE_FLAGS),
        "exec" => has_runtime_flag(&rest, &EXEC_FLAGS),
        "ps" => first_word(&rest, &NOOK_PS_VALUES).is_some(),
        "start" | "kill" | "pause" => first_word(&rest, &["-s", "--signal"]).is_some_and(|id| {
            containers.runtime_has(root.as_deref(), id) && !containers.nook_has(root.as_deref(), id)
        }),
        _ => false,
    }
}

/// Whether `flags` holds `arg` (`--flag` or `--flag=value`).
fn is_one_of(arg: &OsStr, flags: &[&str]) -> bool {
    let Some(arg) = arg.to_str() else {
        return false;
    };
    let name = arg.split_once('=').map_or(arg, |(n, _)| n);
    flags.contains(&name)
}

/// A flag of `flags` before the first word that is not a flag, or right after it.
fn has_runtime_flag(rest: &[&OsStr], flags: &[&str]) -> bool {
    for (j, arg) in rest.iter().enumerate() {
        if *arg == "--" {
            return false;
        }
        if is_one_of(arg, flags) {
            return true;
        }
        if !arg.to_str().is_some_and(|a| a.starts_with('-')) {
            return rest.get(j + 1).is_some_and(|next| is_one_of(next, flags));
        }
    }
    false
}

/// The first word that is neither a flag nor the value of one of `valued` (flags of
/// the shape `--flag VALUE`).
fn first_word<'a>(rest: &[&'a OsStr], valued: &[&str]) -> Option<&'a str> {
    let mut j = 0;
    while let Some(arg) = rest.get(j) {
        let text = arg.to_str()?;
        if text == "--" {
            return rest.get(j + 1).and_then(|a| a.to_str());
        }
        if !text.starts_with('-') || text == "-" {
            return Some(text);
        }
        j += if valued.contains(&text) { 2 } else { 1 };
    }
    None
}

/// The real answers: the runtime's state directory, nook's container records.
pub struct OnDisk;

impl Containers for OnDisk {
    fn runtime_has(&self, root: Option<&Path>, id: &str) -> bool {
        if super::container::check_id(id).is_err() {
            return false;
        }
        let root = match root {
            Some(r) => r.to_path_buf(),
            None => {
                let uid = nix::unistd::Uid::current().as_raw();
                nook_rootless::state::runtime_dir_for(uid).0.join("oci")
            }
        };
        root.join(id).join(super::container::STATE_FILE).is_file()
    }

    fn nook_has(&self, store: Option<&Path>, key: &str) -> bool {
        crate::container::record::Places::open(store.map(Path::to_path_buf))
            .and_then(|places| places.find(key))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime knows "ctr1" (under any root); nook knows "web".
    struct Fake;

    impl Containers for Fake {
        fn runtime_has(&self, _root: Option<&Path>, id: &str) -> bool {
            id == "ctr1" || id == "both"
        }
        fn nook_has(&self, _store: Option<&Path>, key: &str) -> bool {
            key == "web" || key == "both"
        }
    }

    fn runtime(line: &str) -> bool {
        let args: Vec<OsString> = std::iter::once("nook")
            .chain(line.split_whitespace())
            .map(OsString::from)
            .collect();
        is_runtime_form(&args, &Fake)
    }

    #[test]
    fn runc_command_lines_are_the_runtime() {
        for line in [
            // conmon and containerd
            "--root /r --log /l --log-format json create --bundle /b --pid-file /p ctr1",
            "--systemd-cgroup create --bundle /b c",
            "--debug state c",
            "--log=/l start c",
            // podman without global flags
            "create --bundle /b --pid-file /p c",
            "start ctr1",
            "kill ctr1 10",
            "kill --all ctr1 KILL",
            "delete --force ctr1",
            "state ctr1",
            "exec --pid-file /p --process /f --detach ctr1",
            "pause ctr1",
            "resume ctr1",
            "ps --format json ctr1",
            "ps ctr1",
            "update --memory 1m ctr1",
            "features",
            "spec --rootless",
            // youki's contest: flags after the ID
            "--root /r create ctr1 --bundle /b",
            "--root=/r run c -b /b",
        ] {
            assert!(runtime(line), "{line}");
        }
    }

    #[test]
    fn nook_command_lines_stay_nook() {
        for line in [
            "run --rm alpine echo hi",
            "run -v /a:/b -d alpine sleep 1",
            "--root /store run alpine true",
            "create --name web alpine",
            "run alpine sh -c --bundle",
            "run alpine echo --bundle x",
            "run -- alpine --bundle",
            "start web",
            "start -a web",
            "kill web",
            "kill -s TERM web",
            "kill --all",
            "kill both",
            "start nosuch",
            "pause web",
            "ps",
            "ps -a --format json",
            "ps --filter status=running -q",
            "exec -it web sh",
            "exec web sh -c --process",
            "--log-level debug run alpine",
            "images",
            "--help",
            "",
        ] {
            assert!(!runtime(line), "{line}");
        }
    }
}
