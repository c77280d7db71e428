//! The container's mount table, built inside its own mount namespace.
//!
//! Order (runs in the child, after the ID maps are written):
//! 1. `/` becomes rprivate, so nothing propagates back to the host's mount table.
//! 2. The root: the spec's mount at `/` if it has one (the built-in `host` image mounts a
//!    fresh tmpfs there), else a bind of `root.path` onto itself (pivot_root needs a
//!    mount point).
//! 3. The spec's mounts in order, each destination resolved inside the root.
//! 4. Devices: an unprivileged process cannot mknod, so /dev/null & co. are bind mounts
//!    of the host's nodes, as in every rootless runtime.
//! 5. pivot_root into the root and detach the old one (no chroot: chroot can be escaped).
//! 6. Masked paths, read-only paths, and a read-only root if asked.
//!
//! Every destination below the root comes from an image, a flag or a spec, so none is
//! trusted: the confined resolver (nook-at, `Root::open_or_create`) opens it inside the
//! root, creating what is missing there (a file for a file bind mount), and the mount is
//! made onto that descriptor (mount_fd.rs), so a component swapped for a symlink after
//! the check cannot redirect it onto a host path. Bind sources are opened once and
//! mounted through that descriptor too. Only the root itself and `/` after pivot_root,
//! nook's own choices, are mounted by path.
//!
//! A bind mount made read-only inside a user namespace must keep the flags that are
//! locked on its source (nosuid, nodev, noexec, atime), or the kernel refuses the
//! remount; `locked_flags` reads them with statvfs (mount_fd.rs does the same where it
//! remounts; mount_setattr needs none of that).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::statvfs;
use nook_at::{Make, Root};
use oci_spec::runtime::{Mount, Spec};

use crate::error::{Context, Error, Result};
use crate::mount_fd::{self, Dest};

/// Device nodes every container gets (runtime-spec "Default Devices").
const DEFAULT_DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

const DEV_SYMLINKS: [(&str, &str); 6] = [
    ("/proc/self/fd", "dev/fd"),
    ("/proc/self/fd/0", "dev/stdin"),
    ("/proc/self/fd/1", "dev/stdout"),
    ("/proc/self/fd/2", "dev/stderr"),
    ("/proc/kcore", "dev/core"),
    ("pts/ptmx", "dev/ptmx"),
];

pub use crate::mount_fd::MS_NOSYMFOLLOW;

/// A spec's mount options, sorted into what each is for. Nothing a runtime or an engine
/// defines reaches the kernel as filesystem data: only the options left over, which
/// belong to the filesystem (`size=`, `mode=`, `lowerdir=` ...), are passed to it.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags cleared by an explicit option (`rw`, `suid`, ...).
    pub cleared: MsFlags,
    /// Per-mount flags asked for recursively (`rro`, `rnosuid` ...: runc's and crun's
    /// mount_setattr options), for every submount of a recursive bind too.
    pub rec_flags: MsFlags,
    pub propagation: MsFlags,
    pub bind: bool,
    pub recursive: bool,
    /// `tmpcopyup` (runc, crun): a tmpfs starts with a copy of what is below it.
    pub tmpcopyup: bool,
    /// `idmap`/`ridmap` (crun, runc 1.2): an ID-mapped mount, which nook does not make.
    pub idmap: bool,
    /// `src-nofollow` (crun): a symlink as the bind source is mounted itself, not
    /// followed.
    pub src_nofollow: bool,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            rec_flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            bind: false,
            recursive: false,
            tmpcopyup: false,
            idmap: false,
            src_nofollow: false,
            data: Vec::new(),
        }
    }
}

/// Options that runc and crun know and that set (or, second, clear) a mount flag.
const FLAG_OPTIONS: [(&str, &str, MsFlags); 10] = [
    ("ro", "rw", MsFlags::MS_RDONLY),
    ("nosuid", "suid", MsFlags::MS_NOSUID),
    ("nodev", "dev", MsFlags::MS_NODEV),
    ("noexec", "exec", MsFlags::MS_NOEXEC),
    ("sync", "async", MsFlags::MS_SYNCHRONOUS),
    ("noatime", "atime", MsFlags::MS_NOATIME),
    ("nodiratime", "diratime", MsFlags::MS_NODIRATIME),
    ("relatime", "norelatime", MsFlags::MS_RELATIME),
    ("strictatime", "nostrictatime", MsFlags::MS_STRICTATIME),
    ("nosymfollow", "symfollow", MS_NOSYMFOLLOW),
];

