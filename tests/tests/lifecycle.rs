//! Containers that outlive the command: `run -d`, ps, logs, exec, stop, kill, rm, wait,
//! restart policies, attach, cp, create/start, rename, top, port, and what is left
//! after 20 parallel runs or a killed supervisor (issue 8).
//!
//! Each test has its own store (NOOK_ROOT) so `ps` lists only its containers; waiting is
//! on events (`logs -f` lines, `wait`, exits), never on sleeps.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use nook_tests::*;

struct Env {
    root: tempfile::TempDir,
    runtime: Option<tempfile::TempDir>,
}

impl Env {
    fn new() -> Env {
        assert_unprivileged();
        Env {
            root: tempdir(),
            runtime: None,
        }
    }

    /// With its own runtime directory too (to see exactly what is left behind).
    fn private() -> Env {
        let mut env = Env::new();
        let rt = tempdir();
        std::fs::set_permissions(
            rt.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        env.runtime = Some(rt);
        env
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = nook();
        c.env("NOOK_ROOT", self.root.path()).args(args);
        if let Some(rt) = &self.runtime {
            c.env("XDG_RUNTIME_DIR", rt.path());
        }
        c
    }

    fn nook(&self, args: &[&str]) -> Output {
        spawn(&mut self.cmd(args)).wait(TIMEOUT)
    }

    fn runtime_containers(&self) -> PathBuf {
        let rt = self.runtime.as_ref().expect("a private runtime dir");
        rt.path().join("nook/containers")
    }

    /// `run -d`: returns the ID it printed.
    fn detach(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        let o = self.nook(&all);
        o.success();
        let id = o.line();
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "run -d printed {id:?}, not a container ID"
        );
        id
    }

    /// A foreground `nook run [flags] --name NAME host` that idles, once it is running.
    fn foreground(&self, flags: &[&str], name: &str) -> Proc {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend([
            "--name",
            name,
            "host",
            "sh",
            "-c",
            "echo ready; exec sleep 1000",
        ]);
        let mut fg = spawn(&mut self.cmd(&args));
        fg.wait_for("ready", TIMEOUT);
        fg
    }

    fn field(&self, name: &str, template: &str) -> String {
        let filter = format!("name={name}");
        let o = self.nook(&["ps", "-a", "--filter", &filter, "--format", template]);
        o.success();
        o.line()
    }

