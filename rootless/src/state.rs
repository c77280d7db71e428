//! Per-user runtime state: `$XDG_RUNTIME_DIR/nook`, or `$TMPDIR/nook-UID` (TMPDIR
//! defaults to /tmp) without one.
//!
//! /tmp is shared: another local user can create `/tmp/nook-1000` first and watch or
//! replace what we put there, or just keep us out. The fallback is used only when it
//! is a directory of ours that nobody else can write or read (0700, ours, not a
//! symlink). A squatted one is never used, nor is nook then unusable: it makes a fresh
//! private directory (`mkdtemp`, `$TMPDIR/nook-UID.XXXXXX`), says so once, and records
//! its path in `$XDG_STATE_HOME/nook/runtime-dir.BOOT_ID` (a file in the user's own
//! home, 0600), where every later command of this boot finds it. The record is keyed by
//! the boot id: /tmp does not survive a reboot, and a home shared by the nodes of a
//! cluster holds one record per node.
//!
//! UID is the caller's uid on the host where /proc/self/uid_map tells it (uid 0 in a
//! `podman unshare` or `unshare -r` namespace is someone else's 0 than another user's),
//! so two users' namespaces never meet at one path.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::Uid;

use crate::error::{Error, Result};

/// The runtime directory nook uses for this user, created if missing.
pub fn runtime_dir() -> Result<PathBuf> {
    let uid = Uid::current().as_raw();
    let (dir, fallback, _) = choose(uid);
    if !fallback {
        ensure_private_dir(&dir, uid)?;
        return Ok(dir);
    }
    match claim_fallback(&dir, uid) {
        Ok(Claim::Created) => Ok(recorded_dir(uid).map_or(dir.clone(), |(recorded, _)| {
            // A private directory recorded earlier in this boot (the fallback was
            // squatted then) holds this user's containers: stay with it.
            let _ = fs::remove_dir(&dir);
            recorded
        })),
        Ok(Claim::Existing) => Ok(dir),
        Err(why) => private_fallback(&dir, uid, &why),
    }
}

/// The runtime directory for `uid`, and why `$XDG_RUNTIME_DIR` was passed over if it was.
/// The second is [`fallback_dir`], which [`runtime_dir`] replaces by a private one
/// when someone else holds it.
pub fn runtime_dir_for(uid: u32) -> (PathBuf, Option<String>) {
    let (dir, _, why) = choose(uid);
    (dir, why)
}

/// The first choice, whether it is the shared-/tmp fallback, and why XDG_RUNTIME_DIR
/// was passed over if it was.
fn choose(uid: u32) -> (PathBuf, bool, Option<String>) {
    let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) else {
        return (fallback_dir(), true, None);
    };
    let xdg = PathBuf::from(xdg);
    let why = match fs::metadata(&xdg) {
        Ok(m) if m.is_dir() && m.uid() == uid => return (xdg.join("nook"), false, None),
        Ok(m) if m.uid() != uid => format!(
            "XDG_RUNTIME_DIR={} belongs to uid {}",
            xdg.display(),
            m.uid()
        ),
        Ok(_) => format!("XDG_RUNTIME_DIR={} is not a directory", xdg.display()),
        Err(e) => format!("XDG_RUNTIME_DIR={}: {}", xdg.display(), e),
    };
    (fallback_dir(), true, Some(why))
}

/// `$TMPDIR/nook-UID`, UID the caller's uid on the host (see the module doc).
pub fn fallback_dir() -> PathBuf {
    std::env::temp_dir().join(format!("nook-{}", host_uid()))
}

/// This process's uid in the parent user namespace, from /proc/self/uid_map (its own
/// uid where there is no map to read, or the uid is unmapped).
pub fn host_uid() -> u32 {
    static HOST_UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *HOST_UID.get_or_init(|| {
        let uid = Uid::current().as_raw();
        let map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        outside_uid(&map, uid).unwrap_or(uid)
    })
}

