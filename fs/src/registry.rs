//! A registry client for the OCI distribution spec (pull side).
//!
//! `GET /v2/NAME/manifests/REF` and `GET /v2/NAME/blobs/DIGEST`, with the token dance of
//! the Docker token spec: a 401 carries `WWW-Authenticate: Bearer realm,service,scope`;
//! nook asks the realm for a token (with Basic credentials when it has some) and retries
//! with `Authorization: Bearer`. Registries that answer `Basic` get the credentials
//! directly.
//!
//! Transport: ureq (blocking, rustls; see fs/Cargo.toml for why). TLS is verified against
//! the system's CA store. For a registry the user calls insecure (`--tls-verify=false`,
//! or `insecure = true` in registries.conf) nook does what containers/image does: HTTPS
//! without verification first, and plain HTTP when the server does not speak TLS. There
//! is no silent exception for localhost: podman has none either, so `127.0.0.1:5000`
//! needs `--tls-verify=false` as it does with podman.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::{self, Credentials};
use crate::digest::Digest;
use crate::manifest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}: {why}; check the name and the network{hint}")]
    Unreachable {
        registry: String,
        why: String,
        hint: &'static str,
    },
    #[error("registry {registry}: access to {repository} denied ({why}); if it is private, run `nook login {registry}` first")]
    Denied {
        registry: String,
        repository: String,
        why: String,
    },
    #[error("{what} not found in {registry} (HTTP 404): check the name and tag")]
    NotFound { registry: String, what: String },
    #[error("registry {registry} answered HTTP {status} for {what}: {body}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error("registry {registry}: {what}: {why}")]
    Protocol {
        registry: String,
        what: String,
        why: String,
    },
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// How to talk to one registry.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// No TLS verification, and plain HTTP when the server has no TLS.
    pub insecure: bool,
    /// Use these instead of the stored credentials (`nook login`, `--creds`).
    pub credentials: Option<Credentials>,
}

pub struct Client {
    agent: ureq::Agent,
    registry: String,
    repository: String,
    /// `https://host` or `http://host`, decided on the first request.
    base: Mutex<Option<String>>,
    insecure: bool,
    credentials: Option<Credentials>,
    /// The `Authorization` header value that worked (bearer token or basic).
    authorization: Mutex<Option<String>>,
}

/// A response body being streamed, with its length when the server sent one.
pub struct Body {
    pub reader: Box<dyn Read + Send>,
    pub length: Option<u64>,
    pub content_type: String,
}

