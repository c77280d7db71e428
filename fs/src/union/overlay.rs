//! The kernel overlayfs driver.
//!
//! Nothing is mounted here: this module only describes the mount. The description
//! becomes the OCI Spec's mount at `/` (type `overlay`), and the container's first
//! process performs it inside its own user and mount namespace, before pivot_root,
//! where it holds CAP_SYS_ADMIN over that mount namespace. Data path after that is the
//! kernel's alone: no byte of the container's I/O passes through nook.
//!
//! Options: `lowerdir=` topmost first (overlayfs's order, the reverse of a manifest's),
//! `upperdir=` and `workdir=` from the container's layer, and `userxattr`, which makes
//! overlayfs read and write `user.overlay.*` xattrs (the only ones an unprivileged
//! mounter may set) and is required for a mount in a user namespace. In that mode
//! overlayfs turns off redirect_dir, metacopy and index, so renaming a directory that
//! exists in a lower layer gives EXDEV, as in the FUSE driver.
//!
//! Options longer than mount(2)'s page (more than about 40 layers) are mounted by the
//! child through fsconfig's `lowerdir+`, one layer at a time (rootless overlay_api.rs).

use crate::union::{ContainerLayer, Layers, Result, UnionError};

/// The overlayfs mount for a root made of `layers` under `container`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    pub source: String,
    pub typ: String,
    /// Mount data, one option per entry (joined with `,` by the mounter).
    pub options: Vec<String>,
}

/// overlayfs separates lower dirs with `:` and options with `,`; both are escaped
/// with a backslash inside a path.
fn escape(p: &std::path::Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ':' | ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub fn mount_for(layers: &Layers, container: &ContainerLayer) -> Result<OverlayMount> {
    if layers.lower.is_empty() {
        return Err(UnionError::Other(
            "overlay needs at least one read-only layer".into(),
        ));
    }
    let lower: Vec<String> = layers.top_down().map(escape).collect();
    let options = vec![
        format!("lowerdir={}", lower.join(":")),
        format!("upperdir={}", escape(&container.diff())),
        format!("workdir={}", escape(&container.work())),
        "userxattr".to_string(),
    ];
    Ok(OverlayMount {
        source: "overlay".into(),
        typ: "overlay".into(),
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn topmost_first_and_escaped() {
        let layers = Layers {
            lower: vec![PathBuf::from("/l/base"), PathBuf::from("/l/a:b,c")],
        };
        let c = ContainerLayer {
            dir: PathBuf::from("/c"),
        };
        let m = mount_for(&layers, &c).unwrap();
        assert_eq!(m.options[0], "lowerdir=/l/a\\:b\\,c:/l/base");
        assert_eq!(m.options[1], "upperdir=/c/diff");
        assert_eq!(m.options[2], "workdir=/c/work");
        assert_eq!(m.options[3], "userxattr");
    }

    #[test]
    fn many_layers_are_described_whole() {
        let layers = Layers {
            lower: (0..200)
                .map(|i| PathBuf::from(format!("/a/long/path/to/layer/number/{i:040}")))
                .collect(),
        };
        let c = ContainerLayer {
            dir: PathBuf::from("/c"),
        };
        let m = mount_for(&layers, &c).unwrap();
        assert_eq!(m.options[0].matches(':').count(), 199);
    }
}
