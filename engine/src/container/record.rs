//! A container's record: what it was created with (`config.json`) and what it is doing
//! (`state.json`), found by name or ID prefix.
//!
//! Where records live: a container made with `--rm` keeps its record in the runtime dir
//! (`$RUNTIME/containers/ID`, tmpfs, gone after a reboot as the container would be);
//! every other container in the store (`$STORE/containers/ID`), so that `nook ps -a`,
//! `start` and `rm` work after a reboot. Both kinds have their runtime files (generated
//! /etc files, the attach socket) under `$RUNTIME/containers/ID`.
//!
//! Who writes `state.json`: the container's supervisor while it lives; the CLI only when
//! no supervisor does. Every write is a temp file renamed over the old one, so a reader
//! sees the old or the new state, never half. A state that says "running" is believed
//! only while the recorded supervisor (pid and start time, so a recycled pid is not
//! mistaken for it) is alive: after `kill -9` of the supervisor or a reboot, the
//! container shows as exited, with that as the reason.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Context, Result};
use crate::{bail, format_err};
use nook_rootless::process::PidFd;
use serde::{Deserialize, Serialize};

use crate::request::RunRequest;

/// The two directories container records live in.
pub struct Places {
    /// `$RUNTIME/containers`: `--rm` records and every container's runtime files.
    pub runtime: PathBuf,
    /// `$STORE/containers`: records of containers kept after they exit.
    pub persistent: Option<PathBuf>,
    /// How a record of the format before requests (nook's command line) is read: the
    /// caller's, who knows that command line (None: such a record cannot be read).
    pub migrate: Option<Migrate>,
}

/// The request of a format-1 record: its argv parsed, `-e NAME` resolved from its
/// recorded environment, relative paths from its recorded directory.
pub type Migrate = fn(&LegacyRecord) -> std::result::Result<RunRequest, String>;

impl Places {
    /// These places reading format-1 records through `migrate`.
    pub fn migrating(mut self, migrate: Option<Migrate>) -> Places {
        self.migrate = migrate;
        self
    }

    pub fn open(store_root: Option<PathBuf>) -> Result<Places> {
        let runtime = nook_rootless::state::runtime_dir()?.join("containers");
        let store_root = nook_fs::paths::store_root(store_root);
        if let Some(root) = &store_root {
            // Another account's store: refused before a record in it is read, so no
            // command lists, inspects or acts on that account's containers.
            nook_fs::paths::check_own_dir(root, "image store", nook_fs::paths::STORE_HINT)?;
        }
        let persistent = store_root.map(|r| r.join("containers"));
        Ok(Places {
            runtime,
            persistent,
            migrate: None,
        })
    }

