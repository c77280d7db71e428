//! `nook completion SHELL` and `nook __man DIR`: shell completion scripts (clap_complete)
//! and man pages (clap_mangen), both generated at run time from the live clap definition
//! (`Cli::command()`), so every command and flag added to flags.rs is included without a
//! second list to keep in step. A build script cannot do this without compiling flags.rs
//! twice; packagers run `nook __man DIR` and `nook completion SHELL` after the build.
//!
//! Internal commands (`__store-helper`, `__fuse-server`, `__man`: hidden, re-executed by
//! nook itself) are left out of both: clap_complete would otherwise offer them.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use clap_complete::Shell;

use crate::flags::Cli;

/// The command tree a user sees: the root command rebuilt with its hidden subcommands
/// dropped (clap has no way to remove a subcommand in place).
fn public_command() -> Command {
    let full = Cli::command();
    let mut cmd = Command::new("nook")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .args(full.get_arguments().cloned())
        .subcommands(
            full.get_subcommands()
                .filter(|s| !s.is_hide_set() && !s.get_name().starts_with("__"))
                .cloned(),
        );
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(long) = full.get_long_about() {
        cmd = cmd.long_about(long.clone());
    }
    cmd
}

/// Writes the completion script for `shell` to `out`.
pub fn completion(shell: Shell, out: &mut dyn Write) -> Result<()> {
    let mut cmd = public_command();
    clap_complete::generate(shell, &mut cmd, "nook", out);
    Ok(())
}

/// `nook completion SHELL`: the script on stdout.
pub fn completion_cmd(shell: Shell) -> Result<i32> {
    // Generated into memory first: clap_complete panics on a write error, and a reader
    // that stops early (`| head`) is not a failure.
    let mut script = Vec::new();
    completion(shell, &mut script)?;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the completion script")
        }
        _ => Ok(0),
    }
}

/// `nook __man DIR`: nook.1 and one page per command (nook-run.1, nook-system-check.1…).
pub fn man_cmd(dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(public_command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    tracing::debug!("man pages written to {}", dir.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        completion(shell, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bash_script_has_commands_not_internals() {
        let bash = script(Shell::Bash);
        assert!(bash.contains("run"), "{bash}");
        assert!(bash.contains("images") && bash.contains("completion"));
        assert!(bash.contains("--storage-driver") && bash.contains("--log-level"));
        assert!(!bash.contains("__store-helper") && !bash.contains("__man"));
        for shell in [Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            assert!(s.contains("run") && !s.contains("__fuse-server"), "{shell}");
        }
    }

    #[test]
    fn man_pages_one_per_command() {
        let dir = std::env::temp_dir().join(format!("nook-man-test-{}", std::process::id()));
        man_cmd(&dir).unwrap();
        let page = std::fs::read_to_string(dir.join("nook-run.1")).unwrap();
        assert!(page.contains("storage\\-driver"), "{page}");
        assert!(dir.join("nook.1").exists());
        assert!(dir.join("nook-system-check.1").exists());
        assert!(!dir.join("nook-__store-helper.1").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
