//! Registry credentials and the registry's authentication challenge.
//!
//! Credentials are read, first found wins, from: `$REGISTRY_AUTH_FILE`; nook's own
//! `~/.config/nook/auth.json` (written by `nook login`, mode 0600); `~/.docker/config.json`.
//! All three use the Docker format `{"auths": {"REGISTRY[/REPO]": {"auth":
//! base64("user:password")}}}`; a key naming a repository beats one naming only its
//! registry, and Docker Hub's `https://index.docker.io/v1/` key counts as docker.io.
//! Credential helpers (`credsStore`) are not run.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("no settings directory: set HOME or XDG_CONFIG_HOME")]
    NoHome,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    auth: String,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// nook's own credentials file (what `nook login` writes), honouring `$REGISTRY_AUTH_FILE`.
pub fn login_file() -> Result<PathBuf, AuthError> {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    crate::paths::config_dir()
        .map(|d| d.join("auth.json"))
        .ok_or(AuthError::NoHome)
}

fn sources() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(p) = login_file() {
        v.push(p);
    }
    if let Some(p) = crate::paths::config_dir() {
        v.push(p.join("auth.json"));
    }
    if let Some(h) = crate::paths::home_dir() {
        v.push(h.join(".docker/config.json"));
    }
    v.dedup();
    v
}

use crate::reference::normalise_registry as normalise_key;

fn read_file(path: &Path) -> Result<Option<AuthFile>, AuthError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| AuthError::File {
                path: path.into(),
                why: format!("not a valid auth file: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuthError::File {
            path: path.into(),
            why: e.to_string(),
        }),
    }
}

/// The credentials for `registry`/`repository`, if any source has them.
pub fn lookup(registry: &str, repository: &str) -> Result<Option<Credentials>, AuthError> {
    for path in sources() {
        let Some(file) = read_file(&path)? else {
            continue;
        };
        let full = format!("{registry}/{repository}");
        let best = file
            .auths
            .iter()
            .map(|(k, v)| (normalise_key(k), v))
            .filter(|(k, _)| k == registry || full == *k || full.starts_with(&format!("{k}/")))
            .max_by_key(|(k, _)| k.len());
        if let Some((_, entry)) = best {
            if entry.auth.is_empty() {
                continue;
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(entry.auth.trim())
                .map_err(|e| AuthError::File {
                    path: path.clone(),
                    why: format!("bad auth for {registry}: {e}"),
                })?;
            let raw = String::from_utf8_lossy(&raw);
            let (u, p) = raw.split_once(':').ok_or_else(|| AuthError::File {
                path: path.clone(),
                why: format!("auth for {registry} is not user:password"),
            })?;
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            }));
        }
    }
    Ok(None)
}

/// Stores (or with `None` removes) the credentials for `key` in nook's file, 0600.
/// Returns false when removing found nothing.
pub fn save(key: &str, creds: Option<&Credentials>) -> Result<bool, AuthError> {
    let path = login_file()?;
    let mut file = read_file(&path)?.unwrap_or_default();
    let existed = file.auths.keys().any(|k| normalise_key(k) == key);
    file.auths.retain(|k, _| normalise_key(k) != key);
    if let Some(c) = creds {
        let raw = format!("{}:{}", c.username, c.password);
        file.auths.insert(
            key.to_string(),
            AuthEntry {
                auth: base64::engine::general_purpose::STANDARD.encode(raw),
                other: BTreeMap::new(),
            },
        );
    }
    let err = |e: std::io::Error| AuthError::File {
        path: path.clone(),
        why: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&serde_json::to_vec_pretty(&file).expect("serialises"))
        .map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, &path).map_err(err)?;
    Ok(existed || creds.is_some())
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (or `Basic realm="…"`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_string();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["scope"], "repository:library/alpine:pull,push");
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(
            (b.scheme.as_str(), b.params["realm"].as_str()),
            ("basic", "Registry Realm")
        );
    }

    #[test]
    fn keys() {
        assert_eq!(normalise_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_key("quay.io/org"), "quay.io/org");
        assert_eq!(normalise_key("localhost:5000"), "localhost:5000");
    }
}
