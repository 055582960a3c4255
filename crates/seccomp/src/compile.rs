//! OCI `LinuxSeccomp` → classic BPF.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    Arch as OciArch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall,
};

use crate::arch::{Arch, X32_SYSCALL_BIT};
use crate::bpf::{Asm, Cmp, Insn, Label, BPF_MAXINSNS};
use crate::SeccompError;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// Number of syscall arguments in `seccomp_data`.
const MAX_ARGS: usize = 6;

/// How many unconditional syscalls share one `ret` (keeps jumps short).
const CHUNK: usize = 200;

/// What to do with a syscall name that no requested architecture knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownSyscalls {
    /// Fail with [`SeccompError::UnknownSyscall`] (default).
    #[default]
    Error,
    /// Skip it silently, like runc (which only logs at debug level).
    Ignore,
}

/// Knobs for [`compile_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileOptions {
    /// Verdict for a syscall whose `seccomp_data.arch` is not one of the
    /// filter's architectures (libseccomp's `SCMP_FLTATR_ACT_BADARCH`,
    /// default `SECCOMP_RET_KILL_THREAD`, which runc keeps).
    pub bad_arch_action: u32,
    pub unknown_syscalls: UnknownSyscalls,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            bad_arch_action: libc::SECCOMP_RET_KILL_THREAD,
            unknown_syscalls: UnknownSyscalls::Error,
        }
    }
}

/// A compiled filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The instructions, ready for `SECCOMP_SET_MODE_FILTER`.
    pub insns: Vec<Insn>,
    /// Architectures that got a section, in dispatch order.
    pub arches: Vec<Arch>,
    /// Architectures listed in the spec that were left out (no support or
    /// no syscall table here). Their syscalls get the bad-arch verdict.
    pub skipped_arches: Vec<OciArch>,
    /// Whether some rule uses `SCMP_ACT_NOTIFY`: the filter must then be
    /// loaded with `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
    pub uses_notify: bool,
    /// Names no filter architecture knows, skipped under
    /// [`UnknownSyscalls::Ignore`] (the runtime should log them, as runc
    /// does at debug level).
    pub unknown_syscalls: Vec<String>,
}

impl Program {
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The program as `libc::sock_filter`s.
    pub fn to_sock_filters(&self) -> Vec<libc::sock_filter> {
        self.insns.iter().map(|&i| i.into()).collect()
    }
}

/// Compile with default [`CompileOptions`].
pub fn compile(seccomp: &LinuxSeccomp, native: Arch) -> Result<Program, SeccompError> {
    compile_with(seccomp, native, &CompileOptions::default())
}

/// One operand of a rule: `args[index] op value` (for `MaskedEq`:
/// `(args[index] & mask) == value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cond {
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    mask: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    conds: Vec<Cond>,
    verdict: u32,
}

/// The verdict for an action; `errno` is the rule's `errnoRet`.
fn verdict(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, SeccompError> {
    use LinuxSeccompAction as A;
    let data = |e: Option<u32>| -> Result<u32, SeccompError> {
        let e = e.unwrap_or(libc::EPERM as u32);
        if e > libc::SECCOMP_RET_DATA {
            return Err(SeccompError::InvalidErrno(e));
        }
        Ok(e)
    };
    if errno.is_some() && !matches!(action, A::ScmpActErrno | A::ScmpActTrace) {
        return Err(SeccompError::ErrnoNotSupported(format!("{action:?}")));
    }
    Ok(match action {
        A::ScmpActKill | A::ScmpActKillThread => libc::SECCOMP_RET_KILL_THREAD,
        A::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        A::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        A::ScmpActErrno => libc::SECCOMP_RET_ERRNO | data(errno)?,
        A::ScmpActTrace => libc::SECCOMP_RET_TRACE | data(errno)?,
        A::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        A::ScmpActLog => libc::SECCOMP_RET_LOG,
        A::ScmpActNotify => libc::SECCOMP_RET_USER_NOTIF,
    })
}

/// Conditions of one OCI syscall entry, split like runc does: if the same
/// argument index appears more than once, every condition becomes its own
/// rule (ORed); otherwise they form one rule (ANDed).
fn rule_conds(sc: &LinuxSyscall) -> Result<Vec<Vec<Cond>>, SeccompError> {
    let args = sc.args().as_deref().unwrap_or(&[]);
    let mut conds = Vec::with_capacity(args.len());
    let mut count = [0usize; MAX_ARGS];
    for a in args {
        let index = a.index();
        if index >= MAX_ARGS {
            return Err(SeccompError::InvalidArgIndex(index));
        }
        count[index] += 1;
        let (value, mask) = match a.op() {
            // libseccomp: "the masked argument value is equal to the masked
            // datum value" (seccomp_rule_add(3)), i.e. the datum is masked
            // too, so bits of the datum outside the mask are ignored.
            LinuxSeccompOperator::ScmpCmpMaskedEq => {
                (a.value_two().unwrap_or(0) & a.value(), a.value())
            }
            _ => (a.value(), u64::MAX),
        };
        conds.push(Cond {
            index,
            op: a.op(),
            value,
            mask,
        });
    }
    if conds.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    if count.iter().any(|&c| c > 1) {
        Ok(conds.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conds])
    }
}

