//! The store's work that needs the container's user namespace: unpacking layers (so
//! owners come out as the image says), copying layers into a container root, and
//! deleting trees owned by subordinate IDs.
//!
//! Creating a user namespace needs a single-threaded process, and `nook pull` has
//! download threads. So the work runs in a fresh process: nook re-executes itself as
//! the hidden `nook __store-helper`, sends the job as JSON on stdin, and reads the
//! result as JSON from stdout. The helper is single-threaded until it has forked into
//! the namespace (nook_rootless::run_in_user_namespace, with the default ID map podman
//! uses: 0 → you, 1.. → your subordinate range, or a single-ID map); inside, it may use
//! threads again (layers unpack in parallel).
//!
//! The helper dies with the nook that started it ([`die_with_parent`]: kill -9 of a
//! `nook pull` mid-unpack stops the unpack too), and may hold an ownership lock with it
//! (nook_fs::owner): the store's tmp/ lock while it unpacks there, a copy root's lock
//! while it fills it. A killed command's leftovers are then swept only once its helper
//! has exited as well.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::bail;
use crate::error::{Context, Result};
use nook_fs::digest::Digest;
use nook_fs::unpack::UnpackStats;
use nook_rootless::idmap::{self, HostIds, UsernsMode};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub enum Job {
    /// Unpack each blob into `dest/diff` (dest is created).
    Unpack(Vec<UnpackJob>),
    /// Copy layer directories, lowest first, into `dest` (created).
    Flatten { layers: Vec<PathBuf>, dest: PathBuf },
    /// Delete these trees (the outcome's `bytes`: what each used).
    Remove(Vec<PathBuf>),
    /// The disk space each of these trees uses (hard links counted once).
    Usage(Vec<PathBuf>),
    /// List a container's changes: its upper layer over the image's layers (lowest first).
    Changes {
        upper: PathBuf,
        layers: Vec<PathBuf>,
    },
    /// Write a container's upper layer as an OCI layer tar (whiteouts as `.wh.`).
    LayerTar { upper: PathBuf, dest: PathBuf },
}

#[derive(Serialize, Deserialize)]
pub struct UnpackJob {
    pub blob: PathBuf,
    pub diff_id: Option<Digest>,
    pub dest: PathBuf,
    /// The store `dest` is in: named when its filesystem is full.
    #[serde(default)]
    pub store: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Default)]
pub struct Outcome {
    pub error: Option<String>,
    pub stats: Vec<UnpackStats>,
    /// `Changes`: "A /path", "C /path", "D /path", sorted by path.
    #[serde(default)]
    pub changes: Vec<String>,
    /// `Remove`, `Usage`: bytes on disk, one number per path.
    #[serde(default)]
    pub bytes: Vec<u64>,
}

/// Runs `job` in the helper and returns its outcome (an error when the job failed).
pub fn run(job: &Job) -> Result<Outcome> {
    run_holding(job, None)
}

/// [`run`], with the helper holding the ownership lock `hold` too (it inherits the
/// descriptor), for as long as it lives.
pub fn run_holding(job: &Job, hold: Option<BorrowedFd<'_>>) -> Result<Outcome> {
    let mut cmd = crate::helpers::store_helper()?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let hold = hold.map(|fd| fd.as_raw_fd());
    die_with_parent(&mut cmd, move || match hold {
        // The descriptor is close-on-exec in nook; the helper's copy must stay open.
        // SAFETY: fcntl on a descriptor number, in the child between fork and exec.
        Some(fd) if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 => {
            Err(std::io::Error::last_os_error())
        }
        _ => Ok(()),
    });
    let mut child = cmd.spawn().context("starting nook's store helper")?;
    let input = serde_json::to_vec(job).expect("jobs serialise");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(&input)
        .context("sending the job to the store helper")?;
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut out)
        .context("reading the store helper's answer")?;
    let status = child.wait().context("waiting for the store helper")?;
    let outcome: Outcome = match serde_json::from_slice(&out) {
        Ok(o) => o,
        Err(_) => bail!("nook's store helper failed ({status}) without saying why"),
    };
    if let Some(e) = &outcome.error {
        bail!("{e}");
    }
    Ok(outcome)
}

