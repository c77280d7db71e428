//! Which union driver this machine can use, decided once and cached.
//!
//! The only reliable test is to try: a short-lived child process creates a user and
//! mount namespace (single-ID map: the caller as root), mounts overlayfs with
//! `userxattr` over scratch directories on the filesystem that will hold the writable
//! layers, deletes a lower file through it and checks that a whiteout appeared in the
//! upper layer; a second child mounts a FUSE filesystem the same way (opening /dev/fuse
//! inside the namespace, as a container does). Both exit at once; their namespaces and
//! mounts vanish with them. The verdicts are cached in `<runtime dir>/storage-probe`,
//! keyed by kernel release, boot id and the filesystem type of the layer location, so
//! a run pays for the probe once per boot.
//!
//! Choice: overlay if it works, else fuse, else copy; `--storage-driver` skips the
//! choice but not the check (a driver that cannot work fails with the probe's reason).

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::at::fstype;
use crate::union::{Driver, Result, UnionError};

/// The driver chosen and why, for `nook info` and error messages.
#[derive(Debug, Clone)]
pub struct Choice {
    pub driver: Driver,
    pub reason: String,
}

/// Verdicts of the two mount probes (`Ok` or why not).
#[derive(Debug, Clone)]
pub struct Verdicts {
    pub overlay: std::result::Result<(), String>,
    pub fuse: std::result::Result<(), String>,
}

/// Chooses a driver for layers whose writable part lives under `layer_base`; `cache_dir`
/// (the runtime dir) keeps the verdicts.
pub fn choose(requested: Option<Driver>, layer_base: &Path, cache_dir: &Path) -> Result<Choice> {
    let v = verdicts(layer_base, cache_dir);
    match requested {
        Some(Driver::Copy) => Ok(Choice {
            driver: Driver::Copy,
            reason: "--storage-driver copy".into(),
        }),
        Some(d @ Driver::Overlay) | Some(d @ Driver::Fuse) => {
            let verdict = if d == Driver::Overlay {
                &v.overlay
            } else {
                &v.fuse
            };
            match verdict {
                Ok(()) => Ok(Choice {
                    driver: d,
                    reason: format!("--storage-driver {d}"),
                }),
                Err(why) => Err(UnionError::Unusable {
                    driver: d,
                    why: format!("{why}; {}", alternatives(d, &v)),
                }),
            }
        }
        None => Ok(auto(&v)),
    }
}

/// What to use instead of `refused`: the other drivers that work here.
fn alternatives(refused: Driver, v: &Verdicts) -> String {
    let other = match refused {
        Driver::Overlay => Some((Driver::Fuse, &v.fuse)),
        Driver::Fuse => Some((Driver::Overlay, &v.overlay)),
        Driver::Copy => None,
    };
    match other {
        Some((d, Ok(()))) => format!(
            "--storage-driver {d} works here (or copy: a full copy of the image per \
             container)"
        ),
        _ => {
            "--storage-driver copy works here (a full copy of the image per container)".to_string()
        }
    }
}

/// The automatic choice from probe verdicts.
pub fn auto(v: &Verdicts) -> Choice {
    match (&v.overlay, &v.fuse) {
        (Ok(()), _) => Choice {
            driver: Driver::Overlay,
            reason: "kernel overlayfs mounts in a user namespace here (userxattr)".into(),
        },
        (Err(o), Ok(())) => Choice {
            driver: Driver::Fuse,
            reason: format!("overlayfs unusable ({o}); FUSE mounts in a user namespace work"),
        },
        (Err(o), Err(f)) => Choice {
            driver: Driver::Copy,
            reason: format!("overlayfs unusable ({o}); FUSE unusable ({f}): layers are copied"),
        },
    }
}

fn cache_key(layer_base: &Path) -> String {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let fs = fstype::magic_of(layer_base).map_or("?".into(), |t| format!("{t:x}"));
    format!("{}|{}|{fs}", release.trim(), boot.trim())
}

/// The probe verdicts, from the cache when it is for this boot, kernel and filesystem.
pub fn verdicts(layer_base: &Path, cache_dir: &Path) -> Verdicts {
    let key = cache_key(layer_base);
    let cache = cache_dir.join("storage-probe");
    if let Ok(text) = fs::read_to_string(&cache) {
        let mut lines = text.lines();
        if lines.next() == Some(key.as_str()) {
            let parse = |l: Option<&str>| match l {
                Some("ok") => Some(Ok(())),
                Some(why) => Some(Err(why.to_string())),
                None => None,
            };
            if let (Some(overlay), Some(fuse)) = (parse(lines.next()), parse(lines.next())) {
                return Verdicts { overlay, fuse };
            }
        }
    }
    let v = probe_now(layer_base);
    let show = |r: &std::result::Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.replace('\n', " "),
    };
    let tmp = cache.with_extension("tmp");
    let text = format!("{key}\n{}\n{}\n", show(&v.overlay), show(&v.fuse));
    if crate::store::create_private(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .is_ok()
    {
        let _ = fs::rename(&tmp, &cache);
    }
    v
}

