//! `spec [--rootless] [--bundle DIR]`: writes a starting config.json (root `rootfs`,
//! command `sh`), as `runc spec` does. With --rootless the spec gets a user namespace
//! and this account's ID map (its subordinate range where the helper can write it),
//! so a bundle made here runs unprivileged as it is.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use nook_rootless::idmap::{self, HostIds, UsernsMode};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

#[derive(Args, Debug)]
pub struct SpecArgs {
    /// Make a spec for an unprivileged user (user namespace and ID map)
    #[arg(long)]
    pub rootless: bool,
    /// Where to write config.json (default: the current directory)
    #[arg(long, short = 'b', value_name = "DIR")]
    pub bundle: Option<PathBuf>,
}

pub fn spec(args: &SpecArgs) -> Result<()> {
    let dir = match &args.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().context("the current directory")?,
    };
    let path = dir.join("config.json");
    if path.exists() {
        bail!("{} exists: remove it first", path.display());
    }
    let mut spec = Spec::default();
    if args.rootless {
        make_rootless(&mut spec)?;
    }
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn make_rootless(spec: &mut Spec) -> Result<()> {
    let mapping = idmap::plan(&UsernsMode::Default, &HostIds::current())?;
    if let Some(notice) = &mapping.notice {
        eprintln!("nook: {notice}");
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User)
    {
        let mut userns = LinuxNamespace::default();
        userns.set_typ(LinuxNamespaceType::User);
        namespaces.insert(0, userns);
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(super::create::to_oci(&mapping.uid_map)));
    linux.set_gid_mappings(Some(super::create::to_oci(&mapping.gid_map)));
    // Limits need a delegated cgroup, which a rootless spec cannot count on.
    linux.set_resources(None);
    spec.set_linux(Some(linux));
    // devpts' gid=5 (tty) exists only with a full map.
    if !idmap::is_mapped(&mapping.gid_map, 5) {
        if let Some(mut mounts) = spec.mounts().clone() {
            for m in &mut mounts {
                if let Some(opts) = m.options().clone() {
                    m.set_options(Some(opts.into_iter().filter(|o| o != "gid=5").collect()));
                }
            }
            spec.set_mounts(Some(mounts));
        }
    }
    Ok(())
}
