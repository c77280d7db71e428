//! A new process in a running container (`nook_rootless::join`, driven through the
//! hidden `nook __exec-pid PID`): it sees the container's hostname, processes, mounts
//! and network, runs with its capabilities and the user asked for, passes exit statuses
//! and signals like `nook run`, and is refused cleanly once the container is gone.
//!
//! Each test starts `nook run host sh -c '...; exec sleep 1000'`, waits for its `ready`
//! line and for its pid 1 to have become `sleep`, then execs into it by the host pid of
//! that process.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::pty::{openpty, Winsize};
use nook_tests::*;

/// A running container: the `nook run` process and the host pid of its pid 1.
struct Container {
    run: Option<Proc>,
    init: i32,
    hostname: String,
}

impl Container {
    /// `nook run RUN_ARGS host sh -c SETUP; echo ready; exec sleep 1000`.
    fn start(run_args: &[&str], setup: &str) -> Container {
        let script = format!("{setup}\necho \"ready $(hostname)\"; exec sleep 1000");
        let mut cmd = nook();
        cmd.arg("run")
            .args(run_args)
            .args(["host", "sh", "-c", &script]);
        let mut run = spawn(&mut cmd);
        let line = run.wait_for("ready ", TIMEOUT);
        let hostname = line.trim_start_matches("ready ").trim().to_string();
        let init = container_init(run.pid).expect("the container's pid 1");
        // `ready` comes just before the exec of sleep: wait for it to have happened.
        let comm = format!("/proc/{init}/comm");
        wait_until("the container's pid 1 to exec sleep", || {
            std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
        });
        Container {
            run: Some(run),
            init,
            hostname,
        }
    }

    /// `nook __exec-pid INIT ARGS`, run to completion.
    fn exec(&self, args: &[&str]) -> Output {
        spawn(&mut self.exec_cmd(args)).wait(TIMEOUT)
    }

    fn exec_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = nook();
        cmd.args(["__exec-pid", &self.init.to_string()]).args(args);
        cmd
    }

    fn host_ns(&self, kind: &str) -> String {
        std::fs::read_link(format!("/proc/{}/ns/{kind}", self.init))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Lines of the container's pid 1's /proc status starting with `prefix`.
    fn status_lines(&self, prefix: &str) -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.init))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    /// Ends the container (kills nook run and with it the container) and waits.
    fn stop(&mut self) -> Output {
        let run = self.run.take().expect("running");
        run.kill_all();
        run.wait(TIMEOUT)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            run.kill_all();
            let _ = run.wait(TIMEOUT);
        }
    }
}

/// Polls a condition of the system under test until it holds, within [`TIMEOUT`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sees_the_containers_hostname_processes_and_mounts() {
    assert_unprivileged();
    let t = token();
    let c = Container::start(&["--rm"], &format!("echo in-{t} > /tmp/only-here"));
    let o = c.exec(&["sh", "-c", "hostname; cat /proc/1/comm; cat /tmp/only-here"]);
    o.assert_code(0);
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [c.hostname.as_str(), "sleep", &format!("in-{t}")],
        "{o}"
    );
    assert_ne!(
        c.hostname,
        nix::unistd::gethostname().unwrap().to_string_lossy()
    );
    // The host's /tmp has no such file: the exec'd process is in the container's mounts.
    assert!(
        !std::path::Path::new("/tmp/only-here").exists() || {
            std::fs::read_to_string("/tmp/only-here").unwrap_or_default() != format!("in-{t}\n")
        }
    );
}

#[test]
fn joins_every_namespace_of_the_container() {
    assert_unprivileged();
    let c = Container::start(&["--rm"], "true");
    let kinds = ["user", "mnt", "pid", "net", "uts", "ipc", "cgroup"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect();
    let o = c.exec(&["sh", "-c", &script]);
    o.assert_code(0);
    let out = o.out();
    let got: Vec<&str> = out.lines().collect();
    let want: Vec<String> = kinds.iter().map(|k| c.host_ns(k)).collect();
    assert_eq!(got, want, "{o}");
    for kind in ["user", "mnt", "pid", "net", "uts", "ipc"] {
        assert_ne!(
            c.host_ns(kind),
            host_ns(kind),
            "{kind} namespace is the host's"
        );
    }
}

#[test]
fn default_network_shows_tap0() {
    assert_unprivileged();
    if !tun_usable("exec_join::default_network_shows_tap0") {
        return;
    }
    let c = Container::start(&["--rm"], "true");
    let o = c.exec(&["cat", "/proc/net/dev"]);
    o.assert_code(0);
    assert!(o.out().contains("tap0:"), "{o}");
}

#[test]
fn userspace_network_reaches_the_host_through_10_0_2_2() {
    assert_unprivileged();
    if !tun_usable("exec_join::userspace_network_reaches_the_host_through_10_0_2_2") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        line
    });
    let c = Container::start(&["--rm", "--network=nook:allow_host_loopback=true"], "true");
    let script = format!("echo hello-from-exec | busybox nc 10.0.2.2 {port}");
    let o = c.exec(&["sh", "-c", &script]);
    o.assert_code(0);
    assert_eq!(server.join().unwrap(), "hello-from-exec\n");
}