    /// For `run`: a `--rm` container of `host` or of a `--rootfs` directory needs no
    /// store. Nothing of the store is created for it, and a store that cannot be used
    /// (another account's, unreadable) is passed over: the container is then listed by
    /// no store's `ps` (it has none), and the run goes on.
    pub fn for_run(store_root: Option<PathBuf>, req: &RunRequest) -> Result<Places> {
        let needs_store = !req.rm || !(req.rootfs || req.image == nook_fs::host_image::NAME);
        if needs_store {
            return Places::open(store_root);
        }
        let runtime = nook_rootless::state::runtime_dir()?.join("containers");
        let persistent =
            nook_fs::paths::store_root(store_root).filter(
                |root| match nook_fs::paths::check_own_dir(
                    root,
                    "image store",
                    nook_fs::paths::STORE_HINT,
                ) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::debug!("{e}: this --rm run needs no store");
                        false
                    }
                },
            );
        Ok(Places {
            runtime,
            persistent: persistent.map(|r| r.join("containers")),
            migrate: None,
        })
    }

    fn record_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for base in std::iter::once(&self.runtime).chain(self.persistent.as_ref()) {
            let Ok(entries) = fs::read_dir(base) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().join(CONFIG).is_file() {
                    dirs.push(e.path());
                }
            }
        }
        dirs
    }

    /// Every container of this store, newest first. (`--rm` records share the user's
    /// runtime dir whatever the store: each names the store it belongs to.)
    pub fn all(&self) -> Vec<Container> {
        let mut all: Vec<Container> = self
            .record_dirs()
            .into_iter()
            .filter_map(|d| Container::load(&d, self.migrate).ok())
            .filter(|c| !c.dir.starts_with(&self.runtime) || c.record.store == self.persistent)
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.record.created_unix_ns));
        all
    }

    /// Record directories of this store whose record cannot be read (corrupt, cut
    /// short, a newer format): listed by `ps -a` with why, removable by name or ID.
    pub fn broken(&self) -> Vec<Broken> {
        self.record_dirs()
            .into_iter()
            .filter(|d| {
                d.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            })
            // A --rm record names its store inside, which a broken one cannot say: the
            // runtime dir's are listed under the store of their ID's name link, if any.
            .filter_map(|dir| {
                let why = match Container::load(&dir, self.migrate) {
                    Ok(_) => return None,
                    Err(e) => crate::error::chain_line(&e),
                };
                let id = dir.file_name()?.to_str()?.to_string();
                let name = self.name_of(&id);
                if dir.starts_with(&self.runtime) && name.is_none() {
                    return None;
                }
                Some(Broken { dir, id, name, why })
            })
            .collect()
    }

    /// The broken record `key` names (its name, its ID, or a unique ID prefix).
    pub fn find_broken(&self, key: &str) -> Option<Broken> {
        let broken = self.broken();
        if let Some(b) = broken
            .iter()
            .find(|b| b.id == key || b.name.as_deref() == Some(key))
        {
            return Some(b.clone());
        }
        let mut hits = broken
            .into_iter()
            .filter(|b| !key.is_empty() && b.id.starts_with(key));
        match (hits.next(), hits.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// The name whose link points at container `id`, in either place.
    fn name_of(&self, id: &str) -> Option<String> {
        [false, true].into_iter().find_map(|rm| {
            fs::read_dir(self.names_dir(rm))
                .ok()?
                .flatten()
                .find(|e| fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == id))
                .and_then(|e| e.file_name().into_string().ok())
        })
    }

    /// The container named `key`: its name, its full ID, or a unique ID prefix.
    pub fn find(&self, key: &str) -> Result<Container> {
        let all = self.all();
        if let Some(c) = all
            .iter()
            .find(|c| c.record.name == key || c.record.id == key)
        {
            return Ok(c.clone());
        }
        let matches: Vec<&Container> = all
            .iter()
            .filter(|c| !key.is_empty() && c.record.id.starts_with(key))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => match self.find_broken(key) {
                Some(b) => bail!(
                    "container {} cannot be read ({}): `nook rm {key}` removes it",
                    b.name.as_deref().unwrap_or(&b.id[..12]),
                    b.why
                ),
                None => bail!("no container named {key:?}: `nook ps -a` lists them"),
            },
            _ => bail!(
                "{key:?} matches {} containers: give more of the ID, or the name",
                matches.len()
            ),
        }
    }

    /// Where the names of kept containers (`rm` false) or of `--rm` ones live.
    fn names_dir(&self, rm: bool) -> PathBuf {
        match (&self.persistent, rm) {
            (Some(p), false) => p.join("names"),
            // Per store, as the store's own names are: runs with another --root may
            // use the same names at the same time.
            (store, _) => {
                let key = store.as_ref().map_or_else(
                    || "none".to_string(),
                    |p| {
                        let d = nook_fs::digest::Digest::of(p.as_os_str().as_encoded_bytes());
                        d.hex()[..16].to_string()
                    },
                );
                self.runtime.with_file_name("names").join(key)
            }
        }
    }

    /// Reserves `name` for `id` (a `--rm` container when `rm`): a symlink `NAME -> ID`,
    /// atomic, so two creators racing for one name cannot both win. A link whose
    /// container is gone is reclaimed. The link is made first in its own place, then the
    /// other place is checked: of two creators in different places, at most one wins.
    pub fn reserve_name(&self, name: &str, id: &str, rm: bool) -> Result<()> {
        check_name(name)?;
        let dir = self.names_dir(rm);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| match rm {
                false => format_err!(
                    "creating {}: {e}; point NOOK_ROOT or --root at a writable directory of \
                     your own",
                    dir.display()
                ),
                true => format_err!("creating {}: {e}", dir.display()),
            })?;
        let link = dir.join(name);
        let mut made = false;
        for _ in 0..2 {
            match std::os::unix::fs::symlink(id, &link) {
                Ok(()) => {
                    made = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if let Some(holder) = self.live_holder(&link) {
                        bail!(in_use(name, &holder));
                    }
                    let _ = fs::remove_file(&link);
                }
                Err(e) => return Err(e).with_context(|| format!("reserving name {name:?}")),
            }
        }
        if !made {
            bail!("the name {name:?} is being taken by another nook right now");
        }
        let other = self.names_dir(!rm);
        if other != dir {
            if let Some(holder) = self.live_holder(&other.join(name)).filter(|h| h != id) {
                let _ = fs::remove_file(&link);
                bail!(in_use(name, &holder));
            }
        }
        Ok(())
    }

    /// The container a name link points at, if it still exists.
    fn live_holder(&self, link: &Path) -> Option<String> {
        let holder = fs::read_link(link).ok()?;
        let holder = holder.to_string_lossy().into_owned();
        self.record_exists(&holder).then_some(holder)
    }

    pub fn release_name(&self, name: &str, id: &str) {
        for rm in [false, true] {
            let link = self.names_dir(rm).join(name);
            if fs::read_link(&link).is_ok_and(|h| h.as_os_str() == id) {
                let _ = fs::remove_file(link);
            }
        }
    }

    fn record_exists(&self, id: &str) -> bool {
        !id.is_empty()
            && (self.runtime.join(id).join(CONFIG).exists()
                || self
                    .persistent
                    .as_ref()
                    .is_some_and(|p| p.join(id).join(CONFIG).exists()))
    }
}

