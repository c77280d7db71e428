//! The typed values of a [`RunRequest`](crate::RunRequest) that a flag spells as text:
//! sizes, CPU counts and lists, block-device throttles, raw cgroup settings, security
//! options.
//!
//! Each parses from the flag's text once (`FromStr`, the CLI's clap value parsers call
//! it), so a bad value fails before anything is created, and the engine only reads the
//! typed value. Each also reads the text an earlier nook kept in a record (format 2
//! stored these flags as strings), through the same parser: quantities are written as
//! JSON numbers and read from a number or the old text; specs (a device and rate, a
//! cgroup key and value, a security option) keep their canonical spelling as a string.
//! Parsing here is pure: what depends on the host (is the device a block device, does
//! the profile read) is checked by the CLI when a request is made, and at each start.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::format_err;

/// A record's number, or the flag's text an earlier nook kept.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Int(i64),
    Float(f64),
    Text(String),
}

impl NumberOrText {
    fn text(self) -> String {
        match self {
            NumberOrText::Int(n) => n.to_string(),
            NumberOrText::Float(n) => n.to_string(),
            NumberOrText::Text(t) => t,
        }
    }
}

const SIZE_WORDS: &str = "a size such as 512m, 1.5g or 1048576 (units b, k, m, g, t, p)";

/// A size in bytes (`--memory 512m`), read as podman and docker read one (binary units).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(try_from = "NumberOrText", into = "u64")]
pub struct Size(u64);

impl Size {
    pub const fn bytes(self) -> u64 {
        self.0
    }

    pub const fn from_bytes(bytes: u64) -> Size {
        Size(bytes)
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        parse_bytes(s)
            .map(|b| Size(b as u64))
            .map_err(|_| format!("expected {SIZE_WORDS}"))
    }
}

impl TryFrom<NumberOrText> for Size {
    type Error = String;
    fn try_from(v: NumberOrText) -> Result<Size, String> {
        v.text().parse()
    }
}

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

/// `--memory-swap`: memory plus swap, or `-1`, no swap limit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(try_from = "NumberOrText", into = "i64")]
pub enum Swap {
    Unlimited,
    Limit(Size),
}

impl Swap {
    /// As the OCI Spec's `memory.swap` spells it (-1: unlimited).
    pub fn as_spec(self) -> i64 {
        match self {
            Swap::Unlimited => -1,
            Swap::Limit(s) => s.bytes() as i64,
        }
    }
}

impl FromStr for Swap {
    type Err = String;
    fn from_str(s: &str) -> Result<Swap, String> {
        if s.trim() == "-1" {
            return Ok(Swap::Unlimited);
        }
        s.parse()
            .map(Swap::Limit)
            .map_err(|_| format!("expected {SIZE_WORDS}, or -1 (no swap limit)"))
    }
}

impl TryFrom<NumberOrText> for Swap {
    type Error = String;
    fn try_from(v: NumberOrText) -> Result<Swap, String> {
        v.text().parse()
    }
}

impl From<Swap> for i64 {
    fn from(s: Swap) -> i64 {
        s.as_spec()
    }
}

/// `--cpus`: a number of CPUs, 0 (no limit) or at least 0.01 (the smallest CFS quota).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(try_from = "NumberOrText", into = "f64")]
pub struct Cpus(f64);

