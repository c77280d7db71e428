//! `nook run`: the whole path from flags to exit status, top to bottom.
//!
//! choose the image (host | --rootfs DIR | --layer … | a stored image, pulled if missing)
//! → network and user-namespace modes → runtime dir, container ID and directory → ID maps
//! → the root (host tmpfs, a directory, or a union of layers through the chosen driver)
//! → generated /etc files → one OCI Spec → cgroup → rootless::run → exit status.

use std::path::{Path, PathBuf};

use crate::bail;
use crate::error::{Context, Result};
use nook_fs::manifest::RunConfig;
use nook_rootless::fds::PassedFds;
use nook_rootless::idmap::{self, HostIds, IdRange, Mapping, UsernsMode};
use nook_rootless::state::{self, write_file, ContainerDir, PRIVATE_FILE, SHARED_FILE};
use nook_rootless::{RunOptions, StartedHook, StdinMode};
use std::sync::Arc;
use std::time::SystemTime;

use crate::request::{IdMap, PullPolicy, Userns};
use crate::{Engine, Notify, RunRequest};

use crate::container::record::{Container, Places, ProcessId, State, Status};

use crate::copies::CopyRoot;
use crate::image::PullFrom;
use crate::image::RunImage;
use crate::spec::{self, GeneratedFiles, Root, SpecInput};
use crate::storage;
use nook_fs::auth::Credentials;

pub enum ImageChoice {
    Host,
    Dir(PathBuf),
    /// An image from the store (pulled when missing).
    Stored(Box<RunImage>),
    /// `--layer DIR... --rootfs CTR`: read-only layers and a kept writable layer.
    Layers {
        layers: Vec<PathBuf>,
        dir: PathBuf,
    },
}

impl ImageChoice {
    /// The stored image's ID, which the container's record keeps (so `rmi` knows).
    pub fn image_id(&self) -> Option<String> {
        match self {
            ImageChoice::Stored(img) => Some(img.record.id.hex().to_string()),
            _ => None,
        }
    }
}

/// Creates a container: its image first (pulled as the request says, with `creds` for
/// that pull only), so a failed pull leaves nothing behind; then its record.
pub fn create(
    eng: &Engine,
    request: &RunRequest,
    creds: Option<&Credentials>,
    progress: &dyn nook_fs::pull::Progress,
) -> Result<Container> {
    let places = Places::for_run(eng.store_root.clone(), request)?;
    let image = choose_image(eng, request, creds, progress)?;
    Container::create(&places, request, image.image_id())
}

/// Descriptors of nook's caller that the container gets, as podman hands them on:
/// `--preserve-fds N` (fds 3..3+N), or without it socket activation's (LISTEN_FDS, with
/// LISTEN_FDNAMES, and LISTEN_PID set to the command's own pid). Nothing else crosses.
#[derive(Debug, Clone, Default)]
pub struct Passing {
    pub fds: PassedFds,
    /// LISTEN_FDNAMES, with socket activation.
    pub names: Option<String>,
}

impl Passing {
    /// `--preserve-fds`, else what socket activation passed this process.
    pub fn of(preserve_fds: Option<u32>, notify: &dyn Notify) -> Result<Passing> {
        let listen = nook_rootless::fds::listen_fds();
        let passing = match (preserve_fds, listen) {
            (Some(n), Some(_)) => {
                notify.notice(&format!(
                    "ignoring LISTEN_FDS: --preserve-fds {n} says which descriptors pass"
                ));
                Passing::preserve(n)
            }
            (Some(n), None) => Passing::preserve(n),
            (None, Some(listen)) => Passing {
                fds: PassedFds {
                    count: listen.count,
                    listen: true,
                },
                names: listen.names,
            },
            (None, None) => Passing::default(),
        };
        passing.check()?;
        Ok(passing)
    }

    fn preserve(count: u32) -> Passing {
        Passing {
            fds: PassedFds::preserve(count),
            names: None,
        }
    }

    /// Every descriptor to pass is open here: a missing one would be one of nook's own
    /// by the time the command starts.
    pub fn check(&self) -> Result<()> {
        match (self.fds.first_missing(), self.fds.listen) {
            (None, _) => Ok(()),
            (Some(fd), false) => bail!(
                "--preserve-fds {}: descriptor {fd} is not open (open 3..{} before calling nook)",
                self.fds.count,
                2 + self.fds.count
            ),
            (Some(fd), true) => bail!(
                "LISTEN_FDS={} names descriptor {fd}, which is not open",
                self.fds.count
            ),
        }
    }

