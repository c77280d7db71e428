//! Flag values clap parses itself (its value parsers), for flags.rs: a bad value fails
//! before anything runs, in one line that names the accepted values. Pure parsers,
//! depending on nothing else of the CLI.

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
