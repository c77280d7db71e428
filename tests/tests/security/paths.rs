//! See main.rs: this module's attempts are listed there and in docs/security.md.
//!
//! Mount destinations (-v, --tmpfs), the working directory (-w) and `nook cp` paths come
//! from the user, an image or a spec, and the tree they are resolved in (a --rootfs
//! directory) may be hostile and changing while nook sets the container up. Each test
//! plants symlinks that lead to a host canary directory, or swaps a component for one
//! while nook runs, and asserts that nook either mounted inside the root or refused with
//! a clear error, and that the canary stayed empty. Every case runs twice: with openat2
//! and the new mount API, and with the fallbacks forced (NOOK_NO_OPENAT2,
//! NOOK_NO_MOUNT_API: the userspace walk and mount(2) through /proc/self/fd/N).

use std::ffi::CString;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nook_tests::*;

/// The two ways nook resolves and mounts: the kernel's (openat2, move_mount) and the
/// fallbacks of older kernels, forced.
const MODES: [&[(&str, &str)]; 2] = [&[], &[("NOOK_NO_OPENAT2", "1"), ("NOOK_NO_MOUNT_API", "1")]];

/// A busybox root, a host directory that must stay empty (the canary), and a volume
/// source with a marker file.
struct Setup {
    rootfs: Rootfs,
    canary: tempfile::TempDir,
    volume: tempfile::TempDir,
}

impl Setup {
    fn new(test: &str) -> Option<Setup> {
        assert_unprivileged();
        let rootfs = match busybox_rootfs() {
            Ok(r) => r,
            Err(why) => {
                skip(test, &why);
                return None;
            }
        };
        let volume = tempdir();
        std::fs::write(volume.path().join("marker"), "volume-marker\n").unwrap();
        Some(Setup {
            rootfs,
            canary: tempdir(),
            volume,
        })
    }

    fn root(&self, rel: &str) -> PathBuf {
        self.rootfs.path().join(rel)
    }

    fn canary(&self) -> &str {
        self.canary.path().to_str().unwrap()
    }

    fn vol(&self, dest: &str) -> String {
        format!("{}:{dest}", self.volume.path().display())
    }

    /// `nook run --rm [env] ARGS`, from the canary directory (so /proc/self/cwd of nook's
    /// processes is the canary too).
    fn run(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = nook();
        cmd.current_dir(self.canary.path()).arg("run").arg("--rm");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args);
        spawn(&mut cmd).wait(TIMEOUT)
    }

    /// The canary is as it was made: empty.
    #[track_caller]
    fn assert_canary_untouched(&self, after: &str) {
        let left: Vec<_> = std::fs::read_dir(self.canary.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            left.is_empty(),
            "{after}: nook made {left:?} in the host directory a symlink pointed to"
        );
    }
}

#[test]
fn destinations_through_symlinks_to_host_dirs_land_inside_the_root() {
    let test = "destinations_through_symlinks_to_host_dirs_land_inside_the_root";
    let Some(s) = Setup::new(test) else { return };
    let canary = s.canary().to_string();
    std::fs::create_dir_all(s.root("mnt")).unwrap();
    // An absolute symlink to the host directory, a `..` chain that climbs to the host's
    // / from the root's directory, and a dangling absolute symlink.
    symlink(&canary, s.root("mnt/abs")).unwrap();
    let climb = format!("{}{}", "../".repeat(24), canary.trim_start_matches('/'));
    symlink(&climb, s.root("mnt/dotdot")).unwrap();
    symlink("/nonexistent/deeper", s.root("mnt/dangling")).unwrap();
    for env in MODES {
        let o = s.run(
            env,
            &[
                "--rootfs",
                "-v",
                &s.vol("/mnt/abs/vol"),
                "-v",
                &s.vol("/mnt/dangling/vol"),
                "--tmpfs",
                "/mnt/dotdot/tmp",
                "-w",
                "/mnt/abs/work",
                s.rootfs.path_str(),
                "sh",
                "-c",
                "cat /mnt/abs/vol/marker /mnt/dangling/vol/marker; \
                 cut -d' ' -f5 /proc/self/mountinfo; pwd -P",
            ],
        );
        o.success();
        let out = o.out();
        assert!(
            out.starts_with("volume-marker\nvolume-marker\n"),
            "the volumes are not where the container looks\n{o}"
        );
        let points: Vec<&str> = out.lines().collect();
        // The host path of the canary, resolved inside the root.
        let within = &canary;
        for want in [
            format!("{within}/vol"),
            "/nonexistent/deeper/vol".to_string(),
            format!("{within}/tmp"),
        ] {
            assert!(points.contains(&want.as_str()), "no mount at {want}\n{o}");
        }
        assert_eq!(
            points.last(),
            Some(&format!("{within}/work").as_str()),
            "{o}"
        );
        s.assert_canary_untouched(&format!("run with {env:?}"));
        // What was missing was made in the root, under the same names.
        let made = s.root(canary.trim_start_matches('/'));
        for sub in ["vol", "tmp", "work"] {
            assert!(
                made.join(sub).is_dir(),
                "{sub} not created in the root\n{o}"
            );
        }
        assert!(s.root("nonexistent/deeper/vol").is_dir(), "{o}");
    }
}

