//! Where nook keeps the user's images and settings (XDG base directories).
//!
//! Store: `--root`, else `$NOOK_ROOT`, else `$XDG_DATA_HOME/nook`, else
//! `~/.local/share/nook`. Settings (registries.conf, auth.json): `$XDG_CONFIG_HOME/nook`,
//! else `~/.config/nook`.

use std::path::PathBuf;

fn home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
}

fn xdg(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        // The XDG spec says relative values are to be ignored.
        Some(v) if PathBuf::from(&v).is_absolute() => Some(PathBuf::from(v)),
        _ => home().map(|h| h.join(fallback)),
    }
}

/// The store root, given the `--root` flag if any.
pub fn store_root(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| {
        std::env::var_os("NOOK_ROOT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .or_else(|| xdg("XDG_DATA_HOME", ".local/share").map(|d| d.join("nook")))
}

/// nook's settings directory.
pub fn config_dir() -> Option<PathBuf> {
    xdg("XDG_CONFIG_HOME", ".config").map(|d| d.join("nook"))
}

/// The home directory (for `~/.docker/config.json`).
pub fn home_dir() -> Option<PathBuf> {
    home()
}
