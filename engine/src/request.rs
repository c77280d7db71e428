//! `RunRequest`: what a user asked `nook run` / `nook create` for, typed and serialisable.
//!
//! The contract between whoever asks for a container (the CLI's flags, a Rust program,
//! a test) and the engine that makes it. A container's record keeps it, so every later
//! start (the detached supervisor, `nook start`, a restart policy) rebuilds the container
//! from what was asked: never from nook's command line, never from the environment of
//! the shell that created it. That is why it holds the environment *as resolved* (`-e
//! KEY` already looked up, `--env-file` already read) and no credentials: a record must
//! not carry a caller's secrets, and a later nook must not have to re-parse old flags.
//!
//! The request is versioned ([`VERSION`]); fields added later get serde defaults, so a
//! record written by an older nook still reads.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::values::{
    BpsThrottle, CgroupConf, CpuList, Cpus, IdMap, IopsThrottle, PortSpec, Seccomp, SecurityOpt,
    Size, Swap,
};

/// The request format this nook writes.
pub const VERSION: u32 = 1;

/// What was asked for one container. Built by the CLI from its flags (the only place
/// flag strings are parsed): sizes, CPU values, device throttles, cgroup settings,
/// security options, ID maps and published ports are typed ([`crate::values`]); the
/// strings still kept (capabilities, user, network) were checked there and are parsed
/// again, deterministically, where the engine uses them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct RunRequest {
    /// The request format ([`VERSION`]).
    pub version: u32,
    /// `host`, an image name or ID, or with `rootfs` a directory.
    pub image: String,
    /// `image` is a directory holding a root filesystem (the writable layer with `layers`).
    pub rootfs: bool,
    /// Read-only layer directories, lowest first (tests and tooling: `--layer`).
    pub layers: Vec<PathBuf>,
    pub pull: PullPolicy,
    /// `--tls-verify` for a pull (credentials are never part of a request).
    pub tls_verify: Option<bool>,
    /// `--platform` for a pull: OS/ARCH[/VARIANT].
    pub platform: Option<String>,
    /// Replaces the image's ENTRYPOINT (an empty string clears it).
    pub entrypoint: Option<String>,
    /// The command as given (empty: the image's).
    pub command: Vec<String>,
    /// `--env-file` and `-e` assignments, resolved, in order: `KEY=VALUE` each. The
    /// image's Env and nook's defaults come first when the process is built.
    pub env: Vec<String>,
    /// The directory relative host paths (volumes, `--rootfs`, seccomp profiles) are
    /// resolved against: where the container was asked for.
    pub cwd: PathBuf,
    pub workdir: Option<PathBuf>,
    /// UID[:GID] or USER[:GROUP].
    pub user: Option<String>,
    /// `-v` bind mounts.
    pub volumes: Vec<Volume>,
    /// `--tmpfs` mounts.
    pub tmpfs: Vec<Tmpfs>,
    pub read_only: bool,
    pub interactive: bool,
    pub tty: bool,
    /// Removed when it exits.
    pub rm: bool,
    /// A tiny init as pid 1.
    pub init: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `--security-opt`, in order (a later one of a kind wins).
    pub security_opt: Vec<SecurityOpt>,
    pub privileged: bool,
    pub hostname: Option<String>,
    /// The container's name (None: one is made up).
    pub name: Option<String>,
    pub userns: Userns,
    /// CONTAINER-ID:HOST-ID:COUNT triples.
    pub uidmap: Vec<IdMap>,
    pub gidmap: Vec<IdMap>,
    /// nook[:OPTIONS], none or host.
    pub network: String,
    /// [HOSTIP:]HOSTPORT:CTRPORT[/PROTO] each.
    pub publish: Vec<PortSpec>,
    pub publish_all: bool,
    /// overlay, fuse or copy (None: the best this machine supports).
    pub storage_driver: Option<String>,
    pub resources: Resources,
    pub restart: RestartPolicy,
    /// The signal `nook stop` sends first.
    pub stop_signal: i32,
    /// Seconds `nook stop` waits before KILL.
    pub stop_timeout: u64,
    pub log_driver: LogDriver,
    /// Rotate the log past this many bytes (None: never).
    pub log_size_max: Option<u64>,
}