/// Options that mean something to an engine (podman, Docker) or to another runtime's
/// feature, and nothing to the filesystem: a client may leave them in a spec, and runc
/// and crun do not hand them to the kernel either (a tmpfs refuses unknown parameters).
/// `z`/`Z` relabel and `U` chowns the source before the runtime runs; `copy`/`nocopy`
/// say whether a new named volume is filled from the image; `notmpcopyup` is the
/// default here; `O` is podman's overlay volume; mandatory locking (`mand`) is gone
/// from Linux (5.15); `defaults` and `remount` change nothing on a new mount;
/// `dest-nofollow` and `copy-symlink` are crun's (nook resolves destinations inside
/// the root, and binds what a symlink source leads to, unless `src-nofollow`).
const IGNORED_OPTIONS: [&str; 16] = [
    "defaults",
    "remount",
    "z",
    "Z",
    "U",
    "O",
    "copy",
    "nocopy",
    "notmpcopyup",
    "mand",
    "nomand",
    "rmand",
    "rnomand",
    "dest-nofollow",
    "copy-symlink",
    "chown",
];

/// Every option [`MountOptions::parse`] understands rather than hands to the
/// filesystem as data, sorted: what `nook oci features` lists as `mountOptions`.
/// `idmap`/`ridmap` are left out: they are recognised only to be refused.
pub fn recognised_options() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for (set, clear, _) in FLAG_OPTIONS {
        for o in [set, clear] {
            v.push(o.to_string());
            v.push(format!("r{o}"));
        }
    }
    v.extend(
        [
            "bind",
            "rbind",
            "dirsync",
            "rdirsync",
            "private",
            "rprivate",
            "slave",
            "rslave",
            "shared",
            "rshared",
            "unbindable",
            "runbindable",
            "tmpcopyup",
            "src-nofollow",
        ]
        .iter()
        .chain(IGNORED_OPTIONS.iter())
        .map(|o| o.to_string()),
    );
    v.sort();
    v.dedup();
    v
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut o = MountOptions::default();
        for opt in options {
            let opt = opt.as_str();
            if let Some(&(_, _, flag)) = FLAG_OPTIONS.iter().find(|(set, _, _)| *set == opt) {
                o.flags |= flag;
                continue;
            }
            if let Some(&(_, _, flag)) = FLAG_OPTIONS.iter().find(|(_, clear, _)| *clear == opt) {
                o.cleared |= flag;
                continue;
            }
            // The recursive forms: rro, rrw, rnosuid, rsuid ...
            let recursive = opt.strip_prefix('r').and_then(|base| {
                FLAG_OPTIONS
                    .iter()
                    .find_map(|&(set, clear, flag)| match base {
                        b if b == set => Some((flag, true)),
                        b if b == clear => Some((flag, false)),
                        _ => None,
                    })
            });
            if let Some((flag, set)) = recursive {
                if set {
                    o.rec_flags |= flag;
                } else {
                    o.cleared |= flag;
                }
                continue;
            }
            match opt {
                "bind" => o.bind = true,
                "rbind" => {
                    o.bind = true;
                    o.recursive = true
                }
                "dirsync" | "rdirsync" => o.flags |= MsFlags::MS_DIRSYNC,
                "private" => o.propagation |= MsFlags::MS_PRIVATE,
                "rprivate" => o.propagation |= MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                "slave" => o.propagation |= MsFlags::MS_SLAVE,
                "rslave" => o.propagation |= MsFlags::MS_SLAVE | MsFlags::MS_REC,
                "shared" => o.propagation |= MsFlags::MS_SHARED,
                "rshared" => o.propagation |= MsFlags::MS_SHARED | MsFlags::MS_REC,
                "unbindable" => o.propagation |= MsFlags::MS_UNBINDABLE,
                "runbindable" => o.propagation |= MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
                "tmpcopyup" => o.tmpcopyup = true,
                "src-nofollow" => o.src_nofollow = true,
                "idmap" | "ridmap" => o.idmap = true,
                o_ if o_.starts_with("idmap=") || o_.starts_with("ridmap=") => o.idmap = true,
                o_ if IGNORED_OPTIONS.contains(&o_) => {}
                other => o.data.push(other.to_string()),
            }
        }
        o
    }

    /// Whether the filesystem data sets `key` (`mode`, `uid` ...).
    fn sets(&self, key: &str) -> bool {
        self.data
            .iter()
            .any(|d| d.split_once('=').is_some_and(|(k, _)| k == key))
    }
}

