//! The container process's identity and privileges: user, groups, capabilities,
//! no_new_privs.
//!
//! Capabilities here are those of the container's user namespace; they never reach the
//! host. Still, the bounding set is cut to what the spec grants so that a setuid binary
//! inside cannot regain the rest. Order matters: the bounding set needs CAP_SETPCAP,
//! the uid switch would clear everything without PR_SET_KEEPCAPS, and the final sets
//! are applied after the switch.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, Process};

use crate::error::{Error, Result};

/// podman's default capability set (containers.conf), what users of `podman run` get.
pub const DEFAULT_CAPABILITIES: [&str; 11] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Converts the spec's capability names to the `caps` crate's.
fn to_caps(set: Option<&Capabilities>) -> Result<CapsHashSet> {
    set.into_iter()
        .flatten()
        .map(|c| {
            let name = format!("CAP_{c}");
            Cap::from_str(&name).map_err(|_| Error::Spec(format!("unknown capability {name}")))
        })
        .collect()
}

/// Applies user, groups and capabilities of `process`. Runs in the child, last thing
/// before exec.
pub(crate) fn apply(process: &Process) -> Result<()> {
    let spec_caps = process.capabilities().as_ref();
    let bounding = to_caps(spec_caps.and_then(|c| c.bounding().as_ref()))?;
    drop_bounding_except(&bounding)?;

    let user = process.user();
    set_keepcaps(true)?;
    switch_user(
        user.uid(),
        user.gid(),
        user.additional_gids().as_deref().unwrap_or_default(),
    )?;
    set_keepcaps(false)?;

    let set = |which: CapSet, caps: Option<&Capabilities>| -> Result<()> {
        caps::set(None, which, &to_caps(caps)?)
            .map_err(|e| Error::Setup(format!("setting {which:?} capabilities: {e}")))
    };
    // Effective first: each capset call must leave effective a subset of permitted.
    set(
        CapSet::Effective,
        spec_caps.and_then(|c| c.effective().as_ref()),
    )?;
    set(
        CapSet::Permitted,
        spec_caps.and_then(|c| c.permitted().as_ref()),
    )?;
    // The kernel raises an ambient capability only if it is inheritable too; specs
    // written for crun (podman's rootless template) list ambient ones without that, and
    // crun makes them inheritable: so does nook.
    let ambient = to_caps(spec_caps.and_then(|c| c.ambient().as_ref()))?;
    let mut inheritable = to_caps(spec_caps.and_then(|c| c.inheritable().as_ref()))?;
    let permitted = to_caps(spec_caps.and_then(|c| c.permitted().as_ref()))?;
    inheritable.extend(ambient.intersection(&permitted).copied());
    caps::set(None, CapSet::Inheritable, &inheritable)
        .map_err(|e| Error::Setup(format!("setting Inheritable capabilities: {e}")))?;
    // The ambient set requires Linux 4.3; an empty one needs no call.
    if !ambient.is_empty() {
        caps::set(None, CapSet::Ambient, &ambient)
            .map_err(|e| Error::Setup(format!("setting ambient capabilities: {e}")))?;
    }
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| Error::sys("setting no_new_privs", e))?;
    }
    Ok(())
}

fn drop_bounding_except(keep: &HashSet<Cap>) -> Result<()> {
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| Error::Setup(format!("dropping {cap} from the bounding set: {e}")))?;
        }
    }
    Ok(())
}

fn set_keepcaps(on: bool) -> Result<()> {
    nix::sys::prctl::set_keepcaps(on).map_err(|e| Error::sys("PR_SET_KEEPCAPS", e))
}

/// Whether this user namespace allows setgroups (denied under an unprivileged
/// single-ID gid map).
fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "allow")
}

fn switch_user(uid: u32, gid: u32, extra_gids: &[u32]) -> Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let unmapped = |kind: &str, id: u32| {
        Error::Setup(format!(
            "{kind} {id} is not mapped in the container's user namespace; map it \
             (--userns=keep-id, or a subordinate ID range) or choose a mapped one"
        ))
    };
    if setgroups_allowed() {
        let groups: Vec<Gid> = extra_gids.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&groups).map_err(|e| Error::sys("setgroups", e))?;
    } else if !extra_gids.is_empty() {
        return Err(Error::Setup(
            "supplementary groups need a full ID map (setgroups is denied under a single-ID map)"
                .into(),
        ));
    }
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(|e| match e {
        nix::errno::Errno::EINVAL => unmapped("gid", gid),
        e => Error::sys(format!("setresgid {gid}"), e),
    })?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(|e| match e {
        nix::errno::Errno::EINVAL => unmapped("uid", uid),
        e => Error::sys(format!("setresuid {uid}"), e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    #[test]
    fn default_names_are_known_to_both_crates() {
        for name in DEFAULT_CAPABILITIES {
            assert!(Cap::from_str(name).is_ok(), "{name}");
            let short = name.trim_start_matches("CAP_");
            let oci: Capability = short.parse().expect(name);
            assert_eq!(format!("CAP_{oci}"), name);
        }
    }
}
