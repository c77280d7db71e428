//! nook's engine: the library that makes containers from a [`RunRequest`].
//!
//! The CLI (`cli/`) parses flags into a request and formats what comes back; the engine
//! does the work below that line and keeps what was asked in each container's record.

pub mod request;

pub use request::RunRequest;
