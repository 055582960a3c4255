//! Classic BPF instructions and a small label-based assembler that resolves
//! forward jumps and turns conditional jumps farther than 255 instructions
//! into `JA` trampolines (`JA` has a 32-bit offset).

use crate::SeccompError;

/// One classic BPF instruction; same layout as `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());
const _: () = assert!(std::mem::align_of::<Insn>() == std::mem::align_of::<libc::sock_filter>());

impl From<Insn> for libc::sock_filter {
    fn from(i: Insn) -> Self {
        libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        }
    }
}

// Opcode pieces (linux/filter.h, linux/bpf_common.h).
pub const BPF_LD: u16 = 0x00;
pub const BPF_ALU: u16 = 0x04;
pub const BPF_JMP: u16 = 0x05;
pub const BPF_RET: u16 = 0x06;
pub const BPF_W: u16 = 0x00;
pub const BPF_ABS: u16 = 0x20;
pub const BPF_AND: u16 = 0x50;
pub const BPF_JA: u16 = 0x00;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_JGT: u16 = 0x20;
pub const BPF_JGE: u16 = 0x30;
pub const BPF_JSET: u16 = 0x40;
pub const BPF_K: u16 = 0x00;

/// Maximum program length accepted by the kernel.
pub const BPF_MAXINSNS: usize = libc::BPF_MAXINSNS as usize;

/// A jump target inside an [`Asm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label(usize);

/// Conditional jump comparisons (against the constant `k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Gt,
    Ge,
    Set,
}

impl Cmp {
    fn code(self) -> u16 {
        BPF_JMP
            | BPF_K
            | match self {
                Cmp::Eq => BPF_JEQ,
                Cmp::Gt => BPF_JGT,
                Cmp::Ge => BPF_JGE,
                Cmp::Set => BPF_JSET,
            }
    }
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Bind(Label),
    /// `A = *(u32 *)(data + off)`
    Ld(u32),
    /// `A &= k`
    And(u32),
    Jmp {
        cmp: Cmp,
        k: u32,
        jt: Label,
        jf: Label,
    },
    Ja(Label),
    Ret(u32),
}

