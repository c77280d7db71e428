//! Where nook keeps the user's images and settings (XDG base directories).
//!
//! Store: `--root`, else `$NOOK_ROOT`, else `$XDG_DATA_HOME/nook`, else
//! `~/.local/share/nook`. Settings (registries.conf, auth.json): `$XDG_CONFIG_HOME/nook`,
//! else `~/.config/nook`.
//!
//! A store or state directory is the caller's own: `--root`, `NOOK_ROOT` or a runtime
//! root naming another account's directory is refused ([`check_own_dir`]) before any file
//! in it is read, so nook never lists, follows or acts on another account's containers,
//! whatever that directory's modes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a directory nook keeps its own data in cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error(
        "{what} {path} belongs to uid {owner}, not to you (uid {uid}): nook does not use \
         another account's files; {hint}"
    )]
    NotYours {
        what: &'static str,
        path: PathBuf,
        owner: u32,
        uid: u32,
        hint: &'static str,
    },
    #[error("{what} {path} is not a directory; {hint}")]
    NotADirectory {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    // Not a `source`: the message carries it, and a chain printer would repeat it.
    #[error("{what} {path} cannot be used: {error}; {hint}")]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
        hint: &'static str,
    },
}

/// Checks that `path`, if it exists, is a directory owned by this process's effective
/// uid, and takes group and other access away from it (nook creates these directories
/// 0700; one made beforehand with the umask's modes is made private too). Returns
/// whether it exists. `what` names it in errors ("image store"), `hint` says what to do.
/// The owner is checked through the path as given, symlinks followed: what counts is
/// whose directory nook would read.
pub fn check_own_dir(
    path: &Path,
    what: &'static str,
    hint: &'static str,
) -> Result<bool, DirError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => {
            return Err(DirError::Io {
                what,
                path: path.to_path_buf(),
                error,
                hint,
            })
        }
    };
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(DirError::NotYours {
            what,
            path: path.to_path_buf(),
            owner: meta.uid(),
            uid,
            hint,
        });
    }
    if !meta.is_dir() {
        return Err(DirError::NotADirectory {
            what,
            path: path.to_path_buf(),
            hint,
        });
    }
    if meta.mode() & 0o077 != 0 {
        let private = std::fs::Permissions::from_mode(meta.mode() & 0o7700);
        std::fs::set_permissions(path, private).map_err(|error| DirError::Io {
            what,
            path: path.to_path_buf(),
            error,
            hint,
        })?;
    }
    Ok(true)
}

/// What [`check_own_dir`] tells the user to do about a store that is not theirs.
pub const STORE_HINT: &str =
    "use a store of your own (--root DIR or NOOK_ROOT, default ~/.local/share/nook)";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_fine_and_left_missing() {
        let dir = std::env::temp_dir().join(format!("nook-paths-missing-{}", std::process::id()));
        assert!(!check_own_dir(&dir, "image store", STORE_HINT).unwrap());
        assert!(!dir.exists());
    }

    #[test]
    fn an_own_directory_is_made_private() {
        let dir = std::env::temp_dir().join(format!("nook-paths-own-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_own_dir(&dir, "image store", STORE_HINT).unwrap());
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o7777;
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn another_accounts_directory_is_refused_with_the_reason() {
        // The root directory belongs to root: for any other account it is someone
        // else's (run as root, there is nothing of another account to point at).
        if nix::unistd::geteuid().is_root() {
            return;
        }
        let err = check_own_dir(Path::new("/"), "image store", STORE_HINT).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DirError::NotYours { owner: 0, .. }), "{msg}");
        assert!(msg.contains("image store / belongs to uid 0"), "{msg}");
        assert!(msg.contains("--root"), "{msg}");
    }

    #[test]
    fn a_file_is_not_a_store() {
        let file = std::env::temp_dir().join(format!("nook-paths-file-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let err = check_own_dir(&file, "image store", STORE_HINT).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(err, DirError::NotADirectory { .. }), "{err}");
    }
}
