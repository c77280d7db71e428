//! `nook`: rootless containers, no daemon. Parses the command line and maps the result
//! to podman's exit codes: 125 nook failed, 126/127 the command could not be run,
//! otherwise the container's own status.

mod env;
mod flags;
mod info;
mod names;
mod run;
mod spec;
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
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Unshare(args) => unshare::run(args),
        Command::Info(args) => {
            let report = nook_rootless::probe::probe_all();
            info::print(&report, args.format == Format::Json).map(|()| 0)
        }
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
