//! Images for containers: the store opened, an image found or pulled and unpacked,
//! and what a container's root is made from ([`RunImage`]).
//!
//! Registry settings come from the caller ([`Settings`]: the registries.conf to use)
//! and [`PullFrom`] (TLS, credentials, platform: credentials used for this pull only,
//! never kept in a request or record); progress goes to the caller's
//! `nook_fs::pull::Progress`, notices to its [`Notify`].

use std::path::PathBuf;

use nook_fs::auth::Credentials;
use nook_fs::digest::Digest;
use nook_fs::manifest::Platform;
use nook_fs::pull::{self, Progress, PullOptions};
use nook_fs::reference::{self, RegistriesConfig};
use nook_fs::registry::{ClientOptions, RegistryError};
use nook_fs::store::{ImageRecord, Store};

use crate::error::{Context, Result};
use crate::request::PullPolicy;
use crate::store_helper::{self, Job, UnpackJob};
use crate::{bail, format_err, Notify, Settings};

/// What `nook run IMAGE` needs: the record and the layer directories, lowest first.
pub struct RunImage {
    pub record: ImageRecord,
    pub layers: Vec<PathBuf>,
    pub store: Store,
}

/// How to reach a registry for one pull.
/// (No Debug: it may hold a password.)
#[derive(Clone, Default)]
pub struct PullFrom {
    /// false: also plain http, no certificate check.
    pub tls_verify: Option<bool>,
    /// Instead of the stored ones.
    pub creds: Option<Credentials>,
    /// OS/ARCH[/VARIANT] of a multi-platform image (None: this host's).
    pub platform: Option<String>,
}

/// The short-name and insecure-registry configuration (`[registries] config` of
/// config.toml names another registries.conf than the default).
pub fn registries(settings: &Settings) -> Result<RegistriesConfig> {
    Ok(match &settings.registries_config {
        Some(path) => RegistriesConfig::load_from(path)?,
        None => RegistriesConfig::load()?,
    })
}

/// The store, with the leftovers of killed commands removed.
pub fn open_store(root: Option<PathBuf>, notify: &dyn Notify) -> Result<Store> {
    let root = nook_fs::paths::store_root(root).ok_or_else(|| {
        format_err!(
            "no place for the image store (no HOME): set NOOK_ROOT or --root to a directory \
             of your own"
        )
    })?;
    tracing::debug!("image store {}", root.display());
    let store = Store::open(&root)?;
    let left = store.leftovers();
    if !left.is_empty() {
        // Best effort: a failure here must not stop the command the user asked for.
        let deleted = left.paths.is_empty()
            || match store_helper::run(&Job::Remove(left.paths.clone())) {
                Ok(_) => true,
                Err(e) => {
                    notify.warn(&format!(
                        "could not clean the store's tmp/: {why}",
                        why = crate::error::chain_line(&e)
                    ));
                    false
                }
            };
        left.finish(deleted);
    }
    Ok(store)
}

/// Runs `job`, which works on this store's own tmp/ entries, in the store helper; the
/// helper holds the store's tmp/ lock with us, so nobody sweeps them while it works.
pub fn run_in_tmp(store: &Store, job: &Job) -> Result<store_helper::Outcome> {
    let owner = store.tmp_owner_fd();
    store_helper::run_holding(job, owner.as_ref().map(std::os::fd::AsFd::as_fd))
}

fn client_options(from: &PullFrom, cfg: &RegistriesConfig, registry: &str) -> ClientOptions {
    ClientOptions {
        insecure: from.tls_verify == Some(false) || cfg.is_insecure(registry),
        credentials: from.creds.clone(),
    }
}

fn platform(from: &PullFrom) -> Result<Platform> {
    match &from.platform {
        None => Ok(Platform::host()),
        Some(p) => Platform::parse(p).ok_or_else(|| {
            format_err!("bad --platform {p:?}: use OS/ARCH[/VARIANT], e.g. linux/arm64")
        }),
    }
}

/// Pulls `name` (trying each search registry for a short name) into the store.
pub fn pull_image(
    store: &Store,
    name: &str,
    from: &PullFrom,
    settings: &Settings,
    progress: &dyn Progress,
    notify: &dyn Notify,
) -> Result<ImageRecord> {
    let cfg = registries(settings)?;
    let parsed = reference::parse(name)?;
    let candidates = cfg.candidates(&parsed);
    if candidates.is_empty() {
        bail!("{name:?} is a short name and no search registries are configured: write it in full (e.g. docker.io/library/{name}) or set unqualified-search-registries in ~/.config/nook/registries.conf");
    }
    // Until the image is recorded, what this pull stores or finds stored is referenced
    // by no image: no collection may take it meanwhile.
    let _writing = store.hold_writes()?;
    let mut errors = Vec::new();
    for r in &candidates {
        let opts = PullOptions {
            platform: platform(from)?,
            client: client_options(from, &cfg, &r.registry),
            jobs: 6,
        };
        progress.note(&format!("Trying to pull {r}..."));
        match pull::fetch(store, r, &opts, progress) {
            Ok(record) => {
                ensure_layers(store, &record, notify)?;
                store.add_image(record.clone())?;
                return Ok(record);
            }
            // A short name goes on to the next registry when this one lacks it.
            Err(pull::PullError::Registry(
                e @ (RegistryError::NotFound { .. } | RegistryError::Denied { .. }),
            )) if candidates.len() > 1 => {
                errors.push(format!("{r}: {e}"));
            }
            Err(e) => return Err(e).context(format!("pulling {r}")),
        }
    }
    bail!(
        "pulling {name}: no search registry has it ({})",
        errors.join("; ")
    )
}

