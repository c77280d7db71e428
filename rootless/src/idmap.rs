//! User and group ID maps of the container's user namespace.
//!
//! The default is podman's: container root is the user, 1..N the user's first
//! subordinate range. Writing anything beyond the user's own id needs privilege, which
//! the setuid helper (nook's, or shadow's newuidmap) supplies after checking
//! /etc/subuid. Without a helper or a range, the container gets a single-ID map (the
//! user as root, or keep-id) and the user is told once why and how to get more.
//!
//! An unprivileged user may write a single-ID map of its own uid and gid itself, the
//! gid map only after setgroups has been denied (CVE-2014-8989). Root may write any map.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Pid, Uid, User};
use oci_spec::runtime::LinuxIdMapping;

use crate::error::{Error, Result};
use crate::subid::{self, SubIdRange};

/// One line of uid_map / gid_map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

impl From<&LinuxIdMapping> for IdRange {
    fn from(m: &LinuxIdMapping) -> Self {
        IdRange {
            inside: m.container_id(),
            outside: m.host_id(),
            count: m.size(),
        }
    }
}

/// The map file format the kernel reads.
pub fn format_map(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// The ranges of a map file's text (`/proc/PID/uid_map`); malformed lines are skipped.
pub fn parse_map(text: &str) -> Vec<IdRange> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(|x| x.parse::<u32>().ok());
            Some(IdRange {
                inside: f.next()??,
                outside: f.next()??,
                count: f.next()??,
            })
        })
        .collect()
}

/// Where `id` (a host id) appears inside, if it is mapped.
pub fn inside_id(ranges: &[IdRange], outside: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| outside >= r.outside && outside - r.outside < r.count)
        .map(|r| r.inside + (outside - r.outside))
}

/// Whether the container id `inside` is mapped.
pub fn is_mapped(ranges: &[IdRange], inside: u32) -> bool {
    ranges
        .iter()
        .any(|r| inside >= r.inside && inside - r.inside < r.count)
}

/// How the container's IDs are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernsMode {
    /// podman's default: root inside is the user.
    Default,
    /// The user's own uid and gid are the same inside (`--userns=keep-id`).
    KeepId,
    /// Explicit `--uidmap`/`--gidmap` triples, podman's rootless meaning: `inside:outside:count`
    /// where outside counts in the default map (0 is the user, 1.. its subordinate IDs).
    Explicit {
        uid: Vec<IdRange>,
        gid: Vec<IdRange>,
    },
}

/// The maps of one container, and the notice to print when they are less than asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    /// One line for the user when nook fell back to a single-ID map.
    pub notice: Option<String>,
}

impl Mapping {
    /// The id the container's default process runs as (root, or the user under keep-id).
    pub fn default_uid(&self) -> u32 {
        inside_id(&self.uid_map, Uid::current().as_raw()).unwrap_or(0)
    }

    pub fn default_gid(&self) -> u32 {
        inside_id(&self.gid_map, Gid::current().as_raw()).unwrap_or(0)
    }
}

/// The host facts a mapping is computed from; gathered by [`HostIds::current`].
#[derive(Debug, Clone)]
pub struct HostIds {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub subuids: Vec<SubIdRange>,
    pub subgids: Vec<SubIdRange>,
    /// Why subordinate IDs cannot be used, if they cannot.
    pub unavailable: Option<String>,
}

impl HostIds {
    pub fn current() -> HostIds {
        let uid = Uid::current().as_raw();
        let gid = Gid::current().as_raw();
        let user = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let (subuid, subgid) = (read(subid::SUBUID_FILE), read(subid::SUBGID_FILE));
        // The helper search only matters when there are ranges to map.
        let helper = || find_helper("uid").is_some() && find_helper("gid").is_some();
        HostIds::from_facts(uid, gid, user, &subuid, &subgid, helper)
    }

