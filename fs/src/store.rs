//! The content store: verified blobs, one directory per unpacked layer, image records.
//!
//! ```text
//! ROOT/                      $XDG_DATA_HOME/nook, --root, $NOOK_ROOT (0700)
//!   lock                     flock: exclusive for every change, shared while a run reads
//!   gc.lock                  flock: shared while a command adds blobs and layers that no
//!                            image references yet; exclusive while those are collected
//!   images.json              every image record; replaced whole (temp, fsync, rename)
//!   blobs/sha256/HEX         manifests, configs, compressed layers, named by digest
//!   layers/HEX/diff/         a layer unpacked (HEX = its diff_id), shared by all images
//!   layers/HEX/stats.json    what the unpack skipped (devices, xattrs, squashed owners)
//!   tmp/TOKEN.lock           one per command that writes in tmp/, held while it lives
//!                            (crate::owner), and by the helpers it starts
//!   tmp/TOKEN-…              that command's downloads, unpacks and trash
//!   locks/blob-HEX           flock of a blob's download (pull.rs), removed by its holder
//! ```
//!
//! Crash safety: nothing is written in place. A blob is streamed to `tmp/`, verified,
//! then renamed into `blobs/`; a layer is unpacked under `tmp/` and renamed into
//! `layers/` whole; the image record is added last, under the lock. A pull killed at any
//! point leaves complete blobs and layers (reused by the next pull) and `tmp/` entries
//! whose owner's lock is free, which the next command sweeps ([`Store::leftovers`]): a
//! free lock means the owner and every helper it passed the lock to have exited, so
//! nothing writes there any more. Two pulls of one image at once share each blob (the
//! second waits on the blob's lock, `locks/blob-HEX`, pull.rs) and both unpack; the
//! second layer rename finds the first's result and discards its own.
//!
//! Reclaiming: blobs and layers that no image references (what a failed or killed pull
//! or import stored, what `rmi` could not collect) are removed by
//! [`Store::collect_garbage`]. A pull in progress holds blobs and layers its image does
//! not reference yet: every command that adds some holds `gc.lock` shared from its first
//! look at the store ([`Store::hold_writes`]) until its image is recorded, and collection
//! happens only under `gc.lock` exclusive, taken without waiting: while a writer runs,
//! nothing is collected (and `system check` says so) rather than anything waited for.
//!
//! Layer directories hold files owned by the container's IDs (subordinate IDs on the
//! host): only a process in the user namespace can remove them. The store therefore
//! never deletes a layer itself: it moves it into `tmp/` (atomic, under the lock) and
//! returns the path for the cli's namespaced helper to delete.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader};
use crate::manifest::ImageConfig;
use crate::owner::{self, Owner, OwnerLock};
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
    /// The store's directories cannot be made (a read-only or foreign HOME). Not a
    /// `source`: the message carries it, and a chain printer would repeat it.
    #[error("cannot create the image store {path}: {error}; point NOOK_ROOT or --root at a writable directory of your own")]
    Create { path: PathBuf, error: io::Error },
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
    /// This instance's claim on what it puts in tmp/: made at its first temp path,
    /// removed when the store is dropped.
    tmp_owner: Mutex<Option<TmpOwner>>,
}

struct TmpOwner {
    token: String,
    lock: OwnerLock,
}

