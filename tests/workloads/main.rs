//! The real-workload lane (issue 15): what people do in a Debian container, on each
//! storage driver (overlay, fuse, copy), as the unprivileged account.
//!
//! The image is Debian bookworm minbase made with debootstrap from Debian's packages by
//! tests/workloads/debian-image.sh (tests/run.sh runs it in its root phase, cached
//! between runs, and passes the tarball as NOOK_WORKLOAD_TARBALL), imported once per run
//! with `nook import` into this executable's own store. On each driver one container
//! (`run -d`) gets, through `nook exec`:
//!   apt     apt-get update, install of two small packages (`hello`, `tree`), use, remove
//!   dpkg    a .deb built here with dpkg-deb, installed with dpkg -i (postinst runs), used,
//!           removed
//!   gcc     a C program and a shared library built with gcc, linked, run
//!   git     init, commit, clone of the local repository, commit, fsck, push back
//!   venv    python3 -m venv, pip install from a local wheel directory (a wheel built
//!           here; no index), import from the venv and not from the system
//!   tar     a tree with hard links, a sparse file and user xattrs through tar and back
//! and each step asserts what a user would check. The same lane runs under a single-ID
//! map (`--uidmap 0:0:1 --gidmap 0:0:1`, what an account without a subordinate range
//! gets), where apt's sandbox user cannot exist: nook binds a one-line apt.conf.d snippet
//! (APT::Sandbox::User "root") into such containers, and apt must work as it does with a
//! full map.
//!
//! Skips, loudly: without the tarball (NOOK_WORKLOAD_SKIP says why run.sh could not make
//! it), and the apt step alone when deb.debian.org cannot be reached from this machine.

use std::fs;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nook_tests::*;

/// Deadline of one step's command: apt-get update on the FUSE driver of a loaded 2-core
/// CI machine is the slowest.
const STEP_TIMEOUT: Duration = Duration::from_secs(420);

/// The imported image and the private places this executable keeps it in.
struct Lane {
    /// NOOK_ROOT: the store the tarball was imported into.
    store: PathBuf,
    /// XDG_RUNTIME_DIR of the lane's containers (the copy driver's copies go here).
    runtime: PathBuf,
    image: String,
}

/// Why there is no lane: nothing to run it on here (a SKIP), or nook failed (a failure).
enum NoLane {
    Skip(String),
    Fail(String),
}

static LANE: OnceLock<Result<Lane, NoLane>> = OnceLock::new();
static LANE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Removes the lane's store and runtime directory when the test executable exits: their
/// files belong to the container's IDs, so only `nook unshare` can remove all of them.
extern "C" fn remove_lane_dir() {
    if let Some(dir) = LANE_DIR.get() {
        let _ = Command::new(nook_bin())
            .args(["unshare", "rm", "-rf"])
            .arg(dir)
            .status();
        let _ = fs::remove_dir_all(dir);
    }
}

