//! /etc/subuid and /etc/subgid: `OWNER:START:COUNT` lines granting OWNER the ids
//! START..START+COUNT-1 on the host.
//!
//! Pure code over the file's bytes (the helper reads the fixed path; tests and the fuzzer pass
//! text), returning the entries and the lines it ignored, so the caller can warn. Security
//! reasoning:
//! - A line that does not parse grants nothing: it is skipped with a reason, never guessed at
//!   (numbers are plain decimal, as in [`crate::args::parse_decimal`]).
//! - OWNER matches the caller by login name, or by the caller's numeric uid written in
//!   canonical decimal (shadow's rule; in /etc/subgid too the number is the *uid*, as shadow
//!   does). shadow also matches a different login name that has the same uid; nook does not,
//!   which only ever grants less, and avoids an NSS lookup per line.
//! - A request may span several of the owner's ranges when they touch or overlap (shadow
//!   allows this too): the union is what the administrator granted, so [`Coverage`] merges
//!   them before the containment test.

use crate::args::parse_decimal;

/// One parsed line. `owner` borrows from the file text (names need not be UTF-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubidEntry<'a> {
    pub owner: &'a [u8],
    pub start: u32,
    pub count: u32,
}

/// A line that was ignored, with a reason for the warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// 1-based line number.
    pub line: usize,
    pub reason: &'static str,
}

/// The whole file: usable entries plus the lines that were skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubidFile<'a> {
    pub entries: Vec<SubidEntry<'a>>,
    pub malformed: Vec<Malformed>,
}

/// Parses the file text. Blank lines and `#` comments are skipped silently.
pub fn parse(contents: &[u8]) -> SubidFile<'_> {
    let mut file = SubidFile::default();
    for (n, line) in contents.split(|&b| b == b'\n').enumerate() {
        match parse_line(line) {
            Ok(Some(entry)) => file.entries.push(entry),
            Ok(None) => {}
            Err(reason) => file.malformed.push(Malformed {
                line: n + 1,
                reason,
            }),
        }
    }
    file
}

/// One line: `Ok(None)` for blank/comment, `Err(reason)` for malformed.
fn parse_line(line: &[u8]) -> Result<Option<SubidEntry<'_>>, &'static str> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() || trimmed.starts_with(b"#") {
        return Ok(None);
    }
    let mut fields = line.split(|&b| b == b':');
    let (Some(owner), Some(start), Some(count), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected exactly three fields, OWNER:START:COUNT");
    };
    if owner.is_empty() {
        return Err("empty owner");
    }
    let start = parse_decimal(start).map_err(|_| "START is not a plain decimal number")?;
    let count = parse_decimal(count).map_err(|_| "COUNT is not a plain decimal number")?;
    if count == 0 {
        return Err("COUNT is 0");
    }
    if u64::from(start) + u64::from(count) > 1 << 32 {
        return Err("range goes past id 4294967295");
    }
    Ok(Some(SubidEntry {
        owner,
        start,
        count,
    }))
}

/// The set of host ids one caller may map, as sorted, merged half-open spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    spans: Vec<(u64, u64)>,
}

impl Coverage {
    /// Builds the union of `(start, count)` ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u32, u32)>) -> Coverage {
        let mut spans: Vec<(u64, u64)> = ranges
            .into_iter()
            .map(|(start, count)| (u64::from(start), u64::from(start) + u64::from(count)))
            .filter(|(start, end)| start < end)
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                // Touching (start == last end) or overlapping: one contiguous grant.
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Coverage { spans: merged }
    }

    /// Whether every id in `start..start+count` is covered. `count == 0` is never covered:
    /// an empty range is refused, not vacuously allowed.
    pub fn contains(&self, start: u32, count: u32) -> bool {
        let (start, end) = (u64::from(start), u64::from(start) + u64::from(count));
        count > 0 && self.spans.iter().any(|&(s, e)| s <= start && end <= e)
    }

    /// The merged spans, for messages and tests.
    pub fn spans(&self) -> &[(u64, u64)] {
        &self.spans
    }
}

