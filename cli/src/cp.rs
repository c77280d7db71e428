//! `nook cp`: which side is the container's (the copy itself: nook_engine::cp).

use std::path::PathBuf;

use anyhow::{bail, Result};
use nook_engine::container::record::{Places, Status};
use nook_engine::cp;

use crate::flags::CpArgs;
use crate::notify::Stderr;

pub fn cp_cmd(args: CpArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let src = Side::parse(&places, &args.source);
    let dst = Side::parse(&places, &args.dest);
    match (src, dst) {
        (Side::Container(pid, from), Side::Host(to)) => cp::copy_from(pid, &from, &to, &Stderr),
        (Side::Host(from), Side::Container(pid, to)) => cp::copy_to(pid, &from, &to, &Stderr),
        (Side::Host(_), Side::Host(_)) => {
            bail!("one side of `nook cp` must be CONTAINER:PATH (a running container)")
        }
        (Side::Container(..), Side::Container(..)) => {
            bail!("copying between two containers is not supported: copy through the host")
        }
        (Side::NotRunning(name), _) | (_, Side::NotRunning(name)) => {
            bail!("container {name} is not running: start it to copy files in or out")
        }
    }?;
    Ok(0)
}

enum Side {
    Host(PathBuf),
    Container(i32, PathBuf),
    NotRunning(String),
}

impl Side {
    /// `CTR:PATH` when CTR names a container; anything else is a host path.
    fn parse(places: &Places, text: &str) -> Side {
        if let Some((name, path)) = text.split_once(':') {
            if let Ok(ctr) = places.find(name) {
                let st = ctr.state();
                return match st.pid.filter(|p| st.status == Status::Running && p.alive()) {
                    Some(p) => Side::Container(p.pid, PathBuf::from(path)),
                    None => Side::NotRunning(ctr.record.name),
                };
            }
        }
        Side::Host(PathBuf::from(text))
    }
}
