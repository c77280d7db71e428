//! `nook run`/`create` flags → [`RunRequest`]: the one place their strings are parsed.
//!
//! Enumerated and typed values (pull, restart, log driver, cgroups, user namespace,
//! storage driver, stop signal, network mode, sizes, CPU values, device throttles,
//! cgroup settings, security options, mounts) are parsed by clap already (value parsers
//! in flags.rs and values.rs, so a bad one fails before anything runs, naming the flag,
//! the value and what is accepted); a new request is then checked as a whole (limits
//! that bound each other, a seccomp profile that must read). What is left here resolves
//! what depends on the caller: a relative seccomp profile is made absolute, `-e NAME`
//! copies the caller's variable, `--env-file` is read now, config.toml's defaults fill
//! what the flags leave out. The request keeps the result, never the caller's environment or `--creds`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::{CommandFactory, FromArgMatches};
use nook_engine::request::{LogDriver, Resources, Seccomp, SecurityOpt};
use nook_engine::RunRequest;

use crate::config::{self, Config};
use crate::flags::{Cli, Command, ResourceArgs, RunArgs};

impl TryFrom<&RunArgs> for RunRequest {
    type Error = anyhow::Error;

    fn try_from(args: &RunArgs) -> Result<RunRequest> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let req = from_args(args, &|k| std::env::var(k).ok(), &cwd, config::current())?;
        check(&req)?;
        Ok(req)
    }
}

/// What a new request's values cannot say alone: limits that bound each other, ID maps
/// given by halves or with keep-id, and a seccomp profile that must read. Not for a migrated record (its profile file may be
/// gone since; its start says so).
fn check(req: &RunRequest) -> Result<()> {
    nook_engine::resources::check(&req.resources).map_err(|e| anyhow!("{e}"))?;
    nook_engine::run::userns_mode(req).map_err(|e| anyhow!("{e}"))?;
    for opt in &req.security_opt {
        if let SecurityOpt::Seccomp(Seccomp::Profile(path)) = opt {
            nook_engine::seccomp::check_profile(path).map_err(|e| anyhow!("{e}"))?;
        }
    }
    Ok(())
}

/// The request `args` ask for: `lookup` resolves `-e NAME`, relative `--env-file`s are
/// read from `cwd`, `config` gives the defaults the flags leave out.
fn from_args(
    args: &RunArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
    config: &Config,
) -> Result<RunRequest> {
    let restart = args.restart.unwrap_or_default();
    if args.rm && restart != nook_engine::request::RestartPolicy::No {
        bail!("--rm and --restart exclude each other: a removed container cannot restart");
    }
    let mut env = Vec::new();
    for file in &args.env_file {
        for line in read_env_file(&cwd.join(file))? {
            resolve_assignment(&mut env, &line, lookup);
        }
    }
    for assignment in &args.env {
        resolve_assignment(&mut env, assignment, lookup);
    }
    Ok(RunRequest {
        version: nook_engine::request::VERSION,
        image: args.image.clone(),
        rootfs: args.rootfs,
        layers: args.layers.clone(),
        pull: args.pull,
        tls_verify: args.registry.tls_verify,
        platform: args.registry.platform.clone(),
        entrypoint: args.entrypoint.clone(),
        command: args.command.clone(),
        env,
        cwd: cwd.to_path_buf(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        volumes: args.volumes.clone(),
        tmpfs: args.tmpfs.clone(),
        read_only: args.read_only,
        interactive: args.interactive,
        tty: args.tty,
        rm: args.rm,
        init: args.init,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        // A profile's path as the caller meant it, wherever a later start runs.
        security_opt: args
            .security_opt
            .iter()
            .map(|opt| match opt {
                SecurityOpt::Seccomp(Seccomp::Profile(p)) => {
                    SecurityOpt::Seccomp(Seccomp::Profile(cwd.join(p)))
                }
                other => other.clone(),
            })
            .collect(),
        privileged: args.privileged,
        hostname: args.hostname.clone(),
        name: args.name.clone(),
        userns: args.userns.unwrap_or_default(),
        uidmap: args.uidmap.clone(),
        gidmap: args.gidmap.clone(),
        network: args.network.clone(),
        publish: args.publish.clone(),
        publish_all: args.publish_all,
        storage_driver: args.storage_driver.clone().filter(|d| d != "auto"),
        resources: resources(&args.resources),
        restart,
        stop_signal: args.stop_signal.unwrap_or(libc::SIGTERM),
        stop_timeout: args.stop_timeout.unwrap_or(10),
        log_driver: args
            .log_driver
            .unwrap_or(match config.containers.log_driver {
                config::LogDriver::JsonFile => LogDriver::JsonFile,
                config::LogDriver::K8sFile => LogDriver::K8sFile,
            }),
        log_size_max: log_size_max(&args.log_opt, config)?,
    })
}

pub(crate) fn resources(args: &ResourceArgs) -> Resources {
    Resources {
        memory: args.memory,
        memory_reservation: args.memory_reservation,
        memory_swap: args.memory_swap,
        cpus: args.cpus,
        cpu_quota: args.cpu_quota,
        cpu_period: args.cpu_period,
        cpu_shares: args.cpu_shares,
        cpu_weight: args.cpu_weight,
        cpuset_cpus: args.cpuset_cpus.clone(),
        cpuset_mems: args.cpuset_mems.clone(),
        pids_limit: args.pids_limit,
        blkio_weight: args.blkio_weight,
        device_read_bps: args.device_read_bps.clone(),
        device_write_bps: args.device_write_bps.clone(),
        device_read_iops: args.device_read_iops.clone(),
        device_write_iops: args.device_write_iops.clone(),
        cgroup_conf: args.cgroup_conf.clone(),
        cgroups: args.cgroups,
    }
}

/// `KEY=VALUE` as is; `KEY` alone as the caller's value, left out when it has none.
fn resolve_assignment(
    env: &mut Vec<String>,
    assignment: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) {
    if assignment.contains('=') {
        env.push(assignment.to_string());
    } else if let Some(value) = lookup(assignment) {
        env.push(format!("{assignment}={value}"));
    }
}

fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --env-file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// `--log-opt max-size=10m`, else `[containers] log_size_max` of config.toml.
fn log_size_max(opts: &[String], config: &Config) -> Result<Option<u64>> {
    let mut max = config.containers.log_size_max;
    for opt in opts {
        match opt.split_once('=') {
            Some(("max-size", v)) => {
                let bytes = nook_engine::resources::parse_bytes(v)
                    .map_err(|e| anyhow!("bad --log-opt max-size={v:?}: {e}"))?;
                max = Some(bytes.max(0) as u64);
            }
            _ => bail!("unsupported --log-opt {opt:?}: nook knows max-size=SIZE"),
        }
    }
    Ok(max)
}

/// The request of a record written before records held one (format 1): its `argv`
/// parsed as that nook parsed it, `-e NAME` resolved from the environment it recorded.
pub fn from_legacy(argv: &[String], env: &[(String, String)], cwd: &Path) -> Result<RunRequest> {
    let argv = std::iter::once("nook".to_string()).chain(argv.iter().cloned());
    let mut cmd = config::with_defaults(Cli::command(), config::current());
    let cli = cmd
        .try_get_matches_from_mut(argv)
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m))
        .map_err(|e| anyhow!("its flags do not parse: {}", e.kind()))?;
    let mut args = match cli.command {
        Command::Run(args) | Command::Create(args) => args,
        _ => bail!("it is not a run"),
    };
    let lookup = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    // clap read `$NOOK_STORAGE_DRIVER` from this process; the creator's counted then.
    if let Some(driver) = lookup("NOOK_STORAGE_DRIVER").filter(|_| args.storage_driver.is_none()) {
        args.storage_driver = crate::values::parse_storage_driver(&driver).ok();
    }
    from_args(&args, &lookup, cwd, config::current())
}

