//! How an error reaches the user: one line, the cause chain with each fragment once.
//!
//! anyhow's `{:#}` joins an error and every `source()` below it with ": ". That repeats
//! itself wherever a message already quotes its cause: a library error whose text
//! formats the error it also returns as its source, or a context written around an
//! error it quotes (`-p 80:80/tcp: cannot listen ...: Permission denied: -p 80:80/tcp:
//! cannot listen ...: Permission denied`). The error types are written not to do that
//! (a variant either shows its cause or returns it as `source()`, not both); [`Chain`]
//! makes the printed line right whatever a dependency does: a cause whose text the line
//! already holds is left out, one that holds the whole line so far replaces it, and one
//! that starts by naming again what the line ends with ("loading /x.tar" around
//! "/x.tar: not an archive") loses that start.
//! Every place nook prints or records an anyhow error for a person goes through it
//! (the rule itself, [`join`], is the engine's: it records errors in container states).

use std::fmt;

pub use nook_engine::error::join;

/// Displays an error and its causes, `outer: inner: ...`, each fragment once.
pub struct Chain<'a>(pub &'a anyhow::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join(self.0.chain().map(|c| c.to_string())))
    }
}

/// A reader that went away (`nook ps -a | head -1`) ends nook quietly with status 0, as
/// coreutils and podman end: no panic message from `println!`, no error line. (Rust
/// ignores SIGPIPE, so a write to a closed pipe is an EPIPE error: `println!` panics on
/// it, explicit writes return it.) The default hook still reports every other panic.
pub fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

/// Whether `e` is (or was caused by) writing to a reader that went away.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// podman's exit status for a failure: the container's recorded code for a start
/// failure, 126/127 where the command could not be run, else 125.
pub fn exit_code_of(e: &anyhow::Error) -> i32 {
    if let Some(e) = e.downcast_ref::<nook_engine::Error>() {
        return e.exit_code();
    }
    e.downcast_ref::<nook_rootless::Error>()
        .map_or(125, nook_rootless::Error::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    /// A fragment of `line` (its parts between ": " and "; ") of at least `min` characters
    /// that appears in it more than once, if any: what a repeated cause looks like.
    fn repeated_fragment(line: &str, min: usize) -> Option<String> {
        line.split(": ")
            .flat_map(|part| part.split("; "))
            .map(str::trim)
            .filter(|f| f.chars().count() >= min)
            .find(|f| line.matches(f).count() > 1)
            .map(str::to_string)
    }

    /// A library error that both shows its source and returns it: what nook's own types
    /// did before, and what a dependency may still do.
    #[derive(Debug)]
    struct Doubled(std::io::Error);

    impl fmt::Display for Doubled {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "image store /s: {}", self.0)
        }
    }

    impl std::error::Error for Doubled {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// A wrapper that shows its inner error's text as its own and returns it as source.
    #[derive(Debug)]
    struct Wrapper(anyhow::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.0.as_ref())
        }
    }

    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn a_source_the_message_already_shows_is_not_repeated() {
        let e = anyhow::Error::new(Doubled(enospc()));
        assert_eq!(
            format!("{e:#}"),
            "image store /s: No space left on device (os error 28): No space left on device \
             (os error 28)",
            "anyhow repeats it (why Chain exists)"
        );
        assert_eq!(
            Chain(&e).to_string(),
            "image store /s: No space left on device (os error 28)"
        );
        let e = anyhow::Error::new(Wrapper(anyhow::anyhow!(
            "-p 0.0.0.0:80:80/tcp: cannot listen on 0.0.0.0:80: Permission denied"
        )));
        let line = Chain(&e).to_string();
        assert_eq!(
            line,
            "-p 0.0.0.0:80:80/tcp: cannot listen on 0.0.0.0:80: Permission denied"
        );
        assert_eq!(repeated_fragment(&line, 12), None);
    }

    #[test]
    fn contexts_keep_their_order_and_quoting_contexts_are_not_doubled() {
        let e = Err::<(), _>(enospc())
            .context("writing the blob")
            .context("importing x.tar")
            .unwrap_err();
        assert_eq!(
            Chain(&e).to_string(),
            "importing x.tar: writing the blob: No space left on device (os error 28)"
        );
        // A context that quotes the error it wraps.
        let inner = enospc();
        let text = format!("writing /s/blob: {inner}");
        let e = Err::<(), _>(inner).context(text).unwrap_err();
        assert_eq!(
            Chain(&e).to_string(),
            "writing /s/blob: No space left on device (os error 28)"
        );
        // A context that only restates the start of what it wraps gives way to it.
        let e = Err::<(), _>(anyhow::anyhow!("-p 80:80/tcp: cannot listen: in use"))
            .context("-p 80:80/tcp")
            .unwrap_err();
        assert_eq!(Chain(&e).to_string(), "-p 80:80/tcp: cannot listen: in use");
        // A context naming the file, around an error that starts with it again.
        let e = Err::<(), _>(anyhow::anyhow!("/x/a.tar: not an image archive"))
            .context("loading /x/a.tar")
            .unwrap_err();
        assert_eq!(
            Chain(&e).to_string(),
            "loading /x/a.tar: not an image archive"
        );
        // A start that only looks alike is kept.
        let e = Err::<(), _>(anyhow::anyhow!("a.tar: bad"))
            .context("loading /x/b.tar")
            .unwrap_err();
        assert_eq!(Chain(&e).to_string(), "loading /x/b.tar: a.tar: bad");
    }

    #[test]
    fn finds_repeated_fragments() {
        assert_eq!(
            repeated_fragment(
                "No space left on device (os error 28): No space left on device (os error 28)",
                12
            )
            .as_deref(),
            Some("No space left on device (os error 28)")
        );
        assert_eq!(repeated_fragment("a: b: a: b", 12), None, "short ones pass");
        assert_eq!(
            repeated_fragment("pulling x: layer y: connection reset; run it again", 12),
            None
        );
    }
}
