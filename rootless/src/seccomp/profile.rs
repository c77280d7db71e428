//! Seccomp profiles in podman's JSON format (docker's, containers/common's
//! `seccomp.json`) → an OCI `LinuxSeccomp` for one container.
//!
//! The format adds to the OCI form what a profile needs to be written once for every
//! container: entries that apply only with (`includes.caps`, all of them) or without
//! (`excludes.caps`, none of them) capabilities in the container's bounding set, or only
//! on some architectures (`includes`/`excludes.arches`, Go names: amd64, arm64, x86, ...);
//! an `archMap` from the native architecture to the sub-architectures (compat ABIs) to
//! filter too; errno names (`errno: "EPERM"`, which wins over `errnoRet`, as in
//! containers/common). The conversion follows containers/common's setupSeccomp, so a
//! file gives nook's containers what it gives podman's.
//!
//! Differences, on purpose: a file without `defaultAction` is refused (podman takes an
//! empty profile as "no filter": `seccomp=unconfined` says that); an errno outside
//! 1..4095, an unknown action, operator, architecture or flag, an argument index past 5,
//! `listenerPath` (user notification) are refused. Each error is one line naming the
//! field (`syscalls[3].errnoRet: ...`). Unknown syscall names are kept (they are skipped
//! when compiling, on the architectures that lack them, as runc and crun do), and unknown
//! keys are ignored, so docker's profiles (`minKernel`, `comment`) load too.

use std::borrow::Cow;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::MAX_ERRNO;

/// A profile in podman's terms, before it is fitted to one container.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    pub default_errno: Option<u32>,
    pub architectures: Vec<Arch>,
    /// Native architecture → the sub-architectures filtered with it.
    pub arch_map: Vec<(Arch, Vec<Arch>)>,
    pub syscalls: Vec<Rule>,
    pub flags: Vec<LinuxSeccompFilterFlag>,
}

/// One `syscalls` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub names: Vec<Cow<'static, str>>,
    pub action: LinuxSeccompAction,
    pub errno: Option<u32>,
    pub args: Vec<LinuxSeccompArg>,
    pub includes: Only,
    pub excludes: Only,
}

/// `includes` / `excludes`: capabilities (`CAP_...`) and architectures (Go names).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Only {
    pub caps: Vec<Cow<'static, str>>,
    pub arches: Vec<Cow<'static, str>>,
}

/// The native architecture as the format's `arches` name it (libseccomp's names, which
/// are Go's: amd64, arm64, riscv64).
pub const NATIVE_ARCH_NAME: &str = if cfg!(target_arch = "x86_64") {
    "amd64"
} else if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "riscv64"
};