    /// Waits (through `logs -f`, stdout and stderr) until the container has logged a
    /// line with `needle`.
    fn wait_for_log(&self, name: &str, needle: &str) {
        let mut sh = Command::new("sh");
        sh.args(["-c", "exec \"$0\" logs -f \"$1\" 2>&1"])
            .arg(nook_bin())
            .arg(name)
            .env("NOOK_ROOT", self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(rt) = &self.runtime {
            sh.env("XDG_RUNTIME_DIR", rt.path());
        }
        let mut follow = spawn(&mut sh);
        follow.wait_for(needle, TIMEOUT);
        follow.kill_all();
    }

    fn inspect(&self, name: &str) -> serde_json::Value {
        let o = self.nook(&["inspect", name]);
        o.success();
        let v: serde_json::Value = serde_json::from_str(&o.out()).expect("inspect prints JSON");
        v[0].clone()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave nothing running, whatever the test did.
        let _ = self.nook(&["rm", "-af"]);
    }
}

fn name() -> String {
    format!("t{}", token())
}

#[test]
fn detached_container_lists_logs_stops_and_is_removed() {
    let env = Env::new();
    let n = name();
    env.detach(&[
        "--name",
        &n,
        "host",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exec sleep 1000",
    ]);
    assert_eq!(
        env.field(&n, "{{.Names}} {{.State}}"),
        format!("{n} running")
    );
    env.wait_for_log(&n, "to-out");
    env.wait_for_log(&n, "to-err");
    let logs = env.nook(&["logs", &n]);
    logs.success();
    assert_eq!(logs.out(), "to-out\n");
    assert_eq!(logs.err(), "to-err\n");
    let stamped = env.nook(&["logs", "-t", "--tail", "1", &n]);
    assert!(
        stamped.out().is_empty() || stamped.err().contains("to-err"),
        "--tail 1 keeps only the last line: {stamped}"
    );
    // sleep as pid 1 ignores TERM: the stop ends with KILL after the timeout, and says
    // so as podman does.
    let stopped = env.nook(&["stop", "-t", "1", &n]);
    stopped.success();
    assert!(
        stopped.err().contains(&format!(
            "StopSignal SIGTERM failed to stop container {n} in 1 second, resorting to SIGKILL"
        )),
        "stop warns of the KILL: {stopped}"
    );
    assert_eq!(env.field(&n, "{{.State}} {{.ExitCode}}"), "exited 137");
    assert_eq!(env.nook(&["wait", &n]).success().line(), "137");
    env.nook(&["rm", &n]).success();
    assert_eq!(env.nook(&["ps", "-a", "-q"]).success().out(), "");
}

#[test]
fn a_container_that_ends_on_its_stop_signal_is_stopped_without_a_warning() {
    let env = Env::new();
    let n = name();
    env.detach(&[
        "--name",
        &n,
        "host",
        "sh",
        "-c",
        "trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done",
    ]);
    env.wait_for_log(&n, "ready");
    let stopped = env.nook(&["stop", "-t", "30", &n]);
    stopped.success();
    assert_eq!(stopped.err(), "", "no KILL, no warning");
    assert_eq!(env.field(&n, "{{.State}} {{.ExitCode}}"), "exited 3");
}

#[test]
fn exec_runs_inside_the_container() {
    let env = Env::new();
    let n = name();
    let id = env.detach(&["--name", &n, "-w", "/tmp", "host", "sleep", "1000"]);
    let o = env.nook(&[
        "exec",
        &n,
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    o.success();
    let out = o.out();
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(&id[..12]),
        "exec sees the container's hostname"
    );
    assert_eq!(
        lines.next().map(str::trim),
        Some("sleep 1000"),
        "and its pid 1"
    );
    // As podman: exec starts where the container's process did, unless -w.
    assert_eq!(env.nook(&["exec", &n, "pwd"]).success().out(), "/tmp\n");
    assert_eq!(
        env.nook(&["exec", "-w", "/etc", &n, "pwd"]).success().out(),
        "/etc\n"
    );
    env.nook(&["exec", &n, "sh", "-c", "exit 7"]).assert_code(7);
    env.nook(&["exec", &n, "no-such-command"]).assert_code(127);
    let with_env = env.nook(&[
        "exec",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        &n,
        "sh",
        "-c",
        "echo $GREETING $PWD",
    ]);
    assert_eq!(with_env.success().line(), "hi /tmp");
    env.nook(&["kill", &n]).success();
    env.nook(&["wait", &n]).success();
    env.nook(&["exec", &n, "true"])
        .assert_error_line(125, &[&n, "not running"]);
}

#[test]
fn restart_policy_restarts_failures_up_to_the_count() {
    let env = Env::new();
    let n = name();
    env.detach(&[
        "--name",
        &n,
        "--restart",
        "on-failure:2",
        "host",
        "sh",
        "-c",
        "echo attempt; exit 3",
    ]);
    assert_eq!(env.nook(&["wait", &n]).success().line(), "3");
    assert_eq!(env.inspect(&n)["RestartCount"], 2);
    let logs = env.nook(&["logs", &n]).success().out();
    assert_eq!(
        logs.matches("attempt").count(),
        3,
        "one first run and two restarts: {logs}"
    );
}

#[test]
fn a_stopped_container_is_not_restarted_by_always() {
    let env = Env::new();
    let n = name();
    env.detach(&["--name", &n, "--restart", "always", "host", "sleep", "1000"]);
    env.nook(&["stop", "-t", "1", &n]).success();
    assert_eq!(env.nook(&["wait", &n]).success().line(), "137");
    assert_eq!(env.field(&n, "{{.State}}"), "exited");
    assert_eq!(env.inspect(&n)["RestartCount"], 0);
}

#[test]
fn names_are_unique_and_renames_follow() {
    let env = Env::new();
    let n = name();
    env.nook(&["create", "--name", &n, "host", "true"])
        .success();
    env.nook(&["create", "--name", &n, "host", "true"])
        .assert_error_line(125, &[&n, "in use"]);
    let m = name();
    env.nook(&["rename", &n, &m]).success();
    assert_eq!(
        env.field(&m, "{{.Names}} {{.Status}}"),
        format!("{m} Created")
    );
    // The old name is free again.
    env.nook(&["create", "--name", &n, "host", "true"])
        .success();
    env.nook(&["rm", &n, &m]).success();
}

#[test]
fn create_then_start_attached() {
    let env = Env::new();
    let n = name();
    env.nook(&[
        "create",
        "--name",
        &n,
        "host",
        "sh",
        "-c",
        "echo started; exit 5",
    ])
    .success();
    assert_eq!(env.field(&n, "{{.State}}"), "created");
    let o = env.nook(&["start", "-a", &n]);
    o.assert_code(5);
    assert_eq!(o.out(), "started\n");
    // Started again, it runs again (the record keeps its request).
    env.nook(&["start", &n]).success();
    assert_eq!(env.nook(&["wait", &n]).success().line(), "5");
    assert_eq!(
        env.nook(&["logs", &n]).success().out(),
        "started\nstarted\n"
    );
}

#[test]
fn attach_passes_input_and_output() {
    let env = Env::new();
    let n = name();
    env.detach(&[
        "-i",
        "--name",
        &n,
        "host",
        "sh",
        "-c",
        "read x; echo got $x; exit 4",
    ]);
    let mut cmd = env.cmd(&["attach", &n]);
    cmd.stdin(Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.write_stdin(b"hello\n");
    let o = p.wait(TIMEOUT);
    o.assert_code(4);
    assert_eq!(o.out(), "got hello\n");
}

#[test]
fn cp_copies_both_ways_with_container_ownership() {
    let env = Env::new();
    let n = name();
    env.detach(&["--name", &n, "host", "sleep", "1000"]);
    let dir = tempdir();
    let file = dir.path().join("note.txt");
    std::fs::write(&file, "from the host\n").unwrap();
    let target = format!("{n}:/tmp/");
    env.nook(&["cp", file.to_str().unwrap(), &target]).success();
    let inside = env.nook(&[
        "exec",
        &n,
        "sh",
        "-c",
        "cat /tmp/note.txt; stat -c %u /tmp/note.txt",
    ]);
    assert_eq!(
        inside.success().out(),
        "from the host\n0\n",
        "owned by the container's root"
    );
    env.nook(&[
        "exec",
        &n,
        "sh",
        "-c",
        "mkdir -p /tmp/d/e && echo deep > /tmp/d/e/f",
    ])
    .success();
    let back = dir.path().join("back");
    env.nook(&["cp", &format!("{n}:/tmp/d"), back.to_str().unwrap()])
        .success();
    assert_eq!(std::fs::read_to_string(back.join("e/f")).unwrap(), "deep\n");
    env.nook(&["cp", "/nonexistent", &format!("{n}:/tmp")])
        .assert_error_line(125, &["/nonexistent"]);
}

#[test]
fn top_lists_the_container_processes() {
    let env = Env::new();
    let n = name();
    env.detach(&["--name", &n, "host", "sleep", "1000"]);
    let o = env.nook(&["top", &n]);
    o.success();
    let out = o.out();
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{o}");
    let cols: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(
        cols[0], "root",
        "user named as the container's /etc/passwd names it"
    );
    assert_eq!(cols[1], "1", "pid as the container sees it");
    assert!(rows[0].ends_with("sleep 1000"));
    // A user the container's passwd does not list is shown by number.
    // (Its output away from ours: a detached process keeps what it was given.)
    env.nook(&[
        "exec",
        "-d",
        "--user",
        "4242",
        &n,
        "sh",
        "-c",
        "exec sleep 999 >/dev/null 2>&1",
    ])
    .success();
    let o = env.nook(&["top", &n]);
    let listed = o.success().out();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("4242 ") && l.contains("sleep 999")),
        "{o}"
    );
}

#[test]
fn logs_rotate_and_json_file_reads_back() {
    let env = Env::new();
    let n = name();
    env.detach(&[
        "--name",
        &n,
        "--log-opt",
        "max-size=2k",
        "host",
        "sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do echo line$i; i=$((i+1)); done",
    ]);
    env.nook(&["wait", &n]).success();
    let log = PathBuf::from(env.inspect(&n)["LogPath"].as_str().unwrap());
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(
        size <= 2048,
        "the log was rotated at 2k, it is {size} bytes"
    );
    assert!(
        log.with_extension("log.1").exists(),
        "one rotated file is kept"
    );
    assert_eq!(
        env.nook(&["logs", "--tail", "1", &n]).success().out(),
        "line299\n"
    );

    let j = name();
    env.detach(&[
        "--name",
        &j,
        "--log-driver",
        "json-file",
        "host",
        "sh",
        "-c",
        "echo one; echo two",
    ]);
    env.nook(&["wait", &j]).success();
    let raw = std::fs::read_to_string(env.inspect(&j)["LogPath"].as_str().unwrap()).unwrap();
    assert!(
        raw.lines().all(|l| l.starts_with("{\"")),
        "json-file lines: {raw}"
    );
    assert_eq!(env.nook(&["logs", &j]).success().out(), "one\ntwo\n");
}

#[test]
fn logs_follow_prints_every_line_once_through_fast_rotation() {
    let env = Env::new();
    let n = name();
    // The container waits on a FIFO until the follower is attached, then prints 60,000
    // lines into a log rotated at 4k: hundreds of rotations, many between any two
    // reads a follower of the files could make.
    let sync = tempdir();
    let fifo = sync.path().join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let volume = format!("{}:/sync", sync.path().display());
    env.detach(&[
        "--name",
        &n,
        "--log-opt",
        "max-size=4k",
        "-v",
        &volume,
        "host",
        "sh",
        "-c",
        "echo ready; read go < /sync/go; i=0;          while [ $i -lt 60000 ]; do echo line$i; i=$((i+1)); done",
    ]);
    let mut follow = spawn(&mut env.cmd(&["logs", "-f", &n]));
    follow.wait_for("ready", TIMEOUT);
    // The container opens the FIFO after it said ready: retry until it has (bounded).
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut go = loop {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
        {
            Ok(f) => break f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the container never read the FIFO"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("opening the FIFO: {e}"),
        }
    };
    std::io::Write::write_all(&mut go, b"go\n").unwrap();
    drop(go);
    let o = follow.wait(TIMEOUT);
    o.success();
    let out = o.out();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ready"));
    let mut expected = 0;
    for line in lines {
        assert_eq!(
            line,
            format!("line{expected}"),
            "every line once, in order (after {expected} good ones)"
        );
        expected += 1;
    }
    assert_eq!(expected, 60000, "all 60,000 lines printed");
    assert_eq!(o.err(), "", "no line was skipped");
    let log = PathBuf::from(env.inspect(&n)["LogPath"].as_str().unwrap());
    assert!(
        log.with_extension("log.1").exists() && std::fs::metadata(&log).unwrap().len() <= 4096,
        "the log was rotated"
    );
    assert_eq!(
        env.nook(&["logs", "--tail", "1", &n]).success().out(),
        "line59999\n"
    );
}

#[test]
fn foreground_run_is_seen_and_stopped_by_other_commands() {
    let env = Env::new();
    let n = name();
    let fg = env.foreground(&[], &n);
    assert_eq!(env.field(&n, "{{.State}}"), "running");
    env.nook(&["stop", "-t", "1", &n]).success();
    fg.wait(TIMEOUT).assert_code(137);
    assert_eq!(env.field(&n, "{{.State}} {{.ExitCode}}"), "exited 137");
}

#[test]
fn a_killed_supervisor_shows_as_exited_and_cleans_up() {
    let env = Env::private();
    let n = name();
    // A non-root user inside: switching to it must not lose the parent-death signal.
    let id = env.detach(&["--name", &n, "--user", "1000:1000", "host", "sleep", "1000"]);
    let state = env.inspect(&n)["State"].clone();
    let supervisor = state["SupervisorPid"].as_i64().unwrap() as i32;
    let container = state["Pid"].as_i64().unwrap() as i32;
    let pidfd = |pid: i32| {
        // SAFETY: pidfd_open with a pid and no flags.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        assert!(fd >= 0, "pidfd_open({pid})");
        fd
    };
    let container_fd = pidfd(container);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
    // The container dies with its supervisor.
    let mut fds = [libc::pollfd {
        fd: container_fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 30_000) };
    assert_eq!(ready, 1, "the container outlived its supervisor");
    let inspect = env.inspect(&n);
    assert_eq!(inspect["State"]["Status"], "exited");
    assert!(
        inspect["State"]["Error"]
            .as_str()
            .unwrap()
            .contains("supervisor is gone"),
        "{inspect}"
    );
    env.nook(&["rm", &n]).success();
    env.nook(&["container", "prune", "-f"]).success();
    let left: Vec<_> = std::fs::read_dir(env.runtime_containers())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|f| f.to_string_lossy() == id),
        "the runtime dir of {id} is left: {left:?}"
    );
}

