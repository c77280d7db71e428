//! See main.rs: this module's attempts are listed there and in docs/security.md.
