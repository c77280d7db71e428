//! Resource control with real controllers: runs in the VM lane (tests/vm/), a QEMU guest
//! with a pure cgroup v2 hierarchy whose subtree is delegated to the unprivileged test
//! user (NOOK_VM_LANE=1 there). Elsewhere every test prints SKIP.
//!
//! The guest is about 30 times slower than the host (software CPU), so the list is short
//! and every deadline generous. Each test checks one promise of issue 7: memory.max holds
//! and the OOM kill is reported, pids.max stops a fork bomb and the container stays
//! killable, cpu.max throttles, pause freezes, nothing survives a stop or a kill -9 of
//! nook, the container sees its own cgroup, stats match the cgroup files. Containers that
//! are stopped with SIGTERM run under --init: a pid 1 without a handler ignores it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nook_tests::*;

/// Per container run in the guest.
const SLOW: Duration = Duration::from_secs(120);

fn in_lane(test: &str) -> bool {
    if std::env::var_os("NOOK_VM_LANE").is_some() {
        assert_unprivileged();
        return true;
    }
    skip(
        test,
        "needs a delegated pure cgroup v2 hierarchy: runs in the VM lane \
         (tests/vm/run-cgroup-tests.sh)",
    );
    false
}

fn run_slow(args: &[&str]) -> Output {
    let mut cmd = nook();
    cmd.args(["run", "--rm"]).args(args);
    spawn(&mut cmd).wait(SLOW)
}

fn start(args: &[&str]) -> Proc {
    let mut cmd = nook();
    cmd.args(["run", "--rm"]).args(args);
    spawn(&mut cmd)
}

/// The cgroup directory a running container recorded (containers/ID/cgroup).
fn cgroup_of(name: &str) -> PathBuf {
    let o = nook()
        .args(["inspect", "--format", "{{.Id}}", name])
        .output()
        .expect("nook inspect");
    assert!(o.status.success(), "nook inspect {name}: {o:?}");
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let text = fs::read_to_string(state_dir().join("containers").join(&id).join("cgroup"))
        .unwrap_or_else(|e| panic!("container {name} recorded no cgroup: {e}"));
    PathBuf::from(text.trim_end())
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
}

fn key(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text:?}"))
}

