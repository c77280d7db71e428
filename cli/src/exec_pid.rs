//! `nook __exec-pid PID CMD`: runs CMD in the running container whose first process has
//! host pid PID, through `nook_rootless::join` (the library behind `nook exec`).
//!
//! Without a stored spec to read, the process is modelled on the container's first
//! process as the host sees it: its environment (/proc/PID/environ), its user (translated
//! through the container's ID maps), its capability sets and no_new_privs
//! (/proc/PID/status); -e, -w and --user then apply as for `nook run`. Its seccomp
//! profile is the one recorded in the container's runtime directory when `nook exec`
//! knows it, else judged from the first process (seccomp.rs).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nook_rootless::fds::PassedFds;
use nook_rootless::join::{
    ensure_running, exec_in, namespace_holder, ExecIo, ExecOptions, ExecOutcome, JoinTarget,
};
use nook_rootless::StdinMode;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, Process, ProcessBuilder, UserBuilder,
};

use crate::flags::ExecPidArgs;
use nook_engine::users::{self, Identity};

/// `runtime_dir`: the container's runtime directory, where its seccomp record is.
pub fn run(mut args: ExecPidArgs, runtime_dir: Option<&Path>) -> Result<i32> {
    let passed = PassedFds::preserve(args.preserve_fds.unwrap_or(0));
    if let Some(fd) = passed.first_missing() {
        bail!(
            "--preserve-fds {}: descriptor {fd} is not open (open 3..{} before calling nook)",
            passed.count,
            2 + passed.count
        );
    }
    // Under --init the first process is nook's reaper, whose /proc entries are closed to
    // everyone: the command's stand for the container.
    args.pid = namespace_holder(args.pid);
    let pid = args.pid;
    // Reading its /proc files fails once the container is gone: say that, not EACCES.
    let gone = |e: anyhow::Error| match ensure_running(pid) {
        Err(gone) => anyhow::Error::new(gone),
        Ok(()) => e,
    };
    let process = build_process(&args).map_err(gone)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))
        .map_err(gone)?;
    let bounding: Vec<String> = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().as_ref())
        .into_iter()
        .flatten()
        .map(|c| format!("CAP_{c}"))
        .collect();
    let seccomp = nook_engine::seccomp::for_exec(runtime_dir, &status, &bounding)?;
    let target = JoinTarget {
        pid,
        cgroup: container_cgroup(pid),
    };
    let opts = ExecOptions {
        io: match (&args.console_socket, args.tty) {
            (Some(path), _) => ExecIo::ConsoleSocket(path.clone()),
            (None, true) => ExecIo::Tty,
            (None, false) => ExecIo::Inherit,
        },
        detach: args.detach,
        stdin: if args.interactive {
            StdinMode::Inherit
        } else {
            StdinMode::Null
        },
        seccomp: seccomp.as_ref(),
        passed_fds: passed,
    };
    let outcome = exec_in(&target, &process, &opts)
        .with_context(|| format!("exec in the container of process {pid}"))?;
    Ok(match outcome {
        ExecOutcome::Exited(status) => status.code(),
        ExecOutcome::Detached(child) => {
            println!("{child}");
            0
        }
    })
}

fn build_process(args: &ExecPidArgs) -> Result<Process> {
    let pid = args.pid;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let not_running = || format!("reading /proc/{pid} (is the container running?)");
    let status = std::fs::read_to_string(proc_dir.join("status")).with_context(not_running)?;
    let root = proc_dir.join("root");
    let identity = match &args.user {
        Some(spec) => users::resolve(spec, &root)?,
        None => {
            let uid_map = std::fs::read_to_string(proc_dir.join("uid_map"))?;
            let gid_map = std::fs::read_to_string(proc_dir.join("gid_map"))?;
            let inside = |map: &str, field: &str| {
                status_id(&status, field).and_then(|host| to_container_id(map, host))
            };
            let uid = inside(&uid_map, "Uid:").unwrap_or(0);
            Identity::for_uid(uid, inside(&gid_map, "Gid:"), &root)
        }
    };
    let mut env = container_env(&proc_dir)?;
    if args.user.is_some() {
        set_env(&mut env, &format!("HOME={}", identity.home));
    }
    if args.tty && !env.iter().any(|v| v.starts_with("TERM=")) {
        set_env(&mut env, "TERM=xterm");
    }
    for assignment in &args.env {
        match assignment.split_once('=') {
            Some(_) => set_env(&mut env, assignment),
            None => {
                if let Ok(value) = std::env::var(assignment) {
                    set_env(&mut env, &format!("{assignment}={value}"));
                }
            }
        }
    }
    let set = |field: &str| -> Result<HashSet<Capability>> {
        let mask = status_hex(&status, field)
            .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
        Ok(capabilities_of_mask(mask))
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(set("CapBnd:")?)
        .effective(set("CapEff:")?)
        .permitted(set("CapPrm:")?)
        .inheritable(set("CapInh:")?)
        .ambient(set("CapAmb:").unwrap_or_default())
        .build()?;
    let no_new_privs = status_field(&status, "NoNewPrivs:") == Some("1");
    let cwd = args.workdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    if !cwd.is_absolute() {
        bail!("--workdir {}: must be an absolute path", cwd.display());
    }
    Ok(ProcessBuilder::default()
        .terminal(args.tty)
        .user(
            UserBuilder::default()
                .uid(identity.uid)
                .gid(identity.gid)
                .build()?,
        )
        .args(args.command.clone())
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(no_new_privs)
        .build()?)
}

/// The container's cgroup: its first process's cgroup2 path, when that is a leaf nook
/// made for it (`nook-*`; a container without one shares its user's cgroup, which the
/// exec'd process then keeps).
fn container_cgroup(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let leaf = Path::new(path).file_name()?.to_str()?;
    if !leaf.starts_with("nook-") || path.contains("/..") {
        return None;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = cgroup2_mount(&mountinfo)?;
    Some(Path::new(mount).join(path.trim_start_matches('/')))
}

/// Where the cgroup2 hierarchy is mounted, from /proc/self/mountinfo.
fn cgroup2_mount(mountinfo: &str) -> Option<&str> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        (fs.split_whitespace().next() == Some("cgroup2"))
            .then(|| mount.split_whitespace().nth(4))
            .flatten()
    })
}