#[test]
fn symlink_loops_in_destinations_are_refused() {
    let test = "symlink_loops_in_destinations_are_refused";
    let Some(s) = Setup::new(test) else { return };
    symlink("/loop2", s.root("loop1")).unwrap();
    symlink("loop1", s.root("loop2")).unwrap();
    for env in MODES {
        for (flag, value, dest) in [
            ("-v", s.vol("/loop1/x"), "/loop1/x"),
            ("--tmpfs", "/loop2/t".to_string(), "/loop2/t"),
            ("-w", "/loop1/w".to_string(), "/loop1/w"),
        ] {
            let o = s.run(
                env,
                &["--rootfs", flag, &value, s.rootfs.path_str(), "true"],
            );
            o.assert_error_line(125, &[dest, "refused", "symlink loop"]);
        }
    }
    s.assert_canary_untouched("symlink loops");
}

/// CVE-2024-21626's way in: a path through /proc/self/fd/N or /proc/self/cwd names
/// whatever nook's process holds (its host working directory, a host directory it has
/// open). As a mount destination or a working directory it is refused at once.
#[test]
fn proc_self_fd_and_cwd_are_refused_as_destinations_and_workdir() {
    let test = "proc_self_fd_and_cwd_are_refused_as_destinations_and_workdir";
    let Some(s) = Setup::new(test) else { return };
    for env in MODES {
        for (flag, value) in [
            ("-v", s.vol("/proc/self/cwd/x")),
            ("-v", s.vol("/proc/self/fd/0/x")),
            ("-v", s.vol("/proc/self/root/x")),
            ("--tmpfs", "/proc/self/cwd/t".to_string()),
            ("--tmpfs", "/proc/1/cwd".to_string()),
            ("-w", "/proc/self/cwd".to_string()),
            ("-w", "/proc/self/fd/1".to_string()),
            ("-w", "/proc/1/root/tmp".to_string()),
        ] {
            for image in [&["host"][..], &["--rootfs", s.rootfs.path_str()][..]] {
                let mut args = vec![flag, value.as_str()];
                args.extend_from_slice(image);
                args.push("true");
                let o = s.run(env, &args);
                let path = value.rsplit(':').next().unwrap();
                o.assert_error_line(125, &[path, "refused", "magic link"]);
            }
        }
    }
    s.assert_canary_untouched("/proc magic links");
}

