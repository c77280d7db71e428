//! The cpu controller: `--cpus`/`--cpu-quota`/`--cpu-period` → `cpu.max`,
//! `--cpu-shares` → `cpu.weight`.
//!
//! OCI keeps cgroup v1's shares (2..262144, default 1024); cgroup v2 has a weight
//! (1..10000, default 100). The conversion is the one crun and runc use since 2025: a
//! quadratic curve in log2(shares) that maps the two ranges' ends and defaults onto each
//! other (2 → 1, 1024 → 100, 262144 → 10000); the older linear formula turned the
//! default 1024 into 39, below every unconfigured neighbour.

use oci_spec::runtime::LinuxCpu;

use super::files::Setting;
use crate::error::{Error, Result};

/// The kernel's and podman's default CFS period, in microseconds.
pub const DEFAULT_PERIOD_US: u64 = 100_000;

const QUOTA: &str = "the CPU limit (--cpus, --cpu-quota)";
const SHARES: &str = "the CPU shares (--cpu-shares)";

/// cgroup v1 shares → cgroup v2 weight (0 stays "not set").
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        s if s >= 262_144 => 10_000,
        s => {
            let l = (s as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            10f64.powf(exponent).ceil() as u64
        }
    }
}

pub(crate) fn plan(cpu: &LinuxCpu) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
        let weight = shares_to_weight(shares);
        out.push(Setting::new(
            "cpu",
            "cpu.weight",
            weight.to_string(),
            SHARES,
        ));
    }
    let quota = cpu.quota().filter(|&q| q != 0);
    if quota.is_some() || cpu.period().is_some() {
        out.push(Setting::new(
            "cpu",
            "cpu.max",
            cpu_max(quota, cpu.period()),
            QUOTA,
        ));
    }
    if let Some(burst) = cpu.burst() {
        out.push(Setting::new(
            "cpu",
            "cpu.max.burst",
            burst.to_string(),
            "the CPU burst (--cpu-burst)",
        ));
    }
    if let Some(idle) = cpu.idle() {
        out.push(Setting::new(
            "cpu",
            "cpu.idle",
            idle.to_string(),
            "SCHED_IDLE for the cgroup (cpu idle)",
        ));
    }
    if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
        return Err(Error::Cgroup(
            "real-time CPU bandwidth (--cpu-rt-runtime, --cpu-rt-period) is a cgroup v1 \
             setting: leave it out"
                .into(),
        ));
    }
    Ok(out)
}

/// `cpu.max`: "QUOTA PERIOD", QUOTA `max` when unlimited.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> String {
    let period = period.filter(|&p| p != 0).unwrap_or(DEFAULT_PERIOD_US);
    match quota {
        Some(q) if q > 0 => format!("{q} {period}"),
        _ => format!("max {period}"),
    }
}

/// Parses `cpu.max` back: (quota, period), quota `None` for `max`.
pub fn parse_cpu_max(text: &str) -> Option<(Option<u64>, u64)> {
    let mut it = text.split_whitespace();
    let quota = match it.next()? {
        "max" => None,
        q => Some(q.parse().ok()?),
    };
    Some((quota, it.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxCpuBuilder;

    #[test]
    fn weight_from_shares() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
        // Monotonic in between.
        let mut last = 0;
        for s in (2..262_144).step_by(997) {
            let w = shares_to_weight(s);
            assert!(w >= last && (1..=10_000).contains(&w), "{s} -> {w}");
            last = w;
        }
        assert_eq!(shares_to_weight(512), 59);
        assert_eq!(shares_to_weight(2048), 174);
    }

    #[test]
    fn quota_and_period() {
        let cpu = LinuxCpuBuilder::default()
            .quota(150_000i64)
            .period(100_000u64)
            .build()
            .unwrap();
        let p = plan(&cpu).unwrap();
        assert_eq!(
            (p[0].file.as_str(), p[0].value.as_str()),
            ("cpu.max", "150000 100000")
        );
        assert_eq!(cpu_max(None, Some(50_000)), "max 50000");
        assert_eq!(cpu_max(Some(-1), None), "max 100000");
        assert_eq!(
            parse_cpu_max("150000 100000\n"),
            Some((Some(150_000), 100_000))
        );
        assert_eq!(parse_cpu_max("max 100000"), Some((None, 100_000)));
    }

    #[test]
    fn shares_become_weight_and_rt_is_refused() {
        let cpu = LinuxCpuBuilder::default().shares(1024u64).build().unwrap();
        let p = plan(&cpu).unwrap();
        assert_eq!(
            (p[0].file.as_str(), p[0].value.as_str()),
            ("cpu.weight", "100")
        );
        let rt = LinuxCpuBuilder::default()
            .realtime_runtime(950_000i64)
            .build()
            .unwrap();
        assert!(plan(&rt).is_err());
    }
}
