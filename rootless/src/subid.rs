//! Subordinate ID ranges (`/etc/subuid`, `/etc/subgid`): the IDs an administrator lets a
//! user map into its containers beyond its own.

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

/// Every range of `/etc/subuid`-format text, whoever it belongs to (malformed lines and
/// empty ranges skipped): what a new range must not overlap.
pub fn all_ranges(contents: &str) -> impl Iterator<Item = SubIdRange> + '_ {
    contents
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let (_name, start, count) = (f.next()?, f.next()?, f.next()?);
            let range = SubIdRange {
                start: start.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            };
            (range.count > 0).then_some(range)
        })
}

/// Size and alignment of the range nook suggests: what podman and useradd give a user,
/// enough for every ID an ordinary distribution image uses.
pub const SUGGESTED_COUNT: u64 = 65536;
/// Suggested ranges start above this (useradd's SUB_UID_MIN default).
pub const SUGGESTED_MIN: u64 = 100_000;

/// The first range of [`SUGGESTED_COUNT`] IDs, aligned to that size, above
/// [`SUGGESTED_MIN`], that overlaps no range of any of `files` (the texts of /etc/subuid
/// and /etc/subgid): a range an administrator can give a user without giving two users
/// the same container IDs. None when the whole 32-bit space is taken.
pub fn free_range(files: &[&str]) -> Option<SubIdRange> {
    let taken: Vec<SubIdRange> = files.iter().flat_map(|t| all_ranges(t)).collect();
    // The last valid ID is u32::MAX - 1 (-1 means "no ID" to the kernel).
    let limit = u64::from(u32::MAX);
    let mut start = SUGGESTED_MIN.div_ceil(SUGGESTED_COUNT) * SUGGESTED_COUNT;
    while start + SUGGESTED_COUNT <= limit {
        let end = start + SUGGESTED_COUNT;
        match taken
            .iter()
            .filter(|r| r.start < end && start < r.start.saturating_add(r.count))
            .map(|r| r.start.saturating_add(r.count))
            .max()
        {
            None => {
                return Some(SubIdRange {
                    start,
                    count: SUGGESTED_COUNT,
                })
            }
            // Skip past everything that overlaps this candidate, to the next aligned start.
            Some(taken_end) if taken_end >= limit => return None,
            Some(taken_end) => start = taken_end.div_ceil(SUGGESTED_COUNT) * SUGGESTED_COUNT,
        }
    }
    None
}

/// The administrator's command that gives `user` subordinate IDs: a range free in both
/// /etc/subuid and /etc/subgid as they are now (read here), never a fixed one that may
/// already be another account's. `nook info` and the single-ID notice both say this.
pub fn add_range_fix(user: &str) -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (uids, gids) = (read(SUBUID_FILE), read(SUBGID_FILE));
    add_range_fix_for(user, free_range(&[&uids, &gids]))
}

/// [`add_range_fix`] for a range already computed.
pub fn add_range_fix_for(user: &str, free: Option<SubIdRange>) -> String {
    match free {
        Some(r) => {
            let span = format!("{}-{}", r.start, r.start + r.count - 1);
            format!(
                "an administrator can give {user} a range with `usermod --add-subuids {span} \
                 --add-subgids {span} {user}` ({span} is free in {SUBUID_FILE} and \
                 {SUBGID_FILE} today)"
            )
        }
        None => format!(
            "an administrator can give {user} a range of {SUGGESTED_COUNT} IDs that no \
             line of {SUBUID_FILE} or {SUBGID_FILE} uses with `usermod --add-subuids \
             FIRST-LAST --add-subgids FIRST-LAST {user}`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, count: u64) -> SubIdRange {
        SubIdRange { start, count }
    }

    #[test]
    fn free_range_on_an_empty_machine_is_the_first_aligned_one() {
        assert_eq!(free_range(&["", ""]), Some(r(131072, 65536)));
        assert_eq!(free_range(&[]), Some(r(131072, 65536)));
    }

    #[test]
    fn free_range_avoids_every_account_in_both_files() {
        // The usual useradd layout from 100000 on: 100000-165535, 165536-231071, ...
        let subuid = "alice:100000:65536\nbob:165536:65536\n";
        // subgid alone holds a range the subuid file does not: it counts too.
        let subgid = "alice:100000:65536\nbob:165536:65536\ncarol:262144:10\n";
        // 131072 and 196608 overlap alice/bob, 262144 overlaps carol's subgid range.
        assert_eq!(free_range(&[subuid, subgid]), Some(r(327680, 65536)));
        // Touching is not overlapping: a range ending right at an aligned start.
        assert_eq!(free_range(&["x:65536:65536\n", ""]), Some(r(131072, 65536)));
        assert_eq!(
            free_range(&["x:196607:1\n", ""]),
            Some(r(196608, 65536)),
            "one ID inside the candidate is enough to skip it"
        );
    }

    #[test]
    fn free_range_ignores_comments_and_bad_lines_but_not_numeric_owners() {
        let text = "# 131072 is taken below by uid 1001\n1001:131072:65536\nbroken\n\
                    x:notanumber:5\nempty:196608:0\n";
        assert_eq!(free_range(&[text]), Some(r(196608, 65536)));
    }

    #[test]
    fn free_range_skips_huge_ranges_and_gives_up_at_the_end_of_the_id_space() {
        assert_eq!(
            free_range(&["big:100000:1000000000\n"]),
            Some(r(1_000_144_896, 65536))
        );
        assert_eq!(free_range(&["all:0:4294967295\n"]), None);
        // A count that would overflow does not wrap around.
        assert_eq!(
            free_range(&["x:200000:18446744073709551615\n"]),
            Some(r(131072, 65536))
        );
        assert_eq!(free_range(&["x:190000:18446744073709551615\n"]), None);
    }

    #[test]
    fn the_fix_names_the_free_range_for_both_files() {
        let fix = add_range_fix_for("alice", Some(r(327680, 65536)));
        assert!(
            fix.contains("usermod --add-subuids 327680-393215 --add-subgids 327680-393215 alice"),
            "{fix}"
        );
        assert!(!fix.contains("100000-165535"), "{fix}");
        assert!(add_range_fix_for("alice", None).contains("no line of"));
    }

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
