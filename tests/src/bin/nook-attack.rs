//! `nook-attack`: the escape regression suite's probe, run inside containers (bound in
//! with `-v`, see `nook_tests::attack_bin`) or as another account. Each invocation makes
//! one attempt with a raw system call and prints one line: `ok[ DETAIL]` when the call
//! succeeded, `err ENAME` with the errno's name when it failed (or `timeout`). Shell
//! tools would do most of this, but their messages differ between busybox, util-linux
//! and coreutils, and the suite asserts the exact refusal.
//!
//! ```text
//! nook-attack write PATH DATA         open O_WRONLY, write
//! nook-attack read PATH               bytes read (up to 1 MiB), or entries of a directory
//! nook-attack open PATH r|w|rw        open only
//! nook-attack readlink PATH
//! nook-attack mount SRC TARGET FSTYPE FLAGS [DATA]   FLAGS: rdonly,remount,bind,rec,... or -
//! nook-attack umount TARGET [detach]
//! nook-attack mknod PATH b|c MAJOR MINOR
//! nook-attack chmod PATH OCTAL-MODE | chown PATH UID GID
//! nook-attack sethostname NAME
//! nook-attack ptrace PID              PTRACE_ATTACH (detached again at once on success)
//! nook-attack vmread PID ADDR         process_vm_readv of 8 bytes (EFAULT: access granted)
//! nook-attack kill PID SIG
//! nook-attack pidfd PID               pidfd_open
//! nook-attack handle MOUNT-DIR TYPE HEX   open_by_handle_at with a given file handle
//! nook-attack tcp ADDR PORT [MS]      connect (MS: deadline, default 5000)
//! nook-attack tcp-read ADDR PORT [MS] connect, then read what the server says first
//! nook-attack udp ADDR PORT DATA      send one datagram
//! nook-attack unix PATH | abstract NAME   connect a stream socket
//! nook-attack unix-read PATH          connect, then read (`ok eof`: closed at once)
//! nook-attack serve-tcp ADDR PORT     listen, print `listening`, serve one connection
//! nook-attack in-ns KINDS OP ARGS...  unshare KINDS (user,mnt,net,pid,cgroup,uts,ipc;
//!                                     user: root inside, mapped to the caller), then OP
//! nook-attack OP ARGS + OP ARGS ...   several attempts in one process, results joined
//!                                     by ` + ` (after in-ns: all in the new namespaces)
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::process::exit;
use std::time::Duration;

use nix::errno::Errno;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let line = run(&args);
    println!("{line}");
}

/// `OP ARGS [+ OP ARGS]...`: the attempts in order, in this process (so after `in-ns`,
/// all of them in the new namespaces); their results joined by ` + `.
fn run(args: &[String]) -> String {
    if args.first().map(String::as_str) == Some("in-ns") {
        return in_ns(arg(args, 1), &args[2..]);
    }
    args.split(|a| a == "+")
        .map(run_one)
        .collect::<Vec<_>>()
        .join(" + ")
}

fn usage() -> ! {
    eprintln!("usage: nook-attack OP ARGS... (see the source's header)");
    exit(2)
}

fn arg(args: &[String], i: usize) -> &str {
    args.get(i).map(String::as_str).unwrap_or_else(|| usage())
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| usage())
}

fn err(e: Errno) -> String {
    format!("err {e:?}")
}

fn io_err(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => err(Errno::from_raw(n)),
        None if e.kind() == std::io::ErrorKind::TimedOut => "timeout".into(),
        None => format!("err {e}"),
    }
}

