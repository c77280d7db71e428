//! `nook`: rootless containers, no daemon. Parses the command line and maps the result
//! to podman's exit codes: 125 nook failed, 126/127 the command could not be run,
//! otherwise the container's own status.

mod apt_sandbox;
mod completion;
mod config;
mod container;
mod copies;
mod cp;
mod df;
mod env;
mod errors;
mod exec;
mod exec_pid;
mod flags;
mod format;
mod image_cmds;
mod info;
mod logging;
mod network;
mod oci;
mod resources;
mod run;
mod seccomp;
mod spec;
mod stats;
mod storage;
mod store_helper;
mod units;
mod unshare;
mod users;

use flags::{Cli, Command, Format};

/// podman's status for "the container engine itself failed".
const EXIT_NOOK_FAILED: i32 = 125;

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
            let _ = e.print();
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
        copies::sweep(&runtime);
    }
    let root = cli.globals.root;
    let result = match cli.command {
        Command::Run(args) => run::run(*args, root),
        Command::Unshare(args) => unshare::run(args),
        Command::Stats(args) => stats::stats(args, root),
        Command::Pause(args) => stats::pause(args, true, root),
        Command::Unpause(args) => stats::pause(args, false, root),
        Command::Info(args) => {
            let mut report = nook_rootless::probe::probe_all();
            report.probes.push(storage::probe());
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
        Command::Stop(args) => container::lifecycle::stop_cmd(args, root, false),
        Command::Restart(args) => container::lifecycle::stop_cmd(args, root, true),
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
            let passing = run::Passing {
                fds: nook_rootless::fds::PassedFds {
                    count: args.pass_fds,
                    listen: args.listen,
                },
                names: args.listen_fdnames,
            };
            container::supervisor::main(&args.dir, args.attach_first, &passing, root)
        }
        Command::StoreHelper => store_helper::main(),
        Command::FuseServer => storage::fuse_server_main(),
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
        Err(e) => {
            eprintln!("nook: {}", errors::Chain(&e));
            let code = match e.downcast_ref::<container::supervisor::ExitError>() {
                Some(exit) => exit.0,
                None => e
                    .downcast_ref::<nook_rootless::Error>()
                    .map_or(EXIT_NOOK_FAILED, nook_rootless::Error::exit_code),
            };
            std::process::exit(code);
        }
    }
}