/// Rules per syscall number for one architecture, with libseccomp's
/// precedence applied: an unconditional rule replaces every conditional
/// rule for that syscall, and the first unconditional rule wins; conditional
/// rules are tried in spec order (first match wins).
type Table = BTreeMap<u32, Vec<Rule>>;

fn add_rule(table: &mut Table, nr: u32, rule: Rule) {
    let rules = table.entry(nr).or_default();
    if rules.len() == 1 && rules[0].conds.is_empty() {
        return; // already unconditional: at least as broad as anything new
    }
    if rule.conds.is_empty() {
        rules.clear();
    }
    rules.push(rule);
}

/// Compile `seccomp` into a classic BPF program for `native` plus every
/// architecture listed in the spec. See the crate docs for the semantics.
pub fn compile_with(
    seccomp: &LinuxSeccomp,
    native: Arch,
    opts: &CompileOptions,
) -> Result<Program, SeccompError> {
    if seccomp.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(SeccompError::NotifyAsDefault);
    }
    let default = verdict(seccomp.default_action(), seccomp.default_errno_ret())?;

    // Architectures: the spec's list plus native, deduplicated, in order.
    let mut arches = vec![native];
    let mut skipped_arches = Vec::new();
    for &oa in seccomp.architectures().as_deref().unwrap_or(&[]) {
        let a = if oa == OciArch::ScmpArchNative {
            Some(native)
        } else {
            Arch::from_oci(oa)
        };
        match a {
            Some(a) if a.has_table() => {
                if !arches.contains(&a) {
                    arches.push(a);
                }
            }
            _ => {
                if !skipped_arches.contains(&oa) {
                    skipped_arches.push(oa);
                }
            }
        }
    }
    if !native.has_table() {
        return Err(SeccompError::NoSyscallTable(native));
    }

    // Per-arch rule tables.
    let mut tables: Vec<Table> = vec![Table::new(); arches.len()];
    let mut uses_notify = false;
    let mut unknown_syscalls: Vec<String> = Vec::new();
    for sc in seccomp.syscalls().as_deref().unwrap_or(&[]) {
        let v = verdict(sc.action(), sc.errno_ret())?;
        // Like runc: a rule with the default verdict is redundant.
        if v == default {
            continue;
        }
        if sc.action() == LinuxSeccompAction::ScmpActNotify {
            uses_notify = true;
        }
        let rules = rule_conds(sc)?;
        for name in sc.names() {
            let mut known = false;
            for (ai, arch) in arches.iter().enumerate() {
                let Some(nr) = arch.syscall_nr(name) else {
                    continue;
                };
                known = true;
                for conds in &rules {
                    add_rule(
                        &mut tables[ai],
                        nr,
                        Rule {
                            conds: conds.clone(),
                            verdict: v,
                        },
                    );
                }
            }
            if !known {
                if opts.unknown_syscalls == UnknownSyscalls::Error {
                    return Err(SeccompError::UnknownSyscall(name.clone()));
                }
                if !unknown_syscalls.contains(name) {
                    unknown_syscalls.push(name.clone());
                }
            }
        }
    }

    let mut gen = Gen {
        asm: Asm::new(),
        default,
        bad_arch: opts.bad_arch_action,
    };
    gen.program(&arches, &tables);
    let insns = gen.asm.finish()?;
    if insns.len() > BPF_MAXINSNS {
        return Err(SeccompError::TooLong {
            len: insns.len(),
            max: BPF_MAXINSNS,
        });
    }
    Ok(Program {
        insns,
        arches,
        skipped_arches,
        uses_notify,
        unknown_syscalls,
    })
}