/// Flags of the mount at `path` that a remount inside a user namespace must keep.
fn locked_flags(path: &Path) -> MsFlags {
    statvfs(path).map_or(MsFlags::empty(), |st| crate::mount_fd::locked_ms_flags(&st))
}

/// Steps 1 to 4: everything done with host paths, before pivot_root.
pub(crate) fn prepare_root(
    spec: &Spec,
    rootfs: &Path,
    fuse_socket: Option<std::os::fd::RawFd>,
) -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context(|| "making the container's mount namespace private".into())?;

    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let (root_mounts, other_mounts): (Vec<&Mount>, Vec<&Mount>) = mounts
        .iter()
        .partition(|m| m.destination() == Path::new("/"));
    match root_mounts.first() {
        Some(root_mount) if is_fuse(root_mount) => {
            mount_fuse_root(rootfs, root_mount, fuse_socket)?
        }
        Some(root_mount) => mount_root(rootfs, root_mount)?,
        None => bind(rootfs, rootfs, true)?,
    }
    // Opened once the root is mounted: every destination is resolved from here.
    let root = Root::open_container(rootfs)
        .context(|| format!("opening the container's root {}", rootfs.display()))?;
    for m in other_mounts {
        mount_entry(&root, m)?;
    }
    bind_devices(&root)?;
    dev_symlinks(&root);
    Ok(())
}

/// Opens `path` (a container path) inside `root` for a mount onto it, creating it as
/// `make` when missing. A refusal says why in the user's terms.
fn destination<'a>(root: &'a Root, path: &'a Path, make: Make) -> Result<Dest<'a>> {
    match root.open_or_create(path, make) {
        Ok(fd) => Ok(Dest { fd, root, path }),
        Err(e) => Err(refused(path, "mount destination", e)),
    }
}

/// The error for a container path that cannot be resolved inside the root: a symlink
/// loop or a /proc magic link (ELOOP) is named as such.
fn refused(path: &Path, what: &str, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return Error::Setup(format!(
            "{what} {}: refused: it goes through a symlink loop or a /proc magic link \
             (/proc/self/fd/N, /proc/self/cwd ...), which could lead out of the container",
            path.display()
        ));
    }
    Error::sys(
        format!("resolving {what} {} inside the container", path.display()),
        e,
    )
}

/// A host path nook or the user chose (a bind source, a device node): opened once, so
/// what is mounted is what was opened.
fn open_source(path: &Path) -> io::Result<OwnedFd> {
    nook_at::openat(
        libc::AT_FDCWD,
        &nook_at::cstr(path.as_os_str())?,
        libc::O_PATH,
        0,
    )
}

