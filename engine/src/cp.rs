//! `nook cp`: files between a running container and the host, both ways.
//!
//! The container's side is worked by a forked child that joined the container's user
//! and mount namespaces: it sees the container's root (whatever driver made it) as `/`
//! and acts with the container's IDs, so what it writes is owned as the container's
//! root owns it (as podman cp does) and mapped back correctly on the host. The two sides
//! talk a tar stream over a pipe; the host side is this process, as the user.
//!
//! Neither side ever follows a path the container could have changed: CONTAINER:PATH is
//! resolved by the confined resolver (nook-at) inside the container's root; the tree is
//! read and written through directory descriptors, one component at a time, never
//! following a symlink; and every entry received is created under the landing
//! directory's descriptor, its parents resolved inside that directory. So a symlink to
//! `/` (or a component swapped for one while the copy runs, in the container or in a
//! host directory the container can write to, a volume) leads nowhere outside.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nook_fs::at::{self, Root};

use crate::bail;
use crate::error::{Context, Error, Result};
use crate::Notify;

/// Copies `src` inside the running container whose first process is `pid` to `dest`
/// on the host (into it when it is a directory).
pub fn copy_from(pid: i32, src: &Path, dest: &Path, notify: &dyn Notify) -> Result<()> {
    from_container(pid, src, dest, notify)
}

/// Copies `src` on the host to `dest` inside the running container whose first
/// process is `pid` (into it when it is a directory there).
pub fn copy_to(pid: i32, src: &Path, dest: &Path, notify: &dyn Notify) -> Result<()> {
    to_container(pid, src, dest, notify)
}

/// Whether `e` is, or was caused by, a write to a reader that went away.
fn is_broken_pipe(e: &Error) -> bool {
    match e {
        Error::Io(io) => io.kind() == std::io::ErrorKind::BrokenPipe,
        Error::Context { source, .. } => is_broken_pipe(source),
        _ => false,
    }
}

/// What the child inside the container tells this side: notices (`N` lines) and, when
/// it failed, why (`E`), on a pipe of their own (the engine prints nothing itself).
struct Told {
    pipe: File,
}

impl Told {
    fn say(pipe: &mut File, kind: char, text: &str) {
        let _ = writeln!(pipe, "{kind}{}", text.replace('\n', " "));
    }

    /// Reads what the child said: its notices go to `notify`; Err with its reason when
    /// it failed.
    fn hear(mut self, notify: &dyn Notify) -> Option<String> {
        let mut text = String::new();
        let _ = self.pipe.read_to_string(&mut text);
        let mut failure = None;
        for line in text.lines() {
            match line.split_at(line.len().min(1)) {
                ("N", notice) => notify.notice(notice),
                ("E", why) => failure = Some(why.to_string()),
                _ => {}
            }
        }
        failure
    }
}

/// Runs `work` in a child inside the container of `pid` (user + mount namespaces), with
/// one end of a pipe; returns the other end and the child's pid.
fn in_container(
    pid: i32,
    child_reads: bool,
    work: impl FnOnce(File, &mut File) -> Result<()>,
) -> Result<(File, nix::unistd::Pid, Told)> {
    // Under --init the first process (nook's reaper) keeps its /proc entries closed.
    let pid = nook_rootless::join::namespace_holder(pid);
    let user = File::open(format!("/proc/{pid}/ns/user")).context("the container is gone")?;
    let mnt = File::open(format!("/proc/{pid}/ns/mnt")).context("the container is gone")?;
    let (r, w) = nix::unistd::pipe().context("pipe")?;
    let (ours, theirs): (OwnedFd, OwnedFd) = if child_reads { (w, r) } else { (r, w) };
    let (told_r, told_w) = nix::unistd::pipe().context("pipe")?;
    // SAFETY: nook is single-threaded here (cp starts no thread), so the child may run
    // ordinary Rust code; it ends with _exit.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            drop(ours);
            drop(told_r);
            let mut told = File::from(told_w);
            // The same boundary as every process entering a container (rootless fds.rs):
            // non-dumpable first, and nothing of the caller's or of nook's beyond the pipe
            // and stdio once inside.
            let joined = nook_rootless::fds::make_undumpable()
                .map_err(Error::from)
                .and_then(|_| {
                    nix::sched::setns(user.as_fd(), nix::sched::CloneFlags::CLONE_NEWUSER)?;
                    nix::sched::setns(mnt.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)?;
                    Ok(())
                })
                .context("joining the container's namespaces");
            nook_rootless::fds::close_all_except(&[0, 1, 2, theirs.as_raw_fd(), told.as_raw_fd()]);
            let result = joined
                .and_then(|_| nix::unistd::chdir("/").context("chdir /"))
                .and_then(|_| work(File::from(theirs), &mut told));
            let code = match result {
                Ok(()) => 0,
                // The other side stopped reading: it says why itself.
                Err(e) if is_broken_pipe(&e) => 1,
                Err(e) => {
                    Told::say(&mut told, 'E', &crate::error::chain_line(&e));
                    1
                }
            };
            // SAFETY: _exit ends the forked child without the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(theirs);
            drop(told_w);
            let told = Told {
                pipe: File::from(told_r),
            };
            Ok((File::from(ours), child, told))
        }
    }
}