struct Gen {
    asm: Asm,
    default: u32,
    bad_arch: u32,
}

impl Gen {
    fn program(&mut self, arches: &[Arch], tables: &[Table]) {
        // Group x86_64 and x32 under their shared audit value.
        let x86_64 = arches.iter().position(|&a| a == Arch::X86_64);
        let x32 = arches.iter().position(|&a| a == Arch::X32);

        // Dispatch on seccomp_data.arch.
        self.asm.ld(OFF_ARCH);
        let mut sections: Vec<(Label, usize)> = Vec::new();
        let mut x86_64_group: Option<Label> = None;
        for (i, a) in arches.iter().enumerate() {
            let (l, new) = match a {
                Arch::X86_64 | Arch::X32 => match x86_64_group {
                    Some(l) => (l, false),
                    None => {
                        let l = self.asm.label();
                        x86_64_group = Some(l);
                        (l, true)
                    }
                },
                _ => (self.asm.label(), true),
            };
            if !matches!(a, Arch::X86_64 | Arch::X32) {
                sections.push((l, i));
            }
            if new {
                let next = self.asm.label();
                self.asm.jmp(Cmp::Eq, a.audit_arch(), l, next);
                self.asm.bind(next);
            }
        }
        // No architecture matched.
        self.asm.ret(self.bad_arch);

        // AUDIT_ARCH_X86_64: split native x86_64 from x32 numbers.
        if let Some(group) = x86_64_group {
            self.asm.bind(group);
            self.asm.ld(OFF_NR);
            let x32_sec = self.asm.label();
            let x64_sec = self.asm.label();
            let high = self.asm.label();
            // Jumps only go forward: a local copy of the bad-arch return.
            let bad = self.asm.label();
            let low_target = if x86_64.is_some() { x64_sec } else { bad };
            self.asm.jmp(Cmp::Ge, X32_SYSCALL_BIT, high, low_target);
            self.asm.bind(high);
            let x32_target = if x32.is_some() { x32_sec } else { bad };
            if x86_64.is_some() {
                // libseccomp: nr == -1 (a tracer skipping the syscall) is
                // not a bad arch; it goes to the x86_64 rules.
                self.asm.jmp(Cmp::Eq, u32::MAX, x64_sec, x32_target);
            } else {
                self.asm.ja(x32_target);
            }
            self.asm.bind(bad);
            self.asm.ret(self.bad_arch);
            self.asm.bind(x64_sec);
            if let Some(i) = x86_64 {
                self.section(Arch::X86_64, &tables[i]);
            }
            self.asm.bind(x32_sec);
            if let Some(i) = x32 {
                self.section(Arch::X32, &tables[i]);
            }
        }
        for (l, i) in sections {
            self.asm.bind(l);
            self.asm.ld(OFF_NR);
            self.section(arches[i], &tables[i]);
        }
    }

    /// Rules of one architecture; `A` holds `seccomp_data.nr` on entry.
    fn section(&mut self, arch: Arch, table: &Table) {
        // Unconditional syscalls grouped by verdict, CHUNK per shared `ret`.
        let mut by_verdict: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut conditional: Vec<(u32, &Vec<Rule>)> = Vec::new();
        for (&nr, rules) in table {
            match rules.as_slice() {
                [r] if r.conds.is_empty() => by_verdict.entry(r.verdict).or_default().push(nr),
                _ => conditional.push((nr, rules)),
            }
        }
        for (v, nrs) in &by_verdict {
            for chunk in nrs.chunks(CHUNK) {
                let hit = self.asm.label();
                let miss = self.asm.label();
                for (j, &nr) in chunk.iter().enumerate() {
                    let next = if j + 1 == chunk.len() {
                        miss
                    } else {
                        self.asm.label()
                    };
                    self.asm.jmp(Cmp::Eq, nr, hit, next);
                    if next != miss {
                        self.asm.bind(next);
                    }
                }
                self.asm.bind(hit);
                self.asm.ret(*v);
                self.asm.bind(miss);
            }
        }
        for (nr, rules) in conditional {
            let body = self.asm.label();
            let next_sys = self.asm.label();
            self.asm.jmp(Cmp::Eq, nr, body, next_sys);
            self.asm.bind(body);
            for rule in rules {
                let fail = self.asm.label();
                for c in &rule.conds {
                    self.cond(arch, c, fail);
                }
                self.asm.ret(rule.verdict);
                self.asm.bind(fail);
            }
            self.asm.ret(self.default);
            self.asm.bind(next_sys);
        }
        self.asm.ret(self.default);
    }

