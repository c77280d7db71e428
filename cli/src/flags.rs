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
    /// Image store directory (default: $XDG_DATA_HOME/nook, ~/.local/share/nook)
    #[arg(long, global = true, env = "NOOK_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

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
    /// Show running containers' resource usage (CPU, memory, PIDs, block I/O)
    Stats(StatsArgs),
    /// Freeze every process of running containers (cgroup.freeze)
    Pause(ContainersArgs),
    /// Thaw paused containers
    Unpause(ContainersArgs),
    /// Pull an image from a registry
    Pull(PullArgs),
    /// List images in the store
    Images(ImagesArgs),
    /// Remove images
    Rmi(RmiArgs),
    /// Show an image's record and configuration as JSON
    Inspect(InspectArgs),
    /// Add a name to an image
    Tag(TagArgs),
    /// Create an image from a root filesystem tarball
    Import(ImportArgs),
    /// Load images from a docker-archive or OCI archive/layout (`docker save`, `podman save`)
    Load(LoadArgs),
    /// Save an image to an OCI archive
    Save(SaveArgs),
    /// Store credentials for a registry
    Login(LoginArgs),
    /// Remove stored credentials for a registry
    Logout(LogoutArgs),
    /// Store maintenance
    #[command(subcommand)]
    System(SystemCommand),
    /// Internal: store work inside the user namespace (unpack, copy, remove)
    #[command(name = "__store-helper", hide = true)]
    StoreHelper,
    /// Internal: the FUSE union filesystem server of one container
    #[command(name = "__fuse-server", hide = true)]
    FuseServer,
}

/// How to reach a registry (pull, run --pull, login).
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Verify the registry's TLS certificate (false: also allow plain http)
    #[arg(long = "tls-verify", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tls_verify: Option<bool>,

    /// Credentials to use instead of the stored ones: USER[:PASSWORD]
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,

    /// Platform to pull from a multi-platform image: OS/ARCH[/VARIANT]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// No progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Image reference: NAME[:TAG], NAME@DIGEST, REGISTRY/NAME[:TAG]
    pub image: String,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Show only image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full image IDs
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Remove even when a running container uses the image (it keeps its own copy)
    #[arg(short, long)]
    pub force: bool,
    /// Remove every image
    #[arg(short, long)]
    pub all: bool,
    /// Images: names or IDs
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Images: names or IDs
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// The image: name or ID
    pub image: String,
    /// New names
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A tar of a root filesystem (gzip, zstd or plain), or - for stdin
    pub tarball: PathBuf,
    /// Name for the image (default: none)
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The archive or OCI layout directory (default: stdin)
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file (default: stdout, when it is not a terminal)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Archive format: oci-archive (the default) or docker-archive
    #[arg(long, default_value = "oci-archive")]
    pub format: String,
    /// The image: name or ID
    pub image: String,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[arg(short, long)]
    pub username: Option<String>,
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// Verify the registry's TLS certificate (false: also allow plain http)
    #[arg(long = "tls-verify", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub tls_verify: Option<bool>,
    /// Registry host[:port]
    pub registry: String,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host[:port]
    pub registry: String,
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Verify every blob and layer of the store against its digest
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Remove what is corrupt (images that lose a part are removed too)
    #[arg(long)]
    pub repair: bool,
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

    /// Network: nook[:allow_host_loopback=true,mtu=N,ipv6=false,dns=IP[:PORT]] (a private
    /// network with outbound access, userspace), none (loopback only) or host
    #[arg(
        long = "network",
        alias = "net",
        value_name = "MODE",
        default_value = "nook"
    )]
    pub network: String,

    /// Publish a container port on the host: [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp], ranges
    /// as 8000-8010:8000-8010
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,

    /// Publish every port the image exposes, each on a free host port
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,

    /// Run a tiny init as pid 1 that forwards signals and reaps zombies
    #[arg(long)]
    pub init: bool,

    /// Name of the container (unique among running containers)
    #[arg(long)]
    pub name: Option<String>,

    /// IMAGE is a directory holding a root filesystem, used in place
    #[arg(long)]
    pub rootfs: bool,

    /// Storage driver for the container's root: overlay, fuse or copy (default: the
    /// best this machine supports, see `nook info`)
    #[arg(
        long = "storage-driver",
        value_name = "DRIVER",
        env = "NOOK_STORAGE_DRIVER"
    )]
    pub storage_driver: Option<String>,

    /// For tests and tooling: a read-only layer directory (repeatable, lowest first);
    /// the root is their union with --rootfs DIR as the container's writable layer
    /// (DIR/diff, DIR/work, DIR/merged are created and kept)
    #[arg(long = "layer", value_name = "DIR", hide = true)]
    pub layers: Vec<PathBuf>,

    /// Pull the image: missing (default), always, never, newer (as always)
    #[arg(long, value_name = "POLICY", default_value = "missing", num_args = 0..=1, require_equals = true, default_missing_value = "always")]
    pub pull: String,

    /// Override the image's ENTRYPOINT (an empty string clears it)
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub resources: ResourceArgs,

    /// `host` (built in: the host's programs, read-only), an image name or ID (pulled
    /// when missing), or with --rootfs a directory
    pub image: String,

    /// Command and arguments (default: /bin/sh)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Resource limits (cgroup v2) and the commands that read or act on a container's cgroup

