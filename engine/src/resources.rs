//! Resource flags (podman's spelling) → the OCI Spec's `linux.resources`, and the
//! cgroup part of `nook run` around `rootless::run_in_cgroup`.
//!
//! Flag values are converted here exactly as podman does before they reach the runtime:
//! `--cpus 1.5` is a CFS quota of 150000 µs per 100000 µs period, `--memory 512m` is
//! 536870912 bytes (binary units, as docker's go-units), `--memory-swap` is the limit of
//! memory *plus* swap. `--cpu-weight` (cgroup v2's own knob) and `--cgroup-conf` go to
//! `linux.resources.unified`. Applying them is the rootless crate's job, from the Spec
//! alone, so the OCI-runtime commands share it.
//!
//! Where the host offers no delegated cgroup v2 (this CI host is hybrid), a run without
//! limits goes on without a cgroup and says so once, on a terminal, per runtime
//! directory; a limit that cannot be enforced fails the run with 125.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::bail;
use crate::error::Result;
use crate::format_err;
use nook_rootless::cgroups::{self, Cgroup, Mode, Setup};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, LinuxThrottleDevice, LinuxThrottleDeviceBuilder, Spec,
};

use crate::request::{CgroupsMode, Resources};
pub use crate::values::parse_bytes;
use crate::values::{CpuList, Size, Swap, Throttle};
use crate::Notify;

/// podman refuses memory limits below this ("minimum memory limit allowed is 6MB").
pub const MIN_MEMORY: u64 = 6 << 20;

/// The Spec's `linux.resources` for these flags; `None` when no flag asks for a limit.
pub fn build(args: &Resources) -> Result<Option<LinuxResources>> {
    check(args)?;
    let mut any = false;
    let mut r = LinuxResourcesBuilder::default();

    let limit = args.memory.map(|m| m.bytes() as i64);
    let reservation = args.memory_reservation.map(|m| m.bytes() as i64);
    let swap = args.memory_swap.map(Swap::as_spec);
    if limit.is_some() || reservation.is_some() || swap.is_some() {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(l) = limit {
            m = m.limit(l);
        }
        if let Some(res) = reservation {
            m = m.reservation(res);
        }
        if let Some(s) = swap {
            m = m.swap(s);
        }
        r = r.memory(m.build()?);
        any = true;
    }

    let quota_period = cpu_quota(args);
    let shares = args.cpu_shares.filter(|&s| s != 0);
    let nonempty = |l: &Option<CpuList>| {
        l.as_ref()
            .map(|l| l.as_str().to_string())
            .filter(|s| !s.is_empty())
    };
    let cpus = nonempty(&args.cpuset_cpus);
    let mems = nonempty(&args.cpuset_mems);
    if quota_period.is_some() || shares.is_some() || cpus.is_some() || mems.is_some() {
        let mut c = LinuxCpuBuilder::default();
        if let Some((quota, period)) = quota_period {
            if let Some(q) = quota {
                c = c.quota(q);
            }
            c = c.period(period);
        }
        if let Some(s) = shares {
            c = c.shares(s);
        }
        if let Some(list) = cpus {
            c = c.cpus(list);
        }
        if let Some(list) = mems {
            c = c.mems(list);
        }
        r = r.cpu(c.build()?);
        any = true;
    }

    if let Some(p) = args.pids_limit.filter(|&p| p > 0) {
        r = r.pids(LinuxPidsBuilder::default().limit(p).build()?);
        any = true;
    }

    let block = block_io(args)?;
    if let Some(b) = block {
        r = r.block_io(b);
        any = true;
    }

    let mut unified = HashMap::new();
    if let Some(w) = args.cpu_weight {
        unified.insert("cpu.weight".to_string(), w.to_string());
    }
    for conf in &args.cgroup_conf {
        unified.insert(conf.key.clone(), conf.value.clone());
    }
    if !unified.is_empty() {
        r = r.unified(unified);
        any = true;
    }
    Ok(if any { Some(r.build()?) } else { None })
}

/// `--cgroups`: enabled (the default) or disabled.
pub fn mode(args: &Resources) -> Result<Mode> {
    Ok(match args.cgroups {
        CgroupsMode::Enabled => Mode::Enabled,
        CgroupsMode::Disabled => Mode::Disabled,
    })
}

