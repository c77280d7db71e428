//! Every way the helpers refuse, as one enum with a hand-written Display (std only: this
//! crate runs setuid root and takes no dependency beyond libc).
//!
//! Each message is one line meant for the person who ran the command: it names the offending
//! triple (1-based, as typed) and says what would be accepted. Raw argument text is shown
//! escaped ([`shown`]) so a hostile argument cannot put control characters on a terminal.

use crate::args::IdRange;
use crate::MapKind;
use std::fmt;
use std::io;

/// Which of a triple's three numbers is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Inside,
    Outside,
    Count,
}

/// Which side of the mapping a range check failed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The ids inside the namespace (first number of a triple).
    Inside,
    /// The ids outside, on the host (second number).
    Outside,
}

/// Why a number was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberProblem {
    Empty,
    /// Anything but the digits 0-9: signs, spaces, hex `0x`. shadow's strtoul accepts
    /// several of these; nook refuses them so that a map means the same to every reader.
    NotDecimal,
    /// `010` is 10 to a person and 8 to shadow's strtoul(…, 0): refuse the ambiguity.
    LeadingZero,
    /// More than 4294967295.
    TooLarge,
}

/// A refusal. Display gives the message without the program-name prefix.
#[derive(Debug)]
pub enum Error {
    /// Wrong shape of the command line.
    Usage(&'static str),
    /// The PID argument, escaped.
    BadPid(String),
    /// The argument count after the PID is not a multiple of three.
    IncompleteTriple { index: usize, given: String },
    /// One of a triple's numbers does not parse.
    BadNumber {
        index: usize,
        triple: String,
        field: Field,
        problem: NumberProblem,
    },
    /// A triple with count 0.
    CountZero { index: usize, range: IdRange },
    /// start + count passes the largest valid id (4294967294) on one side.
    Overflow {
        index: usize,
        range: IdRange,
        side: Side,
    },
    /// More triples than the kernel's 340 map lines.
    TooManyRanges { given: usize },
    /// The outside range is neither in the caller's subordinate ids nor their own id.
    NotPermitted {
        index: usize,
        range: IdRange,
        kind: MapKind,
        own_id: u32,
    },
    /// Two triples overlap (or repeat) on one side.
    Overlap {
        side: Side,
        first: (usize, IdRange),
        second: (usize, IdRange),
    },
    /// The map's text would not fit in the kernel's single write (less than a page).
    MapTooLong { bytes: usize, limit: usize },
    /// The caller has no passwd entry.
    NoAccount { uid: u32 },
    /// Real gid differs from the passwd primary gid (shadow refuses this too).
    WrongGroup { gid: u32, primary: u32 },
    /// The helper was not installed with the privilege it needs.
    NotPrivileged { kind: MapKind },
    /// Something about the target process rules it out.
    Target { pid: u32, problem: String },
    /// A system call failed.
    Io { what: String, source: io::Error },
}

impl Error {
    /// An [`Error::Target`] for `pid`.
    pub fn target(pid: u32, problem: impl Into<String>) -> Error {
        Error::Target {
            pid,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Inside => "inside id",
            Field::Outside => "outside id",
            Field::Count => "count",
        })
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Inside => "inside (namespace)",
            Side::Outside => "outside (host)",
        })
    }
}

impl fmt::Display for NumberProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NumberProblem::Empty => "it is empty",
            NumberProblem::NotDecimal => "only the digits 0-9 are accepted",
            NumberProblem::LeadingZero => "a leading zero is ambiguous (octal to some tools)",
            NumberProblem::TooLarge => "it is larger than 4294967295",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(detail) => write!(
                f,
                "{detail}; usage: PID INSIDE OUTSIDE COUNT [INSIDE OUTSIDE COUNT ...]"
            ),
            Error::BadPid(arg) => write!(
                f,
                "invalid PID `{arg}`: expected a decimal process id from 1 to 2147483647"
            ),
            Error::IncompleteTriple { index, given } => write!(
                f,
                "incomplete triple {index} `{given}`: each range needs three numbers, \
                 INSIDE OUTSIDE COUNT"
            ),
            Error::BadNumber {
                index,
                triple,
                field,
                problem,
            } => write!(f, "triple {index} `{triple}`: bad {field}: {problem}"),
            Error::CountZero { index, range } => write!(
                f,
                "triple {index} `{range}`: count is 0; every range must map at least one id"
            ),
            Error::Overflow { index, range, side } => {
                let start = match side {
                    Side::Inside => range.inside,
                    Side::Outside => range.outside,
                };
                write!(
                    f,
                    "triple {index} `{range}`: {side} ids [{start}-{}) go past the largest \
                     valid id 4294967294",
                    u64::from(start) + u64::from(range.count)
                )
            }
            Error::TooManyRanges { given } => write!(
                f,
                "{given} triples given; the kernel accepts at most {} map lines",
                crate::args::MAX_RANGES
            ),
            Error::NotPermitted {
                index,
                range,
                kind,
                own_id,
            } => write!(
                f,
                "triple {index} `{range}`: {id} range [{}-{}) is not yours: it is not inside \
                 your subordinate {id}s in {path}, nor your own {id} {own_id} with count 1",
                range.outside,
                u64::from(range.outside) + u64::from(range.count),
                id = kind.id_word(),
                path = kind.subid_path(),
            ),
            Error::Overlap {
                side,
                first,
                second,
            } => write!(
                f,
                "triple {} `{}` overlaps triple {} `{}` in their {side} ids; each id may be \
                 mapped only once",
                second.0, second.1, first.0, first.1
            ),
            Error::MapTooLong { bytes, limit } => write!(
                f,
                "the map is {bytes} bytes of text; the kernel takes less than {limit} bytes in \
                 one write: use fewer, larger ranges"
            ),
            Error::NoAccount { uid } => {
                write!(
                    f,
                    "cannot determine your user name: uid {uid} has no passwd entry"
                )
            }
            Error::WrongGroup { gid, primary } => write!(
                f,
                "your real gid {gid} is not your primary gid {primary} from the passwd \
                 database (as with shadow's helpers): run it without newgrp/sg"
            ),
            Error::NotPrivileged { kind } => {
                let cap = match kind {
                    MapKind::Uid => "cap_setuid",
                    MapKind::Gid => "cap_setgid",
                };
                write!(
                    f,
                    "{cap} is not available to this program: an administrator must install it \
                     setuid root (install -m 4755 -o root) or with `setcap {cap}+ep`"
                )
            }
            Error::Target { pid, problem } => write!(f, "target process {pid}: {problem}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

/// Caller-supplied bytes made safe to print on one line: escaped, and cut at 64 characters.
pub fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(64).flat_map(char::escape_debug).collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
}
