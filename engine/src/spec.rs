//! `nook run` flags + the chosen root → one `oci_spec::runtime::Spec`.
//!
//! The Spec is the single contract with the rootless crate: whatever a flag changes in
//! the container is expressed here, so the OCI-runtime commands (which receive a Spec
//! from podman or Slurm) run through exactly the same code.
//!
//! Security settings: podman's default capabilities (`--cap-add`/`--cap-drop`), its
//! default seccomp profile fitted to them (seccomp.rs; `--security-opt seccomp=`),
//! no_new_privs, masked and read-only /proc paths. `--privileged` is podman's rootless
//! meaning: every capability of the user namespace, no seccomp filter (unless a file is
//! given), no masked or read-only paths, /sys and the container's cgroup writable, and
//! the host's devices that the user can open bound in (an unprivileged user cannot
//! mknod). It gives nothing the user does not have on the host: the user namespace
//! still bounds every capability.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::bail;
use crate::error::{Context, Result};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMapping, LinuxIdMappingBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxSeccomp, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use nook_fs::host_image;
use nook_rootless::capabilities::DEFAULT_CAPABILITIES;
use nook_rootless::idmap::{self, IdRange, Mapping};

use crate::request::{Seccomp, SecurityOpt, Tmpfs, Volume};
use crate::seccomp::{self, Choice};
use crate::users::{self, Identity};
use crate::RunRequest;

/// Where the container's root comes from.
#[derive(Clone)]
pub enum Root {
    /// The built-in `host` image, staged on this (empty) directory.
    Host { mount_point: PathBuf },
    /// A root filesystem directory used in place (`--rootfs`).
    Dir(PathBuf),
    /// A union of layers mounted on `mount_point` by the container (overlay, FUSE);
    /// `readable` shows the image's /etc before the container starts.
    Union {
        mount_point: PathBuf,
        mount: Mount,
        readable: PathBuf,
    },
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Host { mount_point } => mount_point,
            Root::Dir(dir) => dir,
            Root::Union { mount_point, .. } => mount_point,
        }
    }

    /// The root as files can be read before the container starts (for /etc/passwd).
    pub fn readable_path(&self) -> &Path {
        match self {
            Root::Host { .. } => Path::new("/"),
            Root::Dir(dir) => dir,
            Root::Union { readable, .. } => readable,
        }
    }
}

/// Files the container gets from its own directory (`/etc/hosts`, `/etc/hostname`).
pub struct GeneratedFiles {
    pub hosts: Option<PathBuf>,
    pub hostname: PathBuf,
    /// `--network=nook`: nameserver 10.0.2.3 (the netstack's DNS forwarder).
    pub resolv_conf: Option<PathBuf>,
    /// apt's sandbox user where the ID map cannot hold it (apt_sandbox.rs).
    pub apt_sandbox: Option<PathBuf>,
}

pub struct SpecInput<'a> {
    pub req: &'a RunRequest,
    pub root: &'a Root,
    pub ids: &'a Mapping,
    pub hostname: &'a str,
    pub files: &'a GeneratedFiles,
    pub host_network: bool,
    /// The image's run configuration (Entrypoint, Cmd, Env, WorkingDir, User), for
    /// images from the store.
    pub image: Option<&'a nook_fs::manifest::RunConfig>,
    pub notify: &'a dyn crate::Notify,
}

/// The spec, and the record of its seccomp profile (for `nook exec`, seccomp.rs).
pub fn build(input: &SpecInput) -> Result<(Spec, seccomp::Record)> {
    let security = security_opts(&input.req.security_opt);
    let caps = capabilities(
        &input.req.cap_add,
        &input.req.cap_drop,
        input.req.privileged,
    )?;
    let bounding: Vec<String> = caps.iter().map(|c| format!("CAP_{c}")).collect();
    let (profile, record) = seccomp::for_container(
        &security.seccomp,
        input.req.privileged,
        &bounding,
        input.notify,
    )?;
    let process = build_process(input, caps, security.no_new_privileges)?;
    let mounts = build_mounts(input)?;
    let linux = build_linux(input, profile)?;
    let root = RootBuilder::default()
        .path(input.root.path())
        .readonly(input.req.read_only)
        .build()?;
    let spec = SpecBuilder::default()
        .version("1.2.0")
        .root(root)
        .hostname(input.hostname)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?;
    Ok((spec, record))
}