fn wait_gone(dir: &Path, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if !dir.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn memory_max_is_enforced_and_the_oom_kill_reported() {
    if !in_lane("memory_max_is_enforced_and_the_oom_kill_reported") {
        return;
    }
    let o = run_slow(&[
        "--rm",
        "--network=none",
        "--memory",
        "32m",
        "host",
        "python3",
        "-c",
        "b = bytearray(256 << 20); print('allocated 256 MiB past a 32 MiB limit')",
    ]);
    o.assert_code(137);
    assert!(
        !o.out().contains("allocated"),
        "the allocation succeeded\n{o}"
    );
    assert!(
        o.err().contains("OOM-killed") && o.err().contains("memory.events oom_kill"),
        "nook should report the OOM kill\n{o}"
    );
}

#[test]
fn pids_max_stops_a_fork_bomb_and_the_container_stays_killable() {
    if !in_lane("pids_max_stops_a_fork_bomb_and_the_container_stays_killable") {
        return;
    }
    let name = format!("bomb-{}", token());
    let script = "import os, sys, time\n\
                  n = 0\n\
                  while True:\n\
                  \x20   try:\n\
                  \x20       if os.fork() == 0:\n\
                  \x20           time.sleep(1000); os._exit(0)\n\
                  \x20       n += 1\n\
                  \x20   except OSError as e:\n\
                  \x20       print('fork failed after', n, 'children:', e.strerror, flush=True)\n\
                  \x20       break\n\
                  time.sleep(1000)\n";
    let mut p = start(&[
        "--rm",
        "--init",
        "--network=none",
        "--name",
        &name,
        "--pids-limit",
        "16",
        "host",
        "python3",
        "-c",
        script,
    ]);
    let line = p.wait_for("fork failed after", SLOW);
    let children: u64 = line
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    assert!(
        children < 16,
        "pids.max 16 let {children} children through: {line}"
    );
    let cg = cgroup_of(&name);
    assert_eq!(read(&cg, "pids.max").trim(), "16");
    assert!(
        key(&read(&cg, "pids.events"), "max") > 0,
        "pids.events max not counted"
    );
    p.signal(Signal::SIGTERM);
    let o = p.wait(SLOW);
    o.assert_code(143);
    assert!(
        wait_gone(&cg, Duration::from_secs(30)),
        "{} was left behind",
        cg.display()
    );
}

#[test]
fn cpu_max_throttles_to_the_quota() {
    if !in_lane("cpu_max_throttles_to_the_quota") {
        return;
    }
    // Usage and wall time are read inside the container around a 2 s busy loop.
    let script = "read_usage() { sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat; }\n\
                  u0=$(read_usage); t0=$(date +%s%N)\n\
                  timeout 2 sh -c 'while :; do :; done'\n\
                  u1=$(read_usage); t1=$(date +%s%N)\n\
                  echo \"usage_usec $((u1 - u0)) wall_usec $(((t1 - t0) / 1000))\"\n\
                  echo \"cpu.max $(cat /sys/fs/cgroup/cpu.max)\"\n\
                  grep nr_throttled /sys/fs/cgroup/cpu.stat";
    let o = run_slow(&[
        "--rm",
        "--network=none",
        "--cpus",
        "0.2",
        "host",
        "sh",
        "-c",
        script,
    ]);
    o.success();
    let out = o.out();
    assert!(out.contains("cpu.max 20000 100000"), "{o}");
    let after = |word: &str| -> f64 {
        out.split_whitespace()
            .skip_while(|w| *w != word)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {word}\n{o}"))
    };
    let (usage, wall) = (after("usage_usec"), after("wall_usec"));
    let share = usage / wall;
    assert!(
        (0.16..=0.24).contains(&share),
        "expected about 0.2 CPU (within 20%), got {share:.3} ({usage} µs in {wall} µs)\n{o}"
    );
    assert!(key(&out, "nr_throttled") > 0, "never throttled\n{o}");
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    if !in_lane("pause_freezes_and_unpause_thaws") {
        return;
    }
    let name = format!("frz-{}", token());
    let mut p = start(&[
        "--rm",
        "--init",
        "--network=none",
        "--name",
        &name,
        "host",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    ]);
    p.wait_for("tick 2", SLOW);
    let cg = cgroup_of(&name);
    let pause = nook().args(["pause", &name]).output().expect("nook pause");
    assert!(pause.status.success(), "nook pause failed: {pause:?}");
    assert_eq!(key(&read(&cg, "cgroup.events"), "frozen"), 1);
    // Every process of the container is stopped in the freezer.
    for pid in read(&cg, "cgroup.procs").lines() {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        assert!(
            matches!(state, Some("S") | Some("D") | Some("T")),
            "pid {pid} not frozen: {stat}"
        );
    }
    let unpause = nook()
        .args(["unpause", &name])
        .output()
        .expect("nook unpause");
    assert!(unpause.status.success(), "nook unpause failed: {unpause:?}");
    assert_eq!(key(&read(&cg, "cgroup.events"), "frozen"), 0);
    p.wait_for("tick", SLOW);
    p.signal(Signal::SIGTERM);
    p.wait(SLOW).assert_code(143);
}

#[test]
fn nothing_survives_a_stop_or_a_kill_of_nook() {
    if !in_lane("nothing_survives_a_stop_or_a_kill_of_nook") {
        return;
    }
    // A double-forked child, reparented inside the container: part of the cgroup.
    let script = "(sleep 1001 &) ; echo ready; exec sleep 1002";
    let name = format!("stop-{}", token());
    let mut p = start(&[
        "--rm",
        "--init",
        "--network=none",
        "--name",
        &name,
        "host",
        "sh",
        "-c",
        script,
    ]);
    p.wait_for("ready", SLOW);
    let cg = cgroup_of(&name);
    assert!(
        read(&cg, "cgroup.procs").lines().count() >= 2,
        "the double fork is not in the cgroup"
    );
    p.signal(Signal::SIGTERM);
    p.wait(SLOW).assert_code(143);
    assert!(
        wait_gone(&cg, Duration::from_secs(30)),
        "{} left after a stop",
        cg.display()
    );

    // kill -9 of nook: the container dies with it (pdeathsig, pid namespace); its empty
    // cgroup is swept by the next nook that prepares one.
    let name = format!("kill-{}", token());
    let mut p = start(&[
        "--rm",
        "--init",
        "--network=none",
        "--name",
        &name,
        "host",
        "sh",
        "-c",
        script,
    ]);
    p.wait_for("ready", SLOW);
    let cg = cgroup_of(&name);
    p.signal(Signal::SIGKILL);
    let _ = p.wait(SLOW);
    let end = Instant::now() + Duration::from_secs(30);
    while cg.exists() && key(&read(&cg, "cgroup.events"), "populated") == 1 {
        assert!(
            Instant::now() < end,
            "{} still populated after kill -9 of nook",
            cg.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    run_slow(&["--rm", "--network=none", "host", "true"]).success();
    assert!(
        !cg.exists(),
        "{} left after kill -9 of nook and another run",
        cg.display()
    );
}

#[test]
fn the_container_sees_its_own_cgroup() {
    if !in_lane("the_container_sees_its_own_cgroup") {
        return;
    }
    let o = run_slow(&[
        "--rm",
        "--network=none",
        "--memory",
        "48m",
        "--pids-limit",
        "77",
        "host",
        "sh",
        "-c",
        "cat /proc/self/cgroup; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; \
         touch /sys/fs/cgroup/x 2>/dev/null && echo writable || echo read-only",
    ]);
    o.success();
    assert_eq!(o.out(), "0::/\n50331648\n77\nread-only\n", "{o}");
}

#[test]
fn stats_match_the_cgroup_files() {
    if !in_lane("stats_match_the_cgroup_files") {
        return;
    }
    let name = format!("stats-{}", token());
    let mut p = start(&[
        "--rm",
        "--init",
        "--network=none",
        "--name",
        &name,
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "host",
        "sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    p.wait_for("ready", SLOW);
    let cg = cgroup_of(&name);
    let out = nook()
        .args(["stats", "--no-stream", "--format", "json", &name])
        .output()
        .expect("nook stats");
    assert!(out.status.success(), "nook stats failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| -> u64 {
        let at = text
            .find(&format!("\"{k}\": "))
            .unwrap_or_else(|| panic!("no {k} in {text}"));
        text[at + k.len() + 4..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} is not a number in {text}"))
    };
    assert_eq!(field("mem_limit"), 64 << 20, "{text}");
    assert_eq!(field("pids_limit"), 50, "{text}");
    assert_eq!(
        field("pids"),
        read(&cg, "pids.current").trim().parse::<u64>().unwrap(),
        "{text}"
    );
    let current: u64 = read(&cg, "memory.current").trim().parse().unwrap();
    let reported = field("mem_usage");
    assert!(
        reported.abs_diff(current) <= 1 << 20,
        "mem_usage {reported} vs memory.current {current}\n{text}"
    );
    assert!(text.contains(&format!("\"name\": \"{name}\"")), "{text}");
    p.signal(Signal::SIGTERM);
    p.wait(SLOW).assert_code(143);
}

#[test]
fn the_fuse_server_is_in_the_containers_cgroup() {
    // The FUSE server holds what the container makes it hold (listings, nodes, handles):
    // it must count against the container's limits, so it joins the container's cgroup
    // (issue 14; it is started before the cgroup exists).
    let test = "the_fuse_server_is_in_the_containers_cgroup";
    if !in_lane(test) {
        return;
    }
    let base = match busybox_rootfs() {
        Ok(b) => b,
        Err(why) => return skip(test, &why),
    };
    let ctr = tempdir();
    let fuse_run = |script: &str, interactive: bool| {
        let mut cmd = nook();
        cmd.args(["run", "--rm", "--network=none", "--memory", "48m"]);
        if interactive {
            cmd.arg("-i").stdin(std::process::Stdio::piped());
        }
        cmd.args(["--storage-driver", "fuse", "--layer"])
            .arg(base.path())
            .arg("--rootfs")
            .arg(ctr.path())
            .args(["/bin/sh", "-c", script]);
        spawn(&mut cmd)
    };
    let probe = fuse_run("echo usable", false).wait(SLOW);
    if !probe.out().contains("usable") {
        if probe.err().contains("is not usable here") {
            return skip(
                test,
                &format!("no FUSE driver in the guest: {}", probe.err().trim()),
            );
        }
        panic!("the FUSE driver failed a trivial run\n{probe}");
    }
    let mut p = fuse_run("echo ready; read x", true);
    p.wait_for("ready", SLOW);
    let init = container_init(p.pid).expect("the container's pid 1");
    let want = fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let servers: Vec<i32> = descendants(p.pid)
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|a| a == b"__fuse-server")
        })
        .collect();
    assert!(!servers.is_empty(), "no FUSE server found");
    for s in servers {
        let got = fs::read_to_string(format!("/proc/{s}/cgroup")).unwrap();
        assert_eq!(
            got, want,
            "FUSE server {s} is outside the container's cgroup"
        );
    }
    p.write_stdin(b"\n");
    p.close_stdin();
    p.wait(SLOW).success();
}

/// `nook oci update` (runc's, as containerd's shim sends it): memory.max of a running
/// OCI container changes with a flag, then with linux.resources JSON on stdin; values
/// that are defaults are accepted.
#[test]
fn oci_update_changes_the_running_containers_limits() {
    if !in_lane("oci_update_changes_the_running_containers_limits") {
        return;
    }
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(why) => {
            skip("oci_update_changes_the_running_containers_limits", &why);
            return;
        }
    };
    let bundle = tempdir();
    let state = tempdir();
    let mut spec = nook();
    spec.args(["oci", "spec", "--rootless", "--bundle"])
        .arg(bundle.path());
    spawn(&mut spec).wait(SLOW).success();
    let config = bundle.path().join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    c["root"]["path"] = serde_json::json!(rootfs.path_str());
    c["root"]["readonly"] = serde_json::json!(false);
    c["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    c["process"]["terminal"] = serde_json::json!(false);
    c["linux"]["resources"] = serde_json::json!({"memory": {"limit": 64u64 << 20}});
    fs::write(&config, serde_json::to_vec(&c).unwrap()).unwrap();
    let oci = |args: &[&str], stdin: Option<&str>| -> Output {
        let mut cmd = nook();
        cmd.arg("oci").arg("--root").arg(state.path()).args(args);
        if let Some(text) = stdin {
            cmd.stdin(std::process::Stdio::piped());
            let mut p = spawn(&mut cmd);
            p.feed_stdin(text.as_bytes().to_vec());
            return p.wait(SLOW);
        }
        spawn(&mut cmd).wait(SLOW)
    };
    let id = format!("upd-{}", token());
    // The detached container keeps the stdio it is given: not the test's pipes.
    let err = bundle.path().join("run.err");
    let status = std::process::Command::new(nook_bin())
        .arg("oci")
        .arg("--root")
        .arg(state.path())
        .args([
            "run",
            "--detach",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&err).unwrap())
        .status()
        .expect("nook oci run");
    assert!(
        status.success(),
        "oci run --detach: {status}\n{}",
        fs::read_to_string(&err).unwrap_or_default()
    );
    let recorded: serde_json::Value =
        serde_json::from_slice(&fs::read(state.path().join(&id).join("state.json")).unwrap())
            .unwrap();
    let cg = PathBuf::from(
        recorded["cgroup"]
            .as_str()
            .unwrap_or_else(|| panic!("no cgroup recorded: {recorded}")),
    );
    assert_eq!(read(&cg, "memory.max").trim(), (64u64 << 20).to_string());
    oci(&["update", "--memory", "32m", &id], None).success();
    assert_eq!(read(&cg, "memory.max").trim(), (32u64 << 20).to_string());
    oci(
        &["update", "--resources", "-", &id],
        Some(r#"{"memory": {"limit": -1}, "pids": {"limit": 50}, "cpu": {"shares": 1024}}"#),
    )
    .success();
    assert_eq!(read(&cg, "memory.max").trim(), "max");
    assert_eq!(read(&cg, "pids.max").trim(), "50");
    assert_eq!(read(&cg, "cpu.weight").trim(), "100");
    let bad = oci(&["update", "--cpuset-cpus", "0-x", &id], None);
    bad.assert_error_line(1, &["0-x"]);
    oci(&["delete", "--force", &id], None).success();
    assert!(wait_gone(&cg, SLOW), "the cgroup outlived delete");
}
