//! Every command-line flag of `nook`, in one place (clap derive).
//!
//! Names and meanings follow podman's, so that muscle memory and scripts carry over.

use std::path::PathBuf;

use crate::logging::LogLevel;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nook_engine::request::{
    BpsThrottle, CgroupConf, CgroupsMode, CpuList, Cpus, IdMap, IopsThrottle, LogDriver, PortSpec,
    PullPolicy, RestartPolicy, SecurityOpt, Size, Swap, Userns,
};

/// A flag whose value is one of `names`, parsed into `T` (clap lists the names in
/// `--help` and in the error for any other value).
fn one_of<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    PossibleValuesParser::new(names.iter().copied())
        .map(|s| s.parse::<T>().expect("clap accepted one of the names"))
}

#[derive(Parser, Debug)]
#[command(
    name = "nook",
    version,
    about = "Rootless containers: no root, no daemon",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,

    #[command(subcommand)]
    pub command: Command,
}

/// The flags every subcommand takes, in [`Cli`] and [`RunCli`] alike.
#[derive(Args, Debug)]
pub struct Globals {
    /// Image store directory (default: $XDG_DATA_HOME/nook, ~/.local/share/nook)
    #[arg(long, global = true, env = "NOOK_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Diagnostics on stderr from this level up (default: warn)
    #[arg(
        long,
        global = true,
        env = "NOOK_LOG",
        value_enum,
        value_name = "LEVEL"
    )]
    pub log_level: Option<LogLevel>,
}

/// `nook run` alone, for the fast path of main: clap builds every subcommand of [`Cli`]
/// before it parses (about 0.3 ms for this command line, on every container start), and
/// `run` needs only its own. Both take [`Globals`]; a unit test in config.rs checks
/// that both parse a run alike.
#[derive(Parser, Debug)]
#[command(name = "nook", version, propagate_version = true)]
pub struct RunCli {
    #[command(flatten)]
    pub globals: Globals,

    #[command(subcommand)]
    pub command: RunOnly,
}

#[derive(Subcommand, Debug)]
pub enum RunOnly {
    /// Run a command in a new container
    Run(Box<RunArgs>),
}

