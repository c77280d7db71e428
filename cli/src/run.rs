//! `nook run`: the whole path from flags to exit status, top to bottom.
//!
//! choose the image (host | --rootfs DIR | --layer … | a stored image, pulled if missing)
//! → network and user-namespace modes → runtime dir, container ID and directory → ID maps
//! → the root (host tmpfs, a directory, or a union of layers through the chosen driver)
//! → generated /etc files → one OCI Spec → cgroup → rootless::run → exit status.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nook_fs::manifest::RunConfig;
use nook_rootless::idmap::{self, HostIds, IdRange, Mapping, UsernsMode};
use nook_rootless::state::{self, ContainerDir};
use nook_rootless::{RunOptions, StdinMode};

use crate::flags::RunArgs;
use crate::image_cmds::{self, ContainerRoot, RunImage};
use crate::names::NameReservation;
use crate::spec::{self, GeneratedFiles, Root, SpecInput};
use crate::storage;

enum ImageChoice {
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

pub fn run(args: RunArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let image = choose_image(&args, store_root)?;
    let mut network = crate::network::choose(&args)?;
    let userns = userns_mode(&args)?;

    let runtime_dir = state::runtime_dir()?;
    let id = new_container_id()?;
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let _name = args
        .name
        .as_deref()
        .map(|name| NameReservation::take(&runtime_dir, name, &id))
        .transpose()?;
    // Until `nook ps`/`nook rm` exist a container's state lives only while it runs, so
    // it is always removed; `--rm` is accepted for podman compatibility.
    let dir = ContainerDir::create(&runtime_dir, &id, true)?;
    let ids = idmap::plan(&userns, &HostIds::current())?;
    // Declared after `dir`, so it is torn down (FUSE server stopped, the container's
    // writable layer removed) before the container directory is.
    let root = prepare_root(image, &args, &dir.path, &runtime_dir, &id, &ids)?;

    let mut files = write_etc_files(&dir.path, &hostname, network.host)?;
    files.resolv_conf = network.write_resolv_conf(&dir.path)?;
    let exposed = root
        .image_config
        .as_ref()
        .and_then(|c| c.exposed_ports.as_ref())
        .map(|ports| ports.keys().cloned().collect());
    network.publish_all(&args, exposed)?;
    let mut spec = spec::build(&SpecInput {
        args: &args,
        root: &root.root,
        ids: &ids,
        hostname: &hostname,
        files: &files,
        host_network: network.host,
        image: root.image_config.as_ref(),
    })?;
    let options = RunOptions {
        stdin: if args.interactive {
            StdinMode::Inherit
        } else {
            StdinMode::Null
        },
        init: args.init,
        network: network.nook,
        fuse_socket: root
            .union
            .as_ref()
            .and_then(storage::Prepared::fuse_socket_fd),
    };
    if let Some(notice) = &ids.notice {
        eprintln!("nook: {notice}");
    }
    // Cgroup last: a scope may move this process, and the leaf is removed (its
    // processes killed) as soon as the container has exited.
    let cgroup =
        crate::resources::prepare(&mut spec, &args.resources, &id, &runtime_dir, &dir.path)?;
    let status = nook_rootless::run_in_cgroup(&spec, &options, cgroup.as_ref())?;
    crate::resources::report_exit(cgroup.as_ref());
    Ok(status.code())
}

/// The container's root as prepared on the host, and what must be undone after it.
struct PreparedRoot {
    root: Root,
    /// The image's run configuration, for images from the store.
    image_config: Option<RunConfig>,
    /// The union mount's writable layer and FUSE server, if a union driver is used.
    union: Option<storage::Prepared>,
    /// The container's own copy of the image (copy driver), removed by the store helper.
    _copy: Option<ContainerRoot>,
}

fn prepare_root(
    image: ImageChoice,
    args: &RunArgs,
    container_dir: &Path,
    runtime_dir: &Path,
    id: &str,
    ids: &Mapping,
) -> Result<PreparedRoot> {
    let plain = |root| PreparedRoot {
        root,
        image_config: None,
        union: None,
        _copy: None,
    };
    let driver = args.storage_driver.as_deref();
    match image {
        ImageChoice::Host => {
            let mount_point = container_dir.join("rootfs");
            std::fs::create_dir(&mount_point)
                .with_context(|| format!("creating {}", mount_point.display()))?;
            Ok(plain(Root::Host { mount_point }))
        }
        ImageChoice::Dir(path) => Ok(plain(Root::Dir(path))),
        ImageChoice::Layers { layers, dir } => {
            let choice = storage::choose(driver, &dir, runtime_dir)?;
            let union = storage::prepare(choice, layers, &dir, ids, false)?;
            Ok(PreparedRoot {
                root: union.root.clone(),
                image_config: None,
                union: Some(union),
                _copy: None,
            })
        }
        ImageChoice::Stored(img) => {
            let image_config = Some(img.record.config.config.clone());
            let (base, notice) = nook_fs::union::probe::local_layer_base(container_dir);
            if let Some(notice) = notice {
                eprintln!("nook: {notice}");
            }
            let choice = storage::choose(driver, &base, runtime_dir)?;
            if choice.driver == nook_fs::union::Driver::Copy {
                let copy = ContainerRoot::create(&img, container_dir)?;
                return Ok(PreparedRoot {
                    root: Root::Dir(copy.path.clone()),
                    image_config,
                    union: None,
                    _copy: Some(copy),
                });
            }
            // Marks the image as in use, so `nook rmi` refuses to remove it.
            std::fs::write(
                container_dir.join("image"),
                format!("{}\n{}\n", img.record.id.hex(), std::process::id()),
            )
            .context("recording the container's image")?;
            let layer_dir = if base == container_dir {
                container_dir.join("layer")
            } else {
                base.join(id)
            };
            let union = storage::prepare(choice, img.layers.clone(), &layer_dir, ids, true)?;
            Ok(PreparedRoot {
                root: union.root.clone(),
                image_config,
                union: Some(union),
                _copy: None,
            })
        }
    }
}

fn choose_image(args: &RunArgs, store_root: Option<PathBuf>) -> Result<ImageChoice> {
    if !args.layers.is_empty() {
        if !args.rootfs {
            bail!("--layer needs --rootfs DIR: the directory for the container's writable layer");
        }
        let dir = nook_fs::rootfs_dir::resolve(Path::new(&args.image))
            .context("--rootfs with --layer names the container's writable layer directory")?;
        return Ok(ImageChoice::Layers {
            layers: args.layers.clone(),
            dir,
        });
    }
    if args.rootfs {
        let dir = nook_fs::rootfs_dir::resolve(Path::new(&args.image))
            .context("--rootfs needs a directory holding a root filesystem")?;
        return Ok(ImageChoice::Dir(dir));
    }
    if args.image == nook_fs::host_image::NAME {
        return Ok(ImageChoice::Host);
    }
    if Path::new(&args.image).is_dir() {
        bail!(
            "image {:?} is a directory: to use it as the root filesystem, add --rootfs",
            args.image
        );
    }
    let image = image_cmds::image_for_run(store_root, &args.image, &args.pull, &args.registry)?;
    Ok(ImageChoice::Stored(Box::new(image)))
}

fn userns_mode(args: &RunArgs) -> Result<UsernsMode> {
    let explicit = !args.uidmap.is_empty() || !args.gidmap.is_empty();
    match args.userns.as_deref() {
        None | Some("") | Some("auto") if explicit => {
            let parse = |list: &[String]| -> Result<Vec<IdRange>> {
                list.iter()
                    .map(|t| idmap::parse_triple(t).map_err(anyhow::Error::msg))
                    .collect()
            };
            if args.uidmap.is_empty() || args.gidmap.is_empty() {
                bail!("--uidmap and --gidmap go together: give both");
            }
            Ok(UsernsMode::Explicit {
                uid: parse(&args.uidmap)?,
                gid: parse(&args.gidmap)?,
            })
        }
        None | Some("") | Some("auto") => Ok(UsernsMode::Default),
        Some("keep-id") if !explicit => Ok(UsernsMode::KeepId),
        Some("keep-id") => bail!("--userns=keep-id and --uidmap/--gidmap exclude each other"),
        Some(other) => bail!("unsupported --userns {other:?}: use keep-id, or leave it out"),
    }
}

/// 64 hex digits, as podman's IDs; the first 12 are the short ID and default hostname.
fn new_container_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("getrandom");
        }
        filled += n as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The container's /etc/hostname, and its /etc/hosts unless it shares the host's network.
fn write_etc_files(dir: &Path, hostname: &str, host_network: bool) -> Result<GeneratedFiles> {
    let hostname_file = dir.join("hostname");
    std::fs::write(&hostname_file, format!("{hostname}\n"))
        .with_context(|| format!("writing {}", hostname_file.display()))?;
    let hosts = if host_network {
        None
    } else {
        let hosts = dir.join("hosts");
        std::fs::write(
            &hosts,
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 127.0.1.1\t{hostname}\n"
            ),
        )
        .with_context(|| format!("writing {}", hosts.display()))?;
        Some(hosts)
    };
    Ok(GeneratedFiles {
        hosts,
        hostname: hostname_file,
        resolv_conf: None,
    })
}
