//! Images in and out of files: `nook import` (a root filesystem tarball), `nook load`
//! (docker-archive from `docker save`/`podman save`, OCI archive or OCI layout
//! directory) and `nook save` (OCI archive).
//!
//! Data path of a load: every regular file of the archive streams once into the store's
//! blobs (hashed on the way; a file under `blobs/sha256/` must match its name), only the
//! small top-level JSON files stay in memory. The archive's names are map keys and
//! nothing else: no file of the archive is written anywhere by its name. The records
//! returned still need their layers unpacked (the cli's helper) before they are added.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::manifest::{self, Descriptor, Document, ImageConfig, Manifest, Platform};
use crate::pull::now;
use crate::reference::{self, Parsed};
use crate::store::{ImageRecord, LayerRecord, Store, StoreError};

impl From<io::Error> for ArchiveError {
    fn from(e: io::Error) -> Self {
        ArchiveError::Io(e)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    // Without the file's name: the caller says which file it was loading.
    #[error("not an image archive nook reads (docker-archive with manifest.json, or OCI with index.json)")]
    Unknown,
    #[error("archive: {0}")]
    Bad(String),
    #[error("reading the archive: {0}")]
    Io(io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
}

fn sniff(store: &Store, blob: &Digest) -> Result<(&'static str, Digest), ArchiveError> {
    let f = std::fs::File::open(store.blob_path(blob))?;
    let mut head = [0u8; 4];
    let n = (&f).read(&mut head)?;
    drop(f);
    let media = if n >= 2 && head[..2] == [0x1f, 0x8b] {
        manifest::OCI_LAYER_GZIP
    } else if n == 4 && head == [0x28, 0xb5, 0x2f, 0xfd] {
        manifest::OCI_LAYER_ZSTD
    } else {
        manifest::OCI_LAYER
    };
    // The diff_id: the digest of the uncompressed stream.
    let f = std::fs::File::open(store.blob_path(blob))?;
    let mut r = HashingReader::new(crate::unpack::decompress(f)?);
    io::copy(&mut r, &mut io::sink())?;
    Ok((media, r.finish().0))
}

/// The record of an image made of one layer, a root filesystem tarball already stored
/// as `blob` (`nook import`).
pub fn record_from_rootfs_blob(
    store: &Store,
    blob: &Digest,
    size: u64,
    name: Option<String>,
) -> Result<ImageRecord, ArchiveError> {
    let (media, diff_id) = sniff(store, blob)?;
    let host = Platform::host();
    let created = rfc3339_now();
    let config = serde_json::json!({
        "architecture": host.architecture,
        "os": host.os,
        "created": created,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [{ "created": created, "created_by": "nook import" }],
    });
    let layers = vec![LayerRecord {
        blob: blob.clone(),
        media_type: media.into(),
        size,
        diff_id,
    }];
    build_record(
        store,
        serde_json::to_vec(&config).expect("json"),
        layers,
        name.into_iter().collect(),
    )
}

/// `nook commit`: a new image made of `base`'s layers and configuration plus one more
/// layer (`blob`, a tar already in the store), with a history entry `created_by`.
pub fn record_with_layer(
    store: &Store,
    base: &ImageRecord,
    blob: &Digest,
    size: u64,
    name: Option<String>,
    created_by: &str,
) -> Result<ImageRecord, ArchiveError> {
    let (media, diff_id) = sniff(store, blob)?;
    let base_bytes = store.read_blob(&base.id, 16 << 20)?;
    let mut config: serde_json::Value = serde_json::from_slice(&base_bytes)
        .map_err(|e| ArchiveError::Bad(format!("the base image's config: {e}")))?;
    let created = rfc3339_now();
    config["created"] = created.clone().into();
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array_mut()
        .ok_or_else(|| ArchiveError::Bad("the base image's config has no rootfs".into()))?;
    diff_ids.push(diff_id.to_string().into());
    let entry = serde_json::json!({ "created": created, "created_by": created_by });
    match config["history"].as_array_mut() {
        Some(history) => history.push(entry),
        None => config["history"] = serde_json::json!([entry]),
    }
    let mut layers = base.layers.clone();
    layers.push(LayerRecord {
        blob: blob.clone(),
        media_type: media.into(),
        size,
        diff_id,
    });
    build_record(
        store,
        serde_json::to_vec(&config).expect("json"),
        layers,
        name.into_iter().collect(),
    )
}

/// Stores the config and an OCI manifest for `layers`, and returns the record.
fn build_record(
    store: &Store,
    config_bytes: Vec<u8>,
    layers: Vec<LayerRecord>,
    names: Vec<String>,
) -> Result<ImageRecord, ArchiveError> {
    let config: ImageConfig = manifest::parse_config(&config_bytes, layers.len())?;
    let config_digest = store.put_blob_bytes(&config_bytes, "image config")?;
    let m = Manifest {
        schema_version: 2,
        media_type: manifest::OCI_MANIFEST.into(),
        config: Descriptor {
            media_type: manifest::OCI_CONFIG.into(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.blob.clone(),
                size: l.size,
                platform: None,
                annotations: None,
            })
            .collect(),
    };
    let mbytes = serde_json::to_vec(&m).expect("json");
    let mdigest = store.put_blob_bytes(&mbytes, "manifest")?;
    Ok(ImageRecord {
        id: config_digest,
        names,
        manifest: mdigest,
        manifest_media_type: manifest::OCI_MANIFEST.into(),
        repo_digests: Vec::new(),
        layers,
        stored: now(),
        config,
    })
}

fn rfc3339_now() -> String {
    let secs = now() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Files of an archive: path → stored blob, plus the small top-level JSON documents.
#[derive(Default)]
struct Contents {
    files: BTreeMap<String, (Digest, u64)>,
    /// The archive's own documents (index.json, oci-layout, manifest.json, ...), kept
    /// in memory: as blobs they would be stored data that no image references.
    documents: BTreeMap<String, Vec<u8>>,
}

/// Whether an archive file is one of the archive's own documents rather than a blob an
/// image may reference (OCI layouts name every blob `blobs/sha256/HEX`; docker archives
/// put configs at `HEX.json` and layers at `ID/layer.tar`).
fn is_document(path: &str) -> bool {
    matches!(
        path,
        "index.json" | "oci-layout" | "manifest.json" | "repositories"
    ) || path.ends_with("/json")
        || path.ends_with("/VERSION")
}

fn normal(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

impl Contents {
    /// Stores one file of the archive (`size` bytes).
    fn add(
        &mut self,
        store: &Store,
        path: &str,
        src: impl Read,
        size: u64,
    ) -> Result<(), ArchiveError> {
        let path = normal(path);
        if is_document(&path) {
            let mut doc = Vec::new();
            src.take(manifest::MAX_DOCUMENT + 1).read_to_end(&mut doc)?;
            if doc.len() as u64 > manifest::MAX_DOCUMENT {
                return Err(ArchiveError::Bad(format!("{path} is too large")));
            }
            self.documents.insert(path, doc);
            return Ok(());
        }
        // A file named by its digest must be that content.
        let expected = path
            .strip_prefix("blobs/sha256/")
            .and_then(|h| Digest::from_hex(h).ok());
        let (d, n) = store
            .put_blob(
                src,
                expected.as_ref(),
                None,
                &format!("archive file {path}"),
                |_| {},
            )
            .map_err(|e| e.needing(size))?;
        self.files.insert(path, (d, n));
        Ok(())
    }

    fn get(&self, path: &str) -> Result<&(Digest, u64), ArchiveError> {
        self.files
            .get(&normal(path))
            .ok_or_else(|| ArchiveError::Bad(format!("it lacks {path}")))
    }

    fn json(&self, store: &Store, path: &str) -> Result<Vec<u8>, ArchiveError> {
        if let Some(doc) = self.documents.get(&normal(path)) {
            return Ok(doc.clone());
        }
        let (d, _) = self.get(path)?;
        Ok(store.read_blob(d, manifest::MAX_DOCUMENT)?)
    }
}

/// Reads an archive (a tar file, `-` for stdin) or an OCI layout directory and returns
/// the records of the images in it (blobs stored, layers not yet unpacked).
pub fn load(
    store: &Store,
    input: &Path,
    platform: &Platform,
) -> Result<Vec<ImageRecord>, ArchiveError> {
    let mut contents = Contents::default();
    if input.is_dir() {
        walk_dir(store, input, input, &mut contents)?;
    } else {
        let src: Box<dyn Read> = if input == Path::new("-") {
            Box::new(io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(input)?)
        };
        let file = tempfile_of(store, src)?;
        let stream = crate::unpack::decompress(std::fs::File::open(&file)?)?;
        let mut ar = tar::Archive::new(stream);
        let result = (|| {
            for e in ar.entries()? {
                let e = e?;
                if e.header().entry_type().is_file() {
                    let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                    let size = e.size();
                    contents.add(store, &p, e, size)?;
                }
            }
            Ok::<_, ArchiveError>(())
        })();
        let _ = std::fs::remove_file(&file);
        result?;
    }
    if contents.documents.contains_key("index.json") {
        load_oci(store, &contents, platform)
    } else if contents.documents.contains_key("manifest.json") {
        load_docker(store, &contents)
    } else {
        Err(ArchiveError::Unknown)
    }
}

/// Spools a stream to a file in the store's tmp/ (tar needs to read it once, whole).
fn tempfile_of(store: &Store, mut src: impl Read) -> Result<PathBuf, ArchiveError> {
    let p = store.temp_path("archive")?;
    let mut f = crate::store::create_private(&p)?;
    let copied = io::copy(&mut src, &mut f);
    drop(f);
    match copied {
        Ok(_) => Ok(p),
        // Only the write can find the disk full: the store's error (sizes, the fix), not
        // one "reading the archive".
        Err(e) if crate::space::is_no_space(&e) => Err(store.full(e, "the archive", &p).into()),
        Err(e) => {
            let _ = std::fs::remove_file(&p);
            Err(e.into())
        }
    }
}

fn walk_dir(
    store: &Store,
    base: &Path,
    dir: &Path,
    contents: &mut Contents,
) -> Result<(), ArchiveError> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            walk_dir(store, base, &e.path(), contents)?;
        } else if t.is_file() {
            let rel = e
                .path()
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .into_owned();
            let file = std::fs::File::open(e.path())?;
            let size = file.metadata()?.len();
            contents.add(store, &rel, file, size)?;
        }
    }
    Ok(())
}

fn name_from(annotation: Option<&String>) -> Option<String> {
    match reference::parse(annotation?).ok()? {
        Parsed::Qualified(r) => r.tagged_name(),
        Parsed::Short { .. } => None,
    }
}

fn load_oci(
    store: &Store,
    c: &Contents,
    platform: &Platform,
) -> Result<Vec<ImageRecord>, ArchiveError> {
    let index = c.json(store, "index.json")?;
    let Document::Index(index) = manifest::parse_document(manifest::OCI_INDEX, &index)? else {
        return Err(ArchiveError::Bad("index.json is not an index".into()));
    };
    let mut out = Vec::new();
    for desc in &index.manifests {
        let blob = |d: &Digest| {
            c.get(&format!("blobs/sha256/{}", d.hex()))
                .map(|(d, _)| d.clone())
        };
        let mut mdigest = blob(&desc.digest)?;
        let mut bytes = store.read_blob(&mdigest, manifest::MAX_DOCUMENT)?;
        let mut ct = desc.media_type.clone();
        if let Document::Index(inner) = manifest::parse_document(&ct, &bytes)? {
            let chosen = inner.select(platform)?;
            mdigest = blob(&chosen.digest)?;
            bytes = store.read_blob(&mdigest, manifest::MAX_DOCUMENT)?;
            ct = chosen.media_type.clone();
        }
        let Document::Manifest(m) = manifest::parse_document(&ct, &bytes)? else {
            return Err(ArchiveError::Bad("nested index".into()));
        };
        let config_digest = blob(&m.config.digest)?;
        let config_bytes = store.read_blob(&config_digest, manifest::MAX_DOCUMENT)?;
        let config = manifest::parse_config(&config_bytes, m.layers.len())?;
        let mut layers = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            blob(&l.digest)?;
            layers.push(LayerRecord {
                blob: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
                diff_id: diff_id.clone(),
            });
        }
        let ann = desc.annotations.as_ref();
        let name = name_from(ann.and_then(|a| a.get("io.containerd.image.name")))
            .or_else(|| name_from(ann.and_then(|a| a.get("org.opencontainers.image.ref.name"))));
        out.push(ImageRecord {
            id: m.config.digest.clone(),
            names: name.into_iter().collect(),
            manifest: mdigest,
            manifest_media_type: if m.media_type.is_empty() {
                manifest::OCI_MANIFEST.into()
            } else {
                m.media_type.clone()
            },
            repo_digests: Vec::new(),
            layers,
            stored: now(),
            config,
        });
    }
    Ok(out)
}

