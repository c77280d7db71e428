//! Image references as a user (or a hostile registries.conf, a Dockerfile, a script)
//! writes them. Beyond "no panic": a qualified reference prints as text that parses
//! back to the same reference; short names resolve to candidates that are all
//! qualified and print back the same way; platform strings (`--platform`) too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nook_fs::manifest::Platform;
use nook_fs::reference::{parse, Parsed, RegistriesConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(p) = Platform::parse(text) {
        let _ = Platform::parse(&p.to_string());
    }
    let Ok(parsed) = parse(text) else {
        return;
    };
    let candidates = match &parsed {
        Parsed::Qualified(r) => vec![r.clone()],
        Parsed::Short { .. } => RegistriesConfig::default().candidates(&parsed),
    };
    for r in candidates {
        let shown = r.to_string();
        match parse(&shown) {
            Ok(Parsed::Qualified(again)) => assert_eq!(again, r, "{text:?} -> {shown:?}"),
            other => panic!("{text:?} printed as {shown:?}, which parses as {other:?}"),
        }
        let _ = (r.manifest_ref(), r.tagged_name(), r.name());
    }
});