impl From<RunCli> for Cli {
    fn from(r: RunCli) -> Cli {
        let RunOnly::Run(args) = r.command;
        Cli {
            globals: r.globals,
            command: Command::Run(args),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command in a new container
    Run(Box<RunArgs>),
    /// Create a container without starting it (`nook start` starts it)
    Create(Box<RunArgs>),
    /// Start created or exited containers in the background
    Start(StartArgs),
    /// List containers
    Ps(PsArgs),
    /// Print a container's output
    Logs(LogsArgs),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// Attach to a detached container's output (and input, with -i)
    Attach(AttachArgs),
    /// Stop containers: the stop signal, then KILL after a timeout
    Stop(StopArgs),
    /// Send a signal to containers
    Kill(KillArgs),
    /// Stop and start containers again
    Restart(StopArgs),
    /// Remove containers
    Rm(RmArgs),
    /// Wait for containers to exit and print their exit codes
    Wait(CtrsArgs),
    /// Show a container's processes
    Top(TopArgs),
    /// Copy files between a container and the host: CTR:PATH DEST, or SRC CTR:PATH
    Cp(CpArgs),
    /// Show a container's published ports
    Port(CtrArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// List a container's changes to its image's files (A added, C changed, D deleted)
    Diff(CtrArgs),
    /// Make a new image from a container's changes
    Commit(CommitArgs),
    /// Container maintenance (prune)
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Internal: the supervisor of one detached container
    #[command(name = nook_engine::helpers::SUPERVISE, hide = true)]
    Supervise(SuperviseArgs),
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
    #[command(name = nook_engine::helpers::STORE_HELPER, hide = true)]
    StoreHelper,
    /// Internal: the FUSE union filesystem server of one container
    #[command(name = nook_engine::helpers::FUSE_SERVER, hide = true)]
    FuseServer,
    /// Internal: run a command in the running container whose first process is PID
    #[command(name = "__exec-pid", hide = true)]
    ExecPid(ExecPidArgs),
    /// Print a shell completion script (bash, zsh, fish, ...); e.g. for bash:
    /// `nook completion bash > ~/.local/share/bash-completion/completions/nook`
    Completion(CompletionArgs),
    /// Internal: write nook's man pages (one per command) into a directory
    #[command(name = "__man", hide = true)]
    Man(ManArgs),
    /// Act as an OCI runtime (runc's command line: create, start, state, kill, delete,
    /// run, exec, ps, pause, resume, features, spec); also as a `nook-runtime` link
    #[command(disable_help_flag = true)]
    Oci(crate::oci::OciPassthrough),
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
    /// Output format: table (default), json, `table {{.Repository}}\t{{.Tag}}` or a
    /// template such as `{{.ID}} {{.Size}}` (fields: Repository, Tag, ID, Created,
    /// CreatedAt, Size, Digest, Names)
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    pub format: String,
    /// Show only image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full image IDs
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory for the pages (created if missing)
    pub dir: PathBuf,
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
    /// Format: json (default) or a template such as `{{.State.Status}}` (one line each)
    #[arg(short, long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Containers or images: names or IDs
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
    /// Verify every blob and layer of the store against its digest; report what no image uses
    Check(CheckArgs),
    /// Remove stopped containers, images no name or container refers to, and blobs and
    /// layers no image uses
    Prune(PruneArgs),
    /// Show the disk space images and containers use, and what can be reclaimed
    Df(DfArgs),
    /// Remove every container, image and the whole store and runtime state
    Reset(PruneArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Remove what is corrupt (images that lose a part are removed too), and blobs and
    /// layers no image uses
    #[arg(long)]
    pub repair: bool,
}

#[derive(Args, Debug)]
pub struct DfArgs {
    /// Go template for each row (fields: .Type .Total .Active .Size .Reclaimable), or json
    #[arg(long)]
    pub format: Option<String>,
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
    /// Remove the container when it exits
    #[arg(long, overrides_with = "rm")]
    pub rm: bool,

    /// Run in the background: print the container ID and return (`nook logs`, `attach`)
    #[arg(short = 'd', long)]
    pub detach: bool,

    /// Restart policy, carried out by the container's supervisor: no, on-failure[:N],
    /// always (a container stopped with `nook stop`/`kill` is not restarted)
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<RestartPolicy>,

    /// Signal `nook stop` sends first (default TERM)
    #[arg(long = "stop-signal", value_name = "SIGNAL", value_parser = crate::values::parse_signal)]
    pub stop_signal: Option<i32>,

    /// Seconds `nook stop` waits before KILL (default 10)
    #[arg(long = "stop-timeout", value_name = "SECONDS")]
    pub stop_timeout: Option<u64>,

    /// Log format of a detached container: k8s-file (default), json-file or none
    #[arg(long = "log-driver", value_name = "DRIVER", value_parser = one_of::<LogDriver>(LogDriver::NAMES))]
    pub log_driver: Option<LogDriver>,

    /// Log option: max-size=SIZE (rotated when it grows past SIZE; one old file kept)
    #[arg(long = "log-opt", value_name = "OPT")]
    pub log_opt: Vec<String>,

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
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:OPTS]", value_parser = crate::values::parse_volume)]
    pub volumes: Vec<nook_engine::request::Volume>,

    /// Mount a fresh tmpfs: CONTAINER-DIR[:size=..,mode=..]
    #[arg(long = "tmpfs", value_name = "DIR[:OPTS]", value_parser = crate::values::parse_tmpfs)]
    pub tmpfs: Vec<nook_engine::request::Tmpfs>,

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
    #[arg(long = "cap-add", value_name = "CAP", value_parser = crate::values::parse_capability)]
    pub cap_add: Vec<String>,

    /// Drop a capability (e.g. CHOWN, or ALL)
    #[arg(long = "cap-drop", value_name = "CAP", value_parser = crate::values::parse_capability)]
    pub cap_drop: Vec<String>,

    /// Security options: no-new-privileges[=true|false] (on by default);
    /// seccomp=unconfined (no seccomp filter) or seccomp=PROFILE.json (a profile in
    /// podman's JSON format instead of the default, podman's; see `nook info`)
    #[arg(long = "security-opt", value_name = "OPT", value_parser = crate::values::parse_security_opt)]
    pub security_opt: Vec<SecurityOpt>,

    /// Give the container every capability of its user namespace, no seccomp filter
    /// (unless seccomp=FILE), no masked or read-only /proc paths, a writable /sys and
    /// cgroup, and the host's devices that you can open. Rootless, as podman's: nothing
    /// you could not do on the host yourself
    #[arg(long)]
    pub privileged: bool,

    /// Container hostname (default: the short container ID)
    #[arg(long)]
    pub hostname: Option<String>,

    /// User namespace mode: keep-id keeps your uid and gid inside
    #[arg(long, value_name = "MODE")]
    pub userns: Option<Userns>,

    /// Map container IDs: CONTAINER-ID:HOST-ID:COUNT, HOST-ID counted as in podman
    /// rootless (0 is you, 1.. your /etc/subuid range); repeatable
    #[arg(long, value_name = "TRIPLE", value_parser = crate::values::parse_typed::<IdMap>)]
    pub uidmap: Vec<IdMap>,

    /// Map container group IDs, as --uidmap with /etc/subgid
    #[arg(long, value_name = "TRIPLE", value_parser = crate::values::parse_typed::<IdMap>)]
    pub gidmap: Vec<IdMap>,

    /// Network: nook[:allow_host_loopback=true,mtu=N,ipv6=false,dns=IP[:PORT]] (a private
    /// network with outbound access, userspace), none (loopback only) or host
    #[arg(
        long = "network",
        alias = "net",
        value_name = "MODE",
        default_value = "nook",
        value_parser = crate::values::parse_network
    )]
    pub network: String,

    /// Publish a container port on the host: [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp], ranges
    /// as 8000-8010:8000-8010; without HOSTIP, on every IPv4 and IPv6 address
    #[arg(short = 'p', long = "publish", value_name = "SPEC", value_parser = crate::values::parse_typed::<PortSpec>)]
    pub publish: Vec<PortSpec>,

    /// Publish every port the image exposes, each on a free host port
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,

    /// Run a tiny init as pid 1 that forwards signals and reaps zombies
    #[arg(long)]
    pub init: bool,

    /// Pass descriptors 3..3+N of this command to the container (no others cross)
    #[arg(long = "preserve-fds", value_name = "N")]
    pub preserve_fds: Option<u32>,

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
        env = "NOOK_STORAGE_DRIVER",
        value_parser = crate::values::parse_storage_driver
    )]
    pub storage_driver: Option<String>,

    /// For tests and tooling: a read-only layer directory (repeatable, lowest first);
    /// the root is their union with --rootfs DIR as the container's writable layer
    /// (DIR/diff, DIR/work, DIR/merged are created and kept)
    #[arg(long = "layer", value_name = "DIR", hide = true)]
    pub layers: Vec<PathBuf>,

    /// Pull the image: missing (default), always, never, newer (as always)
    #[arg(long, value_name = "POLICY", default_value = "missing", num_args = 0..=1, require_equals = true, default_missing_value = "always", value_parser = one_of::<PullPolicy>(PullPolicy::NAMES))]
    pub pull: PullPolicy,

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
    #[arg(short = 'm', long, value_name = "SIZE", help_heading = "Resources", value_parser = crate::values::parse_memory)]
    pub memory: Option<Size>,

    /// Memory soft limit (memory.low: protected from reclaim up to this)
    #[arg(long, value_name = "SIZE", help_heading = "Resources", value_parser = crate::values::parse_memory)]
    pub memory_reservation: Option<Size>,

    /// Memory plus swap limit (at least --memory; -1: unlimited swap)
    #[arg(
        long,
        value_name = "SIZE",
        allow_hyphen_values = true,
        help_heading = "Resources",
        value_parser = crate::values::parse_typed::<Swap>
    )]
    pub memory_swap: Option<Swap>,

    /// Number of CPUs the container may use, e.g. 1.5 (a CFS quota per 100 ms period)
    #[arg(long, value_name = "N", help_heading = "Resources", value_parser = crate::values::parse_typed::<Cpus>)]
    pub cpus: Option<Cpus>,

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
    #[arg(long, value_name = "LIST", help_heading = "Resources", value_parser = crate::values::parse_typed::<CpuList>)]
    pub cpuset_cpus: Option<CpuList>,

    /// Memory nodes the container may allocate from, e.g. 0
    #[arg(long, value_name = "LIST", help_heading = "Resources", value_parser = crate::values::parse_typed::<CpuList>)]
    pub cpuset_mems: Option<CpuList>,

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
    #[arg(long, value_name = "DEVICE:RATE", help_heading = "Resources", value_parser = crate::values::parse_bps_throttle)]
    pub device_read_bps: Vec<BpsThrottle>,

    /// Limit writes to a device: DEVICE:RATE, e.g. /dev/sda:10mb
    #[arg(long, value_name = "DEVICE:RATE", help_heading = "Resources", value_parser = crate::values::parse_bps_throttle)]
    pub device_write_bps: Vec<BpsThrottle>,

    /// Limit read operations per second on a device: DEVICE:IOPS
    #[arg(long, value_name = "DEVICE:IOPS", help_heading = "Resources", value_parser = crate::values::parse_iops_throttle)]
    pub device_read_iops: Vec<IopsThrottle>,

    /// Limit write operations per second on a device: DEVICE:IOPS
    #[arg(long, value_name = "DEVICE:IOPS", help_heading = "Resources", value_parser = crate::values::parse_iops_throttle)]
    pub device_write_iops: Vec<IopsThrottle>,

    /// A raw cgroup v2 setting: KEY=VALUE, e.g. memory.high=1g (repeatable)
    #[arg(long, value_name = "KEY=VALUE", help_heading = "Resources", value_parser = crate::values::parse_typed::<CgroupConf>)]
    pub cgroup_conf: Vec<CgroupConf>,

    /// enabled: the container gets its own cgroup where the host delegates one;
    /// disabled: no cgroup (no limits, stats or pause)
    #[arg(
        long,
        value_name = "MODE",
        default_value = "enabled",
        help_heading = "Resources",
        value_parser = one_of::<CgroupsMode>(CgroupsMode::NAMES)
    )]
    pub cgroups: CgroupsMode,
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

