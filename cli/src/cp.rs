//! `nook cp`: files between a running container and the host, both ways.
//!
//! The container's side is worked by a forked child that joined the container's user
//! and mount namespaces: it sees the container's root (whatever driver made it) as `/`
//! and acts with the container's IDs, so what it writes is owned as the container's
//! root owns it (as podman cp does) and mapped back correctly on the host. The two sides
//! talk a tar stream over a pipe; the host side is this process, as the user.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::container::record::{Places, Status};
use crate::flags::CpArgs;

pub fn cp_cmd(args: CpArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = Places::open(store_root)?;
    let src = Side::parse(&places, &args.source);
    let dst = Side::parse(&places, &args.dest);
    match (src, dst) {
        (Side::Container(pid, from), Side::Host(to)) => from_container(pid, &from, &to),
        (Side::Host(from), Side::Container(pid, to)) => to_container(pid, &from, &to),
        (Side::Host(_), Side::Host(_)) => {
            bail!("one side of `nook cp` must be CONTAINER:PATH (a running container)")
        }
        (Side::Container(..), Side::Container(..)) => {
            bail!("copying between two containers is not supported: copy through the host")
        }
        (Side::NotRunning(name), _) | (_, Side::NotRunning(name)) => {
            bail!("container {name} is not running: start it to copy files in or out")
        }
    }?;
    Ok(0)
}

enum Side {
    Host(PathBuf),
    Container(i32, PathBuf),
    NotRunning(String),
}

impl Side {
    /// `CTR:PATH` when CTR names a container; anything else is a host path.
    fn parse(places: &Places, text: &str) -> Side {
        if let Some((name, path)) = text.split_once(':') {
            if let Ok(ctr) = places.find(name) {
                let st = ctr.state();
                return match st.pid.filter(|p| st.status == Status::Running && p.alive()) {
                    Some(p) => Side::Container(p.pid, PathBuf::from(path)),
                    None => Side::NotRunning(ctr.record.name),
                };
            }
        }
        Side::Host(PathBuf::from(text))
    }
}

/// Runs `work` in a child inside the container of `pid` (user + mount namespaces), with
/// one end of a pipe; returns the other end and the child's pid.
fn in_container(
    pid: i32,
    child_reads: bool,
    work: impl FnOnce(File) -> Result<()>,
) -> Result<(File, nix::unistd::Pid)> {
    // Under --init the first process (nook's reaper) keeps its /proc entries closed.
    let pid = nook_rootless::join::namespace_holder(pid);
    let user = File::open(format!("/proc/{pid}/ns/user")).context("the container is gone")?;
    let mnt = File::open(format!("/proc/{pid}/ns/mnt")).context("the container is gone")?;
    let (r, w) = nix::unistd::pipe().context("pipe")?;
    let (ours, theirs): (OwnedFd, OwnedFd) = if child_reads { (w, r) } else { (r, w) };
    // SAFETY: nook is single-threaded here (cp starts no thread), so the child may run
    // ordinary Rust code; it ends with _exit.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            drop(ours);
            let joined = nix::sched::setns(user.as_fd(), nix::sched::CloneFlags::CLONE_NEWUSER)
                .and_then(|_| nix::sched::setns(mnt.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS))
                .context("joining the container's namespaces");
            let result = joined
                .and_then(|_| nix::unistd::chdir("/").context("chdir /"))
                .and_then(|_| work(File::from(theirs)));
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("nook cp: {e:#}");
                    1
                }
            };
            // SAFETY: _exit ends the forked child without the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(theirs);
            Ok((File::from(ours), child))
        }
    }
}

fn wait_child(child: nix::unistd::Pid) -> Result<()> {
    match nix::sys::wait::waitpid(child, None)? {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        _ => bail!("copying inside the container failed (see above)"),
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

fn from_container(pid: i32, src: &Path, dest: &Path) -> Result<()> {
    let src_in = src.to_path_buf();
    let (dest_dir, name) = landing(src, dest, dest.is_dir());
    let entry_name = name.clone();
    let (pipe, child) = in_container(pid, false, move |out| {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        let meta = std::fs::symlink_metadata(&src_in)
            .with_context(|| format!("{} in the container", src_in.display()))?;
        if meta.is_dir() {
            tar.append_dir_all(&entry_name, &src_in)?;
        } else {
            tar.append_path_with_name(&src_in, &entry_name)?;
        }
        tar.finish()?;
        Ok(())
    })?;
    let mut archive = tar::Archive::new(pipe);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    let unpacked = archive
        .unpack(&dest_dir)
        .with_context(|| format!("writing into {}", dest_dir.display()));
    wait_child(child)?;
    unpacked
}

fn to_container(pid: i32, src: &Path, dest: &Path) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(src).with_context(|| format!("{} on the host", src.display()))?;
    let dest_in = dest.to_path_buf();
    let src_name = src.to_path_buf();
    let (pipe, child) = in_container(pid, true, move |input| {
        let is_dir = std::fs::metadata(&dest_in).is_ok_and(|m| m.is_dir());
        let (dir, name) = landing(&src_name, &dest_in, is_dir);
        let mut archive = tar::Archive::new(input);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(false);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            // The archive's top entry is renamed to the landing name.
            let mut parts = path.components();
            parts.next();
            let rest = parts.as_path();
            let target = if rest.as_os_str().is_empty() {
                dir.join(&name)
            } else {
                dir.join(&name).join(rest)
            };
            if !entry.unpack_in_path_ok(&dir, &target) {
                bail!(
                    "refusing entry {} outside {}",
                    path.display(),
                    dir.display()
                );
            }
            entry.unpack(&target)?;
        }
        Ok(())
    })?;
    let mut tar = tar::Builder::new(pipe);
    tar.follow_symlinks(false);
    if meta.is_dir() {
        tar.append_dir_all("top", src)?;
    } else {
        tar.append_path_with_name(src, "top")?;
    }
    let finished = tar.into_inner().map(drop);
    wait_child(child)?;
    finished.context("sending the files")
}

/// A guard against `..` in entry names: the target must stay under `dir`.
trait UnpackInPath {
    fn unpack_in_path_ok(&self, dir: &Path, target: &Path) -> bool;
}

impl<R: std::io::Read> UnpackInPath for tar::Entry<'_, R> {
    fn unpack_in_path_ok(&self, dir: &Path, target: &Path) -> bool {
        target.starts_with(dir)
            && !target
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
    }
}
