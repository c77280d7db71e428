//! The container commands (create/start/stop/kill/rm/wait/ps/logs/attach/top/port/
//! rename/prune/inspect/diff/commit); records, supervisor, logger and the lifecycle
//! work are the engine's (nook_engine::container).
//!
//! Daemonless: each detached container has its own supervisor process (`nook
//! __supervise`, the same binary) that owns the container's process, network, FUSE
//! server and log; commands find it through the container's record and state files, and
//! reach its output through a unix socket. A foreground `nook run` is that supervisor
//! itself, so `ps`, `stop` and `exec` see both alike.

pub mod attach;
pub mod commit;
pub mod lifecycle;
pub mod logs;
pub mod ps;

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::flags::InspectArgs;

/// `nook inspect NAME...`: containers when every name is one, else images.
pub fn inspect_cmd(root: Option<PathBuf>, args: InspectArgs) -> Result<i32> {
    let places = crate::notify::places(root.clone())?;
    let found: Vec<_> = args.images.iter().map(|n| places.find(n).ok()).collect();
    if found.iter().all(Option::is_none) {
        return crate::image_cmds::inspect_cmd(root, args);
    }
    if found.iter().any(Option::is_none) {
        bail!("inspect either containers or images, not both at once");
    }
    let out: Vec<_> = found
        .iter()
        .flatten()
        .map(|c| ps::inspect_json(&places, c))
        .collect();
    crate::format::print_inspected(&out, args.format.as_deref())
}