/// The native architecture as `archMap` keys name it; containers/common maps only these
/// (none for riscv64, whose profiles then list no architectures: native only).
fn native_scmp_arch() -> Option<Arch> {
    if cfg!(target_arch = "x86_64") {
        Some(Arch::ScmpArchX86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(Arch::ScmpArchAarch64)
    } else {
        None
    }
}

impl Profile {
    /// Parses a profile file's text. `Err` is one line: the field and what is wrong.
    pub fn parse(text: &str) -> Result<Profile, String> {
        let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let root = root
            .as_object()
            .ok_or("the profile must be a JSON object")?;
        if root.get("listenerPath").is_some_and(|v| !v.is_null()) {
            return Err(
                "listenerPath: seccomp user notification (SCMP_ACT_NOTIFY) is not \
                        supported by nook"
                    .into(),
            );
        }
        let default_action = match root.get("defaultAction") {
            None | Some(Value::Null) => {
                return Err(
                    "defaultAction is missing (e.g. \"SCMP_ACT_ERRNO\"); for no \
                            filter at all use --security-opt seccomp=unconfined"
                        .into(),
                )
            }
            Some(v) => action(v, "defaultAction")?,
        };
        let default_errno = errno(root, "defaultErrno", "defaultErrnoRet", "")?;
        check_errno(default_action, default_errno, "defaultErrnoRet")?;
        let architectures = list(root, "architectures", "", enum_value)?;
        let arch_map = list(root, "archMap", "", |v, at| {
            let o = v
                .as_object()
                .ok_or_else(|| format!("{at}: expected an object"))?;
            let arch = match o.get("architecture") {
                Some(a) => enum_value(a, &format!("{at}.architecture"))?,
                None => return Err(format!("{at}.architecture is missing")),
            };
            let subs = list(o, "subArchitectures", at, enum_value)?;
            Ok((arch, subs))
        })?;
        if !architectures.is_empty() && !arch_map.is_empty() {
            return Err("architectures and archMap are both given: use one of them".into());
        }
        let flags = list(root, "flags", "", enum_value)?;
        let syscalls = list(root, "syscalls", "", rule)?;
        Ok(Profile {
            default_action,
            default_errno,
            architectures,
            arch_map,
            syscalls,
            flags,
        })
    }

    /// The OCI profile for a container whose bounding set is `bounding` (`CAP_...`
    /// names), on this machine's architecture: containers/common's setupSeccomp.
    pub fn to_oci(&self, bounding: &[String]) -> LinuxSeccomp {
        let mut architectures = self.architectures.clone();
        if let Some(native) = native_scmp_arch() {
            if let Some((arch, subs)) = self.arch_map.iter().find(|(a, _)| *a == native) {
                architectures.push(*arch);
                architectures.extend(subs.iter().copied());
            }
        }
        let has_cap = |c: &Cow<str>| bounding.iter().any(|b| b == c.as_ref());
        let on_arch = |a: &Cow<str>| a.as_ref() == NATIVE_ARCH_NAME;
        let syscalls: Vec<LinuxSyscall> = self
            .syscalls
            .iter()
            .filter(|r| {
                !r.excludes.arches.iter().any(on_arch)
                    && !r.excludes.caps.iter().any(has_cap)
                    && (r.includes.arches.is_empty() || r.includes.arches.iter().any(on_arch))
                    && r.includes.caps.iter().all(has_cap)
            })
            .map(|r| {
                let mut b = LinuxSyscallBuilder::default()
                    .names(r.names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .action(r.action);
                if let Some(e) = r.errno {
                    b = b.errno_ret(e);
                }
                if !r.args.is_empty() {
                    b = b.args(r.args.clone());
                }
                b.build().expect("names and action are set")
            })
            .collect();
        let mut b = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .syscalls(syscalls);
        if let Some(e) = self.default_errno {
            b = b.default_errno_ret(e);
        }
        if !architectures.is_empty() {
            b = b.architectures(architectures);
        }
        if !self.flags.is_empty() {
            b = b.flags(self.flags.clone());
        }
        b.build().expect("the default action is set")
    }
}

fn rule(v: &Value, at: &str) -> Result<Rule, String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("{at}: expected an object"))?;
    let mut names: Vec<Cow<'static, str>> = list(o, "names", at, |v, at| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(|s| Cow::Owned(s.to_string()))
            .ok_or_else(|| format!("{at}: expected a syscall name"))
    })?;
    match o.get("name") {
        None | Some(Value::Null) => {}
        Some(_) if !names.is_empty() => {
            return Err(format!(
                "{at}: name and names are both given: use one of them"
            ))
        }
        Some(Value::String(n)) if !n.is_empty() => names.push(Cow::Owned(n.clone())),
        Some(_) => return Err(format!("{at}.name: expected a syscall name")),
    }
    if names.is_empty() {
        return Err(format!("{at}.names is missing or empty"));
    }
    let action = match o.get("action") {
        Some(v) if !v.is_null() => action(v, &format!("{at}.action"))?,
        _ => return Err(format!("{at}.action is missing")),
    };
    let errno = errno(o, "errno", "errnoRet", at)?;
    check_errno(action, errno, &format!("{at}.errnoRet"))?;
    let args = list(o, "args", at, |v, at| {
        let a = v
            .as_object()
            .ok_or_else(|| format!("{at}: expected an object"))?;
        let index = number(a, "index", at)?.ok_or_else(|| format!("{at}.index is missing"))?;
        if index > 5 {
            return Err(format!(
                "{at}.index {index} is out of range: a syscall has arguments 0..5"
            ));
        }
        let op: LinuxSeccompOperator = match a.get("op") {
            Some(v) if !v.is_null() => enum_value(v, &format!("{at}.op"))?,
            _ => return Err(format!("{at}.op is missing")),
        };
        LinuxSeccompArgBuilder::default()
            .index(index as usize)
            .value(number(a, "value", at)?.unwrap_or(0))
            .value_two(number(a, "valueTwo", at)?.unwrap_or(0))
            .op(op)
            .build()
            .map_err(|e| format!("{at}: {e}"))
    })?;
    Ok(Rule {
        names,
        action,
        errno,
        args,
        includes: only(o, "includes", at)?,
        excludes: only(o, "excludes", at)?,
    })
}

