//! The user's defaults: `~/.config/nook/config.toml` (`$XDG_CONFIG_HOME` respected;
//! `$NOOK_CONFIG` names another file). Every key is documented in docs/config.md.
//!
//! Data path: the file is read once, before the command line is parsed; each key that
//! has a flag becomes that flag's clap default ([`with_defaults`]), so the order is
//! always flag > its environment variable > this file > nook's built-in default, and
//! `--help` shows the value in force. Keys without a flag (container logs, the MTU of
//! the userspace network, the registries file) are read from [`current`] by the code
//! that needs them. A missing file is the defaults; an unknown key or a malformed file
//! is an error naming the file and the line, so a typo never silently does nothing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use clap::{CommandFactory, FromArgMatches};
use serde::{Deserialize, Deserializer};

use crate::flags::Cli;

/// The environment variable that names the configuration file.
pub const ENV: &str = "NOOK_CONFIG";

/// The whole file. Sections and keys follow podman's containers.conf where one exists.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub storage: StorageConfig,
    pub network: NetworkConfig,
    pub containers: ContainersConfig,
    pub engine: EngineConfig,
    pub registries: RegistriesSection,
    /// The file these values came from (None: no file, built-in defaults).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The image store (`--root`, `$NOOK_ROOT`).
    pub root: Option<PathBuf>,
    /// overlay, fuse, copy or auto (`--storage-driver`, `$NOOK_STORAGE_DRIVER`).
    pub driver: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The network of `nook run` without `--network`: nook[:OPTIONS], none or host.
    pub default: Option<String>,
    /// The MTU of the userspace network when `--network nook` gives no `mtu=`.
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainersConfig {
    /// The format of a container's log file.
    pub log_driver: LogDriver,
    /// Rotate a container's log file past this many bytes (None: never).
    #[serde(deserialize_with = "size_or_unlimited")]
    pub log_size_max: Option<u64>,
}

/// How a detached container's output is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    /// CRI's format (what podman writes): `TIMESTAMP STREAM F|P TEXT` per line.
    #[default]
    K8sFile,
    /// Docker's: one JSON object per line (`log`, `stream`, `time`).
    JsonFile,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// error, warn, info, debug or trace (`--log-level`, `$NOOK_LOG`).
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistriesSection {
    /// The short-name and insecure-registry file (default: registries.conf beside this one).
    pub config: Option<PathBuf>,
}

/// `log_size_max`: bytes as a number or a size such as "10m"; -1 or 0 means no limit.
fn size_or_unlimited<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(i64),
        Text(String),
    }
    let bytes = match Size::deserialize(d)? {
        Size::Bytes(n) => n,
        Size::Text(t) => {
            nook_engine::resources::parse_bytes(&t).map_err(serde::de::Error::custom)?
        }
    };
    Ok((bytes > 0).then_some(bytes as u64))
}

impl Config {
    /// The file nook reads: `$NOOK_CONFIG`, else `$XDG_CONFIG_HOME/nook/config.toml`
    /// (`~/.config/nook/config.toml`).
    pub fn default_path() -> Option<PathBuf> {
        explicit_path().or_else(|| nook_fs::paths::config_dir().map(|d| d.join("config.toml")))
    }

