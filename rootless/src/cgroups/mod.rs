//! Resource control through the cgroup v2 subtree delegated to the user.
//!
//! Data path of one container:
//!
//! ```text
//! prepare(spec)   plan: linux.resources → (controller, file, value) settings, checked
//!   ─► discover.rs  our cgroup, its parent, systemd? → Own | Sibling | Scope | none
//!   ─► systemd.rs   (Scope) a transient Delegate=yes scope holding the supervisor
//!   ─► sweep stale `nook-*` leaves left by killed supervisors
//!   ─► enable controllers top-down on the base (cgroup.subtree_control)
//!   ─► mkdir the leaf, open it (O_DIRECTORY, flock'd while nook lives), write limits
//! spawn.rs        clone3(CLONE_INTO_CGROUP, leaf fd): the container's first process is
//!                 born inside its limits (older kernels: clone, then cgroup.procs before
//!                 the child is released); the child unshares its cgroup namespace there
//!                 so /sys/fs/cgroup inside shows the container's own cgroup
//! after exit      memory.events oom_kill → the exit report; cgroup.kill; rmdir
//! ```
//!
//! A limit that cannot be enforced is an error ([`Error::Cgroup`], exit 125), never
//! silently dropped; without a limit asked for, a host without delegated cgroup v2 (this
//! one is hybrid) runs the container without a cgroup and says so once.
//!
//! One file per controller (memory, cpu, cpuset, pids, io) turns OCI resources into
//! settings and reads its statistics; freezer.rs and kill.rs act on a whole cgroup;
//! stats.rs reads usage for `nook stats`.

mod clone3;
pub mod cpu;
pub mod cpuset;
pub mod discover;
mod files;
pub mod freezer;
pub mod io;
pub mod kill;
pub mod memory;
pub mod pids;
pub mod stats;
pub mod systemd;

use std::fs::{self, File};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use oci_spec::runtime::{LinuxResources, Spec};

use crate::error::{Error, Result};
use discover::{Decision, Located};
pub(crate) use files::{wait_until, Setting};

pub(crate) use clone3::clone_into;
pub use freezer::set_frozen;
pub use kill::kill_all;
pub use stats::Stats;

/// Controllers nook enables for its containers when the base offers them.
const KNOWN_CONTROLLERS: [&str; 7] = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb", "misc"];

/// Name prefix of every cgroup nook creates (the sweep removes only these).
const PREFIX: &str = "nook-";

/// How long to wait for a killed container's cgroup to empty before removing it.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

/// `--cgroups`: whether nook may use cgroups at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enabled,
    Disabled,
}

/// Every setting `resources` asks for, in the order they are written (the typed fields
/// first, then `unified`, whose raw cgroup v2 keys win).
pub(crate) fn plan(resources: &LinuxResources, has_bfq: bool) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    if let Some(m) = resources.memory() {
        out.extend(memory::plan(m)?);
    }
    if let Some(c) = resources.cpu() {
        out.extend(cpu::plan(c)?);
        out.extend(cpuset::plan(c)?);
    }
    if let Some(p) = resources.pids() {
        out.extend(pids::plan(p));
    }
    if let Some(b) = resources.block_io() {
        out.extend(io::plan(b, has_bfq)?);
    }
    for h in resources.hugepage_limits().as_deref().unwrap_or_default() {
        out.push(Setting::new(
            "hugetlb",
            &format!("hugetlb.{}.max", h.page_size()),
            h.limit().to_string(),
            "a huge page limit",
        ));
    }
    if resources.network().is_some() {
        return Err(Error::Cgroup(
            "network classes and priorities (net_cls, net_prio) are cgroup v1 controllers: \
             leave them out"
                .into(),
        ));
    }
    if resources.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(Error::Cgroup(
            "RDMA limits are not supported by nook yet".into(),
        ));
    }
    // `devices` is not enforced: cgroup v2 does it with eBPF programs, which an
    // unprivileged user cannot attach; the container cannot mknod anyway (no device
    // node is reachable that was not bind-mounted in), as in every rootless runtime.
    let mut unified: Vec<(&String, &String)> = resources
        .unified()
        .as_ref()
        .map(|u| u.iter().collect())
        .unwrap_or_default();
    unified.sort();
    for (key, value) in unified {
        let controller = unified_controller(key)?;
        out.push(Setting {
            controller,
            file: key.clone(),
            value: value.clone(),
            what: "a cgroup v2 setting (linux.resources.unified)",
        });
    }
    Ok(out)
}

