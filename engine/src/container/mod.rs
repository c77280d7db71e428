//! Containers that outlive a command: records, the per-container supervisor and logger,
//! and their lifecycle (create, start, stop, kill, remove, sweep).
//!
//! Daemonless: each detached container has its own supervisor process (`nook
//! __supervise`, the same binary) that owns the container's process, network, FUSE
//! server and log; commands find it through the container's record and state files, and
//! reach its output through a unix socket. A foreground `nook run` is that supervisor
//! itself, so `ps`, `stop` and `exec` see both alike.

pub mod commit;
pub mod lifecycle;
pub mod logger;
pub mod record;
pub mod supervisor;