/// What no single value's parser can see: limits that exclude or bound each other, and
/// the ranges of the plain numbers. Pure (no host access): the CLI calls it when it
/// makes a request, so a bad combination fails before anything is created; [`build`]
/// again for requests made otherwise.
pub fn check(args: &Resources) -> Result<()> {
    for (flag, size) in [
        ("--memory", args.memory),
        ("--memory-reservation", args.memory_reservation),
    ] {
        if let Some(s) = size.filter(|s| s.bytes() < MIN_MEMORY) {
            bail!(
                "{flag} {} bytes is below the smallest memory limit nook allows (6MB)",
                s.bytes()
            );
        }
    }
    let limit = args.memory.map(Size::bytes);
    match (args.memory_swap, limit) {
        (Some(Swap::Limit(_)), None) => {
            bail!("--memory-swap needs --memory: it limits memory plus swap")
        }
        (Some(Swap::Limit(s)), Some(l)) if s.bytes() < l => bail!(
            "--memory-swap ({} bytes) must be at least --memory ({l} bytes): it counts memory \
             plus swap",
            s.bytes()
        ),
        _ => {}
    }
    if let (Some(res), Some(l)) = (args.memory_reservation, limit) {
        if res.bytes() > l {
            bail!(
                "--memory-reservation ({} bytes) must not exceed --memory ({l} bytes)",
                res.bytes()
            );
        }
    }
    if args.cpus.is_some() && (args.cpu_quota.is_some() || args.cpu_period.is_some()) {
        bail!("--cpus and --cpu-quota/--cpu-period set the same limit: give one");
    }
    if let Some(period) = args.cpu_period {
        if !(1_000..=1_000_000).contains(&period) {
            bail!("--cpu-period {period} is outside 1000..1000000 microseconds");
        }
    }
    if let Some(q) = args.cpu_quota.filter(|&q| q > 0 && q < 1_000) {
        bail!("--cpu-quota {q} is below 1000 microseconds");
    }
    if let Some(w) = args.cpu_weight {
        if !(1..=10_000).contains(&w) {
            bail!(
                "--cpu-weight {w} is outside 1..10000 (cgroup v2's cpu.weight; 100 is the default)"
            );
        }
        if args.cpu_shares.is_some_and(|s| s != 0) {
            bail!("--cpu-shares and --cpu-weight set the same thing: give one");
        }
    }
    if let Some(w) = args.blkio_weight.filter(|&w| w != 0) {
        if !(10..=1000).contains(&w) {
            bail!("--blkio-weight {w} is outside 10..1000");
        }
    }
    Ok(())
}

/// (quota, period) of `--cpus` or `--cpu-quota`/`--cpu-period` ([`check`]ed).
fn cpu_quota(args: &Resources) -> Option<(Option<i64>, u64)> {
    if let Some(cpus) = args.cpus {
        let (quota, period) = cpus.quota_period();
        return (quota != 0).then_some((Some(quota), period));
    }
    if args.cpu_quota.is_none() && args.cpu_period.is_none() {
        return None;
    }
    let period = args.cpu_period.unwrap_or(cgroups::cpu::DEFAULT_PERIOD_US);
    Some((args.cpu_quota.filter(|&q| q > 0), period))
}

