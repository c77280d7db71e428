//! What `nook ps`, `nook inspect CTR`, `nook port` and `nook top` show: the records and
//! states of containers, in podman's field names.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::flags::{CtrArgs, PsArgs, TopArgs};
use crate::format::Output;
use crate::units;
use nook_engine::container::record::{Container, Places, State, Status};

/// One row of `nook ps`, with podman's field names for `--format`.
#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct PsRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub names: String,
    pub image: String,
    pub command: String,
    pub created: String,
    pub created_at: String,
    pub status: String,
    pub state: String,
    pub exit_code: i32,
    pub ports: String,
    pub pid: i32,
    pub restarts: u32,
}

const PS_TABLE: &str =
    "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.Created}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

pub fn ps_cmd(args: PsArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    nook_engine::container::lifecycle::sweep_dead_rm_containers(&places, &crate::notify::Stderr);
    let output = Output::parse(&args.format, PS_TABLE)?;
    output.check(&PsRow::default())?;
    let filters = args
        .filter
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("bad --filter {f:?}: use KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rows = Vec::new();
    for ctr in places.all() {
        let st = ctr.state();
        if !args.all && st.status != Status::Running && filters.is_empty() {
            continue;
        }
        if !filters.iter().all(|(k, v)| matches(&ctr, &st, k, v)) {
            continue;
        }
        rows.push(row(&ctr, &st, args.no_trunc));
        if args.latest {
            break;
        }
    }
    // Records that cannot be read: listed with -a (and no filter), so their names are
    // not reserved by something `ps` does not show; `nook rm` removes them.
    if args.all && filters.is_empty() && (!args.latest || rows.is_empty()) {
        for b in places.broken() {
            rows.push(PsRow {
                id: if args.no_trunc {
                    b.id.clone()
                } else {
                    b.id[..12].to_string()
                },
                names: b.name.clone().unwrap_or_default(),
                status: format!("Broken: {}", b.why),
                state: "broken".into(),
                ..PsRow::default()
            });
        }
    }
    for (k, _) in &filters {
        if !["status", "name", "id", "ancestor", "exited"].contains(&k.as_str()) {
            bail!("unknown filter {k:?}: use status, name, id, ancestor or exited");
        }
    }
    if args.quiet {
        for r in rows {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    print!(
        "{}",
        output.render(&rows, &[("ID", "CONTAINER ID"), ("Names", "NAMES")])?
    );
    Ok(0)
}

fn matches(ctr: &Container, st: &State, key: &str, value: &str) -> bool {
    match key {
        "status" => st.status.name() == value,
        "name" => ctr.record.name.contains(value),
        "id" => ctr.record.id.starts_with(value),
        "ancestor" => {
            ctr.record.request.image == value || ctr.record.image_id.as_deref() == Some(value)
        }
        "exited" => {
            st.status == Status::Exited
                && st.exit_code.map(|c| c.to_string()).as_deref() == Some(value)
        }
        _ => false,
    }
}

fn row(ctr: &Container, st: &State, no_trunc: bool) -> PsRow {
    let command = ctr.record.request.command.join(" ");
    let command = if no_trunc || command.chars().count() <= 20 {
        command
    } else {
        format!("{}...", command.chars().take(17).collect::<String>())
    };
    PsRow {
        id: if no_trunc {
            ctr.record.id.clone()
        } else {
            ctr.short_id().to_string()
        },
        names: ctr.record.name.clone(),
        image: ctr.record.request.image.clone(),
        command,
        created: units::ago(&ctr.record.created),
        created_at: ctr.record.created.clone(),
        status: status_text(st),
        state: st.status.name().to_string(),
        exit_code: st.exit_code.unwrap_or(0),
        ports: st.ports.join(", "),
        pid: st.pid.map_or(0, |p| p.pid),
        restarts: st.restarts,
    }
}

/// "Up 5 seconds", "Exited (0) 3 minutes ago", "Created".
pub fn status_text(st: &State) -> String {
    match st.status {
        Status::Created => "Created".into(),
        Status::Running | Status::Stopping => {
            format!(
                "Up {}",
                units::since(st.started_at.as_deref()).unwrap_or_default()
            )
        }
        Status::Exited => format!(
            "Exited ({}) {} ago",
            st.exit_code.unwrap_or(0),
            units::since(st.finished_at.as_deref()).unwrap_or_else(|| "a while".into())
        ),
    }
}

/// `nook inspect CTR`: the record and state as podman's inspect spells the main fields.
pub fn inspect_json(places: &Places, ctr: &Container) -> serde_json::Value {
    let st = ctr.state();
    let r = &ctr.record;
    let req = &r.request;
    serde_json::json!({
        "Id": r.id,
        "Name": r.name,
        "Created": r.created,
        "Path": req.command.first(),
        "Args": req.command.get(1..).unwrap_or_default(),
        "Image": r.image_id,
        "ImageName": req.image,
        "State": {
            "Status": st.status.name(),
            "Running": st.status == Status::Running,
            "Pid": st.pid.map_or(0, |p| p.pid),
            "ExitCode": st.exit_code.unwrap_or(0),
            "StartedAt": st.started_at,
            "FinishedAt": st.finished_at,
            "Error": st.reason,
            "Restarts": st.restarts,
            "SupervisorPid": st.supervisor.map_or(0, |p| p.pid),
        },
        "RestartCount": st.restarts,
        "LogPath": ctr.log_path(),
        "Config": {
            "Tty": req.tty,
            "OpenStdin": req.interactive,
            "StopSignal": req.stop_signal,
            "StopTimeout": req.stop_timeout,
            "Cmd": req.command,
        },
        "HostConfig": {
            "RestartPolicy": { "Name": req.restart.name() },
            "AutoRemove": req.rm,
            "LogConfig": { "Type": req.log_driver, "Size": req.log_size_max },
        },
        "NetworkSettings": { "Ports": st.ports },
        "StateDir": ctr.dir,
        "RuntimeDir": ctr.runtime_dir(places),
    })
}

/// `nook port CTR`.
pub fn port_cmd(args: CtrArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let ctr = places.find(&args.container)?;
    for p in ctr.state().ports {
        // Stored as HOST->CTR/PROTO; podman prints CTR/PROTO -> HOST.
        match p.split_once("->") {
            Some((host, ctr_port)) => println!("{ctr_port} -> {host}"),
            None => println!("{p}"),
        }
    }
    Ok(0)
}

/// `nook top CTR`: the container's processes, with the pids and user IDs it sees.
pub fn top_cmd(args: TopArgs, store_root: Option<PathBuf>) -> Result<i32> {
    let places = crate::notify::places(store_root)?;
    let ctr = places.find(&args.container)?;
    let st = ctr.state();
    let Some(init) = st.pid.filter(|p| st.status == Status::Running && p.alive()) else {
        bail!("container {} is not running", ctr.record.name);
    };
    // Under --init the first process (nook's reaper) keeps its /proc entries closed: the
    // command's stand for the container, and the reaper is listed by its pid.
    let holder = nook_rootless::join::namespace_holder(init.pid);
    let pidns = std::fs::read_link(format!("/proc/{holder}/ns/pid"))?;
    let uid_map = std::fs::read_to_string(format!("/proc/{holder}/uid_map"))?;
    // Users by name as the container knows them (its /etc/passwd, read through the
    // confined resolver), else by number.
    let names = nook_engine::users::names(Path::new(&format!("/proc/{holder}/root")));
    println!(
        "{:<10} {:>7} {:>7} {:<10} COMMAND",
        "USER", "PID", "PPID", "ELAPSED"
    );
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let mut procs: Vec<(i64, String)> = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid != init.pid
            && std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .ok()
                .as_ref()
                != Some(&pidns)
        {
            continue;
        }
        let Some(p) = ProcInfo::read(pid) else {
            continue;
        };
        let uid = inside_id(&uid_map, p.uid).map_or_else(
            || "?".into(),
            |u| names.get(&u).cloned().unwrap_or_else(|| u.to_string()),
        );
        let elapsed = uptime - p.start_ticks as f64 / ticks as f64;
        let line = format!(
            "{:<10} {:>7} {:>7} {:<10} {}",
            uid,
            p.ns_pid,
            p.ns_ppid,
            human_clock(elapsed),
            p.cmdline
        );
        procs.push((p.ns_pid, line));
    }
    procs.sort();
    for (_, l) in procs {
        println!("{l}");
    }
    Ok(0)
}

struct ProcInfo {
    ns_pid: i64,
    ns_ppid: i64,
    uid: u32,
    start_ticks: u64,
    cmdline: String,
}

impl ProcInfo {
    fn read(pid: i32) -> Option<ProcInfo> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        };
        let ns_pid = field("NSpid:")?.last()?.parse().ok()?;
        let uid = field("Uid:")?.first()?.parse().ok()?;
        let ppid: i32 = field("PPid:")?.first()?.parse().ok()?;
        // The parent's pid as the container sees it (0 for the container's first process).
        let ns_ppid = std::fs::read_to_string(format!("/proc/{ppid}/status"))
            .ok()
            .and_then(|s| {
                let ns: Vec<i64> = s
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))?
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                (ns.len() > 1).then(|| *ns.last().unwrap())
            })
            .unwrap_or(0);
        let start_ticks = nook_engine::container::record::process_start_time(pid)?;
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        Some(ProcInfo {
            ns_pid,
            ns_ppid,
            uid,
            start_ticks,
            cmdline,
        })
    }
}

/// The container's ID for host ID `host`, through the container's uid_map.
fn inside_id(map: &str, host: u32) -> Option<u32> {
    map.lines().find_map(|l| {
        let v: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let (inside, outside, count) = (*v.first()?, *v.get(1)?, *v.get(2)?);
        let host = host as u64;
        (host >= outside && host < outside + count).then(|| (inside + host - outside) as u32)
    })
}

fn human_clock(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_back_into_the_container() {
        let map = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(inside_id(map, 1000), Some(0));
        assert_eq!(inside_id(map, 100_032), Some(33));
        assert_eq!(inside_id(map, 5), None);
    }
}
