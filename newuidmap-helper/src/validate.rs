//! The decision: may this caller write this map?
//!
//! Pure code, so every rule is unit-tested without privilege. A request is accepted only if
//! every triple is authorized on its own and the triples together form a map the kernel will
//! take; the first failure names the offending triple. Security reasoning, rule by rule:
//! - Each outside range must lie inside the caller's subordinate ids ([`Coverage`]), or be the
//!   caller's own id with count 1 (what the kernel would let them map unprivileged anyway).
//!   The inside side is free: it is the caller's namespace.
//! - No id may appear twice on either side, so the caller's own id can be mapped only once and
//!   a duplicated triple is refused (the kernel refuses these too, but only after privilege has
//!   been used; refusing here gives a message that names the triples).
//! - Counts are at least 1 and `start + count` stays at or below 4294967295 on both sides,
//!   so `(u32)-1`, the kernel's invalid id, is never inside a range (the kernel's and
//!   shadow's limit).
//! - At most 340 lines, and the text less than one page: the kernel's limits on one write.
//!
//! For gid maps, [`Grant::from_subordinate`] records whether /etc/subgid authorized any
//! range; if none did, the map relies only on the caller's own gid and the helper must make
//! sure setgroups is denied (CVE-2018-7169, see [`crate::target`]).

use crate::args::{IdRange, MAX_RANGES};
use crate::error::{Error, Side};
use crate::subid::Coverage;
use crate::MapKind;

/// What an accepted request was authorized by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// True if at least one triple was authorized by the subordinate-id file (shadow's
    /// `allow_setgroups`); false if the whole map is the caller's own id.
    pub from_subordinate: bool,
}

/// Everything the decision depends on besides the triples.
#[derive(Clone, Debug)]
pub struct Policy<'a> {
    pub kind: MapKind,
    /// The caller's real uid (uid maps) or real gid (gid maps).
    pub own_id: u32,
    /// The caller's subordinate ids.
    pub coverage: &'a Coverage,
    /// The largest write the kernel takes is `page_size - 1` bytes.
    pub page_size: usize,
}

/// Accepts or refuses `ranges` under `policy`.
pub fn validate(ranges: &[IdRange], policy: &Policy<'_>) -> Result<Grant, Error> {
    check_line_count(ranges)?;
    let mut from_subordinate = false;
    for (i, range) in ranges.iter().enumerate() {
        check_shape(i + 1, range)?;
        from_subordinate |= authorize(i + 1, range, policy)?;
    }
    check_overlaps(ranges)?;
    check_text_length(ranges, policy.page_size)?;
    Ok(Grant { from_subordinate })
}

/// The text written to uid_map/gid_map: one `inside outside count` line per triple.
pub fn map_text(ranges: &[IdRange]) -> String {
    ranges.iter().map(|r| format!("{r}\n")).collect()
}

fn check_line_count(ranges: &[IdRange]) -> Result<(), Error> {
    if ranges.is_empty() {
        return Err(Error::Usage("no ID ranges given"));
    }
    if ranges.len() > MAX_RANGES {
        return Err(Error::TooManyRanges {
            given: ranges.len(),
        });
    }
    Ok(())
}

/// Count at least 1; neither side runs past 4294967294 (the last valid id).
fn check_shape(index: usize, range: &IdRange) -> Result<(), Error> {
    if range.count == 0 {
        return Err(Error::CountZero {
            index,
            range: *range,
        });
    }
    for (side, start) in [(Side::Inside, range.inside), (Side::Outside, range.outside)] {
        if u64::from(start) + u64::from(range.count) > u64::from(u32::MAX) {
            return Err(Error::Overflow {
                index,
                range: *range,
                side,
            });
        }
    }
    Ok(())
}

/// Returns whether the subordinate file authorized it; the own-id rule is tried second, as
/// in shadow, so an own id that is also subordinate counts as subordinate.
fn authorize(index: usize, range: &IdRange, policy: &Policy<'_>) -> Result<bool, Error> {
    if policy.coverage.contains(range.outside, range.count) {
        return Ok(true);
    }
    if range.count == 1 && range.outside == policy.own_id {
        return Ok(false);
    }
    Err(Error::NotPermitted {
        index,
        range: *range,
        kind: policy.kind,
        own_id: policy.own_id,
    })
}

/// No two triples share an id on either side. O(n²) with n ≤ 340: at most 57,630 pairs.
fn check_overlaps(ranges: &[IdRange]) -> Result<(), Error> {
    for (j, later) in ranges.iter().enumerate() {
        for (i, earlier) in ranges[..j].iter().enumerate() {
            let side = if spans_overlap(earlier.inside, later.inside, earlier.count, later.count) {
                Side::Inside
            } else if spans_overlap(earlier.outside, later.outside, earlier.count, later.count) {
                Side::Outside
            } else {
                continue;
            };
            return Err(Error::Overlap {
                side,
                first: (i + 1, *earlier),
                second: (j + 1, *later),
            });
        }
    }
    Ok(())
}

/// Whether `[a, a+n)` and `[b, b+m)` share an id.
fn spans_overlap(a: u32, b: u32, n: u32, m: u32) -> bool {
    let (a, b) = (u64::from(a), u64::from(b));
    a < b + u64::from(m) && b < a + u64::from(n)
}