    /// The facts from the texts of /etc/subuid and /etc/subgid and whether both helpers
    /// were found (asked only when the ranges exist).
    pub fn from_facts(
        uid: u32,
        gid: u32,
        user: String,
        subuid: &str,
        subgid: &str,
        helper_found: impl FnOnce() -> bool,
    ) -> HostIds {
        let subuids = subid::parse_subid(subuid, &user, uid);
        let subgids = subid::parse_subid(subgid, &user, uid);
        // Programs that switch users inside fail; apt, the one everyone meets, `nook run`
        // arranges itself (cli/src/apt_sandbox.rs).
        const APT: &str = "programs cannot switch users inside; `nook run` sets apt's \
                           APT::Sandbox::User=root for you";
        let unavailable = if uid == 0 {
            None
        } else if subuids.is_empty() || subgids.is_empty() {
            let free = subid::free_range(&[subuid, subgid]);
            Some(format!(
                "no /etc/subuid and /etc/subgid entries for {user}: running with a single-ID \
                 map ({APT}); {}",
                subid::add_range_fix_for(&user, free)
            ))
        } else if !helper_found() {
            Some(format!(
                "no newuidmap/newgidmap helper found (nook-newuidmap next to nook or on PATH, \
                 or shadow's newuidmap): running with a single-ID map ({APT}); an \
                 administrator can install nook's with `install -m 4755 -o root \
                 nook-newuidmap nook-newgidmap /usr/local/bin/`"
            ))
        } else {
            None
        };
        HostIds {
            uid,
            gid,
            user,
            subuids,
            subgids,
            unavailable,
        }
    }
}

/// Computes the container's maps for `mode` on a host described by `host`.
pub fn plan(mode: &UsernsMode, host: &HostIds) -> Result<Mapping> {
    let full = host.unavailable.is_none();
    let first = |ranges: &[SubIdRange]| ranges.first().copied().filter(|_| full);
    let uid_default = default_map(host.uid, first(&host.subuids));
    let gid_default = default_map(host.gid, first(&host.subgids));
    let notice = host.unavailable.clone();
    let (uid_map, gid_map) = match mode {
        UsernsMode::Default => (uid_default, gid_default),
        UsernsMode::KeepId => (
            keep_id_map(host.uid, first(&host.subuids)),
            keep_id_map(host.gid, first(&host.subgids)),
        ),
        UsernsMode::Explicit { uid, gid } => (
            translate(uid, &uid_default, "--uidmap")?,
            translate(gid, &gid_default, "--gidmap")?,
        ),
    };
    // The container's first process is the user itself: unmapped, it could not even
    // mount (the kernel answers EOVERFLOW for an unmapped owner).
    if inside_id(&uid_map, host.uid).is_none() || inside_id(&gid_map, host.gid).is_none() {
        return Err(Error::Spec(
            "--uidmap/--gidmap must map your own uid and gid (HOST-ID 0), e.g. \
             --uidmap 0:0:1 --uidmap 1:1:65536"
                .into(),
        ));
    }
    Ok(Mapping {
        uid_map,
        gid_map,
        notice,
    })
}

/// 0 → `own`, then 1..=N → the subordinate range.
fn default_map(own: u32, sub: Option<SubIdRange>) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: 0,
        outside: own,
        count: 1,
    }];
    if let Some(r) = sub.and_then(clamp) {
        map.push(IdRange {
            inside: 1,
            outside: r.0,
            count: r.1.min(u32::MAX - 1),
        });
    }
    map
}

/// `own` → `own`; the subordinate range fills the ids below and above it.
fn keep_id_map(own: u32, sub: Option<SubIdRange>) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: own,
        outside: own,
        count: 1,
    }];
    if let Some((start, count)) = sub.and_then(clamp) {
        let below = count.min(own);
        if below > 0 {
            map.push(IdRange {
                inside: 0,
                outside: start,
                count: below,
            });
        }
        let above = (count - below).min(u32::MAX - own);
        if above > 0 {
            map.push(IdRange {
                inside: own + 1,
                outside: start + below,
                count: above,
            });
        }
    }
    map
}

/// A subordinate range as u32 start and count, if it fits the kernel's id space.
fn clamp(r: SubIdRange) -> Option<(u32, u32)> {
    let start = u32::try_from(r.start).ok()?;
    let count = u32::try_from(r.count.min(u64::from(u32::MAX - start))).ok()?;
    (count > 0).then_some((start, count))
}

