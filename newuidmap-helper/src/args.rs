//! Command-line parsing: `PID INSIDE OUTSIDE COUNT [INSIDE OUTSIDE COUNT ...]`, the argument
//! shape of shadow's newuidmap/newgidmap.
//!
//! Pure code over bytes (argv need not be UTF-8), so it is unit-tested and fuzzed
//! (fuzz/fuzz_targets/args_parser.rs). Security reasoning: everything later trusts the
//! numbers parsed here, so the grammar is the narrowest one that real callers (podman,
//! buildah, nook) use: plain decimal. shadow parses with strtoul(…, 0), which also takes hex
//! (`0x186a0`), octal (`0303240`, and so `010` = 8), a sign and leading blanks; nook refuses
//! those rather than guess (see the differential test for the cases this changes). Only the
//! shape is checked here; what the caller may map is [`crate::validate`]'s job.

use crate::error::{shown, Error, Field, NumberProblem};
use std::fmt;

/// The kernel's limit on lines in a uid_map/gid_map (UID_GID_MAP_MAX_EXTENTS).
pub const MAX_RANGES: usize = 340;

/// One triple: `count` ids from `inside` (in the namespace) map to ids from `outside` (on the
/// host, i.e. in the helper's own namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

impl fmt::Display for IdRange {
    /// As the caller typed it: `inside outside count`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.inside, self.outside, self.count)
    }
}

/// A well-formed command line. Not yet authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The target process, 1..=i32::MAX (pid_t is a signed 32-bit integer).
    pub pid: u32,
    /// In the order given; at least one, at most [`MAX_RANGES`].
    pub ranges: Vec<IdRange>,
}

/// Parses the arguments after argv\[0\].
pub fn parse_args<A: AsRef<[u8]>>(args: &[A]) -> Result<Request, Error> {
    let (pid_arg, rest) = args
        .split_first()
        .ok_or(Error::Usage("missing PID and ID ranges"))?;
    let pid = parse_pid(pid_arg.as_ref())?;
    if rest.is_empty() {
        return Err(Error::Usage("no ID ranges given"));
    }
    if rest.len() % 3 != 0 {
        let whole = rest.len() / 3 * 3;
        return Err(Error::IncompleteTriple {
            index: whole / 3 + 1,
            given: joined(&rest[whole..]),
        });
    }
    // Checked before parsing so a huge argv costs nothing more.
    if rest.len() / 3 > MAX_RANGES {
        return Err(Error::TooManyRanges {
            given: rest.len() / 3,
        });
    }
    let ranges = rest
        .chunks_exact(3)
        .enumerate()
        .map(|(i, triple)| parse_triple(i + 1, triple))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Request { pid, ranges })
}

/// A PID: decimal, no sign, 1..=i32::MAX.
pub fn parse_pid(arg: &[u8]) -> Result<u32, Error> {
    match parse_decimal(arg) {
        Ok(pid) if pid >= 1 && pid <= i32::MAX as u32 => Ok(pid),
        _ => Err(Error::BadPid(shown(arg))),
    }
}

/// One triple; `index` is 1-based for messages.
fn parse_triple<A: AsRef<[u8]>>(index: usize, triple: &[A]) -> Result<IdRange, Error> {
    let field = |n: usize, which: Field| {
        parse_decimal(triple[n].as_ref()).map_err(|problem| Error::BadNumber {
            index,
            triple: joined(triple),
            field: which,
            problem,
        })
    };
    Ok(IdRange {
        inside: field(0, Field::Inside)?,
        outside: field(1, Field::Outside)?,
        count: field(2, Field::Count)?,
    })
}

/// A u32 written in plain decimal: digits only, no leading zero unless it is `0` itself.
/// Shared with the subid file parser so both read numbers the same way.
pub fn parse_decimal(text: &[u8]) -> Result<u32, NumberProblem> {
    if text.is_empty() {
        return Err(NumberProblem::Empty);
    }
    if !text.iter().all(u8::is_ascii_digit) {
        return Err(NumberProblem::NotDecimal);
    }
    if text.len() > 1 && text[0] == b'0' {
        return Err(NumberProblem::LeadingZero);
    }
    // 10 digits always fit in a u64; more can never be a u32.
    if text.len() > 10 {
        return Err(NumberProblem::TooLarge);
    }
    let value = text
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    u32::try_from(value).map_err(|_| NumberProblem::TooLarge)
}

