//! Capability probes behind `nook info`.
//!
//! Rootless containers depend on a dozen host facts that differ from one machine to the next
//! (HPC login nodes, CI runners, laptops): whether the kernel lets this user create a user
//! namespace, whether the user has /etc/subuid ranges and a setuid helper to use them, whether
//! overlayfs, FUSE and TUN are usable, how cgroups are laid out and whether a subtree is
//! delegated, and where the store and runtime state would live. [`probe_all`] checks each one
//! cheaply and returns a [`Report`]: one [`Probe`] per fact, with a status, what was found and,
//! for anything short of `Ok`, the one thing to do about it (DESIGN.md section 6).
//!
//! Probes only look: they read /proc and /etc, `stat`/`statfs` paths, open and close device
//! nodes, and fork two short-lived children: one tries to create a user namespace, one to
//! install a seccomp filter (the default profile needs that). Nothing is
//! mounted and no container is started, so `nook info` stays far below 100 ms. A file that is
//! missing or unreadable becomes a probe result with a reason, never a panic.
//!
//! The parsers (`/etc/subuid` lines, `/proc/self/mountinfo` lines, `/proc/self/cgroup`) are pure
//! functions over text so they can be unit-tested with samples from other hosts, and so the
//! ID-mapping and cgroup code can reuse them later.

use std::ffi::CStr;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags, Uid, User};
// The filesystem types table fs consults too: `nook info` and `nook run` agree on what
// a network filesystem is.
use nook_at::fstype;

use crate::idmap::{find_helper, helper_candidates, Helper};
use crate::subid::parse_subid;

/// Outcome of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The capability is there and usable.
    Ok,
    /// The capability is absent; `fix` says how to get it.
    Missing,
    /// Present but reduced (e.g. cgroups without delegation); `fix` says how to get all of it.
    Limited,
}

impl Status {
    /// Lower-case word used in both the text table and the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Limited => "limited",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of one capability probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Stable short name (`kernel`, `userns`, `subuid`, ...): scripts key on it in JSON.
    pub name: &'static str,
    pub status: Status,
    /// What was found, in one line.
    pub detail: String,
    /// What to do about it; `None` when nothing needs doing.
    pub fix: Option<String>,
}

