//! The container's root as a union of layers: picks the storage driver, prepares the
//! container's writable layer and turns the result into the Spec's root.
//!
//! Data path: layer dirs (lowest first) + the container's layer dir → `nook_fs::union`
//! chooses overlay, fuse or copy (probed once per boot, cached in the runtime dir; or
//! `--storage-driver`) →
//! * overlay: a mount at `/` of type `overlay` in the Spec; the container mounts it.
//! * fuse: a mount at `/` of type `fuse.nook`; before the container starts, nook
//!   re-executes itself as `nook __fuse-server` (same binary, nothing to install), which
//!   enters a user namespace with the container's ID map and waits on a socket for the
//!   /dev/fuse descriptor the container opens and mounts (rootless `mounts.rs`). The
//!   server dies with nook (PR_SET_PDEATHSIG) and ends by itself with the container's
//!   mount namespace; [`Prepared`]'s drop waits for it.
//! * copy: the layers flattened into `copy/` inside the user namespace (the store
//!   helper), used as a plain root directory.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::bail;
use crate::error::{Context, Result};
use nook_fs::union::{self, fuse, overlay, Choice, ContainerLayer, Driver, Layers};
use nook_rootless::idmap::{IdRange, Mapping};
use nook_rootless::probe::{Probe, Status};
use oci_spec::runtime::MountBuilder;
use serde::{Deserialize, Serialize};

use crate::spec::Root;
use crate::store_helper::{self, Job};
use crate::Notify;
use std::sync::Arc;

/// A prepared union root: what the Spec needs, and what must live while it runs.
pub struct Prepared {
    pub root: Root,
    /// The container end of the FUSE hand-over socket (RunOptions.fuse_socket).
    pub fuse_socket: Option<OwnedFd>,
    server: Option<Child>,
    /// Removed at drop (in the user namespace: it may hold subordinate-ID files).
    remove: Option<PathBuf>,
    /// Who hears of what the teardown could not undo.
    notify: Arc<dyn Notify>,
}

impl Prepared {
    pub fn fuse_socket_fd(&self) -> Option<RawFd> {
        self.fuse_socket.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Moves the FUSE server into the container's cgroup, so that its limits (memory
    /// above all) cover what the container makes the server hold. The server process
    /// first (a child it forks later is born there), then the children it already has
    /// (the one in the user namespace that serves).
    pub fn join_cgroup(&self, cgroup: &nook_rootless::cgroups::Cgroup) -> Result<()> {
        let Some(server) = &self.server else {
            return Ok(());
        };
        let pid = server.id() as i32;
        cgroup
            .add_process(pid)
            .with_context(|| format!("moving the FUSE server into {}", cgroup.path().display()))?;
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            cgroup.add_process(child).with_context(|| {
                format!("moving the FUSE server into {}", cgroup.path().display())
            })?;
        }
        Ok(())
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.fuse_socket = None;
        if let Some(mut child) = self.server.take() {
            // The container's mount namespace is gone, so the connection has ended and
            // the server is on its way out; a stuck one is killed after a grace period.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        if let Some(dir) = self.remove.take() {
            if let Err(e) = store_helper::run(&Job::Remove(vec![dir.clone()])) {
                self.notify.warn(&format!(
                    "could not remove the container's layer {}: {why}",
                    dir.display(),
                    why = crate::error::chain_line(&e),
                ));
            }
        }
    }
}

/// `--storage-driver`, parsed.
pub fn requested(flag: Option<&str>) -> Result<Option<Driver>> {
    match flag {
        None | Some("") | Some("auto") => Ok(None),
        Some(s) => match Driver::parse(s) {
            Some(d) => Ok(Some(d)),
            None => bail!("unknown --storage-driver {s:?}: use overlay, fuse or copy"),
        },
    }
}

/// Chooses the driver for writable layers placed under `layer_base`.
pub fn choose(flag: Option<&str>, layer_base: &Path, runtime_dir: &Path) -> Result<Choice> {
    Ok(union::choose(requested(flag)?, layer_base, runtime_dir)?)
}

/// Prepares the union of `layers` (lowest first) with the writable layer `layer_dir`
/// (created if missing; removed at the end when `ephemeral`).
pub fn prepare(
    choice: Choice,
    layers: Vec<PathBuf>,
    layer_dir: &Path,
    ids: &Mapping,
    ephemeral: bool,
    notify: Arc<dyn Notify>,
) -> Result<Prepared> {
    let layers = Layers::new(layers)?;
    let container = ContainerLayer::create(layer_dir)?;
    let readable = readable_root(&layers, &container);
    let mut prepared = Prepared {
        root: Root::Dir(container.copy()),
        fuse_socket: None,
        server: None,
        remove: ephemeral.then(|| layer_dir.to_path_buf()),
        notify,
    };
    match choice.driver {
        Driver::Overlay => {
            let m = overlay::mount_for(&layers, &container)?;
            let mount = MountBuilder::default()
                .destination("/")
                .source(m.source)
                .typ(m.typ)
                .options(m.options)
                .build()?;
            prepared.root = Root::Union {
                mount_point: container.merged(),
                mount,
                readable,
            };
        }
        Driver::Fuse => {
            let (ours, theirs) = UnixStream::pair().context("socketpair for the FUSE server")?;
            prepared.server = Some(spawn_server(&layers, &container, ids, theirs)?);
            prepared.fuse_socket = Some(OwnedFd::from(ours));
            let mount = MountBuilder::default()
                .destination("/")
                .source("nook")
                .typ(fuse::FS_TYPE)
                .options(
                    fuse::ROOT_MOUNT_OPTIONS
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>(),
                )
                .build()?;
            prepared.root = Root::Union {
                mount_point: container.merged(),
                mount,
                readable,
            };
        }
        Driver::Copy => {
            let copy = container.copy();
            if !copy.is_dir() {
                let tmp = container.dir.join("copy.tmp");
                if tmp.exists() {
                    store_helper::run(&Job::Remove(vec![tmp.clone()]))?;
                }
                store_helper::run(&Job::Flatten {
                    layers: layers.lower.clone(),
                    dest: tmp.clone(),
                })?;
                std::fs::rename(&tmp, &copy)
                    .with_context(|| format!("renaming {} into place", tmp.display()))?;
            }
            prepared.root = Root::Dir(copy);
        }
    }
    Ok(prepared)
}

