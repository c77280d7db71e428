//! apt's download sandbox in containers whose ID map cannot hold it.
//!
//! apt (Debian, Ubuntu) runs its download methods as the user `_apt`: started as root it
//! calls setgroups, setegid and seteuid to `_apt`'s IDs and stops with
//! `setgroups 65534 failed` when that is refused, which it is under a single-ID map (an
//! account without subordinate IDs, or `--uidmap 0:0:1`): the kernel denies setgroups
//! there and `_apt`'s IDs are not mapped. In such a map the sandbox could not separate
//! anything anyway: every ID the container can take is the same user outside. So nook
//! binds a read-only apt.conf.d snippet, `APT::Sandbox::User "root";`, into those
//! containers, into images that have apt's user and configuration directory only. It is
//! a mount, like /etc/hosts: not part of the container's changes (`nook diff`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nook_rootless::idmap::{self, Mapping};
use nook_rootless::state::{write_file, SHARED_FILE};

use crate::users;

/// Where the snippet is bound: read after the image's own files of apt.conf.d (the parts
/// are read in name order, a later setting wins).
pub const DEST: &str = "/etc/apt/apt.conf.d/99nook-sandbox-user";

/// apt's default sandbox user (`APT::Sandbox::User`).
const APT_USER: &str = "_apt";

const SNIPPET: &str = "\
// Bound here by nook, read-only; not part of the image or the container's changes.
// This container has a single-ID map (or apt's sandbox user _apt is not mapped), so
// apt could not switch to _apt (\"setgroups 65534 failed\"); it downloads as root
// instead. Every ID this container can take is the same user outside it, so the
// sandbox would separate nothing here.
APT::Sandbox::User \"root\";
";

/// Whether a container with `ids`, whose image reads as `root` before it starts, needs
/// the snippet: the image has apt's user and apt.conf.d, and the map cannot hold that
/// user (its IDs unmapped, or setgroups denied by a single-ID gid map).
pub fn needed(root: &Path, ids: &Mapping) -> bool {
    let single_gid = ids.gid_map.len() == 1 && ids.gid_map[0].count == 1;
    // The common case costs nothing: a full map holds every ID a distribution gives
    // apt's user (below 65536) and allows setgroups.
    let covers = |map: &[idmap::IdRange]| {
        map.iter()
            .any(|r| r.inside == 0 && u64::from(r.count) >= 65536)
    };
    if !single_gid && covers(&ids.uid_map) && covers(&ids.gid_map) {
        return false;
    }
    let Some((uid, gid)) = users::user_ids(root, APT_USER) else {
        return false;
    };
    let usable =
        !single_gid && idmap::is_mapped(&ids.uid_map, uid) && idmap::is_mapped(&ids.gid_map, gid);
    !usable && has_conf_dir(root)
}

/// etc/apt/apt.conf.d, resolved inside the root by the confined resolver.
fn has_conf_dir(root: &Path) -> bool {
    let Ok(r) = nook_fs::at::Root::open_container(root) else {
        return false;
    };
    r.open_in(
        Path::new("etc/apt/apt.conf.d"),
        libc::O_PATH | libc::O_DIRECTORY,
    )
    .is_ok()
}

/// Writes the snippet into the container's directory; the path to bind on [`DEST`].
pub fn write(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("apt-sandbox-user.conf");
    write_file(&path, SNIPPET, SHARED_FILE)
        .with_context(|| format!("writing {}", path.display()))?;
    // Readable by every ID in the container (SHARED_FILE is the same mode; kept explicit
    // because apt reads it as whoever runs apt).
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nook_rootless::idmap::IdRange;

    fn map(ranges: &[(u32, u32, u32)]) -> Vec<IdRange> {
        ranges
            .iter()
            .map(|&(inside, outside, count)| IdRange {
                inside,
                outside,
                count,
            })
            .collect()
    }

    fn mapping(uid: &[(u32, u32, u32)], gid: &[(u32, u32, u32)]) -> Mapping {
        Mapping {
            uid_map: map(uid),
            gid_map: map(gid),
            notice: None,
        }
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "nook-apt-sandbox-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn image(passwd: &str, conf_dir: bool) -> Scratch {
        let d = Scratch::new();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        if conf_dir {
            std::fs::create_dir_all(d.path().join("etc/apt/apt.conf.d")).unwrap();
        }
        d
    }

    const DEBIAN: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          _apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n";

    #[test]
    fn single_id_map_of_a_debian_image_needs_it() {
        let d = image(DEBIAN, true);
        let single = mapping(&[(0, 1000, 1)], &[(0, 1000, 1)]);
        assert!(needed(d.path(), &single));
    }

    #[test]
    fn full_map_does_not() {
        let d = image(DEBIAN, true);
        let full = mapping(
            &[(0, 1000, 1), (1, 100000, 65536)],
            &[(0, 1000, 1), (1, 100000, 65536)],
        );
        assert!(!needed(d.path(), &full));
    }

    #[test]
    fn a_map_without_apts_ids_needs_it() {
        let d = image(DEBIAN, true);
        // uid 42 is mapped, gid 65534 is not; setgroups is allowed (several gids).
        let partial = mapping(
            &[(0, 1000, 1), (1, 100000, 100)],
            &[(0, 1000, 1), (1, 100000, 100)],
        );
        assert!(needed(d.path(), &partial));
        let holds = mapping(
            &[(0, 1000, 1), (1, 100000, 100)],
            &[(0, 1000, 1), (1, 100000, 65535)],
        );
        assert!(!needed(d.path(), &holds));
    }

    #[test]
    fn images_without_apt_do_not() {
        let single = mapping(&[(0, 1000, 1)], &[(0, 1000, 1)]);
        let no_user = image("root:x:0:0:root:/root:/bin/sh\n", true);
        assert!(!needed(no_user.path(), &single));
        let no_dir = image(DEBIAN, false);
        assert!(!needed(no_dir.path(), &single));
    }

    #[test]
    fn a_symlinked_conf_dir_is_not_followed_out_of_the_root() {
        let d = image(DEBIAN, false);
        std::fs::create_dir_all(d.path().join("etc/apt")).unwrap();
        let outside = Scratch::new();
        std::os::unix::fs::symlink(outside.path(), d.path().join("etc/apt/apt.conf.d")).unwrap();
        let single = mapping(&[(0, 1000, 1)], &[(0, 1000, 1)]);
        assert!(!needed(d.path(), &single));
    }
}
