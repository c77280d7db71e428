//! What a caller sets for a run besides the OCI `Spec`: stdin, the reaper, the userspace
//! network, the FUSE root's socket, hooks on the container's pid, passed descriptors.
//! Its own module so the child side (child.rs) and the parent side (spawn.rs) share it
//! without importing each other.

/// How the container's stdin is wired (not part of the OCI configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinMode {
    /// The container reads nook's own stdin (`-i`).
    Inherit,
    /// The container's stdin is /dev/null (podman without `-i`).
    Null,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub stdin: StdinMode,
    /// Run a reaper as pid 1 and the command as its child (`--init`).
    pub init: bool,
    /// The userspace network (`--network=nook`), when the spec asks for a new network
    /// namespace; `None` leaves it with only `lo`.
    pub network: Option<nook_net::Config>,
    /// With a FUSE root (the Spec's mount at `/` of type `fuse` or `fuse.*`): the socket
    /// on which the child hands the /dev/fuse descriptor to the filesystem's server.
    pub fuse_socket: Option<std::os::fd::RawFd>,
    /// Called with the container's host pid once it exists (maps written), before it is
    /// let go: how `nook` records a running container before anything runs in it.
    pub on_spawned: Option<StartedHook>,
    /// Called with the container's host pid once its command is running (the exec
    /// succeeded), before the supervisor loop.
    pub on_started: Option<StartedHook>,
    /// Descriptors of this process the command gets (`--preserve-fds`, LISTEN_FDS); every
    /// other one stays out of the container (fds.rs).
    pub passed_fds: crate::fds::PassedFds,
}

/// A callback for [`RunOptions::on_started`].
#[derive(Clone)]
pub struct StartedHook(pub std::sync::Arc<dyn Fn(i32) + Send + Sync>);

impl std::fmt::Debug for StartedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartedHook")
    }
}
