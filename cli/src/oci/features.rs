//! `features`: what this runtime supports, as the runtime-spec's features document
//! (the JSON runc 1.1+ prints), so that clients can probe before they write a spec.
//! Every list says what nook does, not what it parses: mount options come from the
//! parser's own table, seccomp actions leave out SCMP_ACT_NOTIFY (refused), cgroup v1
//! and the systemd system manager are not used, no LSM label is applied.

use anyhow::Result;

pub fn features() -> Result<()> {
    super::global::print_out(&serde_json::to_string_pretty(&document())?);
    Ok(())
}

fn document() -> serde_json::Value {
    let mut caps: Vec<caps::Capability> = caps::all().into_iter().collect();
    caps.sort_by_key(|c| c.index());
    serde_json::json!({
        // Any 1.x configuration is accepted (rootless/src/bundle.rs); the newest whose
        // fields nook reads is the version of its oci-spec crate.
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": nook_rootless::mounts::recognised_options(),
        "linux": {
            // The time namespace is refused ("not supported yet", rootless/src/spawn.rs).
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            // Limits go through a delegated cgroup v2 subtree; the user's systemd
            // manager gives one (a scope) where needed; v1 controllers and the system
            // manager (runc's --systemd-cgroup as root) are not used.
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": true,
                       "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                            "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                            "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                              "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": archs(),
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                               "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                               "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                // TSYNC holds trivially (the filter is installed while the process has
                // one thread); WAIT_KILLABLE_RECV concerns the refused NOTIFY action.
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                   "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}},
        },
        "annotations": {
            "org.opencontainers.runtime-spec.features.nook.rootless": "true",
            "org.nook.version": env!("CARGO_PKG_VERSION"),
            "org.nook.seccomp.compiler": "seccompiler (no libseccomp)",
        },
        "potentiallyUnsafeConfigAnnotations": [],
    })
}

/// The ABIs a profile can filter here: the native one and its compat ABI (x32 calls are
/// refused whatever the profile, rootless/src/seccomp/compile.rs).
fn archs() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["SCMP_ARCH_X86", "SCMP_ARCH_X86_64"]
    } else if cfg!(target_arch = "aarch64") {
        &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        &["SCMP_ARCH_RISCV64"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_what_the_parsers_accept() {
        let doc = document();
        let opts: Vec<String> = serde_json::from_value(doc["mountOptions"].clone()).unwrap();
        for o in ["tmpcopyup", "rro", "rbind", "rprivate", "nosymfollow", "z"] {
            assert!(opts.iter().any(|x| x == o), "{o} missing");
        }
        assert!(!opts.iter().any(|x| x == "idmap"));
        let actions = doc["linux"]["seccomp"]["actions"].as_array().unwrap();
        assert!(!actions.iter().any(|a| a == "SCMP_ACT_NOTIFY"));
        assert_eq!(doc["linux"]["cgroup"]["v1"], false);
        // Every listed namespace type is one oci-spec parses.
        for ns in doc["linux"]["namespaces"].as_array().unwrap() {
            let t: Result<oci_spec::runtime::LinuxNamespaceType, _> =
                serde_json::from_value(ns.clone());
            assert!(t.is_ok(), "{ns}");
        }
    }
}