fn wait_child(child: nix::unistd::Pid, told: Told, notify: &dyn Notify) -> Result<()> {
    let failure = told.hear(notify);
    match (nix::sys::wait::waitpid(child, None)?, failure) {
        (nix::sys::wait::WaitStatus::Exited(_, 0), _) => Ok(()),
        (_, Some(why)) => bail!("{why}"),
        _ => bail!("copying inside the container failed"),
    }
}

/// Where a copy of `src` lands: into `dest` when that is an existing directory, else as
/// `dest` itself (docker's and podman's rule).
fn landing(src: &Path, dest: &Path, dest_is_dir: bool) -> (PathBuf, String) {
    let name = src
        .file_name()
        .map_or_else(|| ".".into(), |n| n.to_string_lossy().into_owned());
    if dest_is_dir {
        (dest.to_path_buf(), name)
    } else {
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
        let own = dest
            .file_name()
            .map_or(name, |n| n.to_string_lossy().into_owned());
        (parent.unwrap_or(Path::new(".")).to_path_buf(), own)
    }
}

/// The directory that holds `path` and the name in it (`.` for a path that names a
/// directory by `/`, `.` or `..` at its end), resolved by `open_dir`.
fn split(
    path: &Path,
    open_dir: impl Fn(&Path) -> std::io::Result<OwnedFd>,
) -> Result<(OwnedFd, CString)> {
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (open_dir(parent), at::cstr(name)?),
        _ => (open_dir(path), CString::from(c".")),
    };
    let dir = dir.with_context(|| format!("{}", path.display()))?;
    Ok((dir, name))
}

