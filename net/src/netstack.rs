//! The supervisor's handle on a container's network: start after the ID maps are
//! written (before the container is released), stop when the container has exited.
//!
//! ```text
//! Netstack::start(pid, cfg)                       (supervisor, still single-threaded)
//!   bind the -p listeners            ── a busy port fails the run before it starts
//!   fork the netns agent (agent.rs)  ── tap0 created and configured inside, fd back
//!   thread "nook-net":     epoll loop over the tap and host sockets (stack/)
//!   thread "nook-forward": epoll loop over listeners and spliced pairs (forward.rs)
//! Netstack::stop / drop
//!   eventfd → both loops return → every socket closes with its owner → join
//!   → kill and reap the agent       ── no process, thread or socket outlives the run
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::agent::Agent;
use crate::config::{first_nameserver, Config};
use crate::forward::{self, Forwarder};
use crate::policy::Policy;
use crate::stack::{Stack, TOKEN_STOP};
use crate::sys::{self, EventFd};
use crate::tap::TapLink;
use crate::Error;

pub struct Netstack {
    stop: Vec<Arc<EventFd>>,
    threads: Vec<JoinHandle<()>>,
    agent: Agent,
    /// Dropped after `stop` (fields drop after `Drop::drop`): the limit comes back
    /// down once every socket is closed.
    _nofile: RaisedNofile,
}

impl Netstack {
    /// Builds the network of the container whose first process is `container` (host
    /// pid), which must not run its command yet.
    ///
    /// Must be called while this process is single-threaded (it forks the agent).
    pub fn start(container: libc::pid_t, cfg: &Config) -> Result<Netstack, Error> {
        let dns = cfg.dns.unwrap_or_else(host_resolver);
        let listeners = forward::bind_all(&cfg.publish)?;
        let (mut agent, tap) = Agent::spawn(container, cfg)?;
        // One host socket per connection of the container: past 1,024 (the usual soft
        // limit) new connections and -p's accepts would fail. pasta and slirp4netns
        // raise theirs too. The container was cloned before this, and a restart clones
        // it after the previous netstack put the limit back: it keeps its own.
        let nofile = RaisedNofile::raise();
        let io_err = |what: &'static str| move |e: io::Error| Error::Io { what, error: e };
        let mut stack = Stack::new(TapLink::new(tap), cfg, Policy::new(cfg, dns))
            .map_err(io_err("setting up the netstack"))?;
        let mut stop = Vec::new();
        let mut threads = Vec::new();
        let net_stop = Arc::new(EventFd::new().map_err(io_err("eventfd"))?);
        stack
            .epoll
            .add(net_stop.fd(), sys::IN, TOKEN_STOP)
            .map_err(io_err("epoll"))?;
        stop.push(net_stop);
        threads.push(
            std::thread::Builder::new()
                .name("nook-net".into())
                .spawn(move || loop {
                    match stack.turn(None) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            tracing::error!("the container's network stopped: {e}");
                            return;
                        }
                    }
                })
                .map_err(io_err("starting the netstack thread"))?,
        );
        if !listeners.is_empty() {
            let fwd_stop = Arc::new(EventFd::new().map_err(io_err("eventfd"))?);
            let channel = agent
                .channel
                .take()
                .expect("the agent's channel is unused so far");
            let mut fwd = Forwarder::new(listeners, channel, fwd_stop.fd())
                .map_err(io_err("setting up port forwarding"))?;
            stop.push(fwd_stop);
            threads.push(
                std::thread::Builder::new()
                    .name("nook-forward".into())
                    .spawn(move || {
                        if let Err(e) = fwd.run() {
                            tracing::error!("port forwarding stopped: {e}");
                        }
                    })
                    .map_err(io_err("starting the port-forward thread"))?,
            );
        }
        Ok(Netstack {
            stop,
            threads,
            agent,
            _nofile: nofile,
        })
    }

    /// Stops both loops, closes every socket and reaps the agent (idempotent).
    pub fn stop(&mut self) {
        for s in &self.stop {
            s.signal();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stop.clear();
        self.agent.stop();
    }
}

impl Drop for Netstack {
    fn drop(&mut self) {
        self.stop();
    }
}

/// This process's RLIMIT_NOFILE soft limit raised to its hard limit while at least one
/// netstack lives; the previous soft limit is restored when the last one is dropped.
struct RaisedNofile;

/// How many netstacks hold the raise, and the soft limit from before it.
static NOFILE: std::sync::Mutex<(usize, libc::rlim_t)> = std::sync::Mutex::new((0, 0));

impl RaisedNofile {
    fn raise() -> RaisedNofile {
        let mut held = NOFILE.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 == 0 {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit/setrlimit read and write the rlimit struct we own.
            unsafe {
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    held.1 = lim.rlim_cur;
                    if lim.rlim_cur < lim.rlim_max {
                        lim.rlim_cur = lim.rlim_max;
                        // Best effort: without it the network works up to the old limit.
                        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                    }
                }
            }
        }
        held.0 += 1;
        RaisedNofile
    }

    /// This process's soft limit before the first raise (for tests).
    #[cfg(test)]
    fn previous() -> libc::rlim_t {
        NOFILE.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

impl Drop for RaisedNofile {
    fn drop(&mut self) {
        let mut held = NOFILE.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        if held.0 == 0 {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: as in `raise`.
            unsafe {
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                    lim.rlim_cur = held.1.min(lim.rlim_max);
                    let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
            }
        }
    }
}

/// The host's resolver: the first nameserver of /etc/resolv.conf, port 53 (glibc's
/// default 127.0.0.1 when there is none).
fn host_resolver() -> SocketAddr {
    let ip = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|t| first_nameserver(&t))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, 53)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soft() -> libc::rlim_t {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        lim.rlim_cur
    }

    #[test]
    fn raised_while_held_and_restored_after() {
        let before = soft();
        let mut hard = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
        let a = RaisedNofile::raise();
        let b = RaisedNofile::raise();
        assert_eq!(soft(), hard.rlim_max);
        assert_eq!(RaisedNofile::previous(), before);
        drop(a);
        assert_eq!(soft(), hard.rlim_max, "still held by the second");
        drop(b);
        assert_eq!(soft(), before);
    }
}
