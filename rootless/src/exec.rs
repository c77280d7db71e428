//! Finding and executing the container's command, with the container's PATH.
//!
//! The lookup is done here rather than by execvpe so that "not found" (127) and "found
//! but cannot be run" (126) can be told apart and reported to the supervisor.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// The PATH a container gets when its environment has none (podman's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolves `command` against the `PATH` of `env`, as a shell would.
pub(crate) fn find_command(command: &str, env: &[String]) -> Result<PathBuf, Errno> {
    if command.is_empty() {
        return Err(Errno::ENOENT);
    }
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(command);
        match nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK) {
            Ok(()) if !candidate.is_dir() => return Ok(candidate),
            Ok(()) => {}
            Err(Errno::EACCES) if candidate.exists() => denied = Some(candidate),
            Err(_) => {}
        }
    }
    denied.map_or(Err(Errno::ENOENT), |_| Err(Errno::EACCES))
}

/// execve; returns only on failure.
pub(crate) fn execute(program: &Path, args: &[String], env: &[String]) -> Errno {
    let to_c = |s: &[u8]| CString::new(s).map_err(|_| Errno::EINVAL);
    let build = || -> Result<(CString, Vec<CString>, Vec<CString>), Errno> {
        let prog = to_c(program.as_os_str().as_bytes())?;
        let argv = args
            .iter()
            .map(|a| to_c(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let envp = env
            .iter()
            .map(|e| to_c(OsStr::new(e).as_bytes()))
            .collect::<Result<_, _>>()?;
        Ok((prog, argv, envp))
    };
    match build() {
        Ok((prog, argv, envp)) => match nix::unistd::execve(&prog, &argv, &envp) {
            Err(e) => e,
            Ok(never) => match never {},
        },
        Err(e) => e,
    }
}

/// The exit status podman gives for a failed exec.
pub fn exec_failure_status(errno: i32) -> i32 {
    if errno == libc::ENOENT || errno == libc::ENOTDIR {
        127
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_in_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let found = find_command("sh", &env).unwrap();
        assert!(found.ends_with("sh"));
    }

    #[test]
    fn missing_command_is_enoent() {
        let env = vec!["PATH=/bin".to_string()];
        assert_eq!(find_command("no-such-command-x", &env), Err(Errno::ENOENT));
        assert_eq!(exec_failure_status(libc::ENOENT), 127);
        assert_eq!(exec_failure_status(libc::EACCES), 126);
    }

    #[test]
    fn directory_is_not_a_command() {
        let env = vec!["PATH=/".to_string()];
        assert_eq!(find_command("tmp", &env), Err(Errno::ENOENT));
    }
}
