//! nook-newuidmap PID INSIDE OUTSIDE COUNT [...]: writes /proc/PID/uid_map from the caller's
//! /etc/subuid ranges. Install setuid root: `install -m 4755 -o root nook-newuidmap DIR/`.
//! All logic, and the security reasoning, is in the library (`nook_newuidmap_helper`).

fn main() {
    nook_newuidmap_helper::helper::main_entry(nook_newuidmap_helper::MapKind::Uid)
}
