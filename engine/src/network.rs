//! `--network`, `-p` and `-P` → what the container's network is.
//!
//! `nook` (the default) is the userspace network of the net crate: the container gets
//! its own namespace with tap0, and the supervisor runs the netstack (`RunOptions::network`);
//! `none` leaves the new namespace with `lo` only; `host` shares the host's. Options
//! after `nook:` and the `-p` syntax are parsed by `nook_net::config`.

use std::path::{Path, PathBuf};

use crate::bail;
use crate::error::{Context, Result};
use nook_net::{Config, PortMapping, Proto};

use crate::{Notify, RunRequest, Settings};

pub struct NetworkChoice {
    /// Share the host's network namespace.
    pub host: bool,
    /// The userspace network, with its published ports.
    pub nook: Option<Config>,
}

pub fn choose(
    args: &RunRequest,
    settings: &Settings,
    notify: &dyn Notify,
) -> Result<NetworkChoice> {
    let (mode, options) = args.network.split_once(':').unwrap_or((&args.network, ""));
    let mut choice = match (mode, options) {
        ("none", "") => NetworkChoice {
            host: false,
            nook: None,
        },
        ("host", "") => NetworkChoice {
            host: true,
            nook: None,
        },
        ("nook" | "slirp4netns" | "pasta", _) => NetworkChoice {
            host: false,
            nook: Some(with_config_mtu(
                Config::parse_options(options)?,
                options,
                settings,
            )),
        },
        _ => bail!(
            "unsupported --network {:?}: use nook[:allow_host_loopback=true,mtu=N,ipv6=false,\
             dns=IP[:PORT]] (the default: a private network with outbound access), none \
             (loopback only) or host (the host's network)",
            args.network
        ),
    };
    if args.publish.is_empty() && !args.publish_all {
        return Ok(choice);
    }
    match &mut choice.nook {
        Some(cfg) => {
            for spec in &args.publish {
                cfg.publish.extend_from_slice(spec.mappings());
            }
        }
        None if choice.host => {
            notify.notice(
                "-p/-P are ignored with --network=host: the container uses the host's ports",
            );
        }
        None => {
            bail!("-p/-P need --network=nook: with --network=none nothing can reach the container")
        }
    }
    Ok(choice)
}

/// `[network] mtu` from config.toml, unless the options give `mtu=` themselves.
fn with_config_mtu(mut cfg: Config, options: &str, settings: &Settings) -> Config {
    let explicit = options
        .split(',')
        .any(|o| o.trim_start().starts_with("mtu="));
    if let (false, Some(mtu)) = (explicit, settings.network_mtu) {
        tracing::debug!("network: MTU {mtu} from the config file");
        cfg.mtu = mtu;
    }
    cfg
}

impl NetworkChoice {
    /// The published ports as `nook port` shows them: `HOSTIP:HOSTPORT->CTRPORT/PROTO`
    /// (port 0: a free port the kernel picks at bind time).
    pub fn published(&self) -> Vec<String> {
        let Some(cfg) = &self.nook else {
            return Vec::new();
        };
        cfg.publish
            .iter()
            .map(|p| {
                let proto = match p.proto {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                };
                format!("{}->{}/{proto}", p.host, p.ctr_port)
            })
            .collect()
    }

    /// `-P`: every port the image exposes, on a free host port each (reported on stderr).
    pub fn publish_all(
        &mut self,
        args: &RunRequest,
        exposed: Option<Vec<String>>,
        notify: &dyn Notify,
    ) -> Result<()> {
        let Some(cfg) = self.nook.as_mut().filter(|_| args.publish_all) else {
            return Ok(());
        };
        let Some(exposed) = exposed.filter(|e| !e.is_empty()) else {
            notify.notice("-P: the image exposes no ports (it declares no ExposedPorts)");
            return Ok(());
        };
        for port in exposed {
            let (num, proto) = port.split_once('/').unwrap_or((&port, "tcp"));
            let proto = match proto {
                "udp" => Proto::Udp,
                "tcp" => Proto::Tcp,
                _ => continue,
            };
            let ctr_port: u16 = num
                .parse()
                .with_context(|| format!("the image exposes a bad port {port:?}"))?;
            // Port 0: the kernel picks a free one when the listener is bound; both
            // families, as for `-p` without a host IP.
            cfg.publish.push(PortMapping {
                host: "0.0.0.0:0".parse().expect("a valid address"),
                ctr_port,
                proto,
                all_families: true,
            });
        }
        Ok(())
    }

    /// The container's /etc/resolv.conf for the userspace network (the netstack's DNS
    /// address, with the host's search domains and options); None for none and host.
    pub fn write_resolv_conf(&self, dir: &Path) -> Result<Option<PathBuf>> {
        if self.nook.is_none() {
            return Ok(None);
        }
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let path = dir.join("resolv.conf");
        let text = nook_net::config::container_resolv_conf(&host);
        nook_rootless::state::write_file(&path, text, nook_rootless::state::SHARED_FILE)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(path))
    }
}