    /// The user's configuration; the defaults when there is no file (a file named by
    /// `$NOOK_CONFIG` must exist).
    pub fn load() -> Result<Config> {
        let Some(path) = Self::default_path() else {
            tracing::debug!("no HOME or XDG_CONFIG_HOME: no config file, built-in defaults");
            return Ok(Config::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                tracing::debug!("reading config file {}", path.display());
                Self::parse(&text, &path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit_path().is_none() => {
                tracing::debug!("no config file at {}: built-in defaults", path.display());
                Ok(Config::default())
            }
            // A directory on the way cannot be searched (HOME is another account's, as
            // `setpriv` or `sudo -u` leave it) or is not one: there is no file of ours
            // to read. Only a file that is there and unreadable is an error.
            Err(e)
                if explicit_path().is_none()
                    && matches!(e.raw_os_error(), Some(libc::EACCES | libc::ENOTDIR))
                    && std::fs::symlink_metadata(&path).is_err() =>
            {
                tracing::debug!(
                    "no config file reachable at {} ({e}): built-in defaults",
                    path.display()
                );
                Ok(Config::default())
            }
            Err(e) => Err(anyhow!(e)).with_context(|| match explicit_path() {
                Some(_) => format!(
                    "reading the config file {} named by ${ENV}: fix the path or unset {ENV}",
                    path.display()
                ),
                None => format!(
                    "reading the config file {}: make it readable, or remove it for the defaults",
                    path.display()
                ),
            }),
        }
    }

    /// Parses and checks the text of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let before = text.get(..s.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(", line {line}, column {column}")
                })
                .unwrap_or_default();
            anyhow!(
                "config file {}{at}: {} (docs/config.md lists every key)",
                path.display(),
                e.message()
                    .trim()
                    .replace("unknown field", "unknown key")
                    .replace('\n', "; ")
            )
        })?;
        config.check().map_err(|e| {
            anyhow!(
                "config file {}: {e} (docs/config.md lists every key)",
                path.display()
            )
        })?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Values TOML accepts but nook would refuse later, refused now with the key's name.
    fn check(&mut self) -> Result<()> {
        if let Some(root) = &self.storage.root {
            let expanded = match root.strip_prefix("~") {
                Ok(rest) => nook_fs::paths::home_dir()
                    .ok_or_else(|| anyhow!("[storage] root starts with ~ but HOME is not set"))?
                    .join(rest),
                Err(_) => root.clone(),
            };
            if !expanded.is_absolute() {
                bail!(
                    "[storage] root = {:?} must be an absolute path (or start with ~/)",
                    root
                );
            }
            self.storage.root = Some(expanded);
        }
        if let Some(d) = &self.storage.driver {
            if !matches!(d.as_str(), "overlay" | "fuse" | "copy" | "auto") {
                bail!("[storage] driver = {d:?}: use overlay, fuse, copy or auto");
            }
        }
        if let Some(n) = &self.network.default {
            let (mode, options) = n.split_once(':').unwrap_or((n, ""));
            let ok = match mode {
                "nook" | "slirp4netns" | "pasta" => true,
                "none" | "host" => options.is_empty(),
                _ => false,
            };
            if !ok {
                bail!("[network] default = {n:?}: use nook[:OPTIONS], none or host");
            }
        }
        if let Some(mtu) = self.network.mtu {
            if !(1280..=65520).contains(&mtu) {
                bail!("[network] mtu = {mtu}: use a value from 1280 to 65520");
            }
        }
        if let Some(l) = &self.engine.log_level {
            if !LEVELS.contains(&l.as_str()) {
                bail!(
                    "[engine] log_level = {l:?}: use one of {}",
                    LEVELS.join(", ")
                );
            }
        }
        Ok(())
    }

    /// (clap argument id, default) for every key that is a flag's default.
    fn flag_defaults(&self) -> Vec<(&'static str, &OsStr)> {
        let mut out = Vec::new();
        if let Some(root) = &self.storage.root {
            out.push(("root", root.as_os_str()));
        }
        if let Some(d) = &self.storage.driver {
            out.push(("storage_driver", OsStr::new(d)));
        }
        if let Some(n) = &self.network.default {
            out.push(("network", OsStr::new(n)));
        }
        if let Some(l) = &self.engine.log_level {
            out.push(("log_level", OsStr::new(l)));
        }
        out
    }
}

const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

