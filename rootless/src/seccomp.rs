//! The spec's seccomp profile (`linux.seccomp`) as kernel BPF filters.
//!
//! seccompiler (Firecracker's pure-Rust compiler) builds filters with one action on a
//! match and one on a mismatch, while an OCI profile gives each syscall entry its own
//! action. So a profile becomes several stacked filters; for every syscall the kernel
//! takes the most severe answer of all of them (KILL > TRAP > ERRNO > TRACE > LOG >
//! ALLOW):
//!
//! - the base filter returns the default action for every syscall the profile does not
//!   list (or whose argument conditions do not hold) and ALLOW for the rest;
//! - one filter per other action returns that action for its syscalls and ALLOW else.
//!
//! Names are resolved with the `syscalls` crate's table for the native architecture; a
//! name unknown to it is skipped, as libseccomp-based runtimes skip names the kernel
//! lacks. Conditions on the same argument are alternatives (libseccomp's rule), on
//! different arguments all must hold. Only the native architecture is filtered;
//! seccompiler kills a process that calls in through another ABI.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;
#[cfg(target_arch = "riscv64")]
const ARCH: TargetArch = TargetArch::riscv64;

/// The errno SCMP_ACT_ERRNO returns when the profile gives none (runc's and crun's).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// Installs the profile on the calling thread (inherited by exec and children). Needs
/// no_new_privs or CAP_SYS_ADMIN in the current user namespace.
pub fn apply(seccomp: &LinuxSeccomp) -> Result<()> {
    let mut flags: libc::c_ulong = 0;
    for flag in seccomp.flags().as_deref().unwrap_or_default() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // The process is single-threaded here: TSYNC has nothing to synchronise;
            // WAIT_KILLABLE_RECV concerns user notification, which is refused.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync
            | LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    for program in compile(seccomp)? {
        install(&program, flags)?;
    }
    Ok(())
}

/// seccomp(SECCOMP_SET_MODE_FILTER). Not seccompiler's `apply_filter`: that one also
/// sets no_new_privs, which the spec's `noNewPrivileges: false` forbids.
fn install(program: &BpfProgram, flags: libc::c_ulong) -> Result<()> {
    let filter: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(filter.len())
        .map_err(|_| Error::Spec("the seccomp profile compiles to too large a filter".into()))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points to `filter`, alive across the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(Error::sys(
            "installing the seccomp profile",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Syscall number → the alternatives that must hold; `None`: the syscall matches
/// whatever its arguments.
type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;

/// The profile's filters, in the order they are installed.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    // Actions are compared by their kernel return value (SeccompAction has no Ord).
    let mut groups: BTreeMap<u32, (SeccompAction, Rules)> = BTreeMap::new();
    for entry in seccomp.syscalls().as_deref().unwrap_or_default() {
        let act = action(entry.action(), entry.errno_ret())?;
        if act == default {
            continue;
        }
        let rules = rules_for(entry.args().as_deref().unwrap_or_default())?;
        let (_, group) = groups
            .entry(u32::from(act.clone()))
            .or_insert_with(|| (act, Rules::new()));
        for name in entry.names() {
            let Ok(nr) = syscalls::Sysno::from_str(name) else {
                continue;
            };
            merge(group, nr.id() as i64, rules.as_deref());
        }
    }
    let mut programs = Vec::new();
    if default != SeccompAction::Allow {
        let mut listed = Rules::new();
        for (_, rules) in groups.values() {
            for (nr, r) in rules {
                merge(&mut listed, *nr, r.as_deref());
            }
        }
        programs.push(build(listed, default, SeccompAction::Allow)?);
    }
    for (act, rules) in groups.into_values() {
        if act != SeccompAction::Allow && !rules.is_empty() {
            programs.push(build(rules, SeccompAction::Allow, act)?);
        }
    }
    Ok(programs)
}

fn build(rules: Rules, mismatch: SeccompAction, on_match: SeccompAction) -> Result<BpfProgram> {
    // seccompiler's form: an empty list is the unconditional match.
    let rules = rules
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, on_match, ARCH)
        .map_err(|e| Error::Spec(format!("seccomp profile: {e}")))?;
    BpfProgram::try_from(filter).map_err(|e| Error::Spec(format!("seccomp profile: {e}")))
}

/// Adds the alternatives `more` (`None`: unconditional) for syscall `nr`; an
/// unconditional match absorbs any conditions.
fn merge(rules: &mut Rules, nr: i64, more: Option<&[SeccompRule]>) {
    match (rules.entry(nr).or_insert_with(|| Some(Vec::new())), more) {
        (None, _) => {}
        (slot, None) => *slot = None,
        (Some(list), Some(more)) => list.extend(more.iter().cloned()),
    }
}

fn action(act: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction> {
    Ok(match act {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(DEFAULT_ERRNO)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Spec(
                "seccomp action SCMP_ACT_NOTIFY (a user-space listener) is not supported: \
                 use SCMP_ACT_ERRNO or leave the syscall out"
                    .into(),
            ))
        }
    })
}

/// The alternatives (OR) of an entry's conditions: the product of the per-argument
/// alternatives; `None` without conditions.
fn rules_for(args: &[LinuxSeccompArg]) -> Result<Option<Vec<SeccompRule>>> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut by_index: BTreeMap<usize, Vec<SeccompCondition>> = BTreeMap::new();
    for a in args {
        by_index.entry(a.index()).or_default().push(condition(a)?);
    }
    let mut combos: Vec<Vec<SeccompCondition>> = vec![Vec::new()];
    for alternatives in by_index.values() {
        combos = combos
            .iter()
            .flat_map(|c| {
                alternatives.iter().map(move |alt| {
                    let mut next = c.clone();
                    next.push(alt.clone());
                    next
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|c| SeccompRule::new(c).map_err(|e| Error::Spec(format!("seccomp profile: {e}"))))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn condition(a: &LinuxSeccompArg) -> Result<SeccompCondition> {
    let (op, value) = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
        // libseccomp: `value` is the mask, `valueTwo` what the masked argument must be.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(a.value()),
            a.value_two().unwrap_or(0),
        ),
    };
    let index = u8::try_from(a.index()).map_err(|_| {
        Error::Spec(format!(
            "seccomp argument index {} is out of range",
            a.index()
        ))
    })?;
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| Error::Spec(format!("seccomp profile: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn compiles_a_deny_list_and_an_allow_list() {
        let deny = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getcwd","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO",
                 "args":[{"index":1,"value":511,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        // Two ERRNO values: two filters; the default ALLOW needs no base filter.
        assert_eq!(compile(&deny).unwrap().len(), 2);
        let allow = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert_eq!(compile(&allow).unwrap().len(), 1);
    }

    #[test]
    fn same_argument_conditions_are_alternatives() {
        let args: Vec<LinuxSeccompArg> = serde_json::from_str(
            r#"[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"},
                {"index":1,"value":3,"op":"SCMP_CMP_MASKED_EQ","valueTwo":1}]"#,
        )
        .unwrap();
        assert_eq!(rules_for(&args).unwrap().unwrap().len(), 2);
    }

    #[test]
    fn notify_is_refused() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(compile(&p).is_err());
    }
}
