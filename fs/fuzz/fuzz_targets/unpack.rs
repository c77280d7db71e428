//! Hostile layer tarballs through the unpacker (`nook_fs::unpack::unpack_tar`, the code
//! every pull and load runs) on a scratch directory. Beyond "no panic": nothing is ever
//! created outside the layer's root. The scratch holds `root/` (the layer) and
//! `outside/` (a canary a symlink in the layer may point at: `../outside`, or its
//! absolute path); after each input `outside/` must still be empty and the scratch hold
//! nothing else.
//!
//! It runs as the root of a user namespace with a single-ID map, as the store helper
//! does (chown works for uid 0, other owners are squashed): start it under
//! `unshare --map-root-user` as an unprivileged user (bench/fuzz.sh does, as `nobody`
//! when started as root), so a bug here cannot write the host's files. libFuzzer's own
//! threads are running before the first input, too late for unshare(CLONE_NEWUSER).
#![no_main]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// The scratch directory, made once.
fn scratch() -> &'static Path {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let full = map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        assert!(
            !full,
            "run the unpack target as an unprivileged user under `unshare --map-root-user` \
             (bench/fuzz.sh does): it writes files"
        );
        let dir = std::env::temp_dir().join(format!("nook-fuzz-unpack-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("create the scratch directory");
        dir
    })
}

/// Everything under `dir` made writable again (layers may hold 0000 directories).
fn remove_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o700));
                remove_tree(&p);
            }
        }
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let _ = fs::remove_dir_all(dir);
}

fuzz_target!(|data: &[u8]| {
    let scratch = scratch();
    let root = scratch.join("root");
    let outside = scratch.join("outside");
    fs::create_dir(&root).expect("create root");
    fs::create_dir(&outside).expect("create outside");
    let _ = nook_fs::unpack::unpack_tar(data, &root);
    let escaped: Vec<_> = fs::read_dir(&outside)
        .expect("read outside")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(escaped.is_empty(), "the layer wrote {escaped:?} outside its root");
    let mut names: Vec<_> = fs::read_dir(scratch)
        .expect("read scratch")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [OsStr::from_bytes(b"outside"), OsStr::from_bytes(b"root")],
        "the layer wrote beside its root"
    );
    remove_tree(&root);
    let _ = fs::remove_dir(&outside);
});