fn explicit_path() -> Option<PathBuf> {
    std::env::var_os(ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `cmd` with the config's values as the defaults of the flags they stand for, in every
/// subcommand that has such a flag (arguments are matched by clap id: `root`,
/// `storage_driver`, `network`, `log_level`), so commands added later pick them up.
pub fn with_defaults(cmd: clap::Command, config: &Config) -> clap::Command {
    let defaults = config.flag_defaults();
    if defaults.is_empty() {
        return cmd;
    }
    // clap keeps defaults as 'static strings (without its `string` feature); this runs
    // once per process, so the few bytes leaked are the simplest owner.
    let defaults: Vec<(&'static str, &'static OsStr)> = defaults
        .into_iter()
        .map(|(id, v)| (id, &*Box::leak(v.to_os_string().into_boxed_os_str())))
        .collect();
    set_defaults(cmd, &defaults)
}

fn set_defaults(
    mut cmd: clap::Command,
    defaults: &[(&'static str, &'static OsStr)],
) -> clap::Command {
    for &(id, value) in defaults {
        if cmd.get_arguments().any(|a| a.get_id() == id) {
            cmd = cmd.mut_arg(id, |a| a.default_value(value));
        }
    }
    cmd.mut_subcommands(|sub| set_defaults(sub, defaults))
}

/// main's first step: the configuration, then the command line parsed with its
/// defaults. A configuration that cannot be read is returned as the inner error (the
/// line is parsed without it), so `--help` and `nook completion` still work and the
/// caller decides; nook's internal commands (`__*`) skip the file: their parent read it.
pub fn parse_command_line() -> Result<(Cli, Result<Config>), clap::Error> {
    let internal = std::env::args_os()
        .nth(1)
        // The supervisor builds the container (network MTU...): it needs the same file.
        .is_some_and(|a| {
            nook_engine::helpers::is_internal(&a) && a != nook_engine::helpers::SUPERVISE
        });
    let config = if internal {
        Ok(Config::default())
    } else {
        Config::load()
    };
    let cli = parse_args(std::env::args_os(), config.as_ref().ok())?;
    Ok((cli, config))
}

/// `argv` parsed with the configuration's defaults; `nook run …` through the command
/// tree of `run` alone (see [`crate::flags::RunCli`]).
fn parse_args(
    argv: impl IntoIterator<Item = std::ffi::OsString>,
    config: Option<&Config>,
) -> Result<Cli, clap::Error> {
    let argv: Vec<std::ffi::OsString> = argv.into_iter().collect();
    let with = |cmd: clap::Command| match config {
        Some(c) => with_defaults(cmd, c),
        None => cmd,
    };
    if argv.get(1).is_some_and(|a| a == "run") {
        let mut cmd = with(crate::flags::RunCli::command());
        let mut matches = cmd.try_get_matches_from_mut(&argv)?;
        let run = crate::flags::RunCli::from_arg_matches_mut(&mut matches)
            .map_err(|e| e.format(&mut cmd))?;
        return Ok(run.into());
    }
    let mut cmd = with(Cli::command());
    let mut matches = cmd.try_get_matches_from_mut(&argv)?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))
}

static CURRENT: OnceLock<Config> = OnceLock::new();

/// Makes `config` the one [`current`] returns (main, once, before any command runs).
pub fn set_current(config: Config) {
    let _ = CURRENT.set(config);
}

/// The configuration in force: what main loaded, or the defaults.
pub fn current() -> &'static Config {
    CURRENT.get_or_init(Config::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::flags::Command;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/home/u/.config/nook/config.toml"))
    }

    const FULL: &str = r#"
[storage]
root = "/data/nook"
driver = "fuse"

[network]
default = "none"
mtu = 1500

[containers]
log_driver = "json-file"
log_size_max = "10m"

[engine]
log_level = "debug"

