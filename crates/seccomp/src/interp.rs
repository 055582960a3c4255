//! A tiny classic-BPF interpreter for seccomp programs, for tests and
//! differential checks (e.g. against libseccomp-generated filters).
//!
//! It supports the instructions the kernel's seccomp verifier accepts that
//! this compiler and libseccomp emit: `LD|W|ABS`, `ALU|AND|K`, `JMP|{JA,JEQ,
//! JGT,JGE,JSET}|K` and `RET|K`. `seccomp_data` is laid out in the byte
//! order of the ABI named by `data.arch` (the `__AUDIT_ARCH_LE` bit).

use crate::arch::AUDIT_ARCH_LE;
use crate::bpf::*;

/// `struct seccomp_data`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    pub fn new(arch: crate::Arch, nr: u32, args: [u64; 6]) -> Self {
        Self {
            nr,
            arch: arch.audit_arch(),
            instruction_pointer: 0,
            args,
        }
    }

    /// The 64 bytes the kernel hands to the filter.
    pub fn to_bytes(&self) -> [u8; 64] {
        let le = self.arch & AUDIT_ARCH_LE != 0;
        let mut b = [0u8; 64];
        let w32 = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let w64 = |v: u64| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        b[0..4].copy_from_slice(&w32(self.nr));
        b[4..8].copy_from_slice(&w32(self.arch));
        b[8..16].copy_from_slice(&w64(self.instruction_pointer));
        for (i, a) in self.args.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&w64(*a));
        }
        b
    }
}

/// Why a program could not be run to a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    #[error("pc {0}: ran off the end of the program")]
    OutOfBounds(usize),
    #[error("pc {0}: load at bad offset {1}")]
    BadLoad(usize, u32),
    #[error("pc {0}: unsupported opcode {1:#06x}")]
    BadOpcode(usize, u16),
}

/// Run `prog` on `data`; returns the `SECCOMP_RET_*` verdict.
pub fn run(prog: &[Insn], data: &SeccompData) -> Result<u32, InterpError> {
    let le = data.arch & AUDIT_ARCH_LE != 0;
    let bytes = data.to_bytes();
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = prog.get(pc).ok_or(InterpError::OutOfBounds(pc))?;
        let next = pc + 1;
        match insn.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => {
                let off = insn.k as usize;
                if !off.is_multiple_of(4) || off + 4 > bytes.len() {
                    return Err(InterpError::BadLoad(pc, insn.k));
                }
                let w = [bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]];
                a = if le {
                    u32::from_le_bytes(w)
                } else {
                    u32::from_be_bytes(w)
                };
                pc = next;
            }
            c if c == BPF_ALU | BPF_AND | BPF_K => {
                a &= insn.k;
                pc = next;
            }
            c if c == BPF_JMP | BPF_JA => {
                pc = next + insn.k as usize;
            }
            c if c & 0x07 == BPF_JMP => {
                let cond = match c & 0xf0 {
                    BPF_JEQ => a == insn.k,
                    BPF_JGT => a > insn.k,
                    BPF_JGE => a >= insn.k,
                    BPF_JSET => a & insn.k != 0,
                    _ => return Err(InterpError::BadOpcode(pc, c)),
                };
                if c & 0x08 != 0 {
                    // BPF_X: not used by seccomp filters here.
                    return Err(InterpError::BadOpcode(pc, c));
                }
                pc = next + if cond { insn.jt } else { insn.jf } as usize;
            }
            c if c == BPF_RET | BPF_K => return Ok(insn.k),
            c => return Err(InterpError::BadOpcode(pc, c)),
        }
    }
}
