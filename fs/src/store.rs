//! The content store: verified blobs, one directory per unpacked layer, image records.
//!
//! ```text
//! ROOT/                      $XDG_DATA_HOME/nook, --root, $NOOK_ROOT (0700)
//!   lock                     flock: exclusive for every change, shared while a run reads
//!   images.json              every image record; replaced whole (temp, fsync, rename)
//!   blobs/sha256/HEX         manifests, configs, compressed layers, named by digest
//!   layers/HEX/diff/         a layer unpacked (HEX = its diff_id), shared by all images
//!   layers/HEX/stats.json    what the unpack skipped (devices, xattrs, squashed owners)
//!   tmp/PID-…                downloads and unpacks in progress, each named by its process
//!   locks/blob-HEX           flock of a blob's download (pull.rs), removed by its holder
//! ```
//!
//! Crash safety: nothing is written in place. A blob is streamed to `tmp/`, verified,
//! then renamed into `blobs/`; a layer is unpacked under `tmp/` and renamed into
//! `layers/` whole; the image record is added last, under the lock. A pull killed at any
//! point leaves complete blobs and layers (reused by the next pull) and `tmp/` entries of
//! a dead process, which the next command sweeps. Two pulls of one image at once share
//! each blob (the second waits on the blob's lock, `locks/blob-HEX`, pull.rs) and both
//! unpack; the second layer rename finds the first's result and discards its own.
//!
//! Layer directories hold files owned by the container's IDs (subordinate IDs on the
//! host): only a process in the user namespace can remove them. The store therefore
//! never deletes a layer itself: it moves it into `tmp/` (atomic, under the lock) and
//! returns the path for the cli's namespaced helper to delete.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader};
use crate::manifest::ImageConfig;
use crate::reference::{self, Parsed, RegistriesConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // Causes are shown, not returned as `source()` (a field named `source` would be one):
    // a chain printer would say them twice.
    #[error("image store {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{what} does not match its digest: expected {expected}, got {actual} ({bytes} bytes); nothing was stored")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
        bytes: u64,
    },
    #[error(
        "downloading {what} failed: {error}; run the command again (what was complete is kept)"
    )]
    Source { what: String, error: io::Error },
    #[error("{what} is larger than the {limit} bytes allowed")]
    TooLarge { what: String, limit: u64 },
    /// `--root`/`NOOK_ROOT` names another account's directory (or not a directory).
    #[error(transparent)]
    Dir(#[from] crate::paths::DirError),
    #[error("image store {path}: images.json is corrupt ({why}); `nook system check --repair` rebuilds what it can")]
    Corrupt { path: PathBuf, why: String },
    /// The store's filesystem is full: what was needed, what is free.
    #[error(transparent)]
    NoSpace(Box<crate::space::NoSpace>),
}

impl StoreError {
    /// A full store's error with the size the whole write needed (a caller that knows
    /// it: the manifest's layer size, the tarball's length); other errors unchanged.
    pub fn needing(self, bytes: u64) -> StoreError {
        match self {
            StoreError::NoSpace(e) => StoreError::NoSpace(Box::new(e.needing(bytes))),
            other => other,
        }
    }

    fn needing_more_than(self, bytes: u64) -> StoreError {
        match self {
            StoreError::NoSpace(e) => StoreError::NoSpace(Box::new(e.needing_more_than(bytes))),
            other => other,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// One layer of an image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// The blob as distributed (usually compressed).
    pub blob: Digest,
    pub media_type: String,
    pub size: u64,
    /// The uncompressed tar's digest: names the unpacked directory.
    pub diff_id: Digest,
}

/// An image in the store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, as podman's image ID.
    pub id: Digest,
    /// `registry/repository:tag` names pointing at this image.
    pub names: Vec<String>,
    /// The manifest's digest (what `name@digest` pulls), its blob is in the store.
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// `registry/repository@digest` for each repository the image came from.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    pub layers: Vec<LayerRecord>,
    /// Seconds since the epoch when it was stored.
    pub stored: u64,
    pub config: ImageConfig,
}

impl ImageRecord {
    /// Compressed size of the layers (what `nook images` shows, as podman's SIZE
    /// counts stored bytes).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct ImagesFile {
    version: u32,
    images: Vec<ImageRecord>,
}

/// The store at one root.
pub struct Store {
    root: PathBuf,
}

/// A held store lock (released on drop).
pub struct Lock {
    _flock: Flock<File>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new file of the store (a record, a blob), 0600 whatever the umask: the store is
/// the user's alone (its directories are 0700 too).
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

impl Store {
    /// Opens (creating) the store at `root`, which must be this account's: another
    /// account's store is refused before anything in it is read or created.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        crate::paths::check_own_dir(root, "image store", crate::paths::STORE_HINT)?;
        for d in ["", "blobs/sha256", "layers", "tmp"] {
            let p = root.join(d);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(io_err(&p))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self, arg: FlockArg) -> Result<Lock, StoreError> {
        let p = self.root.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(io_err(&p))?;
        let flock = Flock::lock(f, arg).map_err(|(_, e)| StoreError::Io {
            path: p.clone(),
            error: e.into(),
        })?;
        Ok(Lock { _flock: flock })
    }