fn only(o: &Map<String, Value>, key: &str, at: &str) -> Result<Only, String> {
    let Some(v) = o.get(key).filter(|v| !v.is_null()) else {
        return Ok(Only::default());
    };
    let at = format!("{at}.{key}");
    let f = v
        .as_object()
        .ok_or_else(|| format!("{at}: expected an object"))?;
    let strings = |name: &str| {
        list(f, name, &at, |v, at| {
            v.as_str()
                .map(|s| Cow::Owned(s.to_string()))
                .ok_or_else(|| format!("{at}: expected a string"))
        })
    };
    Ok(Only {
        caps: strings("caps")?,
        arches: strings("arches")?,
    })
}

/// The array at `key` (absent or null: empty), each element converted with its path.
fn list<T>(
    o: &Map<String, Value>,
    key: &str,
    at: &str,
    mut each: impl FnMut(&Value, &str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let path = if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    };
    match o.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| each(v, &format!("{path}[{i}]")))
            .collect(),
        Some(_) => Err(format!("{path}: expected an array")),
    }
}

fn number(o: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u64>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{at}.{key}: expected a whole number, found {v}")),
    }
}

/// A string naming one of oci-spec's enum values (SCMP_ACT_..., SCMP_ARCH_..., ...).
fn enum_value<T: DeserializeOwned>(v: &Value, at: &str) -> Result<T, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("{at}: expected a string, found {v}"))?;
    serde_json::from_value(Value::String(s.to_string()))
        .map_err(|_| format!("{at}: unknown value {s:?}"))
}

fn action(v: &Value, at: &str) -> Result<LinuxSeccompAction, String> {
    let act: LinuxSeccompAction = enum_value(v, at)?;
    if act == LinuxSeccompAction::ScmpActNotify {
        return Err(format!(
            "{at}: SCMP_ACT_NOTIFY (a user-space listener) is not supported: use \
             SCMP_ACT_ERRNO or leave the syscall out"
        ));
    }
    Ok(act)
}

/// `errno` (a name like "EPERM", or a number in a string) wins over `errnoRet`.
fn errno(
    o: &Map<String, Value>,
    name_key: &str,
    number_key: &str,
    at: &str,
) -> Result<Option<u32>, String> {
    let path = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match o.get(name_key) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => {
            let n = match s.parse::<u64>() {
                Ok(n) => n,
                Err(_) => errno_named(s).ok_or_else(|| {
                    format!(
                        "{}: unknown errno {s:?} (e.g. EPERM, ENOSYS)",
                        path(name_key)
                    )
                })?,
            };
            return in_errno_range(n, &path(name_key)).map(Some);
        }
        Some(v) => return Err(format!("{}: expected a string, found {v}", path(name_key))),
    }
    match number(o, number_key, at)? {
        None => Ok(None),
        Some(n) => in_errno_range(n, &path(number_key)).map(Some),
    }
}

fn in_errno_range(n: u64, at: &str) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= 0xffff)
        .ok_or_else(|| format!("{at} {n} is out of range: an errno is 1..{MAX_ERRNO}"))
}

/// An errno is checked against the action that uses it (TRACE passes 16 bits).
fn check_errno(act: LinuxSeccompAction, errno: Option<u32>, at: &str) -> Result<(), String> {
    match (act, errno) {
        (LinuxSeccompAction::ScmpActErrno, Some(n)) if !(1..=MAX_ERRNO).contains(&n) => {
            Err(format!(
                "{at} {n} is out of range: an errno is 1..{MAX_ERRNO} (1 = EPERM, 38 = ENOSYS)"
            ))
        }
        _ => Ok(()),
    }
}