/// The caller's coverage: entries owned by `name` or by `uid` in canonical decimal.
pub fn coverage_for(file: &SubidFile<'_>, name: &[u8], uid: u32) -> Coverage {
    let uid_text = uid.to_string();
    Coverage::from_ranges(
        file.entries
            .iter()
            .filter(|e| e.owner == name || e.owner == uid_text.as_bytes())
            .map(|e| (e.start, e.count)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# subordinate ids
alice:100000:65536

1001:200000:1000
alice:165536:4464
bob:300000:65536
   # indented comment
alice:400000
alice:x:1
:500000:10
alice:600000:0
alice:4294967295:2
alice:0x10:5
alice:700000:10:extra
alice:800000:10\r
";

    #[test]
    fn parses_entries_and_skips_comments_and_blanks() {
        let file = parse(SAMPLE.as_bytes());
        let owners: Vec<&[u8]> = file.entries.iter().map(|e| e.owner).collect();
        assert_eq!(
            owners,
            [&b"alice"[..], b"1001", b"alice", b"bob"],
            "{:?}",
            file.entries
        );
        assert_eq!(
            file.entries[0],
            SubidEntry {
                owner: b"alice",
                start: 100000,
                count: 65536
            }
        );
    }

    #[test]
    fn reports_each_malformed_line_with_its_number() {
        let file = parse(SAMPLE.as_bytes());
        let lines: Vec<usize> = file.malformed.iter().map(|m| m.line).collect();
        // 8: two fields, 9: bad START, 10: empty owner, 11: COUNT 0, 12: overflow,
        // 13: hex, 14: four fields, 15: CR (Windows line end).
        assert_eq!(lines, [8, 9, 10, 11, 12, 13, 14, 15]);
        assert!(file.malformed.iter().all(|m| !m.reason.is_empty()));
    }

    #[test]
    fn matches_by_name_and_by_numeric_uid() {
        let file = parse(SAMPLE.as_bytes());
        let alice = coverage_for(&file, b"alice", 1001);
        // 100000..170000 merged from two touching lines, plus the numeric 1001 entry.
        assert_eq!(alice.spans(), &[(100000, 170000), (200000, 201000)]);
        let carol = coverage_for(&file, b"carol", 1001);
        assert_eq!(carol.spans(), &[(200000, 201000)]);
        let nobody = coverage_for(&file, b"dave", 1002);
        assert!(nobody.spans().is_empty());
    }

    #[test]
    fn numeric_owner_must_be_canonical_decimal() {
        let file = parse(b"01001:200000:1000\n");
        assert!(coverage_for(&file, b"alice", 1001).spans().is_empty());
    }

    #[test]
    fn several_ranges_per_user_and_containment() {
        let file = parse(b"u:10:10\nu:30:10\nu:15:10\n");
        let cov = coverage_for(&file, b"u", 7);
        assert_eq!(cov.spans(), &[(10, 25), (30, 40)]);
        assert!(cov.contains(10, 15));
        assert!(cov.contains(30, 10));
        assert!(!cov.contains(20, 11), "gap 25..30 is not granted");
        assert!(!cov.contains(9, 2));
        assert!(!cov.contains(39, 2));
        assert!(!cov.contains(12, 0));
    }

    #[test]
    fn range_ending_at_the_top_of_u32_is_usable() {
        let file = parse(b"u:4294967286:10\n");
        assert!(file.malformed.is_empty());
        assert!(coverage_for(&file, b"u", 1).contains(4294967286, 10));
    }

    #[test]
    fn empty_and_garbage_files_grant_nothing() {
        assert_eq!(parse(b""), SubidFile::default());
        let file = parse(b"\x00\xff:\n:::\n");
        assert!(file.entries.is_empty());
        assert_eq!(file.malformed.len(), 2);
    }
}