fn build_process(
    input: &SpecInput,
    caps: HashSet<Capability>,
    no_new_privileges: bool,
) -> Result<oci_spec::runtime::Process> {
    let args = input.req;
    let image_user = input
        .image
        .and_then(|i| i.user.as_deref())
        .filter(|u| !u.is_empty());
    let identity = match args.user.as_deref().or(image_user) {
        Some(spec) => users::resolve(spec, input.root.readable_path())?,
        None => Identity::for_uid(
            input.ids.default_uid(),
            Some(input.ids.default_gid()),
            input.root.readable_path(),
        ),
    };
    let command = match input.image {
        Some(image) => image_command(args, image)?,
        None if args.command.is_empty() => vec!["/bin/sh".to_string()],
        None => args.command.clone(),
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let user = UserBuilder::default()
        .uid(identity.uid)
        .gid(identity.gid)
        .build()?;
    Ok(ProcessBuilder::default()
        .terminal(args.tty)
        .user(user)
        .args(command)
        .env(crate::env::build(
            args,
            &identity.home,
            input.hostname,
            input
                .image
                .and_then(|i| i.env.as_deref())
                .unwrap_or_default(),
        )?)
        .cwd(
            args.workdir
                .clone()
                .or_else(|| {
                    input
                        .image
                        .and_then(|i| i.working_dir.clone())
                        .filter(|w| !w.is_empty())
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| PathBuf::from("/")),
        )
        .capabilities(capabilities)
        .no_new_privileges(no_new_privileges)
        // None: the container inherits nook's limits, as in podman. (The builder's
        // default is oci-spec's RLIMIT_NOFILE 1024, which the runtime would apply.)
        .rlimits(Vec::<oci_spec::runtime::PosixRlimit>::new())
        .build()?)
}

/// The command as podman builds it from an image: the entrypoint (`--entrypoint`, else
/// the image's), then the command line's arguments, else the image's Cmd (dropped when
/// `--entrypoint` replaces the entrypoint).
fn image_command(args: &RunRequest, image: &nook_fs::manifest::RunConfig) -> Result<Vec<String>> {
    let mut command: Vec<String> = match &args.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        // A JSON array, as podman accepts, or one program.
        Some(e) => serde_json::from_str::<Vec<String>>(e).unwrap_or_else(|_| vec![e.clone()]),
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    if !args.command.is_empty() {
        command.extend(args.command.iter().cloned());
    } else if args.entrypoint.is_none() {
        command.extend(image.cmd.clone().unwrap_or_default());
    }
    if command.is_empty() {
        bail!("the image has no command (no Entrypoint or Cmd): give one after the image name");
    }
    Ok(command)
}

/// podman's default set (every capability with `--privileged`), plus `--cap-add`, minus
/// `--cap-drop` (ALL allowed in both).
fn capabilities(add: &[String], drop: &[String], privileged: bool) -> Result<HashSet<Capability>> {
    let parse = |name: &str| -> Result<Capability> {
        let short = name.to_ascii_uppercase();
        let short = short.trim_start_matches("CAP_");
        short
            .parse()
            .map_err(crate::Error::other)
            .with_context(|| format!("unknown capability {name:?} (e.g. NET_RAW, SYS_ADMIN)"))
    };
    let mut set: HashSet<Capability> = if privileged {
        all_capabilities().collect()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| parse(c))
            .collect::<Result<_>>()?
    };
    if drop.iter().any(|d| d.eq_ignore_ascii_case("all")) {
        set.clear();
    }
    for name in add {
        if name.eq_ignore_ascii_case("all") {
            set.extend(all_capabilities());
        } else {
            set.insert(parse(name)?);
        }
    }
    for name in drop.iter().filter(|d| !d.eq_ignore_ascii_case("all")) {
        set.remove(&parse(name)?);
    }
    Ok(set)
}

/// Every capability this kernel knows, named as the spec names them.
fn all_capabilities() -> impl Iterator<Item = Capability> {
    caps::runtime::thread_all_supported()
        .into_iter()
        .filter_map(|c| c.to_string().trim_start_matches("CAP_").parse().ok())
}

/// What `--security-opt` asks for.
struct SecurityOpts {
    no_new_privileges: bool,
    seccomp: Choice,
}

/// The `--security-opt`s folded: a later one of a kind wins.
fn security_opts(options: &[SecurityOpt]) -> SecurityOpts {
    let mut opts = SecurityOpts {
        no_new_privileges: true,
        seccomp: Choice::Default,
    };
    for opt in options {
        match opt {
            SecurityOpt::NoNewPrivileges(on) => opts.no_new_privileges = *on,
            SecurityOpt::Seccomp(Seccomp::Unconfined) => opts.seccomp = Choice::Unconfined,
            SecurityOpt::Seccomp(Seccomp::Profile(path)) => {
                opts.seccomp = Choice::File(path.clone())
            }
        }
    }
    opts
}

fn build_mounts(input: &SpecInput) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    let scratch = |dir: &str, mode: u32| {
        mount(
            dir,
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", &format!("mode={mode:o}")],
        )
    };
    match input.root {
        Root::Host { .. } => {
            mounts.push(mount("/", "tmpfs", "tmpfs", &["mode=755"])?);
            for dir in host_image::shared_dirs() {
                let dir = dir.to_string_lossy().into_owned();
                mounts.push(mount(&dir, &dir, "bind", &["rbind", "ro"])?);
            }
            for s in &host_image::SCRATCH_DIRS {
                mounts.push(scratch(s.path, s.mode)?);
            }
        }
        Root::Dir(_) | Root::Union { .. } if input.req.read_only => {
            if let Root::Union { mount, .. } = input.root {
                mounts.push(mount.clone());
            }
            // podman's --read-only-tmpfs: the places programs must write stay writable.
            for s in &host_image::SCRATCH_DIRS {
                mounts.push(scratch(s.path, s.mode)?);
            }
        }
        Root::Union { mount, .. } => mounts.push(mount.clone()),
        Root::Dir(_) => {}
    }
    mounts.extend(system_mounts(input)?);
    mounts.push(bind_file(&input.files.hostname, "/etc/hostname")?);
    if let Some(hosts) = &input.files.hosts {
        mounts.push(bind_file(hosts, "/etc/hosts")?);
    }
    if let Some(resolv_conf) = &input.files.resolv_conf {
        mounts.push(bind_file(resolv_conf, "/etc/resolv.conf")?);
    }
    if let Some(conf) = &input.files.apt_sandbox {
        mounts.push(mount(
            crate::apt_sandbox::DEST,
            &conf.to_string_lossy(),
            "bind",
            &["bind", "ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    for tmpfs in &input.req.tmpfs {
        mounts.push(tmpfs_mount(tmpfs)?);
    }
    for volume in &input.req.volumes {
        mounts.push(volume_mount(volume)?);
    }
    Ok(mounts)
}

/// /proc, /dev and /sys, as the runtime-spec's defaults have them.
fn system_mounts(input: &SpecInput) -> Result<Vec<Mount>> {
    let mut devpts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    // The tty group: only when gid 5 exists inside, or the mount fails.
    if idmap::is_mapped(&input.ids.gid_map, 5) {
        devpts.push("gid=5");
    }
    // --privileged: /sys writable, as podman gives it (what the user may write there is
    // still what the host allows the user).
    let sys = if input.req.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount("/dev/pts", "devpts", "devpts", &devpts)?,
        mount(
            "/dev/shm",
            "shm",
            "tmpfs",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys],
        )?,
    ];
    if input.req.privileged {
        mounts.extend(host_devices()?);
    }
    Ok(mounts)
}

/// Directories of /dev that are not devices to pass on (runc's and podman's list).
const NOT_DEVICE_DIRS: [&str; 6] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts"];

/// `--privileged`: a bind mount for every character or block device under the host's
/// /dev that the user can open, as podman does rootless (it cannot mknod either). Left
/// out, as podman leaves them: /dev/console, /dev/ptmx (the container has its own),
/// /dev/tty and the virtual consoles /dev/ttyN, and the nodes every container gets
/// already (/dev/null & co., rootless/src/mounts.rs).
fn host_devices() -> Result<Vec<Mount>> {
    use std::os::unix::fs::FileTypeExt;
    const ALREADY: [&str; 6] = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ];
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() {
                if !NOT_DEVICE_DIRS.contains(&name.as_ref()) {
                    dirs.push(path);
                }
                continue;
            }
            let virtual_console = name
                .strip_prefix("tty")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !(kind.is_char_device() || kind.is_block_device())
                || name == "console"
                || name == "ptmx"
                || virtual_console
                || ALREADY.iter().any(|a| Path::new(a) == path)
            {
                continue;
            }
            let usable = nix::unistd::access(&path, nix::unistd::AccessFlags::R_OK).is_ok()
                || nix::unistd::access(&path, nix::unistd::AccessFlags::W_OK).is_ok();
            if usable {
                found.push(path);
            }
        }
    }
    found.sort();
    found
        .iter()
        .map(|p| {
            let p = p.to_string_lossy();
            mount(&p, &p, "bind", &["bind", "nosuid", "noexec"])
        })
        .collect()
}

