//! Signals sent to nook reach the container's process; `--init` forwards them to the
//! command (pid 2) and reaps zombies.
//!
//! A pid-1 process receives only the signals it has a handler for, so the container traps
//! them. Synchronisation is by a `ready` line, printed after the trap is set; `sleep & wait`
//! keeps the shell in `wait`, which a trapped signal interrupts at once.

use nook_tests::*;

fn forwarded(sig: Signal, init: bool) {
    assert_unprivileged();
    let name = sig.as_str().trim_start_matches("SIG");
    let script = format!("trap 'echo got-{name}; exit 42' {name}; echo ready; sleep 1000 & wait");
    let mut cmd = nook();
    cmd.args(["run", "--rm"]);
    if init {
        cmd.arg("--init");
    }
    cmd.args(["host", "sh", "-c", &script]);
    let mut p = spawn(&mut cmd);
    p.wait_for("ready", TIMEOUT);
    p.signal(sig);
    p.wait_for(&format!("got-{name}"), TIMEOUT);
    let o = p.wait(TIMEOUT);
    o.assert_code(42);
}

#[test]
fn sigterm_reaches_the_container() {
    forwarded(Signal::SIGTERM, false);
}

#[test]
fn sigint_reaches_the_container() {
    forwarded(Signal::SIGINT, false);
}

#[test]
fn sighup_reaches_the_container() {
    forwarded(Signal::SIGHUP, false);
}

#[test]
fn sigusr1_reaches_the_container() {
    forwarded(Signal::SIGUSR1, false);
}

#[test]
fn sigusr2_reaches_the_container() {
    forwarded(Signal::SIGUSR2, false);
}

#[test]
fn sigwinch_reaches_the_container() {
    forwarded(Signal::SIGWINCH, false);
}

#[test]
fn init_forwards_sigterm_to_the_command() {
    forwarded(Signal::SIGTERM, true);
}

#[test]
fn init_forwards_sigusr1_to_the_command() {
    forwarded(Signal::SIGUSR1, true);
}

#[test]
fn under_init_an_untrapped_sigterm_kills_the_command_143() {
    assert_unprivileged();
    let mut cmd = nook();
    cmd.args([
        "run",
        "--rm",
        "--init",
        "host",
        "sh",
        "-c",
        "echo ready $$; exec sleep 1000",
    ]);
    let mut p = spawn(&mut cmd);
    let line = p.wait_for("ready", TIMEOUT);
    assert_eq!(line, "ready 2", "under --init the command is pid 2");
    p.signal(Signal::SIGTERM);
    let o = p.wait(TIMEOUT);
    o.assert_code(143);
}

#[test]
fn init_reaps_orphaned_zombies() {
    assert_unprivileged();
    // The inner shell leaves an orphan that init inherits; once it exits, init must reap
    // it. The container waits (at most 5 s) for its /proc entry to go.
    let script = "pid=$(sh -c 'sleep 0 & echo $!')
        i=0
        while [ -e /proc/$pid ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done
        if [ -e /proc/$pid ]; then echo \"not reaped: $(grep State /proc/$pid/status)\"; else echo reaped; fi
        cat /proc/1/comm";
    let o = run(&["--rm", "--init", "host", "sh", "-c", script]);
    o.success();
    let out = o.out();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("reaped"), "{o}");
    assert_ne!(
        lines.next(),
        Some("sh"),
        "pid 1 should be nook's init, not the command\n{o}"
    );
}
