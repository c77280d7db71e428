//! Image references as podman reads them, and the registries configuration.
//!
//! `alpine` → `docker.io/library/alpine:latest`; `ghcr.io/org/img:tag`;
//! `name@sha256:…`; `localhost:5000/x`. A first component with a `.` or a `:`, or
//! `localhost`, is a registry; otherwise the name is *short* and is tried against the
//! search registries of the configuration, in order.
//!
//! Configuration: `$XDG_CONFIG_HOME/nook/registries.conf` (default
//! `~/.config/nook/registries.conf`), a TOML subset of containers-registries.conf(5):
//!
//! ```toml
//! unqualified-search-registries = ["docker.io", "quay.io"]   # default: ["docker.io"]
//! [[registry]]
//! location = "127.0.0.1:5000"   # host[:port]
//! insecure = true               # no TLS verification; plain http allowed
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;

pub const DOCKER_HUB: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
    #[error("{path}: {why}")]
    Config { path: PathBuf, why: String },
}

/// A fully qualified reference: registry, repository, and a tag or a digest (or both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// What the user typed, before short-name resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Qualified(Reference),
    /// No registry: `repository` (no `library/` added yet), tag, digest.
    Short {
        repository: String,
        tag: Option<String>,
        digest: Option<Digest>,
    },
}

impl Reference {
    /// `registry/repository` (what names a repository across tags).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag or digest a manifest request names.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.into(),
        }
    }

    /// The reference with the digest dropped (the name an image is stored under).
    pub fn tagged_name(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Parses a reference; a tag defaults to `latest` only when there is no digest.
pub fn parse(input: &str) -> Result<Parsed, RefError> {
    let bad = |why| RefError::Invalid(input.to_string(), why);
    if input.is_empty() || input.len() > 4096 {
        return Err(bad("empty or too long"));
    }
    let (rest, digest) = match input.split_once('@') {
        Some((r, d)) => (
            r,
            Some(d.parse::<Digest>().map_err(|_| bad("bad digest after @"))?),
        ),
        None => (input, None),
    };
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
        _ => (rest, None),
    };
    if let Some(t) = &tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(bad(
                "a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
    }
    let tag = tag.or_else(|| digest.is_none().then(|| DEFAULT_TAG.to_string()));
    let (registry, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first.to_string()), path)
        }
        _ => (None, name),
    };
    if let Some(r) = &registry {
        if r.bytes().any(|b| b.is_ascii_uppercase()) && !r.contains(':') {
            // Host names are case-insensitive; the store keeps one spelling.
            return Err(bad("write the registry host in lowercase"));
        }
    }
    if path.is_empty() || !path.split('/').all(valid_path_component) {
        return Err(bad(
            "a repository is lowercase letters, digits and separators (. _ __ -) between /",
        ));
    }
    Ok(match registry {
        Some(registry) => {
            let registry = normalise_registry(&registry);
            let repository = if registry == DOCKER_HUB && !path.contains('/') {
                format!("library/{path}")
            } else {
                path.to_string()
            };
            Parsed::Qualified(Reference {
                registry,
                repository,
                tag,
                digest,
            })
        }
        None => Parsed::Short {
            repository: path.to_string(),
            tag,
            digest,
        },
    })
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The registries configuration (see the module doc).
#[derive(Clone, Debug)]
pub struct RegistriesConfig {
    pub search: Vec<String>,
    pub insecure: Vec<String>,
}

