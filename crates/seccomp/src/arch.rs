//! Architectures: kernel `AUDIT_ARCH_*` values and syscall-number tables.
//!
//! The `AUDIT_ARCH_*` values are taken from the discriminants of
//! [`oci_spec::runtime::Arch`] (libseccomp's `SCMP_ARCH_*` tokens are the
//! kernel's audit-arch values, except for x32, whose syscalls the kernel
//! reports with `AUDIT_ARCH_X86_64` and the `__X32_SYSCALL_BIT` set in the
//! syscall number). Syscall numbers come from the `syscalls` crate's
//! per-architecture tables; none are written here by hand.

use std::str::FromStr;

use oci_spec::runtime::Arch as OciArch;

/// `__X32_SYSCALL_BIT`: x32 syscalls arrive on `AUDIT_ARCH_X86_64` with this
/// bit set in `seccomp_data.nr`.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `__AUDIT_ARCH_LE`: set in an audit-arch value for little-endian ABIs.
pub const AUDIT_ARCH_LE: u32 = 0x4000_0000;

/// An architecture (syscall ABI) a filter can have a section for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    X86,
    /// x32 ABI (x86_64 kernel, `AUDIT_ARCH_X86_64`, nr | `X32_SYSCALL_BIT`).
    X32,
    Aarch64,
    Arm,
    /// MIPS64 big-endian, n64 ABI.
    Mips64,
    /// MIPS64 big-endian, n32 ABI (no table available: see [`Arch::has_table`]).
    Mips64N32,
    /// MIPS big-endian, o32 ABI.
    Mips,
    /// MIPS64 little-endian, n64 ABI.
    Mipsel64,
    /// MIPS64 little-endian, n32 ABI (no table available).
    Mipsel64N32,
    /// MIPS little-endian, o32 ABI.
    Mipsel,
    Ppc64le,
    S390x,
    Riscv64,
    Loongarch64,
}

impl Arch {
    /// Every architecture this crate knows.
    pub const ALL: [Arch; 15] = [
        Arch::X86_64,
        Arch::X86,
        Arch::X32,
        Arch::Aarch64,
        Arch::Arm,
        Arch::Mips64,
        Arch::Mips64N32,
        Arch::Mips,
        Arch::Mipsel64,
        Arch::Mipsel64N32,
        Arch::Mipsel,
        Arch::Ppc64le,
        Arch::S390x,
        Arch::Riscv64,
        Arch::Loongarch64,
    ];