impl Probe {
    fn ok(name: &'static str, detail: impl Into<String>) -> Probe {
        Probe {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn missing(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Probe {
        Probe {
            name,
            status: Status::Missing,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn limited(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Probe {
        Probe {
            name,
            status: Status::Limited,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Host facts plus every probe, in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `uname -r`.
    pub kernel_release: String,
    /// Login name of the real uid, or the uid in decimal when the passwd lookup fails.
    pub user: String,
    /// Real uid and gid of the caller.
    pub uid: u32,
    pub gid: u32,
    /// Effective uid 0: root writes any ID map itself, so helper and subuid do not matter.
    pub is_root: bool,
    pub probes: Vec<Probe>,
}

impl Report {
    /// The probe with this name, if it ran.
    pub fn probe(&self, name: &str) -> Option<&Probe> {
        self.probes.iter().find(|p| p.name == name)
    }
}

/// Runs every probe.
///
/// Call it early: the user-namespace probe forks, and although the child only makes
/// async-signal-safe calls (so a multi-threaded caller is safe too), a fork is cheapest before
/// the process has grown.
pub fn probe_all() -> Report {
    // SAFETY: getuid/getgid/geteuid cannot fail and touch no memory of ours.
    let (uid, gid, euid) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
    // The fork comes first, before the passwd lookup (which may load NSS modules).
    let userns = probe_userns(uid, gid);

    let passwd = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let user = passwd
        .as_ref()
        .map(|u| u.name.clone())
        .unwrap_or_else(|| uid.to_string());
    let home = passwd.as_ref().map(|u| u.dir.clone());
    let is_root = euid == 0;

    let kernel_release = kernel_release();
    let version = parse_kernel_version(&kernel_release);

    let probes = vec![
        probe_kernel(&kernel_release, version),
        userns,
        probe_subid("subuid", "/etc/subuid", &user, uid, is_root),
        probe_subid("subgid", "/etc/subgid", &user, uid, is_root),
        probe_helper(is_root),
        probe_overlay(&kernel_release, version),
        probe_fuse(),
        probe_tun(),
        probe_ping(gid),
        probe_cgroup(is_root),
        probe_seccomp(),
        probe_runtime_dir(uid),
        probe_store(home.as_deref()),
    ];
    Report {
        kernel_release,
        user,
        uid,
        gid,
        is_root,
        probes,
    }
}

// ---------------------------------------------------------------------------------------------
// kernel

/// Overlayfs accepts mounts from inside a user namespace since this release.
const OVERLAY_USERNS_MIN: (u32, u32) = (5, 11);

fn kernel_release() -> String {
    // SAFETY: utsname is plain old data, so all-zero is a valid value for uname to fill.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_string();
    }
    // SAFETY: uname NUL-terminates each field, and the field outlives this borrow.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// `"6.1.0-18-amd64"` → `(6, 1)`. Distribution suffixes after the numbers are ignored.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn probe_kernel(release: &str, version: Option<(u32, u32)>) -> Probe {
    match version {
        Some(v) if v >= OVERLAY_USERNS_MIN => {
            Probe::ok("kernel", format!("{release} (>= 5.11: overlayfs mounts in a user namespace)"))
        }
        Some(_) => Probe::limited(
            "kernel",
            format!("{release} (< 5.11: no overlayfs in a user namespace)"),
            "a kernel >= 5.11 mounts image layers with overlayfs; on this one only FUSE can (see fuse)",
        ),
        None => Probe::limited(
            "kernel",
            format!("{release} (version not recognised)"),
            "check that the kernel is >= 5.11 (overlayfs in a user namespace)",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// userns

/// Where the user-namespace test child stopped; its exit status.
const STAGE_UNSHARE: i32 = 1;
const STAGE_SETGROUPS: i32 = 2;
const STAGE_UID_MAP: i32 = 3;
const STAGE_GID_MAP: i32 = 4;

/// Really creates a user namespace in a forked child and writes the single-ID map nook uses, so
/// every obstacle shows up: sysctls, seccomp filters of an enclosing container, and AppArmor's
/// restriction (which lets `unshare` succeed but refuses the map write afterwards).
fn probe_userns(uid: u32, gid: u32) -> Probe {
    let max = read_trimmed("/proc/sys/user/max_user_namespaces");
    let clone = read_trimmed("/proc/sys/kernel/unprivileged_userns_clone");
    let apparmor = read_trimmed("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    let mut knobs = format!("max_user_namespaces={}", max.as_deref().unwrap_or("?"));
    if let Some(v) = &clone {
        knobs.push_str(&format!(", unprivileged_userns_clone={v}"));
    }
    if let Some(v) = &apparmor {
        knobs.push_str(&format!(", apparmor_restrict_unprivileged_userns={v}"));
    }

    let (stage, errno) = match try_userns_in_child(uid, gid) {
        Ok(r) => r,
        Err(e) => {
            return Probe::limited(
                "userns",
                format!("not tested: {} ({knobs})", plain(&e)),
                "run `nook info` again; if it persists, check the process limit (ulimit -u)",
            )
        }
    };
    if stage == 0 {
        return Probe::ok(
            "userns",
            format!("created, single-ID map written ({knobs})"),
        );
    }

    let err = std::io::Error::from_raw_os_error(errno);
    let step = match stage {
        STAGE_UNSHARE => "unshare(CLONE_NEWUSER)",
        STAGE_SETGROUPS => "writing /proc/self/setgroups",
        STAGE_UID_MAP => "writing /proc/self/uid_map",
        STAGE_GID_MAP => "writing /proc/self/gid_map",
        _ => "the test child",
    };
    let detail = format!("{step} failed: {} ({knobs})", plain(&err));
    let fix = if max.as_deref() == Some("0") || (stage == STAGE_UNSHARE && errno == libc::ENOSPC) {
        "ask an administrator: sysctl -w user.max_user_namespaces=15000 (persist in /etc/sysctl.d/)"
    } else if clone.as_deref() == Some("0") {
        "ask an administrator: sysctl -w kernel.unprivileged_userns_clone=1 (persist in /etc/sysctl.d/)"
    } else if apparmor.as_deref() == Some("1") {
        "ask an administrator: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile allowing userns for nook"
    } else if stage == STAGE_UNSHARE && errno == libc::EPERM {
        "user namespaces are blocked here (a seccomp filter of an enclosing container, a chroot, or an LSM): run nook on the host or allow unshare(CLONE_NEWUSER)"
    } else {
        "user namespaces are unusable on this host; nook cannot run containers without them"
    };
    Probe::missing("userns", detail, fix)
}

/// Forks; the child unshares a user namespace and maps the caller to root in it. Returns
/// `(stage, errno)`: `(0, 0)` on success, otherwise the failing stage and its errno.
fn try_userns_in_child(uid: u32, gid: u32) -> Result<(i32, i32), std::io::Error> {
    // Everything the child touches is prepared here: after fork it may only make
    // async-signal-safe calls (no allocation, no locks) in case the caller has threads.
    let setgroups = c"/proc/self/setgroups";
    let uid_map_path = c"/proc/self/uid_map";
    let gid_map_path = c"/proc/self/gid_map";
    let uid_map = format!("0 {uid} 1\n");
    let gid_map = format!("0 {gid} 1\n");

    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (rfd, wfd) = (fds[0], fds[1]);

    // SAFETY: the child runs only `userns_child`, which makes async-signal-safe libc calls on
    // memory prepared above, and leaves with _exit (no destructors, no atexit handlers).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: both descriptors are ours and open.
        unsafe {
            libc::close(rfd);
            libc::close(wfd);
        }
        return Err(err);
    }
    if pid == 0 {
        let stage = userns_child(
            wfd,
            &[
                (setgroups, b"deny\n".as_slice()),
                (uid_map_path, uid_map.as_bytes()),
                (gid_map_path, gid_map.as_bytes()),
            ],
        );
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(stage) }
    }

    // SAFETY: the parent's copy of the write end is ours; closing it lets read see EOF.
    unsafe { libc::close(wfd) };
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `pid` is our child and `status` is writable.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            let err = std::io::Error::last_os_error();
            // SAFETY: the read end is ours and open.
            unsafe { libc::close(rfd) };
            return Err(err);
        }
    }
    let mut buf = [0u8; 4];
    // SAFETY: `buf` is writable for its length; `rfd` is open.
    let n = unsafe { libc::read(rfd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: the read end is ours and open.
    unsafe { libc::close(rfd) };
    let errno = if n == 4 { i32::from_ne_bytes(buf) } else { 0 };

    if libc::WIFEXITED(status) {
        Ok((libc::WEXITSTATUS(status), errno))
    } else {
        Err(std::io::Error::other(
            "the test child was killed by a signal",
        ))
    }
}

/// Body of the forked child: unshare, then write each (path, data). On failure writes errno to
/// `wfd` and returns the stage number; 0 on success. Async-signal-safe only.
fn userns_child(wfd: libc::c_int, writes: &[(&CStr, &[u8]); 3]) -> i32 {
    fn errno() -> i32 {
        // SAFETY: __errno_location returns this thread's errno slot; reading it is safe.
        unsafe { *libc::__errno_location() }
    }
    fn report(wfd: libc::c_int, stage: i32) -> i32 {
        let e = errno().to_ne_bytes();
        // SAFETY: `e` is readable for 4 bytes; a short or failed write only loses the errno.
        unsafe { libc::write(wfd, e.as_ptr().cast(), e.len()) };
        stage
    }
    // SAFETY: unshare takes no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return report(wfd, STAGE_UNSHARE);
    }
    let stages = [STAGE_SETGROUPS, STAGE_UID_MAP, STAGE_GID_MAP];
    for ((path, data), stage) in writes.iter().zip(stages) {
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return report(wfd, stage);
        }
        // SAFETY: `data` is readable for its length; `fd` is open.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n != data.len() as isize {
            return report(wfd, stage);
        }
        // SAFETY: `fd` is open and ours.
        unsafe { libc::close(fd) };
    }
    0
}

// ---------------------------------------------------------------------------------------------
// subuid / subgid

fn probe_subid(name: &'static str, file: &str, user: &str, uid: u32, is_root: bool) -> Probe {
    let fix = || crate::subid::add_range_fix(user);
    let contents = match fs::read_to_string(file) {
        Ok(c) => c,
        Err(e) if is_root => {
            return Probe::ok(name, format!("{file}: {} (not needed as root)", plain(&e)))
        }
        Err(e) => return Probe::missing(name, format!("{file}: {}", plain(&e)), fix()),
    };
    let ranges = parse_subid(&contents, user, uid);
    if ranges.is_empty() {
        if is_root {
            return Probe::ok(
                name,
                format!("no entry for {user} in {file} (not needed as root)"),
            );
        }
        let mut detail = format!("no entry for {user} in {file}");
        // Shadow >= 4.9 can take ranges from NSS (e.g. `subid: sss` with FreeIPA); nook reads
        // only the files, so say so rather than leave the user puzzled.
        if let Some(src) = nss_subid_source() {
            detail.push_str(&format!(
                " (nsswitch.conf has `subid: {src}`: nook reads only the files)"
            ));
        }
        return Probe::missing(name, detail, fix());
    }
    let total: u64 = ranges.iter().map(|r| r.count).sum();
    let list: Vec<String> = ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.start + r.count - 1))
        .collect();
    let detail = format!("{user}: {} ({total} IDs)", list.join(", "));
    // 65536 IDs cover every ID a normal distribution image uses; fewer fail on some files.
    if total < 65536 && !is_root {
        return Probe::limited(
            name,
            format!("{detail}: fewer than 65536, images with higher IDs cannot be mapped"),
            fix(),
        );
    }
    Probe::ok(name, detail)
}

fn nss_subid_source() -> Option<String> {
    let conf = fs::read_to_string("/etc/nsswitch.conf").ok()?;
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("subid:"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s != "files")
}

// ---------------------------------------------------------------------------------------------
// helper

fn probe_helper(is_root: bool) -> Probe {
    let fix = "install nook's helper: install -m 4755 -o root nook-newuidmap nook-newgidmap /usr/local/bin/ (or apt-get install uidmap)";
    // The helper nook would use, else the first one found, to say why it is unusable.
    let pick = |which: &str| {
        find_helper(which)
            .or_else(|| helper_candidates(which).into_iter().next())
            .and_then(Helper::inspect)
    };
    let uid = pick("uid");
    let gid = pick("gid");
    match (uid, gid) {
        (Some(u), Some(g)) => {
            let detail = format!("found {}, {}", u.describe(), g.describe());
            if is_root || (u.privileged() && g.privileged()) {
                Probe::ok("helper", detail)
            } else if u.nosuid_mount || g.nosuid_mount {
                Probe::limited("helper", detail, "install the helpers on a filesystem mounted without nosuid, e.g. /usr/local/bin")
            } else {
                Probe::limited("helper", detail, "ask an administrator to make them setuid root: chown root: and chmod 4755 on both")
            }
        }
        (u, g) => {
            let found: Vec<String> = u.iter().chain(g.iter()).map(Helper::describe).collect();
            let lacking = match (&u, &g) {
                (None, None) => "no newuidmap or newgidmap",
                (None, _) => "no newuidmap",
                _ => "no newgidmap",
            };
            let mut detail = format!("{lacking} next to nook or on PATH");
            if !found.is_empty() {
                detail.push_str(&format!("; found {}", found.join(", ")));
            }
            if is_root {
                Probe::ok("helper", format!("{detail} (not needed as root)"))
            } else {
                Probe::missing(
                    "helper",
                    format!("{detail}: containers get a single-ID map"),
                    fix,
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// overlay, fuse, tun

fn probe_overlay(release: &str, version: Option<(u32, u32)>) -> Probe {
    let registered = match fs::read_to_string("/proc/filesystems") {
        Ok(list) => list
            .lines()
            .any(|l| l.split_whitespace().last() == Some("overlay")),
        Err(e) => {
            return Probe::missing(
                "overlay",
                format!("/proc/filesystems: {}", plain(&e)),
                "mount /proc",
            )
        }
    };
    let new_enough = version.is_some_and(|v| v >= OVERLAY_USERNS_MIN);
    match (new_enough, registered) {
        (true, true) => Probe::ok(
            "overlay",
            "overlayfs registered; mountable in a user namespace (kernel >= 5.11)",
        ),
        (false, _) => Probe::missing(
            "overlay",
            format!("kernel {release} is older than 5.11: no overlayfs in a user namespace"),
            "upgrade to a kernel >= 5.11, or make /dev/fuse usable for the FUSE path (see fuse)",
        ),
        (true, false) => {
            // /proc/filesystems lists only loaded filesystems; the module may just be unloaded.
            let module = Path::new("/lib/modules")
                .join(release)
                .join("kernel/fs/overlayfs");
            if module.exists() {
                Probe::limited(
                    "overlay",
                    "overlayfs module available but not loaded",
                    "ask an administrator: modprobe overlay (persist: echo overlay > /etc/modules-load.d/overlay.conf)",
                )
            } else {
                Probe::missing(
                    "overlay",
                    "overlayfs not in /proc/filesystems and no module for this kernel",
                    "use a kernel built with CONFIG_OVERLAY_FS, or make /dev/fuse usable (see fuse)",
                )
            }
        }
    }
}

/// Opens a device node read-write and closes it again: the only honest test of access.
fn try_open_rw(path: &CStr) -> Result<(), std::io::Error> {
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `crw-rw-rw- root:root` style description of a device node, for the detail line.
fn node_mode(path: &str) -> String {
    match fs::metadata(path) {
        Ok(m) => format!(
            "mode {:04o}, owner {}:{}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        ),
        Err(_) => "mode unknown".to_string(),
    }
}

fn probe_device(name: &'static str, path: &CStr, module: &str, purpose: &str) -> Probe {
    let shown = path.to_string_lossy();
    match try_open_rw(path) {
        Ok(()) => Probe::ok(name, format!("{shown} opens read-write ({purpose})")),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Probe::missing(
            name,
            format!("no {shown} ({purpose})"),
            format!("ask an administrator: modprobe {module} (and create {shown} if udev does not)"),
        ),
        Err(e) => Probe::missing(
            name,
            format!("{shown}: {} ({}; {purpose})", plain(&e), node_mode(&shown)),
            format!("ask an administrator: chmod 0666 {shown} (its usual mode), or load the {module} module"),
        ),
    }
}

fn probe_fuse() -> Probe {
    probe_device(
        "fuse",
        c"/dev/fuse",
        "fuse",
        "FUSE mounts in a user namespace",
    )
}

fn probe_tun() -> Probe {
    probe_device(
        "tun",
        c"/dev/net/tun",
        "tun",
        "the userspace network, --network=nook",
    )
}

/// Whether the netstack can answer the container's pings to the outside: it needs an
/// unprivileged ICMP socket, which net.ipv4.ping_group_range grants by group.
fn probe_ping(gid: u32) -> Probe {
    // SAFETY: plain system call; a descriptor it returns is closed right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    let range = read_trimmed("/proc/sys/net/ipv4/ping_group_range")
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into());
    if fd >= 0 {
        // SAFETY: `fd` is ours and used nowhere else.
        unsafe { libc::close(fd) };
        return Probe::ok(
            "ping",
            format!(
                "ICMP sockets allowed (ping_group_range {range}): containers can ping any host"
            ),
        );
    }
    let e = std::io::Error::last_os_error();
    Probe::limited(
        "ping",
        format!(
            "no ICMP socket for group {gid} ({}; net.ipv4.ping_group_range is {range}): \
             containers can ping only 10.0.2.2 and 10.0.2.3",
            plain(&e)
        ),
        "ask an administrator: sysctl -w net.ipv4.ping_group_range=\"0 2147483647\" \
         (and in /etc/sysctl.d to keep it)",
    )
}

// ---------------------------------------------------------------------------------------------
// cgroup

/// The fields of one `/proc/self/mountinfo` line that the probes need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// Path inside the filesystem that is mounted (field 4), e.g. `/` or a bind source.
    pub root: String,
    /// Where it is mounted (field 5), with `\040`-style escapes decoded.
    pub mount_point: String,
    /// Filesystem type after the ` - ` separator, e.g. `cgroup2`.
    pub fs_type: String,
    /// Per-superblock options, e.g. `rw,cpu,cpuacct` for a cgroup v1 hierarchy.
    pub super_options: String,
}

/// Parses one line of `/proc/self/mountinfo` (proc(5)); `None` for a malformed line.
pub fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // At least: id parent dev root mountpoint options - fstype source superoptions.
    let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let fs_type = fields.get(sep + 1)?;
    Some(MountInfo {
        root: unescape_mountinfo(fields.get(3)?),
        mount_point: unescape_mountinfo(fields.get(4)?),
        fs_type: fs_type.to_string(),
        super_options: fields
            .get(sep + 3)
            .map(|s| s.to_string())
            .unwrap_or_default(),
    })
}

/// Decodes the octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash) the
/// kernel uses in mountinfo paths.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Controllers named in a cgroup v1 mount's super options (`rw,cpu,cpuacct` → cpu, cpuacct);
/// named hierarchies such as `name=systemd` carry no controller.
pub fn v1_controllers(super_options: &str) -> Vec<String> {
    const NOT_CONTROLLERS: &[&str] = &[
        "rw",
        "ro",
        "none",
        "xattr",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    super_options
        .split(',')
        .filter(|o| !o.is_empty() && !o.contains('=') && !NOT_CONTROLLERS.contains(o))
        .map(str::to_string)
        .collect()
}

/// How the cgroup filesystems are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Only cgroup2 (v1 named hierarchies without controllers are tolerated): limits work.
    V2 { mount: MountInfo },
    /// v1 hierarchies hold the controllers; the cgroup2 mount has none to offer.
    Hybrid {
        mount: MountInfo,
        v1_controllers: Vec<String>,
    },
    /// No cgroup2 at all.
    V1 { v1_controllers: Vec<String> },
    /// No cgroup filesystem mounted.
    None,
}

/// Classifies the layout from parsed mountinfo entries. When cgroup2 is mounted more than once
/// the conventional places win: /sys/fs/cgroup, then /sys/fs/cgroup/unified.
pub fn classify_cgroups(mounts: &[MountInfo]) -> CgroupLayout {
    let mut v1: Vec<String> = Vec::new();
    for m in mounts.iter().filter(|m| m.fs_type == "cgroup") {
        for c in v1_controllers(&m.super_options) {
            if !v1.contains(&c) {
                v1.push(c);
            }
        }
    }
    let v2: Vec<&MountInfo> = mounts.iter().filter(|m| m.fs_type == "cgroup2").collect();
    let chosen = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .find_map(|p| v2.iter().rev().find(|m| m.mount_point == *p))
        .or_else(|| v2.first())
        .map(|m| (*m).clone());
    let any_v1 = mounts.iter().any(|m| m.fs_type == "cgroup");
    match chosen {
        Some(mount) if v1.is_empty() => CgroupLayout::V2 { mount },
        Some(mount) => CgroupLayout::Hybrid {
            mount,
            v1_controllers: v1,
        },
        None if any_v1 => CgroupLayout::V1 { v1_controllers: v1 },
        None => CgroupLayout::None,
    }
}

/// The cgroup v2 path of the process: the `0::PATH` line of `/proc/self/cgroup`.
pub fn parse_proc_cgroup_v2(contents: &str) -> Option<String> {
    contents.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        match (f.next()?, f.next()?, f.next()?) {
            ("0", "", path) => Some(path.trim_end().to_string()),
            _ => None,
        }
    })
}

/// Directory of cgroup `path` under `mount`, honouring a mount whose root is a subtree (bind
/// mounts, cgroup namespaces). `None` when the cgroup lies outside what is mounted.
pub fn cgroup_dir(mount: &MountInfo, path: &str) -> Option<PathBuf> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return None;
    }
    let rel = if mount.root == "/" {
        path
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    Some(Path::new(&mount.mount_point).join(rel.trim_start_matches('/')))
}

fn writable(p: &Path) -> bool {
    access(p, AccessFlags::W_OK).is_ok()
}

fn probe_cgroup(is_root: bool) -> Probe {
    let pure_v2_fix =
        "resource limits need a pure cgroup v2 host (systemd.unified_cgroup_hierarchy=1)";
    let delegate_fix = "ask for a delegated subtree: systemd user session with Delegate=yes";
    let mountinfo = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(s) => s,
        Err(e) => {
            return Probe::missing(
                "cgroup",
                format!("/proc/self/mountinfo: {}", plain(&e)),
                "mount /proc",
            )
        }
    };
    let mounts: Vec<MountInfo> = mountinfo.lines().filter_map(parse_mountinfo_line).collect();
    let layout = classify_cgroups(&mounts);
    let (mount, summary) = match &layout {
        CgroupLayout::None => {
            return Probe::missing("cgroup", "no cgroup filesystem mounted", pure_v2_fix)
        }
        CgroupLayout::V1 { v1_controllers } => {
            return Probe::limited(
                "cgroup",
                format!(
                    "v1 only (controllers: {}); no cgroup2",
                    list_or_none(v1_controllers)
                ),
                pure_v2_fix,
            )
        }
        CgroupLayout::V2 { mount } => (mount, format!("v2 (unified at {})", mount.mount_point)),
        CgroupLayout::Hybrid { mount, .. } => {
            // Usually the cgroup2 side is empty; a controller no v1 hierarchy claimed (hugetlb
            // on this kind of host) lands there, so say "controller-less" only when true.
            let root_controllers =
                fs::read_to_string(Path::new(&mount.mount_point).join("cgroup.controllers"))
                    .map(|s| s.split_whitespace().count())
                    .unwrap_or(0);
            let kind = if root_controllers == 0 {
                "controller-less "
            } else {
                ""
            };
            (
                mount,
                format!(
                    "hybrid (v1 controllers + {kind}cgroup2 at {})",
                    mount.mount_point
                ),
            )
        }
    };
    let hybrid = matches!(layout, CgroupLayout::Hybrid { .. });

    let own = fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| parse_proc_cgroup_v2(&s));
    let Some(own) = own else {
        return Probe::limited(
            "cgroup",
            format!("{summary}; no 0:: line in /proc/self/cgroup"),
            pure_v2_fix,
        );
    };
    let Some(dir) = cgroup_dir(mount, &own) else {
        let fix = if hybrid { pure_v2_fix } else { delegate_fix };
        return Probe::limited(
            "cgroup",
            format!("{summary}; cgroup {own} is outside the mounted tree"),
            fix,
        );
    };
    let delegated =
        writable(&dir.join("cgroup.procs")) && writable(&dir.join("cgroup.subtree_control"));
    let controllers: Vec<String> = fs::read_to_string(dir.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let detail = format!(
        "{summary}; cgroup {own} {}; controllers: {}",
        if delegated {
            "writable"
        } else {
            "not writable"
        },
        list_or_none(&controllers)
    );
    match (hybrid, delegated) {
        (true, true) => Probe::limited("cgroup", detail, pure_v2_fix),
        (true, false) => Probe::limited(
            "cgroup",
            detail,
            format!("{pure_v2_fix}, then {delegate_fix}"),
        ),
        (false, false) => Probe::limited("cgroup", detail, delegate_fix),
        (false, true) if controllers.is_empty() => Probe::limited(
            "cgroup",
            detail,
            if is_root {
                "enable controllers: echo +memory +pids +cpu > the parent's cgroup.subtree_control"
            } else {
                "ask for controllers to be delegated: Delegate=yes (or Delegate=memory pids cpu io) in user@.service"
            },
        ),
        (false, true) => Probe::ok("cgroup", detail),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(" ")
    }
}

// ---------------------------------------------------------------------------------------------
// runtime dir and store

/// The path itself if it exists, else its closest existing ancestor.
fn existing_ancestor(p: &Path) -> Option<&Path> {
    p.ancestors().find(|a| a.symlink_metadata().is_ok())
}

// ---------------------------------------------------------------------------------------------
// seccomp

/// Whether a filter can be installed (tried in a child), and the default profile in force
/// with how to change it.
fn probe_seccomp() -> Probe {
    let summary = crate::seccomp::default::summary();
    let detail = format!(
        "filters work; default profile {}: {}; per container: --security-opt \
         seccomp=unconfined | seccomp=PROFILE.json (podman's format), --privileged",
        crate::seccomp::default::NAME,
        summary
    );
    match crate::seccomp::filters_work() {
        Ok(()) => Probe::ok("seccomp", detail),
        Err(why) => Probe::missing(
            "seccomp",
            format!("no seccomp filters: {why}"),
            "containers run without the default profile: use a kernel with \
             CONFIG_SECCOMP_FILTER, or run nook outside the sandbox that refuses seccomp(2)",
        ),
    }
}

/// The runtime directory nook uses: `$XDG_RUNTIME_DIR/nook` when that directory belongs to the
/// caller (an inherited one, e.g. after `su`, belongs to someone else), else `$TMPDIR/nook-UID`,
/// or the private replacement recorded for this boot when someone else holds that.
/// Also returns why XDG_RUNTIME_DIR was passed over, if it was.
fn probe_runtime_dir(uid: u32) -> Probe {
    let (dir, skipped) = crate::state::runtime_dir_for(uid);
    let note = skipped.map(|s| format!(" ({s})")).unwrap_or_default();
    let squatted = |why: String| {
        let record = crate::state::fallback_record();
        let recorded = record
            .as_ref()
            .and_then(|r| fs::read_to_string(r).ok())
            .map(|d| format!("uses {}", d.trim_end()));
        Probe::ok(
            "runtime-dir",
            format!(
                "{} is not safe to use ({why}): nook {}{note}",
                dir.display(),
                recorded.unwrap_or_else(|| "makes a private directory instead".into())
            ),
        )
    };
    if dir == crate::state::fallback_dir() {
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return squatted("not a directory".into())
            }
            Ok(m) if m.uid() != uid => return squatted(format!("owned by uid {}", m.uid())),
            Ok(m) if m.mode() & 0o077 != 0 => {
                return squatted(format!("mode {:04o}", m.mode() & 0o7777))
            }
            _ => {}
        }
    }
    let fs_name = existing_ancestor(&dir)
        .and_then(fstype::magic_of)
        .map(fstype::name)
        .unwrap_or_else(|| "unknown fs".to_string());
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => Probe::missing(
            "runtime-dir",
            format!("{} exists but is not a directory{note}", dir.display()),
            format!("remove {}", dir.display()),
        ),
        Ok(m) if m.uid() != uid => Probe::missing(
            "runtime-dir",
            format!("{} belongs to uid {}, not to you{note}", dir.display(), m.uid()),
            format!("remove {} (someone else created it), or set XDG_RUNTIME_DIR to a directory of yours", dir.display()),
        ),
        // state::ensure_private_dir tightens an own directory to 0700 itself; only mention it.
        Ok(m) if m.mode() & 0o077 != 0 => Probe::ok(
            "runtime-dir",
            format!(
                "{} ({fs_name}, mode {:04o}: made 0700 on first run){note}",
                dir.display(),
                m.mode() & 0o7777
            ),
        ),
        Ok(_) => Probe::ok("runtime-dir", format!("{} ({fs_name}){note}", dir.display())),
        Err(_) => {
            let parent = existing_ancestor(&dir).unwrap_or(Path::new("/"));
            if writable(parent) {
                Probe::ok("runtime-dir", format!("{} ({fs_name}, created on first run){note}", dir.display()))
            } else {
                Probe::missing(
                    "runtime-dir",
                    format!("{} cannot be created: {} is not writable{note}", dir.display(), parent.display()),
                    "set XDG_RUNTIME_DIR to a directory you own",
                )
            }
        }
    }
}

/// The image store nook uses: `$NOOK_ROOT`, else `$XDG_DATA_HOME/nook`, else
/// `~/.local/share/nook` (HOME, then the passwd entry's home). Relative XDG paths are ignored,
/// as the XDG spec asks.
fn store_dir(home_from_passwd: Option<&Path>) -> Option<PathBuf> {
    let abs = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(p) = std::env::var_os("NOOK_ROOT").and_then(abs) {
        return Some(p);
    }
    if let Some(p) = std::env::var_os("XDG_DATA_HOME").and_then(abs) {
        return Some(p.join("nook"));
    }
    let home = std::env::var_os("HOME")
        .and_then(abs)
        .or_else(|| home_from_passwd.map(Path::to_path_buf))?;
    Some(home.join(".local/share/nook"))
}

fn probe_store(home_from_passwd: Option<&Path>) -> Probe {
    let Some(store) = store_dir(home_from_passwd) else {
        return Probe::missing(
            "store",
            "no HOME, XDG_DATA_HOME or NOOK_ROOT",
            "set NOOK_ROOT to a directory on local disk",
        );
    };
    let Some(base) = existing_ancestor(&store) else {
        return Probe::missing(
            "store",
            format!("{}: no existing ancestor", store.display()),
            "set NOOK_ROOT to a directory on local disk",
        );
    };
    let magic = fstype::magic_of(base);
    let fs_name = magic
        .map(fstype::name)
        .unwrap_or_else(|| "unknown fs".to_string());
    let where_ = if base == store {
        format!("{} ({fs_name})", store.display())
    } else {
        format!("{} ({fs_name} at {})", store.display(), base.display())
    };
    if !writable(base) {
        let what = if base == store {
            "not writable"
        } else {
            "cannot be created"
        };
        return Probe::missing(
            "store",
            format!("{where_}: {what}"),
            "set NOOK_ROOT (or --root) to a writable directory on local disk",
        );
    }
    match magic {
        Some(m) if fstype::network_name(m).is_some() => Probe::limited(
            "store",
            format!("{where_}: a network filesystem cannot hold overlayfs writable layers"),
            "set NOOK_ROOT (or --root) to local disk, e.g. a directory under /tmp or /var/tmp",
        ),
        _ => Probe::ok("store", where_),
    }
}

/// An OS error as its message alone ("Permission denied"), without std's "(os error 13)".
fn plain(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A small /proc/sys value, trimmed; `None` when the file is absent (the knob does not exist).
fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_version("4.18.0-513.el8.x86_64"), Some((4, 18)));
        assert_eq!(parse_kernel_version("5.11"), Some((5, 11)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(parse_kernel_version(""), None);
        assert!(parse_kernel_version("5.10.0-28-amd64").unwrap() < OVERLAY_USERNS_MIN);
    }

    #[test]
    fn mountinfo_lines() {
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        let m = parse_mountinfo_line(v2).unwrap();
        assert_eq!(m.root, "/");
        assert_eq!(m.mount_point, "/sys/fs/cgroup");
        assert_eq!(m.fs_type, "cgroup2");
        assert_eq!(m.super_options, "rw,nsdelegate,memory_recursiveprot");

        // No optional fields, v1 with two controllers.
        let v1 =
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct";
        let m = parse_mountinfo_line(v1).unwrap();
        assert_eq!(m.fs_type, "cgroup");
        assert_eq!(v1_controllers(&m.super_options), vec!["cpu", "cpuacct"]);
        assert!(v1_controllers("rw,name=systemd").is_empty());
        assert!(v1_controllers("rw,xattr,release_agent=/x,name=systemd").is_empty());

        // Escaped space in a mount point, several optional fields.
        let esc = "99 1 8:1 /data /mnt/my\\040disk rw shared:1 master:2 - ext4 /dev/sda1 rw";
        let m = parse_mountinfo_line(esc).unwrap();
        assert_eq!(m.root, "/data");
        assert_eq!(m.mount_point, "/mnt/my disk");
        assert_eq!(m.fs_type, "ext4");

        assert_eq!(unescape_mountinfo("a\\134b\\011c\\"), "a\\b\tc\\");
        assert_eq!(unescape_mountinfo("\\04"), "\\04");
        assert!(parse_mountinfo_line("").is_none());
        assert!(parse_mountinfo_line("1 2 3 4 5 6 7").is_none());
        assert!(parse_mountinfo_line("1 2 0:1 / /x rw -").is_none());
    }

    fn mounts(text: &str) -> Vec<MountInfo> {
        text.lines().filter_map(parse_mountinfo_line).collect()
    }

    #[test]
    fn cgroup_layouts() {
        let pure = mounts(
            "30 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n\
             22 1 0:21 / /proc rw - proc proc rw",
        );
        assert!(
            matches!(classify_cgroups(&pure), CgroupLayout::V2 { mount } if mount.mount_point == "/sys/fs/cgroup")
        );

        // This host: v1 controllers plus a controller-less cgroup2 at /sys/fs/cgroup/unified.
        let hybrid = mounts(
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
        );
        match classify_cgroups(&hybrid) {
            CgroupLayout::Hybrid {
                mount,
                v1_controllers,
            } => {
                assert_eq!(mount.mount_point, "/sys/fs/cgroup/unified");
                assert_eq!(v1_controllers, vec!["cpu", "memory"]);
            }
            other => panic!("expected hybrid, got {other:?}"),
        }

        // A named v1 hierarchy without controllers beside cgroup2 still leaves limits on v2.
        let named = mounts(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
             40 30 0:37 / /run/systemd-v1 rw - cgroup cgroup rw,name=systemd",
        );
        assert!(matches!(classify_cgroups(&named), CgroupLayout::V2 { .. }));

        let v1 = mounts("32 31 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids");
        assert_eq!(
            classify_cgroups(&v1),
            CgroupLayout::V1 {
                v1_controllers: vec!["pids".into()]
            }
        );
        assert_eq!(classify_cgroups(&[]), CgroupLayout::None);
    }

    #[test]
    fn proc_self_cgroup() {
        let hybrid = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/5d98\n0::/\n";
        assert_eq!(parse_proc_cgroup_v2(hybrid).as_deref(), Some("/"));
        let v2 = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-u12.scope\n";
        assert_eq!(
            parse_proc_cgroup_v2(v2).as_deref(),
            Some("/user.slice/user-1000.slice/user@1000.service/app.slice/run-u12.scope")
        );
        // Colons inside the path survive.
        assert_eq!(parse_proc_cgroup_v2("0::/a:b\n").as_deref(), Some("/a:b"));
        assert_eq!(parse_proc_cgroup_v2("4:memory:/x\n"), None);
        assert_eq!(parse_proc_cgroup_v2(""), None);
    }

    #[test]
    fn cgroup_dirs() {
        let at = |root: &str, mp: &str| MountInfo {
            root: root.into(),
            mount_point: mp.into(),
            fs_type: "cgroup2".into(),
            super_options: "rw".into(),
        };
        assert_eq!(
            cgroup_dir(&at("/", "/sys/fs/cgroup"), "/"),
            Some(PathBuf::from("/sys/fs/cgroup/"))
        );
        assert_eq!(
            cgroup_dir(&at("/", "/sys/fs/cgroup"), "/user.slice/u.scope"),
            Some(PathBuf::from("/sys/fs/cgroup/user.slice/u.scope"))
        );
        // A bind-mounted subtree: strip its root.
        assert_eq!(
            cgroup_dir(&at("/kubepods/pod1", "/sys/fs/cgroup"), "/kubepods/pod1/c1"),
            Some(PathBuf::from("/sys/fs/cgroup/c1"))
        );
        assert_eq!(
            cgroup_dir(&at("/kubepods/pod1", "/sys/fs/cgroup"), "/kubepods/pod10"),
            None
        );
        assert_eq!(
            cgroup_dir(&at("/kubepods", "/sys/fs/cgroup"), "/other"),
            None
        );
        // Outside a cgroup namespace's root.
        assert_eq!(cgroup_dir(&at("/", "/sys/fs/cgroup"), "/../../x"), None);
        assert_eq!(cgroup_dir(&at("/", "/sys/fs/cgroup"), "relative"), None);
    }

    #[test]
    fn probe_all_is_complete_and_fast() {
        let t = std::time::Instant::now();
        let r = probe_all();
        let names: Vec<&str> = r.probes.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "kernel",
                "userns",
                "subuid",
                "subgid",
                "helper",
                "overlay",
                "fuse",
                "tun",
                "ping",
                "cgroup",
                "seccomp",
                "runtime-dir",
                "store"
            ]
        );
        for p in &r.probes {
            assert!(!p.detail.is_empty(), "{} has no detail", p.name);
            assert_eq!(
                p.status == Status::Ok,
                p.fix.is_none(),
                "{}: fix iff not ok",
                p.name
            );
        }
        assert!(r.probe("userns").is_some());
        assert!(
            t.elapsed() < std::time::Duration::from_millis(500),
            "took {:?}",
            t.elapsed()
        );
    }
}
