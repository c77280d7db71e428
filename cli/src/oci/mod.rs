//! `nook oci ...` and `nook-runtime ...`: the OCI runtime command line (runc's), so that
//! podman, conmon, containerd shims and Slurm can name nook as their runtime.
//!
//! Each lifecycle operation is a small module; they share the container's record
//! (container.rs) under `--root`, one directory per container ID. `create` runs the
//! container's setup through the same execution path as `nook run`
//! (`nook_rootless::create`) and leaves its process parked at a FIFO in that
//! directory; `start` writes to the FIFO and removes it, so "the FIFO exists" is what
//! "created" means. No nook process stays behind: the caller (conmon, a shim) is the
//! container's parent or subreaper.
//!
//! Flags follow runc's and crun's; they are accepted before and after the container
//! ID (youki's contest puts them after), and global flags anywhere.

mod container;
mod create;
mod delete;
mod detect;
mod exec;
mod features;
mod global;
mod kill;
mod pause;
mod ps;
mod run;
mod spec;
mod start;
mod state;
mod update;

use std::ffi::OsString;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use global::report_error;
pub use global::Global;

/// The name under which the binary acts as an OCI runtime.
pub const RUNTIME_NAME: &str = "nook-runtime";

#[derive(Parser, Debug)]
#[command(
    name = "nook-runtime",
    version,
    about = "nook as an OCI runtime (the runc command line)"
)]
pub struct OciCli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: OciCommand,
}

#[derive(Subcommand, Debug)]
pub enum OciCommand {
    /// Create a container from a bundle and leave it waiting for `start`
    Create(create::CreateArgs),
    /// Let a created container run its process
    Start(IdArgs),
    /// Print a container's state (OCI state JSON)
    State(IdArgs),
    /// Send a signal to a container's process (default SIGTERM)
    Kill(kill::KillArgs),
    /// Remove a container (--force: kill it first if it runs)
    Delete(delete::DeleteArgs),
    /// Create and start a container; wait for it unless --detach
    Run(run::RunArgs),
    /// Run another process in a running container
    Exec(exec::ExecArgs),
    /// Freeze a container's processes (needs a cgroup)
    Pause(IdArgs),
    /// Thaw a paused container
    Resume(IdArgs),
    /// List a container's processes
    Ps(ps::PsArgs),
    /// Print what this runtime supports (OCI features JSON)
    Features,
    /// Write a starting config.json for a bundle
    Spec(spec::SpecArgs),
    /// Change the resource limits of a container (flags, or -r FILE with
    /// linux.resources JSON, `-` for stdin)
    Update(Box<update::UpdateArgs>),
}

#[derive(Args, Debug)]
pub struct IdArgs {
    /// The container's ID
    pub id: String,
}

/// `nook oci ...` as clap sees it from nook's own command line (normally `main.rs`
/// hands `oci` over before that parser runs, see [`from_argv`]).
#[derive(Args, Debug)]
pub struct OciPassthrough {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

/// When the binary runs as `nook-runtime`, as `nook oci ...`, or with runc's command
/// line under another name (detect.rs has the rule), runs that and returns the exit
/// status; nook's own flags (such as its global `--root`, the image store) must not see
/// the runtime's.
pub fn from_argv() -> Option<i32> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = args.first().map(std::path::Path::new)?;
    if argv0.file_name().is_some_and(|n| n == RUNTIME_NAME) {
        return Some(main(args));
    }
    if args.get(1).is_some_and(|a| a == "oci") {
        let rest = std::iter::once(OsString::from("nook oci")).chain(args.into_iter().skip(2));
        return Some(main(rest.collect()));
    }
    if detect::is_runtime_form(&args, &detect::OnDisk) {
        return Some(main(args));
    }
    None
}

/// Entry point for `nook oci ARGS` (`args` starts with a program name) and for the
/// binary invoked as `nook-runtime`. Returns the exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    // As for nook's own commands (main.rs): the caller's descriptors reach nothing nook
    // starts, but those it passes on purpose (`--preserve-fds`, LISTEN_FDS).
    nook_rootless::fds::mark_cloexec_from(nook_rootless::fds::FIRST_PASSED);
    let cli = match OciCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let global = cli.global.clone();
    // The library crates report through `tracing` (a squatted runtime directory, say):
    // runc's `--debug` shows their debug events too.
    let level = if global.debug {
        crate::logging::LogLevel::Debug
    } else {
        crate::logging::LogLevel::Warn
    };
    crate::logging::init(Some(level));
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            report_error(&global, &e);
            // runc's status for a failed operation; a command that cannot be executed
            // keeps podman's 126/127 so `run` reports it as `nook run` does.
            e.downcast_ref::<nook_rootless::Error>()
                .map(nook_rootless::Error::exit_code)
                .filter(|c| *c == 126 || *c == 127)
                .unwrap_or(1)
        }
    }
}

fn dispatch(cli: OciCli) -> Result<i32> {
    let g = &cli.global;
    match cli.command {
        OciCommand::Create(args) => create::create(g, &args).map(|_| 0),
        OciCommand::Start(args) => start::start(g, &args.id).map(|()| 0),
        OciCommand::State(args) => state::state(g, &args.id).map(|()| 0),
        OciCommand::Kill(args) => kill::kill(g, &args).map(|()| 0),
        OciCommand::Delete(args) => delete::delete(g, &args).map(|()| 0),
        OciCommand::Run(args) => run::run(g, &args),
        OciCommand::Exec(args) => exec::exec(g, &args),
        OciCommand::Pause(args) => pause::pause(g, &args.id, true).map(|()| 0),
        OciCommand::Resume(args) => pause::pause(g, &args.id, false).map(|()| 0),
        OciCommand::Ps(args) => ps::ps(g, &args).map(|()| 0),
        OciCommand::Features => features::features().map(|()| 0),
        OciCommand::Spec(args) => spec::spec(&args).map(|()| 0),
        OciCommand::Update(args) => update::update(g, &args).map(|()| 0),
    }
}

#[cfg(test)]
mod tests {
    use super::global::LogFormat;
    use super::*;

    fn parse(args: &[&str]) -> OciCli {
        OciCli::try_parse_from(args.iter().map(OsString::from)).unwrap()
    }

    #[test]
    fn flags_before_and_after_the_id() {
        for args in [
            &["r", "--root", "/x", "create", "--bundle", "/b", "c1"][..],
            &["r", "create", "c1", "--bundle", "/b", "--root", "/x"][..],
        ] {
            let cli = parse(args);
            assert_eq!(cli.global.root.as_deref(), Some(std::path::Path::new("/x")));
            match cli.command {
                OciCommand::Create(c) => {
                    assert_eq!(c.id, "c1");
                    assert_eq!(c.bundle.as_deref(), Some(std::path::Path::new("/b")));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn runc_global_flags_are_accepted() {
        let cli = parse(&[
            "r",
            "--systemd-cgroup",
            "--log",
            "/tmp/l",
            "--log-format",
            "json",
            "--debug",
            "state",
            "c1",
        ]);
        assert!(cli.global.systemd_cgroup && cli.global.debug);
        assert_eq!(cli.global.log_format, LogFormat::Json);
    }

    #[test]
    fn kill_takes_a_signal_and_all() {
        let cli = parse(&["r", "kill", "--all", "c1", "KILL"]);
        match cli.command {
            OciCommand::Kill(k) => {
                assert!(k.all);
                assert_eq!(k.signal.as_deref(), Some("KILL"));
            }
            other => panic!("{other:?}"),
        }
    }
}
