//! The pids controller: `--pids-limit` → `pids.max`, the fork-bomb stop.
//!
//! OCI's 0 leaves the limit alone (as runc does); a negative limit is "max".

use oci_spec::runtime::LinuxPids;

use super::files::Setting;

const WHAT: &str = "the process limit (--pids-limit)";

pub(crate) fn plan(pids: &LinuxPids) -> Vec<Setting> {
    match pids.limit() {
        0 => Vec::new(),
        l if l < 0 => vec![Setting::new("pids", "pids.max", "max".into(), WHAT)],
        l => vec![Setting::new("pids", "pids.max", l.to_string(), WHAT)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxPidsBuilder;

    #[test]
    fn limits() {
        let p = |l: i64| plan(&LinuxPidsBuilder::default().limit(l).build().unwrap());
        assert_eq!(p(100)[0].value, "100");
        assert_eq!(p(-1)[0].value, "max");
        assert!(p(0).is_empty());
    }
}
