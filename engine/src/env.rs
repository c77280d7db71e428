//! The container's environment: defaults as podman sets them, then the image's Env,
//! then the request's (`--env-file`s, then `-e` flags, resolved when it was made),
//! later ones winning.

use crate::error::Result;
use crate::RunRequest;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn build(
    req: &RunRequest,
    home: &str,
    hostname: &str,
    image_env: &[String],
) -> Result<Vec<String>> {
    let mut env = Environment::default();
    env.set("PATH", DEFAULT_PATH);
    env.set("container", "nook");
    env.set("HOME", home);
    env.set("HOSTNAME", hostname);
    if req.tty {
        env.set("TERM", "xterm");
    }
    for assignment in image_env.iter().filter(|a| a.contains('=')) {
        env.assign(assignment);
    }
    for assignment in &req.env {
        env.assign(assignment);
    }
    Ok(env.vars)
}

#[derive(Default)]
struct Environment {
    vars: Vec<String>,
}

impl Environment {
    fn set(&mut self, key: &str, value: &str) {
        self.vars
            .retain(|v| v.split_once('=').map(|(k, _)| k) != Some(key));
        self.vars.push(format!("{key}={value}"));
    }

    /// `KEY=VALUE` (an image's Env entry without `=` is skipped by the caller; the
    /// request's were resolved when it was made).
    fn assign(&mut self, assignment: &str) {
        if let Some((key, value)) = assignment.split_once('=') {
            self.set(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_assignments_win() {
        let mut env = Environment::default();
        env.set("PATH", "/bin");
        env.assign("PATH=/usr/bin");
        env.assign("FOO=a=b");
        assert_eq!(env.vars, vec!["PATH=/usr/bin", "FOO=a=b"]);
    }
}