    /// Socket activation's variables in the container's environment (podman's set;
    /// LISTEN_PID is made the command's own pid when it starts).
    fn set_env(&self, spec: &mut oci_spec::runtime::Spec) {
        if !self.fds.listen {
            return;
        }
        let Some(process) = spec.process_mut().as_mut() else {
            return;
        };
        let mut env: Vec<String> = process
            .env()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !v.starts_with("LISTEN_"))
            .collect();
        env.push(format!("LISTEN_FDS={}", self.fds.count));
        env.push("LISTEN_PID=1".into());
        if let Some(names) = &self.names {
            env.push(format!("LISTEN_FDNAMES={names}"));
        }
        process.set_env(Some(env));
    }
}

/// The container's runtime directory, removed when the last run of its supervisor ends.
pub struct RuntimeFiles {
    _dir: ContainerDir,
}

impl RuntimeFiles {
    pub fn new(places: &Places, ctr: &Container) -> Result<RuntimeFiles> {
        let dir = ctr.runtime_dir(places);
        let runtime_dir = dir.parent().and_then(Path::parent).unwrap_or(&dir);
        let dir = ContainerDir::create(runtime_dir, &ctr.record.id, true)?;
        // Who owns these files: `container prune` sweeps directories whose owner is gone.
        let me = ProcessId::current();
        let owner = format!("{} {}\n", me.pid, me.start);
        write_file(&dir.path.join("owner"), owner, PRIVATE_FILE)
            .context("writing the container's runtime files")?;
        Ok(RuntimeFiles { _dir: dir })
    }
}

/// Runs the container until it ends for good (its restart policy followed), recording
/// each start and exit in its state. `on_started` runs once the first start succeeded.
pub fn run_container(
    eng: &Engine,
    places: &Places,
    ctr: &Container,
    image: &ImageChoice,
    on_started: Option<Arc<dyn Fn() + Send + Sync>>,
    passing: &Passing,
) -> Result<i32> {
    let _ = std::fs::remove_file(ctr.stop_marker());
    let mut restarts = ctr.recorded_state().restarts;
    let result = loop {
        let result = run_once(eng, ctr, image, restarts, on_started.clone(), passing);
        let code = match &result {
            Ok(code) => *code,
            Err(e) => e.exit_code(),
        };
        // A `--rm` container's record goes at once: no exit state to write.
        if !ctr.record.request.rm {
            record_exit(ctr, &result, restarts, &*eng.notify);
        }
        let restart = ctr.record.request.restart;
        if !restart.restarts_after(code, restarts) || !restart_delay(ctr, restarts) {
            break result;
        }
        restarts += 1;
    };
    if ctr.record.request.rm {
        crate::container::lifecycle::remove_container(places, ctr, &*eng.notify);
    }
    result
}