/// Where the image's /etc/passwd can be read before the container starts: the topmost
/// layer that has one.
fn readable_root(layers: &Layers, container: &ContainerLayer) -> PathBuf {
    std::iter::once(container.diff())
        .chain(layers.top_down().map(Path::to_path_buf))
        .find(|l| {
            // Resolved inside the layer: a layer's symlink cannot point nook at the host.
            nook_fs::at::Root::open(l)
                .and_then(|r| r.open_in(Path::new("etc/passwd"), libc::O_PATH))
                .is_ok()
        })
        .or_else(|| layers.lower.last().cloned())
        .unwrap_or_else(|| container.diff())
}

#[derive(Serialize, Deserialize)]
struct ServerJob {
    layers: Vec<PathBuf>,
    container: PathBuf,
    uid_map: Vec<(u32, u32, u32)>,
    gid_map: Vec<(u32, u32, u32)>,
}

fn triples(m: &[IdRange]) -> Vec<(u32, u32, u32)> {
    m.iter().map(|r| (r.inside, r.outside, r.count)).collect()
}

fn ranges(t: &[(u32, u32, u32)]) -> Vec<IdRange> {
    t.iter()
        .map(|&(inside, outside, count)| IdRange {
            inside,
            outside,
            count,
        })
        .collect()
}

/// The FUSE server's socket is its fd 3.
const SERVER_FD: RawFd = 3;

fn spawn_server(
    layers: &Layers,
    container: &ContainerLayer,
    ids: &Mapping,
    sock: UnixStream,
) -> Result<Child> {
    let job = ServerJob {
        layers: layers.lower.clone(),
        container: container.dir.clone(),
        uid_map: triples(&ids.uid_map),
        gid_map: triples(&ids.gid_map),
    };
    let sock_fd = sock.into_raw_fd();
    let mut cmd = crate::helpers::fuse_server()?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // Dies with nook, even under kill -9: the mount goes with the container.
    store_helper::die_with_parent(&mut cmd, move || {
        // SAFETY: dup2 is async-signal-safe; both are descriptor numbers.
        if unsafe { libc::dup2(sock_fd, SERVER_FD) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    });
    let spawned = cmd.spawn().context("starting nook's FUSE server");
    // SAFETY: sock_fd came from into_raw_fd above and is owned here; the child has its
    // own copy on fd 3.
    drop(unsafe { OwnedFd::from_raw_fd(sock_fd) });
    let mut child = spawned?;
    let input = serde_json::to_vec(&job).expect("jobs serialise");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(&input)
        .context("sending the job to the FUSE server")?;
    Ok(child)
}

/// `nook __fuse-server`: job on stdin, socket on fd 3. Returns the exit code.
pub fn fuse_server_main() -> Result<i32> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading the job")?;
    let job: ServerJob = serde_json::from_slice(&input).context("parsing the job")?;
    // SAFETY: fd 3 was set up by our parent for us alone.
    let sock = unsafe { UnixStream::from_raw_fd(SERVER_FD) };
    let layers = Layers::new(job.layers)?;
    let container = ContainerLayer { dir: job.container };
    let status = nook_rootless::run_in_user_namespace(
        &ranges(&job.uid_map),
        &ranges(&job.gid_map),
        move || fuse::serve_socket(sock, &layers, &container),
    )?;
    Ok(status.code())
}

/// The `storage` line of `nook info`: which driver `nook run` would use, and why.
pub fn probe() -> Probe {
    let runtime = match nook_rootless::state::runtime_dir() {
        Ok(dir) => dir,
        Err(e) => {
            return Probe {
                name: "storage",
                status: Status::Missing,
                detail: format!("cannot probe: {e}"),
                fix: Some("see runtime-dir".into()),
            }
        }
    };
    let base = runtime.join("containers");
    let _ = std::fs::create_dir_all(&base);
    let v = union::probe::verdicts(&base, &runtime);
    let choice = union::probe::auto(&v);
    let detail = format!("driver {}: {}", choice.driver, choice.reason);
    match choice.driver {
        Driver::Overlay => Probe {
            name: "storage",
            status: Status::Ok,
            detail,
            fix: None,
        },
        Driver::Fuse => Probe {
            name: "storage",
            status: Status::Ok,
            detail,
            fix: None,
        },
        Driver::Copy => Probe {
            name: "storage",
            status: Status::Limited,
            detail,
            fix: Some(
                "a kernel >= 5.11 (overlayfs in a user namespace), or /dev/fuse mode 0666, \
                 avoids copying every image"
                    .into(),
            ),
        },
    }
}
