//! `pause` / `resume`: freeze and thaw the container's cgroup (cgroup v2
//! `cgroup.freeze`); without a delegated cgroup there is nothing to freeze with.

use anyhow::{bail, Result};

use super::container::{Container, Status};
use super::global::Global;

pub fn pause(global: &Global, id: &str, frozen: bool) -> Result<()> {
    let c = Container::load(global, id)?;
    let status = c.status();
    let expected = if frozen {
        Status::Running
    } else {
        Status::Paused
    };
    if status != expected {
        bail!(
            "container {id} is {}: only a {} container can be {}",
            status.as_str(),
            expected.as_str(),
            if frozen { "paused" } else { "resumed" }
        );
    }
    let Some(cg) = &c.record.cgroup else {
        bail!(
            "container {id} has no cgroup to freeze: pausing needs a delegated cgroup v2 \
             subtree (see `nook info`)"
        );
    };
    nook_rootless::cgroups::set_frozen(cg, frozen)?;
    Ok(())
}