impl Default for RunRequest {
    fn default() -> RunRequest {
        RunRequest {
            version: VERSION,
            image: String::new(),
            rootfs: false,
            layers: Vec::new(),
            pull: PullPolicy::Missing,
            tls_verify: None,
            platform: None,
            entrypoint: None,
            command: Vec::new(),
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            workdir: None,
            user: None,
            volumes: Vec::new(),
            tmpfs: Vec::new(),
            read_only: false,
            interactive: false,
            tty: false,
            rm: false,
            init: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            security_opt: Vec::new(),
            privileged: false,
            hostname: None,
            name: None,
            userns: Userns::Auto,
            uidmap: Vec::new(),
            gidmap: Vec::new(),
            network: "nook".into(),
            publish: Vec::new(),
            publish_all: false,
            storage_driver: None,
            resources: Resources::default(),
            restart: RestartPolicy::No,
            stop_signal: libc_sigterm(),
            stop_timeout: 10,
            log_driver: LogDriver::K8sFile,
            log_size_max: None,
        }
    }
}

/// SIGTERM's number on Linux (every architecture nook builds for).
const fn libc_sigterm() -> i32 {
    15
}

/// A bind mount of a host path (`-v HOST:CONTAINER[:ro|rw]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// The host path, absolute (resolved, symlinks and all, at each start).
    pub source: PathBuf,
    /// The path inside the container, absolute.
    pub destination: String,
    pub read_only: bool,
}

/// A fresh tmpfs (`--tmpfs DIR[:OPTS]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Tmpfs {
    /// The path inside the container, absolute.
    pub destination: String,
    /// Mount options as given (size=, mode=, ...).
    pub options: Vec<String>,
}

/// Resource limits, spelled as podman's flags spell them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Resources {
    pub memory: Option<Size>,
    pub memory_reservation: Option<Size>,
    pub memory_swap: Option<Swap>,
    pub cpus: Option<Cpus>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpu_weight: Option<u64>,
    pub cpuset_cpus: Option<CpuList>,
    pub cpuset_mems: Option<CpuList>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
    pub device_read_bps: Vec<BpsThrottle>,
    pub device_write_bps: Vec<BpsThrottle>,
    pub device_read_iops: Vec<IopsThrottle>,
    pub device_write_iops: Vec<IopsThrottle>,
    pub cgroup_conf: Vec<CgroupConf>,
    pub cgroups: CgroupsMode,
}

/// A value no variant accepts: says which are (the caller names the flag and value).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("use one of {accepted}")]
pub struct BadValue {
    pub value: String,
    pub accepted: String,
}