/// The controller a raw cgroup v2 key belongs to (`cpu.weight` → cpu).
pub fn unified_controller(key: &str) -> Result<&'static str> {
    let bad = || {
        Error::Cgroup(format!(
            "unsupported cgroup v2 setting {key:?}: expected CONTROLLER.FILE of one of {}",
            KNOWN_CONTROLLERS.join(", ")
        ))
    };
    if key.contains('/') || key.contains("..") {
        return Err(bad());
    }
    let (prefix, _) = key.split_once('.').ok_or_else(bad)?;
    KNOWN_CONTROLLERS
        .iter()
        .copied()
        .find(|c| *c == prefix)
        .ok_or_else(bad)
}

/// What [`prepare`] found: a cgroup for the container, or none and why.
pub enum Setup {
    Cgroup(Cgroup),
    /// No cgroup; `notice` says why when the user did not turn cgroups off.
    None {
        notice: Option<String>,
    },
}

/// Prepares the container's cgroup: checks `spec`'s resources, finds the delegated
/// subtree (asking systemd for a scope where needed), creates the container's leaf with
/// its limits. A limit that cannot be enforced is an error.
///
/// The caller must be single-threaded (a scope is requested from a forked helper).
pub fn prepare(spec: &Spec, mode: Mode) -> Result<Setup> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    let resources = resources.unwrap_or_default();
    let settings = plan(&resources, false)?;
    // What needs a cgroup: settings that would change something.
    let limits: Vec<Setting> = settings
        .iter()
        .filter(|s| !s.changes_nothing())
        .cloned()
        .collect();
    let refuse = |why: &str, fix: &str| -> Error {
        let what = describe(&limits);
        Error::Cgroup(format!("cannot enforce {what}: {why}; {fix}"))
    };
    if mode == Mode::Disabled {
        if limits.is_empty() {
            return Ok(Setup::None { notice: None });
        }
        return Err(refuse(
            "cgroups are disabled (--cgroups=disabled)",
            "drop the limit or --cgroups=disabled",
        ));
    }
    let unavailable = |why: String, fix: &str| -> Result<Setup> {
        if limits.is_empty() {
            Ok(Setup::None {
                notice: Some(format!(
                    "running without resource limits: {why} ({fix}; see `nook info`)"
                )),
            })
        } else {
            Err(refuse(&why, &format!("{fix}, or run without the limit")))
        }
    };
    let located = match discover::locate() {
        Ok(l) => l,
        Err(why) => return unavailable(why, discover::PURE_V2_FIX),
    };
    let name = leaf_name(spec);
    let delegate_fix = "ask for a delegated cgroup subtree (systemd: a user session with \
                        Delegate=yes; otherwise an administrator's chown of a cgroup)";
    let (base, supervisor_leaf) =
        match discover::decide(&discover::facts(&located), &located.own_path) {
            Decision::Own => (located.own_dir.clone(), true),
            Decision::Sibling => (parent_of(&located), false),
            Decision::Scope => {
                let unit = format!("{name}.scope");
                if let Err(why) = systemd::move_into_scope(&unit) {
                    return unavailable(why, delegate_fix);
                }
                match discover::locate() {
                    Ok(l) => (l.own_dir, true),
                    Err(why) => return unavailable(why, delegate_fix),
                }
            }
            Decision::Unavailable(why) => return unavailable(why, delegate_fix),
        };

    // Every controller a setting needs must be on offer before anything moves (one
    // that would change nothing is written where its controller is there, else left).
    let available = discover::controllers(&base);
    for s in &limits {
        if !available.iter().any(|c| c == s.controller) {
            let why = format!(
                "the {} controller is not delegated to {} (it offers: {})",
                s.controller,
                base.display(),
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(" ")
                }
            );
            return Err(Error::Cgroup(format!(
                "cannot enforce {}: {why}; ask for it to be delegated (systemd: \
                 Delegate=yes or Delegate={} in user@.service), or run without the limit",
                s.what, s.controller
            )));
        }
    }

    sweep(&base);
    let supervisor = if supervisor_leaf {
        Some(move_supervisor(&base)?)
    } else {
        None
    };
    enable_controllers(&base, &available, &settings)?;
    let leaf = base.join(&name);
    mkdir_leaf(&leaf)
        .map_err(|e| Error::Cgroup(format!("cannot create the cgroup {}: {e}", leaf.display())))?;
    let cgroup = Cgroup {
        dir: open_locked(&leaf)?,
        path: leaf,
        _supervisor: supervisor,
    };
    let has_bfq = files::exists(&cgroup.path, "io.bfq.weight");
    for s in plan(&resources, has_bfq)? {
        if s.changes_nothing() && !available.iter().any(|c| c == s.controller) {
            continue;
        }
        files::write(&cgroup.path, &s.file, &s.value).map_err(|e| {
            Error::Cgroup(format!(
                "cannot set {} ({} = {:?}): {}",
                s.what,
                s.file,
                s.value,
                source_of(&e)
            ))
        })?;
    }
    Ok(Setup::Cgroup(cgroup))
}

