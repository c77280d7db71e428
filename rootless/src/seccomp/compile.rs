//! An OCI seccomp profile → one classic-BPF program.
//!
//! Why not one `seccompiler::SeccompFilter` per action, as nook did first: seccompiler
//! emits a linear chain of comparisons (five instructions per syscall), and when a
//! filter is installed the kernel emulates it once per syscall number to fill its
//! allow-cache (since Linux 5.11), then converts and JITs it. For podman's profile
//! (about 370 allowed syscalls, ~1,800 instructions) that costs ~0.9 ms per container
//! start, in the kernel, whether or not the BPF is cached. So nook lays out the
//! number dispatch itself, as a binary search over ranges of syscall numbers with the
//! same answer (about a hundred ranges, a dozen comparisons deep), and keeps
//! seccompiler for what it does well: the argument comparisons (64-bit, masked) of the
//! few syscalls whose entries have conditions. Each such chain is a seccompiler filter
//! for that one syscall, embedded in the leaf with its "no rule matched" return turned
//! into a jump to the next candidate; the shape of seccompiler's output that this
//! relies on is checked, not assumed.
//!
//! Layout: `arch → [per ABI: nr → binary search → RET action | condition chain]`; an
//! ABI the profile does not cover is killed (as libseccomp's bad-arch action and
//! seccompiler did). Native syscalls are always filtered; the compat ABIs a profile
//! lists (`SCMP_ARCH_X86` on x86_64, `SCMP_ARCH_ARM` on aarch64, as podman's archMap
//! gives) are filtered with their own syscall tables. x32 calls (x86_64 numbers with bit
//! 30 set) are refused with ENOSYS, as on a kernel without x32: nook has no x32 table,
//! and letting them through would bypass a deny-list.
//!
//! Semantics, per syscall, libseccomp's (so runc's, crun's and podman's): an entry
//! whose action is the default one is left out (libseccomp refuses it, the runtimes skip
//! it); an entry without argument conditions decides alone, the first such entry listed
//! if there are several (podman's profile lists setns as allowed and, without
//! CAP_SYS_ADMIN, as EPERM: the allow comes first and wins); else the entries with
//! conditions are tried, the most severe action first (KILL > TRAP > ERRNO > TRACE >
//! LOG > ALLOW, the kernel's ranking), and the default answers when none matches.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator,
};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

// Classic BPF opcodes (linux/bpf_common.h) and seccomp_data offsets (linux/seccomp.h).
const LD_ABS_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;
/// The largest errno a syscall can return (the kernel's MAX_ERRNO).
pub const MAX_ERRNO: u32 = 4095;
/// x32 system calls are x86_64's numbers with this bit set (__X32_SYSCALL_BIT).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The errno SCMP_ACT_ERRNO returns when the profile gives none (runc's and crun's).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

/// One system-call ABI the filter answers for.
struct Abi {
    /// libseccomp's name, lower case.
    name: &'static str,
    audit_arch: u32,
    number: fn(&str) -> Option<u32>,
    /// x86_64: refuse x32 calls (see the module doc).
    x32_guard: bool,
}

#[cfg(target_arch = "x86_64")]
const SECCOMPILER_ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const SECCOMPILER_ARCH: TargetArch = TargetArch::aarch64;
#[cfg(target_arch = "riscv64")]
const SECCOMPILER_ARCH: TargetArch = TargetArch::riscv64;

fn native_abi() -> Abi {
    #[cfg(target_arch = "x86_64")]
    return Abi {
        name: "x86_64",
        audit_arch: Arch::ScmpArchX86_64 as u32,
        number: |n| {
            syscalls::x86_64::Sysno::from_str(n)
                .ok()
                .map(|s| s.id() as u32)
        },
        x32_guard: true,
    };
    #[cfg(target_arch = "aarch64")]
    return Abi {
        name: "aarch64",
        audit_arch: Arch::ScmpArchAarch64 as u32,
        number: |n| {
            syscalls::aarch64::Sysno::from_str(n)
                .ok()
                .map(|s| s.id() as u32)
        },
        x32_guard: false,
    };
    #[cfg(target_arch = "riscv64")]
    return Abi {
        name: "riscv64",
        audit_arch: Arch::ScmpArchRiscv64 as u32,
        number: |n| {
            syscalls::riscv64::Sysno::from_str(n)
                .ok()
                .map(|s| s.id() as u32)
        },
        x32_guard: false,
    };
}

