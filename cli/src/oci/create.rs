//! `create`: the bundle's spec, completed for a rootless start, through the shared
//! execution path up to the command, which then waits for `start`.
//!
//! Steps: read and check BUNDLE/config.json (`nook_rootless::bundle`: every refusal
//! names the field; hooks absolute; the command line within execve's limit) → resolve
//! the root and relative bind sources against the bundle → add a user namespace with
//! the account's ID map when the spec has none (an unprivileged runtime needs one; the
//! subordinate range through the setuid helper, so that a default spec's `gid=5`
//! devpts mount works) → the container's directory and its start FIFO → cgroup (where
//! delegated) → `nook_rootless::create` → record → console socket, pid file →
//! prestart, createRuntime, createContainer hooks.

use std::fs;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use nook_rootless::fds::PassedFds;
use nook_rootless::idmap::{self, HostIds, UsernsMode};
use nook_rootless::{Created, RunOptions, StdinMode};
use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType, Spec,
};

use super::container::{self, Container, Record, Status, CONFIG_FILE, START_FIFO};
use super::global::Global;

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The container's ID
    pub id: String,
    /// The bundle directory (holding config.json); default: the current directory
    #[arg(long, short = 'b', value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Write the container's pid to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to which the pty master is sent (process.terminal)
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (nook never pivots differently)
    #[arg(long, hide = true)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility
    #[arg(long, hide = true)]
    pub no_new_keyring: bool,
    /// Pass descriptors 3..3+N of this command to the container's process (after those
    /// of socket activation, LISTEN_FDS, as runc orders them); no others cross
    #[arg(long, value_name = "N")]
    pub preserve_fds: Option<u32>,
}

/// A created container and, while it lives, what only `oci run` still needs.
pub struct CreatedContainer {
    pub container: Container,
    pub _created: Option<Created>,
}

pub fn create(global: &Global, args: &CreateArgs) -> Result<CreatedContainer> {
    container::check_id(&args.id)?;
    let bundle = match &args.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().context("the current directory")?,
    };
    let bundle = fs::canonicalize(&bundle)
        .with_context(|| format!("bundle {}: no such directory", bundle.display()))?;
    let config = bundle.join("config.json");
    if !config.is_file() {
        bail!(
            "bundle {} has no config.json (make one with `nook oci spec --rootless --bundle {}`)",
            bundle.display(),
            bundle.display()
        );
    }
    let mut spec = load_config(&config)?;
    complete_spec(global, &mut spec, &bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && args.console_socket.is_none() {
        bail!("process.terminal is set: give --console-socket to receive the pty");
    }

    let root = container::root_dir(global)?;
    let dir = root.join(&args.id);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "container {} already exists: delete it first or choose another ID",
                args.id
            )
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let cleanup = DirGuard(Some(dir.clone()));
    let config = dir.join(CONFIG_FILE);
    nook_rootless::state::write_file(
        &config,
        serde_json::to_vec(&spec)?,
        nook_rootless::state::PRIVATE_FILE,
    )
    .with_context(|| format!("saving the container's configuration {}", config.display()))?;
    let gate = make_gate(&dir)?;
    if spec.process().is_none() {
        // Allowed by the runtime-spec: such a container exists, and `start` fails.
        drop(gate);
        return no_process(global, args, spec, bundle, dir, cleanup);
    }

    let cgroup =
        match nook_rootless::cgroups::prepare(&spec, nook_rootless::cgroups::Mode::Enabled)? {
            nook_rootless::cgroups::Setup::Cgroup(cg) => Some(cg),
            nook_rootless::cgroups::Setup::None { notice } => {
                if let Some(n) = notice {
                    super::global::debug(global, &n);
                }
                None
            }
        };
    let (passed_fds, run_spec) = passed_fds(args, &spec)?;
    let options = RunOptions {
        stdin: StdinMode::Inherit,
        init: false,
        network: None,
        fuse_socket: None,
        on_spawned: None,
        on_started: None,
        passed_fds,
    };
    let created = nook_rootless::create(&run_spec, &options, cgroup.as_ref(), &gate)?;
    drop(gate);
    let start_time = container::proc_stat(created.pid).map_or(0, |(_, t)| t);
    let record = Record {
        id: args.id.clone(),
        pid: created.pid,
        start_time,
        bundle,
        created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup: cgroup.as_ref().map(|c| c.path().to_path_buf()),
        oci_version: spec.version().clone(),
    };
    let container = Container { dir, record };
    let kill_on_error = |e: anyhow::Error| {
        let _ = container.signal(libc::SIGKILL);
        e
    };
    container.save().map_err(kill_on_error)?;
    if let Some(cg) = cgroup {
        // The cgroup outlives this process; `delete` removes it.
        std::mem::forget(cg);
    }
    if let (Some(path), Some(master)) = (&args.console_socket, &created.console) {
        send_console(path, master).map_err(kill_on_error)?;
    }
    if let Some(path) = &args.pid_file {
        write_pid_file(path, created.pid).map_err(kill_on_error)?;
    }
    for stage in ["prestart", "createRuntime", "createContainer"] {
        container::run_hooks(global, &container, Some(&spec), stage, Status::Created)
            .map_err(kill_on_error)?;
    }
    std::mem::forget(cleanup);
    Ok(CreatedContainer {
        container,
        _created: Some(created),
    })
}

