//! The engine's notices and warnings, on stderr as nook says everything: `nook: ...`.

use std::io::IsTerminal;

/// [`nook_engine::Notify`] for a command line: stderr, and "interactive" when stderr is
/// a terminal (a notice repeated on every run reaches people, not logs).
pub struct Stderr;

impl nook_engine::Notify for Stderr {
    fn notice(&self, text: &str) {
        eprintln!("nook: {text}");
    }

    fn warn(&self, text: &str) {
        eprintln!("nook: warning: {text}");
    }

    fn interactive(&self) -> bool {
        std::io::stderr().is_terminal()
    }
}

/// The engine's settings from config.toml.
pub fn settings(config: &crate::config::Config) -> nook_engine::Settings {
    nook_engine::Settings {
        network_mtu: config.network.mtu,
        registries_config: config.registries.config.clone(),
    }
}
