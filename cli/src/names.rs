//! Container names: unique among this user's running containers.
//!
//! A name is a symlink `names/NAME -> ID` in the runtime dir: creating a symlink is
//! atomic and fails if it exists, so two runs racing for one name cannot both win. A
//! link whose container directory is gone was left by a killed nook and is reclaimed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub struct NameReservation {
    link: PathBuf,
}

impl NameReservation {
    pub fn take(runtime_dir: &Path, name: &str, id: &str) -> Result<NameReservation> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !valid {
            bail!("invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*");
        }
        let dir = runtime_dir.join("names");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let link = dir.join(name);
        for _ in 0..2 {
            match std::os::unix::fs::symlink(id, &link) {
                Ok(()) => return Ok(NameReservation { link }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_link(&link).unwrap_or_default();
                    if runtime_dir.join("containers").join(&holder).exists() {
                        bail!(
                            "the name {name:?} is in use by container {}: choose another name",
                            holder.display()
                        );
                    }
                    let _ = std::fs::remove_file(&link);
                }
                Err(e) => return Err(e).with_context(|| format!("reserving name {name:?}")),
            }
        }
        bail!("the name {name:?} is being taken by another nook right now")
    }
}

impl Drop for NameReservation {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}