/// The container's environment as its first process started with it.
fn container_env(proc_dir: &Path) -> Result<Vec<String>> {
    let raw = std::fs::read(proc_dir.join("environ"))
        .with_context(|| format!("reading {}/environ", proc_dir.display()))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| v.contains('='))
        .collect())
}

fn set_env(env: &mut Vec<String>, assignment: &str) {
    let key = assignment.split_once('=').map_or(assignment, |(k, _)| k);
    env.retain(|v| v.split_once('=').map(|(k, _)| k) != Some(key));
    env.push(assignment.to_string());
}

fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(str::trim)
}

/// The real id of a `Uid:`/`Gid:` line (the first of real, effective, saved, fs).
fn status_id(status: &str, field: &str) -> Option<u32> {
    status_field(status, field)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn status_hex(status: &str, field: &str) -> Option<u64> {
    u64::from_str_radix(status_field(status, field)?, 16).ok()
}

/// The container's id for host id `host`, from a uid_map/gid_map as read from the host
/// (`inside outside count` lines).
fn to_container_id(map: &str, host: u32) -> Option<u32> {
    map.lines().find_map(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [inside, outside, count] = f[..] else {
            return None;
        };
        let host = u64::from(host);
        (outside <= host && host < outside + count)
            .then(|| u32::try_from(inside + host - outside).ok())
            .flatten()
    })
}

/// The capabilities whose bits are set in `mask` (a /proc/PID/status Cap* value), as
/// the spec names them.
fn capabilities_of_mask(mask: u64) -> HashSet<Capability> {
    caps::all()
        .into_iter()
        .filter(|c| c.index() < 64 && mask & (1u64 << c.index()) != 0)
        .filter_map(|c| c.to_string().trim_start_matches("CAP_").parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n\
                          CapInh:\t0000000000000000\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t1\n";

    #[test]
    fn status_fields() {
        assert_eq!(status_id(STATUS, "Uid:"), Some(1000));
        assert_eq!(status_id(STATUS, "Gid:"), Some(100));
        assert_eq!(status_hex(STATUS, "CapBnd:"), Some(0xa80425fb));
        assert_eq!(status_field(STATUS, "NoNewPrivs:"), Some("1"));
        assert_eq!(status_hex(STATUS, "CapAmb:"), None);
    }

    #[test]
    fn podmans_default_mask_is_its_eleven_capabilities() {
        let set = capabilities_of_mask(0x800405fb);
        let names: HashSet<String> = set.iter().map(|c| format!("CAP_{c}")).collect();
        let expected: HashSet<String> = nook_rootless::capabilities::DEFAULT_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, expected);
        assert!(capabilities_of_mask(0).is_empty());
    }

    #[test]
    fn host_ids_translate_through_the_map() {
        let map = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(to_container_id(map, 1000), Some(0));
        assert_eq!(to_container_id(map, 100000), Some(1));
        assert_eq!(to_container_id(map, 165535), Some(65536));
        assert_eq!(to_container_id(map, 165536), None);
        assert_eq!(to_container_id(map, 5), None);
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let info = "25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                    26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(info), Some("/sys/fs/cgroup/unified"));
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn env_assignments_replace_by_key() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        set_env(&mut env, "A=2");
        set_env(&mut env, "B=x=y");
        assert_eq!(env, ["PATH=/bin", "A=2", "B=x=y"]);
    }
}