/// Resource limits for `nook run`, spelled as podman spells them.
#[derive(Args, Debug, Default, Clone)]
pub struct ResourceArgs {
    /// Memory limit: a size such as 512m or 2g (a process past it is OOM-killed)
    #[arg(short = 'm', long, value_name = "SIZE", help_heading = "Resources")]
    pub memory: Option<String>,

    /// Memory soft limit (memory.low: protected from reclaim up to this)
    #[arg(long, value_name = "SIZE", help_heading = "Resources")]
    pub memory_reservation: Option<String>,

    /// Memory plus swap limit (at least --memory; -1: unlimited swap)
    #[arg(
        long,
        value_name = "SIZE",
        allow_hyphen_values = true,
        help_heading = "Resources"
    )]
    pub memory_swap: Option<String>,

    /// Number of CPUs the container may use, e.g. 1.5 (a CFS quota per 100 ms period)
    #[arg(long, value_name = "N", help_heading = "Resources")]
    pub cpus: Option<String>,

    /// CFS quota in microseconds per --cpu-period
    #[arg(long, value_name = "USEC", help_heading = "Resources")]
    pub cpu_quota: Option<i64>,

    /// CFS period in microseconds (default 100000)
    #[arg(long, value_name = "USEC", help_heading = "Resources")]
    pub cpu_period: Option<u64>,

    /// CPU shares, relative weight (default 1024; cgroup v2 weight by podman's formula)
    #[arg(short = 'c', long, value_name = "SHARES", help_heading = "Resources")]
    pub cpu_shares: Option<u64>,

    /// CPU weight, cgroup v2's own scale 1..10000 (default 100)
    #[arg(long, value_name = "WEIGHT", help_heading = "Resources")]
    pub cpu_weight: Option<u64>,

    /// CPUs the container may run on, e.g. 0-3,6
    #[arg(long, value_name = "LIST", help_heading = "Resources")]
    pub cpuset_cpus: Option<String>,

    /// Memory nodes the container may allocate from, e.g. 0
    #[arg(long, value_name = "LIST", help_heading = "Resources")]
    pub cpuset_mems: Option<String>,

    /// Most processes and threads the container may have (0 or -1: unlimited)
    #[arg(
        long,
        value_name = "N",
        allow_hyphen_values = true,
        help_heading = "Resources"
    )]
    pub pids_limit: Option<i64>,

    /// Block I/O weight 10..1000
    #[arg(long, value_name = "WEIGHT", help_heading = "Resources")]
    pub blkio_weight: Option<u16>,

    /// Limit reads from a device: DEVICE:RATE, e.g. /dev/sda:10mb
    #[arg(long, value_name = "DEVICE:RATE", help_heading = "Resources")]
    pub device_read_bps: Vec<String>,

    /// Limit writes to a device: DEVICE:RATE, e.g. /dev/sda:10mb
    #[arg(long, value_name = "DEVICE:RATE", help_heading = "Resources")]
    pub device_write_bps: Vec<String>,

    /// Limit read operations per second on a device: DEVICE:IOPS
    #[arg(long, value_name = "DEVICE:IOPS", help_heading = "Resources")]
    pub device_read_iops: Vec<String>,

    /// Limit write operations per second on a device: DEVICE:IOPS
    #[arg(long, value_name = "DEVICE:IOPS", help_heading = "Resources")]
    pub device_write_iops: Vec<String>,

    /// A raw cgroup v2 setting: KEY=VALUE, e.g. memory.high=1g (repeatable)
    #[arg(long, value_name = "KEY=VALUE", help_heading = "Resources")]
    pub cgroup_conf: Vec<String>,

    /// enabled: the container gets its own cgroup where the host delegates one;
    /// disabled: no cgroup (no limits, stats or pause)
    #[arg(
        long,
        value_name = "MODE",
        default_value = "enabled",
        help_heading = "Resources"
    )]
    pub cgroups: String,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one reading and exit
    #[arg(long)]
    pub no_stream: bool,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Seconds between readings when streaming
    #[arg(short, long, default_value_t = 5)]
    pub interval: u64,

    /// Containers (name or ID prefix; default: every running container)
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ContainersArgs {
    /// Containers: names or ID prefixes
    #[arg(required = true)]
    pub containers: Vec<String>,
}
