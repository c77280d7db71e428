//! `--init`: a minimal pid 1 that reaps zombies and forwards signals to the command.
//!
//! A command that runs as pid 1 gets no default signal actions (the kernel drops
//! signals pid 1 has no handler for) and inherits every orphan in the namespace. Under
//! `--init` the container's first process stays here instead: it keeps every signal
//! blocked and takes them with sigwait (blocked signals are queued even for pid 1),
//! forwards them to the command, reaps whatever exits, and leaves with the command's
//! status, 128+N for a signal, as a shell would.

use std::fs::File;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Forks; the child runs `command` with the report pipe (it execs or exits), this process
/// becomes the reaper and never returns. The reaper closes its copy of the report pipe
/// at once: the supervisor reads it to EOF before it starts forwarding signals.
pub(crate) fn reap_and_forward(report: File, command: impl FnOnce(File)) -> ! {
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
            reaper_loop(child, &all)
        }
        Err(e) => {
            eprintln!("nook init: fork: {e}");
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
