//! The seccomp compiler on an OCI `linux.seccomp` object from an untrusted config.json, for
//! every architecture as the native one, and the compiled programs in the BPF interpreter.
//!
//! Input: the JSON text, optionally followed by a NUL byte and "probe" bytes that choose the
//! syscall numbers and arguments the programs are run on.
//!
//! Properties: no panic, bounded time, and every program the compiler returns is one the
//! kernel's checker would take and that always reaches a verdict: 1..=BPF_MAXINSNS
//! instructions, only the opcodes seccomp allows, loads at aligned offsets inside
//! `seccomp_data`, every jump inside the program, the last instruction a `RET`. Running it never
//! fails; a foreign architecture gets the bad-arch verdict; a syscall no rule names gets the same
//! verdict as in the program compiled without any rule (the default action).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompBuilder};
use rcrun_seccomp::bpf::*;
use rcrun_seccomp::{compile, interp, Arch, Insn, SeccompData};

/// A number no architecture uses for a syscall (below the x32 bit, above every table).
const UNUSED_NR: u32 = 0x3fff_0000;

fn check_program(insns: &[Insn]) {
    assert!(!insns.is_empty(), "empty program");
    assert!(insns.len() <= BPF_MAXINSNS, "{} instructions", insns.len());
    let len = insns.len();
    for (pc, i) in insns.iter().enumerate() {
        let next = pc + 1;
        match i.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => {
                assert!(i.k % 4 == 0 && i.k < 64, "pc {pc}: load at {}", i.k);
            }
            c if c == BPF_ALU | BPF_AND | BPF_K => {}
            c if c == BPF_JMP | BPF_JA => {
                assert!(
                    (next as u64) + (i.k as u64) < len as u64,
                    "pc {pc}: ja +{} out of {len}",
                    i.k
                );
            }
            c if c == BPF_JMP | BPF_JEQ | BPF_K
                || c == BPF_JMP | BPF_JGT | BPF_K
                || c == BPF_JMP | BPF_JGE | BPF_K
                || c == BPF_JMP | BPF_JSET | BPF_K =>
            {
                assert!(
                    next + (i.jt as usize) < len && next + (i.jf as usize) < len,
                    "pc {pc}: jump +{}/+{} out of {len}",
                    i.jt,
                    i.jf
                );
            }
            c if c == BPF_RET | BPF_K => {}
            c => panic!("pc {pc}: opcode {c:#06x} not allowed in a seccomp filter"),
        }
    }
    let last = insns[len - 1];
    assert_eq!(
        last.code,
        BPF_RET | BPF_K,
        "the last instruction is not a RET"
    );
}

fn run(insns: &[Insn], d: &SeccompData) -> u32 {
    match interp::run(insns, d) {
        Ok(v) => v,
        Err(e) => panic!("program does not reach a verdict for {d:?}: {e}"),
    }
}

fn without_rules(sc: &LinuxSeccomp) -> Option<LinuxSeccomp> {
    let mut b = LinuxSeccompBuilder::default().default_action(sc.default_action());
    if let Some(e) = sc.default_errno_ret() {
        b = b.default_errno_ret(e);
    }
    if let Some(a) = sc.architectures() {
        b = b.architectures(a.clone());
    }
    b.build().ok()
}

fuzz_target!(|data: &[u8]| {
    let (json, probe) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(sc) = serde_json::from_slice::<LinuxSeccomp>(json) else {
        return;
    };
    let byte = |i: usize| probe.get(i).copied().unwrap_or(0);
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        for (j, x) in w.iter_mut().enumerate() {
            *x = byte(8 + i * 8 + j);
        }
        *a = u64::from_le_bytes(w);
    }
    let extra_nr = u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
    let base = sc.default_action();
    let bare = without_rules(&sc);
    let names: Vec<&String> = sc
        .syscalls()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .flat_map(|s| s.names().iter())
        .collect();

    for native in Arch::ALL {
        let Ok(prog) = compile(&sc, native) else {
            continue;
        };
        check_program(&prog.insns);
        // Anything not from one of the filter's architectures: the bad-arch verdict.
        let foreign = SeccompData {
            nr: extra_nr,
            arch: 0x1234_5678,
            instruction_pointer: 0,
            args,
        };
        assert_eq!(
            run(&prog.insns, &foreign),
            libc::SECCOMP_RET_KILL_THREAD,
            "foreign architecture"
        );
        let bare_prog = bare.as_ref().and_then(|b| compile(b, native).ok());
        if let Some(bp) = &bare_prog {
            check_program(&bp.insns);
        }
        for &arch in &prog.arches {
            let with_nr = |nr: u32| SeccompData {
                nr,
                arch: arch.audit_arch(),
                instruction_pointer: 0,
                args,
            };
            let _ = run(&prog.insns, &with_nr(extra_nr));
            let _ = run(&prog.insns, &with_nr(u32::MAX));
            // A few of the named syscalls (chosen by the probe), with the probe's arguments.
            let skip = byte(2) as usize;
            for name in names.iter().skip(skip % names.len().max(1)).take(16) {
                if let Some(nr) = arch.syscall_nr(name) {
                    let _ = run(&prog.insns, &with_nr(nr));
                }
            }
            // A syscall no rule can name: the default action, as with no rules at all.
            let unused = if arch == Arch::X32 {
                UNUSED_NR | rcrun_seccomp::arch::X32_SYSCALL_BIT
            } else {
                UNUSED_NR
            };
            let got = run(&prog.insns, &with_nr(unused));
            if let Some(bp) = &bare_prog {
                assert_eq!(
                    got,
                    run(&bp.insns, &with_nr(unused)),
                    "{arch:?}: unnamed syscall does not get the default action {base:?}"
                );
            }
        }
    }
});
