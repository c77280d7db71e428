//! A bundle's `config.json` read and checked before anything of the container exists.
//!
//! `nook oci create` is handed configurations written by someone else (podman, a shim, a
//! user's script, an attacker's bundle). What is wrong in one must be refused here, with
//! the field named, not discovered after the container's process has parked and its
//! creator has exited, when nobody is left to read a message: a wrong JSON type names
//! its path (`process.args[2]`), a hook must be an absolute path (runtime-spec: no PATH
//! lookup on the host), and the command line must fit what execve(2) accepts.
//!
//! [`check_spec`] is also what the `oci_config` fuzz target drives (with the seccomp
//! compiler and the spawn plan), so everything here is pure: no files are read.

use oci_spec::runtime::{Hook, PosixRlimitType, Process, Spec};

use crate::error::{Error, Result};

/// Parses `config.json`. A value of the wrong type names the field's JSON path, e.g.
/// `process.args[2]: invalid type: integer `3`, expected a string at line 1 column 60`.
pub fn parse_config(bytes: &[u8]) -> Result<Spec> {
    parse(bytes, "")
}

/// Parses a runtime-spec `process` (the file of `nook oci exec --process`), with the
/// same naming of the field that is wrong.
pub fn parse_process(bytes: &[u8]) -> Result<Process> {
    parse(bytes, "process")
}

/// Parses a runtime-spec `linux.resources` (the file of `nook oci update --resources`),
/// naming the field that is wrong.
pub fn parse_resources(bytes: &[u8]) -> Result<oci_spec::runtime::LinuxResources> {
    parse(bytes, "linux.resources")
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], root: &str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Error::Spec(match (root, path.as_str()) {
            ("", "." | "") => inner.to_string(),
            (_, "." | "") => format!("{root}: {inner}"),
            ("", _) => format!("{path}: {inner}"),
            _ => format!("{root}.{path}: {inner}"),
        })
    })?;
    de.end().map_err(|e| Error::Spec(e.to_string()))?;
    Ok(value)
}

/// Every check on a parsed spec that needs nothing but the spec (and this process's own
/// stack limit, where the spec sets none): `ociVersion`, hook paths, the command line's
/// size against the kernel's limit.
pub fn check_spec(spec: &Spec) -> Result<()> {
    check_version(spec.version())?;
    check_hooks(spec)?;
    match spec.process() {
        Some(process) => check_process(process),
        None => Ok(()),
    }
}

/// The checks of a `process` on its own (also `nook oci exec --process FILE`): its
/// command line against the stack limit it will be executed with.
pub fn check_process(process: &Process) -> Result<()> {
    check_exec_size(process, stack_limit(process))
}

/// `ociVersion` must be a 1.x semantic version (runtime-spec "Valid values").
fn check_version(version: &str) -> Result<()> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric || parts[0] != "1" {
        return Err(Error::Spec(format!(
            "ociVersion {version:?}: nook runs runtime-spec 1.x configurations (e.g. \"1.0.2\")"
        )));
    }
    Ok(())
}

/// runtime-spec: a hook's `path` is absolute. A relative one would be looked up in the
/// runtime's own PATH, on the host, which is not what any bundle author can rely on.
fn check_hooks(spec: &Spec) -> Result<()> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    #[allow(deprecated)]
    let stages: [(&str, &Option<Vec<Hook>>); 6] = [
        ("prestart", hooks.prestart()),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ];
    for (stage, list) in stages {
        for (i, hook) in list.as_deref().unwrap_or_default().iter().enumerate() {
            if !hook.path().is_absolute() {
                return Err(Error::Spec(format!(
                    "hooks.{stage}[{i}].path {:?} is not an absolute path: the runtime spec \
                     requires one (no PATH lookup): give the full path of the program",
                    hook.path()
                )));
            }
        }
    }
    Ok(())
}

