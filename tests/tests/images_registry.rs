//! Images end to end: a real registry (Debian's docker-registry, distribution 2.8) on
//! 127.0.0.1, images built here from busybox-static and pushed with skopeo, pulled and
//! run by nook as an unprivileged user; plus hostile layers loaded from OCI layouts.
//!
//! Each test has its own store (`NOOK_ROOT`) and HOME, so tests run in parallel.
//! Needs the Debian packages docker-registry, skopeo, apache2-utils (htpasswd),
//! busybox-static, gzip, zstd, tar; without them a test prints `SKIP:` and returns.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nook_tests::registry::{sha_hex, Auth, Registry, StoreEnv};
use nook_tests::*;
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------------------------------
// Fixtures

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips (loudly) unless every command is present; returns whether to go on.
fn need(test: &str, cmds: &[&str]) -> bool {
    for c in cmds {
        if !have(c) {
            skip(test, &format!("`{c}` not found: install the Debian packages docker-registry skopeo apache2-utils busybox-static gzip zstd"));
            return false;
        }
    }
    true
}

/// A minimal ustar writer: full control over names, types and links (hostile cases).
#[derive(Default)]
struct Tar {
    buf: Vec<u8>,
}

impl Tar {
    fn entry(
        &mut self,
        name: &str,
        typ: u8,
        mode: u32,
        uid: u32,
        link: &str,
        data: &[u8],
    ) -> &mut Self {
        assert!(name.len() < 100 && link.len() < 100);
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let oct = |h: &mut [u8; 512], off: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = len - 1);
            h[off..off + len].copy_from_slice(s.as_bytes());
        };
        oct(&mut h, 100, 8, mode as u64);
        oct(&mut h, 108, 8, uid as u64);
        oct(&mut h, 116, 8, uid as u64);
        oct(&mut h, 124, 12, data.len() as u64);
        oct(&mut h, 136, 12, 1_700_000_000);
        h[156] = typ;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().div_ceil(512) * 512, 0);
        self
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, b'0', 0o644, 0, "", data)
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, b'5', 0o755, 0, "", b"")
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'2', 0o777, 0, target, b"")
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, b'1', 0o644, 0, target, b"")
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.buf);
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}

