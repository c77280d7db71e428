//! `nook system df`: the disk space images and containers use and what could be
//! reclaimed, in podman's rows and columns (TYPE TOTAL ACTIVE SIZE RECLAIMABLE; nook has
//! no named volumes, so no "Local Volumes" row), plus a row for blobs and layers that no
//! image references (what a failed or killed pull or import left: `system prune`
//! removes them).
//!
//! Sizes are space on disk (blocks, as du counts; hard links once): an image's blobs
//! (compressed) and its unpacked layers, each shared part counted once; a container's
//! writable layer, or the copy the copy driver made for it. Images are active when a
//! container uses them; their reclaimable space is what removing every inactive image
//! would free. Trees of subordinate IDs are measured by the store helper, in the user
//! namespace that can read them all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::flags::DfArgs;
use crate::format::Output;
use crate::image_cmds;
use crate::units::human_size;
use nook_engine::container::record::Status;
use nook_engine::store_helper::{self, Job};

/// One row, with podman's field names for `--format`.
#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Row {
    #[serde(rename = "Type")]
    kind: String,
    total: usize,
    active: usize,
    size: String,
    reclaimable: String,
    raw_size: u64,
    raw_reclaimable: u64,
}

impl Row {
    fn new(kind: &str, total: usize, active: usize, size: u64, reclaimable: u64) -> Row {
        let percent = (reclaimable * 100).checked_div(size).unwrap_or(0);
        Row {
            kind: kind.into(),
            total,
            active,
            size: human_size(size),
            reclaimable: format!("{} ({percent}%)", human_size(reclaimable)),
            raw_size: size,
            raw_reclaimable: reclaimable,
        }
    }
}

const TABLE: &str = "{{.Type}}\t{{.Total}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}";

pub fn df_cmd(args: DfArgs, root: Option<PathBuf>) -> Result<i32> {
    let output = Output::parse(args.format.as_deref().unwrap_or(""), TABLE)?;
    output.check(&Row::default())?;
    let places = crate::notify::places(root.clone())?;
    // As `ps`: a `--rm` container whose supervisor was killed is removed, not counted.
    nook_engine::container::lifecycle::sweep_dead_rm_containers(&places, &crate::notify::Stderr);
    let store = image_cmds::open_store(root.clone())?;
    let images = store.images()?;
    let in_use: BTreeSet<String> = image_cmds::images_in_use(root).into_iter().collect();
    let runtime = places.runtime.parent().map(Path::to_path_buf);
    let containers: Vec<_> = places
        .all()
        .into_iter()
        .map(|c| {
            let running = c.state().status == Status::Running;
            let mut trees: Vec<PathBuf> = [Some(c.dir.join("layer")), c.record.layer_dir.clone()]
                .into_iter()
                .flatten()
                .collect();
            trees.extend(
                runtime
                    .as_ref()
                    .map(|r| nook_engine::copies::dir(r).join(&c.record.id)),
            );
            trees.retain(|p| p.exists());
            (running, trees)
        })
        .collect();
    let unreferenced = store.unreferenced(&images)?;

    // Every tree measured in one helper run.
    let layer_dir = |hex: &str| store.root().join("layers").join(hex);
    let layer_hexes: BTreeSet<String> = images
        .iter()
        .flat_map(|i| i.layers.iter().map(|l| l.diff_id.hex().to_string()))
        .collect();
    let mut trees: Vec<PathBuf> = layer_hexes.iter().map(|h| layer_dir(h)).collect();
    trees.extend(containers.iter().flat_map(|(_, t)| t.iter().cloned()));
    trees.extend(unreferenced.layers.iter().cloned());
    let sizes: BTreeMap<PathBuf, u64> = if trees.is_empty() {
        BTreeMap::new()
    } else {
        let bytes = store_helper::run(&Job::Usage(trees.clone()))?.bytes;
        trees.into_iter().zip(bytes).collect()
    };
    let tree = |p: &Path| sizes.get(p).copied().unwrap_or(0);
    let blob = |hex: &str| {
        std::fs::metadata(store.root().join("blobs/sha256").join(hex)).map_or(0, |m| m.len())
    };

    // What a set of images holds, each blob and layer once.
    let holds = |set: &mut dyn Iterator<Item = &nook_fs::store::ImageRecord>| -> u64 {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for i in set {
            blobs.insert(i.manifest.hex().to_string());
            blobs.insert(i.id.hex().to_string());
            for l in &i.layers {
                blobs.insert(l.blob.hex().to_string());
                layers.insert(l.diff_id.hex().to_string());
            }
        }
        blobs.iter().map(|h| blob(h)).sum::<u64>()
            + layers.iter().map(|h| tree(&layer_dir(h))).sum::<u64>()
    };
    let active = |i: &&nook_fs::store::ImageRecord| in_use.contains(i.id.hex());
    let all_size = holds(&mut images.iter());
    let active_size = holds(&mut images.iter().filter(active));
    let mut rows = vec![Row::new(
        "Images",
        images.len(),
        images.iter().filter(active).count(),
        all_size,
        all_size.saturating_sub(active_size),
    )];

    let size_of = |t: &[PathBuf]| t.iter().map(|p| tree(p)).sum::<u64>();
    let ctr_size: u64 = containers.iter().map(|(_, t)| size_of(t)).sum();
    let ctr_idle: u64 = containers
        .iter()
        .filter(|(running, _)| !running)
        .map(|(_, t)| size_of(t))
        .sum();
    rows.push(Row::new(
        "Containers",
        containers.len(),
        containers.iter().filter(|(running, _)| *running).count(),
        ctr_size,
        ctr_idle,
    ));

    let unref_size = unreferenced.blobs.iter().map(|(_, n)| n).sum::<u64>()
        + unreferenced.layers.iter().map(|p| tree(p)).sum::<u64>();
    let unref_count = unreferenced.blobs.len() + unreferenced.layers.len();
    // While a pull or import runs, what it stored is not referenced yet, and is not
    // collected: not reclaimable now.
    let writing = unref_count > 0 && store.writers_active()?;
    rows.push(Row::new(
        "Unreferenced data",
        unref_count,
        if writing { unref_count } else { 0 },
        unref_size,
        if writing { 0 } else { unref_size },
    ));
    print!(
        "{}",
        output.render(&rows, &[("Type", "TYPE"), ("Reclaimable", "RECLAIMABLE")])?
    );
    Ok(0)
}
