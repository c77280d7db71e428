//! Where this process's cgroup v2 lives and which part of it the user may manage.
//!
//! A subtree is *delegated* to the user when the user may create cgroups in it and
//! write its `cgroup.procs` and `cgroup.subtree_control` (what systemd's Delegate=yes,
//! or an administrator's chown, grants). The kernel adds one rule that shapes every
//! choice here: a cgroup that holds processes cannot enable controllers for its
//! children (the no-internal-processes rule). So, given our own cgroup C and its
//! parent P:
//!
//! - C is delegated and holds only us: C becomes the base; the supervisor moves into a
//!   leaf of its own (`nook-supervisor-PID`) and the container gets another.
//! - C is delegated but shared (the user's shell is in it) and P is delegated too: the
//!   container's leaf goes beside C, under P (which holds no processes).
//! - Otherwise, with a systemd user manager on the session bus: ask it for a transient
//!   scope with Delegate=yes holding just us, then the first case applies. A slice of
//!   systemd's (`*.slice`) is left to systemd even when it is writable.
//! - Otherwise there is no cgroup for the container: it runs without limits.
//!
//! The decision is a pure function of a few facts ([`Facts`], [`decide`]) so it can be
//! tested without a cgroup hierarchy.

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use crate::probe::{self, CgroupLayout, MountInfo};

/// The fix for hosts whose cgroups cannot give limits at all.
pub const PURE_V2_FIX: &str = "resource limits need a pure cgroup v2 host (an administrator \
                               can boot with systemd.unified_cgroup_hierarchy=1)";

/// This process's place in the cgroup v2 hierarchy.
#[derive(Debug, Clone)]
pub struct Located {
    /// Where cgroup2 is mounted, e.g. /sys/fs/cgroup.
    pub mount_point: PathBuf,
    /// Our cgroup, as /proc/self/cgroup names it (e.g. /user.slice/.../session-2.scope).
    pub own_path: String,
    /// Our cgroup's directory under the mount.
    pub own_dir: PathBuf,
}

/// Finds our cgroup v2, or says why there is no usable one (hybrid, v1, none).
pub fn locate() -> Result<Located, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mounts: Vec<MountInfo> = mountinfo
        .lines()
        .filter_map(probe::parse_mountinfo_line)
        .collect();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    locate_in(&probe::classify_cgroups(&mounts), &own)
}

/// [`locate`] on parsed inputs.
pub fn locate_in(layout: &CgroupLayout, proc_self_cgroup: &str) -> Result<Located, String> {
    let mount = match layout {
        CgroupLayout::V2 { mount } => mount,
        CgroupLayout::Hybrid { mount, .. } => {
            return Err(format!(
                "this host's cgroups are hybrid (v1 controllers; the cgroup2 hierarchy at {} \
                 offers none to delegate)",
                mount.mount_point
            ))
        }
        CgroupLayout::V1 { .. } => {
            return Err("this host has only cgroup v1, which cannot be delegated safely".into())
        }
        CgroupLayout::None => return Err("no cgroup filesystem is mounted".into()),
    };
    let own_path = probe::parse_proc_cgroup_v2(proc_self_cgroup)
        .ok_or("/proc/self/cgroup has no cgroup v2 (0::) line")?;
    let own_dir = probe::cgroup_dir(mount, &own_path).ok_or_else(|| {
        format!(
            "this process's cgroup {own_path} is outside the cgroup2 tree mounted at {}",
            mount.mount_point
        )
    })?;
    Ok(Located {
        mount_point: PathBuf::from(&mount.mount_point),
        own_path,
        own_dir,
    })
}

/// What [`decide`] looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// We may mkdir in our cgroup and write its cgroup.procs and cgroup.subtree_control.
    pub own_writable: bool,
    /// Our cgroup holds no process but this one.
    pub own_alone: bool,
    /// The same for the parent (false when our cgroup is the top of the mount).
    pub parent_writable: bool,
    /// The parent is a systemd slice (`*.slice`): systemd's to manage.
    pub parent_is_slice: bool,
    /// A systemd user manager looks reachable on the session bus.
    pub systemd: bool,
}

/// Where the container's cgroup goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Under our own cgroup; the supervisor moves into a leaf first.
    Own,
    /// Under our cgroup's parent, beside our cgroup.
    Sibling,
    /// In a transient systemd scope made for this container (then `Own`).
    Scope,
    /// Nowhere: why.
    Unavailable(String),
}

