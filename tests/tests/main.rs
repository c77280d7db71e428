//! nook's integration tests: one executable, a module per area, run by `bash tests/run.sh`
//! as the unprivileged account (a few steps as root or in the VM lane, below). Every test
//! drives the real `nook` binary (NOOK_BIN) the way a user or a client engine would.
//!
//! Where a new test goes (module: what it covers):
//!
//! | module | commands and flags |
//! |---|---|
//! | `run_exit` | `nook run`'s exit status (podman's codes), errors on bad input |
//! | `run_io` | stdin/stdout/stderr and pipes through `run`, `-i` |
//! | `run_tty` | `run -t` under a terminal: pty, raw mode, SIGWINCH |
//! | `run_signals` | signals to `run` reaching the container, `--init` |
//! | `run_isolation` | every namespace of `run`; the host's mount table untouched |
//! | `run_layout` | /dev, /proc, /sys, masks, the `host` image, `--read-only`, `--tmpfs` |
//! | `run_options` | `-v`, `-e`/`--env-file`, `-w`, `-u`, `--userns keep-id`, `--cap-*`, `--rootfs`, `--rm`, `--name` |
//! | `idmap_run` | subordinate-ID maps through the setuid helpers, `--uidmap`/`--gidmap` |
//! | `idmap_helper_diff` | `nook-newuidmap`/`nook-newgidmap` against shadow's (private /etc/subuid) |
//! | `run_as_root` | `nook run` started by root (run.sh runs it as root) |
//! | `lifecycle` | `run -d`, `ps`, `logs`, `exec`, `stop`, `kill`, `rm`, `wait`, `restart`, `attach`, `cp`, `create`/`start`, `rename`, `top`, `port` |
//! | `exec_join` | `exec` joining a running container (`__exec-pid`) |
//! | `kills` | kill -9 of `pull`, `import`, `load`, the copy driver: nothing left |
//! | `no_store` | an unusable HOME, `--root`/NOOK_ROOT, a missing config file |
//! | `store_reclaim` | `system check [--repair]`, `system prune`, `system df`, `rmi` |
//! | `error_messages` | one line per error, with its fix |
//! | `images_registry` | `pull`, `push`-free registry flows, `images`, `inspect`, `rmi`, `save`/`load`/`import`, `login`, hostile layers |
//! | `images_token_auth` | bearer-token registries |
//! | `unionfs_battery` | `--storage-driver overlay|fuse|copy` against kernel overlayfs |
//! | `unionfs_many_layers` | overlay roots with more layers than one mount page |
//! | `unionfs_teardown` | the FUSE root under kill -9 |
//! | `net_outbound` | `--network nook` outwards: TCP, UDP, DNS, host loopback isolation |
//! | `net_forward` | `-p`/`-P` port forwarding, client addresses, the netstack's lifetime |
//! | `net_icmp` | ping through the netstack |
//! | `cgroup_host` | resource flags on a host that cannot enforce them |
//! | `cgroup_vm` | `--memory`, `--pids-limit`, `--cpus`, `pause`, `stats`, `oci update` with real controllers (VM lane only) |
//! | `engine_api` | the nook-engine library in-process: pull, create, start, wait, rm through its API |
//! | `oci_runtime` | `nook oci ...` (runc's command line) on bundles |
//! | `podman_client` | podman with `--runtime nook-runtime` |
//! | `containerd` | containerd's runc shim and CRI with nook as the runtime binary; `rootful_*` as root (run.sh's root pass, and the VM lane `vm-containerd`), the rest under rootlesskit |
//! | `security` | the escape regression suite, a module per attack area (security/mod.rs) |
//! | `workloads` | a debootstrapped Debian image: apt, dpkg, gcc, git, pip on every driver |
//!
//! Run one area: `NOOK_TESTS="lifecycle security" bash tests/run.sh`; one test or a
//! sub-area: `NOOK_TEST_ARGS=security::fds::` (a libtest name filter).

mod cgroup_host;
mod cgroup_vm;
mod containerd;
mod engine_api;
mod error_messages;
mod exec_join;
mod idmap_helper_diff;
mod idmap_run;
mod images_registry;
mod images_token_auth;
mod kills;
mod lifecycle;
mod net_forward;
mod net_icmp;
mod net_outbound;
mod no_store;
mod oci_runtime;
mod podman_client;
mod run_as_root;
mod run_exit;
mod run_io;
mod run_isolation;
mod run_layout;
mod run_options;
mod run_signals;
mod run_tty;
mod security;
mod store_reclaim;
mod unionfs_battery;
mod unionfs_many_layers;
mod unionfs_teardown;
mod workloads;