/// Makes the process `cmd` starts die with this one, even under kill -9: SIGKILL on
/// the parent's death (PR_SET_PDEATHSIG), armed in the child before exec and checked
/// against the parent's pid, since the parent may have died before it was armed (the
/// child then belongs to a reaper and must not go on). `also` runs after, in the child.
/// The signal comes when the forking thread ends: callers wait for the child on it.
pub fn die_with_parent(
    cmd: &mut Command,
    also: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid,
    // _exit, and whatever `also` does, which callers keep to such calls).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(125);
            }
            also()
        });
    }
}

/// `nook __store-helper`: the process side. Returns the exit code.
pub fn main() -> Result<i32> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading the job")?;
    let job: Job = serde_json::from_slice(&input).context("parsing the job")?;
    let ids = idmap::plan(&UsernsMode::Default, &HostIds::current())?;
    let status = nook_rootless::run_in_user_namespace(&ids.uid_map, &ids.gid_map, move || {
        let outcome = match work(job) {
            Ok(outcome) => outcome,
            Err(e) => Outcome {
                error: Some(crate::error::chain_line(&e).to_string()),
                ..Outcome::default()
            },
        };
        let failed = outcome.error.is_some();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&serde_json::to_vec(&outcome).expect("outcomes serialise"));
        let _ = out.flush();
        i32::from(failed)
    })?;
    Ok(status.code())
}

fn work(job: Job) -> Result<Outcome> {
    let stats = match job {
        Job::Unpack(jobs) => {
            // Layers unpack in parallel: each is its own directory. Two at a time per
            // core is plenty: decompression is the cost, and disks like fewer streams.
            let workers = std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(jobs.len())
                .max(1);
            let queue = std::sync::Mutex::new(jobs.iter().enumerate().collect::<Vec<_>>());
            let results = std::sync::Mutex::new(vec![None; jobs.len()]);
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(|| loop {
                        let Some((i, j)) = queue.lock().expect("not poisoned").pop() else {
                            return;
                        };
                        let r = unpack_one(j);
                        let failed = r.is_err();
                        results.lock().expect("not poisoned")[i] =
                            Some(r.map_err(|e| crate::error::chain_line(&e).to_string()));
                        if failed {
                            queue.lock().expect("not poisoned").clear();
                        }
                    });
                }
            });
            let mut stats = Vec::new();
            for r in results
                .into_inner()
                .expect("not poisoned")
                .into_iter()
                .flatten()
            {
                match r {
                    Ok(s) => stats.push(s),
                    Err(e) => bail!("{e}"),
                }
            }
            stats
        }
        Job::Flatten { layers, dest } => {
            nook_rootless::state::create_dir(&dest, 0o755)
                .with_context(|| format!("creating {}", dest.display()))?;
            if let Err(e) = nook_fs::flatten::flatten(&layers, &dest) {
                if nook_fs::space::is_no_space(&e) {
                    return Err(copy_no_space(&e, &layers, &dest).into());
                }
                return Err(e).context("building the container's root filesystem");
            }
            Vec::new()
        }
        Job::Remove(paths) => {
            let mut seen = std::collections::HashSet::new();
            let mut bytes = Vec::new();
            for p in paths {
                bytes.push(usage(&p, &mut seen));
                remove_tree(&p).with_context(|| format!("removing {}", p.display()))?;
            }
            return Ok(Outcome {
                bytes,
                ..Outcome::default()
            });
        }
        Job::Usage(paths) => {
            let mut seen = std::collections::HashSet::new();
            let bytes = paths.iter().map(|p| usage(p, &mut seen)).collect();
            return Ok(Outcome {
                bytes,
                ..Outcome::default()
            });
        }
        Job::Changes { upper, layers } => {
            let layers = nook_fs::union::Layers::new(layers)?;
            let changes = nook_fs::union::diff::changes(&upper, &layers)?;
            return Ok(Outcome {
                changes: changes
                    .iter()
                    .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
                    .collect(),
                ..Outcome::default()
            });
        }
        Job::LayerTar { upper, dest } => {
            let file = nook_rootless::state::create_file(&dest, nook_rootless::state::PRIVATE_FILE)
                .with_context(|| format!("creating {}", dest.display()))?;
            nook_fs::union::diff::write_layer(&upper, std::io::BufWriter::new(file))?
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .context("writing the layer")?;
            Vec::new()
        }
    };
    Ok(Outcome {
        stats,
        ..Outcome::default()
    })
}

