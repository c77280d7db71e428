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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_by_name_and_uid() {
        let text = "# comment\n\
                    alice:100000:65536\n\
                    bob:165536:65536\n\
                    \n\
                    1001:300000:1000\n\
                    alice:500000:10\n\
                    broken line\n\
                    alice:notanumber:5\n\
                    alice:1:2:3\n\
                    alice:600000:0\n";
        assert_eq!(
            parse_subid(text, "alice", 1001),
            vec![
                SubIdRange {
                    start: 100000,
                    count: 65536
                },
                SubIdRange {
                    start: 300000,
                    count: 1000
                },
                SubIdRange {
                    start: 500000,
                    count: 10
                },
            ]
        );
        assert_eq!(
            parse_subid(text, "bob", 2000),
            vec![SubIdRange {
                start: 165536,
                count: 65536
            }]
        );
        assert!(parse_subid(text, "carol", 3000).is_empty());
        assert!(parse_subid("", "alice", 1001).is_empty());
        // A name that merely starts with the user's must not match.
        assert!(parse_subid("alice2:1:2\n", "alice", 1001).is_empty());
    }
}