#[test]
fn twenty_parallel_runs_leave_nothing_behind() {
    let env = Env::private();
    let marker = token();
    let runs: Vec<(String, Proc)> = (0..20)
        .map(|i| {
            let word = format!("{marker}-{i}");
            let p = spawn(&mut env.cmd(&["run", "--rm", "host", "echo", &word]));
            (word, p)
        })
        .collect();
    for (word, p) in runs {
        let o = p.wait(TIMEOUT);
        o.success();
        assert_eq!(o.line(), word, "each run prints its own word");
    }
    assert_eq!(env.nook(&["ps", "-a", "-q"]).success().out(), "");
    let left: Vec<_> = std::fs::read_dir(env.runtime_containers())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "runtime state left behind: {left:?}");
    let procs = leftover_processes(&marker);
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    let names = env.root.path().join("containers/names");
    let names_left: Vec<_> = std::fs::read_dir(&names)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(names_left.is_empty(), "names left: {names_left:?}");
}

fn leftover_processes(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

#[test]
fn port_lists_published_ports() {
    if !tun_usable("port_lists_published_ports") {
        return;
    }
    let env = Env::new();
    let n = name();
    let port = free_port();
    let spec = format!("127.0.0.1:{port}:80");
    env.detach(&["--name", &n, "-p", &spec, "host", "sleep", "1000"]);
    assert_eq!(
        env.nook(&["port", &n]).success().out(),
        format!("80/tcp -> 127.0.0.1:{port}\n")
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_requests_say_what_to_do() {
    let env = Env::new();
    env.nook(&["stop", "nosuch"])
        .assert_error_line(125, &["nosuch", "ps -a"]);
    env.nook(&["run", "-d", "--restart", "sometimes", "host", "true"])
        .assert_error_line(125, &["--restart", "'sometimes'", "on-failure[:N]"]);
    let n = name();
    env.detach(&["--name", &n, "host", "sleep", "1000"]);
    env.nook(&["rm", &n]).assert_error_line(1, &[&n, "rm -f"]);
    env.nook(&["rm", "-f", &n]).success();
}

#[test]
fn diff_lists_changes_and_commit_makes_an_image_of_them() {
    let env = Env::new();
    let rootfs = match busybox_rootfs() {
        Ok(r) => r,
        Err(why) => {
            skip("diff_lists_changes_and_commit_makes_an_image_of_them", &why);
            return;
        }
    };
    let dir = tempdir();
    let tarball = dir.path().join("rootfs.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs.path())
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar");
    assert!(tar.success());
    env.nook(&["import", tarball.to_str().unwrap(), "base"])
        .success();
    let n = name();
    env.detach(&[
        "--name",
        &n,
        "base",
        "sh",
        "-c",
        "echo new > /etc/added; echo more >> /etc/group; rm /etc/nook-rootfs-marker; \
         echo ready; exec sleep 1000",
    ]);
    env.wait_for_log(&n, "ready");
    let diff = env.nook(&["diff", &n]).success().out();
    assert_eq!(
        diff, "C /etc\nA /etc/added\nC /etc/group\nD /etc/nook-rootfs-marker\n",
        "the changes, without the mount points nook adds"
    );
    env.nook(&["commit", &n, "derived"]).success();
    let o = env.nook(&[
        "run",
        "--rm",
        "derived",
        "sh",
        "-c",
        "cat /etc/added; tail -n1 /etc/group; test -e /etc/nook-rootfs-marker || echo deleted",
    ]);
    assert_eq!(o.success().out(), "new\nmore\ndeleted\n");
    // The base image is still needed by the container (and the new image's layers).
    env.nook(&["rmi", "base"])
        .assert_error_line(125, &["in use"]);
    env.nook(&["rm", "-f", &n]).success();
    env.nook(&["diff", "nosuch"])
        .assert_error_line(125, &["nosuch"]);
}

#[test]
fn stop_ends_a_crash_loop() {
    let env = Env::new();
    let n = name();
    env.detach(&[
        "--name",
        &n,
        "--restart",
        "always",
        "host",
        "sh",
        "-c",
        "echo looping; exit 1",
    ]);
    env.wait_for_log(&n, "looping");
    env.nook(&["stop", "-t", "1", &n]).success();
    // Stopped for good: no supervisor left to start it again.
    assert_eq!(env.field(&n, "{{.State}}"), "exited");
    assert_eq!(
        env.inspect(&n)["State"]["SupervisorPid"].as_i64().map(|p| {
            std::path::Path::new(&format!("/proc/{p}")).exists()
                && !std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        }),
        Some(false)
    );
}

#[test]
fn a_killed_foreground_rm_run_is_removed_by_the_next_ps() {
    let env = Env::private();
    let n = name();
    let fg = env.foreground(&["--rm"], &n);
    // kill -9 of nook: nothing of it can clean up.
    fg.kill_all();
    let _ = fg.wait(TIMEOUT);
    assert_eq!(env.nook(&["ps", "-a", "-q"]).success().out(), "");
    let left: Vec<_> = std::fs::read_dir(env.runtime_containers())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The name is free again.
    env.nook(&["create", "--name", &n, "host", "true"])
        .success();
}

/// Every file under `dir` that holds `needle` (symlinks not followed).
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        let path = e.path();
        if kind.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if kind.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn records_keep_what_was_asked_and_no_secret_of_the_callers_shell() {
    let env = Env::private();
    let secret = format!("s3cr3t{}", token());
    let (ran, created) = (name(), name());
    let creds = format!("someone:{secret}");
    let with_secret = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("NOOK_TEST_SECRET", &secret)
            .env("ASKED_FOR", "from-the-shell");
        spawn(&mut c).wait(TIMEOUT)
    };
    let script = "echo asked=$ASKED_FOR literal=$LITERAL secret=${NOOK_TEST_SECRET:-none}";
    with_secret(&[
        "run",
        "-d",
        "--creds",
        &creds,
        "--name",
        &ran,
        "-e",
        "ASKED_FOR",
        "-e",
        "LITERAL=1",
        "host",
        "sh",
        "-c",
        script,
    ])
    .success();
    with_secret(&[
        "create",
        "--creds",
        &creds,
        "--name",
        &created,
        "-e",
        "ASKED_FOR",
        "host",
        "sh",
        "-c",
        script,
    ])
    .success();
    assert_eq!(env.nook(&["wait", &ran]).success().line(), "0");
    // Started from a shell without the variables: the record's resolved -e counts.
    env.nook(&["start", &created]).success();
    assert_eq!(env.nook(&["wait", &created]).success().line(), "0");
    assert_eq!(
        env.nook(&["logs", &ran]).success().out(),
        "asked=from-the-shell literal=1 secret=none\n"
    );
    assert_eq!(
        env.nook(&["logs", &created]).success().out(),
        "asked=from-the-shell literal= secret=none\n"
    );
    for dir in [env.root.path(), env.runtime.as_ref().unwrap().path()] {
        let leaked = files_holding(dir, secret.as_bytes());
        assert!(leaked.is_empty(), "the secret is in {leaked:?}");
    }
    // And the record says what was asked, in its versioned format.
    let record = std::fs::read_to_string(
        env.root
            .path()
            .join("containers")
            .join(env.inspect(&created)["Id"].as_str().unwrap())
            .join("config.json"),
    )
    .unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["version"], 2, "{record}");
    assert_eq!(
        record["request"]["env"][0], "ASKED_FOR=from-the-shell",
        "{record}"
    );
    assert!(
        record.get("argv").is_none() && record.get("env").is_none(),
        "{record}"
    );
}

/// A container's record as nook wrote it before records held a request (format 1):
/// nook's command line and the creating shell's whole environment.
const RECORD_V1: &str = r#"{
  "id": "@ID@",
  "name": "@NAME@",
  "created": "2026-12-01T10:00:00.000000000Z",
  "created_unix_ns": 1796119200000000000,
  "image": "host",
  "image_id": null,
  "command": ["sh", "-c", "echo migrated from=$FROM_ENV literal=$LITERAL old=${OLD_SECRET:-none}"],
  "argv": ["run", "-d", "--name", "@NAME@", "--restart", "no", "-e", "FROM_ENV", "-e", "LITERAL=1", "--stop-signal", "INT", "host", "sh", "-c", "echo migrated from=$FROM_ENV literal=$LITERAL old=${OLD_SECRET:-none}"],
  "cwd": "/",
  "env": [["FROM_ENV", "recorded"], ["OLD_SECRET", "@SECRET@"], ["PATH", "/usr/bin:/bin"]],
  "rm": false,
  "tty": false,
  "interactive": false,
  "restart": "no",
  "stop_signal": 2,
  "stop_timeout": 10,
  "log_driver": "k8s-file",
  "log_size_max": null,
  "layer_dir": null,
  "store": "@STORE@"
}"#;

#[test]
fn a_record_of_the_previous_format_is_migrated_and_starts() {
    let env = Env::private();
    let n = name();
    let id = format!("{}{}", "ab".repeat(20), &"0123456789abcdef".repeat(2)[..24]);
    let secret = format!("old{}", token());
    let store = env.root.path().join("containers");
    let dir = store.join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let record = RECORD_V1
        .replace("@ID@", &id)
        .replace("@NAME@", &n)
        .replace("@SECRET@", &secret)
        .replace("@STORE@", store.to_str().unwrap());
    std::fs::write(dir.join("config.json"), record).unwrap();
    assert_eq!(env.field(&n, "{{.State}}"), "created");
    env.nook(&["start", &n]).success();
    assert_eq!(env.nook(&["wait", &n]).success().line(), "0");
    // -e FROM_ENV as the creating shell had it; nothing else of that shell.
    assert_eq!(
        env.nook(&["logs", &n]).success().out(),
        "migrated from=recorded literal=1 old=none\n"
    );
    assert_eq!(env.inspect(&n)["Config"]["StopSignal"], libc::SIGINT);
    let migrated: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(migrated["version"], 2, "{migrated}");
    assert!(migrated.get("argv").is_none(), "{migrated}");
    let leaked = files_holding(env.root.path(), secret.as_bytes());
    assert!(
        leaked.is_empty(),
        "the old record's environment is in {leaked:?}"
    );
    env.nook(&["rm", &n]).success();
}

#[test]
fn bad_flag_values_fail_at_parse_time_with_the_accepted_values() {
    let env = Env::new();
    for (flag, accepted) in [
        ("--pull=bogus", "missing, always, never, newer"),
        ("--restart=bogus", "on-failure[:N]"),
        ("--log-driver=bogus", "k8s-file, json-file, none"),
        ("--network=bogus", "none"),
        ("--cgroups=bogus", "enabled, disabled"),
        ("--userns=bogus", "keep-id"),
        ("--storage-driver=bogus", "overlay, fuse, copy"),
        ("--stop-signal=bogus", "TERM"),
    ] {
        for cmd in ["run", "create"] {
            let n = name();
            env.nook(&[cmd, "--name", &n, flag, "host", "true"])
                .assert_error_line(125, &[flag.split('=').next().unwrap(), "'bogus'", accepted]);
        }
    }
    // Mount flags too: parsed once, before anything runs.
    env.nook(&["run", "-v", "relative:/x", "host", "true"])
        .assert_error_line(125, &["--volume", "'relative:/x'", "absolute"]);
    env.nook(&["create", "--tmpfs", "tmp", "host", "true"])
        .assert_error_line(125, &["--tmpfs", "'tmp'", "absolute"]);
    // Typed values (sizes, CPU values, device throttles, cgroup settings, security
    // options, ID maps, ports): the flag, the value and what is accepted, for run and create alike.
    for (flag, value, accepted) in [
        ("--memory", "12x", "512m"),
        ("--memory-swap", "lots", "-1"),
        ("--cpus", "lots", "1.5"),
        ("--cpuset-cpus", "3-1", "0-3,6"),
        ("--cpuset-mems", "a", "0-3,6"),
        ("--device-read-bps", "/dev/null:1m", "not a block device"),
        ("--device-write-iops", "nocolon", "DEVICE:IOPS"),
        ("--cgroup-conf", "nokey", "KEY=VALUE"),
        (
            "--security-opt",
            "apparmor=unconfined",
            "seccomp=PROFILE.json",
        ),
        (
            "--security-opt",
            "no-new-privileges=maybe",
            "no-new-privileges",
        ),
        ("--uidmap", "0:1", "CONTAINER-ID:HOST-ID:COUNT"),
        ("--publish", "80:x", "HOSTPORT:CONTAINERPORT"),
    ] {
        for cmd in ["run", "create"] {
            let n = name();
            env.nook(&[cmd, "--name", &n, flag, value, "host", "true"])
                .assert_error_line(125, &[flag, &format!("'{value}'"), accepted]);
        }
    }
    // What only the whole request or the host can say, before anything is created too.
    let missing = env.root.path().join("no-such-profile.json");
    let seccomp = format!("seccomp={}", missing.display());
    for (args, says) in [
        (&["--memory-swap", "1g"][..], "--memory-swap needs --memory"),
        (&["--cpus", "1", "--cpu-quota", "50000"], "--cpus"),
        (&["--security-opt", &seccomp], "cannot read the profile"),
        (&["--uidmap", "0:1:1"], "--uidmap and --gidmap go together"),
    ] {
        for cmd in ["run", "create"] {
            let n = name();
            let argv: Vec<&str> = [cmd, "--name", &n]
                .into_iter()
                .chain(args.iter().copied())
                .chain(["host", "true"])
                .collect();
            env.nook(&argv).assert_error_line(125, &[says]);
        }
    }
    // Nothing was created, no name taken.
    assert_eq!(env.nook(&["ps", "-aq"]).success().out(), "");
}

#[test]
fn a_record_that_cannot_be_read_is_listed_as_broken_and_removed_by_name() {
    let env = Env::new();
    let (n, m) = (name(), name());
    let id = env
        .nook(&["create", "--name", &n, "host", "true"])
        .success()
        .line();
    let other = env
        .nook(&["create", "--name", &m, "host", "true"])
        .success()
        .line();
    for id in [&id, &other] {
        let record = env
            .root
            .path()
            .join("containers")
            .join(id)
            .join("config.json");
        std::fs::write(&record, "{\"version\": 2, \"id\": ").unwrap();
    }
    let ps = env.nook(&["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Status}}"]);
    let out = ps.success().out();
    assert!(out.contains(&format!("{n} broken Broken: ")), "{ps}");
    assert!(out.contains("is not a container record"), "{ps}");
    // Its name stays reserved meanwhile; other commands say why and what to do.
    env.nook(&["create", "--name", &n, "host", "true"])
        .assert_error_line(125, &[&n, "in use"]);
    env.nook(&["start", &n])
        .assert_error_line(125, &[&n, "cannot be read", "nook rm"]);
    // Removed by name, and by a prefix of its ID with -f: nothing left, names free.
    assert_eq!(env.nook(&["rm", &n]).success().line(), id);
    assert_eq!(
        env.nook(&["rm", "-f", &other[..16]]).success().line(),
        other
    );
    assert_eq!(env.nook(&["ps", "-aq"]).success().out(), "");
    assert!(!env.root.path().join("containers").join(&id).exists());
    env.nook(&["create", "--name", &n, "host", "true"])
        .success();
}

#[test]
fn a_reader_that_goes_away_ends_ps_and_logs_quietly() {
    let env = Env::new();
    let n = name();
    env.detach(&["--name", &n, "host", "sh", "-c", "seq 1 2000"]);
    assert_eq!(env.nook(&["wait", &n]).success().line(), "0");
    for args in [vec!["ps", "-a"], vec!["logs", &n], vec!["logs", "-f", &n]] {
        // stdout a pipe nobody reads any more, as `nook ps -a | head -1` leaves it.
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let mut cmd = env.cmd(&args);
        cmd.stdout(Stdio::from(write)).stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}
