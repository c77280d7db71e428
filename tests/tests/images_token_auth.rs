//! Pulling from a registry that uses bearer-token auth (the Docker/OCI token flow): a real
//! registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1 with `auth: token`,
//! and a small token server inside this test that signs RS256 JWTs with an RSA key and a
//! self-signed certificate made by the `openssl` CLI. The registry answers 401 with
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…`; the client asks the realm for a
//! token (with Basic credentials) and retries with `Authorization: Bearer`.
//!
//! Needs the Debian packages docker-registry, skopeo, openssl, busybox-static, gzip, tar;
//! without them the test prints `SKIP:` and returns.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nook_tests::registry::{sha_hex, Auth, Registry, StoreEnv};
use nook_tests::*;

const USER: &str = "tokenuser";
const PASS: &str = "t0ken-s3cret";
const SERVICE: &str = "nook-test-registry";
const ISSUER: &str = "nook-test-issuer";

// ---------------------------------------------------------------------------------------
// Small encoders

fn base64(data: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a command to completion (these are all quick) and returns its stdout.
fn run_ok(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut w = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || w.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------------------
// The token server

/// An RSA key and self-signed certificate, made with the openssl CLI.
struct Signer {
    key: PathBuf,
    cert: PathBuf,
    /// base64 (standard, padded) DER of the certificate, for the JWT's `x5c`.
    cert_b64: String,
}

impl Signer {
    fn new(dir: &Path) -> Signer {
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        run_ok(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=nook-test-token-issuer", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            b"",
        );
        let der = run_ok(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert),
            b"",
        );
        Signer {
            key,
            cert,
            cert_b64: base64(&der, false),
        }
    }

    /// A JWT the registry accepts: RS256 over `b64url(header).b64url(claims)`.
    fn jwt(&self, access: &[(String, Vec<String>)]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = format!(
            "{{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x5c\":[\"{}\"]}}",
            self.cert_b64
        );
        let access: Vec<String> = access
            .iter()
            .map(|(name, actions)| {
                let a: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
                format!(
                    "{{\"type\":\"repository\",\"name\":\"{name}\",\"actions\":[{}]}}",
                    a.join(",")
                )
            })
            .collect();
        let claims = format!(
            "{{\"iss\":\"{ISSUER}\",\"sub\":\"{USER}\",\"aud\":\"{SERVICE}\",\"exp\":{},\"nbf\":{},\"iat\":{now},\"jti\":\"{}\",\"access\":[{}]}}",
            now + 300,
            now - 10,
            token(),
            access.join(",")
        );
        let signing_input = format!(
            "{}.{}",
            base64(header.as_bytes(), true),
            base64(claims.as_bytes(), true)
        );
        let sig = run_ok(
            Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&self.key),
            signing_input.as_bytes(),
        );
        format!("{signing_input}.{}", base64(&sig, true))
    }
}

/// What the token server was asked: (had good Basic credentials, the scope parameters).
type Requests = Arc<Mutex<Vec<(bool, Vec<String>)>>>;

/// Parses `repository:NAME:ACTIONS` as the token spec's grammar has it (NAME not empty).
fn parse_scope(scope: &str) -> Option<(String, Vec<String>)> {
    let rest = scope.strip_prefix("repository:")?;
    let (name, actions) = rest.rsplit_once(':')?;
    let valid_name = !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:".contains(&b))
        });
    if !valid_name || actions.is_empty() {
        return None;
    }
    Some((
        name.to_string(),
        actions.split(',').map(str::to_string).collect(),
    ))
}

fn respond(s: &mut TcpStream, status: &str, extra: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

/// One request: `GET /token?service=…&scope=…` with Basic `USER:PASS`.
fn serve_token(stream: TcpStream, signer: &Signer, requests: &Requests) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut s = stream;
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {
                if let Some((k, v)) = line.split_once(':') {
                    if k.trim().eq_ignore_ascii_case("authorization") {
                        authorization = v.trim().to_string();
                    }
                }
            }
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !request_line.starts_with("GET ") || path != "/token" {
        return respond(&mut s, "404 Not Found", "", "{}");
    }
    let mut service = String::new();
    let mut scopes = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "service" => service = percent_decode(v),
            "scope" => scopes.push(percent_decode(v)),
            _ => {}
        }
    }
    let good = authorization
        == format!(
            "Basic {}",
            base64(format!("{USER}:{PASS}").as_bytes(), false)
        );
    requests.lock().unwrap().push((good, scopes.clone()));
    if !good {
        return respond(
            &mut s,
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"nook-test-token\"\r\n",
            "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"bad or missing credentials\"}]}",
        );
    }
    if service != SERVICE {
        return respond(
            &mut s,
            "400 Bad Request",
            "",
            "{\"errors\":[{\"code\":\"UNSUPPORTED\",\"message\":\"unknown service\"}]}",
        );
    }
    let mut access = Vec::new();
    for scope in &scopes {
        match parse_scope(scope) {
            Some(a) => access.push(a),
            None => {
                return respond(
                    &mut s,
                    "400 Bad Request",
                    "",
                    &format!("{{\"errors\":[{{\"code\":\"UNSUPPORTED\",\"message\":\"invalid scope {scope:?}\"}}]}}"),
                )
            }
        }
    }
    let jwt = signer.jwt(&access);
    respond(
        &mut s,
        "200 OK",
        "",
        &format!("{{\"token\":\"{jwt}\",\"access_token\":\"{jwt}\",\"expires_in\":300}}"),
    );
}

/// Starts the token server on a free loopback port; it lives as long as the test process.
fn start_token_server(signer: Signer) -> (u16, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    let signer = Arc::new(signer);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (signer, seen) = (signer.clone(), seen.clone());
            std::thread::spawn(move || serve_token(stream, &signer, &seen));
        }
    });
    (port, requests)
}

// ---------------------------------------------------------------------------------------
// The registry and the image

/// An OCI layout at `dir`, tag `v1`: one gzip layer, the busybox root filesystem with
/// `/marker` holding `marker`.
fn oci_layout(dir: &Path, marker: &str) -> Result<(), String> {
    let rootfs = busybox_rootfs()?;
    fs::write(rootfs.path().join("marker"), format!("{marker}\n")).unwrap();
    let tar = run_ok(
        Command::new("tar").args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-C",
            rootfs.path_str(),
            "-cf",
            "-",
            ".",
        ]),
        b"",
    );
    let layer = run_ok(Command::new("gzip").args(["-c", "-n", "-1"]), &tar);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let h = sha_hex(data);
        fs::write(blobs.join(&h), data).unwrap();
        h
    };
    let lh = put(&layer);
    let config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Env\":[\"PATH=/bin:/usr/bin\"],\"Cmd\":[\"sh\"]}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"sha256:{}\"]}}}}",
        sha_hex(&tar)
    );
    let ch = put(config.as_bytes());
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{ch}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:{lh}\",\"size\":{}}}]}}",
        config.len(),
        layer.len()
    );
    let mh = put(manifest.as_bytes());
    fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
    fs::write(
        dir.join("index.json"),
        format!("{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:{mh}\",\"size\":{},\"annotations\":{{\"org.opencontainers.image.ref.name\":\"v1\"}}}}]}}", manifest.len()),
    )
    .unwrap();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The test

#[test]
fn pull_with_bearer_token_auth() {
    let test = "pull_with_bearer_token_auth";
    assert_unprivileged();
    for c in ["docker-registry", "skopeo", "openssl", "gzip", "tar"] {
        if !has(c) {
            skip(
                test,
                &format!("`{c}` not found: install the Debian packages docker-registry skopeo openssl gzip tar"),
            );
            return;
        }
    }
    if let Err(why) = static_busybox() {
        skip(test, &why);
        return;
    }

    let keys = tempdir();
    let signer = Signer::new(keys.path());
    let cert = signer.cert.clone();
    let (token_port, requests) = start_token_server(signer);
    let reg = Registry::start(Auth::Token {
        realm: &format!("http://127.0.0.1:{token_port}/token"),
        service: SERVICE,
        issuer: ISSUER,
        cert: &cert,
    });

    // skopeo does the token dance itself (scope repository:tokentest:pull,push).
    let marker = token();
    let layout = tempdir();
    oci_layout(layout.path(), &marker).unwrap();
    let image = format!("{}/tokentest:v1", reg.host());
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("{USER}:{PASS}"))
        .arg(format!("oci:{}:v1", layout.path().display()))
        .arg(format!("docker://{image}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}\nregistry log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        reg.log()
    );
    assert!(
        requests.lock().unwrap().iter().any(|(good, scopes)| *good
            && scopes
                .iter()
                .any(|s| s.starts_with("repository:tokentest:") && s.contains("push"))),
        "skopeo did not get a push token: {:?}",
        requests.lock().unwrap()
    );

    let env = StoreEnv::default();
    // Without credentials: refused, with one line that says to log in.
    env.nook(&["pull", "-q", "--tls-verify=false", &image])
        .assert_error_line(125, &["nook login", "tokentest"]);

    // A wrong password is refused by `nook login`, and nothing is stored.
    env.nook(&[
        "login",
        "--tls-verify=false",
        "-u",
        USER,
        "-p",
        "wrong",
        &reg.host(),
    ])
    .assert_error_line(125, &[&reg.host()]);
    assert!(
        !env.home.path().join(".config/nook/auth.json").exists(),
        "a refused login must store nothing"
    );

    // The right one, by stdin.
    let mut login = nook();
    login
        .env("HOME", env.home.path())
        .env("NOOK_ROOT", env.home.path().join("store"))
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("REGISTRY_AUTH_FILE")
        .args([
            "login",
            "--tls-verify=false",
            "-u",
            USER,
            "--password-stdin",
        ])
        .arg(reg.host())
        .stdin(Stdio::piped());
    let mut p = spawn(&mut login);
    p.write_stdin(format!("{PASS}\n").as_bytes());
    p.close_stdin();
    let out = p.wait(Duration::from_secs(60));
    assert!(out.success().out().contains("Login Succeeded"), "{out}");

    requests.lock().unwrap().clear();
    let id = env
        .nook(&["pull", "-q", "--tls-verify=false", &image])
        .success()
        .line();
    assert_eq!(id.len(), 64, "pull prints the image ID");
    // nook got its token from the realm, with the credentials, for exactly this pull.
    assert_eq!(
        *requests.lock().unwrap(),
        vec![(true, vec!["repository:tokentest:pull".to_string()])],
        "token requests during the pull"
    );
    let out = env.nook(&["run", "--rm", &image, "cat", "/marker"]);
    assert_eq!(out.success().out(), format!("{marker}\n"), "{out}");

    // A stored wrong password: the pull is refused clearly.
    let other = StoreEnv::default();
    fs::create_dir_all(other.home.path().join(".docker")).unwrap();
    fs::write(
        other.home.path().join(".docker/config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
            reg.host(),
            base64(format!("{USER}:wrong").as_bytes(), false)
        ),
    )
    .unwrap();
    other
        .nook(&["pull", "-q", "--tls-verify=false", &image])
        .assert_error_line(125, &["nook login", "401"]);
}
