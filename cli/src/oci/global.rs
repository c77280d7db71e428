//! What every `nook oci` subcommand shares: runc's global flags, and where output,
//! debug notes, warnings and errors go (stdout, stderr, and the `--log` file in runc's
//! text or JSON format, which conmon and containerd's shim read).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// runc's global flags.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Directory for the containers' state (default: nook's runtime dir + /oci)
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Also write errors to this file (conmon and containerd read it)
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of the --log file
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Accepted for runc compatibility: cgroups are created through nook's own
    /// delegated-subtree logic, which asks systemd for a scope where needed
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Write debug notes to stderr / the log
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility; checkpointing is not supported
    #[arg(long, global = true, value_name = "PATH", hide = true)]
    pub criu: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One line of output on stdout; a reader that went away (`| head`) is not an error.
pub fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Debug notes (`--debug`): to stderr and to the log file.
pub fn debug(global: &Global, msg: &str) {
    if global.debug {
        eprintln!("nook: {msg}");
        log_line(global, "debug", msg);
    }
}

/// A failure that does not fail the operation (a poststop hook, say).
pub fn report_warning(global: &Global, msg: &str) {
    eprintln!("nook: warning: {msg}");
    log_line(global, "warning", msg);
}

pub fn report_error(global: &Global, e: &anyhow::Error) {
    let msg = crate::errors::Chain(e).to_string();
    eprintln!("nook: {msg}");
    log_line(global, "error", &msg);
}

/// One line in runc's log formats (logrus text, or JSON objects that conmon parses).
fn log_line(global: &Global, level: &str, msg: &str) {
    let Some(path) = &global.log else { return };
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let line = match global.log_format {
        LogFormat::Json => {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string() + "\n"
        }
        LogFormat::Text => format!("time=\"{time}\" level={level} msg={msg:?}\n"),
    };
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .mode(0o600)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
