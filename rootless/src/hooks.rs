//! OCI hooks: programs the runtime runs at fixed points of a container's life, each
//! given the container's state JSON on stdin.
//!
//! createRuntime, createContainer (and the deprecated prestart) run when `create` has
//! parked the container, poststart after `start`, poststop at `delete`, all from the
//! runtime's side; startContainer runs inside the container, after `start` released it
//! and before the user's process is executed. A hook that fails or outlives its
//! `timeout` fails the operation (poststart and poststop ones only warn, as the spec
//! says).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

/// Runs `hooks` in order, each with `state` on stdin; stops at the first failure.
/// `stage` names them in errors ("createRuntime").
pub fn run(stage: &str, hooks: &[Hook], state: &[u8]) -> Result<()> {
    for hook in hooks {
        run_one(hook, state).map_err(|why| {
            Error::Setup(format!("{stage} hook {}: {why}", hook.path().display()))
        })?;
    }
    Ok(())
}

fn run_one(hook: &Hook, state: &[u8]) -> std::result::Result<(), String> {
    // `create` refuses such a spec (bundle.rs); this keeps a PATH lookup on the host
    // impossible whatever the caller checked.
    if !hook.path().is_absolute() {
        return Err("not an absolute path (the runtime spec requires one)".into());
    }
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args().as_deref() {
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().as_deref().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may exit without reading its input: a broken pipe is not its failure.
        let _ = stdin.write_all(state);
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("it failed ({status})")),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "it did not finish within its timeout of {}s and was killed",
                timeout.unwrap_or_default().as_secs()
            ));
        }
        // No child-exit notification is available without a signal handler or a thread
        // here (this may run in the container's single-threaded first process).
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hook_reads_state_on_stdin() {
        let dir = std::env::temp_dir().join(format!("nook-hook-test-{}", std::process::id()));
        let out = dir.with_extension("out");
        let h = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {}"]}}"#,
            out.display()
        ));
        run("poststop", &[h], b"{\"id\":\"x\"}").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"id\":\"x\"}");
        let _ = std::fs::remove_file(out);
    }

    #[test]
    fn failing_and_slow_hooks_are_errors() {
        let fail = hook(r#"{"path":"/bin/false"}"#);
        assert!(run("prestart", &[fail], b"{}").is_err());
        let relative = hook(r#"{"path":"true"}"#);
        let err = run("prestart", &[relative], b"{}").unwrap_err().to_string();
        assert!(err.contains("not an absolute path"), "{err}");
        let slow = hook(r#"{"path":"/bin/sleep","args":["sleep","5"],"timeout":1}"#);
        let err = run("prestart", &[slow], b"{}").unwrap_err().to_string();
        assert!(err.contains("timeout"), "{err}");
    }
}
