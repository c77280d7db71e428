//! `nook stats`, `nook pause`, `nook unpause`: commands that read or act on a running
//! container's cgroup.
//!
//! A running container is a directory `$RUNTIME/containers/ID` holding a `cgroup` file
//! (written by `nook run` when the container got a cgroup); the container records name
//! them. A container is given by name, full ID or unique ID prefix.
//!
//! CPU % is the CPU time used between two readings over the wall time between them
//! (100% = one CPU busy); with `--no-stream`, the first reading is compared with the
//! container's start (the `cgroup` file's mtime). Network I/O is not counted yet (the
//! netstack's counters are not exported) and shows as `--` / null.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use nook_rootless::cgroups::{self, Stats};
use nook_rootless::state;

use crate::flags::{ContainersArgs, Format, StatsArgs};
use crate::units;

/// A running container that has a cgroup.
struct Running {
    id: String,
    name: String,
    cgroup: PathBuf,
    started: SystemTime,
}

pub fn stats(args: StatsArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let runtime = state::runtime_dir()?;
    let names = names(store_root)?;
    let pick = |all: Vec<Running>| -> Result<Vec<Running>> {
        if args.containers.is_empty() {
            Ok(all)
        } else {
            select(all, &args.containers, &runtime, &names)
        }
    };
    let mut previous: Vec<(String, Stats, Instant)> = Vec::new();
    let json = args.format == Format::Json;
    loop {
        let containers = pick(running(&runtime, &names)?)?;
        let now = Instant::now();
        let mut rows = Vec::new();
        for c in &containers {
            let Ok(s) = cgroups::stats::read(&c.cgroup) else {
                continue; // exited since the listing
            };
            let cpu_percent = match previous.iter().find(|(id, _, _)| *id == c.id) {
                Some((_, before, at)) => percent(
                    s.cpu_usage_usec.saturating_sub(before.cpu_usage_usec),
                    now.duration_since(*at),
                ),
                None => percent(
                    s.cpu_usage_usec,
                    SystemTime::now()
                        .duration_since(c.started)
                        .unwrap_or_default(),
                ),
            };
            rows.push(Row {
                id: c.id.clone(),
                name: c.name.clone(),
                cpu_percent,
                stats: s,
            });
        }
        let mem_total = host_memory();
        let out = if json {
            render_json(&rows, mem_total)
        } else {
            render_table(&rows, mem_total)
        };
        let mut stdout = std::io::stdout().lock();
        if !args.no_stream && !json && stdout.is_terminal() {
            let _ = write!(stdout, "\x1b[2J\x1b[H");
        }
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        if args.no_stream {
            return Ok(0);
        }
        previous = rows.into_iter().map(|r| (r.id, r.stats, now)).collect();
        std::thread::sleep(Duration::from_secs(args.interval.max(1)));
    }
}

/// What `freeze` does to each container's cgroup.
#[derive(Clone, Copy)]
enum Freeze {
    Pause,
    Unpause,
}

/// `nook pause`.
pub fn pause_cmd(args: ContainersArgs, store_root: Option<PathBuf>) -> Result<i32> {
    freeze(args, Freeze::Pause, store_root)
}

/// `nook unpause`.
pub fn unpause_cmd(args: ContainersArgs, store_root: Option<PathBuf>) -> Result<i32> {
    freeze(args, Freeze::Unpause, store_root)
}

fn freeze(args: ContainersArgs, how: Freeze, store_root: Option<PathBuf>) -> Result<i32> {
    let runtime = state::runtime_dir()?;
    let names = names(store_root)?;
    let chosen = select(
        running(&runtime, &names)?,
        &args.containers,
        &runtime,
        &names,
    )?;
    for c in chosen {
        let (what, frozen) = match how {
            Freeze::Pause => ("pausing", true),
            Freeze::Unpause => ("unpausing", false),
        };
        cgroups::set_frozen(&c.cgroup, frozen)
            .with_context(|| format!("{what} container {}", c.id))?;
        println!("{}", c.id);
    }
    Ok(0)
}

struct Row {
    id: String,
    name: String,
    cpu_percent: f64,
    stats: Stats,
}

fn percent(usage_usec: u64, wall: Duration) -> f64 {
    let wall = wall.as_micros() as f64;
    if wall <= 0.0 {
        0.0
    } else {
        usage_usec as f64 * 100.0 / wall
    }
}