/// The lane's image, imported on first use; None (after a SKIP line) where there is none.
fn lane(test: &str) -> Option<&'static Lane> {
    let lane = LANE.get_or_init(|| {
        let tarball =
            match std::env::var_os("NOOK_WORKLOAD_TARBALL") {
                Some(t) if !t.is_empty() => PathBuf::from(t),
                _ => return Err(NoLane::Skip(
                    std::env::var("NOOK_WORKLOAD_SKIP").unwrap_or_else(|_| {
                        "no Debian image: NOOK_WORKLOAD_TARBALL is not set (tests/run.sh started \
                     as root makes one with debootstrap; or set it to a tarball made by \
                     tests/workloads/debian-image.sh)"
                            .to_string()
                    }),
                )),
            };
        if !tarball.is_file() {
            return Err(NoLane::Fail(format!(
                "NOOK_WORKLOAD_TARBALL={} is not a file",
                tarball.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("nook-workloads-")
            .tempdir()
            .map_err(|e| NoLane::Fail(format!("tempdir: {e}")))?
            .keep();
        LANE_DIR.set(dir.clone()).ok();
        // SAFETY: registers a plain `extern "C" fn()` with the C runtime's exit handlers.
        unsafe { libc::atexit(remove_lane_dir) };
        let runtime = dir.join("run");
        fs::create_dir(&runtime).map_err(|e| NoLane::Fail(format!("mkdir runtime: {e}")))?;
        let store = dir.join("store");
        let started = Instant::now();
        let out = spawn(
            nook()
                .env("NOOK_ROOT", &store)
                .env("XDG_RUNTIME_DIR", &runtime)
                .arg("import")
                .arg(&tarball)
                .arg("nook-workloads/debian:bookworm"),
        )
        .wait(Duration::from_secs(600));
        if out.code() != 0 {
            // Every test of the lane fails with this, without importing again.
            return Err(NoLane::Fail(format!(
                "nook import of the Debian tarball failed\n{out}"
            )));
        }
        note(&format!(
            "imported {} in {:.1} s",
            tarball.display(),
            started.elapsed().as_secs_f64()
        ));
        Ok(Lane {
            store,
            runtime,
            image: "nook-workloads/debian:bookworm".to_string(),
        })
    });
    match lane {
        Ok(l) => Some(l),
        Err(NoLane::Skip(why)) => {
            skip(test, why);
            None
        }
        Err(NoLane::Fail(why)) => panic!("{why}"),
    }
}

impl Lane {
    fn cmd(&self) -> Command {
        let mut c = nook();
        c.env("NOOK_ROOT", &self.store)
            .env("XDG_RUNTIME_DIR", &self.runtime);
        c
    }
}

/// One detached container of the lane; removed (with its writable layer) on drop.
struct Ctr<'a> {
    lane: &'a Lane,
    name: String,
    driver: String,
}

impl<'a> Ctr<'a> {
    fn start(lane: &'a Lane, driver: &str, extra: &[&str]) -> Ctr<'a> {
        let name = format!("wl-{driver}-{}", token());
        let mut cmd = lane.cmd();
        cmd.args(["run", "-d", "--name", &name, "--storage-driver", driver])
            .args(extra)
            .args([&lane.image, "sleep", "infinity"]);
        let out = spawn(&mut cmd).wait(Duration::from_secs(300));
        assert_eq!(
            out.code(),
            0,
            "starting the Debian container on {driver} failed\n{out}"
        );
        Ctr {
            lane,
            name,
            driver: driver.to_string(),
        }
    }

    /// `nook exec CTR sh -c SCRIPT`.
    fn sh(&self, script: &str) -> Output {
        let mut cmd = self.lane.cmd();
        cmd.args(["exec", &self.name, "sh", "-c", script]);
        spawn(&mut cmd).wait(STEP_TIMEOUT)
    }
}

impl Drop for Ctr<'_> {
    fn drop(&mut self) {
        let _ = spawn(self.lane.cmd().args(["rm", "-f", &self.name])).wait(TIMEOUT);
    }
}

/// What failed in one lane, collected so one broken step does not hide the others.
struct Findings {
    lane: String,
    failed: Vec<String>,
}

impl Findings {
    fn new(lane: &str) -> Findings {
        Findings {
            lane: lane.to_string(),
            failed: Vec::new(),
        }
    }

    /// Records `what` as failed, with the command's output, unless `ok`.
    fn check(&mut self, ok: bool, what: &str, out: &Output) {
        if !ok {
            self.failed.push(format!("{what}\n{out}"));
        }
    }

    /// The step's script must exit 0 and print `expect` (each line, in order, somewhere).
    fn expect(&mut self, step: &str, out: &Output, expect: &[&str]) {
        self.check(out.code() == 0, &format!("{step}: exit status"), out);
        let text = out.out();
        let mut rest = text.as_str();
        for line in expect {
            match rest.find(line) {
                Some(at) => rest = &rest[at + line.len()..],
                None => {
                    self.check(
                        false,
                        &format!("{step}: expected {line:?} (in this order)"),
                        out,
                    );
                    return;
                }
            }
        }
    }

    #[track_caller]
    fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{}: {} step check(s) failed:\n\n{}",
            self.lane,
            self.failed.len(),
            self.failed.join("\n\n")
        );
    }
}

/// A line for the suite's log (past libtest's capture, like [`skip`]): the lane's times.
fn note(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("workloads: {line}\n").as_bytes());
}

/// Whether deb.debian.org answers on port 80 from this machine (the container's traffic
/// goes out through the host's network): Err says why not.
fn debian_reachable() -> Result<(), String> {
    let addrs: Vec<_> = ("deb.debian.org", 80)
        .to_socket_addrs()
        .map_err(|e| format!("deb.debian.org does not resolve here ({e})"))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(format!("deb.debian.org:80 cannot be reached ({last})"))
}

// ---------------------------------------------------------------------------------------
// The steps. Each is one script run in the container; its output is what a user would
// look at, and the checks name it.