/// The descriptors the container's process gets, runc's way: socket activation's first
/// (LISTEN_FDS, when LISTEN_PID names this process; the process is told LISTEN_FDS and
/// its own pid), then `--preserve-fds N`. The spec to run has those variables; the saved
/// config.json (which `exec` starts from) does not.
fn passed_fds<'s>(
    args: &CreateArgs,
    spec: &'s Spec,
) -> Result<(PassedFds, std::borrow::Cow<'s, Spec>)> {
    let listen = nook_rootless::fds::listen_fds();
    let listened = listen.as_ref().map_or(0, |l| l.count);
    let passed = PassedFds {
        count: listened.saturating_add(args.preserve_fds.unwrap_or(0)),
        listen: listened > 0,
    };
    if let Some(fd) = passed.first_missing() {
        bail!(
            "descriptor {fd} is not open: --preserve-fds {} and LISTEN_FDS={listened} pass 3..{}",
            args.preserve_fds.unwrap_or(0),
            2 + passed.count
        );
    }
    let Some(listen) = listen else {
        return Ok((passed, std::borrow::Cow::Borrowed(spec)));
    };
    let mut spec = spec.clone();
    if let Some(process) = spec.process_mut().as_mut() {
        let mut env = process.env().clone().unwrap_or_default();
        env.retain(|v| !v.starts_with("LISTEN_"));
        env.push(format!("LISTEN_FDS={}", listen.count));
        env.push("LISTEN_PID=1".into());
        if let Some(names) = listen.names {
            env.push(format!("LISTEN_FDNAMES={names}"));
        }
        process.set_env(Some(env));
    }
    Ok((passed, std::borrow::Cow::Owned(spec)))
}

/// A container without `process`: recorded (pid 0) with its FIFO, nothing runs.
fn no_process(
    global: &Global,
    args: &CreateArgs,
    spec: Spec,
    bundle: PathBuf,
    dir: PathBuf,
    cleanup: DirGuard,
) -> Result<CreatedContainer> {
    super::global::debug(global, "config.json has no process: `start` will refuse it");
    let container = Container {
        dir,
        record: Record {
            id: args.id.clone(),
            pid: 0,
            start_time: 0,
            bundle,
            created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            cgroup: None,
            oci_version: spec.version().clone(),
        },
    };
    container.save()?;
    std::mem::forget(cleanup);
    Ok(CreatedContainer {
        container,
        _created: None,
    })
}

/// Reads and checks BUNDLE/config.json (nook_rootless::bundle): every refusal names
/// the field, and comes before anything of the container exists.
pub fn load_config(config: &Path) -> Result<Spec> {
    let bytes = fs::read(config).with_context(|| format!("reading {}", config.display()))?;
    let spec = nook_rootless::bundle::parse_config(&bytes)
        .and_then(|spec| nook_rootless::bundle::check_spec(&spec).map(|()| spec))
        .map_err(|e| anyhow::anyhow!("{}: {}", config.display(), spec_message(&e)))?;
    Ok(spec)
}

/// The reason without the generic "invalid container configuration: " prefix (the file
/// is named instead).
fn spec_message(e: &nook_rootless::Error) -> String {
    match e {
        nook_rootless::Error::Spec(why) => why.clone(),
        other => other.to_string(),
    }
}

/// Removes a half-created container's directory when `create` fails.
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// The start FIFO, open read-write: the container's process keeps this descriptor and
/// reads `start`'s message from it; read-write, so opening never blocks and the
/// process never sees end-of-file while it waits.
fn make_gate(dir: &Path) -> Result<fs::File> {
    let path = dir.join(START_FIFO);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("creating {}", path.display()))?;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Makes the bundle's spec runnable by nook: absolute root and bind sources, and the