/// A record directory whose record cannot be read.
#[derive(Clone, Debug)]
pub struct Broken {
    pub dir: PathBuf,
    pub id: String,
    /// The name reserved for it, if a name link points at it.
    pub name: Option<String>,
    /// Why its record cannot be read.
    pub why: String,
}

fn in_use(name: &str, holder: &str) -> String {
    format!(
        "the name {name:?} is in use by container {}: choose another name, or remove that \
         container (`nook rm {name}`)",
        &holder[..holder.len().min(12)]
    )
}

fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !valid {
        bail!("invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*");
    }
    Ok(())
}

const CONFIG: &str = "config.json";
const STATE: &str = "state.json";

/// The record format this nook writes. 1 (no `version` field): nook's command line and
/// the creating shell's environment, migrated on first read (see [`Container::load`]).
pub const RECORD_VERSION: u32 = 2;

/// What a container was created with; written once (and on `rename`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Record {
    /// The record format ([`RECORD_VERSION`]).
    pub version: u32,
    pub id: String,
    pub name: String,
    pub created: String,
    pub created_unix_ns: u128,
    /// The stored image's ID (config digest hex): `rmi` knows it is in use, and every
    /// later start runs this image, without pulling.
    #[serde(default)]
    pub image_id: Option<String>,
    /// What was asked: every start rebuilds the container from it.
    pub request: RunRequest,
    /// The writable layer when it lives outside the record directory (a record on NFS).
    pub layer_dir: Option<PathBuf>,
    /// The store's containers directory this container belongs to.
    #[serde(default)]
    pub store: Option<PathBuf>,
}

/// A record as nook wrote it before records held a [`RunRequest`] (format 1): its
/// command line and the creating shell's whole environment, re-parsed at every start.
#[derive(Deserialize)]
pub struct LegacyRecord {
    pub id: String,
    pub name: String,
    pub created: String,
    pub created_unix_ns: u128,
    #[serde(default)]
    pub image_id: Option<String>,
    /// `nook`'s arguments from `run`/`create` on (global flags may come first).
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub layer_dir: Option<PathBuf>,
    #[serde(default)]
    pub store: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Stopping,
    Exited,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Exited => "exited",
        }
    }
}

/// A process identified beyond its pid: pid and start time (clock ticks after boot).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: i32,
    pub start: u64,
}

impl ProcessId {
    pub fn of(pid: i32) -> Option<ProcessId> {
        Some(ProcessId {
            pid,
            start: process_start_time(pid)?,
        })
    }

    pub fn current() -> ProcessId {
        ProcessId::of(std::process::id() as i32).unwrap_or(ProcessId {
            pid: std::process::id() as i32,
            start: 0,
        })
    }

    pub fn alive(self) -> bool {
        process_start_time(self.pid) == Some(self.start)
    }

    /// A pidfd on the process, if it is still the one recorded: checked after opening,
    /// so from then on the pidfd refers to it whatever becomes of the pid.
    pub fn pidfd(self) -> Option<PidFd> {
        let pidfd = PidFd::open(self.pid).ok()?;
        self.alive().then_some(pidfd)
    }
}

