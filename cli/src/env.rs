//! The container's environment: defaults as podman sets them, then the image's Env,
//! then `--env-file`s, then `-e` flags, later ones winning.

use std::path::Path;

use anyhow::{Context, Result};

use crate::flags::RunArgs;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn build(
    args: &RunArgs,
    home: &str,
    hostname: &str,
    image_env: &[String],
) -> Result<Vec<String>> {
    let mut env = Environment::default();
    env.set("PATH", DEFAULT_PATH);
    env.set("container", "nook");
    env.set("HOME", home);
    env.set("HOSTNAME", hostname);
    if args.tty {
        env.set("TERM", "xterm");
    }
    for assignment in image_env.iter().filter(|a| a.contains('=')) {
        env.assign(assignment);
    }
    for file in &args.env_file {
        for line in read_env_file(file)? {
            env.assign(&line);
        }
    }
    for assignment in &args.env {
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

    /// `KEY=VALUE`, or `KEY` alone to copy nook's own value (skipped when unset).
    fn assign(&mut self, assignment: &str) {
        match assignment.split_once('=') {
            Some((key, value)) => self.set(key, value),
            None => {
                if let Ok(value) = std::env::var(assignment) {
                    self.set(assignment, &value);
                }
            }
        }
    }
}

fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --env-file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_assignments_win_and_bare_keys_copy() {
        let mut env = Environment::default();
        env.set("PATH", "/bin");
        env.assign("PATH=/usr/bin");
        env.assign("FOO=a=b");
        env.assign("NOOK_TEST_SURELY_UNSET_VARIABLE");
        assert_eq!(env.vars, vec!["PATH=/usr/bin", "FOO=a=b"]);
    }
}
