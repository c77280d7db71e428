//! `update [flags | -r FILE] ID`: new resource limits for a created, running or paused
//! container, written into its cgroup (runc's and crun's command: containerd's shim
//! sends `update --resources -` with the runtime-spec's `linux.resources` JSON on
//! stdin; the flags are runc's). Only what is given changes; a flag overrides the
//! same value in the file. A container without a cgroup (none was delegated when it
//! was created) accepts values that change nothing, and refuses the others.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxPidsBuilder, LinuxResources,
};

use super::container::{Container, Status};
use super::Global;

#[derive(Args, Debug, Default)]
pub struct UpdateArgs {
    /// The container's ID
    pub id: String,
    /// linux.resources as JSON, from this file or `-` (stdin)
    #[arg(long, short = 'r', value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Block I/O weight, 10..1000
    #[arg(long, value_name = "N")]
    pub blkio_weight: Option<u16>,
    /// CFS period in microseconds
    #[arg(long, value_name = "US")]
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds per period (-1: unlimited)
    #[arg(long, value_name = "US", allow_negative_numbers = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares, relative weight (1024: the default)
    #[arg(long = "cpu-share", alias = "cpu-shares", value_name = "N")]
    pub cpu_share: Option<u64>,
    /// Burst above the quota, in microseconds
    #[arg(long, value_name = "US")]
    pub cpu_burst: Option<u64>,
    /// 1: SCHED_IDLE for the container's cgroup
    #[arg(long, value_name = "0|1")]
    pub cpu_idle: Option<i64>,
    /// Real-time period (cgroup v1 only: refused)
    #[arg(long, value_name = "US")]
    pub cpu_rt_period: Option<u64>,
    /// Real-time runtime (cgroup v1 only: refused)
    #[arg(long, value_name = "US", allow_negative_numbers = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs the container may use (0-3,6)
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use
    #[arg(long, value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or 512m, 1g ...; -1: unlimited)
    #[arg(long, value_name = "SIZE", allow_negative_numbers = true)]
    pub memory: Option<String>,
    /// Memory reservation (memory.low)
    #[arg(long, value_name = "SIZE", allow_negative_numbers = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap)
    #[arg(long, value_name = "SIZE", allow_negative_numbers = true)]
    pub memory_swap: Option<String>,
    /// Obsolete in runc; ignored
    #[arg(long, value_name = "SIZE", hide = true)]
    pub kernel_memory: Option<String>,
    /// Obsolete in runc; ignored
    #[arg(long, value_name = "SIZE", hide = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Process limit (-1: unlimited)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema (not supported)
    #[arg(long, value_name = "SCHEMA", hide = true)]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (not supported)
    #[arg(long, value_name = "SCHEMA", hide = true)]
    pub mem_bw_schema: Option<String>,
}

pub fn update(global: &Global, args: &UpdateArgs) -> Result<()> {
    let resources = requested(args)?;
    let c = Container::load(global, &args.id)?;
    if c.status() == Status::Stopped {
        bail!(
            "container {} is stopped: there is nothing to update",
            args.id
        );
    }
    if args.kernel_memory.is_some() || args.kernel_memory_tcp.is_some() {
        super::report_warning(
            global,
            "kernel memory limits are obsolete (cgroup v2 counts kernel memory in --memory): ignored",
        );
    }
    match &c.record.cgroup {
        Some(leaf) => nook_rootless::cgroups::update(leaf, &resources)?,
        None => nook_rootless::cgroups::update_without_cgroup(&resources)?,
    }
    Ok(())
}