/// The start time of a live process (a zombie has ended: only its parent has not
/// collected it yet).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = nook_rootless::process::Stat::of(pid)?;
    if stat.ended() {
        return None;
    }
    stat.start_time()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct State {
    pub status: Status,
    /// The container's first process (host pid).
    pub pid: Option<ProcessId>,
    /// The process that supervises it: the detached supervisor or the foreground `nook`.
    pub supervisor: Option<ProcessId>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    /// Why it ended when that is not its own doing (stopped, OOM, supervisor gone, error).
    pub reason: Option<String>,
    pub restarts: u32,
    /// Host ports of `-p`/`-P`, as `HOSTIP:HOSTPORT->CTRPORT/PROTO`.
    pub ports: Vec<String>,
    /// The first process's working directory inside the container (`-w`, else the
    /// image's WorkingDir, else /): where `nook exec` starts without `-w`, as podman's.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
}

/// One container: its record directory and what it was created with.
#[derive(Clone, Debug)]
pub struct Container {
    pub dir: PathBuf,
    pub record: Record,
}

impl Container {
    /// Creates the record of a new container (state "created": no state file yet, so
    /// the first start writes one without replacing any; on ext4 a rename over an
    /// existing file forces a data flush, which a CI runner's every `run --rm` would pay).
    /// `image_id`: the stored image it runs, if any.
    pub fn create(
        places: &Places,
        request: &RunRequest,
        image_id: Option<String>,
    ) -> Result<Container> {
        let id = new_container_id()?;
        let name = match &request.name {
            Some(name) => {
                places.reserve_name(name, &id, request.rm)?;
                name.clone()
            }
            None => generated_name(places, &id, request.rm)?,
        };
        let base = match (&places.persistent, request.rm) {
            (Some(p), false) => p.clone(),
            _ => places.runtime.clone(),
        };
        let dir = base.join(&id);
        // Written under a temporary name and renamed whole: a directory named by an ID
        // always holds its record (so a concurrent prune never takes it for an orphan).
        let new_dir = base.join(format!(".new-{id}"));
        let made = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&new_dir)
            .map_err(|e| {
                let fix = match base == places.runtime {
                    true => "",
                    false => "; point NOOK_ROOT or --root at a writable directory of your own",
                };
                format_err!(
                    "creating the container's directory {}: {e}{fix}",
                    new_dir.display()
                )
            });
        if let Err(e) = made {
            places.release_name(&name, &id);
            return Err(e);
        }
        let now = SystemTime::now();
        let record = Record {
            created: humantime::format_rfc3339_nanos(now).to_string(),
            created_unix_ns: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            version: RECORD_VERSION,
            id,
            name,
            image_id,
            request: request.clone(),
            layer_dir: None,
            store: places.persistent.clone(),
        };
        let mut container = Container {
            dir: new_dir.clone(),
            record,
        };
        let written = container.write_record().and_then(|_| {
            fs::rename(&new_dir, &dir).with_context(|| format!("creating {}", dir.display()))
        });
        if let Err(e) = written {
            container.remove_files();
            places.release_name(&container.record.name, &container.record.id);
            return Err(e);
        }
        container.dir = dir;
        Ok(container)
    }

    /// Reads the record in `dir`; one in the format before [`RECORD_VERSION`] 2 is
    /// migrated (its flags parsed once more, its environment used for `-e NAME` and then
    /// dropped) and written back, so the caller's environment leaves the store.
    pub fn load(dir: &Path, migrate: Option<Migrate>) -> Result<Container> {
        let text = fs::read(dir.join(CONFIG))
            .with_context(|| format!("reading {}", dir.join(CONFIG).display()))?;
        let value: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a container record", dir.display()))?;
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        let record = match version {
            None => {
                let legacy: LegacyRecord = serde_json::from_value(value)
                    .with_context(|| format!("{} is not a container record", dir.display()))?;
                let Some(migrate) = migrate else {
                    bail!(
                        "{} holds a container record of an older nook (format 1): any \
                         `nook` command that lists containers migrates it",
                        dir.display()
                    );
                };
                let record = upgrade(legacy, migrate).with_context(|| {
                    format!("migrating the container record in {}", dir.display())
                })?;
                let ctr = Container {
                    dir: dir.to_path_buf(),
                    record,
                };
                // Not written back: still usable; the next read tries again.
                if let Err(e) = ctr.write_record() {
                    tracing::debug!("rewriting the migrated record: {e:#}");
                }
                return Ok(ctr);
            }
            Some(v) if v > RECORD_VERSION as u64 => bail!(
                "{} holds a container record of format {v}, newer than this nook's                  ({RECORD_VERSION}): use the nook that created it",
                dir.display()
            ),
            Some(_) => serde_json::from_value(value)
                .with_context(|| format!("{} is not a container record", dir.display()))?,
        };
        Ok(Container {
            dir: dir.to_path_buf(),
            record,
        })
    }

    pub fn short_id(&self) -> &str {
        &self.record.id[..12]
    }

    /// The container's runtime files (generated /etc, attach socket).
    pub fn runtime_dir(&self, places: &Places) -> PathBuf {
        places.runtime.join(&self.record.id)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("ctr.log")
    }

    /// The marker a manual stop leaves, so the restart policy does not undo it.
    pub fn stop_marker(&self) -> PathBuf {
        self.dir.join("stopped-by-user")
    }

    pub fn write_record(&self) -> Result<()> {
        write_atomic(
            &self.dir.join(CONFIG),
            &serde_json::to_vec_pretty(&self.record)?,
        )
    }

    pub fn write_state(&self, state: &State) -> Result<()> {
        write_atomic(&self.dir.join(STATE), &serde_json::to_vec_pretty(state)?)
    }

    /// The state as recorded.
    pub fn recorded_state(&self) -> State {
        fs::read(self.dir.join(STATE))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default()
    }

    /// The state as it is: a running state whose supervisor is gone is exited.
    pub fn state(&self) -> State {
        let mut state = self.recorded_state();
        let supervised = state.supervisor.is_some_and(ProcessId::alive);
        if matches!(state.status, Status::Running | Status::Stopping) && !supervised {
            state.status = Status::Exited;
            state.reason = Some(
                "its supervisor is gone (killed, or the machine restarted) before it \
                 recorded the exit"
                    .into(),
            );
            state.exit_code = state.exit_code.or(Some(137));
        }
        state
    }

    /// Whether a supervisor (detached or a foreground `nook`) owns this container now.
    pub fn supervised(&self) -> bool {
        self.recorded_state()
            .supervisor
            .is_some_and(ProcessId::alive)
    }

    /// Removes the record directory (the caller removed the writable layer first).
    pub fn remove_files(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `path` replaced whole: a temp file in the same directory, renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = nook_rootless::state::create_file(&tmp, nook_rootless::state::PRIVATE_FILE)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// 64 hex digits, as podman's IDs; the first 12 are the short ID and default hostname.
pub fn new_container_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("getrandom");
        }
        filled += n as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

