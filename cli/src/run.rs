//! `nook run`: the flags become a request, the engine runs it (engine/src/run.rs has the
//! path itself: image → root → spec → spawn → supervise).

use std::path::PathBuf;

use anyhow::Result;
use nook_engine::container::record::{Container, Places};
use nook_engine::run::{self, Passing, RuntimeFiles};
use nook_engine::RunRequest;

use crate::flags::RunArgs;
use crate::image_cmds;

pub fn run(args: RunArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let request = RunRequest::try_from(&args)?;
    let eng = crate::notify::engine(store_root);
    let passing = Passing::of(args.preserve_fds, &*eng.notify)?;
    let creds = image_cmds::pull_from(&args.registry).creds;
    let creds = creds.as_ref();
    if args.detach {
        return crate::container::lifecycle::run_detached(&eng, &request, creds, &passing);
    }
    let places = Places::for_run(eng.store_root.clone(), &request)?;
    // The image first: a failed pull leaves no container behind.
    let image = run::choose_image(&eng, &request, creds, &*image_cmds::run_progress())?;
    let ctr = Container::create(&places, &request, image.image_id())?;
    let _runtime = RuntimeFiles::new(&places, &ctr)?;
    Ok(run::run_container(
        &eng, &places, &ctr, &image, None, &passing,
    )?)
}
