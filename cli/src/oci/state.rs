//! `state`: the OCI state JSON of one container on stdout.

use anyhow::Result;

use super::container::Container;
use super::global::Global;

pub fn state(global: &Global, id: &str) -> Result<()> {
    let c = Container::load(global, id)?;
    let state = c.state_json(c.status());
    super::global::print_out(&serde_json::to_string_pretty(&state)?);
    Ok(())
}
