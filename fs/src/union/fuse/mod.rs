//! nook's FUSE union filesystem: the container's root when kernel overlayfs cannot be
//! mounted (kernels before 5.11, RHEL 8 on HPC), on the same on-disk format.
//!
//! Who does what:
//! * The container's first process (rootless crate, child side) opens /dev/fuse inside
//!   its user namespace (the kernel ties the connection to the opener's namespace, so
//!   request and reply IDs are the container's), mounts `fuse` at the root with
//!   [`ROOT_MOUNT_OPTIONS`] plus `fd=N`, and sends the descriptor over a socket.
//! * The server, [`serve_socket`], receives it and answers requests until the mount
//!   goes away. It runs in a process forked from the supervisor before the container is
//!   cloned (same binary, no exec, no helper to install) that entered a user namespace
//!   with the container's ID map: there it holds CAP_CHOWN, CAP_DAC_OVERRIDE and
//!   CAP_FOWNER over exactly the container's IDs, so it can read files the image's
//!   users own, create files as the requesting container user, and copy owners up,
//!   while host files stay out of reach as for the container. A thread of the supervisor
//!   could not: it holds no capability over subordinate IDs, and a multi-threaded
//!   process may not join a user namespace. Numeric IDs are identical in both
//!   namespaces, so no ID translation happens here.
//! * Lifetime: the server dies with the supervisor (PR_SET_PDEATHSIG) and exits when the
//!   connection ends (the container's mount namespace is gone). A killed server aborts
//!   the connection: pending and later requests fail with ENOTCONN, nothing hangs.
//!
//! The filesystem (`union_fs`) keeps one node per looked-up inode (detached, with a
//! descriptor of its own, once its name is gone), streams single-layer directories and
//! shares merged listings between handles, and copies files up to the writable layer on
//! first write. It reaches the layers only as `beneath` allows: one name at a time below
//! a descriptor, never following a symlink (the module's invariant). Kernel help used: entry, negative-entry and attribute caching (10 s),
//! readdirplus, parallel dirops, 1 MiB writes, atomic O_TRUNC, cached symlinks, kept
//! page cache across opens, READ replies spliced from the layer file (`splice`, beside
//! fuser, which has no splice path); FLUSH is declined once (ENOSYS) so close() costs
//! no round trip. Not used: the writeback cache (it costs a GETATTR after every close,
//! see `init`) and passthrough (registering a backing file needs CAP_SYS_ADMIN in the
//! initial user namespace, fs/fuse/passthrough.c, so no rootless server can).

mod beneath;
mod splice;
mod union_fs;

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::union::{ContainerLayer, Layers};

pub use union_fs::UnionFs;

/// Mount options of the root FUSE mount, without `fd=` (added by the mounter). The IDs
/// are the container's root; `allow_other` lets every process of the container (and
/// only of its user namespace) in; `default_permissions` has the kernel check modes.
pub const ROOT_MOUNT_OPTIONS: [&str; 5] = [
    "rootmode=40000",
    "user_id=0",
    "group_id=0",
    "default_permissions",
    "allow_other",
];

/// The filesystem type the Spec names for the root mount.
pub const FS_TYPE: &str = "fuse.nook";

/// Receives the /dev/fuse descriptor on `sock` and serves the union of `layers` under
/// `container` on it until the connection ends. Returns an exit code (0: clean end).
pub fn serve_socket(sock: UnixStream, layers: &Layers, container: &ContainerLayer) -> i32 {
    let fd = match receive_fd(&sock) {
        Ok(Some(fd)) => fd,
        // The container failed before mounting: nothing to serve.
        Ok(None) => return 0,
        Err(e) => {
            tracing::error!("fuse server: receiving /dev/fuse: {e}");
            return 1;
        }
    };
    drop(sock);
    match serve_fd(fd, layers, container) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("fuse server: {e}");
            1
        }
    }
}

/// Serves the union on an already mounted /dev/fuse connection (blocks).
pub fn serve_fd(fd: OwnedFd, layers: &Layers, container: &ContainerLayer) -> std::io::Result<()> {
    prepare_process();
    let mut fs = UnionFs::new(layers, container)?;
    fs.set_splice(splice::SpliceReplies::new(fd.try_clone()?));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let mut config = fuser::Config::default();
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(threads);
    // One descriptor for all threads: spliced replies (splice.rs) are written on a
    // duplicate of it, and a reply must reach the queue its request was read from.
    config.clone_fd = false;
    let session = fuser::Session::from_fd(fs, fd, fuser::SessionACL::All, config)?;
    match session.run() {
        // The connection was aborted (the mount went away with the container's mount
        // namespace, or was torn down by force): nothing is left to serve.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
        r => r,
    }
}

/// File creation modes come from the kernel already masked, and every looked-up file
/// holds an O_PATH descriptor: no umask, and as many descriptors as allowed.
fn prepare_process() {
    // SAFETY: umask and setrlimit on plain values.
    unsafe {
        libc::umask(0);
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Sends `fd` over `sock` (SCM_RIGHTS), the child side of the hand-over.
pub fn send_fd(sock: RawFd, fd: RawFd) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    sendmsg::<()>(
        sock,
        &[std::io::IoSlice::new(b"F")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(std::io::Error::from)
}

/// Receives one descriptor from `sock`; None at EOF (the sender went away).
pub fn receive_fd(sock: &UnixStream) -> std::io::Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Ok(None)
}
