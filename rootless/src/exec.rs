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
        // Checked now, so that a missing or non-executable command (a noexec volume)
        // fails `create` as it does in runc and crun, not the process after `start`.
        // Only the answers that settle it count: anything else (a seccomp profile that
        // refuses faccessat, say) is left for execve to tell.
        let program = PathBuf::from(command);
        return match nix::unistd::access(&program, nix::unistd::AccessFlags::X_OK) {
            Ok(()) if program.is_dir() => Err(Errno::EACCES),
            Err(e @ (Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES | Errno::ELOOP)) => Err(e),
            _ => Ok(program),
        };
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

/// The HOME runc and crun give a process whose environment has none: the home of its
/// uid in the container's /etc/passwd, else `/`. None when the environment has one.
/// Called inside the container (after pivot_root, or setns into its mount namespace);
/// the file is opened by the confined resolver, only a regular file is read, at most
/// 16 MiB, so an image's symlink or FIFO there can neither lead out nor block.
pub(crate) fn home_if_unset(process: &oci_spec::runtime::Process) -> Option<String> {
    let env = process.env().as_deref().unwrap_or_default();
    if env.iter().any(|v| v.starts_with("HOME=")) {
        return None;
    }
    let uid = process.user().uid();
    Some(home_in_passwd(&read_passwd(), uid).unwrap_or_else(|| "/".into()))
}

fn read_passwd() -> String {
    nook_at::Root::open_container(Path::new("/"))
        .and_then(|root| root.read_regular(Path::new("/etc/passwd"), 16 << 20))
        .unwrap_or_default()
}

/// The home directory of `uid` in passwd(5) text; the first entry for it wins.
fn home_in_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[2].parse() == Ok(uid) && !f[5].is_empty()).then(|| f[5].to_string())
    })
}

/// Whether executing `program` would run nook's own binary: `/proc/self/exe` (or a link
/// to it) given as the command, or as the interpreter of a script, up to the kernel's four
/// levels of interpreters. Run so, nook would be a dumpable process of the container, and
/// its /proc/PID/exe the host's nook binary (CVE-2019-5736). Where a file cannot be read,
/// the kernel cannot read an interpreter from it either.
pub(crate) fn is_own_binary(program: &Path) -> bool {
    let id = |p: &Path| {
        nix::sys::stat::stat(p)
            .ok()
            .map(|st| (st.st_dev, st.st_ino))
    };
    let Some(own) = id(Path::new("/proc/self/exe")) else {
        return false;
    };
    let mut path = program.to_path_buf();
    for _ in 0..5 {
        if id(&path) == Some(own) {
            return true;
        }
        match interpreter(&path) {
            Some(next) => path = next,
            None => return false,
        }
    }
    false
}

/// The interpreter a `#!` line names (binfmt_script: up to the first blank, within the
/// first 256 bytes).
fn interpreter(script: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let mut file = std::fs::File::open(script).ok()?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let name = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|w| !w.is_empty())?;
    Some(PathBuf::from(OsStr::from_bytes(name)))
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

/// Every signal's action back to SIG_DFL (the mask is left as it is): what the
/// container's command and nook's reaper start with, whatever nook inherited.
pub(crate) fn reset_dispositions() {
    for signo in 1..=libc::SIGRTMAX() {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code; this process is single-threaded.
        // Numbers the C library reserves for itself fail with EINVAL, which is ignored.
        unsafe { libc::signal(signo, libc::SIG_DFL) };
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
    fn own_binary_directly_or_as_interpreter() {
        assert!(is_own_binary(Path::new("/proc/self/exe")));
        assert!(!is_own_binary(Path::new("/bin/sh")));
        let dir = std::env::temp_dir().join(format!("nook-own-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s");
        std::fs::write(&script, "#! /proc/self/exe --flag\necho\n").unwrap();
        assert!(is_own_binary(&script));
        let chained = dir.join("t");
        std::fs::write(&chained, format!("#!{}\n", script.display())).unwrap();
        assert!(is_own_binary(&chained));
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(!is_own_binary(&chained));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directory_is_not_a_command() {
        let env = vec!["PATH=/".to_string()];
        assert_eq!(find_command("tmp", &env), Err(Errno::ENOENT));
    }
}

#[cfg(test)]
mod home_tests {
    use super::*;

    #[test]
    fn home_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n\
                      # a comment line\n\
                      app:x:1000:1000::/home/app:/bin/sh\n\
                      short:x:7:7\n\
                      nohome:x:8:8:::/bin/sh\n";
        assert_eq!(home_in_passwd(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(home_in_passwd(passwd, 1000).as_deref(), Some("/home/app"));
        assert_eq!(home_in_passwd(passwd, 7), None);
        assert_eq!(home_in_passwd(passwd, 8), None);
        assert_eq!(home_in_passwd(passwd, 4242), None);
    }
}