/// Unpacks the image's layers that are not in the store yet.
pub fn ensure_layers(store: &Store, record: &ImageRecord, notify: &dyn Notify) -> Result<()> {
    let mut jobs: Vec<UnpackJob> = Vec::new();
    for l in &record.layers {
        if !store.has_layer(&l.diff_id)
            && !jobs.iter().any(|j| j.diff_id.as_ref() == Some(&l.diff_id))
        {
            jobs.push(UnpackJob {
                blob: store.blob_path(&l.blob),
                diff_id: Some(l.diff_id.clone()),
                dest: store.temp_path("layer")?,
                store: Some(store.root().to_path_buf()),
            });
        }
    }
    if jobs.is_empty() {
        return Ok(());
    }
    // A layer committed is referenced by no image until the caller records one.
    let _writing = store.hold_writes()?;
    let pending: Vec<(PathBuf, Digest)> = jobs
        .iter()
        .map(|j| (j.dest.clone(), j.diff_id.clone().expect("set above")))
        .collect();
    let result = run_in_tmp(store, &Job::Unpack(jobs)).context("unpacking the image's layers");
    let mut trash = Vec::new();
    match result {
        Ok(outcome) => {
            for s in &outcome.stats {
                if s.devices_skipped > 0 {
                    notify.notice(&format!(
                        "skipped {} device node(s) an unprivileged user cannot create",
                        s.devices_skipped
                    ));
                }
            }
            for (tmp, diff_id) in &pending {
                if let Some(lost) = store.commit_layer(tmp, diff_id)? {
                    trash.push(lost);
                }
            }
        }
        Err(e) => {
            let _ = run_in_tmp(
                store,
                &Job::Remove(
                    pending
                        .into_iter()
                        .map(|(p, _)| p)
                        .filter(|p| p.exists())
                        .collect(),
                ),
            );
            return Err(e);
        }
    }
    if !trash.is_empty() {
        run_in_tmp(store, &Job::Remove(trash))?;
    }
    Ok(())
}

/// The image `name` names in the store, or a clear error.
pub fn find(store: &Store, name: &str, settings: &Settings) -> Result<ImageRecord> {
    store.find(name, &registries(settings)?)?.ok_or_else(|| {
        format_err!("image {name:?} not found in the store ({}): `nook images` lists what is there, `nook pull {name}` fetches it", store.root().display())
    })
}

/// The image `name` names (pulled as `policy` says), its layers unpacked.
pub fn image_for_run(
    root: Option<PathBuf>,
    name: &str,
    policy: PullPolicy,
    from: &PullFrom,
    settings: &Settings,
    progress: &dyn Progress,
    notify: &dyn Notify,
) -> Result<RunImage> {
    let store = open_store(root, notify)?;
    let existing = store.find(name, &registries(settings)?)?;
    let record = match (policy, existing) {
        (PullPolicy::Never | PullPolicy::Missing, Some(r)) => r,
        (PullPolicy::Never, None) => bail!(
            "image {name:?} is not in the store and --pull=never: run `nook pull {name}` first"
        ),
        (PullPolicy::Missing, None) | (PullPolicy::Always | PullPolicy::Newer, _) => {
            pull_image(&store, name, from, settings, progress, notify)?
        }
    };
    // A layer removed by hand (or a store repaired) is unpacked again from its blob.
    ensure_layers(&store, &record, notify)?;
    let layers = record
        .layers
        .iter()
        .map(|l| store.layer_dir(&l.diff_id))
        .collect();
    Ok(RunImage {
        record,
        layers,
        store,
    })
}

/// What [`collect_unreferenced`] removed.
pub struct Reclaimed {
    pub blobs: usize,
    pub layers: usize,
    pub bytes: u64,
}

/// Removes the blobs and layers no image references (a failed or killed pull's or
/// import's, an `rmi` deferred); None when a pull, import, load or commit is running.
pub fn collect_unreferenced(store: &Store) -> Result<Option<Reclaimed>> {
    let Some(garbage) = store.collect_garbage()? else {
        return Ok(None);
    };
    let mut reclaimed = Reclaimed {
        blobs: garbage.blobs,
        layers: garbage.trash.len(),
        bytes: garbage.blob_bytes,
    };
    if !garbage.trash.is_empty() {
        let outcome = run_in_tmp(store, &Job::Remove(garbage.trash))
            .context("deleting layers no image uses")?;
        reclaimed.bytes += outcome.bytes.iter().sum::<u64>();
    }
    Ok(Some(reclaimed))
}
