//! A container's writable layer read as changes (`nook diff`), or turned into a new
//! image layer on top of the container's image (`nook commit`).
//!
//! Both read the upper layer in the store helper (inside the user namespace): its files
//! belong to the container's IDs, and a commit's tar must record them as such.

use std::path::PathBuf;

use nook_fs::store::{ImageRecord, Store};

use super::record::Container;
use crate::error::{Context, Error, Result};
use crate::store_helper::{self, Job};
use crate::{bail, format_err, Engine};

/// The container's upper directory and its image's layer directories (lowest first).
fn layers_of(
    ctr: &Container,
    store: &Store,
    eng: &Engine,
) -> Result<(PathBuf, Vec<PathBuf>, ImageRecord)> {
    let image_id = ctr.record.image_id.as_deref().ok_or_else(|| {
        format_err!(
            "container {} does not run an image from the store (host image or --rootfs): \
             it has no layer of its own to list or commit",
            ctr.record.name
        )
    })?;
    let layer = ctr
        .record
        .layer_dir
        .clone()
        .unwrap_or_else(|| ctr.dir.join("layer"));
    let upper = layer.join("diff");
    if !upper.is_dir() {
        bail!(
            "container {} has no writable layer yet (never started, or it used the copy \
             storage driver)",
            ctr.record.name
        );
    }
    let image = crate::image::find(store, image_id, &eng.settings)
        .with_context(|| format!("the image of container {}", ctr.record.name))?;
    let layers = image
        .layers
        .iter()
        .map(|l| store.layer_dir(&l.diff_id))
        .collect();
    Ok((upper, layers, image))
}

/// The container's changes to its image's files: `A /path`, `C /path`, `D /path`
/// lines sorted by path, as podman diff prints them (nook's own mount points left out).
pub fn changes(eng: &Engine, ctr: &Container) -> Result<Vec<String>> {
    let store = crate::image::open_store(eng.store_root.clone(), &*eng.notify)?;
    let (upper, layers, _) = layers_of(ctr, &store, eng)?;
    let outcome = store_helper::run(&Job::Changes { upper, layers })?;
    Ok(outcome
        .changes
        .into_iter()
        .filter(|l| !is_mount_point(l))
        .collect())
}

/// Mount points nook itself adds to a root (as podman, `diff` does not show them).
const MOUNT_POINTS: [&str; 7] = [
    "/dev",
    "/proc",
    "/sys",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    crate::apt_sandbox::DEST,
];

fn is_mount_point(line: &str) -> bool {
    line.strip_prefix("A ")
        .is_some_and(|p| MOUNT_POINTS.contains(&p))
}

/// The container's changes as one more layer of its image: a new image, named `name`
/// (a qualified reference) if given.
pub fn commit(eng: &Engine, ctr: &Container, name: Option<String>) -> Result<ImageRecord> {
    let store = crate::image::open_store(eng.store_root.clone(), &*eng.notify)?;
    let (upper, _, base) = layers_of(ctr, &store, eng)?;
    // The new layer's blob and directory are referenced by no image until it is added.
    let _writing = store.hold_writes()?;
    let tar = store.temp_path("commit.tar")?;
    let result = (|| {
        crate::image::run_in_tmp(
            &store,
            &Job::LayerTar {
                upper,
                dest: tar.clone(),
            },
        )?;
        let file = std::fs::File::open(&tar).context("reading the committed layer")?;
        let len = file.metadata().map_or(0, |m| m.len());
        let (blob, size) = store
            .put_blob(file, None, None, "the container's layer", |_| {})
            .map_err(|e| e.needing(len))?;
        let created_by = format!("nook commit {}", ctr.record.name);
        let record =
            nook_fs::archive::record_with_layer(&store, &base, &blob, size, name, &created_by)?;
        crate::image::ensure_layers(&store, &record, &*eng.notify)
            .context("unpacking the committed layer")?;
        store.add_image(record.clone())?;
        Ok::<_, Error>(record)
    })();
    let _ = std::fs::remove_file(&tar);
    result
}