/// The file's resources (if any) with the flags' values over them.
fn requested(args: &UpdateArgs) -> Result<LinuxResources> {
    if args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some() {
        bail!("Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported by nook");
    }
    let mut r = match &args.resources {
        None => LinuxResources::default(),
        Some(path) => {
            let mut text = Vec::new();
            if path.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut text)
                    .context("reading the resources from stdin")?;
            } else {
                text = std::fs::read(path)
                    .with_context(|| format!("reading the resources {}", path.display()))?;
            }
            nook_rootless::bundle::parse_resources(&text).map_err(|e| {
                let from = match path.as_os_str() == "-" {
                    true => "stdin".to_string(),
                    false => path.display().to_string(),
                };
                let why = match e {
                    nook_rootless::Error::Spec(why) => why,
                    other => other.to_string(),
                };
                anyhow::anyhow!("{from}: {why} (expected runtime-spec linux.resources JSON)")
            })?
        }
    };
    let size = |flag: &str, text: &str| -> Result<i64> {
        if text.trim() == "-1" {
            return Ok(-1);
        }
        crate::resources::parse_bytes(text).with_context(|| format!("--{flag} {text:?}"))
    };
    let mut mem: LinuxMemory = (*r.memory()).unwrap_or_default();
    let mut mem_given = r.memory().is_some();
    for (flag, value, set) in [
        (
            "memory",
            &args.memory,
            LinuxMemory::set_limit as fn(&mut LinuxMemory, Option<i64>) -> &mut LinuxMemory,
        ),
        (
            "memory-reservation",
            &args.memory_reservation,
            LinuxMemory::set_reservation,
        ),
        ("memory-swap", &args.memory_swap, LinuxMemory::set_swap),
    ] {
        if let Some(text) = value {
            set(&mut mem, Some(size(flag, text)?));
            mem_given = true;
        }
    }
    if mem_given {
        r.set_memory(Some(mem));
    }
    let mut cpu: LinuxCpu = r.cpu().clone().unwrap_or_default();
    let cpu_given = r.cpu().is_some()
        || args.cpu_share.is_some()
        || args.cpu_quota.is_some()
        || args.cpu_period.is_some()
        || args.cpu_burst.is_some()
        || args.cpu_idle.is_some()
        || args.cpu_rt_period.is_some()
        || args.cpu_rt_runtime.is_some()
        || args.cpuset_cpus.is_some()
        || args.cpuset_mems.is_some();
    if let Some(v) = args.cpu_share {
        cpu.set_shares(Some(v));
    }
    if let Some(v) = args.cpu_quota {
        cpu.set_quota(Some(v));
    }
    if let Some(v) = args.cpu_period {
        cpu.set_period(Some(v));
    }
    if let Some(v) = args.cpu_burst {
        cpu.set_burst(Some(v));
    }
    if let Some(v) = args.cpu_idle {
        cpu.set_idle(Some(v));
    }
    if let Some(v) = args.cpu_rt_period {
        cpu.set_realtime_period(Some(v));
    }
    if let Some(v) = args.cpu_rt_runtime {
        cpu.set_realtime_runtime(Some(v));
    }
    if let Some(v) = &args.cpuset_cpus {
        cpu.set_cpus(Some(v.clone()));
    }
    if let Some(v) = &args.cpuset_mems {
        cpu.set_mems(Some(v.clone()));
    }
    if cpu_given {
        r.set_cpu(Some(cpu));
    }
    if let Some(limit) = args.pids_limit {
        let pids: LinuxPids = LinuxPidsBuilder::default()
            .limit(limit)
            .build()
            .context("--pids-limit")?;
        r.set_pids(Some(pids));
    }
    if let Some(w) = args.blkio_weight {
        let mut io: LinuxBlockIo = r.block_io().clone().unwrap_or_default();
        io.set_weight(Some(w));
        r.set_block_io(Some(io));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_resources() {
        let args = UpdateArgs {
            memory: Some("64m".into()),
            memory_swap: Some("-1".into()),
            cpu_share: Some(512),
            pids_limit: Some(100),
            ..Default::default()
        };
        let r = requested(&args).unwrap();
        let mem = r.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(-1));
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
        assert!(r.block_io().is_none());
    }

    #[test]
    fn a_flag_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("nook-update-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r.json");
        std::fs::write(
            &file,
            r#"{"memory": {"limit": 1048576}, "pids": {"limit": 7}}"#,
        )
        .unwrap();
        let args = UpdateArgs {
            resources: Some(file.clone()),
            memory: Some("2097152".into()),
            ..Default::default()
        };
        let r = requested(&args).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(2 << 20));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 7);
        std::fs::write(&file, r#"{"memory": {"limit": "x"}}"#).unwrap();
        let e = requested(&UpdateArgs {
            resources: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{e}").contains("memory.limit"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