/// One attempt; the line to print.
fn run_one(args: &[String]) -> String {
    let op = arg(args, 0);
    let rest = &args[1..];
    match op {
        "write" => write(arg(rest, 0), arg(rest, 1)),
        "read" => read(arg(rest, 0)),
        "open" => open(arg(rest, 0), arg(rest, 1)),
        "readlink" => match std::fs::read_link(arg(rest, 0)) {
            Ok(t) => format!("ok {}", t.display()),
            Err(e) => io_err(&e),
        },
        "mount" => mount(rest),
        "umount" => {
            let flags = if rest.get(1).map(String::as_str) == Some("detach") {
                nix::mount::MntFlags::MNT_DETACH
            } else {
                nix::mount::MntFlags::empty()
            };
            result(nix::mount::umount2(arg(rest, 0), flags))
        }
        "mknod" => {
            let kind = match arg(rest, 1) {
                "b" => nix::sys::stat::SFlag::S_IFBLK,
                "c" => nix::sys::stat::SFlag::S_IFCHR,
                _ => usage(),
            };
            let dev = nix::sys::stat::makedev(num(arg(rest, 2)), num(arg(rest, 3)));
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
            result(nix::sys::stat::mknod(arg(rest, 0), kind, mode, dev))
        }
        "chmod" => {
            let mode = u32::from_str_radix(arg(rest, 1), 8).unwrap_or_else(|_| usage());
            let mode = nix::sys::stat::Mode::from_bits_truncate(mode);
            result(nix::sys::stat::fchmodat(
                None,
                arg(rest, 0),
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            ))
        }
        "chown" => {
            let uid = nix::unistd::Uid::from_raw(num(arg(rest, 1)));
            let gid = nix::unistd::Gid::from_raw(num(arg(rest, 2)));
            result(nix::unistd::chown(arg(rest, 0), Some(uid), Some(gid)))
        }
        "sethostname" => result(nix::unistd::sethostname(arg(rest, 0))),
        "ptrace" => ptrace(num(arg(rest, 0))),
        "vmread" => vmread(num(arg(rest, 0)), arg(rest, 1)),
        "kill" => {
            let pid = nix::unistd::Pid::from_raw(num(arg(rest, 0)));
            let sig: i32 = num(arg(rest, 1));
            // SAFETY: kill(2) with plain integers; no memory is involved.
            let r = unsafe { libc::kill(pid.as_raw(), sig) };
            result(Errno::result(r).map(drop))
        }
        "pidfd" => {
            let pid: i32 = num(arg(rest, 0));
            // SAFETY: pidfd_open(2) takes two integers; a returned descriptor is owned.
            let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            match Errno::result(r) {
                // SAFETY: the kernel just returned this descriptor to us.
                Ok(fd) => drop(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
                Err(e) => return err(e),
            }
            "ok".into()
        }
        "handle" => handle(arg(rest, 0), num(arg(rest, 1)), arg(rest, 2)),
        "tcp" | "tcp-read" => {
            let ms = rest.get(2).map_or(5000, |s| num(s));
            tcp(arg(rest, 0), num(arg(rest, 1)), ms, op == "tcp-read")
        }
        "udp" => {
            let addr = SocketAddr::new(ip(arg(rest, 0)), num(arg(rest, 1)));
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            match UdpSocket::bind(bind).and_then(|s| s.send_to(arg(rest, 2).as_bytes(), addr)) {
                Ok(_) => "ok".into(),
                Err(e) => io_err(&e),
            }
        }
        "unix" => stream(connect_unix(arg(rest, 0)), false),
        "unix-read" => stream(connect_unix(arg(rest, 0)), true),
        "abstract" => {
            let name = arg(rest, 0).as_bytes();
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name);
            stream(addr.and_then(|a| UnixStream::connect_addr(&a)), false)
        }
        "serve-tcp" => serve_tcp(arg(rest, 0), num(arg(rest, 1))),
        _ => usage(),
    }
}

fn result<T>(r: nix::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => err(e),
    }
}

fn write(path: &str, data: &str) -> String {
    let f = std::fs::OpenOptions::new().write(true).open(path);
    match f.and_then(|mut f| f.write_all(data.as_bytes())) {
        Ok(()) => "ok".into(),
        Err(e) => io_err(&e),
    }
}

fn read(path: &str) -> String {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => match std::fs::read_dir(path) {
            Ok(d) => format!("ok dir {}", d.count()),
            Err(e) => io_err(&e),
        },
        Ok(_) => {
            let mut buf = Vec::new();
            let f = std::fs::File::open(path);
            match f.and_then(|f| f.take(1 << 20).read_to_end(&mut buf)) {
                Ok(n) => format!("ok {n}"),
                Err(e) => io_err(&e),
            }
        }
        Err(e) => io_err(&e),
    }
}

fn open(path: &str, mode: &str) -> String {
    let mut o = std::fs::OpenOptions::new();
    match mode {
        "r" => o.read(true),
        "w" => o.write(true),
        "rw" => o.read(true).write(true),
        _ => usage(),
    };
    match o.open(path) {
        Ok(_) => "ok".into(),
        Err(e) => io_err(&e),
    }
}

fn mount(rest: &[String]) -> String {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::empty();
    for f in arg(rest, 3)
        .split(',')
        .filter(|f| !f.is_empty() && *f != "-")
    {
        flags |= match f {
            "rdonly" => MsFlags::MS_RDONLY,
            "remount" => MsFlags::MS_REMOUNT,
            "bind" => MsFlags::MS_BIND,
            "rec" => MsFlags::MS_REC,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "private" => MsFlags::MS_PRIVATE,
            _ => usage(),
        };
    }
    let opt = |s: &str| (s != "-").then(|| s.to_string());
    let source = opt(arg(rest, 0));
    let fstype = opt(arg(rest, 2));
    let data = rest.get(4).cloned();
    result(nix::mount::mount(
        source.as_deref(),
        arg(rest, 1),
        fstype.as_deref(),
        flags,
        data.as_deref(),
    ))
}

fn ptrace(pid: i32) -> String {
    let pid = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = nix::sys::ptrace::attach(pid) {
        return err(e);
    }
    // Attached: leave the target as it was (it stops on attach; detach resumes it).
    let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
    let _ = nix::sys::ptrace::detach(pid, None);
    "ok".into()
}

fn vmread(pid: i32, addr: &str) -> String {
    let addr = usize::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap_or_else(|_| usage());
    let mut buf = [0u8; 8];
    let mut local = [std::io::IoSliceMut::new(&mut buf)];
    let remote = [nix::sys::uio::RemoteIoVec { base: addr, len: 8 }];
    let pid = nix::unistd::Pid::from_raw(pid);
    result(nix::sys::uio::process_vm_readv(pid, &mut local, &remote))
}