fn load_docker(store: &Store, c: &Contents) -> Result<Vec<ImageRecord>, ArchiveError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(&c.json(store, "manifest.json")?)
        .map_err(|e| ArchiveError::Bad(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let config_bytes = c.json(store, &e.config)?;
        let config: ImageConfig = manifest::parse_config(&config_bytes, e.layers.len())?;
        let mut layers = Vec::new();
        for (path, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let (blob, size) = c.get(path)?.clone();
            let (media, _) = sniff_media(store, &blob)?;
            layers.push(LayerRecord {
                blob,
                media_type: media.into(),
                size,
                diff_id: diff_id.clone(),
            });
        }
        let names = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| match reference::parse(t).ok()? {
                Parsed::Qualified(r) => r.tagged_name(),
                // docker save writes Docker Hub names short: "alpine:latest".
                p @ Parsed::Short { .. } => reference::RegistriesConfig::default()
                    .candidates(&p)
                    .first()?
                    .tagged_name(),
            })
            .collect();
        out.push(build_record(store, config_bytes, layers, names)?);
    }
    Ok(out)
}

fn sniff_media(store: &Store, blob: &Digest) -> Result<(&'static str, ()), ArchiveError> {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(store.blob_path(blob))?.read(&mut head)?;
    Ok((
        if n >= 2 && head[..2] == [0x1f, 0x8b] {
            manifest::OCI_LAYER_GZIP
        } else if n == 4 && head == [0x28, 0xb5, 0x2f, 0xfd] {
            manifest::OCI_LAYER_ZSTD
        } else {
            manifest::OCI_LAYER
        },
        (),
    ))
}

