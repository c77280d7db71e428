//! Other processes, by pid: what /proc/PID/stat says of them, and pidfds, the handle on
//! one process that a recycled pid cannot fool. The one parser and the one pidfd
//! wrapper for nook: join.rs pins the container it enters with them, the reaper reads
//! its own argument area, and callers (nook's records, the OCI runtime) tell a
//! process they started from a later one with the same pid by its start time.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A process's /proc/PID/stat line. Fields are numbered as in proc(5): 1 the pid, 2 the
/// command name in parentheses (which may itself hold spaces and parentheses, so the
/// fields from 3 on are read after its last `)`), 3 the state, 4 the parent, 22 the
/// start time.
#[derive(Debug, Clone)]
pub struct Stat {
    text: String,
    /// Where field 3 starts.
    after_name: usize,
}

impl Stat {
    /// /proc/PID/stat of `pid`; None when there is no such process (or pid <= 0).
    pub fn of(pid: i32) -> Option<Stat> {
        if pid <= 0 {
            return None;
        }
        Stat::parse(std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// This process's.
    pub fn of_self() -> Option<Stat> {
        Stat::parse(std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// A stat line read by the caller (from a pinned /proc/PID directory, say).
    pub fn parse(text: String) -> Option<Stat> {
        let after_name = text.rfind(')')? + 1;
        Some(Stat { text, after_name })
    }

    /// Field `n` (n >= 3) as text.
    pub fn field(&self, n: usize) -> Option<&str> {
        self.text[self.after_name..]
            .split_whitespace()
            .nth(n.checked_sub(3)?)
    }

    /// Field `n` (n >= 3) as a number.
    pub fn number(&self, n: usize) -> Option<u64> {
        self.field(n)?.parse().ok()
    }

    /// The state letter: R, S, D, Z, T, t, X, ...
    pub fn state(&self) -> Option<char> {
        self.field(3)?.chars().next()
    }

    /// Whether the process has ended: a zombie (its parent has not reaped it yet) or
    /// dead.
    pub fn ended(&self) -> bool {
        matches!(self.state(), Some('Z' | 'X'))
    }

    /// The parent's pid.
    pub fn parent(&self) -> Option<i32> {
        self.field(4)?.parse().ok()
    }

    /// The start time, in clock ticks after boot: with the pid, names one process.
    pub fn start_time(&self) -> Option<u64> {
        self.number(22)
    }
}

/// A pidfd (Linux 5.3+): signals and waits reach the process it was opened for, or
/// nothing, never a later process with a recycled pid. Open it, then check that the pid
/// is still the process meant (its start time, [`Stat`]): from then on it stays so.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// pidfd_open(2). ESRCH: no such process; ENOSYS: a kernel before 5.3.
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(ret as RawFd) }))
    }

    /// pidfd_send_signal(2) of `sig`.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: a pidfd we own, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process has exited (a pidfd turns readable then; a zombie has).
    pub fn exited(&self) -> bool {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    /// Waits until the process has exited; false when `timeout` passed first.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let ms = d.saturating_duration_since(Instant::now()).as_millis();
                    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, left) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return true,
            }
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_after_a_name_with_spaces_and_parentheses() {
        let s = Stat::parse("42 (a b) c) S 7 42 42 0 -1".to_string()).unwrap();
        assert_eq!(s.state(), Some('S'));
        assert_eq!(s.parent(), Some(7));
        assert_eq!(s.number(5), Some(42));
        assert_eq!(s.field(2), None);
        assert!(!s.ended());
        assert!(Stat::parse("7 (sleep) Z 1".to_string()).unwrap().ended());
        assert!(Stat::parse("garbage".to_string()).is_none());
        assert_eq!(Stat::parse("1 (x)".to_string()).unwrap().state(), None);
    }

    #[test]
    fn this_process() {
        let me = Stat::of(std::process::id() as i32).unwrap();
        let again = Stat::of_self().unwrap();
        assert_eq!(me.start_time(), again.start_time());
        assert!(me.start_time().is_some());
        assert_eq!(
            me.parent(),
            Some(std::os::unix::process::parent_id() as i32)
        );
        assert!(!me.ended());
        assert!(Stat::of(0).is_none() && Stat::of(-1).is_none());
    }

    #[test]
    fn pidfd_of_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = match PidFd::open(child.id() as i32) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                eprintln!("SKIP: pidfd_of_a_child: no pidfd_open on this kernel");
                child.kill().unwrap();
                child.wait().unwrap();
                return;
            }
            Err(e) => panic!("pidfd_open: {e}"),
        };
        assert!(!fd.exited());
        assert!(!fd.wait(Some(Duration::from_millis(10))));
        fd.signal(libc::SIGKILL).unwrap();
        assert!(fd.wait(Some(Duration::from_secs(10))));
        assert!(fd.exited());
        child.wait().unwrap();
    }
}