    /// The architecture this binary was built for, if it is one we support.
    pub fn native() -> Option<Arch> {
        #[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
        return Some(Arch::X86_64);
        #[cfg(all(target_arch = "x86_64", target_pointer_width = "32"))]
        return Some(Arch::X32);
        #[cfg(target_arch = "x86")]
        return Some(Arch::X86);
        #[cfg(target_arch = "aarch64")]
        return Some(Arch::Aarch64);
        #[cfg(target_arch = "arm")]
        return Some(Arch::Arm);
        #[cfg(all(
            target_arch = "mips64",
            target_endian = "big",
            target_pointer_width = "64"
        ))]
        return Some(Arch::Mips64);
        #[cfg(all(
            target_arch = "mips64",
            target_endian = "little",
            target_pointer_width = "64"
        ))]
        return Some(Arch::Mipsel64);
        #[cfg(all(
            target_arch = "mips64",
            target_endian = "big",
            target_pointer_width = "32"
        ))]
        return Some(Arch::Mips64N32);
        #[cfg(all(
            target_arch = "mips64",
            target_endian = "little",
            target_pointer_width = "32"
        ))]
        return Some(Arch::Mipsel64N32);
        #[cfg(all(target_arch = "mips", target_endian = "big"))]
        return Some(Arch::Mips);
        #[cfg(all(target_arch = "mips", target_endian = "little"))]
        return Some(Arch::Mipsel);
        #[cfg(all(target_arch = "powerpc64", target_endian = "little"))]
        return Some(Arch::Ppc64le);
        #[cfg(target_arch = "s390x")]
        return Some(Arch::S390x);
        #[cfg(target_arch = "riscv64")]
        return Some(Arch::Riscv64);
        #[cfg(target_arch = "loongarch64")]
        return Some(Arch::Loongarch64);
        #[allow(unreachable_code)]
        None
    }

    /// Map an OCI (`SCMP_ARCH_*`) architecture. `None` for architectures
    /// this crate has no support for (and for `SCMP_ARCH_NATIVE`, which the
    /// caller resolves).
    pub fn from_oci(arch: OciArch) -> Option<Arch> {
        Some(match arch {
            OciArch::ScmpArchX86_64 => Arch::X86_64,
            OciArch::ScmpArchX86 => Arch::X86,
            OciArch::ScmpArchX32 => Arch::X32,
            OciArch::ScmpArchAarch64 => Arch::Aarch64,
            OciArch::ScmpArchArm => Arch::Arm,
            OciArch::ScmpArchMips64 => Arch::Mips64,
            OciArch::ScmpArchMips64n32 => Arch::Mips64N32,
            OciArch::ScmpArchMips => Arch::Mips,
            OciArch::ScmpArchMipsel64 => Arch::Mipsel64,
            OciArch::ScmpArchMipsel64n32 => Arch::Mipsel64N32,
            OciArch::ScmpArchMipsel => Arch::Mipsel,
            OciArch::ScmpArchPpc64le => Arch::Ppc64le,
            OciArch::ScmpArchS390x => Arch::S390x,
            OciArch::ScmpArchRiscv64 => Arch::Riscv64,
            OciArch::ScmpArchLoongarch64 => Arch::Loongarch64,
            _ => return None,
        })
    }

    /// The corresponding OCI architecture.
    pub fn to_oci(self) -> OciArch {
        match self {
            Arch::X86_64 => OciArch::ScmpArchX86_64,
            Arch::X86 => OciArch::ScmpArchX86,
            Arch::X32 => OciArch::ScmpArchX32,
            Arch::Aarch64 => OciArch::ScmpArchAarch64,
            Arch::Arm => OciArch::ScmpArchArm,
            Arch::Mips64 => OciArch::ScmpArchMips64,
            Arch::Mips64N32 => OciArch::ScmpArchMips64n32,
            Arch::Mips => OciArch::ScmpArchMips,
            Arch::Mipsel64 => OciArch::ScmpArchMipsel64,
            Arch::Mipsel64N32 => OciArch::ScmpArchMipsel64n32,
            Arch::Mipsel => OciArch::ScmpArchMipsel,
            Arch::Ppc64le => OciArch::ScmpArchPpc64le,
            Arch::S390x => OciArch::ScmpArchS390x,
            Arch::Riscv64 => OciArch::ScmpArchRiscv64,
            Arch::Loongarch64 => OciArch::ScmpArchLoongarch64,
        }
    }

    /// The kernel's `AUDIT_ARCH_*` value, as seen in `seccomp_data.arch`.
    pub fn audit_arch(self) -> u32 {
        match self {
            // x32 syscalls are reported as AUDIT_ARCH_X86_64 (plus the nr bit).
            Arch::X32 => OciArch::ScmpArchX86_64 as u32,
            other => other.to_oci() as u32,
        }
    }

    /// Whether `seccomp_data.args[i]` is stored big-endian (high word first).
    pub fn is_big_endian(self) -> bool {
        self.audit_arch() & AUDIT_ARCH_LE == 0
    }

    /// Whether the ABI's syscall arguments are 32 bits wide. For these,
    /// like libseccomp, only the low 32 bits of an argument are compared
    /// (the rule's value is truncated to 32 bits).
    pub fn is_32bit(self) -> bool {
        matches!(
            self,
            Arch::X86
                | Arch::X32
                | Arch::Arm
                | Arch::Mips
                | Arch::Mipsel
                | Arch::Mips64N32
                | Arch::Mipsel64N32
        )
    }

    /// Whether the `syscalls` crate has a table for this ABI. There is none
    /// for the MIPS n32 ABIs; x32 is derived from the x86_64 table (see
    /// [`Arch::syscall_nr`]).
    pub fn has_table(self) -> bool {
        !matches!(self, Arch::Mips64N32 | Arch::Mipsel64N32)
    }

    /// Resolve a syscall name to its number on this ABI (as it appears in
    /// `seccomp_data.nr`). `None` if the name is unknown on this ABI.
    ///
    /// x32: the `syscalls` crate has no x32 table, so the x86_64 number with
    /// `X32_SYSCALL_BIT` is used. This is exact for the kernel's `common`
    /// syscalls; the ~35 x32-specific compat entries (numbers 512..) are not
    /// in any table we have and are therefore never matched by name.
    pub fn syscall_nr(self, name: &str) -> Option<u32> {
        fn id<T: FromStr>(name: &str, f: impl Fn(T) -> i32) -> Option<u32> {
            T::from_str(name).ok().map(|s| f(s) as u32)
        }
        match self {
            Arch::X86_64 => id(name, |s: syscalls::x86_64::Sysno| s.id()),
            Arch::X32 => id(name, |s: syscalls::x86_64::Sysno| s.id()).map(|n| n | X32_SYSCALL_BIT),
            Arch::X86 => id(name, |s: syscalls::x86::Sysno| s.id()),
            Arch::Aarch64 => id(name, |s: syscalls::aarch64::Sysno| s.id()),
            Arch::Arm => id(name, |s: syscalls::arm::Sysno| s.id()),
            Arch::Mips64 | Arch::Mipsel64 => id(name, |s: syscalls::mips64::Sysno| s.id()),
            Arch::Mips | Arch::Mipsel => id(name, |s: syscalls::mips::Sysno| s.id()),
            Arch::Mips64N32 | Arch::Mipsel64N32 => None,
            Arch::Ppc64le => id(name, |s: syscalls::powerpc64::Sysno| s.id()),
            Arch::S390x => id(name, |s: syscalls::s390x::Sysno| s.id()),
            Arch::Riscv64 => id(name, |s: syscalls::riscv64::Sysno| s.id()),
            Arch::Loongarch64 => id(name, |s: syscalls::loongarch64::Sysno| s.id()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setns_numbers_from_tables() {
        assert_eq!(Arch::X86_64.syscall_nr("setns"), Some(308));
        assert_eq!(Arch::X86.syscall_nr("setns"), Some(346));
        assert_eq!(Arch::Aarch64.syscall_nr("setns"), Some(268));
        assert_eq!(Arch::Loongarch64.syscall_nr("setns"), Some(268));
        assert_eq!(Arch::Mips64.syscall_nr("setns"), Some(5303));
        assert_eq!(Arch::Mipsel64.syscall_nr("setns"), Some(5303));
        assert_eq!(Arch::X32.syscall_nr("setns"), Some(308 | X32_SYSCALL_BIT));
        assert_eq!(Arch::Mips64N32.syscall_nr("setns"), None);
        assert_eq!(Arch::X86_64.syscall_nr("no_such_syscall"), None);
        // mkdir exists on x86_64 but not on the generic-table arches.
        assert_eq!(Arch::X86_64.syscall_nr("mkdir"), Some(83));
        assert_eq!(Arch::Aarch64.syscall_nr("mkdir"), None);
    }

    #[test]
    fn audit_values() {
        assert_eq!(Arch::X86_64.audit_arch(), 0xc000_003e);
        assert_eq!(Arch::X32.audit_arch(), 0xc000_003e);
        assert_eq!(Arch::X86.audit_arch(), 0x4000_0003);
        assert_eq!(Arch::Aarch64.audit_arch(), 0xc000_00b7);
        assert_eq!(Arch::Mips64.audit_arch(), 0x8000_0008);
        assert!(Arch::Mips64.is_big_endian());
        assert!(Arch::S390x.is_big_endian());
        assert!(!Arch::Ppc64le.is_big_endian());
        assert!(!Arch::X86_64.is_big_endian());
        for a in Arch::ALL {
            assert_eq!(Arch::from_oci(a.to_oci()), Some(a));
        }
    }

    #[test]
    fn native_is_known() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Arch::native(), Some(Arch::X86_64));
        #[cfg(target_arch = "aarch64")]
        assert_eq!(Arch::native(), Some(Arch::Aarch64));
    }
}