/// The compat ABI that `arch` names on this machine, if any (the native one and x32
/// are handled apart; other architectures cannot run here).
fn compat_abi(arch: Arch) -> Option<Abi> {
    match arch {
        #[cfg(target_arch = "x86_64")]
        Arch::ScmpArchX86 => Some(Abi {
            name: "x86",
            audit_arch: Arch::ScmpArchX86 as u32,
            number: |n| {
                syscalls::x86::Sysno::from_str(n)
                    .ok()
                    .map(|s| s.id() as u32)
            },
            x32_guard: false,
        }),
        #[cfg(target_arch = "aarch64")]
        Arch::ScmpArchArm => Some(Abi {
            name: "arm",
            audit_arch: Arch::ScmpArchArm as u32,
            number: |n| {
                syscalls::arm::Sysno::from_str(n)
                    .ok()
                    .map(|s| s.id() as u32)
            },
            x32_guard: false,
        }),
        _ => None,
    }
}

/// The ABIs whose calls reach the profile's rules (the others are killed; x32 calls
/// get ENOSYS), by libseccomp's lower-case names.
pub fn filtered_abis(seccomp: &LinuxSeccomp) -> Vec<&'static str> {
    abis(seccomp).iter().map(|a| a.name).collect()
}

fn abis(seccomp: &LinuxSeccomp) -> Vec<Abi> {
    let mut abis = vec![native_abi()];
    for arch in seccomp.architectures().as_deref().unwrap_or_default() {
        if let Some(abi) = compat_abi(*arch) {
            if abis.iter().all(|a| a.audit_arch != abi.audit_arch) {
                abis.push(abi);
            }
        }
    }
    abis
}

/// How many syscalls of the native architecture `seccomp` allows whatever their
/// arguments (for `nook info`).
pub fn allowed_natively(seccomp: &LinuxSeccomp) -> usize {
    let abi = native_abi();
    let mut allowed = std::collections::BTreeSet::new();
    for s in seccomp.syscalls().as_deref().unwrap_or_default() {
        if s.action() == LinuxSeccompAction::ScmpActAllow
            && s.args().as_deref().unwrap_or_default().is_empty()
        {
            allowed.extend(s.names().iter().filter_map(|n| (abi.number)(n)));
        }
    }
    allowed.len()
}

/// One entry of the profile, checked and in seccompiler's terms.
struct Entry {
    action: SeccompAction,
    /// `None`: matches whatever the arguments; else the alternatives (OR).
    rules: Option<Vec<SeccompRule>>,
}

/// What a syscall number gets: an answer, or conditions to evaluate in order.
#[derive(Clone, PartialEq)]
enum Leaf {
    Ret(u32),
    /// Conditional entries by decreasing severity, then the answer when none matched.
    Chain(Vec<(SeccompAction, Vec<SeccompRule>)>, u32),
}

