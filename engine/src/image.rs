//! Images for containers: what a container's root is made from.

use std::path::PathBuf;

use nook_fs::store::{ImageRecord, Store};

/// What `nook run IMAGE` needs: the record and the layer directories, lowest first.
pub struct RunImage {
    pub record: ImageRecord,
    pub layers: Vec<PathBuf>,
    pub store: Store,
}
