//! The image commands: pull, images, rmi, inspect, tag, import, login/logout, system
//! check, and the part of `nook run` that turns IMAGE into a root filesystem.
//!
//! Each command is: open the store (sweeping a killed pull's leftovers) → the fs crate
//! does the work (download, verify, records) → what needs the user namespace (unpack,
//! copy, delete) goes to the store helper process (store_helper.rs). Progress bars
//! (indicatif) go to stderr when it is a terminal; results go to stdout.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use nook_fs::auth::{self, Credentials};
use nook_fs::digest::Digest;
use nook_fs::manifest::Platform;
use nook_fs::pull::{self, BlobProgress, Progress};
use nook_fs::reference::{self, RegistriesConfig};
use nook_fs::registry::ClientOptions;
use nook_fs::store::{ImageRecord, Store};

use crate::flags::{
    CheckArgs, ImagesArgs, ImportArgs, InspectArgs, LoginArgs, LogoutArgs, PullArgs, RegistryArgs,
    RmiArgs, TagArgs,
};
use crate::format;
use crate::notify::Stderr;
use nook_engine::image::{self, PullFrom};
use nook_engine::store_helper::{self, Job};

/// The store, with the leftovers of killed commands removed.
pub fn open_store(root: Option<PathBuf>) -> Result<Store> {
    Ok(image::open_store(root, &Stderr)?)
}

/// [`image::run_in_tmp`].
pub fn run_in_tmp(store: &Store, job: &Job) -> Result<store_helper::Outcome> {
    Ok(image::run_in_tmp(store, job)?)
}

pub fn settings() -> nook_engine::Settings {
    crate::notify::settings(crate::config::current())
}

fn registries() -> Result<RegistriesConfig> {
    Ok(image::registries(&settings())?)
}

/// `--tls-verify`, `--creds USER[:PASSWORD]`, `--platform`, for one pull.
pub fn pull_from(reg: &RegistryArgs) -> PullFrom {
    PullFrom {
        tls_verify: reg.tls_verify,
        creds: reg.creds.as_deref().map(|c| {
            let (u, p) = c.split_once(':').unwrap_or((c, ""));
            Credentials {
                username: u.into(),
                password: p.into(),
            }
        }),
        platform: reg.platform.clone(),
    }
}

/// Pulls `name` into the store, with progress bars on a terminal unless `quiet`.
pub fn pull_image(
    store: &Store,
    name: &str,
    reg: &RegistryArgs,
    quiet: bool,
) -> Result<ImageRecord> {
    let bars = Bars::new(quiet);
    let progress: &dyn Progress = match &bars {
        Some(b) => b,
        None => &pull::Quiet,
    };
    Ok(image::pull_image(
        store,
        name,
        &pull_from(reg),
        &settings(),
        progress,
        &Stderr,
    )?)
}

/// The progress a pull for `nook run` shows: bars on a terminal. Decided at the first
/// pull, not before: a run that pulls nothing (host, --rootfs, a stored image) asks
/// nothing of the terminal.
pub fn run_progress() -> Box<dyn Progress> {
    Box::new(LazyBars(std::sync::OnceLock::new()))
}

struct LazyBars(std::sync::OnceLock<Option<Bars>>);

impl LazyBars {
    fn bars(&self) -> Option<&Bars> {
        self.0.get_or_init(|| Bars::new(false)).as_ref()
    }
}

impl Progress for LazyBars {
    fn start(&self, digest: &Digest, size: u64) -> Box<dyn BlobProgress + '_> {
        match self.bars() {
            Some(b) => b.start(digest, size),
            None => Box::new(pull::Quiet),
        }
    }
    fn note(&self, msg: &str) {
        if let Some(b) = self.bars() {
            b.note(msg);
        }
    }
}

/// Unpacks the image's layers that are not in the store yet.
pub fn ensure_layers(store: &Store, record: &ImageRecord) -> Result<()> {
    Ok(image::ensure_layers(store, record, &Stderr)?)
}