const APT: &str = r#"
set -u
export DEBIAN_FRONTEND=noninteractive
apt-get update -q 2>&1; echo "update=$?"
apt-get install -y -q --no-install-recommends hello tree 2>&1; echo "install=$?"
hello
dpkg-query -W -f='${Package} ${Status}\n' hello tree
mkdir -p /tmp/t/a /tmp/t/b/c && touch /tmp/t/b/c/f
tree -i -f --noreport /tmp/t
apt-get remove -y -q tree 2>&1; echo "remove=$?"
[ -e /usr/bin/tree ] && echo tree-still-there || echo tree-gone
apt-get clean; ls /var/cache/apt/archives/*.deb 2>/dev/null | wc -l
"#;

fn step_apt(c: &Ctr, f: &mut Findings) {
    let o = c.sh(APT);
    f.expect(
        "apt",
        &o,
        &[
            "update=0",
            "install=0",
            "Hello, world!",
            "hello install ok installed",
            "tree install ok installed",
            "/tmp/t\n/tmp/t/a\n/tmp/t/b\n/tmp/t/b/c\n/tmp/t/b/c/f\n",
            "remove=0",
            "tree-gone",
            "\n0\n",
        ],
    );
    f.check(
        !o.out().contains("E: "),
        "apt: an error line (E:) was printed",
        &o,
    );
}

const DPKG: &str = r#"
set -u
rm -rf /tmp/pkg && mkdir -p /tmp/pkg/DEBIAN /tmp/pkg/usr/bin /tmp/pkg/usr/share/nook-demo
cat > /tmp/pkg/DEBIAN/control <<'EOF'
Package: nook-demo
Version: 1.0
Architecture: all
Maintainer: nook tests <tests@nook.invalid>
Description: a package built by nook's workload lane
EOF
printf '#!/bin/sh\necho "nook-demo 1.0 works"\n' > /tmp/pkg/usr/bin/nook-demo
chmod 755 /tmp/pkg/usr/bin/nook-demo
echo data > /tmp/pkg/usr/share/nook-demo/data
printf '#!/bin/sh\nset -e\nmkdir -p /var/lib/nook-demo\necho "postinst $1" > /var/lib/nook-demo/state\n' > /tmp/pkg/DEBIAN/postinst
chmod 755 /tmp/pkg/DEBIAN/postinst
dpkg-deb --root-owner-group --build /tmp/pkg /tmp/nook-demo_1.0_all.deb >/dev/null; echo "build=$?"
dpkg -i /tmp/nook-demo_1.0_all.deb 2>&1; echo "install=$?"
nook-demo
dpkg-query -W -f='${Status} ${Version}\n' nook-demo
cat /var/lib/nook-demo/state
stat -c 'owner=%U:%G mode=%a' /usr/bin/nook-demo
dpkg -L nook-demo | grep -x /usr/share/nook-demo/data
dpkg --verify nook-demo; echo "verify=$?"
dpkg -r nook-demo 2>&1; echo "remove=$?"
[ -e /usr/bin/nook-demo ] && echo still-there || echo removed
dpkg-query -W nook-demo 2>&1 || echo unknown-to-dpkg
"#;

fn step_dpkg(c: &Ctr, f: &mut Findings) {
    let o = c.sh(DPKG);
    f.expect(
        "dpkg",
        &o,
        &[
            "build=0",
            "Setting up nook-demo (1.0)",
            "install=0",
            "nook-demo 1.0 works",
            "install ok installed 1.0",
            "postinst configure",
            "owner=root:root mode=755",
            "/usr/share/nook-demo/data",
            "verify=0",
            "remove=0",
            "removed",
            "no packages found matching nook-demo",
            "unknown-to-dpkg",
        ],
    );
}

const GCC: &str = r#"
set -u
mkdir -p /src/prog && cd /src/prog
cat > lib.c <<'EOF'
int scale(int x) { return 3 * x; }
EOF
cat > main.c <<'EOF'
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
int scale(int x);
static long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    printf("fib(%d)=%ld scale=%d sqrt2=%.6f\n", n, fib(n), scale(n), sqrt(2.0));
    return 0;
}
EOF
gcc -O2 -Wall -fPIC -shared -o libscale.so lib.c; echo "lib=$?"
gcc -O2 -Wall -o prog main.c -L. -lscale -lm -Wl,-rpath,/src/prog; echo "build=$?"
./prog 20
gcc --version | head -n1
"#;

fn step_gcc(c: &Ctr, f: &mut Findings) {
    let o = c.sh(GCC);
    f.expect(
        "gcc",
        &o,
        &[
            "lib=0",
            "build=0",
            "fib(20)=6765 scale=60 sqrt2=1.414214",
            "gcc (Debian 12",
        ],
    );
}

const GIT: &str = r#"
set -u
git config --global user.email tests@nook.invalid
git config --global user.name "nook tests"
git config --global init.defaultBranch main
git init -q /srv/origin && cd /srv/origin
echo one > file && mkdir dir && echo x > dir/x && git add . && git commit -q -m first && echo "commit1=$?"
git clone -q /srv/origin /root/clone; echo "clone=$?"
cd /root/clone && echo two >> file && git commit -q -am second; echo "commit2=$?"
git log --format='log %s'
git fsck --full 2>&1; echo "fsck=$?"
git push -q origin HEAD:refs/heads/topic 2>&1; echo "push=$?"
git -C /srv/origin log --format='origin %s' topic
git -C /srv/origin show topic:file
git status --porcelain | wc -l
"#;

fn step_git(c: &Ctr, f: &mut Findings) {
    let o = c.sh(GIT);
    f.expect(
        "git",
        &o,
        &[
            "commit1=0",
            "clone=0",
            "commit2=0",
            "log second\nlog first\n",
            "fsck=0",
            "push=0",
            "origin second\norigin first\n",
            "one\ntwo\n",
            "0\n",
        ],
    );
}

const VENV: &str = r#"
set -u
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1
python3 -m venv /opt/venv; echo "venv=$?"
mkdir -p /tmp/wheels
python3 - <<'EOF'
import base64, hashlib, zipfile
files = {
    "nookdemo/__init__.py": "def greet():\n    return 'hello from nookdemo'\n",
    "nookdemo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: nookdemo\nVersion: 1.0\n",
    "nookdemo-1.0.dist-info/WHEEL":
        "Wheel-Version: 1.0\nGenerator: nook-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for name, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
    record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
record.append("nookdemo-1.0.dist-info/RECORD,,")
files["nookdemo-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
with zipfile.ZipFile("/tmp/wheels/nookdemo-1.0-py3-none-any.whl", "w") as z:
    for name, text in files.items():
        z.writestr(name, text)
EOF
/opt/venv/bin/pip install -q --no-index --find-links /tmp/wheels nookdemo 2>&1; echo "pip=$?"
/opt/venv/bin/python -c 'import nookdemo; print(nookdemo.greet())'
/opt/venv/bin/pip list 2>/dev/null | grep '^nookdemo'
python3 -c 'import nookdemo' 2>/dev/null && echo system-sees-it || echo system-does-not-see-it
"#;

fn step_venv(c: &Ctr, f: &mut Findings) {
    let o = c.sh(VENV);
    f.expect(
        "venv",
        &o,
        &[
            "venv=0",
            "pip=0",
            "hello from nookdemo",
            "nookdemo",
            "system-does-not-see-it",
        ],
    );
}

const TAR: &str = r#"
set -u
rm -rf /tmp/src /tmp/dst && mkdir -p /tmp/src/d && cd /tmp/src
echo data > a && ln a d/b && ln a c
truncate -s 64M sparse
printf start | dd of=sparse conv=notrunc status=none
printf mid | dd of=sparse bs=1 seek=33554432 conv=notrunc status=none
printf end | dd of=sparse bs=1 seek=67108861 conv=notrunc status=none
python3 -c 'import os; os.setxattr("a", "user.nook", b"v1"); os.setxattr("d", "user.dir", b"v2")'
tar --xattrs --xattrs-include='user.*' --sparse -cpf /tmp/t.tar -C /tmp/src .; echo "create=$?"
mkdir /tmp/dst && tar --xattrs --xattrs-include='user.*' -xpf /tmp/t.tar -C /tmp/dst; echo "extract=$?"
cd /tmp/dst
stat -c 'links %n %h' a c d/b
[ "$(stat -c %i a)" = "$(stat -c %i d/b)" ] && [ "$(stat -c %i a)" = "$(stat -c %i c)" ] && echo one-inode
(cd /tmp/src && find . -type f | sort | xargs sha256sum) > /tmp/s1
(cd /tmp/dst && find . -type f | sort | xargs sha256sum) > /tmp/s2
cmp -s /tmp/s1 /tmp/s2 && echo same-content
echo "size $(stat -c %s sparse)"
[ "$(stat -c %b sparse)" -lt 4096 ] && echo sparse-kept || echo "sparse-lost $(stat -c %b sparse) blocks"
[ "$(stat -c %s /tmp/t.tar)" -lt 1048576 ] && echo archive-small || echo "archive $(stat -c %s /tmp/t.tar) bytes"
python3 -c 'import os; print("xattrs", os.getxattr("a", "user.nook").decode(), os.getxattr("d", "user.dir").decode())'
"#;

fn step_tar(c: &Ctr, f: &mut Findings) {
    let o = c.sh(TAR);
    f.expect(
        "tar",
        &o,
        &[
            "create=0",
            "extract=0",
            "links a 3\nlinks c 3\nlinks d/b 3\n",
            "one-inode",
            "same-content",
            "size 67108864",
            "sparse-kept",
            "archive-small",
            "xattrs v1 v2",
        ],
    );
}

/// The whole lane in one container on `driver`.
fn lane_on(test: &str, driver: &str, extra: &[&str]) {
    assert_unprivileged();
    let Some(lane) = lane(test) else { return };
    let started = Instant::now();
    let c = Ctr::start(lane, driver, extra);
    let mut f = Findings::new(&format!("{driver} {}", extra.join(" ")));
    match debian_reachable() {
        Ok(()) => step_apt(&c, &mut f),
        Err(why) => skip(test, &format!("apt step not run: {why}")),
    }
    step_dpkg(&c, &mut f);
    step_gcc(&c, &mut f);
    step_git(&c, &mut f);
    step_venv(&c, &mut f);
    step_tar(&c, &mut f);
    note(&format!(
        "{test} took {:.1} s on {}",
        started.elapsed().as_secs_f64(),
        c.driver
    ));
    drop(c);
    f.finish();
}

#[test]
fn debian_on_overlay() {
    lane_on("debian_on_overlay", "overlay", &[]);
}

#[test]
fn debian_on_fuse() {
    lane_on("debian_on_fuse", "fuse", &[]);
}

#[test]
fn debian_on_copy() {
    lane_on("debian_on_copy", "copy", &[]);
}

const SINGLE_ID: [&str; 4] = ["--uidmap", "0:0:1", "--gidmap", "0:0:1"];

#[test]
fn debian_single_id_map_on_overlay() {
    lane_on("debian_single_id_map_on_overlay", "overlay", &SINGLE_ID);
}

#[test]
fn debian_single_id_map_on_fuse() {
    lane_on("debian_single_id_map_on_fuse", "fuse", &SINGLE_ID);
}

/// Under a single-ID map apt's sandbox user cannot be switched to: nook's snippet is
/// there, says why, and is not part of the container's changes; with a full map it is
/// not there.
#[test]
fn apt_sandbox_snippet_only_under_a_single_id_map() {
    assert_unprivileged();
    let test = "apt_sandbox_snippet_only_under_a_single_id_map";
    let Some(lane) = lane(test) else { return };
    let snippet = "/etc/apt/apt.conf.d/99nook-sandbox-user";
    let show = format!(
        "cat {snippet} 2>/dev/null || echo no-snippet; \
         apt-config dump APT::Sandbox::User"
    );
    let single = Ctr::start(lane, "overlay", &SINGLE_ID);
    let o = single.sh(&show);
    let mut f = Findings::new("snippet");
    f.expect(
        "single-ID map",
        &o,
        &[
            "APT::Sandbox::User \"root\";",
            "APT::Sandbox::User \"root\";",
        ],
    );
    f.check(
        o.out().contains("single-ID"),
        "the snippet says why it is there",
        &o,
    );
    let w = single.sh(&format!("echo x > {snippet}"));
    f.check(w.code() != 0, "the snippet is read-only", &w);
    let mut diff = lane.cmd();
    diff.args(["diff", &single.name]);
    let d = spawn(&mut diff).wait(TIMEOUT);
    f.check(
        d.code() == 0 && !d.out().contains("99nook-sandbox-user"),
        "nook diff does not list the snippet",
        &d,
    );
    drop(single);
    let full = Ctr::start(lane, "overlay", &[]);
    let o = full.sh(&show);
    f.expect(
        "full map",
        &o,
        &["no-snippet", "APT::Sandbox::User \"_apt\";"],
    );
    drop(full);
    f.finish();
}