impl Drop for Store {
    fn drop(&mut self) {
        let owner = self.tmp_owner.get_mut().map(Option::take);
        if let Ok(Some(owner)) = owner {
            let _ = owner.lock.remove();
        }
    }
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
                .map_err(|error| StoreError::Create {
                    path: root.to_path_buf(),
                    error,
                })?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            tmp_owner: Mutex::new(None),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self, arg: FlockArg) -> Result<Lock, StoreError> {
        self.lock_file("lock", arg)
    }

    fn lock_file(&self, name: &str, arg: FlockArg) -> Result<Lock, StoreError> {
        let p = self.root.join(name);
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

    /// Held by a command that adds blobs or layers before the image that references them
    /// (pull, import, load, commit), from before its first look at what the store has
    /// until the image is recorded: nothing it stored or counted on is collected
    /// meanwhile. Waits only for a collection in progress (a moment).
    pub fn hold_writes(&self) -> Result<Lock, StoreError> {
        self.lock_file("gc.lock", FlockArg::LockShared)
    }

    /// `gc.lock` exclusive, if no writer holds it now (None: one does).
    fn try_collect_lock(&self) -> Result<Option<Lock>, StoreError> {
        match self.lock_file("gc.lock", FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err(StoreError::Io { error, .. })
                if error.raw_os_error() == Some(libc::EWOULDBLOCK) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a pull, import, load or commit is adding to this store now.
    pub fn writers_active(&self) -> Result<bool, StoreError> {
        Ok(self.try_collect_lock()?.is_none())
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

    /// A fresh name under tmp/ for this store instance (not created). The first one
    /// makes the instance's lock in tmp/, which marks every such name as in use.
    pub fn temp_path(&self, what: &str) -> Result<PathBuf, StoreError> {
        let token = self.tmp_token()?;
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        Ok(self.root.join("tmp").join(format!("{token}-{what}-{n}")))
    }

    fn tmp_token(&self) -> Result<String, StoreError> {
        let mut owner = self.tmp_owner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = &*owner {
            return Ok(o.token.clone());
        }
        // Unique among all processes ever: pid, the time, and a count within the process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}.{nanos:x}.{n}", std::process::id());
        let path = self.root.join("tmp").join(format!("{token}.lock"));
        let lock = OwnerLock::create_file(&path).map_err(io_err(&path))?;
        *owner = Some(TmpOwner {
            token: token.clone(),
            lock,
        });
        Ok(token)
    }

    /// A descriptor of this instance's tmp/ lock (None before its first temp path), for
    /// a helper process that writes in tmp/ to hold the lock too: then a killed command's
    /// entries are swept only once its helpers are gone as well.
    pub fn tmp_owner_fd(&self) -> Option<OwnedFd> {
        let owner = self.tmp_owner.lock().unwrap_or_else(|e| e.into_inner());
        let o = owner.as_ref()?;
        std::os::fd::AsFd::as_fd(&o.lock).try_clone_to_owned().ok()
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
        let tmp = self.temp_path("blob")?;
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
            let trash = self.temp_path("trash")?;
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
        let tmp = self.temp_path("images")?;
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
    /// the paths the caller must delete in the user namespace. What the image alone used
    /// is collected with it, unless a writer runs ([`Removal::deferred`]).
    pub fn remove(
        &self,
        id: &Digest,
        name: Option<&str>,
        all: bool,
    ) -> Result<Removal, StoreError> {
        // gc.lock before the store's lock, as every writer takes them.
        let collect = self.try_collect_lock()?;
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
        let (trash, deferred) = match collect {
            Some(_) => (self.collect_locked(&images)?.trash, false),
            None => (Vec::new(), true),
        };
        Ok(Removal {
            deleted: Some(removed),
            trash,
            untagged: Vec::new(),
            deferred,
        })
    }

    /// Removes the blobs and moves aside the layers that no image references (what a
    /// failed or killed pull or import left, what `rmi` deferred). None when a pull,
    /// import, load or commit is running: what it stored is not referenced yet, so
    /// nothing is collected then. The layer directories returned are to be deleted in
    /// the user namespace.
    pub fn collect_garbage(&self) -> Result<Option<Garbage>, StoreError> {
        let Some(_collect) = self.try_collect_lock()? else {
            return Ok(None);
        };
        let _lock = self.lock_exclusive()?;
        let images = self.images()?;
        self.collect_locked(&images).map(Some)
    }

    /// Blobs and layer directories no image in `images` references, with the blobs'
    /// sizes (what [`Store::collect_garbage`] would take).
    pub fn unreferenced(&self, images: &[ImageRecord]) -> Result<Unreferenced, StoreError> {
        let (keep_blobs, keep_layers) = referenced(images);
        let mut found = Unreferenced::default();
        let blobs = self.root.join("blobs/sha256");
        for e in fs::read_dir(&blobs).map_err(io_err(&blobs))?.flatten() {
            if !keep_blobs.contains(e.file_name().to_string_lossy().as_ref()) {
                let size = e.metadata().map_or(0, |m| m.len());
                found.blobs.push((e.path(), size));
            }
        }
        let layers = self.root.join("layers");
        for e in fs::read_dir(&layers).map_err(io_err(&layers))?.flatten() {
            if !keep_layers.contains(e.file_name().to_string_lossy().as_ref()) {
                found.layers.push(e.path());
            }
        }
        Ok(found)
    }

    /// [`Store::collect_garbage`]'s work, under both locks the caller holds.
    fn collect_locked(&self, images: &[ImageRecord]) -> Result<Garbage, StoreError> {
        let found = self.unreferenced(images)?;
        let mut garbage = Garbage::default();
        for (path, size) in found.blobs {
            match fs::remove_file(&path) {
                Ok(()) => {
                    garbage.blobs += 1;
                    garbage.blob_bytes += size;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        for layer in found.layers {
            let t = self.temp_path("trash")?;
            fs::rename(&layer, &t).map_err(io_err(&t))?;
            garbage.trash.push(t);
        }
        Ok(garbage)
    }

    /// tmp/ entries whose owner is gone: a command (and its helpers) killed, or one
    /// that ended without removing them. The caller deletes [`Leftovers::paths`] in the
    /// user namespace, then calls [`Leftovers::finish`] (it holds the dead owners' locks
    /// meanwhile, so no other command sweeps the same entries at the same time).
    pub fn leftovers(&self) -> Leftovers {
        let tmp = self.root.join("tmp");
        let mut found = Leftovers::default();
        let Ok(rd) = fs::read_dir(&tmp) else {
            return found;
        };
        let own = self
            .tmp_owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|o| o.token.clone());
        let mut by_token: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match name.strip_suffix(".lock").filter(|t| !t.contains('-')) {
                Some(token) => by_token.entry(token.to_string()).or_default(),
                None => {
                    let token = name.split('-').next().unwrap_or_default().to_string();
                    let entries = by_token.entry(token).or_default();
                    entries.push(e.path());
                    entries
                }
            };
        }
        for (token, entries) in by_token {
            if Some(&token) == own.as_ref() {
                continue;
            }
            if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
                // Named by an older nook after its pid alone.
                let pid = token.parse::<i32>().unwrap_or(0);
                if pid != std::process::id() as i32 && !process_alive(pid) {
                    found.paths.extend(entries);
                }
                continue;
            }
            // Looked up after the listing, never from it: an owner makes its lock before
            // its first entry, so an entry seen means its lock is there unless the owner
            // is done (it removes the lock when it ends) or was swept.
            let lock = tmp.join(format!("{token}.lock"));
            match owner::probe(&lock) {
                Ok(Owner::Live) | Err(_) => {}
                Ok(Owner::Dead(held)) => {
                    found.paths.extend(entries);
                    found.locks.push(held);
                }
                Ok(Owner::Missing) => found.paths.extend(entries),
            }
        }
        found
    }
}

/// What [`Store::remove`] did.
#[derive(Default)]
pub struct Removal {
    pub deleted: Option<ImageRecord>,
    pub untagged: Vec<String>,
    pub trash: Vec<PathBuf>,
    /// A writer was running: what the removed image alone used stays until the next
    /// collection (`nook system prune`).
    pub deferred: bool,
}

/// What [`Store::collect_garbage`] removed.
#[derive(Default, Debug)]
pub struct Garbage {
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Layer directories moved into tmp/, for the caller to delete.
    pub trash: Vec<PathBuf>,
}

/// What [`Store::unreferenced`] found.
#[derive(Default, Debug)]
pub struct Unreferenced {
    pub blobs: Vec<(PathBuf, u64)>,
    pub layers: Vec<PathBuf>,
}

/// What [`Store::leftovers`] found.
#[derive(Default)]
pub struct Leftovers {
    pub paths: Vec<PathBuf>,
    locks: Vec<OwnerLock>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.locks.is_empty()
    }

    /// Once the paths are deleted: removes the dead owners' lock files (kept when the
    /// deletion failed, `deleted` false, so that the next command tries again).
    pub fn finish(self, deleted: bool) {
        if deleted {
            for l in self.locks {
                let _ = l.remove();
            }
        }
    }
}

/// The blob and layer names (hex) that `images` reference.
fn referenced(images: &[ImageRecord]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut keep_blobs = BTreeSet::new();
    let mut keep_layers = BTreeSet::new();
    for img in images {
        keep_blobs.insert(img.manifest.hex().to_string());
        keep_blobs.insert(img.id.hex().to_string());
        for l in &img.layers {
            keep_blobs.insert(l.blob.hex().to_string());
            keep_layers.insert(l.diff_id.hex().to_string());
        }
        // Manifests of indexes: referenced by repo_digests; kept while any image names them.
        for rd in &img.repo_digests {
            if let Some(Ok(d)) = rd.rsplit_once('@').map(|(_, d)| d.parse::<Digest>()) {
                keep_blobs.insert(d.hex().to_string());
            }
        }
    }
    (keep_blobs, keep_layers)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> (PathBuf, Store) {
        let d = std::env::temp_dir().join(format!("nook-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let store = Store::open(&d).unwrap();
        (d, store)
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        let mut v: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn leftovers_are_a_gone_owners_entries_only() {
        let (d, store) = scratch("leftovers");
        // A live owner (another instance, as another process would be).
        let live = Store::open(&d).unwrap();
        let live_blob = live.temp_path("blob").unwrap();
        fs::write(&live_blob, b"partial").unwrap();
        // A killed one: its lock is there and free, its entries stay.
        let dead = Store::open(&d).unwrap();
        let dead_layer = dead.temp_path("layer").unwrap();
        fs::create_dir(&dead_layer).unwrap();
        let dead_lock = d
            .join("tmp")
            .join(format!("{}.lock", dead.tmp_token().unwrap()));
        // As a kill leaves it: the lock released (its descriptor closed), the file there.
        drop(dead.tmp_owner.lock().unwrap().take());
        drop(dead);
        assert!(dead_lock.exists());
        // What an older nook named by its pid alone, dead (no such pid: above pid_max).
        fs::write(d.join("tmp/999999999-blob-0-1"), b"").unwrap();
        let left = store.leftovers();
        let mut want = vec![
            dead_layer
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            "999999999-blob-0-1".to_string(),
        ];
        want.sort();
        assert_eq!(
            names(&left.paths),
            want,
            "the live owner's blob is not swept"
        );
        for p in &left.paths {
            let _ = fs::remove_dir(p).or_else(|_| fs::remove_file(p));
        }
        left.finish(true);
        assert!(!dead_lock.exists(), "the dead owner's lock goes last");
        assert!(live_blob.exists());
        drop(live);
        assert!(
            fs::read_dir(d.join("tmp")).unwrap().count() == 1,
            "a store dropped removes its lock (the live blob is all that is left)"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unreferenced_blobs_wait_for_writers() {
        let (d, store) = scratch("gc");
        let blob = store.put_blob_bytes(b"nobody's", "a blob").unwrap();
        fs::create_dir_all(d.join("layers/abc/diff")).unwrap();
        let found = store.unreferenced(&store.images().unwrap()).unwrap();
        assert_eq!(found.blobs.len(), 1);
        assert_eq!(found.layers.len(), 1);
        {
            let _pull = store.hold_writes().unwrap();
            assert!(store.writers_active().unwrap());
            assert!(store.collect_garbage().unwrap().is_none());
            assert!(store.has_blob(&blob), "a writer's blob is kept");
        }
        assert!(!store.writers_active().unwrap());
        let garbage = store.collect_garbage().unwrap().expect("no writer now");
        assert_eq!(garbage.blobs, 1);
        assert_eq!(garbage.blob_bytes, 8);
        assert_eq!(
            garbage.trash.len(),
            1,
            "the layer moved into tmp/ for deletion"
        );
        assert!(!store.has_blob(&blob));
        assert!(!d.join("layers/abc").exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