fn from_container(pid: i32, src: &Path, dest: &Path, notify: &dyn Notify) -> Result<()> {
    let src_in = src.to_path_buf();
    let (dest_dir, name) = landing(src, dest, dest.is_dir());
    let landing_dir = Root::open_container(&dest_dir)
        .with_context(|| format!("{} is not a directory on the host", dest_dir.display()))?;
    let (pipe, child, told) = in_container(pid, false, move |out, _| {
        let root = Root::open_container(Path::new("/")).context("opening the container's /")?;
        let (dir, leaf) = split(&src_in, |p| {
            root.open_in(p, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(refuse_loops)
        })
        .context("in the container")?;
        let mut tar = tar::Builder::new(out);
        send(&mut tar, dir.as_raw_fd(), &leaf, Path::new(TOP))
            .with_context(|| format!("reading {} in the container", src_in.display()))?;
        tar.finish()?;
        Ok(())
    })?;
    let unpacked = receive(pipe, &landing_dir, &name)
        .map(|devices| skipped_devices(devices).map(|n| notify.notice(&n)))
        .with_context(|| format!("writing into {}", dest_dir.display()));
    let copied = wait_child(child, told, notify);
    // Refused here, the sender's broken pipe is no news: this side's reason first.
    unpacked?;
    copied
}

fn to_container(pid: i32, src: &Path, dest: &Path, notify: &dyn Notify) -> Result<()> {
    // The host side: the user's own path, its last component not followed (a symlink
    // is copied as a symlink), and the tree below read through descriptors (it may be a
    // volume the container writes to).
    let (src_dir, src_leaf) = split(src, |p| {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        at::openat(
            libc::AT_FDCWD,
            &at::cstr(p.as_os_str())?,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
    })
    .context("on the host")?;
    at::lstat_opt(src_dir.as_raw_fd(), &src_leaf)?
        .with_context(|| format!("{} on the host: no such file or directory", src.display()))?;
    let dest_in = dest.to_path_buf();
    let src_name = src.to_path_buf();
    let (pipe, child, told) = in_container(pid, true, move |input, told| {
        let root = Root::open_container(Path::new("/")).context("opening the container's /")?;
        let is_dir = root
            .open_in(&dest_in, libc::O_PATH | libc::O_DIRECTORY)
            .is_ok();
        let (dir, name) = landing(&src_name, &dest_in, is_dir);
        let dir_fd = root
            .open_in(&dir, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(refuse_loops)
            .with_context(|| format!("{} in the container", dir.display()))?;
        let devices = receive(input, &Root::container_from_fd(dir_fd), &name)
            .with_context(|| format!("writing into {} in the container", dir.display()))?;
        if let Some(n) = skipped_devices(devices) {
            Told::say(told, 'N', &n);
        }
        Ok(())
    })?;
    let mut tar = tar::Builder::new(pipe);
    let sent = send(&mut tar, src_dir.as_raw_fd(), &src_leaf, Path::new(TOP))
        .and_then(|()| tar.into_inner().map(drop).map_err(Error::from));
    wait_child(child, told, notify)?;
    sent.context("sending the files")
}

/// ELOOP from the confined resolver, in the user's terms.
fn refuse_loops(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() != Some(libc::ELOOP) {
        return e;
    }
    std::io::Error::new(
        e.kind(),
        "refused: the path goes through a symlink loop or a /proc magic link \
         (/proc/PID/root, cwd, fd/N ...), which could lead out of the container",
    )
}

/// The archive's name for the copied object; the receiver renames it to the landing name.
const TOP: &str = "top";

/// Appends `name` in `dir` (whatever it is, a whole tree for a directory) to `tar` as
/// `entry`, through descriptors: nothing is followed, and a file swapped for something
/// else while it is read is refused.
fn send<W: Write>(tar: &mut tar::Builder<W>, dir: RawFd, name: &CStr, entry: &Path) -> Result<()> {
    let st = at::fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid.into());
    h.set_gid(st.st_gid.into());
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            h.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut h, entry, std::io::empty())?;
            let sub = at::openat(
                dir,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            let mut names = at::read_dir_names(&sub)?;
            names.sort();
            for child in names {
                let path = entry.join(OsStr::from_bytes(child.to_bytes()));
                send(tar, sub.as_raw_fd(), &child, &path)?;
            }
        }
        libc::S_IFREG => {
            let fd = at::openat(
                dir,
                name,
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                0,
            )?;
            let file = File::from(fd);
            let meta = file.metadata()?;
            if !meta.is_file() {
                bail!("{} changed while it was copied", entry.display());
            }
            h.set_size(meta.len());
            h.set_entry_type(tar::EntryType::Regular);
            // A file that shrinks meanwhile is padded, so the archive stays whole.
            let data = file
                .take(meta.len())
                .chain(std::io::repeat(0))
                .take(meta.len());
            tar.append_data(&mut h, entry, data)?;
        }
        libc::S_IFLNK => {
            let target = at::readlinkat(dir, name)?;
            h.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut h, entry, target)?;
        }
        libc::S_IFIFO => {
            h.set_entry_type(tar::EntryType::Fifo);
            tar.append_data(&mut h, entry, std::io::empty())?;
        }
        libc::S_IFCHR | libc::S_IFBLK => {
            let kind = if st.st_mode & libc::S_IFMT == libc::S_IFCHR {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            h.set_entry_type(kind);
            h.set_device_major(libc::major(st.st_rdev))?;
            h.set_device_minor(libc::minor(st.st_rdev))?;
            tar.append_data(&mut h, entry, std::io::empty())?;
        }
        // Sockets have no archive form.
        _ => {}
    }
    Ok(())
}