/// Compiles `seccomp` into one program. Refuses what the kernel or nook cannot do, with
/// the field named as in the spec (`linux.seccomp...`).
pub fn compile(seccomp: &LinuxSeccomp) -> Result<BpfProgram> {
    let default = action(
        seccomp.default_action(),
        seccomp.default_errno_ret(),
        "linux.seccomp.defaultErrnoRet",
    )?;
    let default_ret = u32::from(default.clone());
    let syscalls = seccomp.syscalls().as_deref().unwrap_or_default();
    let mut entries = Vec::with_capacity(syscalls.len());
    for (i, s) in syscalls.iter().enumerate() {
        let act = action(
            s.action(),
            s.errno_ret(),
            &format!("linux.seccomp.syscalls[{i}].errnoRet"),
        )?;
        let rules = rules_for(s.args().as_deref().unwrap_or_default())
            .map_err(|e| Error::Spec(format!("linux.seccomp.syscalls[{i}].args: {e}")))?;
        entries.push(Entry { action: act, rules });
    }
    let order: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].action != default)
        .collect();

    let abis = abis(seccomp);
    let mut trees = Vec::with_capacity(abis.len());
    for abi in &abis {
        let mut by_nr: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for &i in &order {
            for name in syscalls[i].names() {
                if let Some(nr) = (abi.number)(name) {
                    let list = by_nr.entry(nr).or_default();
                    if !list.contains(&i) {
                        list.push(i);
                    }
                }
            }
        }
        let mut ranges: Vec<(u32, Leaf)> = Vec::new();
        // A range starting where the last one does replaces it; one that answers as the
        // last one does extends it.
        let mut push = |lo: u32, leaf: Leaf| {
            if ranges.last().is_some_and(|(start, _)| *start == lo) {
                ranges.pop();
            }
            match ranges.last() {
                Some((_, last)) if *last == leaf => {}
                _ => ranges.push((lo, leaf)),
            }
        };
        push(0, Leaf::Ret(default_ret));
        for (nr, list) in by_nr {
            push(nr, leaf_for(&entries, &list, default_ret));
            push(nr.saturating_add(1), Leaf::Ret(default_ret));
        }
        if abi.x32_guard {
            push(
                X32_SYSCALL_BIT,
                Leaf::Ret(u32::from(SeccompAction::Errno(38))),
            );
        }
        let mut tree = vec![stmt(LD_ABS_W, OFFSET_NR)];
        tree.extend(search(&ranges)?);
        trees.push(tree);
    }

    // arch → tree; any other arch is killed.
    let dispatch_len = 1 + 2 * abis.len() + 1;
    let mut program = Vec::with_capacity(dispatch_len + trees.iter().map(Vec::len).sum::<usize>());
    program.push(stmt(LD_ABS_W, OFFSET_ARCH));
    let mut skip = 0usize;
    for (i, abi) in abis.iter().enumerate() {
        program.push(jump(JMP_JEQ_K, abi.audit_arch, 0, 1));
        // From after this JA: the rest of the dispatch, then the trees before ours.
        let rest = 2 * (abis.len() - i - 1) + 1;
        program.push(stmt(JMP_JA, (rest + skip) as u32));
        skip += trees[i].len();
    }
    program.push(stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS));
    for tree in trees {
        program.extend(tree);
    }
    if program.len() > MAX_INSNS {
        return Err(Error::Spec(format!(
            "the seccomp profile compiles to {} BPF instructions, more than the kernel's \
             {MAX_INSNS}: merge entries or use fewer argument conditions",
            program.len()
        )));
    }
    Ok(program)
}

/// The kernel's ranking of a return value: lower is more severe (SECCOMP_RET_ACTION_FULL
/// read as signed, as seccomp_run_filters compares them).
fn precedence(ret: u32) -> i32 {
    (ret & 0xffff_0000) as i32
}

/// The answer for one syscall from its entries (`list`, in the profile's order).
fn leaf_for(entries: &[Entry], list: &[usize], default_ret: u32) -> Leaf {
    if let Some(e) = list
        .iter()
        .map(|&i| &entries[i])
        .find(|e| e.rules.is_none())
    {
        return Leaf::Ret(u32::from(e.action.clone()));
    }
    let mut chain: Vec<(SeccompAction, Vec<SeccompRule>)> = list
        .iter()
        .filter_map(|&i| Some((entries[i].action.clone(), entries[i].rules.clone()?)))
        .collect();
    // Stable: among equal actions, the profile's order.
    chain.sort_by_key(|(act, _)| precedence(u32::from(act.clone())));
    Leaf::Chain(chain, default_ret)
}