fn unpack_one(j: &UnpackJob) -> Result<UnpackStats> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&j.dest)
        .with_context(|| format!("creating {}", j.dest.display()))?;
    // The layer's root is the container's /: 0755 unless the layer lists its own `./`
    // (the unpacker then applies that entry's mode), not whatever the umask makes it.
    let diff = j.dest.join("diff");
    nook_rootless::state::create_dir(&diff, 0o755)
        .with_context(|| format!("creating {}", diff.display()))?;
    let stats = match nook_fs::unpack::unpack_layer(&j.blob, j.diff_id.as_ref(), &diff) {
        Ok(stats) => stats,
        Err(nook_fs::unpack::UnpackError::NoSpace(mut full)) => {
            // Gone before the free space is measured: what the user has is what counts.
            let _ = remove_tree(&j.dest);
            if let Some(store) = &j.store {
                full.place = format!("the image store {}", store.display());
                full.path = store.clone();
                full.fix = nook_fs::space::STORE_FIX.into();
            }
            if let Some(d) = &j.diff_id {
                full.what = format!("unpacking layer {d}");
            }
            return Err(full.measure().into());
        }
        Err(e) => return Err(e.into()),
    };
    let meta = serde_json::to_vec_pretty(&stats).expect("stats serialise");
    let stats_file = j.dest.join("stats.json");
    nook_rootless::state::write_file(&stats_file, meta, nook_rootless::state::PRIVATE_FILE)
        .context("writing the layer's stats")?;
    Ok(stats)
}

/// The copy driver's copy did not fit: the image's size (what the copy needs) and the
/// space free once the partial copy is gone.
fn copy_no_space(
    e: &std::io::Error,
    layers: &[PathBuf],
    dest: &std::path::Path,
) -> nook_fs::space::NoSpace {
    let _ = remove_tree(dest);
    let place = dest.parent().unwrap_or(dest);
    nook_fs::space::NoSpace::new(
        e,
        "copying the image for --storage-driver copy",
        format!("{}", place.display()),
        place,
        "use --storage-driver overlay or fuse (they share the image's layers instead of \
         copying them), or make room there",
    )
    .needing(layers.iter().map(|l| tree_size(l)).sum())
}

/// Bytes of the regular files under `dir` (not following symlinks): what a copy of it
/// takes, near enough.
fn tree_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Bytes on disk under `p` (blocks, as du counts them), without following symlinks;
/// a file with several links counts once (`seen`). What cannot be read counts 0: this
/// is for reports, and the namespace's root reads everything nook stores.
fn usage(p: &std::path::Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return 0;
    };
    let (Ok(dir), Ok(name)) = (nook_fs::at::open_dir(parent), nook_fs::at::cstr(name)) else {
        return 0;
    };
    usage_at(std::os::fd::AsRawFd::as_raw_fd(&dir), &name, seen)
}

fn usage_at(
    dirfd: std::os::fd::RawFd,
    name: &std::ffi::CStr,
    seen: &mut std::collections::HashSet<(u64, u64)>,
) -> u64 {
    let Ok(Some(st)) = nook_fs::at::lstat_opt(dirfd, name) else {
        return 0;
    };
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if !is_dir && st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
        return 0;
    }
    let mut total = st.st_blocks as u64 * 512;
    if is_dir {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        if let Ok(dir) = nook_fs::at::openat(dirfd, name, flags, 0) {
            for child in nook_fs::at::read_dir_names(&dir).unwrap_or_default() {
                total += usage_at(std::os::fd::AsRawFd::as_raw_fd(&dir), &child, seen);
            }
        }
    }
    total
}

fn remove_tree(p: &std::path::Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return Ok(());
    };
    let dir = nook_fs::at::open_dir(parent)?;
    // Directories without write permission (0555 in images) need it back to be emptied:
    // remove_all_at runs as the namespace's root, whose CAP_DAC_OVERRIDE covers that.
    nook_fs::at::remove_all_at(
        std::os::fd::AsRawFd::as_raw_fd(&dir),
        &nook_fs::at::cstr(name)?,
    )
}
