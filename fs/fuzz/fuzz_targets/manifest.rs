//! Manifests, indexes and image configs as a hostile registry serves them. The first
//! byte picks the Content-Type the registry claims and the layer count the config
//! must agree with; the rest is the document. No panic; an index's platform selection
//! either finds a manifest descriptor or says which platforms exist.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nook_fs::manifest::{layer_compression, parse_config, parse_document, Document, Platform};

const CONTENT_TYPES: [&str; 6] = [
    "",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json; charset=utf-8",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, doc)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[selector as usize % CONTENT_TYPES.len()];
    match parse_document(content_type, doc) {
        Ok(Document::Index(index)) => {
            for wanted in ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"] {
                let wanted = Platform::parse(wanted).expect("a valid platform");
                if let Ok(d) = index.select(&wanted) {
                    assert!(d.platform.is_some());
                }
            }
        }
        Ok(Document::Manifest(m)) => {
            for l in &m.layers {
                layer_compression(&l.media_type).expect("parse_document checked every layer");
            }
        }
        Err(_) => {}
    }
    let _ = parse_config(doc, (selector / 8) as usize);
});