/// Arguments as one escaped, space-separated string for messages.
fn joined<A: AsRef<[u8]>>(args: &[A]) -> String {
    args.iter()
        .map(|a| shown(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Request, Error> {
        let args: Vec<&str> = line.split(' ').filter(|a| !a.is_empty()).collect();
        parse_args(&args)
    }

    fn range(inside: u32, outside: u32, count: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            count,
        }
    }

    #[test]
    fn parses_pid_and_triples_in_order() {
        let req = parse("42 0 1000 1 1 100000 65536").unwrap();
        assert_eq!(req.pid, 42);
        assert_eq!(req.ranges, vec![range(0, 1000, 1), range(1, 100000, 65536)]);
    }

    #[test]
    fn accepts_extremes_of_u32_shape() {
        // Overflow of start+count is the validator's concern, not the parser's.
        let req = parse("2147483647 4294967295 0 4294967295").unwrap();
        assert_eq!(req.pid, 2147483647);
        assert_eq!(req.ranges, vec![range(u32::MAX, 0, u32::MAX)]);
    }

    #[test]
    fn refuses_missing_pid_and_missing_ranges() {
        assert!(matches!(parse(""), Err(Error::Usage(_))));
        assert!(matches!(parse("42"), Err(Error::Usage(_))));
    }

    #[test]
    fn refuses_bad_pids() {
        for pid in ["0", "-1", "+5", "abc", "2147483648", "0x10", "010", " 5"] {
            let args = [pid, "0", "1000", "1"];
            assert!(
                matches!(parse_args(&args), Err(Error::BadPid(_))),
                "pid {pid:?} accepted"
            );
        }
    }

    #[test]
    fn refuses_odd_argument_counts_naming_the_partial_triple() {
        match parse("42 0 1000 1 5 100000") {
            Err(Error::IncompleteTriple { index, given }) => {
                assert_eq!(index, 2);
                assert_eq!(given, "5 100000");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse("42 0"),
            Err(Error::IncompleteTriple { index: 1, .. })
        ));
    }

    #[test]
    fn refuses_non_decimal_numbers_naming_triple_and_field() {
        let cases = [
            ("42 0 0x186a0 10", Field::Outside, NumberProblem::NotDecimal),
            (
                "42 0 0303240 10",
                Field::Outside,
                NumberProblem::LeadingZero,
            ),
            ("42 +0 100000 10", Field::Inside, NumberProblem::NotDecimal),
            ("42 0 100000 -1", Field::Count, NumberProblem::NotDecimal),
            (
                "42 0 100000 4294967296",
                Field::Count,
                NumberProblem::TooLarge,
            ),
            (
                "42 0 100000 99999999999",
                Field::Count,
                NumberProblem::TooLarge,
            ),
            ("42 0 1e5 1", Field::Outside, NumberProblem::NotDecimal),
        ];
        for (line, want_field, want_problem) in cases {
            match parse(line) {
                Err(Error::BadNumber {
                    index,
                    field,
                    problem,
                    ..
                }) => {
                    assert_eq!(
                        (index, field, problem),
                        (1, want_field, want_problem),
                        "{line}"
                    );
                }
                other => panic!("{line}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn names_the_second_triple_when_it_is_the_bad_one() {
        let err = parse("42 0 1000 1 1 abc 5").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("triple 2 `1 abc 5`"), "{text}");
    }

    #[test]
    fn refuses_more_than_340_triples() {
        let mut args = vec!["42".to_string()];
        for i in 0..341 {
            args.extend([i.to_string(), (100000 + i).to_string(), "1".to_string()]);
        }
        assert!(matches!(
            parse_args(&args),
            Err(Error::TooManyRanges { given: 341 })
        ));
        args.truncate(1 + 340 * 3);
        assert_eq!(parse_args(&args).unwrap().ranges.len(), 340);
    }

    #[test]
    fn accepts_non_utf8_arguments_only_to_refuse_them_cleanly() {
        let args: [&[u8]; 4] = [b"42", b"0", b"\xff\x1b[2J", b"1"];
        let text = parse_args(&args).unwrap_err().to_string();
        assert!(!text.contains('\x1b'), "control character leaked: {text:?}");
    }

    #[test]
    fn decimal_parser_edges() {
        assert_eq!(parse_decimal(b"0"), Ok(0));
        assert_eq!(parse_decimal(b"4294967295"), Ok(u32::MAX));
        assert_eq!(parse_decimal(b""), Err(NumberProblem::Empty));
        assert_eq!(parse_decimal(b"00"), Err(NumberProblem::LeadingZero));
        assert_eq!(parse_decimal(b"9999999999"), Err(NumberProblem::TooLarge));
        assert_eq!(parse_decimal(b" 1"), Err(NumberProblem::NotDecimal));
        assert_eq!(parse_decimal(b"1\n"), Err(NumberProblem::NotDecimal));
    }
}