/// Runs both mount probes in scratch directories under `layer_base`.
pub fn probe_now(layer_base: &Path) -> Verdicts {
    let scratch = layer_base.join(format!(".probe-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let made = ["l", "u", "w", "m", "f"]
        .iter()
        .try_for_each(|d| fs::create_dir_all(scratch.join(d)))
        .and_then(|()| fs::write(scratch.join("l/file"), b"x"));
    let v = match made {
        Err(e) => {
            let why = format!(
                "cannot create scratch dirs in {}: {e}",
                layer_base.display()
            );
            Verdicts {
                overlay: Err(why.clone()),
                fuse: Err(why),
            }
        }
        Ok(()) => Verdicts {
            overlay: probe_overlay(&scratch),
            fuse: probe_fuse(&scratch),
        },
    };
    // overlayfs leaves work/work with mode 0: make it removable.
    let _ = fs::set_permissions(scratch.join("w/work"), fs::Permissions::from_mode(0o700));
    let _ = fs::remove_dir_all(&scratch);
    v
}

/// The network or cluster filesystem `p` is on, if any (nook_at::fstype's table, which
/// `nook info` reads too): such a filesystem cannot hold a writable layer.
pub fn is_network_fs(p: &Path) -> Option<&'static str> {
    fstype::network_name(fstype::magic_of(p)?)
}

/// Where writable layers go: `preferred` unless it sits on a network filesystem, then
/// `$XDG_RUNTIME_DIR/nook/layers` or `$TMPDIR/nook-layers-UID`, with the notice line to
/// print.
pub fn local_layer_base(preferred: &Path) -> (PathBuf, Option<String>) {
    let probe_at = preferred
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(preferred);
    let Some(kind) = is_network_fs(probe_at) else {
        return (preferred.to_path_buf(), None);
    };
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let local = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir() && is_network_fs(p).is_none())
        .map(|p| p.join("nook/layers"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("nook-layers-{uid}")));
    let notice = format!(
        "{} is on {kind}, which cannot hold a container's writable layer: using {}",
        preferred.display(),
        local.display()
    );
    (local, Some(notice))
}

// ---------------------------------------------------------------------------------------
// The probe children

struct ChildArgs {
    uid_map: CString,
    gid_map: CString,
    paths: Vec<CString>,
    data: CString,
}

fn probe_overlay(scratch: &Path) -> std::result::Result<(), String> {
    let p = |s: &str| crate::union::sys::cpath(&scratch.join(s)).map_err(|e| e.to_string());
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        scratch.join("l").display(),
        scratch.join("u").display(),
        scratch.join("w").display()
    );
    let args = ChildArgs {
        uid_map: maps().0,
        gid_map: maps().1,
        paths: vec![p("m")?, p("m/file")?, p("u/file")?],
        data: CString::new(data).map_err(|e| e.to_string())?,
    };
    run_child(&args, |a| {
        let (m, mfile, ufile) = (&a.paths[0], &a.paths[1], &a.paths[2]);
        // SAFETY: every pointer is a NUL-terminated string prepared before fork.
        unsafe {
            if libc::mount(
                c"overlay".as_ptr(),
                m.as_ptr(),
                c"overlay".as_ptr(),
                0,
                a.data.as_ptr().cast(),
            ) != 0
            {
                return 10;
            }
            if libc::unlink(mfile.as_ptr()) != 0 {
                return 11;
            }
            let mut st: libc::stat = std::mem::zeroed();
            if libc::lstat(ufile.as_ptr(), &mut st) != 0
                || st.st_mode & libc::S_IFMT != libc::S_IFCHR
            {
                return 12;
            }
        }
        0
    })
    .map_err(|code| match code {
        10 => "mount -t overlay -o userxattr failed in a user namespace (kernel < 5.11, or the \
               layer location's filesystem lacks user xattrs)"
            .to_string(),
        11 | 12 => "overlayfs mounted but could not create a whiteout in the upper layer".into(),
        other => format!("probe child failed ({other})"),
    })
}

