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
//! A bind mount made read-only inside a user namespace must keep the flags that are
//! locked on its source (nosuid, nodev, noexec, atime), or the kernel refuses the
//! remount; `locked_flags` reads them with statvfs.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::{Mount, Spec};

use crate::error::{Context, Error, Result};
use crate::secure_path::resolve_in_root;

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

/// Mount flags and filesystem data parsed from fstab-style options.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags cleared by an explicit option (`rw`, `suid`, ...).
    pub cleared: MsFlags,
    pub propagation: MsFlags,
    pub bind: bool,
    pub recursive: bool,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: MsFlags::empty(),
            bind: false,
            recursive: false,
            data: Vec::new(),
        }
    }
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut o = MountOptions::default();
        for opt in options {
            match opt.as_str() {
                "bind" => o.bind = true,
                "rbind" => {
                    o.bind = true;
                    o.recursive = true
                }
                "ro" => o.flags |= MsFlags::MS_RDONLY,
                "rw" => o.cleared |= MsFlags::MS_RDONLY,
                "nosuid" => o.flags |= MsFlags::MS_NOSUID,
                "suid" => o.cleared |= MsFlags::MS_NOSUID,
                "nodev" => o.flags |= MsFlags::MS_NODEV,
                "dev" => o.cleared |= MsFlags::MS_NODEV,
                "noexec" => o.flags |= MsFlags::MS_NOEXEC,
                "exec" => o.cleared |= MsFlags::MS_NOEXEC,
                "sync" => o.flags |= MsFlags::MS_SYNCHRONOUS,
                "dirsync" => o.flags |= MsFlags::MS_DIRSYNC,
                "noatime" => o.flags |= MsFlags::MS_NOATIME,
                "nodiratime" => o.flags |= MsFlags::MS_NODIRATIME,
                "relatime" => o.flags |= MsFlags::MS_RELATIME,
                "strictatime" => o.flags |= MsFlags::MS_STRICTATIME,
                "private" => o.propagation |= MsFlags::MS_PRIVATE,
                "rprivate" => o.propagation |= MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                "slave" => o.propagation |= MsFlags::MS_SLAVE,
                "rslave" => o.propagation |= MsFlags::MS_SLAVE | MsFlags::MS_REC,
                "shared" => o.propagation |= MsFlags::MS_SHARED,
                "rshared" => o.propagation |= MsFlags::MS_SHARED | MsFlags::MS_REC,
                "unbindable" => o.propagation |= MsFlags::MS_UNBINDABLE,
                "runbindable" => o.propagation |= MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
                other => o.data.push(other.to_string()),
            }
        }
        o
    }
}

/// Flags of the mount at `path` that a remount inside a user namespace must keep.
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut flags = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    flags
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
        Some(root_mount) => mount_entry(rootfs, root_mount)?,
        None => bind(rootfs, rootfs, true)?,
    }
    for m in other_mounts {
        let dest = resolve_in_root(rootfs, m.destination())
            .context(|| format!("resolving mount destination {}", m.destination().display()))?;
        mount_entry(&dest, m)?;
    }
    bind_devices(rootfs)?;
    dev_symlinks(rootfs);
    Ok(())
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
        .context(|| "opening /dev/fuse in the container's user namespace".into())?;
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

fn mount_entry(dest: &Path, m: &Mount) -> Result<()> {
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    let typ = match m.typ().as_deref().unwrap_or("none") {
        // Specs written for runc/crun (podman's) say "cgroup"; inside a user namespace
        // only the unified hierarchy can be mounted.
        "cgroup" => "cgroup2",
        other => other,
    };
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let what = || {
        format!(
            "mounting {} on {}",
            source.display(),
            m.destination().display()
        )
    };
    if opts.bind {
        create_mount_point(dest, source.is_dir()).context(what)?;
        bind(&source, dest, opts.recursive).map_err(|e| with_hint(e, what()))?;
        let wanted = opts.flags & !opts.cleared;
        if !wanted.is_empty() {
            remount_bind(dest, wanted, opts.recursive)?;
        }
    } else {
        create_mount_point(dest, true).context(what)?;
        let data = opts.data.join(",");
        if typ == "overlay" && data.len() > crate::overlay_api::MOUNT_DATA_MAX {
            return crate::overlay_api::mount_overlay(&opts.data, dest);
        }
        let data = (!data.is_empty()).then_some(data);
        let result = mount(Some(&source), dest, Some(typ), opts.flags, data.as_deref());
        match result {
            // sysfs can be mounted only by the owner of the current network namespace:
            // with the host's network, show the host's /sys read-only instead.
            Err(nix::errno::Errno::EPERM) if typ == "sysfs" => {
                bind(Path::new("/sys"), dest, true)?;
                remount_bind(dest, MsFlags::MS_RDONLY | opts.flags, true)?;
            }
            // A cgroup2 mount needs a cgroup namespace of the container's own; a spec
            // without one (crun's rootless template) gets the host's hierarchy
            // read-only, as crun gives it.
            Err(nix::errno::Errno::EPERM) if typ == "cgroup2" => {
                bind(Path::new("/sys/fs/cgroup"), dest, true)?;
                remount_bind(dest, MsFlags::MS_RDONLY | opts.flags, true)?;
            }
            r => r.context(what)?,
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
        Error::Sys { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::Setup(format!("{what}: the source does not exist"))
        }
        Error::Sys { source, .. } => Error::sys(what, source),
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

/// Creates the mount point: a directory, or an empty file for a file bind mount.
fn create_mount_point(dest: &Path, dir: bool) -> std::io::Result<()> {
    if dest.exists() {
        return Ok(());
    }
    if dir {
        return fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dest);
    }
    if let Some(parent) = dest.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(dest)
        .map(drop)
}

fn bind_devices(rootfs: &Path) -> Result<()> {
    for dev in DEFAULT_DEVICES {
        let dest = resolve_in_root(rootfs, Path::new(dev))
            .context(|| format!("resolving {dev} in the container"))?;
        if !Path::new(dev).exists() {
            continue;
        }
        create_mount_point(&dest, false).context(|| format!("creating {dev}"))?;
        bind(Path::new(dev), &dest, false)?;
    }
    Ok(())
}

fn dev_symlinks(rootfs: &Path) {
    for (target, link) in DEV_SYMLINKS {
        // An existing entry (an image's own /dev/ptmx, say) is kept.
        let _ = std::os::unix::fs::symlink(target, rootfs.join(link));
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

/// Step 6, inside the new root.
pub(crate) fn finish_root(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    for path in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask(Path::new(path))?;
    }
    for path in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        make_readonly(Path::new(path))?;
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

/// Hides a path: files read as /dev/null, directories become an empty read-only tmpfs.
fn mask(path: &Path) -> Result<()> {
    let Ok(meta) = fs::metadata(path) else {
        return Ok(());
    };
    let result = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0,mode=0555"),
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.context(|| format!("masking {}", path.display()))
}

fn make_readonly(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    bind(path, path, true)?;
    remount_bind(path, MsFlags::MS_RDONLY, true)
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
    fn rw_clears_readonly() {
        let o = opts(&["bind", "rw"]);
        assert!(o.cleared.contains(MsFlags::MS_RDONLY));
        assert!(o.flags.is_empty());
    }
}