fn block_io(args: &Resources) -> Result<Option<oci_spec::runtime::LinuxBlockIo>> {
    let weight = args.blkio_weight.filter(|&w| w != 0);
    let list = |flag: &str, specs: &mut dyn Iterator<Item = &Throttle>| {
        specs
            .map(|t| throttle_device(flag, t))
            .collect::<Result<Vec<_>>>()
    };
    let rbps = list(
        "--device-read-bps",
        &mut args.device_read_bps.iter().map(|t| &t.0),
    )?;
    let wbps = list(
        "--device-write-bps",
        &mut args.device_write_bps.iter().map(|t| &t.0),
    )?;
    let riops = list(
        "--device-read-iops",
        &mut args.device_read_iops.iter().map(|t| &t.0),
    )?;
    let wiops = list(
        "--device-write-iops",
        &mut args.device_write_iops.iter().map(|t| &t.0),
    )?;
    if weight.is_none()
        && rbps.is_empty()
        && wbps.is_empty()
        && riops.is_empty()
        && wiops.is_empty()
    {
        return Ok(None);
    }
    let mut b = LinuxBlockIoBuilder::default();
    if let Some(w) = weight {
        b = b.weight(w);
    }
    if !rbps.is_empty() {
        b = b.throttle_read_bps_device(rbps);
    }
    if !wbps.is_empty() {
        b = b.throttle_write_bps_device(wbps);
    }
    if !riops.is_empty() {
        b = b.throttle_read_iops_device(riops);
    }
    if !wiops.is_empty() {
        b = b.throttle_write_iops_device(wiops);
    }
    Ok(Some(b.build()?))
}

/// A throttle's device → its major:minor now (the path is resolved at each start).
fn throttle_device(flag: &str, t: &Throttle) -> Result<LinuxThrottleDevice> {
    let (major, minor) = block_device(&t.device).map_err(|why| format_err!("{flag} {t}: {why}"))?;
    Ok(LinuxThrottleDeviceBuilder::default()
        .major(major)
        .minor(minor)
        .rate(t.rate)
        .build()?)
}

/// The major and minor number of the block device at `path`, or why it is none. The
/// CLI checks a throttle's device with it when it makes a request.
pub fn block_device(path: &Path) -> std::result::Result<(i64, i64), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_block_device() {
        return Err(format!("{} is not a block device", path.display()));
    }
    let rdev = meta.rdev();
    Ok((libc::major(rdev) as i64, libc::minor(rdev) as i64))
}

/// Gives the container its cgroup (or says why there is none): sets the Spec's
/// `cgroupsPath`, asks the rootless crate for the cgroup and records it for `nook
/// stats`/`pause`. The caller adds the cgroup2 mount the container sees
/// (`spec::add_cgroup_mount`) when there is one.
pub fn prepare(
    spec: &mut Spec,
    args: &Resources,
    id: &str,
    runtime_dir: &Path,
    container_dir: &Path,
    notify: &dyn Notify,
) -> Result<Option<Cgroup>> {
    let mode = mode(args)?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(format!("nook-{id}").into()));
    }
    match cgroups::prepare(spec, mode)? {
        Setup::Cgroup(cgroup) => {
            cgroups::record(container_dir, &cgroup)?;
            Ok(Some(cgroup))
        }
        Setup::None { notice } => {
            if let Some(notice) = notice {
                notice_once(runtime_dir, &notice, notify);
            }
            Ok(None)
        }
    }
}

/// Shows `notice` on a terminal, once per runtime directory (it is the same on every
/// run on this host; `nook info` always shows it). Scripts and pipes get clean stderr.
fn notice_once(runtime_dir: &Path, notice: &str, notify: &dyn Notify) {
    if !notify.interactive() {
        return;
    }
    let marker = runtime_dir.join("cgroups-notice");
    if std::fs::read_to_string(&marker).is_ok_and(|seen| seen == notice) {
        return;
    }
    notify.notice(notice);
    let _ = nook_rootless::state::write_file(&marker, notice, nook_rootless::state::PRIVATE_FILE);
}