fn probe_fuse(scratch: &Path) -> std::result::Result<(), String> {
    let p = |s: &str| crate::union::sys::cpath(&scratch.join(s)).map_err(|e| e.to_string());
    let args = ChildArgs {
        uid_map: maps().0,
        gid_map: maps().1,
        paths: vec![p("f")?],
        data: CString::default(),
    };
    run_child(&args, |a| {
        // SAFETY: NUL-terminated strings prepared before fork; the buffer is on our stack.
        unsafe {
            let fd = libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if fd < 0 {
                return match *libc::__errno_location() {
                    libc::EACCES | libc::EPERM => 20,
                    libc::ENOENT | libc::ENODEV | libc::ENXIO => 23,
                    _ => 24,
                };
            }
            let mut buf = [0u8; 96];
            let n = libc::snprintf(
                buf.as_mut_ptr().cast(),
                buf.len(),
                c"fd=%d,rootmode=40000,user_id=0,group_id=0".as_ptr(),
                fd,
            );
            if n <= 0 {
                return 22;
            }
            if libc::mount(
                c"nook".as_ptr(),
                a.paths[0].as_ptr(),
                c"fuse".as_ptr(),
                0,
                buf.as_ptr().cast(),
            ) != 0
            {
                return 21;
            }
        }
        0
    })
    .map_err(|code| match code {
        20 => format!(
            "you may not open /dev/fuse read-write ({}): {}",
            fuse_node(),
            FUSE_ACCESS_FIX
        ),
        23 => "there is no /dev/fuse: an administrator can load the module with `modprobe \
               fuse`"
            .into(),
        24 => format!("cannot open /dev/fuse read-write ({})", fuse_node()),
        21 => "mount -t fuse refused in a user namespace (kernel < 4.18?)".into(),
        other => format!("probe child failed ({other})"),
    })
}

/// How an administrator makes /dev/fuse usable (said by the probe and by a container
/// whose open of it fails).
pub const FUSE_ACCESS_FIX: &str = "an administrator can allow it with `chmod 0666 /dev/fuse` \
     (the mode most distributions give it)";

/// `/dev/fuse`'s mode and owner, for a message.
pub fn fuse_node() -> String {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata("/dev/fuse") {
        Ok(m) => {
            let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.gid()))
                .ok()
                .flatten()
                .map_or_else(|| m.gid().to_string(), |g| g.name);
            format!("mode {:04o}, group {group}", m.mode() & 0o7777)
        }
        Err(e) => e.to_string(),
    }
}

fn maps() -> (CString, CString) {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    (
        CString::new(format!("0 {uid} 1")).unwrap_or_default(),
        CString::new(format!("0 {gid} 1")).unwrap_or_default(),
    )
}

/// Forks a child that enters a new user+mount namespace mapped to the caller, runs
/// `body` there and exits with its status. The caller must be single-threaded (true of
/// nook before a container starts); the child makes only raw system calls.
fn run_child(args: &ChildArgs, body: fn(&ChildArgs) -> i32) -> std::result::Result<(), i32> {
    // SAFETY: fork in a single-threaded process; the child only makes system calls on
    // memory prepared before the fork and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(-1);
    }
    if pid == 0 {
        // SAFETY: raw system calls on prepared buffers, then _exit.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                libc::_exit(2);
            }
            let write = |path: &std::ffi::CStr, data: &CString| {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return false;
                }
                let b = data.as_bytes();
                let ok = libc::write(fd, b.as_ptr().cast(), b.len()) == b.len() as isize;
                libc::close(fd);
                ok
            };
            let deny = CString::from(c"deny");
            if !write(c"/proc/self/setgroups", &deny)
                || !write(c"/proc/self/uid_map", &args.uid_map)
                || !write(c"/proc/self/gid_map", &args.gid_map)
            {
                libc::_exit(3);
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                libc::_exit(4);
            }
            libc::_exit(body(args));
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(-1);
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else if libc::WIFEXITED(status) {
        Err(libc::WEXITSTATUS(status))
    } else {
        Err(-2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_overlay_then_fuse_then_copy() {
        let v = Verdicts {
            overlay: Ok(()),
            fuse: Ok(()),
        };
        assert_eq!(auto(&v).driver, Driver::Overlay);
        let v = Verdicts {
            overlay: Err("old".into()),
            fuse: Ok(()),
        };
        assert_eq!(auto(&v).driver, Driver::Fuse);
        let v = Verdicts {
            overlay: Err("old".into()),
            fuse: Err("no".into()),
        };
        let c = auto(&v);
        assert_eq!(c.driver, Driver::Copy);
        assert!(c.reason.contains("old") && c.reason.contains("no"));
    }
}