/// Writes `image` as an OCI archive (a tar of an OCI layout) named `name`.
pub fn save_oci(
    store: &Store,
    image: &ImageRecord,
    name: Option<&str>,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let mut b = tar::Builder::new(out);
    // Entries are owned by the caller, with explicit directories: a rootless reader
    // (skopeo, podman) that restores owners can then create every entry as itself.
    let (uid, gid) = (
        nix::unistd::getuid().as_raw() as u64,
        nix::unistd::getgid().as_raw() as u64,
    );
    let header = |size: u64, kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_entry_type(kind);
        h
    };
    let add_bytes = |b: &mut tar::Builder<_>, path: &str, data: &[u8]| -> io::Result<()> {
        b.append_data(
            &mut header(data.len() as u64, tar::EntryType::Regular, 0o644),
            path,
            data,
        )
    };
    for d in ["blobs/", "blobs/sha256/"] {
        b.append_data(
            &mut header(0, tar::EntryType::Directory, 0o755),
            d,
            io::empty(),
        )?;
    }
    add_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mbytes = store.read_blob(&image.manifest, manifest::MAX_DOCUMENT)?;
    let mut annotations = BTreeMap::new();
    if let Some(n) = name
        .map(str::to_string)
        .or_else(|| image.names.first().cloned())
    {
        annotations.insert("io.containerd.image.name".to_string(), n.clone());
        let tag = n
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_else(|| "latest".into());
        annotations.insert("org.opencontainers.image.ref.name".to_string(), tag);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": [{
            "mediaType": image.manifest_media_type,
            "digest": image.manifest.to_string(),
            "size": mbytes.len(),
            "annotations": annotations,
        }],
    });
    add_bytes(
        &mut b,
        "index.json",
        &serde_json::to_vec(&index).expect("json"),
    )?;
    let mut blobs = vec![image.manifest.clone(), image.id.clone()];
    blobs.extend(image.layers.iter().map(|l| l.blob.clone()));
    for d in blobs {
        let p = store.blob_path(&d);
        let mut f = std::fs::File::open(&p)?;
        let mut h = header(f.metadata()?.len(), tar::EntryType::Regular, 0o644);
        b.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut f)?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}