/// Every running container of this user that has a cgroup, oldest first.
fn running(runtime: &Path, names: &[(String, String)]) -> Result<Vec<Running>> {
    let dir = runtime.join("containers");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let Some(cgroup) = cgroups::recorded(&e.path()) else {
            continue;
        };
        if !cgroup.join("cgroup.procs").exists() {
            continue; // left by a killed nook; its cgroup is gone
        }
        let started = fs::metadata(e.path().join("cgroup"))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::now());
        let name = names
            .iter()
            .find(|(_, target)| *target == id)
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        out.push(Running {
            id,
            name,
            cgroup,
            started,
        });
    }
    out.sort_by_key(|r| r.started);
    Ok(out)
}

/// (name, id) of every container of the store.
fn names(store_root: Option<PathBuf>) -> Result<Vec<(String, String)>> {
    let places = crate::notify::places(store_root)?;
    Ok(places
        .all()
        .into_iter()
        .map(|c| (c.record.name, c.record.id))
        .collect())
}

/// The containers the user named, in the order named.
fn select(
    all: Vec<Running>,
    wanted: &[String],
    runtime: &Path,
    names: &[(String, String)],
) -> Result<Vec<Running>> {
    let mut chosen: Vec<Running> = Vec::new();
    let mut all = all;
    for w in wanted {
        let by_name = all.iter().position(|r| !r.name.is_empty() && r.name == *w);
        let by_id: Vec<usize> = all
            .iter()
            .enumerate()
            .filter(|(_, r)| r.id.starts_with(w.as_str()))
            .map(|(i, _)| i)
            .collect();
        let index = match (by_name, by_id.as_slice()) {
            (Some(i), _) => i,
            (None, [i]) => *i,
            (None, []) => {
                let id = names
                    .iter()
                    .find(|(n, _)| n == w)
                    .map_or_else(|| w.clone(), |(_, id)| id.clone());
                let exists = runtime.join("containers").join(&id).is_dir();
                if exists {
                    bail!(
                        "container {w} has no cgroup: it runs without resource control on \
                         this host (see `nook info`)"
                    );
                }
                bail!(
                    "no such container: {w} (see the running ones with `nook stats --no-stream`)"
                );
            }
            (None, _) => bail!("{w} is a prefix of several container IDs: give more of it"),
        };
        chosen.push(all.remove(index));
    }
    Ok(chosen)
}

/// MemTotal of /proc/meminfo, in bytes: the "limit" of a container without one.
fn host_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn render_table(rows: &[Row], mem_total: u64) -> String {
    let mut out = format!(
        "{:<14}{:<16}{:>8}  {:<22}{:>8}  {:<10}{:<22}{:>6}\n",
        "ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET IO", "BLOCK IO", "PIDS"
    );
    for r in rows {
        let s = &r.stats;
        let limit = s.memory_max.unwrap_or(mem_total);
        out.push_str(&format!(
            "{:<14}{:<16}{:>7.2}%  {:<22}{:>7.2}%  {:<10}{:<22}{:>6}\n",
            &r.id[..r.id.len().min(12)],
            r.name,
            r.cpu_percent,
            format!(
                "{} / {}",
                units::compact_binary_size(s.memory_current),
                units::compact_binary_size(limit)
            ),
            mem_percent(s.memory_current, limit),
            "--",
            format!(
                "{} / {}",
                units::compact_size(s.io_read_bytes),
                units::compact_size(s.io_write_bytes)
            ),
            s.pids_current,
        ));
    }
    out
}

fn render_json(rows: &[Row], mem_total: u64) -> String {
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let s = &r.stats;
            let limit = s.memory_max.unwrap_or(mem_total);
            serde_json::json!({
                "id": r.id,
                "name": r.name,
                "cpu_percent": (r.cpu_percent * 100.0).round() / 100.0,
                "cpu_usage_usec": s.cpu_usage_usec,
                "mem_usage": s.memory_current,
                "mem_limit": limit,
                "mem_limit_set": s.memory_max.is_some(),
                "mem_percent": (mem_percent(s.memory_current, limit) * 100.0).round() / 100.0,
                "net_input": null,
                "net_output": null,
                "block_input": s.io_read_bytes,
                "block_output": s.io_write_bytes,
                "pids": s.pids_current,
                "pids_limit": s.pids_max,
                "oom_kills": s.oom_kills,
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

fn mem_percent(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        0.0
    } else {
        used as f64 * 100.0 / limit as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent() {
        assert_eq!(percent(500_000, Duration::from_secs(1)), 50.0);
        assert_eq!(percent(2_000_000, Duration::from_secs(1)), 200.0);
        assert_eq!(percent(1, Duration::ZERO), 0.0);
    }
}
