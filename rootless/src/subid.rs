//! Subordinate ID ranges (`/etc/subuid`, `/etc/subgid`): the IDs an administrator lets a
//! user map into its containers beyond its own.

use std::path::Path;

pub const SUBUID_FILE: &str = "/etc/subuid";
pub const SUBGID_FILE: &str = "/etc/subgid";

/// One subordinate ID range: `start .. start + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubIdRange {
    pub start: u64,
    pub count: u64,
}

/// The ranges of `/etc/subuid`-format text that belong to `user` or to `uid` in decimal
/// (shadow accepts both). Comments, blank lines and malformed lines are skipped.
pub fn parse_subid(contents: &str, user: &str, uid: u32) -> Vec<SubIdRange> {
    let uid = uid.to_string();
    contents
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let (name, start, count) = (f.next()?, f.next()?, f.next()?);
            if f.next().is_some() || (name != user && name != uid) {
                return None;
            }
            let range = SubIdRange {
                start: start.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            };
            (range.count > 0).then_some(range)
        })
        .collect()
}

/// The ranges of `user` (or its numeric `uid`) in the file at `path`; none if unreadable.
pub fn ranges_in(path: &Path, user: &str, uid: u32) -> Vec<SubIdRange> {
    std::fs::read_to_string(path)
        .map(|text| parse_subid(&text, user, uid))
        .unwrap_or_default()
}
