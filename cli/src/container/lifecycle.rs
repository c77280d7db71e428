//! Container lifecycle commands: run -d, create, start, stop, kill, restart, rm, wait,
//! rename, container prune, system prune/reset. The work is the engine's
//! (nook_engine::container::lifecycle); these parse, confirm and print.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nook_engine::container::lifecycle::{self, IfRunning};
use nook_engine::container::record::ProcessId;
use nook_engine::container::record::{Container, Places, Status};
use nook_engine::container::supervisor;
use nook_engine::run::Passing;
use nook_engine::store_helper::{self, Job};
use nook_engine::{Engine, RunRequest};

use crate::flags::{
    CtrsArgs, KillArgs, PruneArgs, RenameArgs, RmArgs, RunArgs, StartArgs, StopArgs,
};
use crate::notify::Stderr;

/// `nook run -d`: the image (pulled here, with progress), the record, then the
/// supervisor; prints the ID once the container runs.
/// The descriptors `passing` names go to the supervisor, which hands them on.
pub fn run_detached(
    eng: &Engine,
    request: &RunRequest,
    creds: Option<&nook_fs::auth::Credentials>,
    passing: &Passing,
) -> Result<i32> {
    let ctr = nook_engine::run::create(eng, request, creds, &*crate::image_cmds::run_progress())?;
    supervisor::spawn_with(&ctr, None, passing, &Stderr)?;
    println!("{}", ctr.record.id);
    Ok(0)
}

/// `nook create`.
pub fn create_cmd(args: RunArgs, store_root: Option<PathBuf>) -> Result<i32> {
    if args.rm {
        bail!("--rm is for `nook run`: a created container is removed with `nook rm`");
    }
    if let Some(n) = args.preserve_fds {
        bail!(
            "--preserve-fds {n} passes descriptors of the command that starts the container: \
             use it with `nook run` (a created container starts from `nook start`, later)"
        );
    }
    let request = RunRequest::try_from(&args)?;
    let creds = crate::image_cmds::pull_from(&args.registry).creds;
    let eng = crate::notify::engine(store_root);
    let progress = crate::image_cmds::run_progress();
    let ctr = nook_engine::run::create(&eng, &request, creds.as_ref(), &*progress)?;
    println!("{}", ctr.record.id);
    Ok(0)
}

/// `nook start [-a] CTR...`.
pub fn start_cmd(args: StartArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    if args.attach && args.containers.len() > 1 {
        bail!("start -a takes one container");
    }
    for key in &args.containers {
        let ctr = places.find(key)?;
        if ctr.supervised() {
            if args.attach {
                return super::attach::attach(&places, &ctr, args.interactive);
            }
        } else if args.attach {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
            supervisor::spawn_with(&ctr, Some(theirs), &Passing::default(), &Stderr)?;
            return super::attach::attach_on(&ctr, ours, args.interactive);
        } else {
            supervisor::spawn(&ctr, &Stderr)?;
        }
        println!("{}", ctr.record.name);
    }
    Ok(0)
}

fn targets(places: &Places, all: bool, keys: &[String]) -> Result<Vec<Container>> {
    if all {
        return Ok(places.all());
    }
    if keys.is_empty() {
        bail!("name at least one container, or use --all");
    }
    Ok(keys
        .iter()
        .map(|k| places.find(k))
        .collect::<nook_engine::Result<_>>()?)
}

/// What `stop_containers` does once a container has stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Nothing,
    Start,
}

/// `nook stop`.
pub fn stop_cmd(args: StopArgs, store_root: Option<PathBuf>) -> Result<i32> {
    stop_containers(args, store_root, AfterStop::Nothing)
}

/// `nook restart`.
pub fn restart_cmd(args: StopArgs, store_root: Option<PathBuf>) -> Result<i32> {
    stop_containers(args, store_root, AfterStop::Start)
}