/// user namespace an unprivileged runtime needs.
fn complete_spec(global: &Global, spec: &mut Spec, bundle: &Path) -> Result<()> {
    let mut root = spec
        .root()
        .clone()
        .context("config.json has no root: set root.path to the container's filesystem")?;
    let root_path = bundle.join(root.path());
    if !root_path.is_dir() {
        bail!(
            "the container's root {} is not a directory (root.path in {})",
            root_path.display(),
            bundle.join("config.json").display()
        );
    }
    root.set_path(root_path);
    spec.set_root(Some(root));
    if let Some(mounts) = spec.mounts().clone() {
        let mounts = mounts
            .into_iter()
            .map(|mut m| {
                let is_bind = m
                    .options()
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o == "bind" || o == "rbind")
                    || m.typ().as_deref() == Some("bind");
                if let Some(src) = m.source().clone().filter(|s| is_bind && s.is_relative()) {
                    m.set_source(Some(bundle.join(src)));
                }
                m
            })
            .collect();
        spec.set_mounts(Some(mounts));
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let as_root = nix::unistd::Uid::effective().is_root();
    let has_userns = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User);
    // Root runs a spec without a user namespace as it is (runc's behaviour); an
    // unprivileged runtime needs one for every other namespace.
    if !has_userns && !as_root {
        let mut userns = LinuxNamespace::default();
        userns.set_typ(LinuxNamespaceType::User);
        namespaces.insert(0, userns);
        linux.set_namespaces(Some(namespaces));
    }
    let no_map = linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty())
        || linux.gid_mappings().as_ref().is_none_or(|m| m.is_empty());
    if no_map && (has_userns || !as_root) {
        let mapping = if as_root {
            // Root maps every ID it has itself: all of them on the host, inside a user
            // namespace (`unshare -r --map-auto`) those of its own maps.
            idmap::Mapping {
                uid_map: identity_map("/proc/self/uid_map"),
                gid_map: identity_map("/proc/self/gid_map"),
                notice: None,
            }
        } else {
            idmap::plan(&UsernsMode::Default, &HostIds::current())?
        };
        if let Some(n) = &mapping.notice {
            super::global::debug(global, n);
        }
        linux.set_uid_mappings(Some(to_oci(&mapping.uid_map)));
        linux.set_gid_mappings(Some(to_oci(&mapping.gid_map)));
    }
    let process = spec.process().as_ref();
    let lsm = [
        (
            "apparmorProfile",
            process.and_then(|p| p.apparmor_profile().clone()),
            Path::new("/sys/kernel/security/apparmor").exists(),
        ),
        (
            "selinuxLabel",
            process.and_then(|p| p.selinux_label().clone()),
            Path::new("/sys/fs/selinux/enforce").exists(),
        ),
    ];
    for (field, value, host_has) in lsm {
        if value.is_some_and(|v| !v.is_empty()) {
            let why = if host_has {
                "nook does not apply LSM labels yet"
            } else {
                "this host has no such LSM"
            };
            super::global::report_warning(global, &format!("process.{field} ignored: {why}"));
        }
    }
    spec.set_linux(Some(linux));
    Ok(())
}

/// The IDs this process has (the inside column of its own map), each mapped to itself.
fn identity_map(file: &str) -> Vec<idmap::IdRange> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let map: Vec<idmap::IdRange> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3).then(|| idmap::IdRange {
                inside: f[0],
                outside: f[0],
                count: f[2],
            })
        })
        .collect();
    if map.is_empty() {
        vec![idmap::IdRange {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }]
    } else {
        map
    }
}

/// nook's ID map in the spec's form.
pub fn to_oci(map: &[idmap::IdRange]) -> Vec<LinuxIdMapping> {
    map.iter()
        .map(|r| {
            LinuxIdMappingBuilder::default()
                .container_id(r.inside)
                .host_id(r.outside)
                .size(r.count)
                .build()
                .expect("every field of an ID mapping is set")
        })
        .collect()
}

/// Sends the pty master over the caller's console socket (SCM_RIGHTS), as runc does.
fn send_console(path: &Path, master: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let sock = UnixStream::connect(path)
        .with_context(|| format!("connecting to the console socket {}", path.display()))?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(b"/dev/ptmx")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .with_context(|| format!("sending the pty to {}", path.display()))?;
    Ok(())
}

/// Written to a temporary name and renamed, so a reader never sees a partial pid.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = if path.is_relative() {
        std::env::current_dir()?.join(path)
    } else {
        path.to_path_buf()
    };
    let tmp = path.with_extension("nook-tmp");
    // Read by the runtime's caller (conmon, a shim): readable, never writable by others.
    nook_rootless::state::write_file(&tmp, pid.to_string(), nook_rootless::state::SHARED_FILE)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("writing the pid file {}", path.display()))
}