/// The soft RLIMIT_STACK the command will be executed with: the spec's, else ours (the
/// container inherits it).
fn stack_limit(process: &Process) -> u64 {
    let from_spec = process
        .rlimits()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.typ() == PosixRlimitType::RlimitStack)
        .map(|r| r.soft());
    from_spec.unwrap_or_else(|| {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_STACK)
            .map_or(8 << 20, |(soft, _)| soft)
    })
}

/// The most bytes of argument and environment strings (with their pointers) that
/// execve(2) accepts with this soft stack limit (fs/exec.c, bprm_stack_limits): a quarter
/// of the stack limit, at most three quarters of _STK_LIM (8 MiB), at least ARG_MAX.
pub fn exec_limit(stack_soft: u64) -> u64 {
    const STK_LIM: u64 = 8 << 20;
    const ARG_MAX: u64 = 128 << 10;
    (STK_LIM / 4 * 3).min(stack_soft / 4).max(ARG_MAX)
}

/// One argument or environment string may not be longer than 32 pages (MAX_ARG_STRLEN),
/// terminating NUL included.
fn max_string() -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64);
    32 * page
}

/// Refuses a command line the kernel would refuse with E2BIG (or one it cannot even
/// represent: a NUL byte), naming the field, since after `start` such a failure has no
/// one to report to.
pub fn check_exec_size(process: &Process, stack_soft: u64) -> Result<()> {
    let args = process.args().as_deref().unwrap_or_default();
    let env = process.env().as_deref().unwrap_or_default();
    let max_string = max_string();
    let mut totals = [0u64; 2];
    for (n, (field, list)) in [("process.args", args), ("process.env", env)]
        .into_iter()
        .enumerate()
    {
        for (i, s) in list.iter().enumerate() {
            if s.as_bytes().contains(&0) {
                return Err(Error::Spec(format!(
                    "{field}[{i}] contains a NUL byte, which no command line can hold"
                )));
            }
            let len = s.len() as u64 + 1;
            if len > max_string {
                return Err(Error::Spec(format!(
                    "{field}[{i}] is {} bytes long: the kernel accepts at most {} bytes for \
                     one argument or environment entry",
                    len - 1,
                    max_string - 1
                )));
            }
            totals[n] += len;
        }
    }
    // The program's path is copied too: at most the longest PATH entry + the name.
    let name = args.first().map_or(0, |a| a.len() as u64);
    let path_dir = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::exec::DEFAULT_PATH)
        .split(':')
        .map(|d| d.len() as u64 + 1)
        .max()
        .unwrap_or(0);
    let pointers = (args.len().max(1) as u64 + env.len() as u64 + 1) * 8;
    let needed = totals[0] + totals[1] + name + path_dir + 1 + pointers;
    let limit = exec_limit(stack_soft);
    if needed > limit {
        let (field, count) = if totals[1] >= totals[0] {
            ("process.env", env.len())
        } else {
            ("process.args", args.len())
        };
        return Err(Error::Spec(format!(
            "{field} is too large: {count} entries, and {} for the arguments and environment \
             together; the kernel accepts at most {} (a quarter of the stack limit {}, at \
             most 6 MiB): pass fewer or shorter ones, e.g. through a file",
            size(needed),
            size(limit),
            if stack_soft == u64::MAX {
                "unlimited".to_string()
            } else {
                size(stack_soft)
            },
        )));
    }
    Ok(())
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<Spec> {
        parse_config(json.as_bytes())
    }

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"cwd":"/","args":["sh"],"env":["PATH=/bin"],"user":{"uid":0,"gid":0}}}"#;

    #[test]
    fn a_wrong_type_names_its_field() {
        let err = spec(&MINIMAL.replace(r#"["sh"]"#, r#"["sh","x",3]"#))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("process.args[2]: invalid type: integer `3`, expected a string"),
            "{err}"
        );
        let err = spec(&MINIMAL.replace(r#""uid":0"#, r#""uid":"root""#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("process.user.uid: invalid type"), "{err}");
        assert!(spec("{").is_err());
        assert!(spec(&format!("{MINIMAL} x")).is_err());
        check_spec(&spec(MINIMAL).unwrap()).unwrap();
    }

    #[test]
    fn hooks_must_be_absolute() {
        let json = MINIMAL.replacen(
            '{',
            r#"{"hooks":{"poststart":[{"path":"/bin/true"}],"prestart":[{"path":"/bin/true"},{"path":"true"}]},"#,
            1,
        );
        let err = check_spec(&spec(&json).unwrap()).unwrap_err().to_string();
        assert!(err.contains("hooks.prestart[1].path \"true\""), "{err}");
    }

    #[test]
    fn versions() {
        for ok in ["1.0.0", "1.2.1", "1.0.2-dev", "1.1.0+x"] {
            check_version(ok).unwrap();
        }
        for bad in ["", "1", "1.0", "2.0.0", "0.9.0", "a.b.c", "1..0"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_kernel_limit() {
        assert_eq!(exec_limit(8 << 20), 2 << 20);
        assert_eq!(exec_limit(u64::MAX), 6 << 20);
        assert_eq!(exec_limit(64 << 10), 128 << 10);
    }

    #[test]
    fn oversized_command_lines_are_refused() {
        let mut s = spec(MINIMAL).unwrap();
        let mut p = s.process().clone().unwrap();
        let env: Vec<String> = (0..200_000).map(|i| format!("V{i}=x")).collect();
        p.set_env(Some(env));
        let err = check_exec_size(&p, 8 << 20).unwrap_err().to_string();
        assert!(
            err.contains("process.env is too large: 200000 entries"),
            "{err}"
        );
        assert!(err.contains("2.0 MiB"), "{err}");
        // The same fits under an unlimited stack (6 MiB).
        check_exec_size(&p, u64::MAX).unwrap();

        p.set_env(Some(vec!["PATH=/bin".into()]));
        let mut args = vec!["/bin/true".to_string()];
        args.extend(std::iter::repeat_n("a".repeat(1024), 5000));
        p.set_args(Some(args));
        let err = check_exec_size(&p, 8 << 20).unwrap_err().to_string();
        assert!(
            err.contains("process.args is too large: 5001 entries"),
            "{err}"
        );

        p.set_args(Some(vec!["sh".into(), "a".repeat(200_000)]));
        let err = check_exec_size(&p, u64::MAX).unwrap_err().to_string();
        assert!(
            err.contains("process.args[1] is 200000 bytes long"),
            "{err}"
        );

        p.set_args(Some(vec!["sh".into(), "a\0b".into()]));
        let err = check_exec_size(&p, 8 << 20).unwrap_err().to_string();
        assert!(err.contains("process.args[1] contains a NUL byte"), "{err}");
        s.set_process(Some(p));
    }

    /// A command line right under the limit is executed by the kernel (the estimate
    /// is not stricter than the kernel by much, nor looser).
    #[test]
    fn the_estimate_matches_execve() {
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_STACK).unwrap();
        let limit = exec_limit(soft) as usize;
        let mut p = spec(MINIMAL).unwrap().process().clone().unwrap();
        p.set_env(Some(vec!["PATH=/bin:/usr/bin".into()]));
        // 1000-byte arguments up to just below the limit.
        let n = limit / 1009 - 2;
        let mut args = vec!["true".to_string()];
        args.extend(std::iter::repeat_n("a".repeat(1000), n));
        p.set_args(Some(args.clone()));
        check_exec_size(&p, soft).unwrap();
        let ok = std::process::Command::new("/bin/true")
            .args(&args[1..])
            .env_clear()
            .env("PATH", "/bin:/usr/bin")
            .status()
            .unwrap();
        assert!(ok.success());
        // Twice as much is refused by both.
        args.extend(std::iter::repeat_n("a".repeat(1000), n));
        p.set_args(Some(args.clone()));
        assert!(check_exec_size(&p, soft).is_err());
        let e = std::process::Command::new("/bin/true")
            .args(&args[1..])
            .env_clear()
            .status()
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::E2BIG));
    }
}
