//! The io controller: `--blkio-weight` and `--device-{read,write}-{bps,iops}`.
//!
//! The weight goes to `io.bfq.weight` when the BFQ scheduler offers it (it takes v1's
//! 10..1000 as is); otherwise to `io.weight`, converted to its 1..10000 range the way
//! crun does. Throttles become `io.max` lines, one per device and key.

use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};

use super::files::Setting;
use crate::error::{Error, Result};

const WEIGHT: &str = "the block I/O weight (--blkio-weight)";

/// v1 blkio weight (10..1000) → v2 io.weight (1..10000).
pub fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    1 + (weight.clamp(10, 1000) - 10) * 9999 / 990
}

/// `has_bfq`: whether the cgroup has `io.bfq.weight`.
pub(crate) fn plan(io: &LinuxBlockIo, has_bfq: bool) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    let weight_file = if has_bfq {
        "io.bfq.weight"
    } else {
        "io.weight"
    };
    let weight_value = |w: u16| -> Result<String> {
        if !(10..=1000).contains(&w) {
            return Err(Error::Cgroup(format!("{WEIGHT}: {w} is outside 10..1000")));
        }
        Ok(if has_bfq {
            w.to_string()
        } else {
            blkio_weight_to_io_weight(w.into()).to_string()
        })
    };
    if let Some(w) = io.weight().filter(|&w| w != 0) {
        out.push(Setting::new("io", weight_file, weight_value(w)?, WEIGHT));
    }
    for dev in io.weight_device().as_deref().unwrap_or_default() {
        if let Some(w) = dev.weight() {
            let value = format!("{}:{} {}", dev.major(), dev.minor(), weight_value(w)?);
            out.push(Setting::new(
                "io",
                weight_file,
                value,
                "a device's block I/O weight (--blkio-weight-device)",
            ));
        }
    }
    let throttles: [(&Option<Vec<LinuxThrottleDevice>>, &str, &'static str); 4] = [
        (
            io.throttle_read_bps_device(),
            "rbps",
            "a read rate limit (--device-read-bps)",
        ),
        (
            io.throttle_write_bps_device(),
            "wbps",
            "a write rate limit (--device-write-bps)",
        ),
        (
            io.throttle_read_iops_device(),
            "riops",
            "a read IOPS limit (--device-read-iops)",
        ),
        (
            io.throttle_write_iops_device(),
            "wiops",
            "a write IOPS limit (--device-write-iops)",
        ),
    ];
    for (list, key, what) in throttles {
        for dev in list.as_deref().unwrap_or_default() {
            let rate = match dev.rate() {
                0 => "max".to_string(),
                r => r.to_string(),
            };
            let value = format!("{}:{} {key}={rate}", dev.major(), dev.minor());
            out.push(Setting::new("io", "io.max", value, what));
        }
    }
    Ok(out)
}

/// Bytes read and written, summed over the devices of `io.stat`.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0, 0);
    for field in text.split_whitespace() {
        if let Some((k, v)) = field.split_once('=') {
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "rbytes" => read += v,
                "wbytes" => written += v,
                _ => {}
            }
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBlockIoBuilder, LinuxThrottleDeviceBuilder};

    #[test]
    fn weight_conversion() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10000);
    }

    #[test]
    fn weight_and_throttles() {
        let dev = LinuxThrottleDeviceBuilder::default()
            .major(8i64)
            .minor(0i64)
            .rate(1_048_576u64)
            .build()
            .unwrap();
        let io = LinuxBlockIoBuilder::default()
            .weight(500u16)
            .throttle_read_bps_device(vec![dev])
            .throttle_write_iops_device(vec![dev])
            .build()
            .unwrap();
        let p = plan(&io, false).unwrap();
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|s| (s.file.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("io.weight", "4950"),
                ("io.max", "8:0 rbps=1048576"),
                ("io.max", "8:0 wiops=1048576"),
            ]
        );
        let bfq = plan(&io, true).unwrap();
        assert_eq!(
            (bfq[0].file.as_str(), bfq[0].value.as_str()),
            ("io.bfq.weight", "500")
        );
        let bad = LinuxBlockIoBuilder::default().weight(5u16).build().unwrap();
        assert!(plan(&bad, false).is_err());
    }

    #[test]
    fn io_stat_sums_devices() {
        let text = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                    8:16 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n";
        assert_eq!(parse_io_stat(text), (4196, 8192));
    }
}