/// The image `name` names in the store, or a clear error.
pub fn find(store: &Store, name: &str) -> Result<ImageRecord> {
    Ok(image::find(store, name, &settings())?)
}

/// [`image::collect_unreferenced`].
pub fn collect_unreferenced(store: &Store) -> Result<Option<image::Reclaimed>> {
    Ok(image::collect_unreferenced(store)?)
}

// ---------------------------------------------------------------------------------------
// Progress

struct Bars {
    multi: MultiProgress,
}

impl Bars {
    fn new(quiet: bool) -> Option<Bars> {
        (!quiet && std::io::stderr().is_terminal()).then(|| Bars {
            multi: MultiProgress::new(),
        })
    }
}

struct Bar(ProgressBar);

impl Progress for Bars {
    fn start(&self, digest: &Digest, size: u64) -> Box<dyn BlobProgress + '_> {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("Copying blob {}", digest.short()));
        bar.enable_steady_tick(Duration::from_millis(200));
        Box::new(Bar(bar))
    }
    fn note(&self, msg: &str) {
        let _ = self.multi.println(msg);
    }
}

impl BlobProgress for Bar {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn restart(&self) {
        self.0.set_position(0);
    }
    fn finish(&self, msg: &str) {
        self.0.finish_with_message(msg.to_string());
    }
}

// ---------------------------------------------------------------------------------------
// Pull

pub fn pull_cmd(root: Option<PathBuf>, args: PullArgs) -> Result<i32> {
    let store = open_store(root)?;
    let record = pull_image(&store, &args.image, &args.registry, args.quiet)?;
    println!("{}", record.id.hex());
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// Finding images, and `nook run IMAGE`

/// IDs of images that containers use: running ones (their nook process still lives)
/// and every container record (a stopped container starts again on its image's layers).
pub fn images_in_use(root: Option<PathBuf>) -> Vec<String> {
    let Ok(runtime) = nook_rootless::state::runtime_dir() else {
        return Vec::new();
    };
    let running = std::fs::read_dir(runtime.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("image")).ok())
        .filter_map(|t| {
            let mut lines = t.lines();
            let id = lines.next()?.to_string();
            let pid: i32 = lines.next()?.parse().ok()?;
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            alive.then_some(id)
        });
    let recorded: Vec<String> = crate::notify::places(root)
        .map(|p| p.all())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.record.image_id)
        .collect();
    running.chain(recorded).collect()
}

