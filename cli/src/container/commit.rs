//! `nook diff` and `nook commit` (the work: nook_engine::container::commit).

use std::path::PathBuf;

use anyhow::Result;
use nook_engine::container::commit;

use crate::flags::{CommitArgs, CtrArgs};
use crate::image_cmds;

/// `nook diff CTR`: A/C/D lines, as podman diff prints them.
pub fn diff_cmd(args: CtrArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root.clone())?;
    let ctr = places.find(&args.container)?;
    for line in commit::changes(&crate::notify::engine(store_root), &ctr)? {
        println!("{line}");
    }
    Ok(0)
}

/// `nook commit CTR [IMAGE]`: the container's changes as one more layer of its image.
pub fn commit_cmd(args: CommitArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root.clone())?;
    let ctr = places.find(&args.container)?;
    let name = args.image.as_deref().map(image_cmds::qualify).transpose()?;
    let record = commit::commit(&crate::notify::engine(store_root), &ctr, name)?;
    println!("{}", record.id.hex());
    Ok(0)
}
