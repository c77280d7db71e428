//! Container root filesystems: where the files a container sees come from.
//!
//! - the built-in `host` image ([`host_image`]) and `--rootfs` directories ([`rootfs_dir`]);
//! - images: references ([`reference`]), the registry client ([`registry`], [`auth`]),
//!   manifests and configs ([`manifest`]), the content store ([`store`]), pulls
//!   ([`pull`]), archives ([`archive`]: import, load, save);
//! - layer unpack ([`unpack`], confined by [`at`]) and the copy driver that stacks
//!   layers into a container root ([`flatten`]) until the union drivers exist;
//! - what a full disk is reported as ([`space`]).

pub mod archive;
pub use nook_at as at;
pub mod auth;
pub mod digest;
pub mod flatten;
pub mod host_image;
pub mod manifest;
pub mod owner;
pub mod paths;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs_dir;
pub mod space;
pub mod store;
pub mod union;
pub mod unpack;
