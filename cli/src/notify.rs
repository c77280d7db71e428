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

    fn notice_once(&self, name: &str, text: &str, fallback: Option<&std::path::Path>) {
        crate::logging::notice_once_per_account(name, text, fallback);
    }
}

/// The engine as the command line drives it: this store, config.toml's settings,
/// notices on stderr, format-1 records migrated.
pub fn engine(store_root: Option<std::path::PathBuf>) -> nook_engine::Engine {
    nook_engine::Engine {
        store_root,
        settings: settings(crate::config::current()),
        notify: std::sync::Arc::new(Stderr),
        migrate: Some(crate::request::migrate),
    }
}

/// The engine's settings from config.toml.
pub fn settings(config: &crate::config::Config) -> nook_engine::Settings {
    nook_engine::Settings {
        network_mtu: config.network.mtu,
        registries_config: config.registries.config.clone(),
    }
}

/// The container records of this store, format-1 records migrated as they are read.
pub fn places(
    root: Option<std::path::PathBuf>,
) -> nook_engine::Result<nook_engine::container::record::Places> {
    Ok(
        nook_engine::container::record::Places::open(root)?
            .migrating(Some(crate::request::migrate)),
    )
}
