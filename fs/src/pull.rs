//! `nook pull`, the download half: reference → manifest → config → layer blobs, all
//! verified into the store. The unpack half runs in the user namespace (the cli's store
//! helper) and the image record is added last, so an interrupted pull never shows a
//! half image.
//!
//! Data path: registry ─(ureq, one connection per thread)→ HashingReader → tmp/ file →
//! rename into blobs/. Layers download in parallel (up to [`PullOptions::jobs`], 6 by
//! default as containers/image), each with its own progress line; a blob already in the
//! store is not fetched again; an interrupted transfer is retried from the start, twice.
//!
//! Two pulls at once (two terminals, a CI job's parallel steps) share their blobs: each
//! blob is downloaded under a lock of its own ([`BlobLock`], `ROOT/locks/blob-HEX`), so
//! the second waits for the first's download and then finds the blob in the store.
//! Different blobs still download in parallel, in one pull or across pulls.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

use crate::digest::Digest;
use crate::manifest::{self, Document, ImageConfig, Platform};
use crate::reference::Reference;
use crate::registry::{Client, ClientOptions, RegistryError};
use crate::store::{ImageRecord, LayerRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reports progress; the cli draws bars, tests and pipes get nothing.
pub trait Progress: Sync {
    /// A blob starts downloading (`size` as the manifest says).
    fn start(&self, digest: &Digest, size: u64) -> Box<dyn BlobProgress + '_>;
    /// A one-line note (a blob already present, a retry).
    fn note(&self, msg: &str);
}

pub trait BlobProgress: Send {
    fn advance(&self, bytes: u64);
    fn restart(&self);
    fn finish(&self, msg: &str);
}

/// Progress that shows nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &Digest, _: u64) -> Box<dyn BlobProgress + '_> {
        Box::new(Quiet)
    }
    fn note(&self, _: &str) {}
}

impl BlobProgress for Quiet {
    fn advance(&self, _: u64) {}
    fn restart(&self) {}
    fn finish(&self, _: &str) {}
}

#[derive(Clone, Debug)]
pub struct PullOptions {
    pub platform: Platform,
    pub client: ClientOptions,
    pub jobs: usize,
}

