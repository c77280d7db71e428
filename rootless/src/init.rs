//! `--init`: a minimal pid 1 that reaps zombies and forwards signals to the command.
//!
//! A command that runs as pid 1 gets no default signal actions (the kernel drops
//! signals pid 1 has no handler for) and inherits every orphan in the namespace. Under
//! `--init` the container's first process stays here instead: it keeps every signal
//! blocked and takes them with sigwait (blocked signals are queued even for pid 1),
//! forwards them to the command, reaps whatever exits, and leaves with the command's
//! status, 128+N for a signal, as a shell would.
//!
//! The reaper stays nook, and shares the container's pid namespace, for the container's
//! whole life: it keeps no descriptor but its stdio, is non-dumpable (fds.rs: its fd/,
//! exe, environ and memory are out of the container's reach) and blanks its command
//! line, which anyone may read (/proc/1/cmdline would show the caller's `nook run ...`,
//! its `-e` values included). Host tools reach the container's namespaces through the
//! command instead (`join::namespace_holder`).

use std::fs::File;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Forks; the child runs `command` with the report pipe (it execs or exits), this process
/// becomes the reaper and never returns. The reaper closes its copy of the report pipe
/// at once: the supervisor reads it to EOF before it starts forwarding signals.
pub(crate) fn reap_and_forward(mut report: File, command: impl FnOnce(File)) -> ! {
    let all = SigSet::all();
    let _ = all.thread_block();
    // SAFETY: the container's first process is single-threaded (it was cloned from a
    // single-threaded supervisor and started no thread).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            command(report);
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(125) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(report);
            crate::fds::close_all_except(&[0, 1, 2]);
            crate::exec::reset_dispositions();
            hide_command_line();
            reaper_loop(child, &all)
        }
        Err(e) => {
            // The supervisor reads the report pipe: it says why the run failed.
            crate::sync::send_report(
                &mut report,
                &crate::sync::Report::SetupFailed(format!("--init: fork: {e}")),
            );
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(125) }
        }
    }
}

fn reaper_loop(command: Pid, signals: &SigSet) -> ! {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(status) = reap_all(command) {
                    // SAFETY: _exit is always safe to call.
                    unsafe { libc::_exit(status) }
                }
            }
            Ok(sig) => {
                let _ = kill(command, sig);
            }
            Err(_) => {}
        }
    }
}

/// Reaps every exited process; returns the command's status once it has exited.
fn reap_all(command: Pid) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => result = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => {
                result = Some(128 + sig as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(_) => {}
        }
    }
}

/// Overwrites this process's argument area (what /proc/PID/cmdline shows) with "nook-init".
/// The reaper's is the caller's `nook run ...` command line, readable from the container.
fn hide_command_line() {
    let Some(stat) = crate::process::Stat::of_self() else {
        return;
    };
    // arg_start and arg_end are fields 48 and 49 (proc(5)).
    let field = |n: usize| stat.field(n).and_then(|f| f.parse::<usize>().ok());
    let (Some(start), Some(end)) = (field(48), field(49)) else {
        return;
    };
    if end <= start {
        return;
    }
    let name = b"nook-init";
    let len = end - start;
    // SAFETY: [arg_start, arg_end) is this process's own argument area, on its initial
    // stack, mapped and writable; the reaper never reads its arguments again (Rust's
    // `std::env::args` would, and is not called after this point).
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, len);
        area.fill(0);
        let n = name.len().min(len.saturating_sub(1));
        area[..n].copy_from_slice(&name[..n]);
    }
}
