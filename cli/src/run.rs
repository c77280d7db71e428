//! `nook run`: the whole path from flags to exit status, top to bottom.
//!
//! parse the image → runtime dir and container dir → ID maps → generated /etc files →
//! Spec → rootless::run → the command's exit status.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nook_rootless::idmap::{self, HostIds, IdRange, UsernsMode};
use nook_rootless::state::{self, ContainerDir};
use nook_rootless::{RunOptions, StdinMode};

use crate::flags::RunArgs;
use crate::names::NameReservation;
use crate::spec::{self, GeneratedFiles, Root, SpecInput};

enum ImageChoice {
    Host,
    Dir(PathBuf),
}

pub fn run(args: RunArgs) -> Result<i32> {
    let image = choose_image(&args)?;
    let host_network = network_is_host(&args.network)?;
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

    let root = match image {
        ImageChoice::Host => {
            let mount_point = dir.path.join("rootfs");
            std::fs::create_dir(&mount_point)
                .with_context(|| format!("creating {}", mount_point.display()))?;
            Root::Host { mount_point }
        }
        ImageChoice::Dir(path) => Root::Dir(path),
    };
    let ids = idmap::plan(&userns, &HostIds::current())?;
    let files = write_etc_files(&dir.path, &hostname, host_network)?;
    let spec = spec::build(&SpecInput {
        args: &args,
        root: &root,
        ids: &ids,
        hostname: &hostname,
        files: &files,
        host_network,
    })?;
    let options = RunOptions {
        stdin: if args.interactive {
            StdinMode::Inherit
        } else {
            StdinMode::Null
        },
        init: args.init,
    };
    if let Some(notice) = &ids.notice {
        eprintln!("nook: {notice}");
    }
    let status = nook_rootless::run(&spec, &options)?;
    Ok(status.code())
}

fn choose_image(args: &RunArgs) -> Result<ImageChoice> {
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
    bail!(
        "unknown image {:?}: this nook runs the built-in `host` image or a directory with \
         --rootfs DIR (registry images are not supported yet)",
        args.image
    )
}

fn network_is_host(mode: &str) -> Result<bool> {
    match mode {
        "none" => Ok(false),
        "host" => Ok(true),
        other => bail!(
            "unsupported --network {other:?}: use none (isolated, loopback only) or host \
             (the userspace network is not built yet)"
        ),
    }
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
    })
}