/// `update` (the OCI runtime's): writes what `resources` asks for into the running
/// container's cgroup `leaf`; what it does not mention stays as it is. A memory+swap
/// limit given alone is counted against the memory limit in force.
pub fn update(leaf: &Path, resources: &LinuxResources) -> Result<()> {
    let mut resources = resources.clone();
    if let Some(mut mem) = *resources.memory() {
        let swap_alone = mem.swap().is_some_and(|s| s > 0) && mem.limit().is_none_or(|l| l == 0);
        if swap_alone {
            if let Some(current) = files::read(leaf, "memory.max")
                .ok()
                .and_then(|t| files::parse_max(&t))
            {
                mem.set_limit(i64::try_from(current).ok());
                resources.set_memory(Some(mem));
            }
        }
    }
    let has_bfq = files::exists(leaf, "io.bfq.weight");
    let settings = plan(&resources, has_bfq)?;
    let controllers = files::read(leaf, "cgroup.controllers").unwrap_or_default();
    let enabled: Vec<&str> = controllers.split_whitespace().collect();
    for s in &settings {
        if enabled.contains(&s.controller) {
            files::write(leaf, &s.file, &s.value).map_err(|e| {
                Error::Cgroup(format!(
                    "cannot set {} ({} = {:?}): {}",
                    s.what,
                    s.file,
                    s.value,
                    source_of(&e)
                ))
            })?;
        } else if !s.changes_nothing() {
            return Err(Error::Cgroup(format!(
                "cannot change {}: the {} controller is not enabled for the container's \
                 cgroup {} (it has: {})",
                s.what,
                s.controller,
                leaf.display(),
                if enabled.is_empty() {
                    "none".to_string()
                } else {
                    enabled.join(" ")
                }
            )));
        }
    }
    Ok(())
}

/// `update` of a container that runs without a cgroup: accepted when nothing would
/// change (a client re-sending the defaults), else an error naming what cannot be.
pub fn update_without_cgroup(resources: &LinuxResources) -> Result<()> {
    let limits: Vec<Setting> = plan(resources, false)?
        .into_iter()
        .filter(|s| !s.changes_nothing())
        .collect();
    if limits.is_empty() {
        return Ok(());
    }
    Err(Error::Cgroup(format!(
        "cannot change {}: the container runs without a cgroup (none was delegated when it \
         was created; see `nook info`); only values that change nothing are accepted",
        describe(&limits)
    )))
}