fn handle(mount_dir: &str, typ: i32, hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_else(|_| usage()))
        .collect();
    let dir = match std::fs::File::open(mount_dir) {
        Ok(d) => d,
        Err(e) => return io_err(&e),
    };
    // struct file_handle: u32 handle_bytes, i32 handle_type, then the bytes.
    let mut raw = vec![0u8; 8 + bytes.len()];
    raw[..4].copy_from_slice(&(bytes.len() as u32).to_ne_bytes());
    raw[4..8].copy_from_slice(&typ.to_ne_bytes());
    raw[8..].copy_from_slice(&bytes);
    // SAFETY: `raw` is a file_handle of the size its header says, alive for the call; a
    // returned descriptor is owned below.
    let fd = unsafe {
        libc::open_by_handle_at(
            dir.as_raw_fd(),
            raw.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_RDONLY,
        )
    };
    match Errno::result(fd) {
        Ok(fd) => {
            // SAFETY: the kernel just returned this descriptor to us.
            let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            format!("ok {}", s.trim())
        }
        Err(e) => err(e),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| usage())
}

fn tcp(addr: &str, port: u16, ms: u64, read: bool) -> String {
    let addr = SocketAddr::new(ip(addr), port);
    match TcpStream::connect_timeout(&addr, Duration::from_millis(ms)) {
        Ok(mut s) if read => {
            let _ = s.set_read_timeout(Some(Duration::from_millis(ms)));
            first_line(&mut s)
        }
        Ok(_) => "ok".into(),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "timeout".into(),
        Err(e) => io_err(&e),
    }
}

/// A socket path past the 107-byte limit is reached through its directory's descriptor
/// (as nook reaches its attach sockets): the same permission checks apply on the way.
fn connect_unix(path: &str) -> std::io::Result<UnixStream> {
    if path.len() < 100 {
        return UnixStream::connect(path);
    }
    let p = std::path::Path::new(path);
    let dir = nix::fcntl::open(
        p.parent().unwrap_or(std::path::Path::new("/")),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: the kernel just returned this descriptor to us.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    UnixStream::connect(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

fn stream(s: std::io::Result<UnixStream>, read: bool) -> String {
    match s {
        Ok(mut s) if read => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            first_line(&mut s)
        }
        Ok(_) => "ok".into(),
        Err(e) => io_err(&e),
    }
}

fn first_line(s: &mut impl Read) -> String {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => "ok eof".into(),
        Ok(n) => format!("ok {}", String::from_utf8_lossy(&buf[..n]).trim()),
        Err(e) => format!("ok read {}", io_err(&e)),
    }
}

fn serve_tcp(addr: &str, port: u16) -> String {
    let l = match TcpListener::bind(SocketAddr::new(ip(addr), port)) {
        Ok(l) => l,
        Err(e) => return io_err(&e),
    };
    println!("listening");
    let _ = std::io::stdout().flush();
    match l.accept() {
        Ok((mut c, peer)) => {
            let _ = c.write_all(b"container-side\n");
            format!("served {}", peer.ip())
        }
        Err(e) => io_err(&e),
    }
}

fn in_ns(kinds: &str, op: &[String]) -> String {
    use nix::sched::CloneFlags;
    let mut flags = CloneFlags::empty();
    for k in kinds.split(',') {
        flags |= match k {
            "user" => CloneFlags::CLONE_NEWUSER,
            "mnt" => CloneFlags::CLONE_NEWNS,
            "net" => CloneFlags::CLONE_NEWNET,
            "pid" => CloneFlags::CLONE_NEWPID,
            "cgroup" => CloneFlags::CLONE_NEWCGROUP,
            "uts" => CloneFlags::CLONE_NEWUTS,
            "ipc" => CloneFlags::CLONE_NEWIPC,
            _ => usage(),
        };
    }
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    if let Err(e) = nix::sched::unshare(flags) {
        return format!("err {e:?} (unshare)");
    }
    if flags.contains(CloneFlags::CLONE_NEWUSER) {
        let maps = [
            ("/proc/self/setgroups", "deny".to_string()),
            ("/proc/self/uid_map", format!("0 {uid} 1")),
            ("/proc/self/gid_map", format!("0 {gid} 1")),
        ];
        for (file, text) in maps {
            if let Err(e) = std::fs::write(file, text) {
                return format!("{} (writing {file})", io_err(&e));
            }
        }
    }
    if !flags.contains(CloneFlags::CLONE_NEWPID) {
        return run(op);
    }
    // A new pid namespace applies to children: the attempt runs in one.
    let _ = std::io::stdout().flush();
    // SAFETY: this program is single-threaded; the child only runs the attempt and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // A mount of proc must see this namespace's processes: the child is its pid 1.
            println!("{}", run(op));
            let _ = std::io::stdout().flush();
            // SAFETY: _exit ends the child without running the parent's handlers.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
            exit(0)
        }
        Err(e) => format!("err {e:?} (fork)"),
    }
}
