//! A transient systemd scope with Delegate=yes, asked of the user's systemd manager over
//! the session bus (as podman and crun do), for users whose own cgroup is not theirs to
//! manage (a login session's `session-N.scope` belongs to root).
//!
//! The D-Bus conversation runs in a short-lived forked helper process, not in nook
//! itself: the client library may start threads, and the supervisor must stay
//! single-threaded until it clones the container. The helper asks systemd to start
//! `nook-ID.scope` holding the supervisor's PID; the supervisor then waits until
//! /proc/self/cgroup shows it inside the scope. Nothing connects to the bus unless a
//! scope is needed, so runs that do not need one pay nothing for it.
//!
//! systemd removes the scope, sub-cgroups included, once its last process has exited.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

/// Whether a systemd user manager looks reachable: systemd is the init system and a
/// session bus address or socket exists. (Cheap: no connection is made.)
pub fn reachable() -> bool {
    if !Path::new("/run/systemd/system").is_dir() {
        return false;
    }
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .is_some_and(|d| Path::new(&d).join("bus").exists())
}

/// Moves this process into a new transient scope `unit` (e.g. `nook-ID.scope`) with
/// Delegate=yes, and returns once it is there. The caller must be single-threaded.
pub fn move_into_scope(unit: &str) -> Result<(), String> {
    let me = std::process::id();
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    // SAFETY: the caller is single-threaded (the supervisor before any thread starts), so
    // the child has a consistent copy of the heap and may allocate; it ends with _exit.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(read_end);
            let message = match request_scope(unit, me) {
                Ok(()) => String::new(),
                Err(e) => e,
            };
            let mut w = std::fs::File::from(write_end);
            let _ = w.write_all(message.as_bytes());
            // SAFETY: _exit skips the parent's atexit handlers and buffered output.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut message = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut message);
            let _ = waitpid(child, None);
            if !message.is_empty() {
                return Err(message);
            }
        }
    }
    let suffix = format!("/{unit}");
    let inside = super::files::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| crate::probe::parse_proc_cgroup_v2(&t))
            .is_some_and(|p| p.ends_with(&suffix))
    });
    if inside {
        Ok(())
    } else {
        Err(format!(
            "systemd started {unit} but did not move nook into it within 5 s"
        ))
    }
}

/// The D-Bus call: StartTransientUnit(name, "fail", properties, no aux units).
fn request_scope(unit: &str, pid: u32) -> Result<(), String> {
    use zbus::zvariant::{OwnedObjectPath, Value};
    let conn = zbus::blocking::Connection::session()
        .map_err(|e| format!("cannot connect to the session bus: {e}"))?;
    let manager = zbus::blocking::Proxy::new(
        &conn,
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
    )
    .map_err(|e| format!("systemd user manager: {e}"))?;
    let properties: Vec<(&str, Value)> = vec![
        ("Description", Value::from("nook container")),
        ("PIDs", Value::from(vec![pid])),
        ("Delegate", Value::from(true)),
        ("CollectMode", Value::from("inactive-or-failed")),
    ];
    let aux: Vec<(&str, Vec<(&str, Value)>)> = Vec::new();
    let _job: OwnedObjectPath = manager
        .call("StartTransientUnit", &(unit, "fail", properties, aux))
        .map_err(|e| format!("systemd user manager refused the scope {unit}: {e}"))?;
    Ok(())
}