/// Unpacks the archive from `send` under `landing`, its top entry named `name` (`.`: the
/// landing directory itself). Each entry's parent is resolved inside `landing` and the
/// entry made through that parent's descriptor, never following its last component.
fn receive(input: impl Read, landing: &Root, name: &str) -> Result<u64> {
    let mut archive = tar::Archive::new(input);
    let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
    let mut devices: u64 = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let rest = match nook_fs::unpack::clean(OsStr::from_bytes(&raw)) {
            Some(Some(p)) if p.starts_with(TOP) => {
                p.strip_prefix(TOP).expect("checked").to_path_buf()
            }
            _ => bail!("refusing archive entry {shown:?}"),
        };
        let rel = Path::new(name).join(rest);
        let rel = nook_fs::unpack::clean(rel.as_os_str())
            .with_context(|| format!("refusing archive entry {shown:?}"))?
            .unwrap_or_default();
        let header = entry.header();
        let mode = header.mode()? & 0o7777;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let kind = header.entry_type();
        let Some(leaf) = rel.file_name().map(at::cstr).transpose()? else {
            // The landing directory itself: only its mode and time apply.
            if kind.is_dir() {
                dirs.push((rel, mode, mtime));
            }
            continue;
        };
        let parent = landing
            .open_in(
                rel.parent().unwrap_or(Path::new("")),
                libc::O_PATH | libc::O_DIRECTORY,
            )
            .with_context(|| format!("the directory of {}", rel.display()))?;
        let pfd = parent.as_raw_fd();
        let existing = at::lstat_opt(pfd, &leaf)?;
        let existing_dir = existing.is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        if kind.is_dir() {
            if existing.is_some() && !existing_dir {
                bail!(
                    "cannot overwrite non-directory {} with a directory",
                    rel.display()
                );
            }
            if existing.is_none() {
                at::mkdirat(pfd, &leaf, 0o700)?;
            }
            dirs.push((rel, mode, mtime));
            continue;
        }
        if existing_dir {
            bail!(
                "cannot overwrite directory {} with a non-directory",
                rel.display()
            );
        }
        if existing.is_some() {
            at::unlinkat(pfd, &leaf, 0)?;
        }
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous => {
                let fd = at::openat(
                    pfd,
                    &leaf,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )?;
                let mut file = File::from(fd);
                std::io::copy(&mut entry, &mut file)?;
                at::fchmod(file.as_raw_fd(), mode)?;
                at::set_times_at(file.as_raw_fd(), c"", mtime, false)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .with_context(|| format!("symlink {shown:?} without a target"))?;
                at::symlinkat(&at::cstr(OsStr::from_bytes(&target))?, pfd, &leaf)?;
                at::set_times_at(pfd, &leaf, mtime, true)?;
            }
            T::Fifo => {
                at::mknodat(pfd, &leaf, libc::S_IFIFO | mode, 0)?;
                at::set_times_at(pfd, &leaf, mtime, true)?;
            }
            // An unprivileged user cannot make device nodes (nor the container's root).
            T::Char | T::Block => devices += 1,
            other => bail!("unsupported archive entry {shown:?} ({other:?})"),
        }
    }
    // Directory modes and times last: creating entries changed the times, and a
    // read-only mode would have kept the entries out.
    for (rel, mode, mtime) in dirs.into_iter().rev() {
        let dir = landing.open_in(&rel, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)?;
        at::fchmod(dir.as_raw_fd(), mode)?;
        at::set_times_at(dir.as_raw_fd(), c"", mtime, false)?;
    }
    Ok(devices)
}

/// The notice for device nodes a copy could not create, if there were any.
fn skipped_devices(devices: u64) -> Option<String> {
    (devices > 0).then(|| {
        format!("cp: skipped {devices} device node(s): an unprivileged user cannot create them")
    })
}