[registries]
config = "/etc/nook/registries.conf"
"#;

    #[test]
    fn every_key_parses() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.storage.root.as_deref(), Some(Path::new("/data/nook")));
        assert_eq!(c.storage.driver.as_deref(), Some("fuse"));
        assert_eq!(c.network.default.as_deref(), Some("none"));
        assert_eq!(c.network.mtu, Some(1500));
        assert_eq!(c.containers.log_driver, LogDriver::JsonFile);
        assert_eq!(c.containers.log_size_max, Some(10 << 20));
        assert_eq!(c.engine.log_level.as_deref(), Some("debug"));
        assert_eq!(
            c.registries.config.as_deref(),
            Some(Path::new("/etc/nook/registries.conf"))
        );
    }

    #[test]
    fn empty_file_and_missing_keys_are_defaults() {
        let c = parse("").unwrap();
        assert_eq!(
            Config {
                path: None,
                ..c.clone()
            },
            Config::default()
        );
        assert_eq!(c.containers.log_driver, LogDriver::K8sFile);
        assert_eq!(c.containers.log_size_max, None);
        let c = parse("[containers]\nlog_size_max = -1\n").unwrap();
        assert_eq!(c.containers.log_size_max, None);
        let c = parse("[containers]\nlog_size_max = 4096\n").unwrap();
        assert_eq!(c.containers.log_size_max, Some(4096));
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let err = parse("[storage]\nroot = \"/x\"\ndriverr = \"fuse\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("driverr"), "{err}");
        assert!(err.contains("/home/u/.config/nook/config.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = parse("[stroage]\n").unwrap_err().to_string();
        assert!(err.contains("stroage") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn malformed_file_gives_the_line() {
        let err = parse("[network]\nmtu = 1500\ndefault = nook\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = parse("[network]\nmtu = \"big\"\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        for (text, key) in [
            ("[storage]\ndriver = \"zfs\"", "[storage] driver"),
            ("[storage]\nroot = \"relative/dir\"", "[storage] root"),
            ("[network]\ndefault = \"bridge\"", "[network] default"),
            ("[network]\ndefault = \"host:mtu=1\"", "[network] default"),
            ("[network]\nmtu = 100", "[network] mtu"),
            ("[engine]\nlog_level = \"loud\"", "[engine] log_level"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = parse("[containers]\nlog_driver = \"journald\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("k8s-file") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn tilde_in_root_is_home() {
        if let Some(home) = nook_fs::paths::home_dir() {
            let c = parse("[storage]\nroot = \"~/store\"").unwrap();
            assert_eq!(c.storage.root, Some(home.join("store")));
        }
    }

    fn cli(config: &Config, args: &[&str]) -> Cli {
        let matches = with_defaults(Cli::command(), config)
            .try_get_matches_from(args)
            .unwrap();
        Cli::from_arg_matches(&matches).unwrap()
    }

    fn run_args(cli: Cli) -> crate::flags::RunArgs {
        match cli.command {
            Command::Run(args) => *args,
            other => panic!("not run: {other:?}"),
        }
    }

    /// flag > config > built-in default. (The environment variables sit between the flag
    /// and the config through clap's `env`, which the process-wide environment of a test
    /// cannot exercise safely; docs/config.md states it.)
    #[test]
    fn precedence_flag_over_config_over_default() {
        if ["NOOK_ROOT", "NOOK_STORAGE_DRIVER", "NOOK_LOG"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            eprintln!("SKIP: NOOK_ROOT, NOOK_STORAGE_DRIVER or NOOK_LOG is set");
            return;
        }
        let config = parse(FULL).unwrap();
        let plain = Config::default();

        let args = run_args(cli(&plain, &["nook", "run", "host", "true"]));
        assert_eq!(args.network, "nook");
        assert_eq!(args.storage_driver, None);

        let c = cli(&config, &["nook", "run", "host", "true"]);
        assert_eq!(c.globals.root.as_deref(), Some(Path::new("/data/nook")));
        let args = run_args(c);
        assert_eq!(args.network, "none");
        assert_eq!(args.storage_driver.as_deref(), Some("fuse"));

        let c = cli(
            &config,
            &[
                "nook",
                "--root",
                "/flag",
                "run",
                "--network",
                "host",
                "--storage-driver",
                "copy",
                "host",
                "true",
            ],
        );
        assert_eq!(c.globals.root.as_deref(), Some(Path::new("/flag")));
        let args = run_args(c);
        assert_eq!(args.network, "host");
        assert_eq!(args.storage_driver.as_deref(), Some("copy"));

        // A global flag's config default reaches subcommands that are not `run` too.
        let c = cli(&config, &["nook", "images"]);
        assert_eq!(c.globals.root.as_deref(), Some(Path::new("/data/nook")));
    }

    #[test]
    fn run_parses_alike_through_the_fast_path() {
        let argv = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let line = [
            "nook",
            "run",
            "--rm",
            "-e",
            "A=1",
            "-v",
            "/a:/b:ro",
            "--network",
            "none",
            "-p",
            "8080:80",
            "--name",
            "x",
            "--root",
            "/s",
            "--log-level",
            "debug",
            "host",
            "sh",
            "-c",
            "echo -n hi",
        ];
        let fast = parse_args(argv(&line), None).unwrap();
        let mut cmd = Cli::command();
        let full =
            Cli::from_arg_matches_mut(&mut cmd.try_get_matches_from_mut(argv(&line)).unwrap())
                .unwrap();
        assert_eq!(format!("{fast:?}"), format!("{full:?}"));
        assert!(parse_args(argv(&["nook", "run", "--nosuch", "host"]), None).is_err());
        let c = parse("[storage]\ndriver = \"fuse\"\n").unwrap();
        let Command::Run(args) = parse_args(argv(&["nook", "run", "host", "true"]), Some(&c))
            .unwrap()
            .command
        else {
            panic!("not a run")
        };
        assert_eq!(args.storage_driver.as_deref(), Some("fuse"));
    }
}
