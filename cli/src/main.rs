//! `nook`: rootless containers, no daemon. Parses the command line and maps the result
//! to podman's exit codes: 125 nook failed, 126/127 the command could not be run,
//! otherwise the container's own status.

mod env;
mod flags;
mod image_cmds;
mod info;
mod names;
mod network;
mod resources;
mod run;
mod spec;
mod stats;
mod storage;
mod store_helper;
mod unshare;
mod users;

use clap::Parser;

use flags::{Cli, Command, Format};

/// podman's status for "the container engine itself failed".
const EXIT_NOOK_FAILED: i32 = 125;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { EXIT_NOOK_FAILED } else { 0 });
        }
    };
    let root = cli.root;
    let result = match cli.command {
        Command::Run(args) => run::run(*args, root),
        Command::Unshare(args) => unshare::run(args),
        Command::Stats(args) => stats::stats(args),
        Command::Pause(args) => stats::pause(args, true),
        Command::Unpause(args) => stats::pause(args, false),
        Command::Info(args) => {
            let mut report = nook_rootless::probe::probe_all();
            report.probes.push(storage::probe());
            info::print(&report, args.format == Format::Json).map(|()| 0)
        }
        Command::Pull(args) => image_cmds::pull_cmd(root, args),
        Command::Images(args) => image_cmds::images_cmd(root, args),
        Command::Rmi(args) => image_cmds::rmi_cmd(root, args),
        Command::Inspect(args) => image_cmds::inspect_cmd(root, args),
        Command::Tag(args) => image_cmds::tag_cmd(root, args),
        Command::Import(args) => image_cmds::import_cmd(root, args),
        Command::Load(args) => image_cmds::load_cmd(root, args),
        Command::Save(args) => image_cmds::save_cmd(root, args),
        Command::Login(args) => image_cmds::login_cmd(args),
        Command::Logout(args) => image_cmds::logout_cmd(args),
        Command::System(flags::SystemCommand::Check(args)) => image_cmds::check_cmd(root, args),
        Command::StoreHelper => store_helper::main(),
        Command::FuseServer => storage::fuse_server_main(),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("nook: {e:#}");
            let code = e
                .downcast_ref::<nook_rootless::Error>()
                .map_or(EXIT_NOOK_FAILED, nook_rootless::Error::exit_code);
            std::process::exit(code);
        }
    }
}
