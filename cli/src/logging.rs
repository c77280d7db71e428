//! `--log-level` / `$NOOK_LOG`: nook's diagnostics through `tracing`, written to stderr
//! (stdout carries command output only). The default, warn, keeps ordinary runs quiet.
//!
//! The level is also exported as `$NOOK_LOG`, so the processes nook re-executes itself as
//! (`__store-helper`, `__fuse-server`, ...: they skip the config file) log at the same level.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;

/// `--log-level`: how much nook tells on stderr (through `tracing`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Installs the stderr subscriber; call once, early in main, while single-threaded
/// (it sets an environment variable).
pub fn init(level: Option<LogLevel>) {
    let level = level.unwrap_or(LogLevel::Warn);
    let _ = LEVEL.set(level);
    // Warn is what a helper gets without the variable; leaving it unset keeps it out of
    // the environment `nook unshare` hands on.
    if level == LogLevel::Warn {
        std::env::remove_var("NOOK_LOG");
    } else {
        std::env::set_var("NOOK_LOG", level.name());
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(level.filter())
        .try_init();
}

/// The level [`init`] installed.
static LEVEL: OnceLock<LogLevel> = OnceLock::new();

/// Shows a notice that would be the same on every run (the single-ID map's reason and
/// fix): at the default level once per account, every time at `--log-level info` or
/// more, never at `error`. A CI job of 20 runs shows it once, not 20 times.
///
/// "Once" is a marker `NAME` holding the text in the account's state directory
/// (`$XDG_STATE_HOME/nook`), created exclusively, so runs started at the same moment
/// agree on which one speaks; a changed text is shown again. Where that directory
/// cannot be written (a read-only HOME) the marker goes to `fallback` (the runtime
/// directory: once per boot).
pub fn notice_once_per_account(name: &str, text: &str, fallback: Option<&Path>) {
    match LEVEL.get().copied().unwrap_or(LogLevel::Warn) {
        LogLevel::Error => return,
        LogLevel::Warn => {}
        LogLevel::Info | LogLevel::Debug | LogLevel::Trace => {
            eprintln!("nook: {text}");
            return;
        }
    }
    let dirs = nook_rootless::state::state_home()
        .into_iter()
        .chain(fallback.map(Path::to_path_buf));
    for dir in dirs {
        match first_to_mark(&dir, name, text) {
            Ok(true) => break,
            Ok(false) => return,
            Err(e) => tracing::debug!("notice marker in {}: {e}", dir.display()),
        }
    }
    eprintln!("nook: {text}");
}

/// Whether this process is the one to show `text`: it marked it first. Ok(false) when the
/// marker already holds the same text.
fn first_to_mark(dir: &Path, name: &str, text: &str) -> std::io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let marker = dir.join(name);
    match std::fs::read_to_string(&marker) {
        Ok(seen) if seen == text => return Ok(false),
        Ok(_) => {
            // Changed since: replace it whole, and show the new text.
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            nook_rootless::state::write_file(&tmp, text, nook_rootless::state::PRIVATE_FILE)?;
            std::fs::rename(&tmp, &marker)?;
            return Ok(true);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    nook_rootless::state::create_dir(dir, 0o700)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(nook_rootless::state::PRIVATE_FILE)
        .open(&marker)
    {
        Ok(mut f) => {
            f.write_all(text.as_bytes())?;
            Ok(true)
        }
        // Another run created it a moment ago, and speaks.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}