/// Label-based assembler.
#[derive(Debug, Default)]
pub struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    /// Place `l` at the current position.
    pub fn bind(&mut self, l: Label) {
        self.items.push(Item::Bind(l));
    }

    pub fn ld(&mut self, off: u32) {
        self.items.push(Item::Ld(off));
    }

    pub fn and(&mut self, k: u32) {
        self.items.push(Item::And(k));
    }

    pub fn jmp(&mut self, cmp: Cmp, k: u32, jt: Label, jf: Label) {
        self.items.push(Item::Jmp { cmp, k, jt, jf });
    }

    pub fn ja(&mut self, l: Label) {
        self.items.push(Item::Ja(l));
    }

    pub fn ret(&mut self, k: u32) {
        self.items.push(Item::Ret(k));
    }

    /// Resolve labels and produce instructions. Conditional jumps that are
    /// too far get `JA` trampolines; this is iterated to a fixed point
    /// (inserting instructions only lengthens jumps, so each conditional
    /// jump is expanded at most once per target).
    pub fn finish(mut self) -> Result<Vec<Insn>, SeccompError> {
        loop {
            let pos = self.positions()?;
            let mut changed = false;
            let mut out = Vec::with_capacity(self.items.len() + 16);
            let mut idx = 0usize; // instruction index of the item being examined
            for item in std::mem::take(&mut self.items) {
                match item {
                    Item::Jmp { cmp, k, jt, jf } => {
                        let far = |l: Label| pos[l.0].saturating_sub(idx + 1) > 255;
                        let (t_far, f_far) = (far(jt), far(jf));
                        if t_far || f_far {
                            changed = true;
                            let nt = if t_far { self.label() } else { jt };
                            let nf = if f_far { self.label() } else { jf };
                            out.push(Item::Jmp {
                                cmp,
                                k,
                                jt: nt,
                                jf: nf,
                            });
                            if t_far {
                                out.push(Item::Bind(nt));
                                out.push(Item::Ja(jt));
                            }
                            if f_far {
                                out.push(Item::Bind(nf));
                                out.push(Item::Ja(jf));
                            }
                        } else {
                            out.push(item);
                        }
                        idx += 1;
                    }
                    Item::Bind(_) => out.push(item),
                    _ => {
                        out.push(item);
                        idx += 1;
                    }
                }
            }
            self.items = out;
            if !changed {
                break;
            }
        }
        self.emit()
    }

    /// Instruction index of every label.
    fn positions(&self) -> Result<Vec<usize>, SeccompError> {
        let mut pos = vec![usize::MAX; self.labels];
        let mut idx = 0usize;
        for item in &self.items {
            match item {
                Item::Bind(l) => pos[l.0] = idx,
                _ => idx += 1,
            }
        }
        if pos.contains(&usize::MAX) {
            return Err(SeccompError::Internal("unbound label".into()));
        }
        Ok(pos)
    }

    fn emit(&self) -> Result<Vec<Insn>, SeccompError> {
        let pos = self.positions()?;
        let total = self
            .items
            .iter()
            .filter(|i| !matches!(i, Item::Bind(_)))
            .count();
        let mut out = Vec::with_capacity(total);
        let offset = |idx: usize, l: Label| -> Result<usize, SeccompError> {
            if pos[l.0] >= total {
                return Err(SeccompError::Internal("jump past the end".into()));
            }
            pos[l.0]
                .checked_sub(idx + 1)
                .ok_or_else(|| SeccompError::Internal("backward jump".into()))
        };
        for item in &self.items {
            let idx = out.len();
            let insn = match *item {
                Item::Bind(_) => continue,
                Item::Ld(off) => Insn {
                    code: BPF_LD | BPF_W | BPF_ABS,
                    jt: 0,
                    jf: 0,
                    k: off,
                },
                Item::And(k) => Insn {
                    code: BPF_ALU | BPF_AND | BPF_K,
                    jt: 0,
                    jf: 0,
                    k,
                },
                Item::Jmp { cmp, k, jt, jf } => {
                    let t = u8::try_from(offset(idx, jt)?)
                        .map_err(|_| SeccompError::Internal("jump too far".into()))?;
                    let f = u8::try_from(offset(idx, jf)?)
                        .map_err(|_| SeccompError::Internal("jump too far".into()))?;
                    Insn {
                        code: cmp.code(),
                        jt: t,
                        jf: f,
                        k,
                    }
                }
                Item::Ja(l) => Insn {
                    code: BPF_JMP | BPF_JA,
                    jt: 0,
                    jf: 0,
                    k: u32::try_from(offset(idx, l)?)
                        .map_err(|_| SeccompError::Internal("jump too far".into()))?,
                },
                Item::Ret(k) => Insn {
                    code: BPF_RET | BPF_K,
                    jt: 0,
                    jf: 0,
                    k,
                },
            };
            out.push(insn);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_jumps_get_trampolines() {
        let mut a = Asm::new();
        let far = a.label();
        let near = a.label();
        a.ld(0);
        a.jmp(Cmp::Eq, 1, far, near);
        a.bind(near);
        for _ in 0..300 {
            a.ld(0);
        }
        a.ret(7);
        a.bind(far);
        a.ret(9);
        let p = a.finish().unwrap();
        // ld, jeq, ja, 300 x ld, ret, ret
        assert_eq!(p.len(), 305);
        assert_eq!(p[1].code, BPF_JMP | BPF_JEQ);
        assert_eq!((p[1].jt, p[1].jf), (0, 1));
        assert_eq!(p[2].code, BPF_JMP | BPF_JA);
        assert_eq!(2 + 1 + p[2].k as usize, 304);
        assert_eq!(p[304].k, 9);
    }
}