fn compress(cmd: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(if cmd == "gzip" {
            &["-c", "-n", "-1"][..]
        } else {
            &["-c", "-q"][..]
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    out.stdout
}

/// A layer: the uncompressed tar and how to ship it.
struct Layer {
    tar: Vec<u8>,
    compression: &'static str,
}

/// Writes an OCI layout at `dir` with one image per (arch, layers, config extras) and
/// returns the top-level descriptor digest (index when `platforms` > 1).
fn oci_layout(dir: &Path, tag: &str, images: &[(&str, Vec<Layer>, &str)]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let h = sha_hex(data);
        fs::write(blobs.join(&h), data).unwrap();
        h
    };
    let mut manifests = Vec::new();
    for (arch, layers, config_extra) in images {
        let mut ldescs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in layers {
            diff_ids.push(format!("\"sha256:{}\"", sha_hex(&l.tar)));
            let (blob, mt) = match l.compression {
                "gzip" => (
                    compress("gzip", &l.tar),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                ),
                "zstd" => (
                    compress("zstd", &l.tar),
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
                _ => (l.tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            };
            let h = put(&blob);
            ldescs.push(format!(
                "{{\"mediaType\":\"{mt}\",\"digest\":\"sha256:{h}\",\"size\":{}}}",
                blob.len()
            ));
        }
        let config = format!(
            "{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"config\":{{{config_extra}}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}}}}",
            diff_ids.join(",")
        );
        let ch = put(config.as_bytes());
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{ch}\",\"size\":{}}},\"layers\":[{}]}}",
            config.len(),
            ldescs.join(",")
        );
        let mh = put(manifest.as_bytes());
        manifests.push((arch.to_string(), mh, manifest.len()));
    }
    let top = if manifests.len() == 1 {
        let (_, mh, len) = &manifests[0];
        format!("{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:{mh}\",\"size\":{len},\"annotations\":{{\"org.opencontainers.image.ref.name\":\"{tag}\"}}}}")
    } else {
        let list: Vec<String> = manifests
            .iter()
            .map(|(a, mh, len)| format!("{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:{mh}\",\"size\":{len},\"platform\":{{\"architecture\":\"{a}\",\"os\":\"linux\"}}}}"))
            .collect();
        let index = format!("{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{}]}}", list.join(","));
        let ih = put(index.as_bytes());
        format!("{{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"sha256:{ih}\",\"size\":{},\"annotations\":{{\"org.opencontainers.image.ref.name\":\"{tag}\"}}}}", index.len())
    };
    fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
    fs::write(
        dir.join("index.json"),
        format!("{{\"schemaVersion\":2,\"manifests\":[{top}]}}"),
    )
    .unwrap();
}

/// The busybox root filesystem as a tar (owners 0), plus /etc/passwd with `app` (1000).
fn busybox_layer() -> Result<Vec<u8>, String> {
    let rootfs = busybox_rootfs()?;
    fs::write(
        rootfs.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(rootfs.path().join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    let out = Command::new("tar")
        .args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-C",
            rootfs.path_str(),
            "-cf",
            "-",
            ".",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(out.stdout)
}

/// The app layer: /home/app owned by 1000 with a greeting, and a file the base deletes.
fn app_layer(marker: &str) -> Vec<u8> {
    Tar::default()
        .entry("home/", b'5', 0o755, 0, "", b"")
        .entry("home/app/", b'5', 0o750, 1000, "", b"")
        .entry(
            "home/app/greeting",
            b'0',
            0o640,
            1000,
            "",
            format!("{marker}\n").as_bytes(),
        )
        .file("etc/.wh.group", b"")
        .finish()
}

const APP_CONFIG: &str = "\"Env\":[\"PATH=/bin:/usr/bin\",\"GREETING=hi\"],\"Cmd\":[\"sh\",\"-c\",\"echo cmd; id -u; pwd; cat greeting; echo $GREETING; test -e /etc/group || echo nogroup\"],\"WorkingDir\":\"/home/app\",\"User\":\"app\"";

/// A test's own store, HOME and runtime dir, with the queries these tests make of it.
struct Env(StoreEnv);

impl std::ops::Deref for Env {
    type Target = StoreEnv;
    fn deref(&self) -> &StoreEnv {
        &self.0
    }
}

impl Env {
    fn new() -> Env {
        Env(StoreEnv::default())
    }
    fn entries(&self, sub: &str) -> Vec<String> {
        fs::read_dir(self.root().join(sub))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
    fn images_json(&self) -> String {
        self.nook(&["images", "--format", "json"]).success().out()
    }
}

/// Pushes the two-layer app image (gzip base, zstd app layer) as `name:v1`.
fn push_app(reg: &Registry, name: &str, marker: &str) -> Result<(), String> {
    let layout = tempdir();
    oci_layout(
        layout.path(),
        "v1",
        &[(
            "amd64",
            vec![
                Layer {
                    tar: busybox_layer()?,
                    compression: "gzip",
                },
                Layer {
                    tar: app_layer(marker),
                    compression: "zstd",
                },
            ],
            APP_CONFIG,
        )],
    );
    reg.push(layout.path(), "v1", name, &[]);
    Ok(())
}

fn setup(test: &str) -> Option<(Registry, Env)> {
    assert_unprivileged();
    if !need(test, &["docker-registry", "skopeo", "gzip", "zstd", "tar"]) {
        return None;
    }
    if let Err(why) = static_busybox() {
        skip(test, &why);
        return None;
    }
    Some((Registry::start(Auth::None), Env::new()))
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn pull_run_inspect_images_rmi() {
    let Some((reg, env)) = setup("pull_run_inspect_images_rmi") else {
        return;
    };
    let marker = token();
    push_app(&reg, "app", &marker).unwrap();
    let image = format!("{}/app:v1", reg.host());

    // Plain HTTP needs --tls-verify=false, as with podman.
    env.nook(&["pull", "--quiet", &image])
        .assert_error_line(125, &["--tls-verify=false"]);
    let id = env
        .nook(&["pull", "--quiet", "--tls-verify=false", &image])
        .success()
        .line();
    assert_eq!(id.len(), 64, "pull prints the image ID");

    // Entrypoint/Cmd, Env, WorkingDir, User (named in the image's passwd), whiteouts.
    let out = env.nook(&["run", "--rm", &image]);
    out.success();
    assert_eq!(
        out.out(),
        format!("cmd\n1000\n/home/app\n{marker}\nhi\nnogroup\n"),
        "{out}"
    );
    // Owners came out as the image says: /home/app is 1000's, / is root's.
    let out = env.nook(&[
        "run",
        "--rm",
        "--user",
        "0",
        &image,
        "stat",
        "-c",
        "%u:%g %a",
        "/home/app",
        "/bin/busybox",
    ]);
    assert_eq!(out.success().out(), "1000:1000 750\n0:0 755\n", "{out}");
    // What a container writes stays in its own copy.
    env.nook(&[
        "run",
        "--rm",
        "--user",
        "0",
        &image,
        "sh",
        "-c",
        "echo changed > /home/app/greeting",
    ])
    .success();
    assert_eq!(
        env.nook(&["run", "--rm", &image, "cat", "greeting"])
            .success()
            .out(),
        format!("{marker}\n")
    );

    // `nook exec` starts in the image's WorkingDir too, as podman's (unless -w). (As
    // root: exec into a container whose first process is another user fails today,
    // its /proc/PID/environ being 0400 of a subordinate ID.)
    let ctr = env
        .nook(&["run", "-d", "--user", "0", &image, "sleep", "1000"])
        .success()
        .line();
    assert_eq!(
        env.nook(&["exec", &ctr, "pwd"]).success().out(),
        "/home/app\n",
        "exec starts in the image's WorkingDir"
    );
    assert_eq!(
        env.nook(&["exec", "-w", "/", &ctr, "pwd"]).success().out(),
        "/\n"
    );
    env.nook(&["rm", "-f", &ctr]).success();

    let list = env.images_json();
    assert!(
        list.contains(&format!("\"{image}\"")) && list.contains(&id),
        "{list}"
    );
    let text = env.nook(&["images"]).success().out();
    assert!(
        text.contains(&format!("{}/app", reg.host()))
            && text.contains("v1")
            && text.contains(&id[..12]),
        "{text}"
    );
    // Sizes as podman prints them: three significant digits, a space, a decimal unit.
    let size = env
        .nook(&["images", "--format", "{{.Size}}"])
        .success()
        .line();
    let (number, unit) = size.split_once(' ').unwrap_or(("", ""));
    assert!(
        ["B", "kB", "MB", "GB"].contains(&unit)
            && number.parse::<f64>().is_ok()
            && number.chars().filter(char::is_ascii_digit).count() <= 3,
        "images SIZE {size:?}"
    );
    let inspect = env.nook(&["inspect", &image]).success().out();
    assert!(
        inspect.contains("\"WorkingDir\": \"/home/app\"") && inspect.contains(&id),
        "{inspect}"
    );
    assert_eq!(env.entries("layers").len(), 2);

    // An image already there is not fetched again (run --pull=never works offline).
    drop(reg);
    env.nook(&["run", "--rm", "--pull=never", &image, "true"])
        .success();
    env.nook(&["inspect", "nosuch"])
        .assert_error_line(125, &["not found", "nosuch"]);
    env.nook(&["run", "--rm", "--pull=never", "nosuch", "true"])
        .assert_error_line(125, &["nosuch"]);

    let out = env.nook(&["rmi", &image]);
    assert!(out.success().out().contains(&id), "{out}");
    assert_eq!(env.images_json().trim(), "[]");
    assert!(
        env.entries("layers").is_empty(),
        "layers left: {:?}",
        env.entries("layers")
    );
    assert!(
        env.entries("blobs/sha256").is_empty(),
        "blobs left: {:?}",
        env.entries("blobs/sha256")
    );
    assert!(
        env.entries("tmp").is_empty(),
        "tmp left: {:?}",
        env.entries("tmp")
    );
    env.nook(&["rmi", &image])
        .assert_error_line(125, &["not found"]);
}

#[test]
fn multi_arch_index_selects_the_platform() {
    let Some((reg, env)) = setup("multi_arch_index_selects_the_platform") else {
        return;
    };
    let layout = tempdir();
    let base = busybox_layer().unwrap();
    let arch_layer = |a: &str| Tar::default().file("arch", a.as_bytes()).finish();
    oci_layout(
        layout.path(),
        "multi",
        &[
            (
                "arm64",
                vec![
                    Layer {
                        tar: base.clone(),
                        compression: "gzip",
                    },
                    Layer {
                        tar: arch_layer("arm64"),
                        compression: "none",
                    },
                ],
                "\"Cmd\":[\"cat\",\"/arch\"]",
            ),
            (
                "amd64",
                vec![
                    Layer {
                        tar: base,
                        compression: "gzip",
                    },
                    Layer {
                        tar: arch_layer("amd64"),
                        compression: "none",
                    },
                ],
                "\"Cmd\":[\"cat\",\"/arch\"]",
            ),
        ],
    );
    reg.push(layout.path(), "multi", "multi", &["--all"]);
    let image = format!("{}/multi:multi", reg.host());
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(
            env.nook(&["run", "--rm", "--tls-verify=false", &image])
                .success()
                .out(),
            "amd64"
        );
    }
    env.nook(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--platform",
        "linux/arm64",
        &image,
    ])
    .success();
    let inspect = env.nook(&["inspect", &image]).success().out();
    assert!(inspect.contains("\"Architecture\": \"arm64\""), "{inspect}");
    // The base layer is shared: three layer directories for two images.
    assert_eq!(
        env.entries("layers").len(),
        if std::env::consts::ARCH == "x86_64" {
            3
        } else {
            2
        }
    );
    env.nook(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--platform",
        "linux/s390x",
        &image,
    ])
    .assert_error_line(125, &["linux/s390x", "linux/amd64"]);
}

#[test]
fn corrupt_blob_is_refused_and_nothing_stored() {
    let Some((reg, env)) = setup("corrupt_blob_is_refused_and_nothing_stored") else {
        return;
    };
    push_app(&reg, "good", "good").unwrap();
    let good = format!("{}/good:v1", reg.host());
    env.nook(&["pull", "-q", "--tls-verify=false", &good])
        .success();

    // A second image whose own layer is corrupted in the registry's storage.
    let layout = tempdir();
    let layer = Tar::default()
        .file("only-here", &random_bytes(200_000))
        .finish();
    let blob = compress("gzip", &layer);
    oci_layout(
        layout.path(),
        "v1",
        &[(
            "amd64",
            vec![Layer {
                tar: layer,
                compression: "gzip",
            }],
            "",
        )],
    );
    reg.push(layout.path(), "v1", "bad", &[]);
    let f = reg.blob_file(&sha_hex(&blob));
    let mut data = fs::read(&f).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    fs::write(&f, data).unwrap();

    let before_blobs = env.entries("blobs/sha256").len();
    let out = env.nook(&[
        "pull",
        "-q",
        "--tls-verify=false",
        &format!("{}/bad:v1", reg.host()),
    ]);
    out.assert_error_line(125, &["does not match its digest", &sha_hex(&blob)]);
    assert!(
        !env.images_json().contains("/bad:"),
        "a failed pull must not add the image"
    );
    // Manifest and config of the bad image may stay (verified); its layer blob may not.
    assert!(!env.entries("blobs/sha256").contains(&sha_hex(&blob)));
    assert!(env.entries("blobs/sha256").len() >= before_blobs);
    assert!(
        env.entries("tmp").is_empty(),
        "tmp left: {:?}",
        env.entries("tmp")
    );
    // What was there before still works and verifies.
    env.nook(&["run", "--rm", &good, "true"]).success();
    env.nook(&["system", "check"]).success();
}

#[test]
fn concurrent_pulls_leave_a_consistent_store() {
    let Some((reg, env)) = setup("concurrent_pulls_leave_a_consistent_store") else {
        return;
    };
    push_app(&reg, "para", "para").unwrap();
    let image = format!("{}/para:v1", reg.host());
    let procs: Vec<Proc> = (0..4)
        .map(|_| spawn(&mut env.cmd(&["pull", "-q", "--tls-verify=false", &image])))
        .collect();
    let ids: Vec<String> = procs
        .into_iter()
        .map(|p| p.wait(Duration::from_secs(180)).success().line())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let list = env.images_json();
    assert_eq!(list.matches("\"Id\"").count(), 1, "{list}");
    assert_eq!(env.entries("layers").len(), 2);
    assert!(
        env.entries("tmp").is_empty(),
        "tmp left: {:?}",
        env.entries("tmp")
    );
    // Runs at once, while another pull rewrites the record.
    let runs: Vec<Proc> = (0..3)
        .map(|_| spawn(&mut env.cmd(&["run", "--rm", &image, "cat", "greeting"])))
        .collect();
    env.nook(&["pull", "-q", "--tls-verify=false", &image])
        .success();
    for r in runs {
        assert_eq!(r.wait(Duration::from_secs(120)).success().out(), "para\n");
    }
    env.nook(&["system", "check"]).success();
}

#[test]
fn concurrent_first_pulls_download_each_blob_once() {
    let Some((reg, env)) = setup("concurrent_first_pulls_download_each_blob_once") else {
        return;
    };
    let layout = tempdir();
    // A big, incompressible layer: the pulls overlap while it downloads.
    let big = Tar::default().file("big", &random_bytes(24 << 20)).finish();
    oci_layout(
        layout.path(),
        "v1",
        &[(
            "amd64",
            vec![
                Layer {
                    tar: busybox_layer().unwrap(),
                    compression: "gzip",
                },
                Layer {
                    tar: big,
                    compression: "none",
                },
            ],
            "",
        )],
    );
    reg.push(layout.path(), "v1", "shared", &[]);
    let image = format!("{}/shared:v1", reg.host());
    let procs: Vec<Proc> = (0..3)
        .map(|_| spawn(&mut env.cmd(&["pull", "-q", "--tls-verify=false", &image])))
        .collect();
    let ids: Vec<String> = procs
        .into_iter()
        .map(|p| p.wait(Duration::from_secs(180)).success().line())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    // Every blob the pulls needed (the config and the layers as the registry has them:
    // skopeo compressed the plain one) was served once. The registry logs a request
    // after answering it: wait (bounded) for each to show up before counting.
    let stored: serde_json::Value =
        serde_json::from_slice(&fs::read(env.root().join("images.json")).unwrap()).unwrap();
    let image_record = &stored["images"][0];
    let blobs: Vec<String> = std::iter::once(&image_record["id"])
        .chain(
            image_record["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| &l["blob"]),
        )
        .map(|d| {
            d.as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fetched = Vec::new();
    for hex in &blobs {
        while reg.blob_gets("shared", hex) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        fetched.push((hex.clone(), reg.blob_gets("shared", hex)));
    }
    assert_eq!(fetched.len(), 3, "a config and two layers: {fetched:?}");
    assert!(
        fetched.iter().all(|(_, n)| *n == 1),
        "each blob downloaded once by three pulls at once: {fetched:?}"
    );
    assert!(
        env.entries("tmp").is_empty(),
        "tmp left: {:?}",
        env.entries("tmp")
    );
    assert!(
        env.entries("locks").is_empty(),
        "locks left: {:?}",
        env.entries("locks")
    );
    env.nook(&["system", "check"]).success();
}

#[test]
fn killed_pull_then_clean_pull() {
    let Some((reg, env)) = setup("killed_pull_then_clean_pull") else {
        return;
    };
    let layout = tempdir();
    // Big, incompressible layers: the pull is still running when it is killed.
    let big = |n| {
        Tar::default()
            .file("big", &random_bytes(24 << 20))
            .file("n", format!("{n}").as_bytes())
            .finish()
    };
    oci_layout(
        layout.path(),
        "v1",
        &[(
            "amd64",
            vec![
                Layer {
                    tar: busybox_layer().unwrap(),
                    compression: "gzip",
                },
                Layer {
                    tar: big(1),
                    compression: "none",
                },
                Layer {
                    tar: big(2),
                    compression: "none",
                },
            ],
            "",
        )],
    );
    reg.push(layout.path(), "v1", "big", &[]);
    let image = format!("{}/big:v1", reg.host());
    let p = spawn(&mut env.cmd(&["pull", "-q", "--tls-verify=false", &image]));
    // Kill it as soon as a download is under way in tmp/.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.entries("tmp").iter().any(|e| e.contains("-blob-")) {
        assert!(
            Instant::now() < deadline,
            "the pull never started downloading"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    p.kill_all();
    let out = p.wait(Duration::from_secs(30));
    assert_eq!(out.code(), 137, "{out}");
    assert_eq!(
        env.images_json().trim(),
        "[]",
        "a killed pull must not show an image"
    );
    // The next command sweeps the dead pull's leftovers; the pull completes.
    env.nook(&["pull", "-q", "--tls-verify=false", &image])
        .success();
    assert!(
        env.entries("tmp").is_empty(),
        "tmp left: {:?}",
        env.entries("tmp")
    );
    assert_eq!(
        env.nook(&["run", "--rm", &image, "cat", "/n"])
            .success()
            .out(),
        "2"
    );
    env.nook(&["system", "check"]).success();
}

#[test]
fn dropped_connection_mid_layer_fails_cleanly() {
    let Some((reg, env)) = setup("dropped_connection_mid_layer_fails_cleanly") else {
        return;
    };
    let layout = tempdir();
    let layer = Tar::default().file("data", &random_bytes(4 << 20)).finish();
    oci_layout(
        layout.path(),
        "v1",
        &[(
            "amd64",
            vec![Layer {
                tar: layer,
                compression: "none",
            }],
            "",
        )],
    );
    reg.push(layout.path(), "v1", "drop", &[]);
    // A proxy that cuts every response after 256 KiB: manifests pass, the layer breaks.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap().port();
    let upstream = reg.port;
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                });
                let mut s = server;
                let mut c = client;
                let mut sent = 0usize;
                let mut buf = [0u8; 16384];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if sent > 256 << 10 {
                        break;
                    }
                }
                let _ = c.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    let out = env.nook(&[
        "pull",
        "-q",
        "--tls-verify=false",
        &format!("127.0.0.1:{proxy}/drop:v1"),
    ]);
    out.assert_error_line(125, &["run the command again"]);
    assert_eq!(env.images_json().trim(), "[]");
    assert!(
        env.entries("tmp").is_empty(),
        "tmp left: {:?}",
        env.entries("tmp")
    );
}

#[test]
fn registry_auth_and_login() {
    let test = "registry_auth_and_login";
    assert_unprivileged();
    if !need(
        test,
        &["docker-registry", "skopeo", "htpasswd", "gzip", "zstd"],
    ) || static_busybox().is_err()
    {
        return;
    }
    let h = Command::new("htpasswd")
        .args(["-Bbn", "tester", "s3cret"])
        .output()
        .unwrap();
    let reg = Registry::start(Auth::Htpasswd(&String::from_utf8_lossy(&h.stdout)));
    let layout = tempdir();
    oci_layout(
        layout.path(),
        "v1",
        &[(
            "amd64",
            vec![Layer {
                tar: Tar::default().file("x", b"x").finish(),
                compression: "gzip",
            }],
            "",
        )],
    );
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "tester:s3cret",
        ])
        .arg(format!("oci:{}:v1", layout.path().display()))
        .arg(format!("docker://{}/private:v1", reg.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = Env::new();
    let image = format!("{}/private:v1", reg.host());
    env.nook(&["pull", "-q", "--tls-verify=false", &image])
        .assert_error_line(125, &["nook login"]);
    env.nook(&[
        "login",
        "--tls-verify=false",
        "-u",
        "tester",
        "-p",
        "wrong",
        &reg.host(),
    ])
    .assert_code(125);
    env.nook(&[
        "login",
        "--tls-verify=false",
        "-u",
        "tester",
        "-p",
        "s3cret",
        &reg.host(),
    ])
    .success();
    let auth = env.home.path().join(".config/nook/auth.json");
    assert_eq!(
        fs::metadata(&auth).unwrap().mode() & 0o777,
        0o600,
        "credentials must be private"
    );
    env.nook(&["pull", "-q", "--tls-verify=false", &image])
        .success();
    env.nook(&["logout", &reg.host()]).success();
    // ~/.docker/config.json is read too.
    fs::create_dir_all(env.home.path().join(".docker")).unwrap();
    fs::write(
        env.home.path().join(".docker/config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"dGVzdGVyOnMzY3JldA==\"}}}}}}",
            reg.host()
        ),
    )
    .unwrap();
    env.nook(&["pull", "-q", "--tls-verify=false", &image])
        .success();
}

#[test]
fn save_load_import_roundtrip() {
    let Some((reg, env)) = setup("save_load_import_roundtrip") else {
        return;
    };
    push_app(&reg, "rt", "roundtrip").unwrap();
    let image = format!("{}/rt:v1", reg.host());
    let id = env
        .nook(&["pull", "-q", "--tls-verify=false", &image])
        .success()
        .line();
    let dir = tempdir();
    let archive = dir.path().join("rt.tar");
    env.nook(&["save", "-o", archive.to_str().unwrap(), &image])
        .success();
    // skopeo reads what nook saved.
    let out = Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}", archive.display())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.nook(&["rmi", &image]).success();
    let out = env.nook(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.success().out().contains(&image), "{out}");
    assert_eq!(
        env.nook(&["run", "--rm", &image, "cat", "greeting"])
            .success()
            .out(),
        "roundtrip\n"
    );
    assert!(env.images_json().contains(&id));

    // docker-archive, as `podman save` and `docker save` write it (made by skopeo).
    // (Docker archives cannot hold zstd layers: this one is gzip only.)
    let dock = dir.path().join("docker.tar");
    let gz = tempdir();
    oci_layout(
        gz.path(),
        "v1",
        &[(
            "amd64",
            vec![
                Layer {
                    tar: busybox_layer().unwrap(),
                    compression: "gzip",
                },
                Layer {
                    tar: app_layer("roundtrip"),
                    compression: "gzip",
                },
            ],
            APP_CONFIG,
        )],
    );
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            &format!("oci:{}:v1", gz.path().display()),
            &format!("docker-archive:{}:example.com/dock:1", dock.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.nook(&["load", "-i", dock.to_str().unwrap()]).success();
    assert_eq!(
        env.nook(&["run", "--rm", "example.com/dock:1", "cat", "greeting"])
            .success()
            .out(),
        "roundtrip\n"
    );

    // import: a plain root filesystem tarball.
    let tarball = dir.path().join("rootfs.tar.gz");
    fs::write(&tarball, compress("gzip", &busybox_layer().unwrap())).unwrap();
    env.nook(&["import", tarball.to_str().unwrap(), "imported"])
        .success();
    assert_eq!(
        env.nook(&["run", "--rm", "imported", "echo", "ok"])
            .success()
            .out(),
        "ok\n"
    );
    assert!(env.images_json().contains("localhost/imported:latest"));
    env.nook(&["tag", "imported", "other:2"]).success();
    env.nook(&["rmi", "other:2"]).success();
    env.nook(&["run", "--rm", "imported", "true"]).success();
    env.nook(&["load", "-i", tarball.to_str().unwrap()])
        .assert_error_line(125, &["not an image archive"]);
}

/// Loads a one-layer OCI layout made of `tar` and returns the load's output.
fn load_layer(env: &Env, tar: Vec<u8>, compression: &'static str) -> Output {
    let layout = tempdir();
    oci_layout(
        layout.path(),
        "v1",
        &[("amd64", vec![Layer { tar, compression }], "")],
    );
    env.nook(&["load", "-i", layout.path().to_str().unwrap()])
}

/// The unpacked tree of the store's only layer holding `rel`.
fn layer_holding(env: &Env, rel: &str) -> std::path::PathBuf {
    env.entries("layers")
        .into_iter()
        .map(|l| env.root().join("layers").join(l).join("diff"))
        .find(|d| fs::symlink_metadata(d.join(rel)).is_ok())
        .unwrap_or_else(|| panic!("no layer holds {rel}"))
}

#[test]
fn pax_sparse_files_and_layer_symlinks_unpack_as_containerd_does() {
    assert_unprivileged();
    if !need(
        "pax_sparse_files_and_layer_symlinks_unpack_as_containerd_does",
        &["gzip", "tar"],
    ) {
        return;
    }
    let env = Env::new();
    // A sparse file archived by GNU tar in PAX form (sparse format 1.0): 10 MiB, data
    // at 4096 and at its end.
    let src = tempdir();
    let size: u64 = 10 << 20;
    {
        use std::io::{Seek, SeekFrom};
        let mut f = fs::File::create(src.path().join("sparse")).unwrap();
        f.set_len(size).unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(b"hello").unwrap();
        f.seek(SeekFrom::Start(size - 3)).unwrap();
        f.write_all(b"end").unwrap();
    }
    let tar = Command::new("tar")
        .args([
            "--sparse",
            "--posix",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
        ])
        .arg("-C")
        .arg(src.path())
        .args(["-cf", "-", "sparse"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    assert!(
        String::from_utf8_lossy(&tar.stdout).contains("GNU.sparse.major=1"),
        "GNU tar wrote PAX sparse 1.0"
    );
    load_layer(&env, tar.stdout, "gzip").success();
    let diff = layer_holding(&env, "sparse");
    let got = fs::read(diff.join("sparse")).unwrap();
    assert_eq!(
        got.len() as u64,
        size,
        "the file's real size, not its sparse map"
    );
    assert_eq!(&got[4096..4101], b"hello");
    assert_eq!(&got[got.len() - 3..], b"end");
    assert!(got[..4096].iter().all(|&b| b == 0));
    assert!(
        fs::metadata(diff.join("sparse")).unwrap().blocks() * 512 < 1 << 20,
        "written with holes"
    );
    assert_eq!(
        fs::read_dir(&diff).unwrap().count(),
        1,
        "no GNUSparseFile.PID directory"
    );

    // `var/run -> /run`, then `var/run/x`: resolved inside the layer, /run created there
    // (containerd's rule), as one entry after the other in the same layer.
    let layer = Tar::default()
        .dir("var/")
        .symlink("var/run", "/run")
        .file("var/run/x", b"x")
        .finish();
    load_layer(&env, layer, "gzip").success();
    let diff = layer_holding(&env, "run/x");
    assert_eq!(fs::read(diff.join("run/x")).unwrap(), b"x");
    assert!(fs::symlink_metadata(diff.join("var/run"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::metadata(diff.join("run")).unwrap().mode() & 0o7777,
        0o755
    );

    // A parent that resolves to a file: one line, its cause said once.
    let images = env.images_json();
    let layer = Tar::default()
        .file("etc", b"a file")
        .symlink("link", "/etc")
        .file("link/passwd", b"x")
        .finish();
    let out = load_layer(&env, layer, "gzip");
    out.assert_error_line(125, &["link/passwd", "Not a directory"]);
    assert_eq!(out.err().matches("Not a directory").count(), 1, "{out}");
    assert_eq!(env.images_json(), images, "nothing stored");

    // A sparse form nook cannot read is refused with one line, nothing stored.
    let mut pax = Vec::new();
    let record = |k: &str, v: &str| {
        let rest = format!(" {k}={v}\n");
        let mut len = rest.len() + 1;
        while format!("{len}").len() + rest.len() != len {
            len += 1;
        }
        format!("{len}{rest}")
    };
    pax.extend_from_slice(
        format!(
            "{}{}{}",
            record("GNU.sparse.major", "2"),
            record("GNU.sparse.minor", "0"),
            record("GNU.sparse.realsize", "100")
        )
        .as_bytes(),
    );
    let bad = Tar::default()
        .entry("PaxHeaders/f", b'x', 0o644, 0, "", &pax)
        .file("f", b"")
        .finish();
    let out = load_layer(&env, bad, "gzip");
    out.assert_error_line(125, &["GNU sparse format 2.0"]);
    assert_eq!(env.images_json(), images, "nothing stored");
}

#[test]
fn hostile_layers_write_nothing_outside() {
    assert_unprivileged();
    if !need("hostile_layers_write_nothing_outside", &["gzip", "zstd"]) {
        return;
    }
    let env = Env::new();
    let victim = tempdir();
    let v = victim
        .path()
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    fs::write(victim.path().join("keep"), "original").unwrap();
    // A good image first: the store must stay intact through everything below.
    let good = load_layer(&env, Tar::default().file("good", b"good").finish(), "gzip");
    good.success();
    let depth = "../".repeat(12);
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "dotdot",
            Tar::default()
                .file(&format!("{depth}{v}/pwned"), b"x")
                .finish(),
            Some("climbs out"),
        ),
        (
            "absolute",
            Tar::default().file(&format!("/{v}/pwned"), b"x").finish(),
            None,
        ),
        (
            "symlink then file",
            Tar::default()
                .symlink("link", &format!("/{v}"))
                .file("link/pwned", b"x")
                .file("link/keep", b"x")
                .finish(),
            None,
        ),
        (
            "relative symlink",
            Tar::default()
                .symlink("up", &format!("{depth}{v}"))
                .file("up/pwned", b"x")
                .finish(),
            None,
        ),
        (
            "dir symlink chain",
            Tar::default()
                .dir("a")
                .symlink("a/b", "../..")
                .symlink("c", &format!("a/b/{depth}{v}"))
                .file("c/pwned", b"x")
                .finish(),
            None,
        ),
        (
            "hardlink out",
            Tar::default()
                .hardlink("hl", &format!("{depth}{v}/keep"))
                .finish(),
            Some("hard link"),
        ),
        (
            "hardlink absolute",
            Tar::default()
                .hardlink("hl", &format!("/{v}/keep"))
                .finish(),
            Some("hard link"),
        ),
        (
            "hardlink via symlink",
            Tar::default()
                .symlink("s", &format!("/{v}"))
                .hardlink("hl", "s/keep")
                .finish(),
            Some("hard link"),
        ),
        (
            "symlink loop",
            Tar::default()
                .symlink("l1", "l2")
                .symlink("l2", "l1")
                .file("l1/pwned", b"x")
                .finish(),
            Some("l1/pwned"),
        ),
        (
            "whiteout of ..",
            Tar::default().dir("d").file("d/.wh..", b"").finish(),
            Some("whiteout"),
        ),
        (
            "whiteout via symlink",
            Tar::default()
                .symlink("w", &format!("/{v}"))
                .file("w/.wh.keep", b"")
                .finish(),
            None,
        ),
        (
            "device",
            Tar::default()
                .entry("dev/null", b'3', 0o666, 0, "", b"")
                .file("ok", b"ok")
                .finish(),
            None,
        ),
    ];
    for (name, tar, expect_err) in cases {
        let out = load_layer(&env, tar, "gzip");
        match expect_err {
            Some(m) => {
                out.assert_error_line(125, &[m]);
            }
            // A safe result: unpacked inside the layer, or refused with one clear line.
            None if out.code() == 0 => {}
            None => {
                out.assert_error_line(125, &[]);
            }
        }
        assert_eq!(
            fs::read_to_string(victim.path().join("keep")).unwrap(),
            "original",
            "case {name}"
        );
        assert!(
            !victim.path().join("pwned").exists(),
            "case {name} wrote outside the layer"
        );
        assert_eq!(
            fs::read_dir(victim.path()).unwrap().count(),
            1,
            "case {name} changed the victim dir"
        );
    }
    // The store is intact: the good image runs and every blob verifies.
    env.nook(&["system", "check"]).success();
    assert!(
        env.entries("tmp").is_empty(),
        "tmp left: {:?}",
        env.entries("tmp")
    );

    // 100k entries: a safe, complete result.
    let mut t = Tar::default();
    t.dir("many");
    for i in 0..100_000 {
        t.file(&format!("many/f{i}"), b"");
    }
    load_layer(&env, t.finish(), "zstd").success();
    let layer = fs::read_dir(env.root().join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("diff/many"))
        .find(|p| p.is_dir())
        .expect("the 100k layer");
    assert_eq!(fs::read_dir(layer).unwrap().count(), 100_000);

    // A gzip bomb: 1 GiB of zeros in ~1 MiB; unpacked sparse, it costs no disk.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("gzip -c -1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut h = Tar::default();
        h.entry("bomb", b'0', 0o644, 0, "", b"");
        let mut header = h.buf;
        let size = format!("{:011o}\0", 1u64 << 30);
        header[124..136].copy_from_slice(size.as_bytes());
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| b as u32).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        stdin.write_all(&header).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            stdin.write_all(&zeros).unwrap();
        }
        stdin.write_all(&[0u8; 1024]).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let bomb = out.stdout;
    // Built by hand as a gzip blob: the layout helper would compress again.
    let layout = tempdir();
    let blobs = layout.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut zeros_hash = Sha256::new();
    {
        let mut h = Tar::default();
        h.entry("bomb", b'0', 0o644, 0, "", b"");
        let mut header = h.buf;
        header[124..136].copy_from_slice(format!("{:011o}\0", 1u64 << 30).as_bytes());
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| b as u32).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        zeros_hash.update(&header);
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            zeros_hash.update(&zeros);
        }
        zeros_hash.update([0u8; 1024]);
    }
    let diff_id: String = zeros_hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let lh = sha_hex(&bomb);
    fs::write(blobs.join(&lh), &bomb).unwrap();
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"sha256:{diff_id}\"]}}}}");
    let ch = sha_hex(config.as_bytes());
    fs::write(blobs.join(&ch), &config).unwrap();
    let manifest = format!("{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{ch}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:{lh}\",\"size\":{}}}]}}", config.len(), bomb.len());
    let mh = sha_hex(manifest.as_bytes());
    fs::write(blobs.join(&mh), &manifest).unwrap();
    fs::write(
        layout.path().join("oci-layout"),
        "{\"imageLayoutVersion\":\"1.0.0\"}",
    )
    .unwrap();
    fs::write(layout.path().join("index.json"), format!("{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:{mh}\",\"size\":{}}}]}}", manifest.len())).unwrap();
    env.nook(&["load", "-i", layout.path().to_str().unwrap()])
        .success();
    let bomb_file = env.root().join("layers").join(&diff_id).join("diff/bomb");
    let m = fs::metadata(&bomb_file).unwrap();
    assert_eq!(m.len(), 1 << 30);
    assert!(
        m.blocks() * 512 < 16 << 20,
        "the bomb took {} bytes of disk",
        m.blocks() * 512
    );
}
