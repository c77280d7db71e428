//! The cpuset controller: `--cpuset-cpus` and `--cpuset-mems` → `cpuset.cpus`/`.mems`.
//!
//! The kernel validates the list against the parent's effective set; the syntax is
//! checked here first so a typo fails with a clear message before anything is created.

use oci_spec::runtime::LinuxCpu;

use super::files::Setting;
use crate::error::{Error, Result};

pub(crate) fn plan(cpu: &LinuxCpu) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    for (list, file, what) in [
        (cpu.cpus(), "cpuset.cpus", "the CPU set (--cpuset-cpus)"),
        (
            cpu.mems(),
            "cpuset.mems",
            "the memory node set (--cpuset-mems)",
        ),
    ] {
        if let Some(list) = list.as_deref().filter(|l| !l.is_empty()) {
            if !valid_list(list) {
                return Err(Error::Cgroup(format!(
                    "{what}: {list:?} is not a list such as 0-3,6"
                )));
            }
            out.push(Setting::new("cpuset", file, list.to_string(), what));
        }
    }
    Ok(out)
}

/// `N`, `N-M` (N <= M), comma-separated.
pub fn valid_list(list: &str) -> bool {
    list.split(',').all(|part| {
        let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match part.split_once('-') {
            Some((a, b)) if num(a) && num(b) => a.parse::<u64>().ok() <= b.parse::<u64>().ok(),
            Some(_) => false,
            None => num(part),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        for ok in ["0", "0-3", "0,2,4-7", "12"] {
            assert!(valid_list(ok), "{ok}");
        }
        for bad in ["", "a", "3-1", "0,,1", "-1", "0-", "1 2"] {
            assert!(!valid_list(bad), "{bad}");
        }
    }
}
