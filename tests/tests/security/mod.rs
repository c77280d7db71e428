//! nook's escape regression suite: each test is an attempt, made as an attacker would
//! from inside a container (or from another account), that must be refused, with the
//! refusal asserted. Run unprivileged by `bash tests/run.sh` like every container test;
//! docs/security.md has the table of attempts, expected results and the peer CVEs each
//! covers. One module per area:
//!
//! - `fds`: descriptors of the caller or of nook reaching a container (run, exec,
//!   create/start, detached), `-w`/`-v` through /proc/self/fd and /proc/self/cwd
//! - `exe`: the nook binary through /proc/PID/exe
//! - `signals`: dispositions and mask a container inherits; TIOCSTI into the caller's
//!   terminal
//! - `seccomp`: the default profile's refusals, `--security-opt seccomp=`, `--privileged`
//! - `paths`: symlink swaps on volume, tmpfs and workdir destinations during setup
//! - `proc_sys`: writes to /proc/sys, /proc/sysrq-trigger, /sys; masked /proc files;
//!   proc or sysfs mounted anew; ptrace of nook's processes
//! - `network`: the host's abstract unix sockets and loopback from `--network nook`
//! - `cross_user`: another account's containers and store
//! - `bundles`: hostile OCI bundles given to `nook oci create/run`
//! - `files`: what nook writes, whatever the umask; the runtime directory's fallback
//! - `fuse`: the FUSE union server confined to its layers

mod bundles;
mod cross_user;
mod exe;
mod fds;
mod files;
mod fuse;
mod network;
mod paths;
mod proc_sys;
mod seccomp;
mod signals;
