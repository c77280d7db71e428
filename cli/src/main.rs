//! `nook`: rootless containers, no daemon. Parses the command line and maps the result
//! to podman's exit codes: 125 nook failed, 126/127 the command could not be run,
//! otherwise the container's own status.

mod completion;
mod config;
mod container;
mod cp;
mod df;
mod errors;
mod exec;
mod exec_pid;
mod flags;
mod format;
mod image_cmds;
mod info;
mod logging;
mod notify;
mod oci;
mod request;
mod run;
mod stats;
mod units;
mod unshare;
mod values;

use flags::{Cli, Command, Format};

/// podman's status for "the container engine itself failed".
const EXIT_NOOK_FAILED: i32 = 125;

/// A bad flag value as one line: the flag, the value and the accepted values (clap's
/// own rendering spreads that over three lines and a hint).
fn value_error_line(e: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    Some(parts.join(" ").trim_start_matches("error: ").to_string())
}

fn main() {
    // A caller that ignores SIGCHLD would have nook's children reaped behind its back.
    // SAFETY: SIG_DFL installs no handler; no other thread exists yet.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    // `nook-runtime ...` and `nook oci ...` have runc's flags, not nook's.
    if let Some(code) = oci::from_argv() {
        std::process::exit(code);
    }
    let (cli, config): (Cli, _) = match config::parse_command_line() {
        Ok(parsed) => parsed,
        Err(e) => {
            match value_error_line(&e) {
                Some(line) => eprintln!("nook: {line}"),
                None => {
                    let _ = e.print();
                }
            }
            std::process::exit(if e.use_stderr() { EXIT_NOOK_FAILED } else { 0 });
        }
    };
    // The caller's descriptors beyond stdio reach nothing nook starts: not its
    // supervisor, logger, helpers or hooks, not a container (which gets those passed on
    // purpose, `--preserve-fds` and LISTEN_FDS, back at its exec: rootless/src/fds.rs).
    // `nook unshare` runs the caller's own command on the host, and hands them on.
    if !matches!(cli.command, Command::Unshare(_)) {
        nook_rootless::fds::mark_cloexec_from(nook_rootless::fds::FIRST_PASSED);
    }
    logging::init(cli.globals.log_level);
    errors::quiet_on_broken_pipe();
    match config {
        Ok(config) => {
            match &config.path {
                Some(path) => {
                    tracing::debug!("configuration read from {}: {config:?}", path.display())
                }
                None => tracing::debug!("no configuration file: built-in defaults"),
            }
            config::set_current(config);
        }
        // Completions and man pages do not depend on it: a broken file must not stop them.
        Err(e) if matches!(cli.command, Command::Completion(_) | Command::Man(_)) => {
            tracing::warn!("{}", errors::Chain(&e));
        }
        Err(e) => {
            eprintln!("nook: {}", errors::Chain(&e));
            std::process::exit(EXIT_NOOK_FAILED);
        }
    }
    // What killed runs left (the copy driver's container roots) goes first, whatever
    // the command: one stat when there is nothing (copies.rs).
    if !matches!(
        cli.command,
        Command::Supervise(_)
            | Command::StoreHelper
            | Command::FuseServer
            | Command::ExecPid(_)
            | Command::Completion(_)
            | Command::Man(_)
            | Command::Oci(_)
    ) {
        let (runtime, _) = nook_rootless::state::runtime_dir_for(nix::unistd::getuid().as_raw());
        nook_engine::copies::sweep(&runtime, &notify::Stderr);
    }
    let root = cli.globals.root;
    let result = match cli.command {
        Command::Run(args) => run::run(*args, root),
        Command::Unshare(args) => unshare::run(args),
        Command::Stats(args) => stats::stats(args, root),
        Command::Pause(args) => stats::pause_cmd(args, root),
        Command::Unpause(args) => stats::unpause_cmd(args, root),
        Command::Info(args) => {
            let mut report = nook_rootless::probe::probe_all();
            report.probes.push(nook_engine::storage::probe());
            info::print(&report, args.format == Format::Json).map(|()| 0)
        }
        Command::Pull(args) => image_cmds::pull_cmd(root, args),
        Command::Images(args) => image_cmds::images_cmd(root, args),
        Command::Rmi(args) => image_cmds::rmi_cmd(root, args),
        Command::Inspect(args) => container::inspect_cmd(root, args),
        Command::Tag(args) => image_cmds::tag_cmd(root, args),
        Command::Import(args) => image_cmds::import_cmd(root, args),
        Command::Load(args) => image_cmds::load_cmd(root, args),
        Command::Save(args) => image_cmds::save_cmd(root, args),
        Command::Login(args) => image_cmds::login_cmd(args),
        Command::Logout(args) => image_cmds::logout_cmd(args),
        Command::System(flags::SystemCommand::Check(args)) => image_cmds::check_cmd(root, args),
        Command::System(flags::SystemCommand::Df(args)) => df::df_cmd(args, root),
        Command::System(flags::SystemCommand::Prune(args)) => {
            container::lifecycle::system_prune_cmd(args, root)
        }
        Command::System(flags::SystemCommand::Reset(args)) => {
            container::lifecycle::system_reset_cmd(args, root)
        }
        Command::Create(args) => container::lifecycle::create_cmd(*args, root),
        Command::Start(args) => container::lifecycle::start_cmd(args, root),
        Command::Ps(args) => container::ps::ps_cmd(args, root),
        Command::Logs(args) => container::logs::logs_cmd(args, root),
        Command::Exec(args) => exec::exec_cmd(args, root),
        Command::Attach(args) => container::attach::attach_cmd(args, root),
        Command::Stop(args) => container::lifecycle::stop_cmd(args, root),
        Command::Restart(args) => container::lifecycle::restart_cmd(args, root),
        Command::Kill(args) => container::lifecycle::kill_cmd(args, root),
        Command::Rm(args) => container::lifecycle::rm_cmd(args, root),
        Command::Wait(args) => container::lifecycle::wait_cmd(args, root),
        Command::Top(args) => container::ps::top_cmd(args, root),
        Command::Cp(args) => cp::cp_cmd(args, root),
        Command::Port(args) => container::ps::port_cmd(args, root),
        Command::Rename(args) => container::lifecycle::rename_cmd(args, root),
        Command::Diff(args) => container::commit::diff_cmd(args, root),
        Command::Commit(args) => container::commit::commit_cmd(args, root),
        Command::Container(flags::ContainerCommand::Prune(args)) => {
            container::lifecycle::container_prune_cmd(args, root)
        }
        Command::Supervise(args) => {
            let passing = nook_engine::run::Passing {
                fds: nook_rootless::fds::PassedFds {
                    count: args.pass_fds,
                    listen: args.listen,
                },
                names: args.listen_fdnames,
            };
            let eng = notify::engine(root);
            nook_engine::container::supervisor::main(&eng, &args.dir, args.attach_first, &passing)
                .map_err(Into::into)
        }
        Command::StoreHelper => nook_engine::store_helper::main().map_err(Into::into),
        Command::FuseServer => nook_engine::storage::fuse_server_main().map_err(Into::into),
        Command::ExecPid(args) => exec_pid::run(args, None),
        Command::Completion(args) => completion::completion_cmd(args.shell),
        Command::Man(args) => completion::man_cmd(&args.dir),
        Command::Oci(args) => Ok(oci::main(
            std::iter::once("nook oci".into())
                .chain(args.args)
                .collect(),
        )),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) if errors::is_broken_pipe(&e) => std::process::exit(0),
        Err(e) => {
            eprintln!("nook: {}", errors::Chain(&e));
            let code = errors::exit_code_of(&e);
            std::process::exit(code);
        }
    }
}