/// The outside ID of `inside` in a uid_map's text.
fn outside_uid(map: &str, inside: u32) -> Option<u32> {
    map.lines().find_map(|line| {
        let mut f = line.split_whitespace().map(|x| x.parse::<u64>().ok());
        let (start, outside, count) = (f.next()??, f.next()??, f.next()??);
        let inside = u64::from(inside);
        (inside >= start && inside - start < count)
            .then(|| u32::try_from(outside + (inside - start)).ok())
            .flatten()
    })
}

enum Claim {
    Created,
    Existing,
}

/// Creates the shared-/tmp fallback 0700, or accepts an existing one only when it is
/// a directory of ours that nobody else can use; the reason otherwise. Unlike
/// [`ensure_private_dir`], a wider mode is not repaired: whoever could write there
/// may have left something behind.
fn claim_fallback(dir: &Path, uid: u32) -> std::result::Result<Claim, String> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(Claim::Created),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create it: {e}")),
    }
    trusted_dir(dir, uid).map(|()| Claim::Existing)
}

/// Ok when `dir` is a directory (not a symlink) owned by `uid` with no group or other
/// permission bits.
fn trusted_dir(dir: &Path, uid: u32) -> std::result::Result<(), String> {
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    if meta.uid() != uid {
        return Err(format!("it belongs to uid {}", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "its mode is {:04o}, others could have put files there",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// nook's directory for the account's state that outlives a boot: `$XDG_STATE_HOME/nook`
/// (default `~/.local/state/nook`). Not created here.
pub fn state_home() -> Option<PathBuf> {
    let state = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    nix::unistd::User::from_uid(Uid::current())
                        .ok()
                        .flatten()
                        .map(|u| u.dir)
                })?;
            home.join(".local/state")
        }
    };
    Some(state.join("nook"))
}

/// Where the path of a private fallback directory is recorded for this boot:
/// `$XDG_STATE_HOME/nook/runtime-dir.BOOT_ID` (default `~/.local/state/nook`).
pub fn fallback_record() -> Option<PathBuf> {
    let state = state_home()?;
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(state.join(format!("runtime-dir.{}", boot.trim())))
}

/// The private directory recorded for this boot, if the record and the directory are
/// both still ours and private (with the record's path).
fn recorded_dir(uid: u32) -> Option<(PathBuf, PathBuf)> {
    let record = fallback_record()?;
    let meta = fs::symlink_metadata(&record).ok()?;
    if !meta.is_file() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return None;
    }
    let dir = PathBuf::from(fs::read_to_string(&record).ok()?.trim_end());
    (dir.is_absolute() && trusted_dir(&dir, uid).is_ok()).then_some((dir, record))
}

/// The squatted fallback's replacement: the one recorded for this boot, or a fresh
/// private directory, recorded, announced once on stderr.
fn private_fallback(squatted: &Path, uid: u32, why: &str) -> Result<PathBuf> {
    if let Some((dir, _)) = recorded_dir(uid) {
        return Ok(dir);
    }
    let error = |why: String| Error::RuntimeDir {
        path: squatted.into(),
        why,
    };
    let record = fallback_record().ok_or_else(|| {
        error(format!(
            "{why}; no home directory to record a private replacement in: set \
             XDG_RUNTIME_DIR to a private directory of yours"
        ))
    })?;
    let template = format!("{}.XXXXXX", squatted.display());
    let fresh = nix::unistd::mkdtemp(template.as_str())
        .map_err(|e| error(format!("{why}; creating a private replacement: {e}")))?;
    let publish = || -> std::io::Result<bool> {
        if let Some(parent) = record.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let tmp = record.with_extension(format!("tmp{}", std::process::id()));
        write_file(&tmp, fresh.as_os_str().as_encoded_bytes(), PRIVATE_FILE)?;
        // link(2) fails if another command recorded its directory first: then use theirs.
        let won = match fs::hard_link(&tmp, &record) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if recorded_dir(uid).is_some() {
                    false
                } else {
                    // A stale record (its directory was removed): replace it.
                    fs::rename(&tmp, &record)?;
                    true
                }
            }
            Err(e) => return Err(e),
        };
        let _ = fs::remove_file(&tmp);
        Ok(won)
    };
    match publish() {
        Ok(true) => {}
        Ok(false) => {
            let _ = fs::remove_dir(&fresh);
            return recorded_dir(uid)
                .map(|(dir, _)| dir)
                .ok_or_else(|| error(format!("{why}; the recorded replacement vanished")));
        }
        Err(e) => {
            let _ = fs::remove_dir(&fresh);
            return Err(error(format!(
                "{why}; recording a private replacement in {}: {e}",
                record.display()
            )));
        }
    }
    tracing::warn!(
        "{} is not safe to use ({why}): using the private directory {} instead until the \
         next reboot (recorded in {}); set XDG_RUNTIME_DIR to choose one",
        squatted.display(),
        fresh.display(),
        record.display()
    );
    Ok(fresh)
}