/// Maps podman-style triples (outside ids counted in `base`'s inside ids) to host ids.
fn translate(requested: &[IdRange], base: &[IdRange], flag: &str) -> Result<Vec<IdRange>> {
    let mut out = Vec::new();
    for req in requested {
        let mut offset = 0u32;
        while offset < req.count {
            let via = req.outside + offset;
            let piece = base
                .iter()
                .find(|b| via >= b.inside && via - b.inside < b.count)
                .ok_or_else(|| {
                    Error::Spec(format!(
                        "{flag} {}:{}:{}: id {via} is not among your mapped ids (0 is you, 1.. \
                         your /etc/subuid range); see `nook info`",
                        req.inside, req.outside, req.count
                    ))
                })?;
            let len = (piece.count - (via - piece.inside)).min(req.count - offset);
            out.push(IdRange {
                inside: req.inside + offset,
                outside: piece.outside + (via - piece.inside),
                count: len,
            });
            offset += len;
        }
    }
    Ok(out)
}

/// Parses `inside:outside:count` (podman's --uidmap syntax).
pub fn parse_triple(text: &str) -> std::result::Result<IdRange, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums.as_deref() {
        Some([inside, outside, count]) if *count > 0 => Ok(IdRange {
            inside: *inside,
            outside: *outside,
            count: *count,
        }),
        _ => Err(format!(
            "bad ID map {text:?}: expected CONTAINER-ID:HOST-ID:COUNT with COUNT > 0"
        )),
    }
}

/// Writes the maps of `pid`'s user namespace from the supervisor (its owner): directly
/// when the kernel lets us (root, or a single own-id map), else through the helpers.
pub fn write_maps(pid: Pid, uid_map: &[IdRange], gid_map: &[IdRange]) -> Result<()> {
    let uid = Uid::current().as_raw();
    let gid = Gid::current().as_raw();
    if Uid::effective().is_root() {
        write_proc(pid, "uid_map", &format_map(uid_map))?;
        return write_proc(pid, "gid_map", &format_map(gid_map));
    }
    if is_own_single(uid_map, uid) && is_own_single(gid_map, gid) {
        write_proc(pid, "setgroups", "deny")?;
        write_proc(pid, "uid_map", &format_map(uid_map))?;
        return write_proc(pid, "gid_map", &format_map(gid_map));
    }
    let helper = |which: &str| {
        find_helper(which).ok_or_else(|| {
            Error::Spec(format!(
                "this ID map needs the new{which}map helper, and none was found: install \
                 nook-new{which}map setuid root next to nook, or shadow's uidmap package"
            ))
        })
    };
    // Both helpers run at once: each is a fork+exec of a setuid binary, the slowest
    // part of starting a container with a full map.
    let uid_helper = spawn_helper(&helper("uid")?, pid, uid_map)?;
    let gid_helper = spawn_helper(&helper("gid")?, pid, gid_map)?;
    let uid_result = finish_helper(uid_helper);
    let gid_result = finish_helper(gid_helper);
    uid_result.and(gid_result)
}

fn is_own_single(map: &[IdRange], own: u32) -> bool {
    matches!(map, [r] if r.outside == own && r.count == 1)
}

struct RunningHelper {
    path: PathBuf,
    child: std::process::Child,
}

fn spawn_helper(path: &Path, pid: Pid, map: &[IdRange]) -> Result<RunningHelper> {
    let mut cmd = Command::new(path);
    cmd.arg(pid.to_string());
    for r in map {
        cmd.args([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::sys(format!("running {}", path.display()), e))?;
    Ok(RunningHelper {
        path: path.to_path_buf(),
        child,
    })
}

fn finish_helper(helper: RunningHelper) -> Result<()> {
    let output = helper
        .child
        .wait_with_output()
        .map_err(|e| Error::sys(format!("waiting for {}", helper.path.display()), e))?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    Err(Error::Setup(format!(
        "{} refused the container's ID map: {}",
        helper.path.display(),
        said.trim()
    )))
}

fn write_proc(pid: Pid, file: &str, content: &str) -> Result<()> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|error| Error::IdMap { path, error })
}

/// A newuidmap/newgidmap binary and how it is privileged.
pub struct Helper {
    pub path: PathBuf,
    setuid_root: bool,
    file_caps: bool,
    /// On a `nosuid` mount neither setuid nor file capabilities take effect.
    pub nosuid_mount: bool,
}

