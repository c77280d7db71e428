//! `nook pull`, the download half: reference → manifest → config → layer blobs, all
//! verified into the store. The unpack half runs in the user namespace (the cli's store
//! helper) and the image record is added last, so an interrupted pull never shows a
//! half image.
//!
//! Data path: registry ─(ureq, one connection per thread)→ HashingReader → tmp/ file →
//! rename into blobs/. Layers download in parallel (up to [`PullOptions::jobs`], 6 by
//! default as containers/image), each with its own progress line; a blob already in the
//! store is not fetched again; an interrupted transfer is retried from the start, twice.

use std::sync::Mutex;

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
        let body = client.blob(digest)?;
        store.put_blob(
            body.reader,
            Some(digest),
            Some(manifest::MAX_DOCUMENT),
            &format!("{what} {digest}"),
            |_| {},
        )?;
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