fn is_dir(fd: &OwnedFd) -> io::Result<bool> {
    let st = nook_at::fstatat(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

fn is_fuse(m: &Mount) -> bool {
    m.typ()
        .as_deref()
        .is_some_and(|t| t == "fuse" || t.starts_with("fuse."))
}

/// A FUSE root (nook's union driver): the connection must be opened here, inside the
/// container's user namespace, for the kernel to accept it for this mount; the server
/// (outside) receives the descriptor over `socket`. Mounts made on the root afterwards
/// wait for the server's answers, so nothing races its start.
fn mount_fuse_root(rootfs: &Path, m: &Mount, socket: Option<std::os::fd::RawFd>) -> Result<()> {
    use std::os::fd::AsRawFd;
    let socket = socket.ok_or_else(|| {
        Error::Setup("the root is a FUSE mount but no server socket was given".into())
    })?;
    let dev = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| {
            let fix = match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    "; an administrator can allow it with `chmod 0666 /dev/fuse`, or use \
                     --storage-driver overlay or copy"
                }
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    "; an administrator can load it with `modprobe fuse`, or use \
                     --storage-driver overlay or copy"
                }
                _ => "",
            };
            Error::Setup(format!(
                "opening /dev/fuse in the container's user namespace: {e}{fix}"
            ))
        })?;
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    let mut data = vec![format!("fd={}", dev.as_raw_fd())];
    data.extend(opts.data.iter().cloned());
    let typ = m.typ().as_deref().unwrap_or("fuse");
    if let Some(sub) = typ.strip_prefix("fuse.") {
        data.push(format!("subtype={sub}"));
    }
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from("nook"));
    mount(
        Some(&source),
        rootfs,
        Some("fuse"),
        opts.flags,
        Some(data.join(",").as_str()),
    )
    .context(|| format!("mounting the FUSE root on {}", rootfs.display()))?;
    let fds = [dev.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        socket,
        &[std::io::IoSlice::new(b"F")],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .context(|| "handing the FUSE connection to its server".into())?;
    // Our copy closes here: the server's is the connection's only reader.
    drop(dev);
    let _ = nix::unistd::close(socket);
    Ok(())
}

/// One of the spec's mounts below the root, onto its destination resolved inside it.
fn mount_entry(root: &Root, m: &Mount) -> Result<()> {
    let mut opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    let typ = match m.typ().as_deref().unwrap_or("none") {
        // Specs written for runc/crun (podman's) say "cgroup"; inside a user namespace
        // only the unified hierarchy can be mounted.
        "cgroup" => "cgroup2",
        other => other,
    };
    if typ == "devpts" {
        opts.data = devpts_options(
            opts.data,
            &read_own_map("uid_map"),
            &read_own_map("gid_map"),
        );
    }
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let what = || {
        format!(
            "mounting {} on {}",
            source.display(),
            m.destination().display()
        )
    };
    if opts.idmap {
        return Err(Error::Spec(format!(
            "the mount on {} asks for an ID-mapped mount (idmap), which nook does not make: \
             leave the option out (the files then show their owners as the container's ID \
             map gives them)",
            m.destination().display()
        )));
    }
    let top = if opts.bind {
        let src = if opts.src_nofollow {
            open_source_nofollow(&source)
        } else {
            open_source(&source)
        }
        .map_err(|e| with_hint(Error::sys(what(), e), what()))?;
        let make = if is_dir(&src).context(what)? {
            Make::Dir
        } else {
            Make::File
        };
        let dest = destination(root, m.destination(), make)?;
        let top = mount_fd::bind_onto(src.as_fd(), opts.recursive, &dest).context(what)?;
        let wanted = opts.flags & !opts.cleared;
        if !wanted.is_empty() {
            mount_fd::set_flags(&top, wanted, opts.recursive)
                .context(|| format!("remounting {} with {wanted:?}", m.destination().display()))?;
        }
        let everywhere = opts.rec_flags & !opts.cleared;
        if !everywhere.is_empty() {
            mount_fd::set_flags(&top, everywhere, true).context(|| {
                format!(
                    "remounting {} and its submounts with {everywhere:?}",
                    m.destination().display()
                )
            })?;
        }
        top
    } else if opts.tmpcopyup && typ == "tmpfs" {
        // A mount point nook creates is no content of the image's: its tmpfs keeps the
        // usual root (1777, or the options').
        let in_image = root.open_in(m.destination(), libc::O_PATH).is_ok();
        let dest = destination(root, m.destination(), Make::Dir)?;
        tmpfs_copied_up(&opts, &source, &dest, in_image).context(what)?
    } else {
        let dest = destination(root, m.destination(), Make::Dir)?;
        let data = opts.data.join(",");
        let flags = (opts.flags | opts.rec_flags) & !opts.cleared;
        if typ == "overlay" && data.len() > crate::overlay_api::MOUNT_DATA_MAX {
            let tree = crate::overlay_api::overlay_tree(&opts.data)?;
            mount_fd::attach(tree, &dest).context(what)?
        } else {
            let source = source.to_string_lossy();
            match mount_fd::new_fs_onto(typ, &source, &opts.data, flags, &dest) {
                Ok(top) => top,
                // sysfs can be mounted only by the owner of the current network
                // namespace: with the host's network, show the host's /sys read-only.
                // A cgroup2 mount needs a cgroup namespace of the container's own; a
                // spec without one (crun's rootless template) gets the host's hierarchy
                // read-only, as crun gives it.
                Err(e)
                    if mount_fd::errno(&e) == Some(libc::EPERM)
                        && (typ == "sysfs" || typ == "cgroup2") =>
                {
                    let host = if typ == "sysfs" {
                        "/sys"
                    } else {
                        "/sys/fs/cgroup"
                    };
                    let src = open_source(Path::new(host)).context(what)?;
                    let top = mount_fd::bind_onto(src.as_fd(), true, &dest).context(what)?;
                    mount_fd::set_flags(&top, MsFlags::MS_RDONLY | flags, true).context(what)?;
                    top
                }
                Err(e) => return Err(Error::sys(what(), e)),
            }
        }
    };
    if !opts.propagation.is_empty() {
        mount_fd::set_propagation(&top, opts.propagation).context(what)?;
    }
    Ok(())
}