impl Default for RegistriesConfig {
    fn default() -> Self {
        RegistriesConfig {
            search: vec![DOCKER_HUB.to_string()],
            insecure: Vec::new(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ConfigFile {
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

#[derive(serde::Deserialize)]
struct RegistryEntry {
    location: String,
    #[serde(default)]
    insecure: bool,
}

impl RegistriesConfig {
    /// The user's configuration file, whether it exists or not.
    pub fn default_path() -> Option<PathBuf> {
        crate::paths::config_dir().map(|d| d.join("registries.conf"))
    }

    /// Reads the user's configuration; a missing file gives the defaults.
    pub fn load() -> Result<RegistriesConfig, RefError> {
        match Self::default_path() {
            Some(p) => Self::load_from(&p),
            None => Ok(Self::default()),
        }
    }

    pub fn load_from(path: &Path) -> Result<RegistriesConfig, RefError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(RefError::Config {
                    path: path.into(),
                    why: e.to_string(),
                })
            }
        };
        let file: ConfigFile = toml::from_str(&text).map_err(|e| RefError::Config {
            path: path.into(),
            why: format!(
                "{} (see `unqualified-search-registries` and [[registry]] in the docs)",
                e.message()
            ),
        })?;
        Ok(RegistriesConfig {
            search: file
                .unqualified_search_registries
                .unwrap_or_else(|| vec![DOCKER_HUB.into()]),
            insecure: file
                .registry
                .into_iter()
                .filter(|r| r.insecure)
                .map(|r| r.location)
                .collect(),
        })
    }

    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure.iter().any(|r| r == registry)
    }

    /// The fully qualified candidates for `parsed`, in the order to try them.
    pub fn candidates(&self, parsed: &Parsed) -> Vec<Reference> {
        match parsed {
            Parsed::Qualified(r) => vec![r.clone()],
            Parsed::Short {
                repository,
                tag,
                digest,
            } => self
                .search
                .iter()
                .map(|registry| Reference {
                    registry: registry.clone(),
                    repository: if registry == DOCKER_HUB && !repository.contains('/') {
                        format!("library/{repository}")
                    } else {
                        repository.clone()
                    },
                    tag: tag.clone(),
                    digest: digest.clone(),
                })
                .collect(),
        }
    }
}

/// A registry as one name, however it is written: without scheme, trailing slash or
/// `/v1`/`/v2` API suffix, Docker Hub's other host names as `docker.io`. The one
/// normalisation of registry names: references, credentials and `login`/`logout`.
pub fn normalise_registry(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => k.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Reference {
        match parse(s).unwrap() {
            Parsed::Qualified(r) => r,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn podman_normalisation() {
        let cfg = RegistriesConfig::default();
        let c = cfg.candidates(&parse("alpine").unwrap());
        assert_eq!(c[0].to_string(), "docker.io/library/alpine:latest");
        assert_eq!(
            cfg.candidates(&parse("org/img:1").unwrap())[0].to_string(),
            "docker.io/org/img:1"
        );
        assert_eq!(
            q("docker.io/alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(q("ghcr.io/org/img:tag").to_string(), "ghcr.io/org/img:tag");
        let r = q("localhost:5000/x");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost:5000", "x")
        );
        assert_eq!(q("localhost/x").registry, "localhost");
        assert_eq!(q("127.0.0.1:5000/a/b:v1.2").tag.as_deref(), Some("v1.2"));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = q(&format!("quay.io/x/y@{d}"));
        assert_eq!((r.tag.clone(), r.manifest_ref()), (None, d.to_string()));
        let r = q(&format!("quay.io/x/y:t@{d}"));
        assert_eq!(r.tag.as_deref(), Some("t"));
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            "Alpine",
            "a//b",
            "a:",
            "a:-x",
            "x@sha256:1",
            "-a",
            "a/../b",
            "a b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn config_file() {
        let dir = std::env::temp_dir().join(format!("nook-regconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("registries.conf");
        std::fs::write(
            &p,
            "unqualified-search-registries = [\"quay.io\", \"docker.io\"]\n\
             [[registry]]\nlocation = \"127.0.0.1:5000\"\ninsecure = true\n",
        )
        .unwrap();
        let cfg = RegistriesConfig::load_from(&p).unwrap();
        assert!(cfg.is_insecure("127.0.0.1:5000"));
        assert!(!cfg.is_insecure("quay.io"));
        let c = cfg.candidates(&parse("busybox").unwrap());
        assert_eq!(c[0].to_string(), "quay.io/busybox:latest");
        assert_eq!(c[1].to_string(), "docker.io/library/busybox:latest");
        std::fs::write(&p, "unqualified-search-registries = 3").unwrap();
        assert!(RegistriesConfig::load_from(&p).is_err());
        assert!(
            RegistriesConfig::load_from(&dir.join("none"))
                .unwrap()
                .search
                == ["docker.io"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
