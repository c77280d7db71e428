//! nook-newgidmap PID INSIDE OUTSIDE COUNT [...]: writes /proc/PID/gid_map from the caller's
//! /etc/subgid ranges, denying setgroups when only the caller's own gid is mapped. Install
//! setuid root: `install -m 4755 -o root nook-newgidmap DIR/`. All logic, and the security
//! reasoning, is in the library (`nook_newuidmap_helper`).

fn main() {
    nook_newuidmap_helper::helper::main_entry(nook_newuidmap_helper::MapKind::Gid)
}