/// A tmpfs with `tmpcopyup` (copyup.rs): the directory below is opened before the
/// tmpfs covers it, the tmpfs is mounted writable, filled, then made read-only if asked.
fn tmpfs_copied_up(
    opts: &MountOptions,
    source: &Path,
    dest: &Dest,
    in_image: bool,
) -> io::Result<mount_fd::Top> {
    let below = nook_at::openat(
        dest.fd.as_raw_fd(),
        c".",
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?;
    let flags = (opts.flags | opts.rec_flags) & !opts.cleared;
    let source = source.to_string_lossy();
    let top = mount_fd::new_fs_onto(
        "tmpfs",
        &source,
        &opts.data,
        flags - MsFlags::MS_RDONLY,
        dest,
    )?;
    let root = nook_at::openat(
        top.as_fd().as_raw_fd(),
        c".",
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?;
    crate::copyup::copy_up(
        &below,
        &root,
        !in_image || opts.sets("mode"),
        !in_image || opts.sets("uid") || opts.sets("gid"),
    )
    .map_err(|e| io::Error::new(e.kind(), format!("tmpcopyup: copying {e}")))?;
    if flags.contains(MsFlags::MS_RDONLY) {
        mount_fd::set_flags(&top, MsFlags::MS_RDONLY, false)?;
    }
    Ok(top)
}

/// A bind source that may be a symlink, opened as the symlink itself (`src-nofollow`).
fn open_source_nofollow(path: &Path) -> io::Result<OwnedFd> {
    nook_at::openat(
        libc::AT_FDCWD,
        &nook_at::cstr(path.as_os_str())?,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
    )
}

/// This process's own ID map (`/proc/self/uid_map` or `gid_map`); the identity map of
/// every ID where it cannot be read.
fn read_own_map(file: &str) -> Vec<crate::idmap::IdRange> {
    match fs::read_to_string(format!("/proc/self/{file}")) {
        Ok(text) => crate::idmap::parse_map(&text),
        Err(_) => vec![crate::idmap::IdRange {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }],
    }
}

/// devpts's `uid=`/`gid=` (the owner of new ptys: the runtime-spec's default `gid=5`,
/// tty) must be mapped in the container's user namespace, or the kernel refuses the
/// mount (EINVAL). With a single-ID map, or a map that leaves the group out, the
/// option is dropped, as crun does: new ptys then belong to the opener's group.
pub(crate) fn devpts_options(
    data: Vec<String>,
    uid_map: &[crate::idmap::IdRange],
    gid_map: &[crate::idmap::IdRange],
) -> Vec<String> {
    data.into_iter()
        .filter(|o| {
            let (map, value) = match o.split_once('=') {
                Some(("uid", v)) => (uid_map, v),
                Some(("gid", v)) => (gid_map, v),
                _ => return true,
            };
            // A value that is not a number is the kernel's to refuse, with its words.
            value
                .parse::<u32>()
                .map_or(true, |id| crate::idmap::is_mapped(map, id))
        })
        .collect()
}

/// The spec's mount at `/`, onto the root directory itself (nook's own path, not taken
/// from the container): a tmpfs for the `host` image, an overlay for a union root.
fn mount_root(dest: &Path, m: &Mount) -> Result<()> {
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let what = || {
        format!(
            "mounting {} on the root {}",
            source.display(),
            dest.display()
        )
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dest)
        .context(what)?;
    if opts.bind {
        bind(&source, dest, opts.recursive).map_err(|e| with_hint(e, what()))?;
        let wanted = opts.flags & !opts.cleared;
        if !wanted.is_empty() {
            remount_bind(dest, wanted, opts.recursive)?;
        }
    } else {
        let data = opts.data.join(",");
        if typ == "overlay" && data.len() > crate::overlay_api::MOUNT_DATA_MAX {
            crate::overlay_api::mount_overlay(&opts.data, dest)?;
        } else {
            let data = (!data.is_empty()).then_some(data);
            mount(Some(&source), dest, Some(typ), opts.flags, data.as_deref()).context(what)?;
        }
    }
    if !opts.propagation.is_empty() {
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            opts.propagation,
            None::<&str>,
        )
        .context(what)?;
    }
    Ok(())
}

fn with_hint(e: Error, what: String) -> Error {
    match e {
        Error::Sys { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
            Error::Setup(format!("{what}: the source does not exist"))
        }
        Error::Sys { error, .. } => Error::sys(what, error),
        other => other,
    }
}

fn bind(source: &Path, dest: &Path, recursive: bool) -> Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(source), dest, None::<&str>, flags, None::<&str>)
        .context(|| format!("bind mounting {} on {}", source.display(), dest.display()))
}

