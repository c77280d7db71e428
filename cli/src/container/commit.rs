//! `nook diff` and `nook commit`: a container's writable layer read as changes, or
//! turned into a new image layer on top of the container's image.
//!
//! Both read the upper layer in the store helper (inside the user namespace): its files
//! belong to the container's IDs, and a commit's tar must record them as such.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

use super::record::{Container, Places};
use crate::flags::{CommitArgs, CtrArgs};
use crate::image_cmds;
use crate::store_helper::{self, Job};

/// The container's upper directory and its image's layer directories (lowest first).
fn layers_of(
    ctr: &Container,
    store: &nook_fs::store::Store,
) -> Result<(PathBuf, Vec<PathBuf>, nook_fs::store::ImageRecord)> {
    let image_id = ctr.record.image_id.as_deref().ok_or_else(|| {
        anyhow!(
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
    let image = image_cmds::find(store, image_id)
        .with_context(|| format!("the image of container {}", ctr.record.name))?;
    let layers = image
        .layers
        .iter()
        .map(|l| store.layer_dir(&l.diff_id))
        .collect();
    Ok((upper, layers, image))
}

/// `nook diff CTR`: A/C/D lines, as podman diff prints them.
pub fn diff_cmd(args: CtrArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = Places::open(store_root.clone())?;
    let ctr = places.find(&args.container)?;
    let store = image_cmds::open_store(store_root)?;
    let (upper, layers, _) = layers_of(&ctr, &store)?;
    let outcome = store_helper::run(&Job::Changes { upper, layers })?;
    for line in outcome.changes.iter().filter(|l| !is_mount_point(l)) {
        println!("{line}");
    }
    Ok(0)
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

/// `nook commit CTR [IMAGE]`: the container's changes as one more layer of its image.
pub fn commit_cmd(args: CommitArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = Places::open(store_root.clone())?;
    let ctr = places.find(&args.container)?;
    let store = image_cmds::open_store(store_root)?;
    let (upper, _, base) = layers_of(&ctr, &store)?;
    let name = args.image.as_deref().map(image_cmds::qualify).transpose()?;
    // The new layer's blob and directory are referenced by no image until it is added.
    let _writing = store.hold_writes()?;
    let tar = store.temp_path("commit.tar")?;
    let result = (|| {
        image_cmds::run_in_tmp(
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
        image_cmds::ensure_layers(&store, &record).context("unpacking the committed layer")?;
        store.add_image(record.clone())?;
        Ok::<_, anyhow::Error>(record)
    })();
    let _ = std::fs::remove_file(&tar);
    let record = result?;
    println!("{}", record.id.hex());
    Ok(0)
}