impl Helper {
    pub fn inspect(path: PathBuf) -> Option<Helper> {
        let meta = fs::metadata(&path).ok()?;
        let setuid_root = meta.mode() & 0o4000 != 0 && meta.uid() == 0;
        let cpath = CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: both strings are NUL-terminated; a null buffer of size 0 asks for the size.
        let caps = unsafe {
            libc::getxattr(
                cpath.as_ptr(),
                c"security.capability".as_ptr(),
                std::ptr::null_mut(),
                0,
            )
        };
        // SAFETY: statvfs is plain old data, so all-zero is a valid value to fill.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `cpath` is NUL-terminated and `vfs` writable.
        let nosuid_mount = unsafe { libc::statvfs(cpath.as_ptr(), &mut vfs) } == 0
            && vfs.f_flag & libc::ST_NOSUID != 0;
        Some(Helper {
            path,
            setuid_root,
            file_caps: caps > 0,
            nosuid_mount,
        })
    }

    pub fn privileged(&self) -> bool {
        (self.setuid_root || self.file_caps) && !self.nosuid_mount
    }

    pub fn describe(&self) -> String {
        let how = match (self.setuid_root, self.file_caps) {
            (true, _) => "setuid root",
            (false, true) => "file capabilities",
            (false, false) => "not setuid, no file capabilities",
        };
        let mount = if self.nosuid_mount {
            ", on a nosuid mount"
        } else {
            ""
        };
        format!("{} ({how}{mount})", self.path.display())
    }
}

pub(crate) fn is_executable_file(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    // Without PATH, search what execvp(3) would: the C library's default path.
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable_file(p))
}

/// Every newuidmap (`which` = "uid") or newgidmap candidate, in order of preference:
/// nook's own next to the nook binary, then on PATH, then shadow's on PATH.
pub fn helper_candidates(which: &str) -> Vec<PathBuf> {
    let ours = format!("nook-new{which}map");
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    exe_dir
        .into_iter()
        .map(|d| d.join(&ours))
        .filter(|p| is_executable_file(p))
        .chain(find_on_path(&ours))
        .chain(find_on_path(&format!("new{which}map")))
        .collect()
}

