//! `nook exec CTR CMD`: finds the running container and runs CMD in it through
//! `nook_rootless::join` (every namespace of the container, its cgroup, its
//! capabilities), modelled on the container's first process (see exec_pid.rs).

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::flags::{ExecArgs, ExecPidArgs};
use nook_engine::container::record::Status;

pub fn exec_cmd(args: ExecArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let ctr = places.find(&args.container)?;
    let st = ctr.state();
    let Some(pid) = st.pid.filter(|p| st.status == Status::Running && p.alive()) else {
        bail!(
            "container {} is not running: `nook start {}` starts it",
            ctr.record.name,
            ctr.record.name
        );
    };
    let runtime_dir = ctr.runtime_dir(&places);
    crate::exec_pid::run(
        ExecPidArgs {
            pid: pid.pid,
            tty: args.tty,
            interactive: args.interactive,
            detach: args.detach,
            env: args.env,
            // As podman: the container's working directory unless -w says otherwise.
            workdir: args.workdir.map(PathBuf::from).or(st.workdir.clone()),
            user: args.user,
            command: args.command,
            console_socket: None,
            preserve_fds: args.preserve_fds,
        },
        Some(&runtime_dir),
    )
}