/// Enums of a few spelled names: their names, and parsing from them.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The accepted spellings (aliases left out).
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = BadValue;
            fn from_str(s: &str) -> Result<$name, BadValue> {
                match s {
                    $($text $(| $alias)* => Ok($name::$variant),)+
                    _ => Err(BadValue {
                        value: s.to_string(),
                        accepted: Self::NAMES.join(", "),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// When `run` pulls its image.
    PullPolicy {
        /// Only when the store lacks it (the default).
        #[default]
        Missing = "missing",
        Always = "always",
        Never = "never",
        /// As `always`: a pull that finds the image current transfers no layers.
        Newer = "newer",
    }
);

named_enum!(
    /// The format of a detached container's log.
    LogDriver {
        /// CRI's format (what podman writes): `TIMESTAMP STREAM F|P TEXT` per line.
        #[default]
        K8sFile = "k8s-file",
        /// Docker's: one JSON object per line.
        JsonFile = "json-file",
        /// No log.
        None = "none",
    }
);

named_enum!(
    /// Whether the container gets a cgroup of its own.
    CgroupsMode {
        #[default]
        Enabled = "enabled",
        Disabled = "disabled",
    }
);

named_enum!(
    /// The user namespace's ID map (explicit `--uidmap`/`--gidmap` go with `Auto`).
    Userns {
        /// The account's subordinate IDs, the caller as root (podman rootless's default).
        #[default]
        Auto = "auto" | "",
        /// The caller's own UID and GID inside.
        KeepId = "keep-id",
    }
);

/// `--restart`: whether the supervisor starts the container again after it exits.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure(Option<u32>),
    Always,
}

impl RestartPolicy {
    pub const NAMES: &'static [&'static str] =
        &["no", "on-failure[:N]", "always", "unless-stopped"];

    /// Whether a container that ended with `code` after `restarts` restarts again.
    pub fn restarts_after(self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure(max) => code != 0 && max.is_none_or(|m| restarts < m),
        }
    }

    pub fn name(self) -> String {
        match self {
            RestartPolicy::No => "no".into(),
            RestartPolicy::Always => "always".into(),
            RestartPolicy::OnFailure(None) => "on-failure".into(),
            RestartPolicy::OnFailure(Some(n)) => format!("on-failure:{n}"),
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = BadValue;
    fn from_str(s: &str) -> Result<RestartPolicy, BadValue> {
        match s.split_once(':') {
            None if s == "no" || s.is_empty() => Ok(RestartPolicy::No),
            None if s == "always" || s == "unless-stopped" => Ok(RestartPolicy::Always),
            None if s == "on-failure" => Ok(RestartPolicy::OnFailure(None)),
            Some(("on-failure", n)) if n.parse::<u32>().is_ok() => {
                Ok(RestartPolicy::OnFailure(n.parse().ok()))
            }
            _ => Err(BadValue {
                value: s.to_string(),
                accepted: RestartPolicy::NAMES.join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_as_podman_spells_them() {
        assert_eq!("no".parse(), Ok(RestartPolicy::No));
        assert_eq!(
            "on-failure:3".parse(),
            Ok(RestartPolicy::OnFailure(Some(3)))
        );
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        let p = RestartPolicy::OnFailure(Some(2));
        assert!(p.restarts_after(1, 1));
        assert!(!p.restarts_after(1, 2));
        assert!(!p.restarts_after(0, 0));
        assert!(RestartPolicy::Always.restarts_after(0, 100));
    }

    #[test]
    fn a_bad_name_lists_the_accepted_ones() {
        let e = "bogus".parse::<PullPolicy>().unwrap_err();
        assert_eq!(e.value, "bogus");
        assert_eq!(e.to_string(), "use one of missing, always, never, newer");
        assert_eq!("".parse::<Userns>(), Ok(Userns::Auto));
    }

    #[test]
    fn a_request_round_trips_and_older_ones_read() {
        let req = RunRequest {
            image: "alpine".into(),
            env: vec!["A=1".into()],
            restart: RestartPolicy::OnFailure(Some(2)),
            log_driver: LogDriver::JsonFile,
            ..RunRequest::default()
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<RunRequest>(&text).unwrap(), req);
        // A field this version does not know yet, or one it lacks: both read.
        let old: RunRequest =
            serde_json::from_str(r#"{"version":1,"image":"x","future":true}"#).unwrap();
        assert_eq!(old.image, "x");
        assert_eq!(old.stop_timeout, 10);
    }

    /// A request as the record format 2 of early issue 16 wrote it: security options,
    /// sizes, CPU values, throttles and cgroup settings as the flags' text. It reads,
    /// typed, and is written back in the typed form, which reads again.
    #[test]
    fn a_request_with_the_flags_text_of_an_earlier_v2_record_reads_typed() {
        let v2 = r#"{
            "version": 1, "image": "host", "command": ["true"],
            "security_opt": ["no-new-privileges=false", "seccomp:unconfined"],
            "uidmap": ["0:1:65536"], "gidmap": ["0:1:65536"], "publish": ["8080:80"],
            "resources": {
                "memory": "512m", "memory_reservation": "64MiB", "memory_swap": "-1",
                "cpus": "1.5", "cpu_quota": null, "cpu_period": null,
                "cpuset_cpus": "0-3,6", "cpuset_mems": "",
                "device_read_bps": ["/dev/sda:10mb"], "device_write_bps": [],
                "device_read_iops": ["/dev/sda:1000"], "device_write_iops": [],
                "cgroup_conf": ["memory.high=1G"], "cgroups": "enabled"
            }
        }"#;
        let req: RunRequest = serde_json::from_str(v2).unwrap();
        assert_eq!(
            req.security_opt,
            [
                SecurityOpt::NoNewPrivileges(false),
                SecurityOpt::Seccomp(Seccomp::Unconfined)
            ]
        );
        assert_eq!(req.uidmap[0].0.count, 65536);
        assert_eq!(req.publish[0].mappings()[0].ctr_port, 80);
        let r = &req.resources;
        assert_eq!(r.memory.unwrap().bytes(), 512 << 20);
        assert_eq!(r.memory_reservation.unwrap().bytes(), 64 << 20);
        assert_eq!(r.memory_swap, Some(Swap::Unlimited));
        assert_eq!(r.cpus.unwrap().quota_period(), (150_000, 100_000));
        assert_eq!(r.cpuset_cpus.as_ref().unwrap().as_str(), "0-3,6");
        assert_eq!(r.device_read_bps[0].0.rate, 10 << 20);
        assert_eq!(r.device_read_iops[0].0.rate, 1000);
        assert_eq!(r.cgroup_conf[0].value, "1G");
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.contains(r#""memory":536870912"#), "{text}");
        assert_eq!(serde_json::from_str::<RunRequest>(&text).unwrap(), req);
        // A value no nook accepted does not read (the record is listed as broken).
        let bad = v2.replace(r#""cpus": "1.5""#, r#""cpus": "lots""#);
        assert!(serde_json::from_str::<RunRequest>(&bad).is_err());
    }
}
