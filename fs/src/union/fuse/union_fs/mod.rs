//! The union filesystem behind the FUSE driver: overlayfs semantics over plain layer
//! directories, answering the kernel's requests through `fuser`.
//!
//! Confinement (the invariant of beneath.rs): the server never resolves a path. Each
//! layer is held open as a directory descriptor; every other file is reached from it one
//! name at a time with O_NOFOLLOW, through the descriptors of the directories on the way
//! (cached, see below), and acted on through its parent's descriptor without following a
//! final symlink, or through a descriptor of its own. A symlink in a layer is data, never
//! a path the server follows, whatever a container plants or swaps.
//!
//! Nodes follow the kernel's view of open files. A node (one per inode the kernel knows)
//! records the parent and name it was last looked up as, the topmost layer holding it,
//! for a directory the layers that make up its merged view (cut at an opaque directory
//! or a whiteout), and its file type. When the name a node is recorded under stops
//! naming it (unlink, rmdir, a rename over it), the node is detached: it keeps an O_PATH
//! descriptor of its inode, opened before the name went, and from then on is reached
//! only through it, as the kernel still reaches it through open files, until the kernel
//! forgets it or finds it again under another name (a hard link). Operations on an open
//! file (read, write, fsync, fallocate, lseek, ftruncate, getattr with a handle) use the
//! descriptor opened at OPEN time. Namespace changes (unlink, rmdir, rename) hold the
//! tree lock exclusively, everything that resolves a record holds it shared, so a record
//! is always the name the layers hold. Node IDs are never reused; hardlinks are one
//! node, found again by the (device, inode) of the underlying file.
//!
//! Directory descriptors are cached per (node, layer), at most a quarter of
//! RLIMIT_NOFILE: a lookup is one fstatat on the parent's descriptor. A miss reopens
//! the directory from its parent's, up to the layer root.
//!
//! Round trips to the kernel cost more than anything done here, so the kernel is let
//! cache entries, attributes and misses (negative entries) for 10 s, FLUSH is
//! declined once, and a new entry is answered from the stat of what was just made.
//!
//! Reads and writes go straight to the open upper or lower file (pread/pwrite on the
//! handle, no lock taken). Opening for write, and any metadata change, first copies the
//! file up: data (reflink or sparse copy_file_range) into `work/`, then owner, mode,
//! xattrs and times, then an atomic rename into the upper layer, after the parent
//! directories were copied up the same way; a detached file is copied to an unnamed
//! file. Deleting a name that a lower layer still has leaves a whiteout; a directory
//! created where a lower one was deleted is marked opaque; renaming a directory that is
//! not purely in the upper layer is EXDEV, as in overlayfs with `userxattr` (no
//! redirect_dir).
//!
//! Directory listings: a directory of one layer is streamed from that layer (offsets
//! are the filesystem's own; a handle holds a descriptor and 4 KiB read ahead at most);
//! a merged one is read once into a listing shared by every handle opened while the
//! directory is unchanged, all listings together at most 64 MiB (beyond it opendir
//! fails with ENOMEM).
//!
//! The files, each depending only on those above it (no import cycle):
//! * `attr`: errno plumbing, file types and reply attributes from a layer file's stat;
//! * `nodes`: the inode table (nodes, keys, the directory descriptor cache);
//! * `layers`: the layers held open, the tree lock, reaching a node and resolving a
//!   name through a merged directory (whiteouts, opaque directories);
//! * `copy_up`: making a file or directory the upper layer's;
//! * `listing`: directory handles, streamed or merged and shared;
//! * `namespace`: new entries, unlink, rmdir and rename;
//! * `handlers`: [`UnionFs`] and the FUSE requests, each answered with the above.

mod attr;
mod copy_up;
mod handlers;
mod layers;
mod listing;
mod namespace;
mod nodes;

pub use handlers::UnionFs;