/// The kernel refuses a write of a page or more (and takes the map in one write only).
fn check_text_length(ranges: &[IdRange], page_size: usize) -> Result<(), Error> {
    let bytes = map_text(ranges).len();
    if bytes >= page_size {
        return Err(Error::MapTooLong {
            bytes,
            limit: page_size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: u32 = 1001;

    fn r(inside: u32, outside: u32, count: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            count,
        }
    }

    /// alice: 100000..170000 (two touching lines) and 200000..201000.
    fn coverage() -> Coverage {
        Coverage::from_ranges([(100000, 65536), (165536, 4464), (200000, 1000)])
    }

    fn check(ranges: &[IdRange]) -> Result<Grant, Error> {
        let cov = coverage();
        let policy = Policy {
            kind: MapKind::Uid,
            own_id: OWN,
            coverage: &cov,
            page_size: 4096,
        };
        validate(ranges, &policy)
    }

    fn accepted(ranges: &[IdRange]) -> bool {
        check(ranges).is_ok()
    }

    #[test]
    fn own_id_alone_is_allowed_and_not_subordinate() {
        let grant = check(&[r(0, OWN, 1)]).unwrap();
        assert!(!grant.from_subordinate);
        assert!(accepted(&[r(OWN, OWN, 1)]));
    }

    #[test]
    fn own_id_needs_count_one_and_only_once() {
        assert!(matches!(
            check(&[r(0, OWN, 2)]),
            Err(Error::NotPermitted { index: 1, .. })
        ));
        assert!(matches!(
            check(&[r(0, OWN, 1), r(1, OWN, 1)]),
            Err(Error::Overlap {
                side: Side::Outside,
                ..
            })
        ));
    }

    #[test]
    fn podman_default_map_is_allowed_and_subordinate() {
        let grant = check(&[r(0, OWN, 1), r(1, 100000, 65536)]).unwrap();
        assert!(grant.from_subordinate);
    }

    #[test]
    fn subordinate_ranges_inside_edges_and_across_touching_lines() {
        assert!(accepted(&[r(0, 100000, 65536)]));
        assert!(accepted(&[r(0, 100000, 70000)]), "spans two touching lines");
        assert!(accepted(&[r(0, 169999, 1)]));
        assert!(accepted(&[r(0, 200000, 1000)]));
        assert!(!accepted(&[r(0, 100000, 70001)]));
        assert!(!accepted(&[r(0, 99999, 2)]));
        assert!(!accepted(&[r(0, 200500, 501)]));
        assert!(!accepted(&[r(0, 169000, 31001)]), "gap 170000..200000");
    }

    #[test]
    fn other_ids_are_refused_naming_the_triple() {
        let err = check(&[r(0, 100000, 10), r(10, 0, 1)]).unwrap_err();
        assert!(matches!(err, Error::NotPermitted { index: 2, .. }));
        assert!(err.to_string().contains("triple 2 `10 0 1`"), "{err}");
    }

    #[test]
    fn zero_count_is_refused_even_for_own_id() {
        assert!(matches!(
            check(&[r(0, OWN, 0)]),
            Err(Error::CountZero { index: 1, .. })
        ));
    }

    #[test]
    fn overflow_on_either_side() {
        assert!(accepted(&[r(4294967294, 100000, 1)]), "last valid id");
        assert!(matches!(
            check(&[r(4294967295, 100000, 1)]),
            Err(Error::Overflow {
                side: Side::Inside,
                ..
            })
        ));
        assert!(matches!(
            check(&[r(4294967290, 100000, 10)]),
            Err(Error::Overflow {
                side: Side::Inside,
                ..
            })
        ));
        assert!(matches!(
            check(&[r(0, 4294967295, 1)]),
            Err(Error::Overflow {
                side: Side::Outside,
                ..
            })
        ));
        // Huge count wraps u32 arithmetic in C; here it is simply too large.
        assert!(matches!(
            check(&[r(1, 100000, u32::MAX)]),
            Err(Error::Overflow { .. })
        ));
    }

    #[test]
    fn overlaps_and_duplicates_on_both_sides() {
        assert!(matches!(
            check(&[r(0, 100000, 10), r(5, 100100, 10)]),
            Err(Error::Overlap {
                side: Side::Inside,
                first: (1, _),
                second: (2, _)
            })
        ));
        assert!(matches!(
            check(&[r(0, 100000, 10), r(100, 100005, 10)]),
            Err(Error::Overlap {
                side: Side::Outside,
                ..
            })
        ));
        assert!(matches!(
            check(&[r(0, 100000, 10), r(0, 100000, 10)]),
            Err(Error::Overlap { .. })
        ));
        assert!(
            accepted(&[r(0, 100000, 10), r(10, 100010, 10)]),
            "touching is fine"
        );
    }

    #[test]
    fn line_limit_340() {
        let many: Vec<IdRange> = (0..341).map(|i| r(i, 100000 + i, 1)).collect();
        assert!(matches!(
            check(&many),
            Err(Error::TooManyRanges { given: 341 })
        ));
        let cov = coverage();
        let policy = Policy {
            kind: MapKind::Uid,
            own_id: OWN,
            coverage: &cov,
            page_size: 65536,
        };
        assert!(validate(&many[..340], &policy).is_ok());
    }

    #[test]
    fn text_must_fit_one_page() {
        // 340 lines of `i 100000+i 1` are 4310 bytes: the kernel would say EINVAL.
        let many: Vec<IdRange> = (0..340).map(|i| r(i, 100000 + i, 1)).collect();
        assert!(matches!(
            check(&many),
            Err(Error::MapTooLong { bytes: 4310, .. })
        ));
        assert!(accepted(&many[..200]));
    }

    #[test]
    fn empty_request_is_refused() {
        assert!(matches!(check(&[]), Err(Error::Usage(_))));
    }

    #[test]
    fn map_text_is_one_line_per_triple() {
        assert_eq!(
            map_text(&[r(0, OWN, 1), r(1, 100000, 65536)]),
            "0 1001 1\n1 100000 65536\n"
        );
    }
}
