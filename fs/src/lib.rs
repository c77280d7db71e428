//! Container root filesystems: where the files a container sees come from.
//!
//! Today: the built-in `host` image (no download) and a root filesystem directory given
//! with `--rootfs`. Image references, registry pulls, the content store, layer unpack
//! and the union drivers (overlay, FUSE, copy) are later parts of this crate.

pub mod host_image;
pub mod rootfs_dir;