/// Applies `flags` (typically MS_RDONLY) to an existing bind mount, keeping locked flags.
/// For a recursive bind the submounts get the same through mount_setattr where the
/// kernel has it (5.12+); older kernels leave submounts as they were.
fn remount_bind(dest: &Path, flags: MsFlags, recursive: bool) -> Result<()> {
    let locked = locked_flags(dest);
    // The atime mode is locked as a whole: asking another one (a spec's `strictatime`
    // on a bind of a relatime mount) would be refused, so the source's stays.
    let atime = MsFlags::MS_NOATIME | MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME;
    let flags = if locked.intersects(atime) {
        flags - atime
    } else {
        flags
    };
    let all = flags | locked | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    mount(None::<&str>, dest, None::<&str>, all, None::<&str>)
        .context(|| format!("remounting {} with {flags:?}", dest.display()))?;
    if recursive && flags.contains(MsFlags::MS_RDONLY) {
        set_recursive_readonly(dest);
    }
    Ok(())
}

fn set_recursive_readonly(dest: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dest.as_os_str().as_bytes()) else {
        return;
    };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: path is a valid C string and attr a properly sized mount_attr; the syscall
    // only reads them. Failure (old kernel) is acceptable: the top mount is already ro.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        );
    }
}

fn bind_devices(root: &Root) -> Result<()> {
    for dev in DEFAULT_DEVICES {
        let path = Path::new(dev);
        let what = || format!("binding the host's {dev} into the container");
        let src = match open_source(path) {
            Ok(src) => src,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::sys(what(), e)),
        };
        let dest = destination(root, path, Make::File)?;
        mount_fd::bind_onto(src.as_fd(), false, &dest).context(what)?;
    }
    Ok(())
}