/// After the container exited: the OOM report (memory.events says who the kernel killed).
pub fn report_exit(cgroup: Option<&Cgroup>, notify: &dyn Notify) {
    if let Some(n) = cgroup.map(Cgroup::oom_kills).filter(|&n| n > 0) {
        let who = if n == 1 { "a process" } else { "processes" };
        notify.notice(&format!(
            "container was OOM-killed: the kernel killed {who} at its memory limit \
             (memory.events oom_kill {n})"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resources as the CLI's flags would give them (long names, `-m`, `-c`).
    fn args(list: &[&str]) -> Resources {
        let mut r = serde_json::to_value(Resources::default()).unwrap();
        let mut it = list.iter();
        while let Some(flag) = it.next() {
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (flag.to_string(), it.next().unwrap().to_string()),
            };
            let key = match name.as_str() {
                "-m" => "memory".to_string(),
                "-c" => "cpu_shares".to_string(),
                n => n.trim_start_matches("--").replace('-', "_"),
            };
            let text = serde_json::Value::String(value.clone());
            let slot = &mut r[key.as_str()];
            match slot {
                serde_json::Value::Array(list) => list.push(text),
                _ => {
                    *slot = text;
                    if serde_json::from_value::<Resources>(r.clone()).is_err() {
                        r[key.as_str()] = serde_json::from_str(&value).unwrap();
                    }
                }
            }
        }
        serde_json::from_value(r).unwrap()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("64mb").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("10k").unwrap(), 10240);
        for bad in ["", "m", "12x", "-5m", "1.2.3g"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpus_become_quota() {
        let q = |n: &str| n.parse::<crate::values::Cpus>().unwrap().quota_period();
        assert_eq!(q("1.5"), (150_000, 100_000));
        assert_eq!(q("0.5"), (50_000, 100_000));
        assert_eq!(q("2"), (200_000, 100_000));
        // And through the rootless crate's file format.
        let r = build(&args(&["--cpus", "1.5"])).unwrap().unwrap();
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(
            cgroups::cpu::cpu_max(cpu.quota(), cpu.period()),
            "150000 100000"
        );
    }

    #[test]
    fn memory_flags() {
        let r = build(&args(&[
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "--memory-reservation",
            "32m",
        ]))
        .unwrap()
        .unwrap();
        let m = r.memory().as_ref().unwrap();
        assert_eq!(m.limit(), Some(64 << 20));
        assert_eq!(m.swap(), Some(128 << 20));
        assert_eq!(m.reservation(), Some(32 << 20));
        assert!(build(&args(&["-m", "1m"])).is_err(), "below 6MB");
        assert!(
            build(&args(&["--memory-swap", "1g"])).is_err(),
            "swap without memory"
        );
        assert!(build(&args(&["-m", "1g", "--memory-swap", "512m"])).is_err());
        assert!(build(&args(&["-m", "1g", "--memory-reservation", "2g"])).is_err());
        let unlimited = build(&args(&["-m", "1g", "--memory-swap=-1"]))
            .unwrap()
            .unwrap();
        assert_eq!(unlimited.memory().as_ref().unwrap().swap(), Some(-1));
    }

    #[test]
    fn no_flags_no_resources() {
        assert!(build(&args(&[])).unwrap().is_none());
        assert!(build(&args(&["--pids-limit", "0"])).unwrap().is_none());
    }

    #[test]
    fn shares_weight_pids_cpuset() {
        let r = build(&args(&[
            "-c",
            "512",
            "--pids-limit",
            "100",
            "--cpuset-cpus",
            "0-1",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(r.cpu().as_ref().unwrap().cpus().as_deref(), Some("0-1"));
        assert_eq!(r.pids().unwrap().limit(), 100);
        // podman's shares → weight, as the runtime applies it.
        assert_eq!(cgroups::cpu::shares_to_weight(512), 59);
        let w = build(&args(&["--cpu-weight", "300"])).unwrap().unwrap();
        assert_eq!(w.unified().as_ref().unwrap()["cpu.weight"], "300");
        assert!(build(&args(&["--cpu-weight", "0"])).is_err());
        assert!(build(&args(&["--cpu-weight", "5", "-c", "10"])).is_err());
        assert!(build(&args(&["--cpus", "1", "--cpu-quota", "50000"])).is_err());
    }

    #[test]
    fn block_io_flags() {
        let r = build(&args(&["--blkio-weight", "500"])).unwrap().unwrap();
        assert_eq!(r.block_io().as_ref().unwrap().weight(), Some(500));
        assert!(build(&args(&["--blkio-weight", "5"])).is_err());
        assert!(
            build(&args(&["--device-read-bps", "/dev/null:1mb"])).is_err(),
            "not a block device"
        );
    }

    #[test]
    fn cgroups_mode_values() {
        assert_eq!(mode(&args(&[])).unwrap(), Mode::Enabled);
        assert_eq!(
            mode(&args(&["--cgroups=disabled"])).unwrap(),
            Mode::Disabled
        );
        // Any other value: refused by clap (request.rs tests it).
    }
}