fn stop_containers(args: StopArgs, store_root: Option<PathBuf>, then: AfterStop) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let mut failed = false;
    for ctr in targets(&places, args.all, &args.containers)? {
        let timeout = Duration::from_secs(args.time.unwrap_or(ctr.record.request.stop_timeout));
        let result = lifecycle::stop(&ctr, timeout, &Stderr).and_then(|()| match then {
            AfterStop::Start => supervisor::spawn(&ctr, &Stderr),
            AfterStop::Nothing => Ok(()),
        });
        match result {
            Ok(()) => println!("{}", ctr.record.name),
            Err(e) => {
                eprintln!(
                    "nook: {}: {why}",
                    ctr.record.name,
                    why = nook_engine::error::chain_line(&e)
                );
                failed = true;
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

/// `nook kill`.
pub fn kill_cmd(args: KillArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let sig = args.signal;
    let mut failed = false;
    for ctr in targets(&places, args.all, &args.containers)? {
        let st = ctr.state();
        let pid = st
            .pid
            .filter(|_| st.status == Status::Running)
            .and_then(ProcessId::pidfd);
        let Some(pid) = pid else {
            if !args.all {
                eprintln!("nook: container {} is not running", ctr.record.name);
                failed = true;
            }
            continue;
        };
        lifecycle::mark_stopped(&ctr)?;
        match pid.signal(sig) {
            Ok(()) => println!("{}", ctr.record.name),
            Err(e) => {
                eprintln!("nook: signalling {}: {e}", ctr.record.name);
                failed = true;
            }
        }
    }
    Ok(if failed { 125 } else { 0 })
}

/// `nook rm`.
pub fn rm_cmd(args: RmArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let mut failed = false;
    let if_running = match args.force {
        true => IfRunning::Kill,
        false => IfRunning::Refuse,
    };
    // Records that cannot be read are removed too: by name or ID, and with --all.
    let mut broken = Vec::new();
    let mut found = Vec::new();
    if args.all {
        found = places.all();
        broken = places.broken();
    } else if args.containers.is_empty() {
        bail!("name at least one container, or use --all");
    }
    for key in &args.containers {
        match (places.find(key), places.find_broken(key)) {
            (Ok(ctr), _) => found.push(ctr),
            (Err(_), Some(b)) => broken.push(b),
            (Err(e), None) => return Err(e.into()),
        }
    }
    for ctr in found {
        match lifecycle::remove(&places, &ctr, if_running, &Stderr) {
            Ok(()) => println!("{}", ctr.record.id),
            Err(e) => {
                eprintln!("nook: {}", nook_engine::error::chain_line(&e));
                failed = true;
            }
        }
    }
    for b in broken {
        let left = lifecycle::remove_broken(&places, &b);
        for what in &left {
            eprintln!("nook: warning: left {what}");
        }
        failed |= !left.is_empty();
        println!("{}", b.id);
    }
    Ok(if failed { 1 } else { 0 })
}

/// `nook wait`: prints each container's exit code once it has exited.
pub fn wait_cmd(args: CtrsArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    for key in &args.containers {
        let ctr = places.find(key)?;
        println!("{}", lifecycle::wait(&ctr)?);
    }
    Ok(0)
}

/// `nook rename`.
pub fn rename_cmd(args: RenameArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let mut ctr = places.find(&args.container)?;
    places.reserve_name(&args.new_name, &ctr.record.id, ctr.record.request.rm)?;
    let old = std::mem::replace(&mut ctr.record.name, args.new_name.clone());
    if let Err(e) = ctr.write_record() {
        places.release_name(&args.new_name, &ctr.record.id);
        return Err(e.into());
    }
    places.release_name(&old, &ctr.record.id);
    Ok(0)
}

fn confirm(force: bool, what: &str) -> Result<bool> {
    if force {
        return Ok(true);
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("{what}: add --force to confirm (stdin is not a terminal to ask on)");
    }
    eprint!("{what}. Are you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `nook container prune`.
pub fn container_prune_cmd(args: PruneArgs, store_root: Option<PathBuf>) -> Result<i32> {
    if !confirm(args.force, "This removes every stopped container")? {
        return Ok(0);
    }
    let places = crate::notify::places(store_root)?;
    for id in lifecycle::prune_containers(&places, &Stderr) {
        println!("{id}");
    }
    Ok(0)
}

/// `nook system prune`: stopped containers, then images without a name that no
/// container uses, then blobs and layers that no image references.
pub fn system_prune_cmd(args: PruneArgs, store_root: Option<PathBuf>) -> Result<i32> {
    if !confirm(
        args.force,
        "This removes every stopped container and every image without a name",
    )? {
        return Ok(0);
    }
    let places = crate::notify::places(store_root.clone())?;
    let containers = lifecycle::prune_containers(&places, &Stderr);
    let images = crate::image_cmds::prune_unnamed(store_root.clone())?;
    println!(
        "Removed {} container(s) and {} image(s)",
        containers.len(),
        images
    );
    // Then what no image references any more (those images' parts, and what failed or
    // killed pulls and imports stored).
    let store = crate::image_cmds::open_store(store_root)?;
    match crate::image_cmds::collect_unreferenced(&store)? {
        Some(r) if r.blobs + r.layers > 0 => println!(
            "Removed {} blob(s) and {} layer(s) no image used: {} reclaimed",
            r.blobs,
            r.layers,
            crate::units::human_size(r.bytes)
        ),
        Some(_) => {}
        None => eprintln!(
            "nook: a pull, import or commit into this store is running: blobs and layers no \
             image uses are kept until it ends (run `nook system prune` again then)"
        ),
    }
    Ok(0)
}

/// `nook system reset`: every container (killed), the store, the runtime state.
pub fn system_reset_cmd(args: PruneArgs, store_root: Option<PathBuf>) -> Result<i32> {
    if !confirm(
        args.force,
        "This removes every container, every image and all of nook's stored state",
    )? {
        return Ok(0);
    }
    let places = crate::notify::places(store_root.clone())?;
    for ctr in places.all() {
        if let Some(pid) = ctr.state().pid.and_then(ProcessId::pidfd) {
            let _ = lifecycle::mark_stopped(&ctr);
            let _ = pid.signal(libc::SIGKILL);
            pid.wait(Some(Duration::from_secs(10)));
        }
        lifecycle::wait_for_supervisor(&ctr);
        lifecycle::remove_container(&places, &ctr, &Stderr);
    }
    if let Some(root) = nook_fs::paths::store_root(store_root) {
        if root.exists() {
            store_helper::run(&Job::Remove(vec![root.clone()]))
                .with_context(|| format!("removing the store {}", root.display()))?;
        }
    }
    // The runtime dir is the user's, shared by every store: it goes only when no
    // container of another store (`--root`) still lives in it.
    lifecycle::sweep_orphan_runtime_dirs(&places, &Stderr);
    let runtime = nook_rootless::state::runtime_dir()?;
    let others = std::fs::read_dir(runtime.join("containers"))
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    if others == 0 {
        let _ = std::fs::remove_dir_all(&runtime);
    } else {
        eprintln!(
            "nook: kept {} (containers of another store are running)",
            runtime.display()
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use crate::flags::{Cli, Command};
    use clap::Parser;
    use nook_engine::helpers::Supervise;

    #[test]
    fn the_supervisor_command_line_the_engine_builds_is_the_one_the_cli_parses() {
        let built = Supervise {
            dir: "/store/containers/abc".into(),
            store: Some("/store".into()),
            attach_first: false,
            pass_fds: 2,
            listen: true,
            listen_fdnames: Some("a:b".into()),
        };
        let cli = Cli::try_parse_from(std::iter::once("nook".into()).chain(built.args())).unwrap();
        assert_eq!(cli.globals.root.as_deref(), built.store.as_deref());
        let Command::Supervise(args) = cli.command else {
            panic!("not the supervisor");
        };
        assert_eq!(
            (
                args.dir,
                args.attach_first,
                args.pass_fds,
                args.listen,
                args.listen_fdnames
            ),
            (built.dir, false, 2, true, Some("a:b".to_string()))
        );
    }
}