pub fn decide(f: &Facts, own_path: &str) -> Decision {
    if f.own_writable && f.own_alone {
        return Decision::Own;
    }
    if f.own_writable && f.parent_writable && !(f.parent_is_slice && f.systemd) {
        return Decision::Sibling;
    }
    if f.systemd {
        return Decision::Scope;
    }
    Decision::Unavailable(if f.own_writable {
        format!(
            "cgroup {own_path} is delegated to you but holds other processes, and its parent \
             is not delegated, so no controller can be enabled below it (no-internal-processes \
             rule)"
        )
    } else {
        format!(
            "cgroup {own_path} is not delegated to you and no systemd user manager is reachable"
        )
    })
}

/// Gathers the facts about our cgroup from the filesystem.
pub fn facts(at: &Located) -> Facts {
    let me = std::process::id();
    let own_alone = fs::read_to_string(at.own_dir.join("cgroup.procs"))
        .map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .all(|p| p == me)
        })
        .unwrap_or(false);
    let parent = (at.own_dir != at.mount_point)
        .then(|| at.own_dir.parent())
        .flatten();
    Facts {
        own_writable: delegated(&at.own_dir),
        own_alone,
        parent_writable: parent.is_some_and(delegated),
        parent_is_slice: parent
            .and_then(|p| p.file_name())
            .is_some_and(|n| n.to_string_lossy().ends_with(".slice")),
        systemd: super::systemd::reachable(),
    }
}

/// Whether the user may create cgroups in `dir` and move processes and enable
/// controllers there.
pub fn delegated(dir: &Path) -> bool {
    let w = |p: &Path| access(p, AccessFlags::W_OK).is_ok();
    w(dir) && w(&dir.join("cgroup.procs")) && w(&dir.join("cgroup.subtree_control"))
}

/// The top of the delegated subtree that holds `dir`: the highest ancestor (up to the
/// mount) that is still delegated. `None` when `dir` itself is not.
pub fn delegation_root(dir: &Path, mount_point: &Path) -> Option<PathBuf> {
    if !delegated(dir) {
        return None;
    }
    let mut top = dir.to_path_buf();
    while top != mount_point {
        match top.parent() {
            Some(p) if p.starts_with(mount_point) && delegated(p) => top = p.to_path_buf(),
            _ => break,
        }
    }
    Some(top)
}

/// Controllers the cgroup at `dir` offers its children once enabled
/// (`cgroup.controllers`).
pub fn controllers(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(text: &str) -> CgroupLayout {
        probe::classify_cgroups(
            &text
                .lines()
                .filter_map(probe::parse_mountinfo_line)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn hybrid_host_is_explained() {
        let hybrid = mounts(
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
        );
        let why = locate_in(&hybrid, "4:memory:/x\n0::/\n").unwrap_err();
        assert!(why.contains("hybrid"), "{why}");
        assert!(why.contains("/sys/fs/cgroup/unified"), "{why}");
    }

    #[test]
    fn pure_v2_locates_own_cgroup() {
        let v2 = mounts("30 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate");
        let at = locate_in(&v2, "0::/user.slice/user-1000.slice/session-2.scope\n").unwrap();
        assert_eq!(
            at.own_dir,
            Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope")
        );
        assert!(locate_in(&v2, "1:name=systemd:/\n").is_err());
        assert!(locate_in(&CgroupLayout::None, "0::/\n").is_err());
    }

    #[test]
    fn decisions() {
        let f = |own_writable, own_alone, parent_writable, parent_is_slice, systemd| Facts {
            own_writable,
            own_alone,
            parent_writable,
            parent_is_slice,
            systemd,
        };
        // A scope made for us (or a batch job where nook is alone).
        assert_eq!(
            decide(&f(true, true, false, false, false), "/a"),
            Decision::Own
        );
        // The VM lane / an HPC delegation: shared leaf under a delegated parent.
        assert_eq!(
            decide(&f(true, false, true, false, false), "/a"),
            Decision::Sibling
        );
        // A login session: session-N.scope is root's.
        assert_eq!(
            decide(&f(false, false, false, true, true), "/a"),
            Decision::Scope
        );
        // A terminal inside user@.service: its slice is systemd's.
        assert_eq!(
            decide(&f(true, false, true, true, true), "/a"),
            Decision::Scope
        );
        // The same without a reachable manager: use the writable parent.
        assert_eq!(
            decide(&f(true, false, true, true, false), "/a"),
            Decision::Sibling
        );
        assert!(matches!(
            decide(&f(false, false, false, false, false), "/a"),
            Decision::Unavailable(why) if why.contains("not delegated")
        ));
        assert!(matches!(
            decide(&f(true, false, false, false, false), "/a"),
            Decision::Unavailable(why) if why.contains("no-internal-processes")
        ));
    }
}
