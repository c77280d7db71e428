//! nook's runtime: executes an OCI runtime `Spec` as an unprivileged user.
//!
//! The user namespace comes first and owns every other namespace, so no step needs
//! host privilege. The data path of one run:
//!
//! ```text
//! run()  ── block signals, pipes ──► clone(NEWUSER|NEWNS|NEWPID|...)   (spawn.rs)
//!   parent: write ID maps (idmap.rs) ─► release child ─► collect setup/exec result
//!           ─► supervise: signals, pty, exit status (supervise.rs, tty.rs)
//!   child : closes what it was not given (fds.rs) ─► [go] non-dumpable, own session
//!           ─► mounts + pivot_root (mounts.rs) ─► hostname, lo ─► pty (tty.rs)
//!           ─► user, capabilities, no_new_privs (capabilities.rs) ─► exec (exec.rs)
//!           or, under --init, a reaper as pid 1 that execs the command as pid 2 (init.rs)
//! ```
//!
//! fds.rs is the boundary every way in shares (run, exec, the OCI commands): which
//! descriptors cross it, when a process is non-dumpable, where the working directory
//! may lead.
//!
//! Everything the container runs with comes from the `Spec`; the few things that are
//! not container configuration but I/O wiring of this invocation (stdin attached or
//! not, the reaper) come in [`RunOptions`].

pub mod bundle;
pub mod capabilities;
pub mod cgroups;
mod child;
mod copyup;
pub mod error;
mod exec;
pub mod fds;
pub mod hooks;
pub mod idmap;
mod init;
pub mod join;
mod limits;
mod mount_fd;
pub mod mounts;
mod netns;
mod options;
mod overlay_api;
pub mod probe;
pub mod process;
pub mod seccomp;

mod spawn;
pub mod state;
pub mod subid;
mod supervise;
mod sync;
mod tty;

pub use error::{Error, Result};
pub use options::{RunOptions, StartedHook, StdinMode};
pub use spawn::{
    check_plan, create, run, run_in_cgroup, run_in_user_namespace, start_result, unshare, Created,
};
pub use supervise::ExitStatus;
/// A terminal in raw mode until dropped (for clients that relay a container's pty).
pub use tty::RawMode;
