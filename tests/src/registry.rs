//! A real registry for the image tests: Debian's docker-registry (distribution 2.8) on a
//! free 127.0.0.1 port, and a per-test nook store and HOME to pull into.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::{nook, spawn, tempdir, Output};

/// How the registry authenticates clients.
pub enum Auth<'a> {
    None,
    /// Basic auth from this htpasswd file content.
    Htpasswd(&'a str),
    /// Bearer tokens from a token server; `cert` verifies their signatures.
    Token {
        realm: &'a str,
        service: &'a str,
        issuer: &'a str,
        cert: &'a Path,
    },
}

/// A registry on a free loopback port; stopped on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts it and returns once it answers HTTP (bounded wait, no fixed sleep).
    pub fn start(auth: Auth) -> Registry {
        let dir = tempdir();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        match auth {
            Auth::None => {}
            Auth::Htpasswd(h) => {
                let f = dir.path().join("htpasswd");
                fs::write(&f, h).unwrap();
                conf += &format!(
                    "auth:\n  htpasswd:\n    realm: nook-test\n    path: {}\n",
                    f.display()
                );
            }
            Auth::Token {
                realm,
                service,
                issuer,
                cert,
            } => {
                conf += &format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                    cert.display()
                );
            }
        }
        fs::write(dir.path().join("config.yml"), conf).unwrap();
        // Its access log (one line per request, combined format) goes to stdout.
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(fs::File::create(dir.path().join("access.log")).unwrap())
            .stderr(fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("start docker-registry");
        let r = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return r;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on port {port}: {}",
                r.log()
            );
            // Retrying a connect: the registry has no readiness signal to wait on.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// How many GET requests of blob `hex` of repository `name` the registry served
    /// (counted in its access log).
    pub fn blob_gets(&self, name: &str, hex: &str) -> usize {
        let needle = format!("\"GET /v2/{name}/blobs/sha256:{hex} ");
        fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// Pushes the OCI layout `layout` (tag `tag`) as `name:tag` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, name: &str, extra: &[&str]) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}:{tag}", self.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The file holding blob `hex` in the registry's storage.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's own nook store and HOME, so image tests run in parallel.
pub struct StoreEnv {
    pub home: tempfile::TempDir,
}

impl Default for StoreEnv {
    fn default() -> Self {
        StoreEnv { home: tempdir() }
    }
}

impl StoreEnv {
    pub fn root(&self) -> PathBuf {
        self.home.path().join("store")
    }

    /// `nook ARGS` with this store and HOME, and no outside store or auth settings.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = nook();
        c.env("HOME", self.home.path())
            .env("NOOK_ROOT", self.root())
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("REGISTRY_AUTH_FILE");
        c.args(args);
        c
    }

    pub fn nook(&self, args: &[&str]) -> Output {
        spawn(&mut self.cmd(args)).wait(Duration::from_secs(120))
    }
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A TCP proxy in front of a registry that forwards requests whole and stops a response
/// after `stall_after` bytes (the middle of a big blob), until [`StallingProxy::release`]
/// or drop: a pull held mid-download for as long as a test needs.
pub struct StallingProxy {
    pub port: u16,
    gate: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl StallingProxy {
    pub fn start(upstream: u16, stall_after: usize) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let g = gate.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let g = g.clone();
                std::thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    let (mut c2, mut s2) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut s2);
                    });
                    let (mut s, mut c) = (server, client);
                    let mut sent = 0usize;
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                        if sent > stall_after {
                            // Held until released (bounded: a forgotten test must end).
                            let (lock, cv) = &*g;
                            let open = lock.lock().unwrap();
                            let _ = cv
                                .wait_timeout_while(open, Duration::from_secs(300), |o| !*o)
                                .unwrap();
                        }
                    }
                    let _ = c.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        StallingProxy { port, gate }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Lets every held response go on.
    pub fn release(&self) {
        let (lock, cv) = &*self.gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.release();
    }
}

/// Writes an OCI layout at `dir` holding one image (tag `v1`, this machine's
/// architecture) whose layers are the uncompressed tarballs `tars`, lowest first.
pub fn oci_layout(dir: &Path, tars: &[&Path]) {
    oci_layout_with_cmd(dir, tars, &[]);
}

/// [`oci_layout`] with the image's default command `cmd` (none when empty).
pub fn oci_layout_with_cmd(dir: &Path, tars: &[&Path], cmd: &[&str]) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let hex = sha_hex(data);
        fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let layers: Vec<(String, usize)> = tars.iter().map(|t| put(&fs::read(t).unwrap())).collect();
    let diff_ids: Vec<String> = layers.iter().map(|(d, _)| format!("\"{d}\"")).collect();
    let cmd = if cmd.is_empty() {
        String::new()
    } else {
        let words: Vec<String> = cmd.iter().map(|w| format!("{w:?}")).collect();
        format!(r#","Cmd":[{}]"#, words.join(","))
    };
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/bin:/usr/bin"]{cmd}}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let (config, config_size) = put(config.as_bytes());
    let descs: Vec<String> = layers
        .iter()
        .map(|(d, n)| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#)
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{}]}}"#,
        descs.join(",")
    );
    let (manifest, manifest_size) = put(manifest.as_bytes());
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#
        ),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}