fn dev_symlinks(root: &Root) {
    let Ok(dev) = root.open_in(Path::new("/dev"), libc::O_PATH | libc::O_DIRECTORY) else {
        return;
    };
    for (target, link) in DEV_SYMLINKS {
        let name = link.trim_start_matches("dev/");
        if let (Ok(target), Ok(name)) =
            (std::ffi::CString::new(target), std::ffi::CString::new(name))
        {
            // An existing entry (an image's own /dev/ptmx, say) is kept.
            let _ = nook_at::symlinkat(&target, dev.as_raw_fd(), &name);
        }
    }
}

/// Step 5: make `rootfs` the root and detach the host's root from this namespace.
pub(crate) fn pivot_into(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).context(|| format!("chdir {}", rootfs.display()))?;
    nix::unistd::pivot_root(".", ".").context(|| "pivot_root".into())?;
    // The old root now sits under the new one, at the same place: detach it.
    umount2(".", MntFlags::MNT_DETACH).context(|| "detaching the host's root".into())?;
    nix::unistd::chdir("/").context(|| "chdir /".into())
}

/// Step 6, inside the new root: paths resolved inside `/`, which is now the container's.
pub(crate) fn finish_root(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let masked = linux.and_then(|l| l.masked_paths().as_ref());
    let readonly = linux.and_then(|l| l.readonly_paths().as_ref());
    if masked.is_some_and(|m| !m.is_empty()) || readonly.is_some_and(|r| !r.is_empty()) {
        let root = Root::open_container(Path::new("/")).context(|| "opening /".into())?;
        let mut masks = Masks::default();
        for path in masked.into_iter().flatten() {
            mask(&root, Path::new(path), &mut masks)?;
        }
        for path in readonly.into_iter().flatten() {
            make_readonly(&root, Path::new(path))?;
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount_bind(Path::new("/"), MsFlags::MS_RDONLY, false)?;
    }
    if let Some(mode) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        let propagation = MountOptions::parse(&[mode.to_string()]).propagation;
        if propagation.is_empty() {
            return Err(Error::Spec(format!(
                "unknown linux.rootfsPropagation {mode:?}: use shared, slave, private or \
                 unbindable (r- forms too)"
            )));
        }
        mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
            .context(|| format!("making the root {mode}"))?;
    }
    Ok(())
}

/// A masked or read-only path, opened inside the root; `None` when it does not exist
/// (nothing to hide).
fn existing(root: &Root, path: &Path, what: &str) -> Result<Option<OwnedFd>> {
    match root.open_in(path, libc::O_PATH) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(refused(path, what, e)),
    }
}

/// What masks are made of, each made once: /dev/null for files, one empty read-only tmpfs
/// for directories (mounted on the first, cloned onto the others).
#[derive(Default)]
struct Masks {
    null: Option<OwnedFd>,
    empty: Option<mount_fd::Top>,
}

/// Hides a path: files read as /dev/null, directories become an empty read-only tmpfs.
fn mask(root: &Root, path: &Path, masks: &mut Masks) -> Result<()> {
    let Some(fd) = existing(root, path, "masked path")? else {
        return Ok(());
    };
    let what = || format!("masking {}", path.display());
    let dir = is_dir(&fd).context(what)?;
    let dest = Dest { fd, root, path };
    if dir {
        match &masks.empty {
            Some(empty) => {
                mount_fd::bind_onto(empty.as_fd(), false, &dest).context(what)?;
            }
            None => {
                let data = ["size=0".to_string(), "mode=0555".to_string()];
                let top = mount_fd::new_fs_onto("tmpfs", "tmpfs", &data, MsFlags::MS_RDONLY, &dest)
                    .context(what)?;
                masks.empty = Some(top);
            }
        }
        return Ok(());
    }
    if masks.null.is_none() {
        masks.null = Some(open_source(Path::new("/dev/null")).context(what)?);
    }
    let null = masks.null.as_ref().expect("just opened");
    mount_fd::bind_onto(null.as_fd(), false, &dest).context(what)?;
    Ok(())
}

