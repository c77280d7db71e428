//! `nook unshare CMD`: a shell (or CMD) in a user namespace with the same ID map a
//! container gets, so files that container IDs own can be read, changed or removed.

use anyhow::Result;
use nook_rootless::idmap::{self, HostIds, UsernsMode};

use crate::flags::UnshareArgs;

pub fn run(args: UnshareArgs) -> Result<i32> {
    let mapping = idmap::plan(&UsernsMode::Default, &HostIds::current())?;
    if let Some(notice) = &mapping.notice {
        let runtime_dir = nook_rootless::state::runtime_dir().ok();
        crate::logging::notice_once_per_account(
            nook_engine::run::SINGLE_ID_NOTICE,
            notice,
            runtime_dir.as_deref(),
        );
    }
    let command = if args.command.is_empty() {
        vec![std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())]
    } else {
        args.command
    };
    let status = nook_rootless::unshare(&command, &mapping.uid_map, &mapping.gid_map)?;
    Ok(status.code())
}