/// "the memory limit (--memory) and the process limit (--pids-limit)".
fn describe(settings: &[Setting]) -> String {
    let mut whats: Vec<&str> = Vec::new();
    for s in settings {
        if !whats.contains(&s.what) {
            whats.push(s.what);
        }
    }
    match whats.as_slice() {
        [] => "resource limits".into(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn source_of(e: &Error) -> String {
    match e {
        Error::Sys { error, .. } => error.to_string(),
        other => other.to_string(),
    }
}

fn parent_of(at: &Located) -> PathBuf {
    at.own_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| at.mount_point.clone())
}

/// The leaf's name: the last component of `linux.cgroupsPath` (`nook-ID` from nook's own
/// CLI; `...:libpod:ID` or `/a/b/ID` from other callers), else `nook-PID`.
fn leaf_name(spec: &Spec) -> String {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .and_then(|p| {
            p.to_string_lossy()
                .rsplit(['/', ':'])
                .find(|c| !c.is_empty())
                .map(str::to_string)
        })
        .filter(|c| c != "." && c != ".." && c.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(n) if n.starts_with(PREFIX) => n,
        Some(n) => format!("{PREFIX}{n}"),
        None => format!("{PREFIX}{}", std::process::id()),
    }
}

/// A cgroup directory, 0755 whatever the umask: under umask 000 mkdir would let any
/// local user create cgroups inside ours.
fn mkdir_leaf(leaf: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o755).create(leaf)
}

/// The no-internal-processes rule: before controllers can be enabled on `base`, which
/// holds only the supervisor, the supervisor moves into a leaf of its own.
fn move_supervisor(base: &Path) -> Result<Locked> {
    let leaf = base.join(format!("{PREFIX}supervisor-{}", std::process::id()));
    match mkdir_leaf(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::Cgroup(format!(
                "cannot create the supervisor's cgroup {}: {e}",
                leaf.display()
            )))
        }
    }
    let lock = open_locked(&leaf)?;
    files::write(&leaf, "cgroup.procs", &std::process::id().to_string()).map_err(|e| {
        Error::Cgroup(format!(
            "cannot move nook into its own cgroup {}: {}",
            leaf.display(),
            source_of(&e)
        ))
    })?;
    Ok(lock)
}

/// Enables on `base`, for its children, every known controller it offers. One write
/// first; if the kernel refuses it, one controller at a time, so an optional one that
/// fails (cpuset on some delegations) does not block the others. A controller a setting
/// needs must succeed.
fn enable_controllers(base: &Path, available: &[String], settings: &[Setting]) -> Result<()> {
    let enabled = files::read(base, "cgroup.subtree_control").unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<&str> = KNOWN_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| available.iter().any(|a| a == c) && !enabled.contains(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if files::write(base, "cgroup.subtree_control", &all.join(" ")).is_ok() {
        return Ok(());
    }
    for c in missing {
        if let Err(e) = files::write(base, "cgroup.subtree_control", &format!("+{c}")) {
            if let Some(s) = settings.iter().find(|s| s.controller == c) {
                return Err(Error::Cgroup(format!(
                    "cannot enforce {}: enabling the {c} controller in {} failed: {}",
                    s.what,
                    base.join("cgroup.subtree_control").display(),
                    source_of(&e)
                )));
            }
        }
    }
    Ok(())
}

/// Opens a cgroup directory close-on-exec and takes an exclusive flock on it, held for
/// as long as the returned file is open: [`sweep`] leaves a locked cgroup alone.
fn open_locked(dir: &Path) -> Result<Locked> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| Error::sys(format!("opening {}", dir.display()), e))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| Error::sys(format!("locking {}", dir.display()), e))
}

/// An open cgroup directory with our flock on it.
type Locked = Flock<File>;

/// Removes `nook-*` cgroups under `base` that nobody holds and that hold no process:
/// left by a supervisor that was killed (SIGKILL leaves no chance to clean up). A live
/// nook holds a flock on its cgroups from creation to removal, so they are never taken.
fn sweep(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = e.path();
        let Ok(_lock) = open_locked(&path) else {
            continue;
        };
        if !kill::is_populated(&path) {
            let _ = fs::remove_dir(&path);
        }
    }
}

/// A container's cgroup: the leaf `base/nook-ID`, removed on drop after every process
/// in it has been killed.
pub struct Cgroup {
    path: PathBuf,
    dir: Locked,
    _supervisor: Option<Locked>,
}

