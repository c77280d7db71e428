//! Every command-line flag of `nook`, in one place (clap derive).
//!
//! Names and meanings follow podman's, so that muscle memory and scripts carry over.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "nook",
    version,
    about = "Rootless containers: no root, no daemon",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command in a new container
    Run(Box<RunArgs>),
    /// Show what this machine offers nook, and how to fix what is missing
    Info(InfoArgs),
    /// Run a command in a user namespace with your container ID map (as podman unshare)
    Unshare(UnshareArgs),
}

#[derive(Args, Debug)]
pub struct UnshareArgs {
    /// Command and arguments (default: $SHELL, else /bin/sh)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Remove the container's state when it exits (it always is, until `nook rm` exists)
    #[arg(long)]
    pub rm: bool,

    /// Set an environment variable (KEY=VALUE, or KEY to copy nook's own)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Read environment variables from a file (KEY=VALUE lines, # comments)
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Working directory inside the container (created if missing)
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// Bind mount a host path: HOST:CONTAINER[:ro|rw]
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:OPTS]")]
    pub volumes: Vec<String>,

    /// Mount a fresh tmpfs: CONTAINER-DIR[:size=..,mode=..]
    #[arg(long = "tmpfs", value_name = "DIR[:OPTS]")]
    pub tmpfs: Vec<String>,

    /// Make the root filesystem read-only (/tmp, /run, /var/tmp stay writable)
    #[arg(long)]
    pub read_only: bool,

    /// Keep stdin attached (without it the container reads /dev/null)
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Allocate a terminal for the container
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Run as UID[:GID] or USER[:GROUP] (names from the container's /etc/passwd)
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Add a capability (e.g. NET_RAW, or ALL)
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,

    /// Drop a capability (e.g. CHOWN, or ALL)
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,

    /// Security options: no-new-privileges[=true|false] (on by default)
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,

    /// Container hostname (default: the short container ID)
    #[arg(long)]
    pub hostname: Option<String>,

    /// User namespace mode: keep-id keeps your uid and gid inside
    #[arg(long, value_name = "MODE")]
    pub userns: Option<String>,

    /// Map container IDs: CONTAINER-ID:HOST-ID:COUNT, HOST-ID counted as in podman
    /// rootless (0 is you, 1.. your /etc/subuid range); repeatable
    #[arg(long, value_name = "TRIPLE")]
    pub uidmap: Vec<String>,

    /// Map container group IDs, as --uidmap with /etc/subgid
    #[arg(long, value_name = "TRIPLE")]
    pub gidmap: Vec<String>,

    /// Network: none (isolated, loopback only; the default for now) or host
    #[arg(
        long = "network",
        alias = "net",
        value_name = "MODE",
        default_value = "none"
    )]
    pub network: String,

    /// Run a tiny init as pid 1 that forwards signals and reaps zombies
    #[arg(long)]
    pub init: bool,

    /// Name of the container (unique among running containers)
    #[arg(long)]
    pub name: Option<String>,

    /// IMAGE is a directory holding a root filesystem, used in place
    #[arg(long)]
    pub rootfs: bool,

    /// `host` (built in: the host's programs, read-only), or with --rootfs a directory
    pub image: String,

    /// Command and arguments (default: /bin/sh)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}