fn mount(dest: &str, source: &str, typ: &str, options: &[&str]) -> Result<Mount> {
    Ok(MountBuilder::default()
        .destination(dest)
        .source(source)
        .typ(typ)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn bind_file(source: &Path, dest: &str) -> Result<Mount> {
    mount(
        dest,
        &source.to_string_lossy(),
        "bind",
        &["bind", "nosuid", "nodev"],
    )
}

/// `-v HOST:CTR[:ro|rw]`: the host path resolved now, at this start.
fn volume_mount(v: &Volume) -> Result<Mount> {
    let source = std::fs::canonicalize(&v.source).with_context(|| {
        format!(
            "volume {}:{}: host path {} does not exist",
            v.source.display(),
            v.destination,
            v.source.display()
        )
    })?;
    let options: &[&str] = if v.read_only {
        &["rbind", "ro"]
    } else {
        &["rbind"]
    };
    mount(&v.destination, &source.to_string_lossy(), "bind", options)
}

/// `--tmpfs DIR[:size=..,mode=..]`.
fn tmpfs_mount(t: &Tmpfs) -> Result<Mount> {
    let mut options = vec!["nosuid", "nodev"];
    options.extend(t.options.iter().map(String::as_str));
    mount(&t.destination, "tmpfs", "tmpfs", &options)
}

/// Masked beyond the runtime-spec's defaults (oci_spec's list). podman's: the host's
/// RAPL energy counters (a side channel: CVE-2020-8694), the host's block devices and
/// the SELinux filesystem; Docker's and Kubernetes': the host's interrupt counts per
/// CPU and device, which on a shared node show what other users' jobs are doing.
/// A path missing on this kernel is skipped at mount time.
pub const EXTRA_MASKED_PATHS: [&str; 4] = [
    "/sys/devices/virtual/powercap",
    "/sys/dev/block",
    "/sys/fs/selinux",
    "/proc/interrupts",
];

fn build_linux(
    input: &SpecInput,
    seccomp: Option<LinuxSeccomp>,
) -> Result<oci_spec::runtime::Linux> {
    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::User,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Network,
    ] {
        if typ == LinuxNamespaceType::Network && input.host_network {
            continue;
        }
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    let to_oci = |ranges: &[IdRange]| -> Result<Vec<LinuxIdMapping>> {
        ranges
            .iter()
            .map(|r| {
                Ok(LinuxIdMappingBuilder::default()
                    .container_id(r.inside)
                    .host_id(r.outside)
                    .size(r.count)
                    .build()?)
            })
            .collect()
    };
    let (masked, readonly) = if input.req.privileged {
        (Vec::new(), Vec::new())
    } else {
        let mut masked = oci_spec::runtime::get_default_maskedpaths();
        masked.extend(EXTRA_MASKED_PATHS.iter().map(|p| p.to_string()));
        (masked, oci_spec::runtime::get_default_readonly_paths())
    };
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .uid_mappings(to_oci(&input.ids.uid_map)?)
        .gid_mappings(to_oci(&input.ids.gid_map)?)
        .masked_paths(masked)
        .readonly_paths(readonly);
    let linux = match seccomp {
        Some(profile) => linux.seccomp(profile),
        None => linux,
    };
    // --memory, --cpus, --pids-limit ... (resources.rs), applied by the rootless crate.
    let linux = match crate::resources::build(&input.req.resources)? {
        Some(resources) => linux.resources(resources),
        None => linux,
    };
    Ok(linux.build()?)
}

/// The container's own cgroup at /sys/fs/cgroup (its cgroup namespace makes it the
/// root there), read-only as podman mounts it (writable as /sys is, under
/// `--privileged`); placed right after /sys. Added only when the container has a cgroup
/// (see resources.rs).
pub fn add_cgroup_mount(spec: &mut Spec) -> Result<()> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let sys_writable = mounts.iter().any(|m| {
        m.destination() == Path::new("/sys")
            && m.options()
                .as_deref()
                .is_some_and(|o| o.iter().any(|o| o == "rw"))
    });
    let cgroup = mount(
        "/sys/fs/cgroup",
        "cgroup2",
        "cgroup2",
        &[
            "nosuid",
            "noexec",
            "nodev",
            "relatime",
            if sys_writable { "rw" } else { "ro" },
        ],
    )?;
    let at = mounts
        .iter()
        .position(|m| m.destination() == Path::new("/sys"))
        .map_or(mounts.len(), |i| i + 1);
    mounts.insert(at, cgroup);
    spec.set_mounts(Some(mounts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_modified_capabilities() {
        let default = capabilities(&[], &[], false).unwrap();
        assert_eq!(default.len(), DEFAULT_CAPABILITIES.len());
        let set = capabilities(&["net_raw".into()], &["CAP_CHOWN".into()], false).unwrap();
        assert!(set.contains(&Capability::NetRaw));
        assert!(!set.contains(&Capability::Chown));
        let none = capabilities(&[], &["ALL".into()], false).unwrap();
        assert!(none.is_empty());
        assert!(capabilities(&["NOT_A_CAP".into()], &[], false).is_err());
        let all = capabilities(&[], &[], true).unwrap();
        assert!(all.contains(&Capability::SysAdmin) && all.len() > default.len());
    }

    #[test]
    fn volumes_resolve_their_host_path_at_each_start() {
        let v = |source: &str, read_only| Volume {
            source: source.into(),
            destination: "/data".into(),
            read_only,
        };
        let m = volume_mount(&v("/tmp", true)).unwrap();
        assert_eq!(m.destination(), Path::new("/data"));
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
        let rw = volume_mount(&v("/tmp", false)).unwrap();
        assert!(!rw.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert!(volume_mount(&v("/no/such/dir", false)).is_err());
    }

    #[test]
    fn security_options() {
        let opts = |o: &[&str]| {
            security_opts(
                &o.iter()
                    .map(|s| s.parse().unwrap())
                    .collect::<Vec<SecurityOpt>>(),
            )
        };
        let default = opts(&[]);
        assert!(default.no_new_privileges);
        assert_eq!(default.seccomp, Choice::Default);
        assert!(!opts(&["no-new-privileges=false"]).no_new_privileges);
        assert_eq!(opts(&["seccomp=unconfined"]).seccomp, Choice::Unconfined);
        assert_eq!(
            opts(&["seccomp=unconfined", "seccomp=/p.json"]).seccomp,
            Choice::File("/p.json".into())
        );
    }

    #[test]
    fn host_devices_are_only_those_the_user_can_open() {
        for m in host_devices().unwrap() {
            let p = m.destination();
            assert!(
                nix::unistd::access(p, nix::unistd::AccessFlags::R_OK).is_ok()
                    || nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok(),
                "{}",
                p.display()
            );
            assert_ne!(p, Path::new("/dev/ptmx"));
            assert_ne!(p, Path::new("/dev/console"));
        }
    }
}