/// Binary search over `ranges` (sorted by their first number; each runs to the next
/// one's start) with the syscall number in the accumulator.
fn search(ranges: &[(u32, Leaf)]) -> Result<Vec<sock_filter>> {
    if let [(_, leaf)] = ranges {
        return emit_leaf(leaf);
    }
    let mid = ranges.len() / 2;
    let left = search(&ranges[..mid])?;
    let right = search(&ranges[mid..])?;
    let mut out = Vec::with_capacity(left.len() + right.len() + 2);
    match u8::try_from(left.len()) {
        // nr >= start of the right half: skip the left half.
        Ok(n) => out.push(jump(JMP_JGE_K, ranges[mid].0, n, 0)),
        Err(_) => {
            out.push(jump(JMP_JGE_K, ranges[mid].0, 0, 1));
            out.push(stmt(JMP_JA, left.len() as u32));
        }
    }
    out.extend(left);
    out.extend(right);
    Ok(out)
}

fn emit_leaf(leaf: &Leaf) -> Result<Vec<sock_filter>> {
    match leaf {
        Leaf::Ret(ret) => Ok(vec![stmt(RET_K, *ret)]),
        Leaf::Chain(chain, otherwise) => {
            let mut out = Vec::new();
            for (act, rules) in chain {
                out.extend(condition_block(act, rules)?);
            }
            out.push(stmt(RET_K, *otherwise));
            Ok(out)
        }
    }
}