const ADJECTIVES: [&str; 16] = [
    "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "quiet", "sharp", "tender", "vivid", "witty",
];
const NOUNS: [&str; 16] = [
    "badger", "crane", "dingo", "egret", "falcon", "gecko", "heron", "ibis", "jackal", "koala",
    "lemur", "marten", "newt", "otter", "panda", "wren",
];

/// A name as podman makes one (adjective_noun), with a suffix from the ID when taken.
fn generated_name(places: &Places, id: &str, rm: bool) -> Result<String> {
    let b = u8::from_str_radix(&id[..2], 16).unwrap_or(0);
    let base = format!(
        "{}_{}",
        ADJECTIVES[(b >> 4) as usize],
        NOUNS[(b & 15) as usize]
    );
    if places.reserve_name(&base, id, rm).is_ok() {
        return Ok(base);
    }
    let name = format!("{base}_{}", &id[2..8]);
    places.reserve_name(&name, id, rm)?;
    Ok(name)
}

/// A format-1 record as a current one: its flags parsed into a request, `-e NAME` and
/// `--env-file` resolved with the environment and directory it recorded.
fn upgrade(legacy: LegacyRecord, migrate: Migrate) -> Result<Record> {
    let request = migrate(&legacy)?;
    Ok(Record {
        version: RECORD_VERSION,
        id: legacy.id,
        name: legacy.name,
        created: legacy.created,
        created_unix_ns: legacy.created_unix_ns,
        image_id: legacy.image_id,
        request,
        layer_dir: legacy.layer_dir,
        store: legacy.store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_start_time_is_readable_and_alive() {
        let me = ProcessId::current();
        assert!(me.start > 0);
        assert!(me.alive());
        assert!(!ProcessId {
            start: me.start + 1,
            ..me
        }
        .alive());
    }
}