impl Cpus {
    /// The CFS (quota, period) in microseconds, as podman: period 100000, quota N×period.
    pub fn quota_period(self) -> (i64, u64) {
        let period = nook_rootless::cgroups::cpu::DEFAULT_PERIOD_US;
        ((self.0 * period as f64).round() as i64, period)
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl FromStr for Cpus {
    type Err = String;
    fn from_str(s: &str) -> Result<Cpus, String> {
        let n = s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or("expected a number of CPUs such as 1.5")?;
        let cpus = Cpus(n);
        if n > 0.0 && cpus.quota_period().0 < 1_000 {
            return Err("below the smallest quota the kernel takes: use 0.01 or more".into());
        }
        Ok(cpus)
    }
}

impl TryFrom<NumberOrText> for Cpus {
    type Error = String;
    fn try_from(v: NumberOrText) -> Result<Cpus, String> {
        v.text().parse()
    }
}

impl From<Cpus> for f64 {
    fn from(c: Cpus) -> f64 {
        c.0
    }
}

/// `--cpuset-cpus`/`--cpuset-mems`: a list such as `0-3,6` (empty: no restriction).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct CpuList(String);

impl CpuList {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CpuList {
    type Err = String;
    fn from_str(s: &str) -> Result<CpuList, String> {
        if s.is_empty() || nook_rootless::cgroups::cpuset::valid_list(s) {
            Ok(CpuList(s.to_string()))
        } else {
            Err("expected a list of numbers and ascending ranges such as 0-3,6".into())
        }
    }
}

impl TryFrom<String> for CpuList {
    type Error = String;
    fn try_from(s: String) -> Result<CpuList, String> {
        s.parse()
    }
}

impl From<CpuList> for String {
    fn from(l: CpuList) -> String {
        l.0
    }
}

/// What a device throttle limits: bytes (`--device-*-bps`) or operations per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    Bytes,
    Iops,
}

/// `--device-{read,write}-{bps,iops} DEVICE:RATE`: the device's path (resolved to its
/// major:minor at each start) and the rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub device: PathBuf,
    pub rate: u64,
}

impl Throttle {
    pub fn parse(spec: &str, kind: Rate) -> Result<Throttle, String> {
        let (path, rate) = spec.rsplit_once(':').ok_or(match kind {
            Rate::Bytes => "expected DEVICE:RATE, e.g. /dev/sda:10mb",
            Rate::Iops => "expected DEVICE:IOPS, e.g. /dev/sda:1000",
        })?;
        if !path.starts_with('/') {
            return Err("the device must be an absolute path, e.g. /dev/sda".into());
        }
        let rate = match kind {
            Rate::Bytes => rate
                .parse::<Size>()
                .map_err(|e| format!("the rate: {e}"))?
                .bytes(),
            Rate::Iops => rate
                .parse()
                .map_err(|_| "the rate must be a whole number of operations per second")?,
        };
        Ok(Throttle {
            device: path.into(),
            rate,
        })
    }
}

impl fmt::Display for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.device.display(), self.rate)
    }
}

/// Throttles in bytes per second; kept as `DEVICE:BYTES`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct BpsThrottle(pub Throttle);

/// Throttles in operations per second; kept as `DEVICE:IOPS`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct IopsThrottle(pub Throttle);

macro_rules! throttle_kind {
    ($name:ident, $rate:expr) => {
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                Throttle::parse(s, $rate).map($name)
            }
        }
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<$name, String> {
                s.parse()
            }
        }
        impl From<$name> for String {
            fn from(t: $name) -> String {
                t.0.to_string()
            }
        }
    };
}
throttle_kind!(BpsThrottle, Rate::Bytes);
throttle_kind!(IopsThrottle, Rate::Iops);

/// `--cgroup-conf KEY=VALUE`: a raw cgroup v2 setting (`memory.high=1G`) of a controller
/// the rootless crate applies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct CgroupConf {
    pub key: String,
    pub value: String,
}

impl FromStr for CgroupConf {
    type Err = String;
    fn from_str(s: &str) -> Result<CgroupConf, String> {
        let (key, value) = s
            .split_once('=')
            .ok_or("expected KEY=VALUE, e.g. memory.high=1G")?;
        nook_rootless::cgroups::unified_controller(key).map_err(|e| e.to_string())?;
        Ok(CgroupConf {
            key: key.into(),
            value: value.into(),
        })
    }
}

impl TryFrom<String> for CgroupConf {
    type Error = String;
    fn try_from(s: String) -> Result<CgroupConf, String> {
        s.parse()
    }
}

impl From<CgroupConf> for String {
    fn from(c: CgroupConf) -> String {
        format!("{}={}", c.key, c.value)
    }
}

/// `--security-opt seccomp=`: no filter, or a profile file in podman's JSON format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seccomp {
    Unconfined,
    /// Absolute once a request is made (relative to the request's `cwd` before).
    Profile(PathBuf),
}

/// One `--security-opt`: what nook supports of podman's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub enum SecurityOpt {
    NoNewPrivileges(bool),
    Seccomp(Seccomp),
}

const SECURITY_WORDS: &str = "nook supports no-new-privileges[=true|false], \
                              seccomp=unconfined and seccomp=PROFILE.json";