#[test]
fn exit_statuses_like_run() {
    assert_unprivileged();
    let c = Container::start(&["--rm"], "true");
    c.exec(&["sh", "-c", "exit 3"]).assert_code(3);
    c.exec(&["sh", "-c", "kill -KILL $$"]).assert_code(137);
    c.exec(&["sh", "-c", "kill -TERM $$"]).assert_code(143);
    c.exec(&["no-such-command-here"])
        .assert_error_line(127, &["no-such-command-here", "not found"]);
    c.exec(&["/etc/hostname"]).assert_code(126);
    c.exec(&["-w", "/no/such/dir", "true"])
        .assert_error_line(125, &["/no/such/dir"]);
}

#[test]
fn env_and_workdir() {
    assert_unprivileged();
    let c = Container::start(&["--rm", "-e", "FROM_RUN=r1"], "true");
    let o = c.exec(&[
        "-e",
        "FOO=bar baz",
        "-w",
        "/tmp",
        "sh",
        "-c",
        "echo \"$FOO|$FROM_RUN|$container|$(pwd)\"",
    ]);
    o.assert_code(0);
    assert_eq!(o.out().trim(), "bar baz|r1|nook|/tmp", "{o}");
    let o = c.exec(&["-e", "FROM_RUN=r2", "sh", "-c", "echo $FROM_RUN; pwd"]);
    assert_eq!(o.out(), "r2\n/\n", "{o}");
}

#[test]
fn user_inside_is_honored() {
    assert_unprivileged();
    let c = Container::start(&["--rm"], "true");
    let map = std::fs::read_to_string(format!("/proc/{}/uid_map", c.init)).unwrap();
    let mapped: u64 = map
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    let o = c.exec(&["id", "-u"]);
    assert_eq!(o.out().trim(), "0", "{o}");
    if mapped <= 1000 {
        skip(
            "exec_join::user_inside_is_honored",
            "single-ID map (no subordinate IDs): uid 1000 is not mapped",
        );
        return;
    }
    let o = c.exec(&[
        "--user",
        "1000:1000",
        "sh",
        "-c",
        "id -u; id -g; echo $HOME",
    ]);
    o.assert_code(0);
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1000", "1000"], "{o}");
}

#[test]
fn capabilities_match_the_containers() {
    assert_unprivileged();
    let c = Container::start(&["--rm", "--cap-add", "NET_RAW"], "true");
    let o = c.exec(&[
        "grep",
        "-E",
        "^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):",
        "/proc/self/status",
    ]);
    o.assert_code(0);
    let out = o.out();
    let got: Vec<&str> = out.lines().collect();
    let mut want = c.status_lines("Cap");
    want.extend(c.status_lines("NoNewPrivs:"));
    assert_eq!(got, want, "{o}");
    let eff = c.status_lines("CapEff:");
    assert_ne!(
        eff,
        ["CapEff:\t0000000000000000"],
        "the container should have capabilities"
    );
}