/// Makes a path read-only, its submounts too: a recursive bind of it onto itself.
fn make_readonly(root: &Root, path: &Path) -> Result<()> {
    let Some(fd) = existing(root, path, "read-only path")? else {
        return Ok(());
    };
    let what = || format!("making {} read-only", path.display());
    let dest = Dest { fd, root, path };
    let top = mount_fd::bind_onto(dest.fd.as_fd(), true, &dest).context(what)?;
    mount_fd::set_flags(&top, MsFlags::MS_RDONLY, true).context(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        MountOptions::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_flags_and_data() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        assert!(!o.bind);
    }

    #[test]
    fn parses_recursive_readonly_bind() {
        let o = opts(&["rbind", "ro", "rprivate"]);
        assert!(o.bind && o.recursive);
        assert_eq!(o.flags, MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
    }

    #[test]
    fn devpts_drops_unmapped_owners() {
        use crate::idmap::IdRange;
        let single = [IdRange {
            inside: 0,
            outside: 1000,
            count: 1,
        }];
        let full = [IdRange {
            inside: 0,
            outside: 100000,
            count: 65536,
        }];
        let data = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let given = data(&["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]);
        assert_eq!(
            devpts_options(given.clone(), &single, &single),
            data(&["newinstance", "ptmxmode=0666", "mode=0620"])
        );
        assert_eq!(devpts_options(given.clone(), &full, &full), given);
        assert_eq!(
            devpts_options(data(&["uid=0", "gid=5"]), &single, &full),
            data(&["uid=0", "gid=5"])
        );
        assert_eq!(
            devpts_options(data(&["gid=x"]), &single, &single),
            data(&["gid=x"])
        );
    }

    #[test]
    fn runtime_and_engine_options_never_reach_the_filesystem() {
        // podman's --tmpfs and --read-only tmpfs, and what other clients leave in.
        let o = opts(&["rw", "rprivate", "nosuid", "nodev", "tmpcopyup", "size=1m"]);
        assert!(o.tmpcopyup);
        assert_eq!(o.data, vec!["size=1m"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        for ignored in [
            "notmpcopyup",
            "copy",
            "nocopy",
            "z",
            "Z",
            "U",
            "O",
            "defaults",
            "mand",
            "nomand",
            "remount",
            "dest-nofollow",
            "copy-symlink",
        ] {
            let o = opts(&[ignored, "mode=0700"]);
            assert_eq!(o.data, vec!["mode=0700"], "{ignored}");
            assert!(!o.tmpcopyup, "{ignored}");
        }
        for idmap in ["idmap", "ridmap", "idmap=uids=0-1-10;gids=0-1-10"] {
            let o = opts(&[idmap]);
            assert!(o.idmap && o.data.is_empty(), "{idmap}");
        }
        assert!(opts(&["src-nofollow"]).src_nofollow);
    }

    #[test]
    fn recursive_and_clearing_flags() {
        let o = opts(&["rbind", "rro", "rnosuid", "rnoexec", "nodev"]);
        assert_eq!(
            o.rec_flags,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC
        );
        assert_eq!(o.flags, MsFlags::MS_NODEV);
        let o = opts(&[
            "atime",
            "diratime",
            "async",
            "rrw",
            "norelatime",
            "nosymfollow",
        ]);
        assert_eq!(
            o.cleared,
            MsFlags::MS_NOATIME
                | MsFlags::MS_NODIRATIME
                | MsFlags::MS_SYNCHRONOUS
                | MsFlags::MS_RDONLY
                | MsFlags::MS_RELATIME
        );
        assert_eq!(o.flags, MS_NOSYMFOLLOW);
        assert!(o.data.is_empty());
    }

    #[test]
    fn recognised_options_never_reach_the_kernel() {
        let all = recognised_options();
        assert!(all.len() > 50, "{all:?}");
        for o in &all {
            let parsed = MountOptions::parse(std::slice::from_ref(o));
            assert!(parsed.data.is_empty(), "{o} would be passed as data");
            assert!(!parsed.idmap, "{o}");
        }
        assert!(!all.iter().any(|o| o.contains("idmap")));
    }

    #[test]
    fn rw_clears_readonly() {
        let o = opts(&["bind", "rw"]);
        assert!(o.cleared.contains(MsFlags::MS_RDONLY));
        assert!(o.flags.is_empty());
    }
}