impl FromStr for SecurityOpt {
    type Err = String;
    /// `KEY=VALUE`; docker's older `KEY:VALUE` too, as before.
    fn from_str(s: &str) -> Result<SecurityOpt, String> {
        let (key, value) = match s.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (s, None),
        };
        match (key, value) {
            ("no-new-privileges", None | Some("true")) => Ok(SecurityOpt::NoNewPrivileges(true)),
            ("no-new-privileges", Some("false")) => Ok(SecurityOpt::NoNewPrivileges(false)),
            ("seccomp", Some("")) => Err(
                "seccomp= needs a value: unconfined, or the path of a profile in podman's \
                 JSON format"
                    .into(),
            ),
            ("seccomp", Some("unconfined")) => Ok(SecurityOpt::Seccomp(Seccomp::Unconfined)),
            ("seccomp", Some(path)) => Ok(SecurityOpt::Seccomp(Seccomp::Profile(path.into()))),
            _ => Err(SECURITY_WORDS.into()),
        }
    }
}

impl fmt::Display for SecurityOpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecurityOpt::NoNewPrivileges(on) => write!(f, "no-new-privileges={on}"),
            SecurityOpt::Seccomp(Seccomp::Unconfined) => f.write_str("seccomp=unconfined"),
            SecurityOpt::Seccomp(Seccomp::Profile(p)) => write!(f, "seccomp={}", p.display()),
        }
    }
}

impl TryFrom<String> for SecurityOpt {
    type Error = String;
    fn try_from(s: String) -> Result<SecurityOpt, String> {
        s.parse()
    }
}

impl From<SecurityOpt> for String {
    fn from(o: SecurityOpt) -> String {
        o.to_string()
    }
}

/// One `--uidmap`/`--gidmap` triple, CONTAINER-ID:HOST-ID:COUNT (HOST-ID counted as in
/// podman rootless: 0 is the caller, 1.. its subordinate range); kept as that text.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct IdMap(pub nook_rootless::idmap::IdRange);

impl FromStr for IdMap {
    type Err = String;
    fn from_str(s: &str) -> Result<IdMap, String> {
        nook_rootless::idmap::parse_triple(s)
            .map(IdMap)
            .map_err(|_| "expected CONTAINER-ID:HOST-ID:COUNT with COUNT > 0".into())
    }
}

impl TryFrom<String> for IdMap {
    type Error = String;
    fn try_from(s: String) -> Result<IdMap, String> {
        s.parse()
    }
}

impl From<IdMap> for String {
    fn from(m: IdMap) -> String {
        format!("{}:{}:{}", m.0.inside, m.0.outside, m.0.count)
    }
}

/// One `-p [HOSTIP:]HOSTPORT:CTRPORT[/PROTO]` (a range maps port by port): the ports it
/// publishes, and the text it was given as, which is what a record keeps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct PortSpec {
    text: String,
    mappings: Vec<nook_net::PortMapping>,
}