/// Flips `a` and `b` (a directory and a symlink to the host) with RENAME_EXCHANGE, as
/// fast as it can, until dropped.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b) = (
            CString::new(a.to_str().unwrap()).unwrap(),
            CString::new(b.to_str().unwrap()).unwrap(),
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swaps = 0;
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: two NUL-terminated paths; RENAME_EXCHANGE swaps them atomically.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
                swaps += 1;
            }
            swaps
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The race itself: while nook sets the container up, a thread of the test (standing
/// for the user's other processes, or a container writing into the tree) flips
/// /mnt/x between a directory and a symlink to the host canary. The volume, the tmpfs
/// and the working directory all go through /mnt/x. Over many runs, every one either
/// mounted inside the root (the container lists the mounts, which it only sees when
/// they are under its root) or was refused with one clear error line; the canary never
/// gets anything.
#[test]
fn racing_symlink_swaps_never_land_on_the_host() {
    let test = "racing_symlink_swaps_never_land_on_the_host";
    let Some(s) = Setup::new(test) else { return };
    std::fs::create_dir_all(s.root("mnt/x")).unwrap();
    symlink(s.canary(), s.root("mnt/alt")).unwrap();
    const RUNS: usize = 25;
    for env in MODES {
        let swapper = Swapper::start(&s.root("mnt/x"), &s.root("mnt/alt"));
        let (mut mounted, mut refused) = (0, 0);
        for run in 0..RUNS {
            let o = s.run(
                env,
                &[
                    "--rootfs",
                    "-v",
                    &s.vol("/mnt/x/vol"),
                    "--tmpfs",
                    "/mnt/x/tmp",
                    "-w",
                    "/mnt/x/work",
                    s.rootfs.path_str(),
                    "cut",
                    "-d ",
                    "-f5",
                    "/proc/self/mountinfo",
                ],
            );
            if o.code() == 0 {
                let out = o.out();
                let points: Vec<&str> = out.lines().collect();
                for leaf in ["/vol", "/tmp"] {
                    assert!(
                        points
                            .iter()
                            .any(|p| p.starts_with('/') && p.ends_with(leaf)),
                        "run {run}: the {leaf} mount is not inside the container's root\n{o}"
                    );
                }
                mounted += 1;
            } else {
                // One clear line, never a crash or an exec failure.
                o.assert_error_line(125, &[]);
                refused += 1;
            }
            s.assert_canary_untouched(&format!("run {run} with {env:?}"));
        }
        let swaps = swapper.finish();
        assert!(swaps > 0, "the swapper never ran");
        eprintln!("{env:?}: {mounted} mounted inside, {refused} refused, {swaps} swaps");
    }
    s.assert_canary_untouched("the racing swaps");
}

/// A running `--rootfs` container, with its own store and runtime directory, removed
/// when dropped.
struct Running {
    name: String,
    root: tempfile::TempDir,
    runtime: tempfile::TempDir,
}

impl Running {
    fn start(rootfs: &str) -> Running {
        let runtime = tempdir();
        std::fs::set_permissions(
            runtime.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let r = Running {
            name: format!("paths-{}", token()),
            root: tempdir(),
            runtime,
        };
        r.nook(&[
            "run", "-d", "--name", &r.name, "--rootfs", rootfs, "sleep", "1000",
        ])
        .success();
        r
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = nook();
        c.env("NOOK_ROOT", self.root.path())
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .args(args);
        c
    }

    fn nook(&self, args: &[&str]) -> Output {
        spawn(&mut self.cmd(args)).wait(TIMEOUT)
    }

    fn at(&self, path: &str) -> String {
        format!("{}:{path}", self.name)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.nook(&["rm", "-f", &self.name]);
    }
}

/// `nook cp` both ways through path components that are symlinks to `/` (absolute and
/// a `..` chain) stays inside the container's root; a /proc magic link is refused; and
/// the host side never writes through a symlink it finds in the landing directory.
#[test]
fn cp_through_symlinks_to_root_stays_inside_the_container() {
    let test = "cp_through_symlinks_to_root_stays_inside_the_container";
    let Some(s) = Setup::new(test) else { return };
    symlink("/", s.root("toroot")).unwrap();
    symlink("../../../../../../..", s.root("tmp/up")).unwrap();
    let ctr = Running::start(s.rootfs.path_str());
    let host = tempdir();
    let unique = format!("nook-cp-{}", token());

    // Into the container: lands in the container's /tmp, not the host's.
    let file = host.path().join("note");
    std::fs::write(&file, "from the host\n").unwrap();
    let into = format!("/toroot/tmp/up/tmp/{unique}");
    ctr.nook(&["cp", file.to_str().unwrap(), &ctr.at(&into)])
        .success();
    assert_eq!(
        std::fs::read_to_string(s.root("tmp").join(&unique)).unwrap(),
        "from the host\n"
    );
    assert!(
        !Path::new("/tmp").join(&unique).exists(),
        "written on the host's /tmp"
    );

    // Out of the container: the container's file, not the host's.
    let out = host.path().join("passwd");
    ctr.nook(&[
        "cp",
        &ctr.at("/tmp/up/toroot/etc/nook-rootfs-marker"),
        out.to_str().unwrap(),
    ])
    .success();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), s.rootfs.marker);

    // A magic link names a process's own root or descriptors: refused, both ways.
    for p in ["/proc/1/root/etc/passwd", "/proc/1/cwd/etc"] {
        let o = ctr.nook(&["cp", &ctr.at(p), host.path().to_str().unwrap()]);
        o.assert_code(125);
        let o = ctr.nook(&["cp", file.to_str().unwrap(), &ctr.at(p)]);
        o.assert_code(125);
    }

    // The landing side: a directory copied out onto a name that is a symlink to the
    // canary is refused, nothing written through it.
    std::fs::create_dir_all(s.root("tmp/d")).unwrap();
    std::fs::write(s.root("tmp/d/f"), "x").unwrap();
    let dest = tempdir();
    symlink(s.canary(), dest.path().join("d")).unwrap();
    let o = ctr.nook(&["cp", &ctr.at("/tmp/d"), dest.path().to_str().unwrap()]);
    o.assert_code(125);
    assert!(o.err().contains("cannot overwrite"), "{o}");
    s.assert_canary_untouched("nook cp");
}
