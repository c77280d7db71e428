//! The helpers' main: the fixed order in which the pieces run, and the only place that knows
//! the real paths (/etc/subuid, /etc/subgid; /proc in [`crate::target`]).
//!
//! Order, and why (privilege states are described in [`crate::privilege`]):
//! 1. sanitize the process (environment, fds) and install a panic hook, so that even a bug
//!    ends with status 1 and one line, like every other failure;
//! 2. parse argv — pure, before anything is opened;
//! 3. read the subordinate-id file as root (fixed path, as shadow does);
//! 4. drop to the caller, keeping one capability, not effective;
//! 5. look up the caller, open and check the target, decide on the ranges;
//! 6. for gid maps relying only on the caller's own gid, deny setgroups;
//! 7. write the map with the capability effective, then drop it.
//!
//! Any error stops the sequence: the map is written last, so a refusal never leaves a partial
//! map (the kernel takes a map in one write, or not at all).

use crate::args::{self, Request};
use crate::error::Error;
use crate::passwd::{self, Account};
use crate::privilege::{self, RealIds};
use crate::subid::{self, SubidFile};
use crate::sys;
use crate::target::Target;
use crate::validate::{self, Grant, Policy};
use crate::MapKind;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;

/// Larger subordinate-id files are refused rather than read without bound.
const SUBID_FILE_LIMIT: u64 = 64 << 20;
/// Malformed-line warnings shown before summarizing the rest.
const MAX_WARNINGS: usize = 10;

/// The whole program for one kind; each binary's main is a call to this.
pub fn main_entry(kind: MapKind) -> ! {
    privilege::sanitize_process();
    install_panic_hook(kind);
    let args: Vec<Vec<u8>> = std::env::args_os()
        .skip(1)
        .map(OsStringExt::into_vec)
        .collect();
    let code = match run(kind, &args) {
        Ok(()) => 0,
        Err(err) => {
            say(kind, &err.to_string());
            1
        }
    };
    std::process::exit(code)
}

/// Steps 2-7.
fn run(kind: MapKind, args: &[Vec<u8>]) -> Result<(), Error> {
    let ids = privilege::real_ids();
    let request = args::parse_args(args)?;
    let subid_text = read_subid_file(kind)?;
    let caps = privilege::needed_caps(kind, &request.ranges);
    let held = privilege::drop_to_caller(ids, kind, caps)?;

    let account = caller_account(ids)?;
    let target = Target::open(request.pid)?;
    target.verify_owner(ids.uid, ids.gid)?;
    target.verify_userns(ids.uid)?;
    let grant = decide(kind, ids, &account, &request, &subid_text)?;
    target.verify_map_unset(kind)?;
    if kind == MapKind::Gid && !grant.from_subordinate {
        if let Some(warning) = target.deny_setgroups()? {
            say(kind, &format!("warning: {warning}"));
        }
    }
    let text = validate::map_text(&request.ranges);
    held.use_once(|| target.write_map(kind, &text))
}

/// The caller's passwd entry; like shadow, the real gid must be the primary one.
fn caller_account(ids: RealIds) -> Result<Account, Error> {
    let account = passwd::lookup(ids.uid)?;
    if account.gid != ids.gid {
        return Err(Error::WrongGroup {
            gid: ids.gid,
            primary: account.gid,
        });
    }
    Ok(account)
}

/// Parses the subordinate-id file (warning about ignored lines) and validates the request.
fn decide(
    kind: MapKind,
    ids: RealIds,
    account: &Account,
    request: &Request,
    subid_text: &[u8],
) -> Result<Grant, Error> {
    let file = subid::parse(subid_text);
    warn_malformed(kind, &file);
    // Numeric owners are the uid in both files, as in shadow.
    let coverage = subid::coverage_for(&file, &account.name, ids.uid);
    let policy = Policy {
        kind,
        own_id: match kind {
            MapKind::Uid => ids.uid,
            MapKind::Gid => ids.gid,
        },
        coverage: &coverage,
        page_size: sys::page_size(),
    };
    validate::validate(&request.ranges, &policy)
}

/// The subordinate-id file's bytes; a missing file grants nothing (the caller's own id can
/// still be mapped).
fn read_subid_file(kind: MapKind) -> Result<Vec<u8>, Error> {
    let path = kind.subid_path();
    let io_error = |source| Error::Io {
        what: format!("reading {path}"),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(e)),
    };
    let mut text = Vec::new();
    file.take(SUBID_FILE_LIMIT + 1)
        .read_to_end(&mut text)
        .map_err(io_error)?;
    if text.len() as u64 > SUBID_FILE_LIMIT {
        return Err(io_error(io::Error::other("larger than 64 MiB")));
    }
    Ok(text)
}

fn warn_malformed(kind: MapKind, file: &SubidFile<'_>) {
    for bad in file.malformed.iter().take(MAX_WARNINGS) {
        say(
            kind,
            &format!(
                "warning: {} line {} ignored: {}",
                kind.subid_path(),
                bad.line,
                bad.reason
            ),
        );
    }
    if file.malformed.len() > MAX_WARNINGS {
        let more = file.malformed.len() - MAX_WARNINGS;
        say(
            kind,
            &format!(
                "warning: {more} more malformed lines ignored in {}",
                kind.subid_path()
            ),
        );
    }
}

/// One line on stderr, prefixed with the program name. Errors writing it are ignored: there
/// is nowhere else to report them, and the exit status still says what happened.
fn say(kind: MapKind, message: &str) {
    let line = format!("{}: {message}\n", kind.program());
    let _ = io::stderr().write_all(line.as_bytes());
}

/// A panic (a bug) still ends with status 1 and one line, never an abort status or a
/// backtrace (the environment that would enable one is cleared anyway).
fn install_panic_hook(kind: MapKind) {
    std::panic::set_hook(Box::new(move |info| {
        let message = info.to_string().replace('\n', " ");
        say(kind, &format!("internal error: {message}"));
        sys::exit_now(1);
    }));
}
