//! Pause and resume a container: `cgroup.freeze` (Linux 5.2+).
//!
//! Writing the file only asks; the cgroup is frozen once every task has stopped, which
//! `cgroup.events` reports as `frozen 1`. Callers get control back only then, so
//! `nook pause` returning means nothing in the container runs any more.

use std::path::Path;
use std::time::Duration;

use super::files::{self, wait_until};
use crate::error::{Error, Result};

/// How long a freeze or thaw may take to settle (generous: slow guests, busy hosts).
const SETTLE: Duration = Duration::from_secs(10);

/// Freezes (`true`) or thaws (`false`) the cgroup at `dir` and its descendants.
pub fn set_frozen(dir: &Path, frozen: bool) -> Result<()> {
    if !files::exists(dir, "cgroup.freeze") {
        return Err(Error::Cgroup(format!(
            "{} has no cgroup.freeze: pausing needs Linux 5.2 or newer",
            dir.display()
        )));
    }
    files::write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = u64::from(frozen);
    if wait_until(SETTLE, || frozen_state(dir) == Some(want)) {
        Ok(())
    } else {
        Err(Error::Cgroup(format!(
            "{} did not become {} within {} s",
            dir.display(),
            if frozen { "frozen" } else { "thawed" },
            SETTLE.as_secs()
        )))
    }
}

/// `Some(1)` frozen, `Some(0)` running, `None` when the cgroup is gone.
pub fn frozen_state(dir: &Path) -> Option<u64> {
    files::read(dir, "cgroup.events")
        .ok()
        .and_then(|t| files::flat_key(&t, "frozen"))
}
