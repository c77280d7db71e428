//! Fuzzes the /etc/subuid parser and the coverage built from it. The input is a subid file;
//! its first line's first field doubles as the caller's name. Invariants checked, beyond "no
//! panic": every line is either an entry, a skipped blank/comment, or reported malformed with
//! its line number; the caller's coverage is sorted, disjoint and non-touching (merged); every
//! entry the caller owns is contained in it; and nothing outside u32 is ever covered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nook_newuidmap_helper::subid::{self, Coverage};

fuzz_target!(|data: &[u8]| {
    let file = subid::parse(data);
    let lines = data.split(|&b| b == b'\n').count();
    assert!(file.entries.len() + file.malformed.len() <= lines);
    assert!(file
        .malformed
        .iter()
        .all(|m| m.line >= 1 && m.line <= lines));

    let name = data
        .split(|&b| b == b':' || b == b'\n')
        .next()
        .unwrap_or_default();
    let coverage = subid::coverage_for(&file, name, 1000);
    check_merged(&coverage);
    for entry in file
        .entries
        .iter()
        .filter(|e| e.owner == name || e.owner == b"1000")
    {
        assert!(entry.count > 0);
        assert!(u64::from(entry.start) + u64::from(entry.count) <= 1 << 32);
        assert!(coverage.contains(entry.start, entry.count));
    }
    assert!(!coverage.contains(0, 0));
});

fn check_merged(coverage: &Coverage) {
    let spans = coverage.spans();
    for (start, end) in spans {
        assert!(start < end && *end <= 1 << 32);
    }
    for pair in spans.windows(2) {
        assert!(pair[0].1 < pair[1].0, "spans not merged: {pair:?}");
    }
}