    /// Fall through if `c` holds, jump to `fail` otherwise.
    fn cond(&mut self, arch: Arch, c: &Cond, fail: Label) {
        use LinuxSeccompOperator as Op;
        let base = OFF_ARGS + 8 * c.index as u32;
        let (lo_off, hi_off) = if arch.is_big_endian() {
            (base + 4, base)
        } else {
            (base, base + 4)
        };
        let (vlo, vhi) = (c.value as u32, (c.value >> 32) as u32);
        let (mlo, mhi) = (c.mask as u32, (c.mask >> 32) as u32);
        let ok = self.asm.label();
        let a = &mut self.asm;

        if arch.is_32bit() {
            // Only the low word exists (libseccomp truncates the datum).
            a.ld(lo_off);
            match c.op {
                Op::ScmpCmpEq => a.jmp(Cmp::Eq, vlo, ok, fail),
                Op::ScmpCmpNe => a.jmp(Cmp::Eq, vlo, fail, ok),
                Op::ScmpCmpGt => a.jmp(Cmp::Gt, vlo, ok, fail),
                Op::ScmpCmpGe => a.jmp(Cmp::Ge, vlo, ok, fail),
                Op::ScmpCmpLt => a.jmp(Cmp::Ge, vlo, fail, ok),
                Op::ScmpCmpLe => a.jmp(Cmp::Gt, vlo, fail, ok),
                Op::ScmpCmpMaskedEq => {
                    a.and(mlo);
                    a.jmp(Cmp::Eq, vlo, ok, fail);
                }
            }
            a.bind(ok);
            return;
        }

        let lo = a.label();
        a.ld(hi_off);
        match c.op {
            Op::ScmpCmpEq => {
                a.jmp(Cmp::Eq, vhi, lo, fail);
                a.bind(lo);
                a.ld(lo_off);
                a.jmp(Cmp::Eq, vlo, ok, fail);
            }
            Op::ScmpCmpNe => {
                a.jmp(Cmp::Eq, vhi, lo, ok);
                a.bind(lo);
                a.ld(lo_off);
                a.jmp(Cmp::Eq, vlo, fail, ok);
            }
            Op::ScmpCmpMaskedEq => {
                a.and(mhi);
                a.jmp(Cmp::Eq, vhi, lo, fail);
                a.bind(lo);
                a.ld(lo_off);
                a.and(mlo);
                a.jmp(Cmp::Eq, vlo, ok, fail);
            }
            Op::ScmpCmpGt | Op::ScmpCmpGe | Op::ScmpCmpLt | Op::ScmpCmpLe => {
                // greater := hi > vhi || (hi == vhi && lo {>,>=} vlo)
                let lo_cmp = if matches!(c.op, Op::ScmpCmpGt | Op::ScmpCmpLe) {
                    Cmp::Gt
                } else {
                    Cmp::Ge
                };
                let (t, f) = if matches!(c.op, Op::ScmpCmpGt | Op::ScmpCmpGe) {
                    (ok, fail)
                } else {
                    (fail, ok) // LT = !GE, LE = !GT
                };
                let eq = a.label();
                a.jmp(Cmp::Gt, vhi, t, eq);
                a.bind(eq);
                a.jmp(Cmp::Eq, vhi, lo, f);
                a.bind(lo);
                a.ld(lo_off);
                a.jmp(lo_cmp, vlo, t, f);
            }
        }
        a.bind(ok);
    }
}
