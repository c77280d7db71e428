//! `--log-level` / `$NOOK_LOG`: nook's diagnostics through `tracing`, written to stderr
//! (stdout carries command output only). The default, warn, keeps ordinary runs quiet.
//!
//! The level is also exported as `$NOOK_LOG`, so the processes nook re-executes itself as
//! (`__store-helper`, `__fuse-server`, ...: they skip the config file) log at the same level.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;

use crate::flags::LogLevel;

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
