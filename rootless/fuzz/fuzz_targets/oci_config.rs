//! A hostile bundle's config.json through every step `nook oci create` takes before
//! anything is spawned: parsing with the field named (`bundle::parse_config`), the
//! bundle checks (ociVersion, hooks, execve's limits), the seccomp profile's compiler,
//! and the spawn plan (namespaces, ID maps, the command) once a user namespace and a
//! map are added as create adds them. Pure: no file is read, nothing is created. Beyond
//! "no panic": a spec that passes the checks serialises and parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nook_rootless::bundle;
use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType};

fuzz_target!(|data: &[u8]| {
    let Ok(mut spec) = bundle::parse_config(data) else {
        return;
    };
    if bundle::check_spec(&spec).is_err() {
        return;
    }
    // What create saves as the container's config.json, and later steps read back.
    let text = serde_json::to_vec(&spec).expect("a parsed spec serialises");
    bundle::parse_config(&text).expect("a checked spec parses back");
    if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        let _ = nook_rootless::seccomp::compile(profile);
    }
    // What create adds for an unprivileged caller: a user namespace and a map.
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if !namespaces.iter().any(|n| n.typ() == LinuxNamespaceType::User) {
        let mut userns = LinuxNamespace::default();
        userns.set_typ(LinuxNamespaceType::User);
        namespaces.insert(0, userns);
        linux.set_namespaces(Some(namespaces));
    }
    if linux.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(1000u32)
            .size(1u32)
            .build()
            .expect("every field is set");
        linux.set_uid_mappings(Some(vec![map]));
        linux.set_gid_mappings(Some(vec![map]));
    }
    spec.set_linux(Some(linux));
    let _ = nook_rootless::check_plan(&spec);
});
