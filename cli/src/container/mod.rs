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
use nook_engine::container::record::Places;

/// `nook inspect NAME...`: containers when every name is one, else images.
pub fn inspect_cmd(root: Option<PathBuf>, args: InspectArgs) -> Result<i32> {
    let places = places(root.clone())?;
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
    print_inspected(&out, args.format.as_deref())
}

/// `inspect --format`: JSON (the default), or a template applied to each object.
pub fn print_inspected(objects: &[serde_json::Value], format: Option<&str>) -> Result<i32> {
    match format {
        None | Some("json") => println!("{}", serde_json::to_string_pretty(objects)?),
        Some(template) => {
            let output = crate::format::Output::parse(template, "")?;
            print!("{}", output.render(objects, &[])?);
        }
    }
    Ok(0)
}

/// The container records of this store, format-1 records migrated as they are read.
pub fn places(root: Option<PathBuf>) -> Result<Places> {
    Ok(Places::open(root)?.migrating(Some(crate::request::migrate)))
}
