//! Per-process settings of the spec applied in the container's first process before
//! exec: `process.rlimits`, `process.oomScoreAdj` and `linux.sysctl`.
//!
//! sysctls are written under the container's own /proc (after pivot_root), so only
//! those the kernel namespaces (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*,
//! kernel.hostname/domainname) can be set; anything else fails with the key named.

use oci_spec::runtime::{PosixRlimitType, Spec};

use crate::error::{Error, Result};

pub(crate) fn apply(spec: &Spec) -> Result<()> {
    let process = spec.process().as_ref();
    for limit in process
        .and_then(|p| p.rlimits().as_deref())
        .unwrap_or_default()
    {
        let resource = resource(limit.typ());
        let (soft, hard) = (limit.soft(), limit.hard());
        nix::sys::resource::setrlimit(resource, soft, hard).map_err(|e| {
            Error::Setup(format!(
                "setting {:?} to soft {soft} / hard {hard}: {e} (raising a hard limit above \
                 the caller's needs privilege on the host)",
                limit.typ()
            ))
        })?;
    }
    if let Some(adj) = process.and_then(|p| p.oom_score_adj()) {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| {
            Error::Setup(format!(
                "setting oomScoreAdj {adj}: {e} (lowering it below the caller's value needs \
                 privilege on the host)"
            ))
        })?;
    }
    if let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        let mut keys: Vec<_> = sysctl.iter().collect();
        keys.sort();
        for (key, value) in keys {
            if key.contains("..") || key.starts_with('/') {
                return Err(Error::Spec(format!("invalid sysctl name {key:?}")));
            }
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|e| {
                Error::Setup(format!(
                    "setting sysctl {key}={value}: {e} (only sysctls of the container's \
                     own namespaces can be set)"
                ))
            })?;
        }
    }
    Ok(())
}

fn resource(typ: PosixRlimitType) -> nix::sys::resource::Resource {
    use nix::sys::resource::Resource as R;
    match typ {
        PosixRlimitType::RlimitCpu => R::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => R::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => R::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => R::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => R::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => R::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => R::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => R::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => R::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => R::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => R::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => R::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => R::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => R::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => R::RLIMIT_RTTIME,
    }
}
