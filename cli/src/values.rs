//! Flag values clap parses itself (its value parsers), for flags.rs: a bad value fails
//! before anything runs, in one line that names the accepted values. Pure parsers,
//! depending on nothing else of the CLI.

use nook_engine::request::{Tmpfs, Volume};

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

/// `-p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]`: checked now, kept as given (the engine
/// binds what it says at each start).
pub fn parse_publish(spec: &str) -> Result<String, String> {
    nook_net::PortMapping::parse(spec)
        .map(|_| spec.to_string())
        .map_err(|e| e.to_string())
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
