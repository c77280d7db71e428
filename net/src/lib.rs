//! nook's userspace network: a container gets its own network namespace with one tap
//! device, and a user-space TCP/IP stack (smoltcp) on the host side turns the
//! container's flows into ordinary host sockets. No root, no capabilities on the host,
//! no external binary (no slirp4netns, no pasta); no packet leaves with a forged address.
//!
//! ```text
//!  container netns                      │ supervisor (host)
//!  app ─► kernel TCP/IP ─► tap0 ═══fd═══╪═► "nook-net" thread: epoll
//!   10.0.2.100/24, MTU 65520            │     smoltcp (any-IP) ⇄ host sockets   stack/
//!   gw 10.0.2.2, DNS 10.0.2.3           │     UDP/DNS flows, policy              policy.rs
//!  127.0.0.1:CTR ◄── inner socket ◄─────╪── "nook-forward" thread: -p listeners,
//!   (born in the netns by the agent)    │     splice(2) both ways                forward.rs
//!  agent process (joined the netns) ────╪── tap creation, netlink, socket births agent.rs
//! ```
//!
//! Modules, smoltcp-style layering: `config` and `policy` are pure (what the network
//! looks like, where a flow goes); `frame` writes packets and `frag` reassembles and
//! cuts IP fragments; `link`/`tap` are the devices behind one trait, so `stack` runs the
//! same against the tap or in-memory frames (unit tests, fuzzing); `sys` holds every
//! system call of the data path; `netstack` starts and stops the threads for the
//! supervisor.

pub mod agent;
pub mod config;
pub mod forward;
pub mod frag;
pub mod frame;
pub mod link;
pub mod netlink;
pub mod netstack;
pub mod policy;
pub mod stack;
pub mod sys;
pub mod tap;

pub use config::{Config, PortMapping, Proto};
pub use netstack::Netstack;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or option is wrong; the message says which and what is expected.
    #[error("{0}")]
    Config(String),
    /// The network could not be set up; the message says what failed and what to do.
    #[error("{0}")]
    Setup(String),
    /// Shows its cause rather than returning it as `source()`, so a chain printer does
    /// not say it twice.
    #[error("{what}: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
}