/// Waits before a restart, longer after each (100 ms doubling to 10 s, as docker's
/// backoff), so a crashing container does not spin; false when a stop arrives meanwhile.
fn restart_delay(ctr: &Container, restarts: u32) -> bool {
    let delay = std::time::Duration::from_millis(100 << restarts.min(7))
        .min(std::time::Duration::from_secs(10));
    let until = std::time::Instant::now() + delay;
    loop {
        if ctr.stop_marker().exists() {
            return false;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        // A stop writes the marker and waits for this process to end: checking ten
        // times a second keeps that wait short.
        std::thread::sleep(left.min(std::time::Duration::from_millis(100)));
    }
}

fn record_exit(ctr: &Container, result: &Result<i32>, restarts: u32, notify: &dyn Notify) {
    let mut st = ctr.recorded_state();
    st.status = Status::Exited;
    st.finished_at = Some(humantime::format_rfc3339_nanos(SystemTime::now()).to_string());
    st.restarts = restarts;
    match result {
        Ok(code) => {
            st.exit_code = Some(*code);
            st.reason = ctr
                .stop_marker()
                .exists()
                .then(|| "stopped by nook stop/kill".to_string());
        }
        Err(e) => {
            st.exit_code = Some(e.exit_code());
            st.reason = Some(crate::error::chain_line(e));
        }
    }
    if let Err(e) = ctr.write_state(&st) {
        notify.warn(&format!(
            "could not record the container's exit: {why}",
            why = crate::error::chain_line(&e)
        ));
    }
}

/// The marker of the single-ID map's notice in the account's state directory.
pub const SINGLE_ID_NOTICE: &str = "single-id-notice";

/// One start of the container, up to its exit status.
fn run_once(
    eng: &Engine,
    ctr: &Container,
    image: &ImageChoice,
    restarts: u32,
    on_started: Option<Arc<dyn Fn() + Send + Sync>>,
    passing: &Passing,
) -> Result<i32> {
    let req = &ctr.record.request;
    let notify = &*eng.notify;
    let mut network = crate::network::choose(req, &eng.settings, notify)?;
    let userns = userns_mode(req)?;

    let runtime_dir = state::runtime_dir()?;
    let id = ctr.record.id.clone();
    let hostname = req.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    // Kept between the runs of one supervisor; `RuntimeFiles` removes it at the end.
    let dir = ContainerDir::create(&runtime_dir, &id, false)?;
    let ids = idmap::plan(&userns, &HostIds::current())?;
    // Declared after `dir`, so it is torn down (FUSE server stopped, an ephemeral
    // writable layer removed) before the container directory is.
    let root = prepare_root(eng, image, ctr, &dir.path, &runtime_dir, &ids)?;

    let mut files = write_etc_files(&dir.path, &hostname, network.host)?;
    files.resolv_conf = network.write_resolv_conf(&dir.path)?;
    if !matches!(root.root, Root::Host { .. })
        && crate::apt_sandbox::needed(root.root.readable_path(), &ids)
    {
        files.apt_sandbox = Some(crate::apt_sandbox::write(&dir.path)?);
    }
    let exposed = root
        .image_config
        .as_ref()
        .and_then(|c| c.exposed_ports.as_ref())
        .map(|ports| ports.keys().cloned().collect());
    network.publish_all(req, exposed, notify)?;
    let ports = network.published();
    let (mut spec, seccomp_record) = spec::build(&SpecInput {
        req,
        root: &root.root,
        ids: &ids,
        hostname: &hostname,
        files: &files,
        host_network: network.host,
        image: root.image_config.as_ref(),
        notify,
    })?;
    passing.set_env(&mut spec);
    crate::seccomp::write_record(&dir.path, &seccomp_record)?;
    let workdir = spec.process().as_ref().map(|p| p.cwd().clone());
    let spawned_hook = spawned_hook(ctr, restarts, ports, workdir, eng.notify.clone());
    let options = RunOptions {
        stdin: if req.interactive {
            StdinMode::Inherit
        } else {
            StdinMode::Null
        },
        init: req.init,
        network: network.nook,
        fuse_socket: root
            .union
            .as_ref()
            .and_then(storage::Prepared::fuse_socket_fd),
        on_spawned: Some(spawned_hook),
        on_started: on_started.map(|then| StartedHook(Arc::new(move |_| then()))),
        passed_fds: passing.fds,
    };
    if let Some(notice) = &ids.notice {
        notify.notice_once(SINGLE_ID_NOTICE, notice, Some(&runtime_dir));
    }
    // Cgroup last: a scope may move this process, and the leaf is removed (its
    // processes killed) as soon as the container has exited.
    let cgroup = crate::resources::prepare(
        &mut spec,
        &req.resources,
        &id,
        &runtime_dir,
        &dir.path,
        notify,
    )?;
    if cgroup.is_some() {
        spec::add_cgroup_mount(&mut spec)?;
    }
    if let (Some(cg), Some(union)) = (&cgroup, &root.union) {
        // The FUSE server was started before the cgroup existed; what a container makes
        // it hold counts against the container's limits.
        if let Err(e) = union.join_cgroup(cg) {
            notify.warn(&format!(
                "{why}; the FUSE server's memory is outside the container's limits",
                why = crate::error::chain_line(&e),
            ));
        }
    }
    let status = nook_rootless::run_in_cgroup(&spec, &options, cgroup.as_ref())?;
    crate::resources::report_exit(cgroup.as_ref(), notify);
    Ok(status.code())
}

/// Records the running state (the container's pid, this process as its supervisor)
/// once the container exists, before anything runs in it.
fn spawned_hook(
    ctr: &Container,
    restarts: u32,
    ports: Vec<String>,
    workdir: Option<PathBuf>,
    notify: Arc<dyn Notify>,
) -> StartedHook {
    let ctr = ctr.clone();
    StartedHook(Arc::new(move |pid| {
        let st = State {
            status: Status::Running,
            pid: ProcessId::of(pid),
            supervisor: Some(ProcessId::current()),
            started_at: Some(humantime::format_rfc3339_nanos(SystemTime::now()).to_string()),
            restarts,
            ports: ports.clone(),
            workdir: workdir.clone(),
            ..State::default()
        };
        if let Err(e) = ctr.write_state(&st) {
            notify.warn(&format!(
                "could not record the running container: {why}",
                why = crate::error::chain_line(&e)
            ));
        }
    }))
}

/// The container's root as prepared on the host, and what must be undone after it.
struct PreparedRoot {
    root: Root,
    /// The image's run configuration, for images from the store.
    image_config: Option<RunConfig>,
    /// The union mount's writable layer and FUSE server, if a union driver is used.
    union: Option<storage::Prepared>,
    /// The container's own copy of the image (copy driver), removed by the store helper.
    _copy: Option<CopyRoot>,
}

fn prepare_root(
    eng: &Engine,
    image: &ImageChoice,
    ctr: &Container,
    container_dir: &Path,
    runtime_dir: &Path,
    ids: &Mapping,
) -> Result<PreparedRoot> {
    let plain = |root| PreparedRoot {
        root,
        image_config: None,
        union: None,
        _copy: None,
    };
    let driver = ctr.record.request.storage_driver.as_deref();
    match image {
        ImageChoice::Host => {
            let mount_point = container_dir.join("rootfs");
            state::create_dir(&mount_point, 0o755)
                .with_context(|| format!("creating {}", mount_point.display()))?;
            Ok(plain(Root::Host { mount_point }))
        }
        ImageChoice::Dir(path) => Ok(plain(Root::Dir(path.clone()))),
        ImageChoice::Layers { layers, dir } => {
            let choice = storage::choose(driver, dir, runtime_dir)?;
            let union =
                storage::prepare(choice, layers.clone(), dir, ids, false, eng.notify.clone())?;
            Ok(PreparedRoot {
                root: union.root.clone(),
                image_config: None,
                union: Some(union),
                _copy: None,
            })
        }
        ImageChoice::Stored(img) => {
            let image_config = Some(img.record.config.config.clone());
            // The writable layer lives with the record (kept until `nook rm`), or for
            // `--rm` with the runtime files; on NFS and the like, on local storage.
            let (base, notice) = nook_fs::union::probe::local_layer_base(&ctr.dir);
            if let Some(notice) = notice {
                eng.notify.notice(&notice);
            }
            let choice = storage::choose(driver, &base, runtime_dir)?;
            if choice.driver == nook_fs::union::Driver::Copy {
                let copy = CopyRoot::create(
                    img,
                    runtime_dir,
                    &ctr.record.id,
                    container_dir,
                    eng.notify.clone(),
                )?;
                return Ok(PreparedRoot {
                    root: Root::Dir(copy.path.clone()),
                    image_config,
                    union: None,
                    _copy: Some(copy),
                });
            }
            // Marks the image as in use, so `nook rmi` refuses to remove it.
            write_file(
                &container_dir.join("image"),
                format!("{}\n{}\n", img.record.id.hex(), std::process::id()),
                PRIVATE_FILE,
            )
            .context("recording the container's image")?;
            let layer_dir = if base == ctr.dir {
                ctr.dir.join("layer")
            } else {
                base.join(&ctr.record.id)
            };
            if layer_dir != ctr.dir.join("layer") && ctr.record.layer_dir.is_none() {
                let mut record = ctr.record.clone();
                record.layer_dir = Some(layer_dir.clone());
                Container {
                    dir: ctr.dir.clone(),
                    record,
                }
                .write_record()?;
            }
            // A `--rm` container's layer goes with it; others keep theirs until `nook rm`.
            let union = storage::prepare(
                choice,
                img.layers.clone(),
                &layer_dir,
                ids,
                ctr.record.request.rm,
                eng.notify.clone(),
            )?;
            Ok(PreparedRoot {
                root: union.root.clone(),
                image_config,
                union: Some(union),
                _copy: None,
            })
        }
    }
}

/// The image a new container runs: `creds` (`--creds`) only for a pull, never kept.
pub fn choose_image(
    eng: &Engine,
    req: &RunRequest,
    creds: Option<&Credentials>,
    progress: &dyn nook_fs::pull::Progress,
) -> Result<ImageChoice> {
    if !req.layers.is_empty() {
        if !req.rootfs {
            bail!("--layer needs --rootfs DIR: the directory for the container's writable layer");
        }
        let dir = nook_fs::rootfs_dir::resolve(Path::new(&req.image))
            .context("--rootfs with --layer names the container's writable layer directory")?;
        return Ok(ImageChoice::Layers {
            layers: req.layers.clone(),
            dir,
        });
    }
    if req.rootfs {
        let dir = nook_fs::rootfs_dir::resolve(Path::new(&req.image))
            .context("--rootfs needs a directory holding a root filesystem")?;
        return Ok(ImageChoice::Dir(dir));
    }
    if req.image == nook_fs::host_image::NAME {
        return Ok(ImageChoice::Host);
    }
    if Path::new(&req.image).is_dir() {
        bail!(
            "image {:?} is a directory: to use it as the root filesystem, add --rootfs",
            req.image
        );
    }
    let from = PullFrom {
        tls_verify: req.tls_verify,
        creds: creds.cloned(),
        platform: req.platform.clone(),
    };
    let image = crate::image::image_for_run(
        eng.store_root.clone(),
        &req.image,
        req.pull,
        &from,
        &eng.settings,
        progress,
        &*eng.notify,
    )?;
    Ok(ImageChoice::Stored(Box::new(image)))
}

/// The image of an existing container, for a later start: the stored image it was
/// created with (by ID: never pulled again, never another image of the same name).
pub fn recorded_image(eng: &Engine, ctr: &Container) -> Result<ImageChoice> {
    let Some(id) = &ctr.record.image_id else {
        return choose_image(eng, &ctr.record.request, None, &nook_fs::pull::Quiet);
    };
    let image = crate::image::image_for_run(
        eng.store_root.clone(),
        id,
        PullPolicy::Never,
        &PullFrom::default(),
        &eng.settings,
        &nook_fs::pull::Quiet,
        &*eng.notify,
    )
    .with_context(|| format!("the image of container {}", ctr.record.name))?;
    Ok(ImageChoice::Stored(Box::new(image)))
}

/// The user namespace the request asks for; pure, so the CLI checks a new request with
/// it before anything is created.
pub fn userns_mode(req: &RunRequest) -> Result<UsernsMode> {
    let explicit = !req.uidmap.is_empty() || !req.gidmap.is_empty();
    match req.userns {
        Userns::Auto if explicit => {
            if req.uidmap.is_empty() || req.gidmap.is_empty() {
                bail!("--uidmap and --gidmap go together: give both");
            }
            let ranges = |list: &[IdMap]| -> Vec<IdRange> { list.iter().map(|m| m.0).collect() };
            Ok(UsernsMode::Explicit {
                uid: ranges(&req.uidmap),
                gid: ranges(&req.gidmap),
            })
        }
        Userns::Auto => Ok(UsernsMode::Default),
        Userns::KeepId if !explicit => Ok(UsernsMode::KeepId),
        Userns::KeepId => bail!("--userns=keep-id and --uidmap/--gidmap exclude each other"),
    }
}

/// The container's /etc/hostname, and its /etc/hosts unless it shares the host's network.
fn write_etc_files(dir: &Path, hostname: &str, host_network: bool) -> Result<GeneratedFiles> {
    let hostname_file = dir.join("hostname");
    write_file(&hostname_file, format!("{hostname}\n"), SHARED_FILE)
        .with_context(|| format!("writing {}", hostname_file.display()))?;
    let hosts = if host_network {
        None
    } else {
        let hosts = dir.join("hosts");
        write_file(
            &hosts,
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 127.0.1.1\t{hostname}\n"
            ),
            SHARED_FILE,
        )
        .with_context(|| format!("writing {}", hosts.display()))?;
        Some(hosts)
    };
    Ok(GeneratedFiles {
        hosts,
        hostname: hostname_file,
        resolv_conf: None,
        apt_sandbox: None,
    })
}