/// [`nook_engine::container::record::Migrate`]: [`from_legacy`], its error as one line.
pub fn migrate(
    legacy: &nook_engine::container::record::LegacyRecord,
) -> std::result::Result<RunRequest, String> {
    from_legacy(&legacy.argv, &legacy.env, &legacy.cwd)
        .map_err(|e| crate::errors::Chain(&e).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run_args(argv: &[&str]) -> std::result::Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["nook", "run"].iter().chain(argv))?;
        match cli.command {
            Command::Run(args) => Ok(*args),
            _ => unreachable!(),
        }
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(crate::values::parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(
            crate::values::parse_signal("sigkill").unwrap(),
            libc::SIGKILL
        );
        assert_eq!(crate::values::parse_signal("9").unwrap(), 9);
        assert!(crate::values::parse_signal("NOPE").is_err());
    }

    #[test]
    fn bad_enum_values_fail_at_parse_time_naming_the_accepted_ones() {
        for (flag, accepted) in [
            ("--pull=bogus", "missing"),
            ("--restart=bogus", "on-failure"),
            ("--log-driver=bogus", "json-file"),
            ("--network=bogus", "none"),
            ("--cgroups=bogus", "disabled"),
            ("--userns=bogus", "keep-id"),
            ("--storage-driver=bogus", "overlay"),
            ("--stop-signal=bogus", "TERM"),
        ] {
            let e = run_args(&[flag, "host", "true"]).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(
                    e.kind(),
                    clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation
                ),
                "{flag}: {text}"
            );
            assert!(text.contains(accepted), "{flag}: {text}");
        }
    }

    #[test]
    fn the_request_resolves_env_and_keeps_no_other_variable() {
        let dir = std::env::temp_dir().join(format!("nook-req-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vars"), "# a comment\nFROM_FILE=1\nSHELL_VAR\n").unwrap();
        let args = run_args(&[
            "--env-file=vars",
            "-e",
            "A=b=c",
            "-e",
            "SHELL_VAR",
            "-e",
            "UNSET_VAR",
            "--restart=on-failure:2",
            "--pull=never",
            "host",
        ])
        .unwrap();
        let lookup = |k: &str| (k == "SHELL_VAR").then(|| "from-shell".to_string());
        let req = from_args(&args, &lookup, &dir, &Config::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            req.env,
            [
                "FROM_FILE=1",
                "SHELL_VAR=from-shell",
                "A=b=c",
                "SHELL_VAR=from-shell"
            ]
        );
        assert_eq!(
            req.restart,
            nook_engine::request::RestartPolicy::OnFailure(Some(2))
        );
        assert_eq!(req.pull, nook_engine::request::PullPolicy::Never);
        assert_eq!(req.stop_signal, libc::SIGTERM);
        assert!(run_args(&["--rm", "--restart=always", "host"])
            .map(|a| from_args(&a, &lookup, &dir, &Config::default()).is_err())
            .unwrap());
    }

    #[test]
    fn bad_typed_values_fail_at_parse_time_naming_flag_value_and_accepted() {
        for (flag, value, accepted) in [
            ("--memory", "12x", "512m"),
            ("--memory", "1k", "6m"),
            ("--memory-reservation", "lots", "512m"),
            ("--memory-swap", "-2", "-1"),
            ("--cpus", "lots", "1.5"),
            ("--cpus", "0.001", "0.01"),
            ("--cpuset-cpus", "3-1", "0-3,6"),
            ("--cpuset-mems", "x", "0-3,6"),
            ("--device-read-bps", "nocolon", "DEVICE:RATE"),
            ("--device-write-bps", "/dev/null:1m", "not a block device"),
            ("--device-read-iops", "/dev/sda:1m", "whole number"),
            ("--cgroup-conf", "memory.high", "KEY=VALUE"),
            ("--cgroup-conf", "../x.y=1", "CONTROLLER.FILE"),
            (
                "--security-opt",
                "apparmor=unconfined",
                "seccomp=PROFILE.json",
            ),
            ("--security-opt", "seccomp=", "unconfined"),
            (
                "--security-opt",
                "no-new-privileges=maybe",
                "no-new-privileges",
            ),
        ] {
            let e = run_args(&[&format!("{flag}={value}"), "host"]).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{text}");
            assert!(text.contains(flag), "{flag}: {text}");
            assert!(text.contains(&format!("'{value}'")), "{flag}: {text}");
            assert!(text.contains(accepted), "{flag}: {text}");
        }
    }

    #[test]
    fn typed_values_reach_the_request_and_a_whole_request_is_checked() {
        let dir = std::env::temp_dir().join(format!("nook-req-typed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = run_args(&[
            "-m",
            "64m",
            "--memory-swap=-1",
            "--cpus=1.5",
            "--cpuset-cpus=0-1",
            "--cgroup-conf=memory.high=32m",
            "--security-opt=seccomp=p.json",
            "--security-opt=no-new-privileges=false",
            "host",
        ])
        .unwrap();
        let req = from_args(&args, &|_| None, &dir, &Config::default()).unwrap();
        let r = &req.resources;
        assert_eq!(r.memory.unwrap().bytes(), 64 << 20);
        assert_eq!(r.memory_swap, Some(nook_engine::request::Swap::Unlimited));
        assert_eq!(r.cpus.unwrap().quota_period(), (150_000, 100_000));
        assert_eq!(r.cgroup_conf[0].key, "memory.high");
        assert_eq!(
            req.security_opt,
            [
                SecurityOpt::Seccomp(Seccomp::Profile(dir.join("p.json"))),
                SecurityOpt::NoNewPrivileges(false)
            ]
        );
        // The profile must read when the request is made.
        assert!(check(&req).unwrap_err().to_string().contains("p.json"));
        std::fs::write(dir.join("p.json"), r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        check(&req).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // Limits that bound each other: refused before anything is created.
        for bad in [
            &["--memory-swap=1g", "host"][..],
            &["-m", "1g", "--memory-swap=512m", "host"],
            &["--cpus=1", "--cpu-quota=50000", "host"],
            &["--cpu-weight=0", "host"],
            &["--uidmap=0:1:1", "host"],
            &[
                "--userns=keep-id",
                "--uidmap=0:1:1",
                "--gidmap=0:1:1",
                "host",
            ],
        ] {
            let args = run_args(bad).unwrap();
            let req = from_args(&args, &|_| None, Path::new("/"), &Config::default()).unwrap();
            assert!(check(&req).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volume_and_tmpfs_specs_are_parsed_once_by_clap() {
        let args = run_args(&[
            "-v",
            "/tmp:/data:ro",
            "--tmpfs",
            "/t:size=1m,mode=700",
            "host",
        ])
        .unwrap();
        assert_eq!(
            args.volumes,
            [nook_engine::request::Volume {
                source: "/tmp".into(),
                destination: "/data".into(),
                read_only: true
            }]
        );
        assert_eq!(args.tmpfs[0].options, ["size=1m", "mode=700"]);
        for bad in ["/tmp", "relative:/x", "/tmp:/x:bogus", "/a:/b:ro:c"] {
            assert!(run_args(&["-v", bad, "host"]).is_err(), "{bad}");
        }
        assert!(run_args(&["--tmpfs", "relative", "host"]).is_err());
    }
}