impl PortSpec {
    pub fn mappings(&self) -> &[nook_net::PortMapping] {
        &self.mappings
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<PortSpec, String> {
        Ok(PortSpec {
            text: s.to_string(),
            mappings: nook_net::PortMapping::parse(s).map_err(|e| e.to_string())?,
        })
    }
}

impl TryFrom<String> for PortSpec {
    type Error = String;
    fn try_from(s: String) -> Result<PortSpec, String> {
        s.parse()
    }
}

impl From<PortSpec> for String {
    fn from(p: PortSpec) -> String {
        p.text
    }
}

/// A size as podman and docker read it: a number (decimals allowed) and an optional
/// binary unit b, k, m, g, t, p (case-insensitive, with an optional `b`/`ib`):
/// "512m", "1.5G", "64MiB", "1048576".
pub fn parse_bytes(text: &str) -> Result<i64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format_err!("expected a size such as 512m, 1.5g or 1048576");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let bytes = n * (1u64 << shift) as f64;
    if !(0.0..9.0e18).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_numbers_and_the_old_text() {
        assert_eq!("512m".parse::<Size>().unwrap().bytes(), 512 << 20);
        assert!("12x".parse::<Size>().unwrap_err().contains("512m"));
        let s: Size = serde_json::from_str(r#""64MiB""#).unwrap();
        assert_eq!(s.bytes(), 64 << 20);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(serde_json::from_str::<Size>("1024").unwrap().bytes(), 1024);
        assert_eq!(
            serde_json::from_str::<Swap>(r#""-1""#).unwrap(),
            Swap::Unlimited
        );
        assert_eq!(serde_json::to_string(&Swap::Unlimited).unwrap(), "-1");
        assert_eq!(serde_json::from_str::<Swap>("-1").unwrap(), Swap::Unlimited);
        assert!("-2".parse::<Swap>().is_err());
    }

    #[test]
    fn cpus_and_lists() {
        assert_eq!(
            "1.5".parse::<Cpus>().unwrap().quota_period(),
            (150_000, 100_000)
        );
        assert_eq!("0".parse::<Cpus>().unwrap().quota_period().0, 0);
        for bad in ["-1", "0.001", "lots", "NaN", "inf"] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad}");
        }
        let c: Cpus = serde_json::from_str(r#""2""#).unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "2.0");
        assert_eq!(serde_json::from_str::<Cpus>("2.0").unwrap(), c);
        assert!("0-3,6".parse::<CpuList>().is_ok());
        assert!("".parse::<CpuList>().is_ok());
        for bad in ["3-1", "0-x", "a", "1,,2"] {
            assert!(bad.parse::<CpuList>().is_err(), "{bad}");
        }
    }

    #[test]
    fn throttles_and_cgroup_settings() {
        let t: BpsThrottle = "/dev/sda:10mb".parse().unwrap();
        assert_eq!(t.0.rate, 10 << 20);
        assert_eq!(String::from(t.clone()), "/dev/sda:10485760");
        assert_eq!(String::from(t.clone()).parse::<BpsThrottle>().unwrap(), t);
        assert!("/dev/sda:10mb".parse::<IopsThrottle>().is_err());
        assert_eq!(
            "/dev/sda:1000".parse::<IopsThrottle>().unwrap().0.rate,
            1000
        );
        for bad in ["nocolon", "sda:10", "/dev/sda:", "/dev/sda:lots"] {
            assert!(bad.parse::<BpsThrottle>().is_err(), "{bad}");
        }
        let c: CgroupConf = "memory.high=1G".parse().unwrap();
        assert_eq!((c.key.as_str(), c.value.as_str()), ("memory.high", "1G"));
        for bad in ["memory.high", "bogus.x=1", "../memory.high=1", "memory=1"] {
            assert!(bad.parse::<CgroupConf>().is_err(), "{bad}");
        }
    }

    #[test]
    fn id_maps_and_ports() {
        let m: IdMap = "0:1:65536".parse().unwrap();
        assert_eq!((m.0.inside, m.0.outside, m.0.count), (0, 1, 65536));
        assert_eq!(String::from(m), "0:1:65536");
        for bad in ["0:1", "0:1:0", "a:b:c", "0:1:2:3"] {
            assert!(bad.parse::<IdMap>().is_err(), "{bad}");
        }
        let p: PortSpec = "8000-8001:80-81/udp".parse().unwrap();
        assert_eq!(p.mappings().len(), 2);
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(text, r#""8000-8001:80-81/udp""#);
        assert_eq!(serde_json::from_str::<PortSpec>(&text).unwrap(), p);
        assert!("80:x".parse::<PortSpec>().is_err());
    }

    #[test]
    fn security_options_as_podman_spells_them() {
        let p = |s: &str| s.parse::<SecurityOpt>();
        assert_eq!(
            p("no-new-privileges"),
            Ok(SecurityOpt::NoNewPrivileges(true))
        );
        assert_eq!(
            p("no-new-privileges=false"),
            Ok(SecurityOpt::NoNewPrivileges(false))
        );
        assert_eq!(
            p("no-new-privileges:true"),
            Ok(SecurityOpt::NoNewPrivileges(true))
        );
        assert_eq!(
            p("seccomp=unconfined"),
            Ok(SecurityOpt::Seccomp(Seccomp::Unconfined))
        );
        assert_eq!(
            p("seccomp=/p.json"),
            Ok(SecurityOpt::Seccomp(Seccomp::Profile("/p.json".into())))
        );
        for bad in [
            "seccomp",
            "seccomp=",
            "apparmor=unconfined",
            "no-new-privileges=maybe",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        for text in [
            "no-new-privileges=false",
            "seccomp=unconfined",
            "seccomp=/p.json",
        ] {
            assert_eq!(p(text).unwrap().to_string(), text);
        }
    }
}