#[test]
fn stdin_only_with_i() {
    assert_unprivileged();
    let c = Container::start(&["--rm"], "true");
    let mut cmd = c.exec_cmd(&["-i", "sh", "-c", "cat; echo done"]);
    cmd.stdin(Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.feed_stdin(b"typed line\n".to_vec());
    let o = p.wait(TIMEOUT);
    o.assert_code(0);
    assert_eq!(o.out(), "typed line\ndone\n");
    // Without -i: the container's /dev/null, even with our stdin a pipe that stays open.
    let mut cmd = c.exec_cmd(&["sh", "-c", "cat; readlink /proc/self/fd/0"]);
    cmd.stdin(Stdio::piped());
    let mut p = spawn(&mut cmd);
    p.write_stdin(b"not for the container\n");
    let o = p.wait(TIMEOUT);
    assert_eq!(o.out(), "/dev/null\n", "{o}");
}

#[test]
fn signals_are_forwarded() {
    assert_unprivileged();
    let c = Container::start(&["--rm"], "true");
    // The background sleep outlives the shell: it must not hold the test's pipe.
    let script =
        "trap 'echo got-TERM; exit 42' TERM; echo ready; sleep 1000 >/dev/null 2>&1 & wait";
    let mut p = spawn(&mut c.exec_cmd(&["sh", "-c", script]));
    p.wait_for("ready", TIMEOUT);
    p.signal(Signal::SIGTERM);
    p.wait_for("got-TERM", TIMEOUT);
    p.wait(TIMEOUT).assert_code(42);
}

#[test]
fn detached_process_runs_in_the_container() {
    assert_unprivileged();
    let c = Container::start(&["--rm"], "true");
    // A detached process keeps our stdio (as with runc exec -d): let go of the pipe.
    let o = c.exec(&["-d", "sh", "-c", "exec sleep 1000 >/dev/null 2>&1"]);
    o.assert_code(0);
    let pid: i32 = o.out().trim().parse().expect("a pid");
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(ns.to_string_lossy(), c.host_ns("pid"));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
}

#[test]
fn a_terminal_from_the_containers_devpts() {
    assert_unprivileged();
    let c = Container::start(&["--rm"], "true");
    let size = Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).expect("openpty");
    let mut cmd = c.exec_cmd(&["-t", "sh", "-c", "tty; stty size; exit 5"]);
    on_terminal(&mut cmd, &pty.slave);
    let mut child = cmd.spawn().expect("spawn nook");
    drop(cmd);
    drop(pty.slave);
    let master = File::from(pty.master);
    let (tx, rx) = mpsc::channel();
    let mut reader = master.try_clone().unwrap();
    thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once nook (the last holder of the slave) has exited.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(out);
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => {
            let _ = child.kill();
            panic!("no end of terminal output within {TIMEOUT:?}");
        }
    };
    let status = child.wait().unwrap();
    drop(master);
    assert_eq!(status.code(), Some(5), "{out}");
    // The container's own devpts instance: its first pty is /dev/pts/0.
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("33 101"), "{out}");
}

#[test]
fn refused_once_the_container_is_gone() {
    assert_unprivileged();
    let mut c = Container::start(&["--rm"], "true");
    let init = c.init;
    c.stop();
    // nook has gone once its stdout closed; its container's pid 1 may still be exiting.
    let stat = format!("/proc/{init}/stat");
    wait_until("the container's pid 1 to have exited", || {
        std::fs::read_to_string(&stat).map_or(true, |s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
    });
    let o = c.exec(&["true"]);
    o.assert_error_line(125, &["not running", &init.to_string()]);
}

#[test]
fn host_network_is_left_as_it_is() {
    assert_unprivileged();
    let c = Container::start(&["--rm", "--network=host"], "true");
    let o = c.exec(&["sh", "-c", "readlink /proc/self/ns/net /proc/self/ns/user"]);
    o.assert_code(0);
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, [host_ns("net"), c.host_ns("user")], "{o}");
}

#[test]
fn joins_the_containers_cgroup() {
    assert_unprivileged();
    // No network: the VM lane, where containers get cgroups, has no /dev/net/tun.
    let c = Container::start(&["--rm", "--network=none"], "true");
    let host_view = std::fs::read_to_string(format!("/proc/{}/cgroup", c.init)).unwrap();
    let has_leaf = host_view
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|p| p.rsplit('/').next())
        .is_some_and(|leaf| leaf.starts_with("nook-"));
    if !has_leaf {
        skip(
            "exec_join::joins_the_containers_cgroup",
            "containers get no cgroup of their own here (no delegated cgroup2; the VM lane has one)",
        );
        return;
    }
    let o = c.exec(&["sh", "-c", "cat /proc/self/cgroup; cat /proc/1/cgroup"]);
    o.assert_code(0);
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["0::/", "0::/"], "{o}");
}

/// Receives one descriptor (SCM_RIGHTS) and the bytes sent with it.
fn receive_fd(sock: &UnixStream) -> (Vec<u8>, OwnedFd) {
    let mut data = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut space = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; the fields set point at live buffers above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space) as _;
    // SAFETY: msg describes valid buffers that outlive the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: msg was filled in by recvmsg; the macros walk its control buffer.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null(), "no descriptor received");
        assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const i32);
        (data[..n as usize].to_vec(), OwnedFd::from_raw_fd(fd))
    }
}

#[test]
fn console_socket_receives_a_pty_of_the_container() {
    assert_unprivileged();
    let c = Container::start(&["--rm"], "true");
    let dir = tempdir();
    let path = dir.path().join("console.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let (_, master) = receive_fd(&conn);
        let mut master = File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the process, the last holder of the pty's other side, has exited.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(out);
    });
    let p = spawn(&mut c.exec_cmd(&[
        "--console-socket",
        path.to_str().unwrap(),
        "sh",
        "-c",
        "tty; exit 4",
    ]));
    let o = p.wait(TIMEOUT);
    o.assert_code(4);
    assert_eq!(
        o.out(),
        "",
        "the process's output goes to the pty, not nook's stdout"
    );
    let tty = rx
        .recv_timeout(TIMEOUT)
        .expect("the console socket's pty output");
    let tty = String::from_utf8_lossy(&tty);
    assert!(tty.contains("/dev/pts/0"), "{tty}");
}
