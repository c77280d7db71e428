//! Filesystem types by their statfs magic number: the name a message shows, and whether
//! the filesystem is a network or cluster one, where a container's writable layer cannot
//! live (no user xattrs or whiteout devices for overlayfs, root squash, locking and
//! O_TMPFILE semantics of their own: the usual trouble with HPC home directories). One
//! table, so `nook info` (rootless's probe) and `nook run` (fs's choice of where the
//! writable layers go) agree.
//!
//! The numbers are the kernel's (include/uapi/linux/magic.h, and each out-of-tree
//! filesystem's own header for Lustre, GPFS and BeeGFS).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One known filesystem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsType {
    pub magic: u32,
    /// The type's name as /proc/self/mounts shows it.
    pub name: &'static str,
    /// A network or cluster filesystem: no place for writable layers.
    pub network: bool,
}

const fn local(magic: u32, name: &'static str) -> FsType {
    FsType {
        magic,
        name,
        network: false,
    }
}

const fn network(magic: u32, name: &'static str) -> FsType {
    FsType {
        magic,
        name,
        network: true,
    }
}

/// The types nook names; any other is shown in hex and taken as local.
pub const TABLE: &[FsType] = &[
    local(0xEF53, "ext4"),
    local(0x5846_5342, "xfs"),
    local(0x9123_683E, "btrfs"),
    local(0x0102_1994, "tmpfs"),
    local(0x794C_7630, "overlay"),
    local(0x2FC1_2FC1, "zfs"),
    local(0x6573_5546, "fuse"),
    network(0x6969, "nfs"),
    network(0x0BD0_0BD0, "lustre"),
    network(0x4750_4653, "gpfs"),
    network(0x00C3_6400, "ceph"),
    network(0x1983_0326, "beegfs"),
    // SMB (the old smbfs), CIFS and SMB2/3: all mounted as `cifs` (or `smb3`) today.
    network(0x517B, "cifs"),
    network(0xFF53_4D42, "cifs"),
    network(0xFE53_4D42, "cifs"),
];

/// The entry for `magic`, if nook knows the type.
pub fn lookup(magic: u32) -> Option<&'static FsType> {
    TABLE.iter().find(|t| t.magic == magic)
}

/// The type's name, or its magic number in hex.
pub fn name(magic: u32) -> String {
    match lookup(magic) {
        Some(t) => t.name.to_string(),
        None => format!("0x{magic:x}"),
    }
}

/// The network or cluster filesystem `magic` is, if it is one.
pub fn network_name(magic: u32) -> Option<&'static str> {
    lookup(magic).filter(|t| t.network).map(|t| t.name)
}

/// The statfs magic number of the filesystem holding `path` (following symlinks).
pub fn magic_of(path: &Path) -> Option<u32> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain old data, so all-zero is a valid value to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` writable.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // The magic is a 32-bit value in a word-sized field (signed on some targets): keep
    // its low 32 bits.
    Some(st.f_type as u64 as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table itself: a changed or dropped number is a changed verdict for someone's
    /// home directory, so each is listed here once more.
    #[test]
    fn network_filesystems() {
        let network: Vec<(u32, &str)> = TABLE
            .iter()
            .filter(|t| t.network)
            .map(|t| (t.magic, t.name))
            .collect();
        assert_eq!(
            network,
            [
                (0x6969, "nfs"),
                (0x0BD0_0BD0, "lustre"),
                (0x4750_4653, "gpfs"),
                (0x00C3_6400, "ceph"),
                (0x1983_0326, "beegfs"),
                (0x517B, "cifs"),
                (0xFF53_4D42, "cifs"),
                (0xFE53_4D42, "cifs"),
            ]
        );
    }

    #[test]
    fn names_and_verdicts() {
        assert_eq!(name(0xEF53), "ext4");
        assert_eq!(name(0x1234), "0x1234");
        assert_eq!(network_name(0x00C3_6400), Some("ceph"));
        assert_eq!(network_name(0x1983_0326), Some("beegfs"));
        assert_eq!(network_name(0x6969), Some("nfs"));
        assert_eq!(network_name(0xEF53), None);
        assert_eq!(network_name(0x6573_5546), None);
        assert_eq!(network_name(0x1234), None);
        // Every magic number once: lookup finds the entry it is.
        for t in TABLE {
            assert_eq!(
                TABLE.iter().filter(|u| u.magic == t.magic).count(),
                1,
                "{t:?}"
            );
        }
    }

    #[test]
    fn magic_of_a_real_path() {
        // /proc is procfs everywhere (PROC_SUPER_MAGIC), never a network filesystem.
        assert_eq!(magic_of(Path::new("/proc")), Some(0x9fa0));
        assert_eq!(network_name(0x9fa0), None);
        assert_eq!(magic_of(Path::new("/nonexistent/nook")), None);
    }
}
