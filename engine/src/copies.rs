//! The copy driver's container roots: `$RUNTIME/copies/ID/rootfs`, the image's layers
//! flattened into a private copy (200 MB for a Debian image) that lives exactly as long
//! as the run that made it.
//!
//! `copies/ID` is that run's ownership lock (nook_fs::owner): a directory held by the
//! run and by the store helper that fills it. When the run ends, it removes the copy;
//! when it is killed, the lock is free, and the next nook command of any kind removes
//! the copy ([`sweep`]). That costs every command one stat of `copies/` while no copy
//! exists (a directory's link count says whether it has subdirectories), and one
//! open and a non-blocking flock per copy while some do.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::bail;
use crate::error::{Context, Result};
use nook_fs::owner::{self, Owner, OwnerLock};

use crate::image::RunImage;
use crate::store_helper::{self, Job};
use crate::Notify;
use std::sync::Arc;

/// Where the copies live in the runtime dir `runtime`.
pub fn dir(runtime: &Path) -> PathBuf {
    runtime.join("copies")
}

/// One run's copy of its image, removed when dropped.
pub struct CopyRoot {
    /// The root to run in: `copies/ID/rootfs`.
    pub path: PathBuf,
    lock: OwnerLock,
    notify: Arc<dyn Notify>,
}

impl CopyRoot {
    /// Records the image as in use by this process (`container_dir/image`), then copies
    /// its layers under the store's shared lock (so `rmi` cannot take them mid-copy).
    pub fn create(
        image: &RunImage,
        runtime: &Path,
        id: &str,
        container_dir: &Path,
        notify: Arc<dyn Notify>,
    ) -> Result<CopyRoot> {
        let base = dir(runtime);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&base)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .with_context(|| format!("creating {}", base.display()))?;
        let own = base.join(id);
        let lock = match OwnerLock::create_dir(&own) {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // An earlier run of this container was killed, and no command since has
                // swept its copy: it goes now.
                match owner::probe(&own).with_context(|| format!("checking {}", own.display()))? {
                    Owner::Live => bail!(
                        "{} is in use by another run of this container",
                        own.display()
                    ),
                    Owner::Dead(dead) => remove(vec![(own.clone(), dead)], &*notify),
                    Owner::Missing => {}
                }
                OwnerLock::create_dir(&own)
                    .with_context(|| format!("creating {}", own.display()))?
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", own.display())),
        };
        let _lock = image.store.lock_shared()?;
        nook_rootless::state::write_file(
            &container_dir.join("image"),
            format!("{}\n{}\n", image.record.id.hex(), std::process::id()),
            nook_rootless::state::PRIVATE_FILE,
        )
        .context("recording the container's image")?;
        let path = own.join("rootfs");
        let root = CopyRoot { path, lock, notify };
        // The helper holds the lock too: if this run is killed mid-copy, the copy is
        // swept only once the helper has stopped writing into it.
        store_helper::run_holding(
            &Job::Flatten {
                layers: image.layers.clone(),
                dest: root.path.clone(),
            },
            Some(root.lock.as_fd()),
        )?;
        Ok(root)
    }
}

impl Drop for CopyRoot {
    fn drop(&mut self) {
        let own = self.lock.path().to_path_buf();
        let job = Job::Remove(vec![own.clone()]);
        if let Err(e) = store_helper::run_holding(&job, Some(self.lock.as_fd())) {
            self.notify.warn(&format!(
                "could not remove the container's root {}: {why}",
                own.display(),
                why = crate::error::chain_line(&e),
            ));
        }
    }
}

/// Removes the copies of runs that were killed (their lock is free).
pub fn sweep(runtime: &Path, notify: &dyn Notify) {
    let base = dir(runtime);
    let Ok(meta) = fs::symlink_metadata(&base) else {
        return;
    };
    // Each copy is a subdirectory, and a directory's link count is 2 plus its
    // subdirectories (tmpfs, ext4, xfs; btrfs says 1 and is listed).
    if !meta.is_dir() || meta.nlink() == 2 {
        return;
    }
    let Ok(entries) = fs::read_dir(&base) else {
        return;
    };
    let dead: Vec<(PathBuf, OwnerLock)> = entries
        .flatten()
        .filter_map(|e| match owner::probe(&e.path()) {
            Ok(Owner::Dead(lock)) => Some((e.path(), lock)),
            _ => None,
        })
        .collect();
    if !dead.is_empty() {
        remove(dead, notify);
    }
}

/// Deletes dead runs' copies, holding their locks meanwhile (so that no other command
/// sweeps the same ones at the same time).
fn remove(dead: Vec<(PathBuf, OwnerLock)>, notify: &dyn Notify) {
    let paths: Vec<PathBuf> = dead.iter().map(|(p, _)| p.clone()).collect();
    tracing::debug!("removing the copies of killed runs: {paths:?}");
    if let Err(e) = store_helper::run(&Job::Remove(paths)) {
        notify.warn(&format!(
            "could not remove the root of a killed container: {why}",
            why = crate::error::chain_line(&e)
        ));
    }
}