/// The number of an errno name (`EPERM` → 1) on this architecture.
pub fn errno_named(name: &str) -> Option<u64> {
    (1..=MAX_ERRNO as i32)
        .find(|n| syscalls::Errno::new(*n).name() == Some(name))
        .map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Profile::parse(text).unwrap_err()
    }

    #[test]
    fn bad_files_name_the_field() {
        assert!(err("{").starts_with("not valid JSON"));
        assert!(err("[]").contains("JSON object"));
        assert!(err("{}").contains("defaultAction is missing"));
        assert!(err(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#)
            .contains("defaultAction: unknown value \"SCMP_ACT_NOPE\""));
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getuid"],
            "action":"SCMP_ACT_ERRNO","errnoRet":4294967295}]}"#,
        );
        assert!(
            e.starts_with("syscalls[0].errnoRet 4294967295 is out of range"),
            "{e}"
        );
        let e = err(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":0}"#);
        assert!(e.starts_with("defaultErrnoRet 0 is out of range"), "{e}");
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],
            "action":"SCMP_ACT_ERRNO","errno":"EWHAT"}]}"#,
        );
        assert!(
            e.contains("syscalls[0].errno: unknown errno \"EWHAT\""),
            "{e}"
        );
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],
            "action":"SCMP_ACT_ALLOW","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(
            e.contains("syscalls[0].args[0].index 7 is out of range"),
            "{e}"
        );
        let e =
            err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#);
        assert!(e.contains("syscalls[0].names is missing"), "{e}");
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":"read",
            "action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert!(e.contains("syscalls[0].names: expected an array"), "{e}");
        let e = err(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":[]}]}"#,
        );
        assert!(e.contains("both given"), "{e}");
        assert!(err(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).contains("not supported"));
    }

    #[test]
    fn errno_names_and_capability_conditions() {
        let p = Profile::parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrno":"ENOSYS","defaultErrnoRet":1,
                "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]},
                           {"architecture":"SCMP_ARCH_AARCH64","subArchitectures":["SCMP_ARCH_ARM"]}],
                "syscalls":[
                  {"names":["chroot"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_CHROOT"]}},
                  {"names":["chroot"],"action":"SCMP_ACT_ERRNO","errno":"EPERM",
                   "excludes":{"caps":["CAP_SYS_CHROOT"]}},
                  {"name":"arch_prctl","action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64"]}},
                  {"names":["getpid"],"action":"SCMP_ACT_ALLOW","comment":"x","minKernel":"4.8"}]}"#,
        )
        .unwrap();
        assert_eq!(p.default_errno, Some(38));
        let with = p.to_oci(&["CAP_SYS_CHROOT".to_string()]);
        let without = p.to_oci(&[]);
        let actions = |s: &LinuxSeccomp| -> Vec<(String, Option<u32>)> {
            s.syscalls()
                .as_deref()
                .unwrap()
                .iter()
                .filter(|e| e.names()[0] == "chroot")
                .map(|e| (format!("{:?}", e.action()), e.errno_ret()))
                .collect()
        };
        assert_eq!(actions(&with), [("ScmpActAllow".to_string(), None)]);
        assert_eq!(actions(&without), [("ScmpActErrno".to_string(), Some(1))]);
        let arch_prctl = without
            .syscalls()
            .as_deref()
            .unwrap()
            .iter()
            .any(|e| e.names()[0] == "arch_prctl");
        assert_eq!(arch_prctl, cfg!(target_arch = "x86_64"));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                without.architectures().as_deref().unwrap(),
                [Arch::ScmpArchX86_64, Arch::ScmpArchX86]
            );
        }
    }

    #[test]
    fn errno_names_resolve() {
        assert_eq!(errno_named("EPERM"), Some(1));
        assert_eq!(errno_named("ENOSYS"), Some(libc::ENOSYS as u64));
        assert_eq!(errno_named("NOPE"), None);
    }
}
