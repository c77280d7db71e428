//! Fuzzes argv parsing and the range validator. The input is argv after the program name,
//! NUL-separated (as the kernel passes it). Invariants checked, beyond "no panic": a parsed
//! request has a PID in 1..=i32::MAX and 1..=340 triples; the map text written for it reads
//! back as the same triples; and anything the validator accepts is authorized, in range and
//! free of overlaps, checked here by brute force independent of the validator's code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nook_newuidmap_helper::args::{self, IdRange};
use nook_newuidmap_helper::subid::Coverage;
use nook_newuidmap_helper::validate::{self, Policy};
use nook_newuidmap_helper::MapKind;

const OWN: u32 = 1000;

fuzz_target!(|data: &[u8]| {
    let argv: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let Ok(request) = args::parse_args(&argv) else {
        return;
    };
    assert!(request.pid >= 1 && request.pid <= i32::MAX as u32);
    assert!(!request.ranges.is_empty() && request.ranges.len() <= args::MAX_RANGES);
    let text = validate::map_text(&request.ranges);
    assert_eq!(reparse(&text), request.ranges);

    let coverage = Coverage::from_ranges([(100000, 65536), (165536, 4464), (200000, 1000)]);
    let policy = Policy {
        kind: MapKind::Uid,
        own_id: OWN,
        coverage: &coverage,
        page_size: 4096,
    };
    if validate::validate(&request.ranges, &policy).is_ok() {
        assert!(text.len() < 4096);
        check_accepted(&request.ranges, &coverage);
    }
});

/// The kernel's view of the text: whitespace-separated triples.
fn reparse(text: &str) -> Vec<IdRange> {
    text.lines()
        .map(|line| {
            let n: Vec<u32> = line.split(' ').map(|f| f.parse().unwrap()).collect();
            IdRange {
                inside: n[0],
                outside: n[1],
                count: n[2],
            }
        })
        .collect()
}

fn check_accepted(ranges: &[IdRange], coverage: &Coverage) {
    let end = |start: u32, count: u32| u64::from(start) + u64::from(count);
    for (i, r) in ranges.iter().enumerate() {
        assert!(r.count > 0);
        assert!(end(r.inside, r.count) <= u64::from(u32::MAX));
        assert!(end(r.outside, r.count) <= u64::from(u32::MAX));
        let own = r.count == 1 && r.outside == OWN;
        let granted = coverage
            .spans()
            .iter()
            .any(|&(s, e)| s <= u64::from(r.outside) && end(r.outside, r.count) <= e);
        assert!(own || granted, "accepted an unauthorized range {r:?}");
        for other in &ranges[..i] {
            let apart = |a: u32, b: u32| {
                end(a, r.count) <= u64::from(b) || end(b, other.count) <= u64::from(a)
            };
            assert!(apart(r.inside, other.inside), "inside overlap accepted");
            assert!(apart(r.outside, other.outside), "outside overlap accepted");
        }
    }
}