/// `nook __exec-pid`: `nook exec` addressed by the host pid of the container's first
/// process (tests and benchmarks of the exec library, until containers have names).
#[derive(Args, Debug)]
pub struct ExecPidArgs {
    /// Host pid of the container's first process
    pub pid: i32,

    /// Allocate a terminal for the command
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Keep stdin attached (without it the command reads /dev/null)
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Print the command's pid and return once it runs
    #[arg(short = 'd', long)]
    pub detach: bool,

    /// Send the pty master over this unix socket instead of relaying it (OCI)
    #[arg(long = "console-socket", value_name = "PATH", conflicts_with = "tty")]
    pub console_socket: Option<PathBuf>,

    /// Set an environment variable (KEY=VALUE, or KEY to copy nook's own)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Working directory inside the container (default /)
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// Run as UID[:GID] or USER[:GROUP] (default: the container's first process's)
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Pass descriptors 3..3+N of this command to the process (no others cross)
    #[arg(long = "preserve-fds", value_name = "N")]
    pub preserve_fds: Option<u32>,

    /// Command and arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Container lifecycle

#[derive(Args, Debug)]
pub struct CtrArgs {
    /// Container name or ID (prefix)
    pub container: String,
}

#[derive(Args, Debug)]
pub struct CtrsArgs {
    /// Container names or IDs
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to the container's output and wait for it (one container only)
    #[arg(short, long)]
    pub attach: bool,
    /// With -a: also pass this terminal's input to it
    #[arg(short, long)]
    pub interactive: bool,
    /// Container names or IDs
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// All containers, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// Only IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Full IDs and commands
    #[arg(long)]
    pub no_trunc: bool,
    /// table (default), json, or a template such as `{{.ID}} {{.Names}}` (fields: ID,
    /// Names, Image, Command, Created, CreatedAt, Status, State, ExitCode, Ports, Pid)
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    pub format: String,
    /// Only containers that match: status=STATE, name=NAME, id=PREFIX, ancestor=IMAGE,
    /// exited=CODE (repeatable; all must match)
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Only the newest container
    #[arg(short, long)]
    pub latest: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits
    #[arg(short, long)]
    pub follow: bool,
    /// Only output since this time: RFC 3339 (2026-11-28T10:00:00Z) or an age (10m, 2h)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Working directory inside the container (default: the container's, as its first
    /// process started: -w of run, else the image's WorkingDir, else /)
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User inside the container: USER[:GROUP] or UID[:GID]
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Start it and return without waiting
    #[arg(short, long)]
    pub detach: bool,
    /// Pass descriptors 3..3+N of this command to the process (no others cross)
    #[arg(long = "preserve-fds", value_name = "N")]
    pub preserve_fds: Option<u32>,
    pub container: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not pass this terminal's input to the container
    #[arg(long)]
    pub no_stdin: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before KILL (default: the container's)
    #[arg(short = 't', long = "time", value_name = "SECONDS")]
    pub time: Option<u64>,
    /// Every running container
    #[arg(short, long)]
    pub all: bool,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal (name or number, default KILL)
    #[arg(short, long, default_value = "KILL", value_parser = crate::values::parse_signal)]
    pub signal: i32,
    /// Every running container
    #[arg(short, long)]
    pub all: bool,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Stop running containers first (KILL)
    #[arg(short, long)]
    pub force: bool,
    /// Accepted for podman compatibility (nook creates no anonymous volumes)
    #[arg(short, long)]
    pub volumes: bool,
    /// Every container
    #[arg(short, long)]
    pub all: bool,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Source: a host path, or CTR:PATH
    pub source: String,
    /// Destination: a host path, or CTR:PATH
    pub dest: String,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Remove every stopped container
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SuperviseArgs {
    /// fd 3 is the first attached client, attached before any output (`start -a`)
    #[arg(long)]
    pub attach_first: bool,
    /// fds 3..3+N are the container's, passed by `run -d` (`--preserve-fds`, LISTEN_FDS)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub pass_fds: u32,
    /// They are socket activation's (LISTEN_FDS)
    #[arg(long)]
    pub listen: bool,
    /// Their LISTEN_FDNAMES
    #[arg(long, value_name = "NAMES")]
    pub listen_fdnames: Option<String>,
    /// The container's record directory
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Container name or ID
    pub container: String,
    /// Name for the new image (without one it is known by its ID)
    pub image: Option<String>,
}
