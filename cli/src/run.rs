//! `nook run`: the whole path from flags to exit status, top to bottom.
//!
//! parse the image → runtime dir and container dir → ID maps → generated /etc files →
//! Spec → rootless::run → the command's exit status.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::unistd::{getgid, getuid};
use nook_rootless::state::{self, ContainerDir};
use nook_rootless::{RunOptions, StdinMode};

use crate::flags::RunArgs;
use crate::names::NameReservation;
use crate::spec::{self, GeneratedFiles, IdMaps, Root, SpecInput};

enum ImageChoice {
    Host,
    Dir(PathBuf),
}

pub fn run(args: RunArgs) -> Result<i32> {
    let image = choose_image(&args)?;
    let host_network = network_is_host(&args.network)?;
    let keep_id = keep_id(args.userns.as_deref())?;

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
    let ids = IdMaps {
        host_uid: getuid().as_raw(),
        host_gid: getgid().as_raw(),
        keep_id,
    };
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

fn keep_id(userns: Option<&str>) -> Result<bool> {
    match userns {
        None | Some("") | Some("auto") => Ok(false),
        Some("keep-id") => Ok(true),
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
