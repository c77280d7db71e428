//! Flag values clap parses itself (its value parsers), for flags.rs: a bad value fails
//! before anything runs, in one line that names the accepted values. Pure parsers,
//! depending on nothing else of the CLI.

use nook_engine::request::{BpsThrottle, IopsThrottle, SecurityOpt, Size, Tmpfs, Volume};

/// `--stop-signal`, `kill --signal`: a name (`TERM`, `SIGTERM`, any case) or a number.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| "use a signal name such as TERM or KILL, or a number 1-64".to_string())
}

/// `-v HOST:CONTAINER[:ro|rw]`: both paths absolute.
pub fn parse_volume(spec: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, ctr, opts) = match parts.as_slice() {
        [host, ctr] => (*host, *ctr, ""),
        [host, ctr, opts] => (*host, *ctr, *opts),
        _ => return Err("expected HOST-PATH:CONTAINER-PATH[:ro|rw]".into()),
    };
    if !host.starts_with('/') || !ctr.starts_with('/') {
        return Err("both paths must be absolute (named volumes come later)".into());
    }
    let mut read_only = false;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => return Err(format!("unknown option {other:?} (use ro or rw)")),
        }
    }
    Ok(Volume {
        source: host.into(),
        destination: ctr.into(),
        read_only,
    })
}

/// `--tmpfs DIR[:OPTS]`: the container path absolute.
pub fn parse_tmpfs(spec: &str) -> Result<Tmpfs, String> {
    let (dir, opts) = spec.split_once(':').unwrap_or((spec, ""));
    if !dir.starts_with('/') {
        return Err("the container path must be absolute".into());
    }
    Ok(Tmpfs {
        destination: dir.into(),
        options: opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// `--cap-add`/`--cap-drop`: a capability's name (any case, CAP_ or not) or ALL, kept
/// as given (the engine applies it to its default set).
pub fn parse_capability(name: &str) -> Result<String, String> {
    let upper = name.to_ascii_uppercase();
    let short = upper.trim_start_matches("CAP_");
    if short == "ALL" || short.parse::<oci_spec::runtime::Capability>().is_ok() {
        return Ok(name.to_string());
    }
    Err("use a capability name such as NET_RAW or SYS_ADMIN, or ALL".into())
}

/// `--storage-driver`: overlay, fuse or copy (their aliases named as these), or auto
/// (also when empty: the best this machine supports).
pub fn parse_storage_driver(s: &str) -> Result<String, String> {
    match s {
        "" | "auto" => Ok("auto".into()),
        _ => nook_fs::union::Driver::parse(s)
            .map(|d| d.as_str().to_string())
            .ok_or_else(|| "use one of overlay, fuse, copy, auto".to_string()),
    }
}

/// `--network`: checked whole here (mode and `nook:` options), kept as given.
pub fn parse_network(s: &str) -> Result<String, String> {
    let (mode, options) = s.split_once(':').unwrap_or((s, ""));
    match (mode, options) {
        ("none" | "host", "") => Ok(s.to_string()),
        ("nook" | "slirp4netns" | "pasta", _) => nook_net::Config::parse_options(options)
            .map(|_| s.to_string())
            .map_err(|e| e.to_string()),
        _ => Err(
            "use one of nook[:allow_host_loopback=true,mtu=N,ipv6=false,dns=IP[:PORT]] \
             (a private network with outbound access), none (loopback only), host (the \
             host's network)"
                .to_string(),
        ),
    }
}

/// A typed request value, by its own parser (sizes, CPU counts and lists, cgroup
/// settings): the message says what is accepted.
pub fn parse_typed<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

/// `--memory`, `--memory-reservation`: a size of at least 6MB (podman's smallest).
pub fn parse_memory(s: &str) -> Result<Size, String> {
    let size: Size = s.parse()?;
    if size.bytes() < nook_engine::resources::MIN_MEMORY {
        return Err("below the smallest memory limit nook allows: use 6m or more".into());
    }
    Ok(size)
}

/// `--device-{read,write}-bps DEVICE:RATE`: the device must be a block device now.
pub fn parse_bps_throttle(s: &str) -> Result<BpsThrottle, String> {
    let t: BpsThrottle = s.parse()?;
    nook_engine::resources::block_device(&t.0.device)?;
    Ok(t)
}

/// `--device-{read,write}-iops DEVICE:IOPS`: the device must be a block device now.
pub fn parse_iops_throttle(s: &str) -> Result<IopsThrottle, String> {
    let t: IopsThrottle = s.parse()?;
    nook_engine::resources::block_device(&t.0.device)?;
    Ok(t)
}

/// `--security-opt`: what nook supports of podman's (a profile file is read when the
/// request is made, relative to where it is made).
pub fn parse_security_opt(s: &str) -> Result<SecurityOpt, String> {
    s.parse()
}