/// seccompiler's filter for "these rules → `act`" on the current syscall, without its
/// architecture check, with every "no rule matched" return turned into a jump past the
/// block (to the next candidate). The accumulator holds the syscall number on entry.
fn condition_block(act: &SeccompAction, rules: &[SeccompRule]) -> Result<Vec<sock_filter>> {
    let sentinel = match act {
        SeccompAction::Trace(0xffff) => SeccompAction::Trace(0xfffe),
        _ => SeccompAction::Trace(0xffff),
    };
    let sentinel_ret = u32::from(sentinel.clone());
    // Any number: the block is entered only for its syscall; it is matched again.
    const NR: i64 = 0;
    let filter = SeccompFilter::new(
        [(NR, rules.to_vec())].into_iter().collect(),
        sentinel,
        act.clone(),
        SECCOMPILER_ARCH,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| Error::Spec(format!("seccomp profile: {e}")))?;
    // [LD arch][JEQ arch][RET KILL_PROCESS][LD nr] ...: the shape relied upon.
    let shape_ok = filter.len() > 4
        && filter[0] == stmt(LD_ABS_W, OFFSET_ARCH)
        && filter[1].code == JMP_JEQ_K
        && filter[2] == stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS)
        && filter[3] == stmt(LD_ABS_W, OFFSET_NR)
        && filter[4].code == JMP_JEQ_K
        && filter.last() == Some(&stmt(RET_K, sentinel_ret));
    if !shape_ok {
        return Err(Error::Spec(
            "seccompiler's output has an unexpected shape: nook cannot embed it".into(),
        ));
    }
    let mut body: Vec<sock_filter> = filter[3..].to_vec();
    // The syscall comparison is made true: the leaf already chose the number.
    body[1] = stmt(JMP_JA, u32::from(body[1].jt));
    let len = body.len();
    for (i, insn) in body.iter_mut().enumerate() {
        if *insn == stmt(RET_K, sentinel_ret) {
            *insn = stmt(JMP_JA, (len - 1 - i) as u32);
        }
    }
    Ok(body)
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// `errno` is checked where it matters: an ERRNO action returns it to the program, so
/// it must be a real errno (1..=MAX_ERRNO; 0 would fake success, larger values read as
/// garbage results); TRACE passes 16 bits to the tracer.
fn action(act: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<SeccompAction> {
    Ok(match act {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            let errno = errno.unwrap_or(DEFAULT_ERRNO);
            if !(1..=MAX_ERRNO).contains(&errno) {
                return Err(Error::Spec(format!(
                    "{field} {errno} is out of range: an errno is 1..{MAX_ERRNO} \
                     (1 = EPERM, 38 = ENOSYS)"
                )));
            }
            SeccompAction::Errno(errno)
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => {
            let data = errno.unwrap_or(0);
            if data > 0xffff {
                return Err(Error::Spec(format!(
                    "{field} {data} is out of range for SCMP_ACT_TRACE: 0..65535"
                )));
            }
            SeccompAction::Trace(data)
        }
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
/// alternatives; `None` without conditions. Conditions on the same argument are
/// alternatives (libseccomp's rule), on different arguments all must hold.
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
        .map(|c| SeccompRule::new(c).map_err(|e| Error::Spec(e.to_string())))
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
    let index = u8::try_from(a.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| {
            Error::Spec(format!(
                "argument index {} is out of range: a syscall has arguments 0..5",
                a.index()
            ))
        })?;
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| Error::Spec(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    /// A classic-BPF interpreter for the instructions this module emits (and those of
    /// seccompiler's conditions), to check what a program answers.
    pub(crate) fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                o if (16..64).contains(&o) => {
                    let i = ((o - 16) / 8) as usize;
                    if (o - 16) % 8 == 0 {
                        args[i] as u32
                    } else {
                        (args[i] >> 32) as u32
                    }
                }
                o => panic!("load at offset {o}"),
            }
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                LD_ABS_W => a = word(i.k),
                0x54 => a &= i.k, // BPF_ALU | BPF_AND | BPF_K
                JMP_JA => pc += i.k as usize,
                RET_K => return i.k,
                c => {
                    let taken = match c {
                        JMP_JEQ_K => a == i.k,
                        JMP_JGE_K => a >= i.k,
                        0x25 => a > i.k,      // JGT
                        0x45 => a & i.k != 0, // JSET
                        c => panic!("opcode {c:#x}"),
                    };
                    pc += if taken { i.jt } else { i.jf } as usize;
                }
            }
        }
    }

    pub(crate) fn native() -> u32 {
        native_abi().audit_arch
    }

    /// A syscall table: name → number.
    pub(crate) type Table = fn(&str) -> Option<u32>;

    /// The ABIs `seccomp` filters: audit arch and syscall table.
    pub(crate) fn abi_tables(seccomp: &LinuxSeccomp) -> Vec<(u32, Table)> {
        abis(seccomp)
            .iter()
            .map(|a| (a.audit_arch, a.number))
            .collect()
    }

    pub(crate) fn nr(name: &str) -> u32 {
        (native_abi().number)(name).unwrap()
    }

    const ERRNO: u32 = libc::SECCOMP_RET_ERRNO;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[test]
    fn a_deny_list_and_an_allow_list() {
        let deny = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getcwd","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO",
                 "args":[{"index":1,"value":511,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let p = compile(&deny).unwrap();
        let a = native();
        assert_eq!(run(&p, a, nr("getcwd"), [0; 6]), ERRNO | 38);
        assert_eq!(run(&p, a, nr("getpid"), [0; 6]), ALLOW);
        assert_eq!(run(&p, a, nr("mkdir"), [0, 511, 0, 0, 0, 0]), ERRNO | 1);
        assert_eq!(run(&p, a, nr("mkdir"), [0, 0o755, 0, 0, 0, 0]), ALLOW);
        // The upper half of a 64-bit argument counts.
        assert_eq!(
            run(&p, a, nr("mkdir"), [0, 511 | 1 << 32, 0, 0, 0, 0]),
            ALLOW
        );
        // Another ABI is killed.
        assert_eq!(run(&p, 0x1234, 1, [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);

        let allow = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
                {"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let p = compile(&allow).unwrap();
        assert_eq!(run(&p, a, nr("read"), [0; 6]), ALLOW);
        assert_eq!(run(&p, a, nr("exit_group"), [0; 6]), ALLOW);
        assert_eq!(run(&p, a, nr("getpid"), [0; 6]), ERRNO | 38);
        assert_eq!(run(&p, a, 100_000, [0; 6]), ERRNO | 38);
    }

    #[test]
    fn the_first_unconditional_entry_decides_else_the_most_severe_match() {
        // podman's socket rules: EINVAL for (AF_NETLINK, NETLINK_AUDIT), else allowed.
        let p = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
                {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":22,"args":[
                    {"index":0,"value":16,"op":"SCMP_CMP_EQ"},
                    {"index":2,"value":9,"op":"SCMP_CMP_EQ"}]},
                {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[
                    {"index":2,"value":9,"op":"SCMP_CMP_NE"}]},
                {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[
                    {"index":0,"value":16,"op":"SCMP_CMP_NE"}]},
                {"names":["kill"],"action":"SCMP_ACT_ALLOW"},
                {"names":["kill"],"action":"SCMP_ACT_KILL_PROCESS","args":[
                    {"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
                {"names":["setns"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                {"names":["setns"],"action":"SCMP_ACT_ALLOW"},
                {"names":["setns"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["tkill"],"action":"SCMP_ACT_ERRNO","errnoRet":5,"args":[
                    {"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
                {"names":["tkill"],"action":"SCMP_ACT_KILL_PROCESS","args":[
                    {"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        ))
        .unwrap();
        let (a, s) = (native(), nr("socket"));
        assert_eq!(run(&p, a, s, [16, 3, 9, 0, 0, 0]), ERRNO | 22);
        assert_eq!(run(&p, a, s, [16, 3, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(&p, a, s, [2, 1, 9, 0, 0, 0]), ALLOW);
        // An unconditional entry wins over conditional ones (libseccomp drops those).
        assert_eq!(run(&p, a, nr("kill"), [1, 9, 0, 0, 0, 0]), ALLOW);
        // The first unconditional entry wins; one with the default action is left out.
        assert_eq!(run(&p, a, nr("setns"), [0; 6]), ALLOW);
        // Conditional entries: the most severe match, else the default.
        let tkill = nr("tkill");
        assert_eq!(run(&p, a, tkill, [1, 9, 0, 0, 0, 0]), 0x8000_0000);
        assert_eq!(run(&p, a, tkill, [2, 9, 0, 0, 0, 0]), ERRNO | 5);
        assert_eq!(run(&p, a, tkill, [2, 15, 0, 0, 0, 0]), ERRNO | 38);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn compat_abis_use_their_own_numbers_and_x32_is_refused() {
        let p = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "syscalls":[{"names":["getpid","keyctl"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["kexec_load"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        ))
        .unwrap();
        let i386 = Arch::ScmpArchX86 as u32;
        // i386: getpid 20, keyctl 288, kexec_load 283; x86_64: getpid 39.
        assert_eq!(run(&p, i386, 20, [0; 6]), ALLOW);
        assert_eq!(run(&p, i386, 288, [0; 6]), ALLOW);
        assert_eq!(run(&p, i386, 283, [0; 6]), ERRNO | 1);
        assert_eq!(run(&p, i386, 39, [0; 6]), ERRNO | 38);
        assert_eq!(run(&p, native(), 39, [0; 6]), ALLOW);
        assert_eq!(run(&p, native(), 39 | X32_SYSCALL_BIT, [0; 6]), ERRNO | 38);
        // A deny-list cannot be bypassed through x32 either.
        let deny = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["keyctl"],"action":"SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap();
        assert_eq!(
            run(&deny, native(), 250 | X32_SYSCALL_BIT, [0; 6]),
            ERRNO | 38
        );
        // Without SCMP_ARCH_X86 listed, i386 calls are killed.
        assert_eq!(run(&deny, i386, 20, [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn errno_out_of_range_is_refused_naming_the_field() {
        let e = compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getuid"],"action":"SCMP_ACT_ERRNO","errnoRet":4294967295}]}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("linux.seccomp.syscalls[0].errnoRet 4294967295"),
            "{e}"
        );
        for bad in ["0", "4096"] {
            let e = compile(&profile(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":{bad}}}"#
            )))
            .unwrap_err()
            .to_string();
            assert!(e.contains("linux.seccomp.defaultErrnoRet"), "{e}");
        }
        compile(&profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":4095}"#,
        ))
        .unwrap();
    }

    #[test]
    fn same_argument_conditions_are_alternatives() {
        let args: Vec<LinuxSeccompArg> = serde_json::from_str(
            r#"[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_EQ"},
                {"index":1,"value":3,"op":"SCMP_CMP_MASKED_EQ","valueTwo":1}]"#,
        )
        .unwrap();
        assert_eq!(rules_for(&args).unwrap().unwrap().len(), 2);
        let bad: Vec<LinuxSeccompArg> =
            serde_json::from_str(r#"[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]"#).unwrap();
        assert!(rules_for(&bad).is_err());
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