/// Creates `dir` 0700 or checks that an existing one is ours and private.
pub fn ensure_private_dir(dir: &Path, uid: u32) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::RuntimeDir {
                path: dir.into(),
                why: format!("cannot create it: {e}"),
            })
        }
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::RuntimeDir {
        path: dir.into(),
        why: e.to_string(),
    })?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(Error::RuntimeDir {
            path: dir.into(),
            why: format!(
                "it exists but is not a directory owned by uid {uid}; someone else may have \
                 created it: remove it, or set XDG_RUNTIME_DIR to a private directory"
            ),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
            Error::RuntimeDir {
                path: dir.into(),
                why: format!("cannot make it private (0700): {e}"),
            }
        })?;
    }
    Ok(())
}

/// Mode of the files nook writes for itself (records, state, logs, markers): the
/// user's alone, whatever the umask.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of the files nook writes for a container to read (its /etc/hosts, hostname,
/// resolv.conf): every user of the container reads them, none but their owner writes.
pub const SHARED_FILE: u32 = 0o644;

/// Creates (or truncates) `path` with exactly `mode`: the umask neither widens nor
/// narrows it (umask 000 would make a default file 0666, umask 077 would hide a
/// container's /etc/hosts from its own users).
pub fn create_file(path: &Path, mode: u32) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// [`create_file`] with `bytes` as its content.
pub fn write_file(path: &Path, bytes: impl AsRef<[u8]>, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    create_file(path, mode)?.write_all(bytes.as_ref())
}

/// Creates the directory `path` (and missing parents) with exactly `mode`.
pub fn create_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// A container's own directory under the runtime dir; removed on drop when `remove` is
/// set (`--rm`).
pub struct ContainerDir {
    pub path: PathBuf,
    pub remove: bool,
}

impl ContainerDir {
    pub fn create(runtime_dir: &Path, id: &str, remove: bool) -> Result<ContainerDir> {
        let path = runtime_dir.join("containers").join(id);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::RuntimeDir {
                path: path.clone(),
                why: format!("cannot create the container's directory: {e}"),
            })?;
        Ok(ContainerDir { path, remove })
    }
}

impl Drop for ContainerDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_uid_from_the_map() {
        assert_eq!(
            outside_uid("         0          0 4294967295\n", 1000),
            Some(1000)
        );
        assert_eq!(
            outside_uid("         0       1000          1\n", 0),
            Some(1000)
        );
        let map = "0 1000 1\n1 100000 65536\n";
        assert_eq!(outside_uid(map, 33), Some(100032));
        assert_eq!(outside_uid(map, 70000), None);
        assert_eq!(outside_uid("", 5), None);
    }

    #[test]
    fn an_untrusted_fallback_says_why() {
        let uid = Uid::current().as_raw();
        let dir = std::env::temp_dir().join(format!("nook-state-test-{}", std::process::id()));
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let wide = trusted_dir(&dir, uid).unwrap_err();
        assert!(wide.contains("0777"), "{wide}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        trusted_dir(&dir, uid).unwrap();
        let foreign = trusted_dir(&dir, uid.wrapping_add(1)).unwrap_err();
        assert!(foreign.contains("belongs to uid"), "{foreign}");
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn refuses_a_directory_owned_by_someone_else() {
        let uid = Uid::current().as_raw();
        // /proc is a directory owned by root: for a non-root uid it is "someone else's".
        let result = ensure_private_dir(Path::new("/proc"), uid.wrapping_add(1));
        assert!(matches!(result, Err(Error::RuntimeDir { .. })));
    }
}