    /// For every change to images.json, layers/ and blobs/ removal.
    pub fn lock_exclusive(&self) -> Result<Lock, StoreError> {
        self.lock(FlockArg::LockExclusive)
    }

    /// For readers that need layers to stay while they use them.
    pub fn lock_shared(&self) -> Result<Lock, StoreError> {
        self.lock(FlockArg::LockShared)
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        let len = fs::metadata(&p).map_err(io_err(&p))?.len();
        if len > limit {
            return Err(StoreError::TooLarge {
                what: format!("blob {d}"),
                limit,
            });
        }
        fs::read(&p).map_err(io_err(&p))
    }

    /// The unpacked tree of the layer with this diff_id.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex()).join("diff")
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// A fresh name under tmp/ for this process (not created).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        self.root
            .join("tmp")
            .join(format!("{}-{what}-{n}-{nanos:x}", std::process::id()))
    }

    /// Streams `src` into the store, verifying it against `expected` (and `limit`).
    /// On a mismatch nothing is stored. Returns the digest and size.
    pub fn put_blob(
        &self,
        src: impl Read,
        expected: Option<&Digest>,
        limit: Option<u64>,
        what: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<(Digest, u64), StoreError> {
        let tmp = self.temp_path("blob");
        let result = (|| {
            let mut out = create_private(&tmp).map_err(io_err(&tmp))?;
            let mut written = 0u64;
            let mut r = HashingReader::new(src);
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(StoreError::Source {
                            what: what.to_string(),
                            error: source,
                        })
                    }
                };
                if let Err(e) = out.write_all(&buf[..n]) {
                    // Closed first: an open file's blocks are not free yet.
                    drop(out);
                    return Err(self
                        .full(e, what, &tmp)
                        .needing_more_than(written + n as u64));
                }
                written += n as u64;
                progress(n as u64);
                if let Some(limit) = limit {
                    if r.count() > limit {
                        return Err(StoreError::TooLarge {
                            what: what.to_string(),
                            limit,
                        });
                    }
                }
            }
            let (actual, bytes) = r.finish();
            if let Some(expected) = expected {
                if &actual != expected {
                    return Err(StoreError::DigestMismatch {
                        what: what.to_string(),
                        expected: expected.clone(),
                        actual,
                        bytes,
                    });
                }
            }
            let dest = self.blob_path(&actual);
            // Same content under the same name: whichever rename lands last is fine.
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            Ok((actual, bytes))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The error of a failed write of `what` to `tmp`: [`StoreError::NoSpace`] when the
    /// filesystem is full (`tmp` removed first, so the free space is what the user has;
    /// callers that know the size needed add it with [`StoreError::needing`]).
    pub(crate) fn full(&self, e: io::Error, what: &str, tmp: &Path) -> StoreError {
        if !crate::space::is_no_space(&e) {
            return io_err(tmp)(e);
        }
        let _ = fs::remove_file(tmp);
        let place = format!("the image store {}", self.root.display());
        let full = crate::space::NoSpace::new(
            &e,
            format!("storing {what}"),
            place,
            &self.root,
            crate::space::STORE_FIX,
        );
        StoreError::NoSpace(Box::new(full))
    }

    pub fn put_blob_bytes(&self, data: &[u8], what: &str) -> Result<Digest, StoreError> {
        self.put_blob(data, None, None, what, |_| {})
            .map(|(d, _)| d)
    }

    /// Moves an unpacked layer (`tmp_layer/diff` plus stats) into place. Returns the
    /// directory to delete when the layer was already there (another pull won).
    pub fn commit_layer(
        &self,
        tmp_layer: &Path,
        diff_id: &Digest,
    ) -> Result<Option<PathBuf>, StoreError> {
        let _lock = self.lock_exclusive()?;
        let dest = self.root.join("layers").join(diff_id.hex());
        if dest.join("diff").is_dir() {
            return Ok(Some(tmp_layer.to_path_buf()));
        }
        if dest.exists() {
            // An incomplete leftover (no diff/): move it aside for deletion.
            let trash = self.temp_path("trash");
            fs::rename(&dest, &trash).map_err(io_err(&dest))?;
        }
        fs::rename(tmp_layer, &dest).map_err(io_err(&dest))?;
        Ok(None)
    }

    fn images_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    /// Every image record. Read without the lock: images.json is replaced atomically.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let p = self.images_path();
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice::<ImagesFile>(&b)
                .map(|f| f.images)
                .map_err(|e| StoreError::Corrupt {
                    path: self.root.clone(),
                    why: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(StoreError::Io { path: p, error: e }),
        }
    }

    /// Replaces images.json (the caller holds the exclusive lock).
    pub fn write_images(&self, images: &[ImageRecord]) -> Result<(), StoreError> {
        let p = self.images_path();
        let tmp = self.temp_path("images");
        let data = serde_json::to_vec_pretty(&ImagesFile {
            version: 1,
            images: images.to_vec(),
        })
        .expect("image records serialise");
        let mut f = create_private(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&data)
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &p).map_err(io_err(&p))?;
        // The rename itself must survive a crash too.
        if let Ok(d) = File::open(&self.root) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Adds `record` (or merges its names into the same image): a name moves from any
    /// other image to this one, as a tag does in podman. Its blobs and layers must be
    /// in the store already. Returns images left with no name (podman's `<none>`).
    pub fn add_image(&self, mut record: ImageRecord) -> Result<(), StoreError> {
        let _lock = self.lock_exclusive()?;
        let mut images = self.images()?;
        for img in images.iter_mut().filter(|i| i.id != record.id) {
            img.names.retain(|n| !record.names.contains(n));
        }
        if let Some(existing) = images.iter_mut().find(|i| i.id == record.id) {
            for n in existing.names.drain(..) {
                if !record.names.contains(&n) {
                    record.names.push(n);
                }
            }
            for d in existing.repo_digests.drain(..) {
                if !record.repo_digests.contains(&d) {
                    record.repo_digests.push(d);
                }
            }
            *existing = record;
        } else {
            images.push(record);
        }
        self.write_images(&images)
    }

    /// Finds an image by ID (full or a unique prefix of at least 3 hex digits), by
    /// `name@digest`, or by name, trying a short name as podman does: localhost/ first,
    /// then each search registry.
    pub fn find(
        &self,
        wanted: &str,
        cfg: &RegistriesConfig,
    ) -> Result<Option<ImageRecord>, StoreError> {
        find_in(self.images()?, wanted, cfg)
    }

    /// Removes the name `wanted` resolves to, or the whole image when `wanted` is an ID or
    /// the image's only name (or `all`). Returns the removed image when it is gone, and
    /// the paths the caller must delete in the user namespace.
    pub fn remove(
        &self,
        id: &Digest,
        name: Option<&str>,
        all: bool,
    ) -> Result<Removal, StoreError> {
        let _lock = self.lock_exclusive()?;
        let mut images = self.images()?;
        let Some(pos) = images.iter().position(|i| &i.id == id) else {
            return Ok(Removal::default());
        };
        if let (Some(name), false) = (name, all) {
            let img = &mut images[pos];
            if img.names.len() > 1 {
                img.names.retain(|n| n != name);
                self.write_images(&images)?;
                return Ok(Removal {
                    untagged: vec![name.to_string()],
                    ..Default::default()
                });
            }
        }
        let removed = images.remove(pos);
        self.write_images(&images)?;
        let trash = self.collect_garbage(&images)?;
        Ok(Removal {
            deleted: Some(removed),
            trash,
            untagged: Vec::new(),
        })
    }

    /// Moves layers and blobs no image references out of the way (under the lock the
    /// caller holds). Returns the layer directories to delete in the user namespace.
    fn collect_garbage(&self, images: &[ImageRecord]) -> Result<Vec<PathBuf>, StoreError> {
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for img in images {
            keep_blobs.insert(img.manifest.hex().to_string());
            keep_blobs.insert(img.id.hex().to_string());
            for l in &img.layers {
                keep_blobs.insert(l.blob.hex().to_string());
                keep_layers.insert(l.diff_id.hex().to_string());
            }
        }
        // Manifests of indexes: referenced by repo_digests; kept while any image names them.
        for img in images {
            for rd in &img.repo_digests {
                if let Some(Ok(d)) = rd.rsplit_once('@').map(|(_, d)| d.parse::<Digest>()) {
                    keep_blobs.insert(d.hex().to_string());
                }
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for e in fs::read_dir(&blobs).map_err(io_err(&blobs))?.flatten() {
            if !keep_blobs.contains(e.file_name().to_string_lossy().as_ref()) {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut trash = Vec::new();
        let layers = self.root.join("layers");
        for e in fs::read_dir(&layers).map_err(io_err(&layers))?.flatten() {
            if !keep_layers.contains(e.file_name().to_string_lossy().as_ref()) {
                let t = self.temp_path("trash");
                fs::rename(e.path(), &t).map_err(io_err(&t))?;
                trash.push(t);
            }
        }
        Ok(trash)
    }

    /// tmp/ entries left by processes that no longer run (killed pulls).
    pub fn stale_temps(&self) -> Vec<PathBuf> {
        let tmp = self.root.join("tmp");
        let Ok(rd) = fs::read_dir(&tmp) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| {
                let name = e.file_name();
                let pid = name
                    .to_string_lossy()
                    .split('-')
                    .next()
                    .and_then(|p| p.parse::<i32>().ok());
                match pid {
                    Some(pid) if pid == std::process::id() as i32 => false,
                    Some(pid) => !process_alive(pid),
                    None => true,
                }
            })
            .map(|e| e.path())
            .collect()
    }
}

/// What [`Store::remove`] did.
#[derive(Default)]
pub struct Removal {
    pub deleted: Option<ImageRecord>,
    pub untagged: Vec<String>,
    pub trash: Vec<PathBuf>,
}

fn process_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// See [`Store::find`].
pub fn find_in(
    images: Vec<ImageRecord>,
    wanted: &str,
    cfg: &RegistriesConfig,
) -> Result<Option<ImageRecord>, StoreError> {
    let hex = wanted.strip_prefix("sha256:").unwrap_or(wanted);
    if hex.len() >= 3 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hits: Vec<&ImageRecord> = images
            .iter()
            .filter(|i| i.id.hex().starts_with(hex))
            .collect();
        if hits.len() == 1 {
            return Ok(Some(hits[0].clone()));
        }
    }
    let Ok(parsed) = reference::parse(wanted) else {
        return Ok(None);
    };
    let mut candidates = Vec::new();
    if let Parsed::Short {
        repository,
        tag,
        digest,
    } = &parsed
    {
        candidates.push(reference::Reference {
            registry: "localhost".into(),
            repository: repository.clone(),
            tag: tag.clone(),
            digest: digest.clone(),
        });
    }
    candidates.extend(cfg.candidates(&parsed));
    for c in candidates {
        let found = images.iter().find(|i| match (&c.digest, c.tagged_name()) {
            (Some(d), _) => {
                let repo = c.name();
                i.repo_digests.contains(&format!("{repo}@{d}"))
                    || (&i.manifest == d
                        && i.names.iter().any(|n| n.starts_with(&format!("{repo}:"))))
            }
            (None, Some(name)) => i.names.contains(&name),
            (None, None) => false,
        });
        if let Some(f) = found {
            return Ok(Some(f.clone()));
        }
    }
    Ok(None)
}
