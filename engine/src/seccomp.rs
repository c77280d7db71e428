//! Which seccomp profile a container of `nook run` gets, and how `nook exec` finds it
//! again.
//!
//! `--security-opt seccomp=unconfined` (none), `seccomp=PROFILE.json` (a file in
//! podman's format, rootless::seccomp::profile), else nook's default (podman's policy,
//! rootless::seccomp::default) fitted to the container's capabilities. `--privileged`
//! drops the default, not a file given with it (as podman). On a kernel without seccomp
//! the default is left out with a warning (podman leaves it out silently).
//!
//! What the container's first process got is written to its runtime directory at each
//! start (`seccomp.json`: unconfined, or the file's profile as converted), so that `nook
//! exec` applies the same, even if the file changed since. Without that record (the
//! default, a container started by an older nook, or `nook __exec-pid`) the container is
//! judged by its first process: no filter (`Seccomp: 0`) → none, else nook's default.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use crate::format_err;
use oci_spec::runtime::LinuxSeccomp;
use serde::{Deserialize, Serialize};

use nook_rootless::seccomp::{default, profile::Profile};

/// What `--security-opt seccomp=` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Default,
    Unconfined,
    File(PathBuf),
}

/// Whether the profile file at `path` reads and is one in podman's format: what the CLI
/// checks when a request is made, so a bad file fails before anything is created. Each
/// start loads it again (the file may change), fitted to the container's capabilities.
pub fn check_profile(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "--security-opt seccomp={}: cannot read the profile",
            path.display()
        )
    })?;
    Profile::parse(&text)
        .map_err(|why| format_err!("--security-opt seccomp={}: {why}", path.display()))?;
    Ok(())
}

/// The record kept in the container's runtime directory.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "profile", rename_all = "lowercase")]
pub enum Record {
    Default,
    Unconfined,
    File {
        path: PathBuf,
        seccomp: Box<LinuxSeccomp>,
    },
}

const RECORD: &str = "seccomp.json";

/// The profile for a container with bounding set `bounding` (`CAP_...` names), and the
/// record of it.
pub fn for_container(
    choice: &Choice,
    privileged: bool,
    bounding: &[String],
    notify: &dyn crate::Notify,
) -> Result<(Option<LinuxSeccomp>, Record)> {
    match choice {
        Choice::Unconfined => Ok((None, Record::Unconfined)),
        Choice::Default if privileged => Ok((None, Record::Unconfined)),
        Choice::Default if !nook_rootless::seccomp::kernel_has_seccomp() => {
            notify.warn(
                "this kernel has no seccomp: the container runs without the default profile \
                 (see `nook info`)",
            );
            Ok((None, Record::Unconfined))
        }
        Choice::Default => Ok((Some(default::for_capabilities(bounding)), Record::Default)),
        Choice::File(path) => {
            let seccomp = load_file(path, bounding)?;
            let record = Record::File {
                path: path.clone(),
                seccomp: Box::new(seccomp.clone()),
            };
            Ok((Some(seccomp), record))
        }
    }
}

/// A profile file in podman's format, fitted to `bounding`, and compiled once so that a
/// profile the kernel could not take is refused here, with the file named.
fn load_file(path: &Path, bounding: &[String]) -> Result<LinuxSeccomp> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "--security-opt seccomp={}: cannot read the profile",
            path.display()
        )
    })?;
    let seccomp = Profile::parse(&text)
        .map(|p| p.to_oci(bounding))
        .map_err(|why| format_err!("--security-opt seccomp={}: {why}", path.display()))?;
    nook_rootless::seccomp::Filter::compile(&seccomp)
        .map_err(|e| format_err!("--security-opt seccomp={}: {e}", path.display()))?;
    Ok(seccomp)
}

/// Writes the record into the container's runtime directory (private: the directory is
/// the user's, the file 0600) when `nook exec` needs it. The default is what exec
/// concludes from a first process that has a filter, so it is not written: a file
/// created, renamed and removed at every start is measurable on the start path (ext4
/// inode allocation). Unconfined is written: a nook that itself runs under a filter (in
/// another container) gives the first process that filter, `Seccomp: 2`, without nook's.
pub fn write_record(dir: &Path, record: &Record) -> Result<()> {
    if *record == Record::Default {
        return Ok(());
    }
    write_record_file(dir, record)
}

fn write_record_file(dir: &Path, record: &Record) -> Result<()> {
    let path = dir.join(RECORD);
    let tmp = dir.join(format!(".{RECORD}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(record)?)?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// The profile `nook exec` installs in a new process of the container whose first
/// process has `status` (/proc/PID/status) and, when known, runtime directory `dir`.
pub fn for_exec(
    dir: Option<&Path>,
    status: &str,
    bounding: &[String],
) -> Result<Option<LinuxSeccomp>> {
    let recorded = match dir.map(|d| d.join(RECORD)) {
        Some(path) => match std::fs::read(&path) {
            Ok(bytes) => Some(
                serde_json::from_slice::<Record>(&bytes)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        },
        None => None,
    };
    Ok(match recorded {
        Some(Record::Default) => Some(default::for_capabilities(bounding)),
        Some(Record::Unconfined) => None,
        Some(Record::File { seccomp, .. }) => Some(*seccomp),
        None => {
            let filtered = status
                .lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .is_some_and(|v| v.trim() != "0");
            filtered.then(|| default::for_capabilities(bounding))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Vec<String> {
        nook_rootless::capabilities::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn choices() {
        let (p, r) = for_container(&Choice::Default, true, &caps(), &crate::Quiet).unwrap();
        assert!(p.is_none());
        assert_eq!(r, Record::Unconfined);
    }

    #[test]
    fn a_bad_file_is_one_line_naming_the_file_and_field() {
        let dir = tempfile_dir();
        let path = dir.join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getuid"],
                "action":"SCMP_ACT_ERRNO","errnoRet":4294967295}]}"#,
        )
        .unwrap();
        let e = for_container(&Choice::File(path.clone()), false, &caps(), &crate::Quiet)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.json: syscalls[0].errnoRet 4294967295"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = for_container(
            &Choice::File(dir.join("missing.json")),
            false,
            &caps(),
            &crate::Quiet,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("cannot read the profile"));
        // The same, when the request is made.
        let e = check_profile(&path).unwrap_err().to_string();
        assert!(e.contains("p.json: syscalls[0].errnoRet 4294967295"), "{e}");
        assert!(check_profile(&dir.join("missing.json")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn exec_finds_the_record_or_judges_by_the_first_process() {
        let dir = tempfile_dir();
        let filtered = "Name:\tsh\nSeccomp:\t2\n";
        let open = "Name:\tsh\nSeccomp:\t0\n";
        assert!(for_exec(Some(&dir), filtered, &caps()).unwrap().is_some());
        assert!(for_exec(None, open, &caps()).unwrap().is_none());
        write_record(&dir, &Record::Unconfined).unwrap();
        assert!(for_exec(Some(&dir), filtered, &caps()).unwrap().is_none());
        let custom: LinuxSeccomp =
            serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        write_record(
            &dir,
            &Record::File {
                path: "/p.json".into(),
                seccomp: Box::new(custom.clone()),
            },
        )
        .unwrap();
        assert_eq!(for_exec(Some(&dir), open, &caps()).unwrap(), Some(custom));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "nook-seccomp-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