/// Downloads everything `reference` needs into the store and returns the record to add
/// once its layers are unpacked.
pub fn fetch(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord, PullError> {
    let client = Client::new(
        &reference.registry,
        &reference.repository,
        opts.client.clone(),
    )?;
    let (ct, bytes, digest) = client.manifest(&reference.manifest_ref())?;
    let mut repo_digests = vec![format!("{}@{digest}", reference.name())];
    let (manifest, manifest_bytes, manifest_digest, manifest_type) =
        match manifest::parse_document(&ct, &bytes)? {
            Document::Manifest(m) => (m, bytes, digest, ct),
            Document::Index(index) => {
                store.put_blob_bytes(&bytes, "image index")?;
                let chosen = index.select(&opts.platform)?;
                let (ct2, bytes2, d2) = client.manifest(&chosen.digest.to_string())?;
                match manifest::parse_document(&ct2, &bytes2)? {
                    Document::Manifest(m) => {
                        repo_digests.push(format!("{}@{d2}", reference.name()));
                        (m, bytes2, d2, ct2)
                    }
                    Document::Index(_) => {
                        return Err(manifest::ManifestError::Malformed {
                            what: "image index",
                            why: "it points at another index (nested indexes are not followed)"
                                .into(),
                        }
                        .into())
                    }
                }
            }
        };
    store.put_blob_bytes(&manifest_bytes, "manifest")?;
    let config_bytes = fetch_document(store, &client, &manifest.config.digest, "image config")?;
    let config: ImageConfig = manifest::parse_config(&config_bytes, manifest.layers.len())?;

    let layers: Vec<LayerRecord> = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(l, diff_id)| LayerRecord {
            blob: l.digest.clone(),
            media_type: l.media_type.clone(),
            size: l.size,
            diff_id: diff_id.clone(),
        })
        .collect();
    download_layers(store, &client, &layers, opts.jobs.max(1), progress)?;

    let media_type = if manifest.media_type.is_empty() {
        manifest_type
            .split(';')
            .next()
            .unwrap_or(manifest::OCI_MANIFEST)
            .trim()
            .to_string()
    } else {
        manifest.media_type.clone()
    };
    Ok(ImageRecord {
        id: manifest.config.digest.clone(),
        names: reference.tagged_name().into_iter().collect(),
        manifest: manifest_digest,
        manifest_media_type: media_type,
        repo_digests,
        layers,
        stored: now(),
        config,
    })
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A small JSON blob (config), from the store when present.
fn fetch_document(
    store: &Store,
    client: &Client,
    digest: &Digest,
    what: &str,
) -> Result<Vec<u8>, PullError> {
    if !store.has_blob(digest) {
        let _lock = BlobLock::acquire(store, digest, |_| {})?;
        if !store.has_blob(digest) {
            let body = client.blob(digest)?;
            store.put_blob(
                body.reader,
                Some(digest),
                Some(manifest::MAX_DOCUMENT),
                &format!("{what} {digest}"),
                |_| {},
            )?;
        }
    }
    Ok(store.read_blob(digest, manifest::MAX_DOCUMENT)?)
}

fn download_layers(
    store: &Store,
    client: &Client,
    layers: &[LayerRecord],
    jobs: usize,
    progress: &dyn Progress,
) -> Result<(), PullError> {
    let mut todo: Vec<&LayerRecord> = Vec::new();
    for l in layers {
        if store.has_blob(&l.blob) {
            progress.note(&format!("{}: already in the store", l.blob.short()));
        } else if !todo.iter().any(|t| t.blob == l.blob) {
            todo.push(l);
        }
    }
    let queue = Mutex::new(todo.into_iter().rev().collect::<Vec<_>>());
    let first_error: Mutex<Option<PullError>> = Mutex::new(None);
    let workers = jobs.min(queue.lock().expect("not poisoned").len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if first_error.lock().expect("not poisoned").is_some() {
                    return;
                }
                let Some(layer) = queue.lock().expect("not poisoned").pop() else {
                    return;
                };
                if let Err(e) = download_one(store, client, layer, progress) {
                    first_error.lock().expect("not poisoned").get_or_insert(e);
                    return;
                }
            });
        }
    });
    match first_error.into_inner().expect("not poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

const ATTEMPTS: u32 = 3;

fn download_one(
    store: &Store,
    client: &Client,
    layer: &LayerRecord,
    progress: &dyn Progress,
) -> Result<(), PullError> {
    let bar = progress.start(&layer.blob, layer.size);
    let _lock = BlobLock::acquire(store, &layer.blob, |_| {
        progress.note(&format!(
            "{}: another pull is downloading it, waiting",
            layer.blob.short()
        ))
    })?;
    if store.has_blob(&layer.blob) {
        // The other pull's download, verified by its digest like ours.
        bar.finish("done (downloaded by another pull)");
        return Ok(());
    }
    let what = format!("layer {} from {}", layer.blob, client.registry());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client
            .blob(&layer.blob)
            .map_err(PullError::from)
            .and_then(|body| {
                // The manifest's size is part of what its digest vouches for: a registry
                // sending more is cut off there (the digest check then fails).
                let limit = Some(layer.size);
                store
                    .put_blob(body.reader, Some(&layer.blob), limit, &what, |n| {
                        bar.advance(n)
                    })
                    .map_err(|e| PullError::from(e.needing(layer.size)))
            });
        match result {
            Ok(_) => {
                bar.finish("done");
                return Ok(());
            }
            // Only a broken transfer is worth another try; a wrong digest is not.
            Err(PullError::Store(StoreError::Source { .. }))
            | Err(PullError::Registry(RegistryError::Unreachable { .. }))
                if attempt < ATTEMPTS =>
            {
                progress.note(&format!(
                    "{}: transfer interrupted, retrying ({attempt}/{})",
                    layer.blob.short(),
                    ATTEMPTS - 1
                ));
                bar.restart();
            }
            Err(e) => {
                bar.finish("failed");
                return Err(e);
            }
        }
    }
}

/// The right to download one blob into the store, across processes: an exclusive flock
/// on `ROOT/locks/blob-HEX`. A holder that finishes removes the file before it lets go,
/// so no lock file outlives its download (a killed pull leaves one, reused later); a
/// waiter that then gets the lock of a removed file starts again on the path's current
/// file, so two processes never both believe they hold it.
pub struct BlobLock {
    path: PathBuf,
    _flock: Flock<File>,
}

impl BlobLock {
    /// Waits for the blob's lock; `waiting` is called once if another holds it.
    pub fn acquire(
        store: &Store,
        digest: &Digest,
        mut waiting: impl FnMut(&Digest),
    ) -> Result<BlobLock, StoreError> {
        let dir = store.root().join("locks");
        let path = dir.join(format!("blob-{}", digest.hex()));
        let fail = |error: io::Error| StoreError::Io {
            path: path.clone(),
            error,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(fail)?;
        let mut said = false;
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(fail)?;
            let flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                    if !said {
                        said = true;
                        waiting(digest);
                    }
                    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| fail(e.into()))?
                }
                Err((_, e)) => return Err(fail(e.into())),
            };
            // Still the file the path names? A finished holder removed it meanwhile.
            let ours = flock.metadata().map_err(fail)?;
            match fs::metadata(&path) {
                Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                    return Ok(BlobLock {
                        path,
                        _flock: flock,
                    })
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fail(e)),
            }
        }
    }
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        // Removed while still held (the flock goes with the descriptor, after this).
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_holder_at_a_time_and_no_lock_file_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let waited = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _l = BlobLock::acquire(&store, &digest, |_| {
                            waited.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two holders at once");
        assert!(
            fs::read_dir(dir.path().join("locks"))
                .unwrap()
                .next()
                .is_none(),
            "the lock file goes with its last holder"
        );
    }
}
