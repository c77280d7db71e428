//! `nook stats`, `nook pause`, `nook unpause`: what a running container's cgroup says,
//! printed (nook_engine::stats finds the containers and reads them).
//!
//! CPU % is the CPU time used between two readings over the wall time between them
//! (100% = one CPU busy); with `--no-stream`, the first reading is compared with the
//! container's start (the `cgroup` file's mtime). Network I/O is not counted yet (the
//! netstack's counters are not exported) and shows as `--` / null.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use nook_engine::stats::{host_memory, names, percent, running, select, Running};
use nook_rootless::cgroups::{self, Stats};
use nook_rootless::state;

use crate::flags::{ContainersArgs, Format, StatsArgs};
use crate::units;

pub fn stats(args: StatsArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let runtime = state::runtime_dir()?;
    let names = names(&crate::notify::places(store_root)?);
    let pick = |all: Vec<Running>| -> Result<Vec<Running>> {
        if args.containers.is_empty() {
            Ok(all)
        } else {
            Ok(select(all, &args.containers, &runtime, &names)?)
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
    let names = names(&crate::notify::places(store_root)?);
    let chosen = select(
        running(&runtime, &names)?,
        &args.containers,
        &runtime,
        &names,
    )?;
    for c in chosen {
        nook_engine::stats::set_frozen(&c, matches!(how, Freeze::Pause))?;
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
