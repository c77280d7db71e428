//! The JSON documents of an image: index (manifest list), manifest, image config.
//!
//! OCI image-spec and Docker schema 2 (v2, manifest list) are the same shapes under
//! different media types, so one set of types reads both. Docker schema 1 is refused:
//! registries stopped serving it years ago and it cannot be verified the same way.
//! Platform selection follows containerd's and podman's: os and architecture must
//! match; a variant, when asked for or when the host has one, must match too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// Every manifest type nook reads, for the Accept header.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or config accepted (as containers/image: 4 MiB).
pub const MAX_DOCUMENT: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("unsupported manifest type {0:?} (nook reads OCI and Docker schema 2 images)")]
    Unsupported(String),
    #[error("no image for {wanted} in the index (it has: {available})")]
    NoPlatform { wanted: String, available: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// This machine, as image indexes name it.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        }
    }

    /// `os/arch[/variant]` as `--platform` takes it.
    pub fn parse(s: &str) -> Option<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] => Some(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] => Some(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => None,
        }
        .filter(|p| !p.os.is_empty() && !p.architecture.is_empty())
    }

    fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        match (&self.variant, &candidate.variant) {
            (Some(w), Some(c)) => w == c,
            // arm64 images rarely say v8: an unspecified variant serves any.
            _ => true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A parsed manifest document: either an index to choose from, or an image manifest.
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

/// Reads a manifest or index, telling which by the Content-Type (or, when that is
/// missing or generic, by the document's own `mediaType` and shape).
pub fn parse_document(content_type: &str, bytes: &[u8]) -> Result<Document, ManifestError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed {
            what: "manifest",
            why: e.to_string(),
        })?;
    let declared = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or("");
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let kind = if !declared.is_empty() { declared } else { ct };
    if kind.starts_with(DOCKER_SCHEMA1)
        || value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1)
    {
        return Err(ManifestError::Unsupported(DOCKER_SCHEMA1.into()));
    }
    let is_index = match kind {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // OCI allows mediaType to be absent: tell by the shape.
        _ if value.get("manifests").is_some() => true,
        _ if value.get("config").is_some() => false,
        other => return Err(ManifestError::Unsupported(other.to_string())),
    };
    if is_index {
        let index: Index = serde_json::from_value(value).map_err(|e| ManifestError::Malformed {
            what: "image index",
            why: e.to_string(),
        })?;
        Ok(Document::Index(index))
    } else {
        let m: Manifest = serde_json::from_value(value).map_err(|e| ManifestError::Malformed {
            what: "image manifest",
            why: e.to_string(),
        })?;
        for l in &m.layers {
            layer_compression(&l.media_type)?;
        }
        Ok(Document::Manifest(m))
    }
}

impl Index {
    /// The manifest for `wanted` (attestation manifests, with os "unknown", never match).
    pub fn select(&self, wanted: &Platform) -> Result<&Descriptor, ManifestError> {
        self.manifests
            .iter()
            .filter(|d| d.media_type != OCI_INDEX && d.media_type != DOCKER_LIST)
            .find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
            .ok_or_else(|| ManifestError::NoPlatform {
                wanted: wanted.to_string(),
                available: self
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .filter(|p| p.os != "unknown")
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

pub fn layer_compression(media_type: &str) -> Result<Compression, ManifestError> {
    match media_type {
        OCI_LAYER | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            Ok(Compression::None)
        }
        OCI_LAYER_GZIP
        | DOCKER_LAYER_GZIP
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => Ok(Compression::Gzip),
        OCI_LAYER_ZSTD | "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            Ok(Compression::Zstd)
        }
        // Some tools leave the media type empty; the unpacker sniffs the magic bytes.
        "" => Ok(Compression::Gzip),
        other => Err(ManifestError::Unsupported(format!("layer type {other}"))),
    }
}

/// The image configuration (the parts nook uses; the full JSON is kept in the store).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
}

/// What the image says about how to run it (`config` in the image config).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub typ: String,
    pub diff_ids: Vec<Digest>,
}

/// Parses an image config and checks it agrees with its manifest.
pub fn parse_config(bytes: &[u8], layers: usize) -> Result<ImageConfig, ManifestError> {
    let cfg: ImageConfig = serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed {
        what: "image config",
        why: e.to_string(),
    })?;
    if cfg.rootfs.diff_ids.len() != layers {
        return Err(ManifestError::Malformed {
            what: "image config",
            why: format!(
                "it lists {} layer diff_ids but the manifest has {layers} layers",
                cfg.rootfs.diff_ids.len()
            ),
        });
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn index_selection() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":3,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        );
        let Document::Index(idx) = parse_document("", json.as_bytes()).unwrap() else {
            panic!()
        };
        let amd = Platform::parse("linux/amd64").unwrap();
        assert_eq!(idx.select(&amd).unwrap().size, 2);
        assert_eq!(
            idx.select(&Platform::parse("linux/arm64").unwrap())
                .unwrap()
                .size,
            1
        );
        let err = idx
            .select(&Platform::parse("linux/s390x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/arm64/v8, linux/amd64"), "{err}");
    }

    #[test]
    fn manifests_and_refusals() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":1}},
            "layers":[{{"mediaType":"{OCI_LAYER_ZSTD}","digest":"{D}","size":5}}]}}"#
        );
        assert!(matches!(
            parse_document(OCI_MANIFEST, m.as_bytes()),
            Ok(Document::Manifest(_))
        ));
        assert!(parse_document("", b"{\"schemaVersion\":1,\"fsLayers\":[]}").is_err());
        assert!(parse_document("", b"not json").is_err());
        let bad = m.replace(OCI_LAYER_ZSTD, "application/x-weird");
        assert!(parse_document("", bad.as_bytes()).is_err());
        let cfg = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Cmd":["sh"],"Env":["A=b"]}}"#;
        assert!(parse_config(cfg.as_bytes(), 1).is_err());
        assert_eq!(
            parse_config(cfg.as_bytes(), 0).unwrap().config.cmd.unwrap(),
            ["sh"]
        );
    }
}