/// The first candidate that can actually write a map (setuid root or file capabilities,
/// not on a nosuid mount). A freshly built, unprivileged `nook-newuidmap` next to a
/// development build of nook is skipped rather than tried and failed.
pub fn find_helper(which: &str) -> Option<PathBuf> {
    helper_candidates(which)
        .into_iter()
        .find(|p| Helper::inspect(p.clone()).is_some_and(|h| h.privileged()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE: [IdRange; 1] = [IdRange {
        inside: 0,
        outside: 1000,
        count: 1,
    }];

    #[test]
    fn formats_kernel_map() {
        assert_eq!(format_map(&SINGLE), "0 1000 1\n");
    }

    fn host(unavailable: Option<&str>) -> HostIds {
        HostIds {
            uid: 1000,
            gid: 1000,
            user: "alice".into(),
            subuids: vec![SubIdRange {
                start: 100000,
                count: 65536,
            }],
            subgids: vec![SubIdRange {
                start: 200000,
                count: 65536,
            }],
            unavailable: unavailable.map(str::to_string),
        }
    }

    fn r(inside: u32, outside: u32, count: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            count,
        }
    }

    #[test]
    fn the_single_id_notice_suggests_a_free_range_not_a_fixed_one() {
        // Another account holds 100000-165535, the range a fixed suggestion would give.
        let taken = "bob:100000:65536\ncarol:165536:65536\n";
        let h = HostIds::from_facts(1000, 1000, "alice".into(), taken, taken, || true);
        let notice = h.unavailable.expect("no range: a notice");
        assert!(notice.contains("single-ID map"), "{notice}");
        assert!(
            notice
                .contains("usermod --add-subuids 262144-327679 --add-subgids 262144-327679 alice"),
            "{notice}"
        );
        assert!(!notice.contains("100000-165535"), "{notice}");
        assert!(notice.contains("APT::Sandbox::User=root"), "{notice}");
        // A range in one file only is no range.
        let h = HostIds::from_facts(
            1000,
            1000,
            "alice".into(),
            "alice:300000:65536\n",
            "",
            || true,
        );
        let notice = h.unavailable.expect("no subgid range: a notice");
        assert!(
            notice.contains("usermod --add-subuids 131072-196607"),
            "{notice}"
        );
        // With ranges, the helper decides; without one, its own notice.
        let mine = "alice:100000:65536\n";
        let h = HostIds::from_facts(1000, 1000, "alice".into(), mine, mine, || false);
        assert!(h
            .unavailable
            .expect("no helper")
            .contains("install -m 4755"));
        let h = HostIds::from_facts(1000, 1000, "alice".into(), mine, mine, || true);
        assert_eq!(h.unavailable, None);
        assert_eq!(
            h.subuids,
            vec![SubIdRange {
                start: 100000,
                count: 65536
            }]
        );
        // Root needs neither.
        assert_eq!(
            HostIds::from_facts(0, 0, "root".into(), "", "", || false).unavailable,
            None
        );
    }

    #[test]
    fn default_map_is_podmans() {
        let m = plan(&UsernsMode::Default, &host(None)).unwrap();
        assert_eq!(m.uid_map, vec![r(0, 1000, 1), r(1, 100000, 65536)]);
        assert_eq!(m.gid_map, vec![r(0, 1000, 1), r(1, 200000, 65536)]);
        assert_eq!(m.notice, None);
    }

    #[test]
    fn falls_back_to_single_id_with_a_notice() {
        let m = plan(&UsernsMode::Default, &host(Some("no helper"))).unwrap();
        assert_eq!(m.uid_map, vec![r(0, 1000, 1)]);
        assert_eq!(m.notice.as_deref(), Some("no helper"));
        let k = plan(&UsernsMode::KeepId, &host(Some("no helper"))).unwrap();
        assert_eq!(k.uid_map, vec![r(1000, 1000, 1)]);
    }

    #[test]
    fn keep_id_surrounds_the_users_id() {
        let m = plan(&UsernsMode::KeepId, &host(None)).unwrap();
        assert_eq!(
            m.uid_map,
            vec![r(1000, 1000, 1), r(0, 100000, 1000), r(1001, 101000, 64536)]
        );
    }

    #[test]
    fn explicit_maps_count_in_the_default_map() {
        let mode = UsernsMode::Explicit {
            uid: vec![r(0, 0, 1), r(1, 1, 10)],
            gid: vec![r(0, 0, 1), r(5, 3, 2)],
        };
        let m = plan(&mode, &host(None)).unwrap();
        assert_eq!(m.uid_map, vec![r(0, 1000, 1), r(1, 100000, 10)]);
        assert_eq!(m.gid_map, vec![r(0, 1000, 1), r(5, 200002, 2)]);
        // A range that crosses from the user into the subordinate ids is split.
        let split = UsernsMode::Explicit {
            uid: vec![r(0, 0, 3)],
            gid: vec![r(0, 0, 1)],
        };
        assert_eq!(
            plan(&split, &host(None)).unwrap().uid_map,
            vec![r(0, 1000, 1), r(1, 100000, 2)]
        );
    }

    #[test]
    fn explicit_maps_must_map_the_user_and_stay_in_range() {
        let unmapped_user = UsernsMode::Explicit {
            uid: vec![r(0, 1, 10)],
            gid: vec![r(0, 0, 1)],
        };
        assert!(plan(&unmapped_user, &host(None)).is_err());
        let too_far = UsernsMode::Explicit {
            uid: vec![r(0, 0, 70000)],
            gid: vec![r(0, 0, 1)],
        };
        assert!(plan(&too_far, &host(None)).is_err());
        assert_eq!(parse_triple("0:1:65536"), Ok(r(0, 1, 65536)));
        assert!(parse_triple("0:1").is_err());
        assert!(parse_triple("0:1:0").is_err());
        assert!(parse_triple("a:b:c").is_err());
    }

    #[test]
    fn translates_ids() {
        assert_eq!(inside_id(&SINGLE, 1000), Some(0));
        assert_eq!(inside_id(&SINGLE, 1001), None);
        assert!(is_mapped(&SINGLE, 0));
        assert!(!is_mapped(&SINGLE, 5));
    }
}