fn host_of(registry: &str) -> &str {
    if registry == crate::reference::DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

impl Client {
    pub fn new(
        registry: &str,
        repository: &str,
        opts: ClientOptions,
    ) -> Result<Client, RegistryError> {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            // A stalled transfer (a dropped connection the kernel has not noticed) fails
            // instead of hanging the pull.
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("nook/", env!("CARGO_PKG_VERSION")))
            .redirects(8);
        if opts.insecure {
            builder = builder.tls_config(Arc::new(no_verify_tls()));
        }
        let credentials = match opts.credentials {
            Some(c) => Some(c),
            None => auth::lookup(registry, repository)?,
        };
        Ok(Client {
            agent: builder.build(),
            registry: registry.to_string(),
            repository: repository.to_string(),
            base: Mutex::new(None),
            insecure: opts.insecure,
            credentials,
            authorization: Mutex::new(None),
        })
    }

    fn unreachable(&self, why: String) -> RegistryError {
        let hint = if self.insecure {
            ""
        } else {
            " (a registry without a valid TLS certificate, or plain HTTP, needs --tls-verify=false or `insecure = true` for it in ~/.config/nook/registries.conf)"
        };
        RegistryError::Unreachable {
            registry: self.registry.clone(),
            why,
            hint,
        }
    }

    /// The scheme and host to use, probing HTTPS then (insecure only) HTTP.
    fn base(&self) -> Result<String, RegistryError> {
        if let Some(b) = self.base.lock().expect("not poisoned").clone() {
            return Ok(b);
        }
        let host = host_of(&self.registry);
        let schemes: &[&str] = if self.insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last = String::new();
        for scheme in schemes {
            let url = format!("{scheme}://{host}/v2/");
            match self.agent.get(&url).call() {
                Ok(_) | Err(ureq::Error::Status(_, _)) => {
                    let b = format!("{scheme}://{host}");
                    *self.base.lock().expect("not poisoned") = Some(b.clone());
                    return Ok(b);
                }
                Err(ureq::Error::Transport(t)) => last = transport_why(&t),
            }
        }
        Err(self.unreachable(last))
    }

    /// GET `path` under /v2/, authenticating on a 401 challenge, once.
    fn get(
        &self,
        path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<ureq::Response, RegistryError> {
        let url = format!("{}/v2/{path}", self.base()?);
        let mut retried_auth = false;
        loop {
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(h) = self.authorization.lock().expect("not poisoned").clone() {
                req = req.set("Authorization", &h);
            }
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !retried_auth => {
                    retried_auth = true;
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
                    let header = self.authenticate(&challenge)?;
                    *self.authorization.lock().expect("not poisoned") = Some(header);
                }
                Err(ureq::Error::Status(code @ (401 | 403), resp)) => {
                    return Err(RegistryError::Denied {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                        why: format!("HTTP {code}: {}", error_body(resp)),
                    })
                }
                Err(ureq::Error::Status(404, _)) => {
                    return Err(RegistryError::NotFound {
                        registry: self.registry.clone(),
                        what: what.to_string(),
                    })
                }
                Err(ureq::Error::Status(status, resp)) => {
                    return Err(RegistryError::Status {
                        registry: self.registry.clone(),
                        what: what.to_string(),
                        status,
                        body: error_body(resp),
                    })
                }
                Err(ureq::Error::Transport(t)) => return Err(self.unreachable(transport_why(&t))),
            }
        }
    }

    /// The Authorization header value for a 401 challenge.
    fn authenticate(&self, challenge: &str) -> Result<String, RegistryError> {
        let denied = |why: String| RegistryError::Denied {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            why,
        };
        let c = auth::parse_challenge(challenge)
            .ok_or_else(|| denied("no usable WWW-Authenticate challenge".into()))?;
        match c.scheme.as_str() {
            "basic" => match &self.credentials {
                Some(cr) => Ok(cr.basic_header()),
                None => Err(denied("the registry wants a user name and password".into())),
            },
            "bearer" => {
                let realm = c
                    .params
                    .get("realm")
                    .ok_or_else(|| denied("bearer challenge without realm".into()))?;
                let mut req = self.agent.get(realm);
                if let Some(s) = c.params.get("service") {
                    req = req.query("service", s);
                }
                // `nook login` has no repository: ask for no scope, not `repository::pull`.
                if !self.repository.is_empty() {
                    let scope = format!("repository:{}:pull", self.repository);
                    req = req.query("scope", &scope);
                }
                if let Some(cr) = &self.credentials {
                    req = req.set("Authorization", &cr.basic_header());
                }
                let resp = match req.call() {
                    Ok(r) => r,
                    Err(ureq::Error::Status(code, r)) => {
                        return Err(denied(format!(
                            "the token server {realm} answered HTTP {code}: {}",
                            error_body(r)
                        )))
                    }
                    Err(ureq::Error::Transport(t)) => {
                        return Err(self
                            .unreachable(format!("token server {realm}: {}", transport_why(&t))))
                    }
                };
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let mut body = Vec::new();
                resp.into_reader()
                    .take(1 << 20)
                    .read_to_end(&mut body)
                    .map_err(|e| denied(format!("reading the token server's answer: {e}")))?;
                let t: Token = serde_json::from_slice(&body)
                    .map_err(|e| denied(format!("unreadable answer from the token server: {e}")))?;
                let token = t.token.or(t.access_token).filter(|t| !t.is_empty());
                Ok(format!(
                    "Bearer {}",
                    token.ok_or_else(|| denied("the token server sent no token".into()))?
                ))
            }
            other => Err(denied(format!(
                "unsupported authentication scheme {other:?}"
            ))),
        }
    }

    /// Checks that the registry accepts our credentials (for `nook login`).
    pub fn check_login(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base()?);
        let first = self.agent.get(&url).call();
        let challenge = match first {
            Ok(_) => return Ok(()),
            Err(ureq::Error::Status(401, r)) => {
                r.header("www-authenticate").unwrap_or("").to_string()
            }
            Err(ureq::Error::Status(code, r)) => {
                return Err(RegistryError::Status {
                    registry: self.registry.clone(),
                    what: "/v2/".into(),
                    status: code,
                    body: error_body(r),
                })
            }
            Err(ureq::Error::Transport(t)) => return Err(self.unreachable(transport_why(&t))),
        };
        let header = self.authenticate(&challenge)?;
        match self.agent.get(&url).set("Authorization", &header).call() {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, r)) => Err(RegistryError::Denied {
                registry: self.registry.clone(),
                repository: String::new(),
                why: format!("HTTP {code}: {}", error_body(r)),
            }),
            Err(ureq::Error::Transport(t)) => Err(self.unreachable(transport_why(&t))),
        }
    }

    /// A manifest or index by tag or digest: (media type, bytes, digest of the bytes).
    /// When `reference` is a digest, the bytes are checked against it.
    pub fn manifest(&self, reference: &str) -> Result<(String, Vec<u8>, Digest), RegistryError> {
        let what = format!("manifest {}:{reference}", self.repository);
        let resp = self.get(
            &format!("{}/manifests/{reference}", self.repository),
            Some(manifest::ACCEPT),
            &what,
        )?;
        let ct = resp.content_type().to_string();
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(manifest::MAX_DOCUMENT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.unreachable(format!("reading {what}: {e}")))?;
        if bytes.len() as u64 > manifest::MAX_DOCUMENT {
            return Err(RegistryError::Protocol {
                registry: self.registry.clone(),
                what,
                why: format!("larger than {} bytes", manifest::MAX_DOCUMENT),
            });
        }
        let digest = Digest::of(&bytes);
        if let Ok(expected) = reference.parse::<Digest>() {
            if expected != digest {
                return Err(RegistryError::Protocol {
                    registry: self.registry.clone(),
                    what,
                    why: format!("content has digest {digest}, not the {expected} asked for"),
                });
            }
        }
        Ok((ct, bytes, digest))
    }

    /// A blob's body, streaming.
    pub fn blob(&self, digest: &Digest) -> Result<Body, RegistryError> {
        let what = format!("blob {digest} of {}", self.repository);
        let resp = self.get(&format!("{}/blobs/{digest}", self.repository), None, &what)?;
        let length = resp.header("content-length").and_then(|l| l.parse().ok());
        let content_type = resp.content_type().to_string();
        Ok(Body {
            reader: Box::new(resp.into_reader()),
            length,
            content_type,
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }
}

fn transport_why(t: &ureq::Transport) -> String {
    // ureq's message repeats the URL and kind; the innermost source says what happened.
    let mut why = t.to_string();
    let mut src = std::error::Error::source(t);
    while let Some(s) = src {
        why = s.to_string();
        src = s.source();
    }
    why
}

fn error_body(resp: ureq::Response) -> String {
    let mut s = String::new();
    let _ = resp.into_reader().take(512).read_to_string(&mut s);
    // Registries answer {"errors":[{"code":..,"message":..}]}: show the messages.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&s) {
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
            let msgs: Vec<String> = errs
                .iter()
                .filter_map(|e| {
                    Some(format!(
                        "{}: {}",
                        e.get("code")?.as_str()?,
                        e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                    ))
                })
                .collect();
            if !msgs.is_empty() {
                return msgs.join("; ");
            }
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A TLS configuration that accepts any certificate (for registries named insecure).
/// Signatures are still checked, so the handshake itself is sound; only the identity
/// of the server is not.
fn no_verify_tls() -> rustls::ClientConfig {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth()
}
