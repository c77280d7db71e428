//! Sizes and times for people: the one formatter every command prints them with.
//!
//! As podman (docker's go-units): base 1000 with B, kB, MB, GB ... and three significant
//! digits, trailing zeros dropped (`204 MB`, `1.2 GB`, `345 kB`, `512 B`). `nook images`
//! and the store's reports separate number and unit as podman's tables do; `nook stats`
//! keeps podman's compact form (`1.23MB`), and memory there is binary (`1.5MiB`), as
//! podman shows it.

use std::time::{Duration, SystemTime};

const DECIMAL: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
const BINARY: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `204 MB`: the size as `nook images` and the store's reports show it.
pub fn human_size(bytes: u64) -> String {
    let (number, unit) = scaled(bytes, 1000.0, &DECIMAL);
    format!("{number} {unit}")
}

/// `1.23MB`: as `nook stats` shows block I/O.
pub fn compact_size(bytes: u64) -> String {
    let (number, unit) = scaled(bytes, 1000.0, &DECIMAL);
    format!("{number}{unit}")
}

/// `1.5MiB`: as `nook stats` shows memory.
pub fn compact_binary_size(bytes: u64) -> String {
    let (number, unit) = scaled(bytes, 1024.0, &BINARY);
    format!("{number}{unit}")
}

/// The number, to three significant digits, and its unit. A value that rounds up to
/// the next unit is shown in it (`1 MB`, not go-units' `1e+03kB`).
fn scaled(bytes: u64, base: f64, units: &[&'static str]) -> (String, &'static str) {
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= base && i + 1 < units.len() {
        v /= base;
        i += 1;
    }
    if i == 0 {
        return (bytes.to_string(), units[0]);
    }
    let mut text = three_digits(v);
    if text.parse::<f64>().is_ok_and(|r| r >= base) && i + 1 < units.len() {
        v /= base;
        i += 1;
        text = three_digits(v);
    }
    (text, units[i])
}

/// `v` (0 < v < 1024) with three significant digits, without trailing zeros.
fn three_digits(v: f64) -> String {
    let int_digits = if v >= 1.0 {
        v.log10().floor() as usize + 1
    } else {
        1
    };
    let decimals = 3usize.saturating_sub(int_digits);
    let text = format!("{v:.decimals$}");
    if decimals == 0 {
        return text;
    }
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `5 minutes ago`: how long ago an RFC 3339 time was (empty when it is not one).
pub fn ago(time: &str) -> String {
    since(Some(time)).map_or_else(String::new, |s| format!("{s} ago"))
}

/// How long since an RFC 3339 time, as podman words it.
pub fn since(time: Option<&str>) -> Option<String> {
    let t = humantime::parse_rfc3339_weak(time?).ok()?;
    let d = SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO);
    Some(human_duration(d))
}

/// Durations as podman words them.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_podman_prints_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1 kB");
        assert_eq!(human_size(345_000), "345 kB");
        assert_eq!(human_size(203_796_000), "204 MB");
        assert_eq!(human_size(1_200_000_000), "1.2 GB");
        assert_eq!(human_size(1_234_567_890), "1.23 GB");
        assert_eq!(human_size(12_345_678), "12.3 MB");
        assert_eq!(human_size(5_830_000), "5.83 MB");
        // Rounding up to the next unit shows it in that unit.
        assert_eq!(human_size(999_999), "1 MB");
        assert_eq!(human_size(999_499), "999 kB");
        assert_eq!(human_size(u64::MAX), "18.4 EB");
    }

    #[test]
    fn the_compact_forms_of_nook_stats() {
        assert_eq!(compact_size(1_234_567), "1.23MB");
        assert_eq!(compact_size(0), "0B");
        assert_eq!(compact_size(123_456_789), "123MB");
        assert_eq!(compact_binary_size(512), "512B");
        assert_eq!(compact_binary_size(1536 * 1024), "1.5MiB");
        assert_eq!(compact_binary_size(64 << 20), "64MiB");
        assert_eq!(compact_binary_size((1 << 30) - 1), "1GiB");
    }

    #[test]
    fn durations_in_podman_words() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(7300)), "2 hours");
    }
}