/// `system prune`'s image half: removes images without a name that no container uses;
/// returns how many.
pub fn prune_unnamed(root: Option<PathBuf>) -> Result<usize> {
    let store = open_store(root.clone())?;
    let in_use = images_in_use(root);
    let mut removed = 0;
    for image in store.images()? {
        if !image.names.is_empty() || in_use.iter().any(|id| id == image.id.hex()) {
            continue;
        }
        let removal = store.remove(&image.id, None, true)?;
        if !removal.trash.is_empty() {
            run_in_tmp(&store, &Job::Remove(removal.trash))
                .context("deleting the image's layers")?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// Says that what an image alone used stays for now (a writer runs: see
/// [`nook_fs::store::Store::collect_garbage`]).
fn say_deferred(removal: &nook_fs::store::Removal) {
    if removal.deferred {
        eprintln!(
            "nook: a pull, import or commit into this store is running: the removed image's \
             blobs and layers stay until `nook system prune` (run it once that has ended)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// images, rmi, inspect, tag

pub fn images_cmd(root: Option<PathBuf>, args: ImagesArgs) -> Result<i32> {
    let store = open_store(root)?;
    let images = store.images()?;
    if args.format.trim() == "json" {
        let list: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "Id": i.id.hex(),
                    "Names": i.names,
                    "Digest": i.manifest.to_string(),
                    "RepoDigests": i.repo_digests,
                    "Created": i.config.created,
                    "Size": i.size(),
                    "Stored": i.stored,
                    "Layers": i.layers.len(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if args.quiet {
        for i in &images {
            println!(
                "{}",
                if args.no_trunc {
                    i.id.hex()
                } else {
                    i.id.short()
                }
            );
        }
        return Ok(0);
    }
    let output = format::Output::parse(&args.format, IMAGES_TABLE)?;
    output.check(&ImageRow::default())?;
    let rows: Vec<ImageRow> = images
        .iter()
        .flat_map(|i| ImageRow::for_image(i, args.no_trunc))
        .collect();
    print!("{}", output.render(&rows, &[("ID", "IMAGE ID")])?);
    Ok(0)
}

/// `nook images`' default columns (podman's).
const IMAGES_TABLE: &str = "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Created}}\t{{.Size}}";

/// One line of `nook images`: one per name of an image (`<none>` for an unnamed one),
/// with podman's field names for `--format` templates.
#[derive(serde::Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ImageRow {
    repository: String,
    tag: String,
    /// Short unless --no-trunc, as in podman's table.
    #[serde(rename = "ID")]
    id: String,
    /// "YYYY-MM-DD HH:MM:SS" (UTC).
    created: String,
    /// The config's timestamp as recorded (RFC 3339).
    created_at: String,
    /// Human-readable, decimal units, three significant digits ("7.8 MB", units.rs).
    size: String,
    /// The manifest digest.
    digest: String,
    names: Vec<String>,
}

impl ImageRow {
    fn for_image(i: &ImageRecord, no_trunc: bool) -> Vec<ImageRow> {
        let id = if no_trunc { i.id.hex() } else { i.id.short() }.to_string();
        let created_at = i.config.created.clone().unwrap_or_default();
        // How long ago, as podman's CREATED column and `nook ps` say it.
        let created = crate::units::ago(&created_at);
        let names: Vec<(String, String)> = if i.names.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.names
                .iter()
                .map(
                    |n| match n.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                        Some((r, t)) => (r.to_string(), t.to_string()),
                        None => (n.clone(), "<none>".into()),
                    },
                )
                .collect()
        };
        names
            .into_iter()
            .map(|(repository, tag)| ImageRow {
                repository,
                tag,
                id: id.clone(),
                created: created.clone(),
                created_at: created_at.clone(),
                size: crate::units::human_size(i.size()),
                digest: i.manifest.to_string(),
                names: i.names.clone(),
            })
            .collect()
    }
}

pub fn rmi_cmd(root: Option<PathBuf>, args: RmiArgs) -> Result<i32> {
    let store = open_store(root.clone())?;
    if args.images.is_empty() && !args.all {
        bail!("nothing to remove: name an image (or --all)");
    }
    let targets: Vec<(String, ImageRecord)> = if args.all {
        store
            .images()?
            .into_iter()
            .map(|i| (i.id.hex().to_string(), i))
            .collect()
    } else {
        args.images
            .iter()
            .map(|n| Ok((n.clone(), find(&store, n)?)))
            .collect::<Result<_>>()?
    };
    let in_use = images_in_use(root);
    for (wanted, image) in targets {
        let is_id = image
            .id
            .hex()
            .starts_with(wanted.trim_start_matches("sha256:"));
        let name = if is_id {
            None
        } else {
            image
                .names
                .iter()
                .find(|n| name_matches(n, &wanted))
                .cloned()
        };
        let whole = is_id || args.all || image.names.len() <= 1;
        if whole && in_use.iter().any(|id| id == image.id.hex()) && !args.force {
            bail!(
                "image {wanted} ({}) is in use by a container: remove the container first (`nook ps -a` lists them), or use --force",
                image.id.short()
            );
        }
        let removal = store.remove(&image.id, name.as_deref(), is_id || args.all)?;
        for u in &removal.untagged {
            println!("Untagged: {u}");
        }
        if let Some(d) = &removal.deleted {
            for n in &d.names {
                println!("Untagged: {n}");
            }
            println!("Deleted: {}", d.id.hex());
        }
        say_deferred(&removal);
        if !removal.trash.is_empty() {
            run_in_tmp(&store, &Job::Remove(removal.trash))
                .context("deleting the image's layers")?;
        }
    }
    Ok(0)
}

/// Whether a stored name is what the user typed (a short name matches any registry).
fn name_matches(stored: &str, typed: &str) -> bool {
    let Ok(cfg) = registries() else {
        return stored == typed;
    };
    let Ok(parsed) = reference::parse(typed) else {
        return false;
    };
    let mut cands = cfg.candidates(&parsed);
    if let reference::Parsed::Short {
        repository,
        tag,
        digest,
    } = &parsed
    {
        cands.push(reference::Reference {
            registry: "localhost".into(),
            repository: repository.clone(),
            tag: tag.clone(),
            digest: digest.clone(),
        });
    }
    cands
        .iter()
        .any(|c| c.tagged_name().as_deref() == Some(stored))
}

pub fn inspect_cmd(root: Option<PathBuf>, args: InspectArgs) -> Result<i32> {
    let store = open_store(root)?;
    let mut out = Vec::new();
    for name in &args.images {
        let i = find(&store, name)?;
        out.push(serde_json::json!({
            "Id": i.id.hex(),
            "Digest": i.manifest.to_string(),
            "RepoTags": i.names,
            "RepoDigests": i.repo_digests,
            "Created": i.config.created,
            "Author": i.config.author,
            "Architecture": i.config.architecture,
            "Os": i.config.os,
            "Variant": i.config.variant,
            "Size": i.size(),
            "Config": i.config.config,
            "RootFS": { "Type": "layers", "Layers": i.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>() },
            "Layers": i.layers,
            "ManifestType": i.manifest_media_type,
            "History": i.config.history,
            "Store": {
                "Root": store.root(),
                "LayerDirs": i.layers.iter().map(|l| store.layer_dir(&l.diff_id)).collect::<Vec<_>>(),
            },
        }));
    }
    crate::format::print_inspected(&out, args.format.as_deref())
}

/// The stored form of a name the user gives for tag/import: qualified, with a tag.
pub fn qualify(name: &str) -> Result<String> {
    match reference::parse(name)? {
        reference::Parsed::Qualified(r) => r
            .tagged_name()
            .ok_or_else(|| anyhow!("{name:?}: a name for an image needs a tag, not a digest")),
        reference::Parsed::Short {
            repository, tag, ..
        } => Ok(format!(
            "localhost/{repository}:{}",
            tag.ok_or_else(|| anyhow!("{name:?}: use a tag, not a digest"))?
        )),
    }
}

pub fn tag_cmd(root: Option<PathBuf>, args: TagArgs) -> Result<i32> {
    let store = open_store(root)?;
    let mut image = find(&store, &args.image)?;
    for n in &args.names {
        let q = qualify(n)?;
        if !image.names.contains(&q) {
            image.names.push(q);
        }
    }
    store.add_image(image)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// import

pub fn import_cmd(root: Option<PathBuf>, args: ImportArgs) -> Result<i32> {
    let store = open_store(root)?;
    let name = args.name.as_deref().map(qualify).transpose()?;
    let _writing = store.hold_writes()?;
    let (src, len): (Box<dyn std::io::Read>, Option<u64>) = if args.tarball == Path::new("-") {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = std::fs::File::open(&args.tarball).with_context(|| {
            format!(
                "opening {}: give a root filesystem tarball",
                args.tarball.display()
            )
        })?;
        let len = file.metadata().ok().map(|m| m.len());
        (Box::new(file), len)
    };
    let (blob, size) = store
        .put_blob(src, None, None, "the tarball", |_| {})
        .map_err(|e| match len {
            Some(len) => e.needing(len),
            None => e,
        })?;
    let record = nook_fs::archive::record_from_rootfs_blob(&store, &blob, size, name)?;
    ensure_layers(&store, &record).context("importing the tarball")?;
    store.add_image(record.clone())?;
    println!("{}", record.id.hex());
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// login, logout

pub fn login_cmd(args: LoginArgs) -> Result<i32> {
    let registry = reference::normalise_registry(&args.registry);
    let username = match args.username {
        Some(u) => u,
        None => bail!("give the user name with --username (and the password with --password or --password-stdin)"),
    };
    let password = match (args.password, args.password_stdin) {
        (Some(p), false) => p,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (Some(_), true) => bail!("--password and --password-stdin exclude each other"),
        (None, false) => bail!("give the password with --password-stdin (or --password)"),
    };
    let creds = Credentials { username, password };
    let cfg = registries()?;
    let opts = ClientOptions {
        insecure: args.tls_verify == Some(false) || cfg.is_insecure(&registry),
        credentials: Some(creds.clone()),
    };
    let client = nook_fs::registry::Client::new(&registry, "", opts)?;
    client
        .check_login()
        .with_context(|| format!("logging in to {registry}"))?;
    auth::save(&registry, Some(&creds))?;
    println!("Login Succeeded!");
    Ok(0)
}

pub fn logout_cmd(args: LogoutArgs) -> Result<i32> {
    let registry = reference::normalise_registry(&args.registry);
    if !auth::save(&registry, None)? {
        bail!("not logged in to {registry}");
    }
    println!("Removed login credentials for {registry}");
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// system check

pub fn check_cmd(root: Option<PathBuf>, args: CheckArgs) -> Result<i32> {
    let store = open_store(root)?;
    let _lock = store.lock_exclusive()?;
    let mut problems = 0;
    let blobs_dir = store.root().join("blobs/sha256");
    let mut bad_blobs = Vec::new();
    for e in std::fs::read_dir(&blobs_dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ok = Digest::from_hex(&name).ok().and_then(|d| {
            let f = std::fs::File::open(e.path()).ok()?;
            let mut r = nook_fs::digest::HashingReader::new(f);
            std::io::copy(&mut r, &mut std::io::sink()).ok()?;
            Some(r.finish().0 == d)
        });
        if ok != Some(true) {
            problems += 1;
            println!("corrupt blob: {}", e.path().display());
            bad_blobs.push(e.path());
        }
    }
    let images = store.images()?;
    let mut broken = Vec::new();
    for i in &images {
        let mut missing = Vec::new();
        for d in std::iter::once(&i.manifest)
            .chain([&i.id])
            .chain(i.layers.iter().map(|l| &l.blob))
        {
            let p = store.blob_path(d);
            if !p.is_file() || bad_blobs.contains(&p) {
                missing.push(format!("blob {d}"));
            }
        }
        for l in &i.layers {
            if !store.has_layer(&l.diff_id) {
                missing.push(format!("layer {}", l.diff_id));
            }
        }
        if !missing.is_empty() {
            problems += 1;
            println!(
                "image {} ({}): missing or corrupt: {}",
                i.id.short(),
                i.names.join(", "),
                missing.join(", ")
            );
            broken.push(i.clone());
        }
    }
    if args.repair {
        for b in &bad_blobs {
            std::fs::remove_file(b).with_context(|| format!("removing {}", b.display()))?;
        }
        drop(_lock);
        for i in &broken {
            let blobs_ok = std::iter::once(&i.manifest)
                .chain([&i.id])
                .chain(i.layers.iter().map(|l| &l.blob))
                .all(|d| store.has_blob(d));
            if blobs_ok {
                ensure_layers(&store, i)?;
                println!("repaired image {}: layers unpacked again", i.id.short());
            } else {
                let removal = store.remove(&i.id, None, true)?;
                if !removal.trash.is_empty() {
                    store_helper::run(&Job::Remove(removal.trash))?;
                }
                println!(
                    "removed image {} ({}): pull it again",
                    i.id.short(),
                    i.names.join(", ")
                );
            }
        }
    }
    report_unreferenced(&store, args.repair)?;
    if problems == 0 {
        println!(
            "store {}: {} images, all blobs verified",
            store.root().display(),
            images.len()
        );
        Ok(0)
    } else if args.repair {
        Ok(0)
    } else {
        eprintln!("nook: {problems} problem(s) in the store: run `nook system check --repair`");
        Ok(1)
    }
}

/// `system check`'s report of blobs and layers no image references (not a problem:
/// space to reclaim); with `repair`, their removal.
fn report_unreferenced(store: &Store, repair: bool) -> Result<()> {
    if repair {
        match collect_unreferenced(store)? {
            Some(r) if r.blobs + r.layers > 0 => println!(
                "removed {} blob(s) and {} layer(s) no image used: {} reclaimed",
                r.blobs,
                r.layers,
                crate::units::human_size(r.bytes)
            ),
            Some(_) => {}
            None => println!(
                "blobs and layers no image uses are kept: a pull, import or commit into \
                 this store is running"
            ),
        }
        return Ok(());
    }
    let found = store.unreferenced(&store.images()?)?;
    if found.blobs.is_empty() && found.layers.is_empty() {
        return Ok(());
    }
    if store.writers_active()? {
        println!(
            "{} blob(s) and {} layer(s) no image references yet: a pull, import or commit \
             into this store is running",
            found.blobs.len(),
            found.layers.len()
        );
        return Ok(());
    }
    let mut bytes: u64 = found.blobs.iter().map(|(_, n)| n).sum();
    if !found.layers.is_empty() {
        bytes += store_helper::run(&Job::Usage(found.layers.clone()))?
            .bytes
            .iter()
            .sum::<u64>();
    }
    println!(
        "reclaimable: {} blob(s) and {} layer(s) no image uses, {} \
         (`nook system prune` or `nook system check --repair` removes them)",
        found.blobs.len(),
        found.layers.len(),
        crate::units::human_size(bytes)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// load, save

pub fn load_cmd(root: Option<PathBuf>, args: crate::flags::LoadArgs) -> Result<i32> {
    let store = open_store(root)?;
    let input = args.input.clone().unwrap_or_else(|| PathBuf::from("-"));
    if input == Path::new("-") && std::io::stdin().is_terminal() {
        bail!("no archive given: use --input FILE, or pipe one in (`nook load < image.tar`)");
    }
    let _writing = store.hold_writes()?;
    let records = nook_fs::archive::load(&store, &input, &Platform::host())
        .with_context(|| format!("loading {}", input.display()))?;
    for record in records {
        ensure_layers(&store, &record)?;
        store.add_image(record.clone())?;
        if record.names.is_empty() {
            println!("Loaded image: {}", record.id.hex());
        }
        for n in &record.names {
            println!("Loaded image: {n}");
        }
    }
    Ok(0)
}

pub fn save_cmd(root: Option<PathBuf>, args: crate::flags::SaveArgs) -> Result<i32> {
    if args.format != "oci-archive" {
        bail!("unsupported --format {:?}: nook saves oci-archive (podman, skopeo and docker 25+ load it)", args.format);
    }
    let store = open_store(root)?;
    let image = find(&store, &args.image)?;
    let name = image
        .names
        .iter()
        .find(|n| name_matches(n, &args.image))
        .cloned();
    let _lock = store.lock_shared()?;
    match &args.output {
        Some(p) => {
            let tmp = p.with_extension(format!("nook-tmp{}", std::process::id()));
            let f = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let r = nook_fs::archive::save_oci(
                &store,
                &image,
                name.as_deref(),
                std::io::BufWriter::new(f),
            );
            if let Err(e) = r {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            std::fs::rename(&tmp, p).with_context(|| format!("writing {}", p.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal: use --output FILE or redirect stdout");
            }
            nook_fs::archive::save_oci(&store, &image, name.as_deref(), std::io::stdout().lock())?;
        }
    }
    Ok(0)
}