impl Cgroup {
    /// The leaf's directory, e.g. /sys/fs/cgroup/user.slice/.../nook-ID.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open leaf for clone3's `cgroup` field (close-on-exec).
    pub(crate) fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// Moves `pid` in (for kernels without CLONE_INTO_CGROUP, and for the processes
    /// that serve the container, such as its FUSE server, so its limits cover them).
    pub fn add_process(&self, pid: i32) -> Result<()> {
        files::write(&self.path, "cgroup.procs", &pid.to_string())
    }

    /// Processes the OOM killer ended in this cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        files::read(&self.path, "memory.events")
            .map(|t| memory::oom_kills(&t))
            .unwrap_or(0)
    }

    /// Kills everything left in the cgroup (escaped double-forks included).
    pub fn kill_all(&self) -> Result<bool> {
        kill::kill_all(&self.path, EMPTY_TIMEOUT)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.kill_all();
        // The last exit and the kernel's bookkeeping race rmdir: retry briefly.
        wait_until(Duration::from_secs(2), || {
            matches!(fs::remove_dir(&self.path), Ok(())) || !self.path.exists()
        });
    }
}

/// Records where a running container's cgroup is, in its runtime directory (for `nook
/// stats`, `pause`, `unpause`).
pub fn record(container_dir: &Path, cgroup: &Cgroup) -> Result<()> {
    let file = container_dir.join("cgroup");
    crate::state::write_file(
        &file,
        format!("{}\n", cgroup.path.display()),
        crate::state::PRIVATE_FILE,
    )
    .map_err(|e| Error::sys(format!("writing {}", file.display()), e))
}

/// The cgroup a running container recorded with [`record`], if any.
pub fn recorded(container_dir: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(container_dir.join("cgroup")).ok()?;
    let path = PathBuf::from(text.trim_end());
    path.is_absolute().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, SpecBuilder,
    };
    use std::collections::HashMap;

    #[test]
    fn plan_orders_typed_then_unified() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(32i64 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(64i64).build().unwrap())
            .unified(HashMap::from([(
                "cpu.weight".to_string(),
                "50".to_string(),
            )]))
            .build()
            .unwrap();
        let p = plan(&r, false).unwrap();
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|s| (s.file.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("memory.max", "33554432"),
                ("pids.max", "64"),
                ("cpu.weight", "50")
            ]
        );
        assert_eq!(
            describe(&p[..2]),
            "the memory limit (--memory) and the process limit (--pids-limit)"
        );
    }

    #[test]
    fn defaults_change_nothing() {
        let r = LinuxResourcesBuilder::default()
            .cpu(
                oci_spec::runtime::LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .build()
                    .unwrap(),
            )
            .memory(LinuxMemoryBuilder::default().limit(-1i64).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(-1i64).build().unwrap())
            .build()
            .unwrap();
        let p = plan(&r, false).unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().all(Setting::changes_nothing), "{p:?}");
        let r = LinuxResourcesBuilder::default()
            .cpu(
                oci_spec::runtime::LinuxCpuBuilder::default()
                    .shares(512u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(!plan(&r, false).unwrap()[0].changes_nothing());
    }

    #[test]
    fn unified_keys_are_checked() {
        assert_eq!(unified_controller("memory.high").unwrap(), "memory");
        for bad in ["cgroup.procs", "../x.max", "nodot", "foo.bar"] {
            assert!(unified_controller(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn leaf_names() {
        let spec = |p: Option<&str>| {
            let mut l = LinuxBuilder::default();
            if let Some(p) = p {
                l = l.cgroups_path(PathBuf::from(p));
            }
            SpecBuilder::default()
                .linux(l.build().unwrap())
                .build()
                .unwrap()
        };
        assert_eq!(leaf_name(&spec(Some("nook-abc"))), "nook-abc");
        assert_eq!(leaf_name(&spec(Some("user.slice:libpod:abc"))), "nook-abc");
        assert_eq!(leaf_name(&spec(Some("/machine/abc/"))), "nook-abc");
        assert_eq!(
            leaf_name(&spec(None)),
            format!("nook-{}", std::process::id())
        );
        assert_eq!(
            leaf_name(&spec(Some(".."))),
            format!("nook-{}", std::process::id())
        );
    }
}
