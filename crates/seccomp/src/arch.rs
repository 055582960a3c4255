//! Architectures: kernel `AUDIT_ARCH_*` values and syscall-number tables.
//!
//! The `AUDIT_ARCH_*` values are taken from the discriminants of
//! [`oci_spec::runtime::Arch`] (libseccomp's `SCMP_ARCH_*` tokens are the
//! kernel's audit-arch values, except for x32, whose syscalls the kernel
//! reports with `AUDIT_ARCH_X86_64` and the `__X32_SYSCALL_BIT` set in the
//! syscall number). Syscall numbers come from per-architecture tables of two
//! crates, none are written here by hand:
//!
//! - `syscalls` (an enum per ABI): x86_64, x86, arm, mips o32, mips64 n64,
//!   ppc64, s390x, riscv64, loongarch64;
//! - `syscall-numbers` (number -> name per ABI): x32, mips n32 and aarch64
//!   alone, and as a fallback for names the `syscalls` table lacks on the
//!   others (see [`Arch::syscall_nr`]). Its x32 table carries
//!   `__X32_SYSCALL_BIT`, has the x32-only compat entries (512..547) and
//!   leaves out the x86_64 entries x32 cannot call (e.g. 13, the 64-bit
//!   `rt_sigaction`).
//!
//! Both are turned into name -> number maps once per process. The unit test
//! `tests::tables_agree` checks the two crates against each other on every
//! ABI both have; `tests/libseccomp_diff.rs` checks them against
//! libseccomp's table, `tests/loongarch64.rs` against the kernel's generic
//! table.

use std::collections::HashMap;
use std::ffi::c_long;
use std::sync::OnceLock;

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
    /// MIPS64 big-endian, n32 ABI.
    Mips64N32,
    /// MIPS big-endian, o32 ABI.
    Mips,
    /// MIPS64 little-endian, n64 ABI.
    Mipsel64,
    /// MIPS64 little-endian, n32 ABI.
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

    /// Whether there is a syscall table for this ABI. Every ABI of [`Arch`]
    /// has one (x32 and the MIPS n32 ABIs come from `syscall-numbers`); kept
    /// so that an ABI added without a table is skipped (fail closed).
    pub fn has_table(self) -> bool {
        true
    }

    /// Resolve a syscall name to its number on this ABI (as it appears in
    /// `seccomp_data.nr`, i.e. with `X32_SYSCALL_BIT` on x32 and the 4000,
    /// 5000 and 6000 bases on MIPS o32, n64 and n32). `None` if the name is
    /// unknown on this ABI.
    ///
    /// Where both crates have the ABI, `syscalls` is asked first, then
    /// `syscall-numbers`: each lacks a few names the other has (e.g.
    /// `syscalls` has no arm `sync_file_range2`, `syscall-numbers` keeps one
    /// name per number, has no x86 `getrlimit` and no loongarch64 `fcntl`).
    /// Where both know a name, they agree (`tests::tables_agree`).
    ///
    /// aarch64 uses `syscall-numbers` alone: `syscalls` 0.8 lists the
    /// generic table's 32-bit-only time64 entries (403..423, e.g.
    /// `clock_gettime64`) for aarch64, where they do not exist, and has no
    /// `newfstatat` (79).
    pub fn syscall_nr(self, name: &str) -> Option<u32> {
        let primary = syscalls_table(self).and_then(|t| t.get(name).copied());
        primary
            .or_else(|| numbers_table(self).get(name).copied())
            .or_else(|| {
                let (_, alias) = TIME32_ALIASES.iter().find(|(uapi, _)| *uapi == name)?;
                numbers_table(self).get(alias).copied()
            })
            .or_else(|| {
                // asm-generic/unistd.h: on 64-bit ABIs `__NR_newfstatat` is
                // `__NR3264_fstatat`, which `syscalls` names `fstatat` on
                // loongarch64 (and `syscall-numbers` lacks there).
                if name == "newfstatat" && self == Arch::Loongarch64 {
                    self.syscall_nr("fstatat")
                } else {
                    None
                }
            })
    }
}

/// Name -> number from the `syscalls` crate's table for the ABI, built
/// once per process (its `FromStr` is a `match` over ~450 strings; a
/// profile resolves hundreds of names per ABI). `None` for the ABIs that
/// only `syscall-numbers` covers (see [`Arch::syscall_nr`]).
fn syscalls_table(arch: Arch) -> Option<&'static HashMap<&'static str, u32>> {
    macro_rules! table {
        ($m:ident) => {{
            static CELL: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
            CELL.get_or_init(|| {
                syscalls::$m::Sysno::iter()
                    .map(|s| (s.name(), s.id() as u32))
                    .collect()
            })
        }};
    }
    Some(match arch {
        Arch::X86_64 => table!(x86_64),
        Arch::X86 => table!(x86),
        Arch::Arm => table!(arm),
        Arch::Mips64 | Arch::Mipsel64 => table!(mips64),
        Arch::Mips | Arch::Mipsel => table!(mips),
        Arch::Ppc64le => table!(powerpc64),
        Arch::S390x => table!(s390x),
        Arch::Riscv64 => table!(riscv64),
        Arch::Loongarch64 => table!(loongarch64),
        Arch::Aarch64 | Arch::X32 | Arch::Mips64N32 | Arch::Mipsel64N32 => return None,
    })
}

/// On 32-bit ABIs `syscall-numbers` names ten time syscalls after their
/// kernel entry points (`clock_gettime32`, `gettimeofday_time32`, ...)
/// where the uapi headers, libseccomp and profiles use the syscall name
/// (`clock_gettime`, `gettimeofday`, ...). Without this, MIPS n32 (which
/// only `syscall-numbers` covers) would not know `clock_gettime`. Names
/// only: the numbers still come from the table.
const TIME32_ALIASES: [(&str, &str); 10] = [
    ("gettimeofday", "gettimeofday_time32"),
    ("settimeofday", "settimeofday_time32"),
    ("timer_settime", "timer_settime32"),
    ("timer_gettime", "timer_gettime32"),
    ("clock_settime", "clock_settime32"),
    ("clock_gettime", "clock_gettime32"),
    ("clock_getres", "clock_getres_time32"),
    ("clock_nanosleep", "clock_nanosleep_time32"),
    ("timerfd_settime", "timerfd_settime32"),
    ("timerfd_gettime", "timerfd_gettime32"),
];

/// Name -> number for one ABI from `syscall-numbers`, built once.
///
/// `syscall-numbers` only maps number -> name (`sys_call_name`), over a
/// contiguous range it checks with `is_valid_sys_call_number`. The map is
/// built by walking that range. The walk starts at the table's own
/// `SYS_read` (inside the range on every ABI) and goes down to the first
/// valid number, so no base number is written here.
fn numbers_table(arch: Arch) -> &'static HashMap<&'static str, u32> {
    macro_rules! table {
        ($m:ident) => {{
            static CELL: OnceLock<HashMap<&'static str, u32>> = OnceLock::new();
            CELL.get_or_init(|| {
                walk(
                    syscall_numbers::$m::SYS_read,
                    syscall_numbers::$m::is_valid_sys_call_number,
                    syscall_numbers::$m::sys_call_name,
                )
            })
        }};
    }
    match arch {
        Arch::X86_64 => table!(x86_64),
        Arch::X86 => table!(x86),
        Arch::X32 => table!(x32),
        Arch::Aarch64 => table!(aarch64),
        Arch::Arm => table!(arm),
        Arch::Mips64 | Arch::Mipsel64 => table!(mips64),
        Arch::Mips64N32 | Arch::Mipsel64N32 => table!(mipsn32),
        Arch::Mips | Arch::Mipsel => table!(mips),
        Arch::Ppc64le => table!(powerpc64),
        Arch::S390x => table!(s390x),
        Arch::Riscv64 => table!(riscv64),
        Arch::Loongarch64 => table!(loongarch64),
    }
}

/// All (name, number) pairs of a `syscall-numbers` table.
fn walk(
    anchor: c_long,
    valid: fn(c_long) -> bool,
    name: fn(c_long) -> Option<&'static str>,
) -> HashMap<&'static str, u32> {
    let mut first = anchor;
    while valid(first - 1) {
        first -= 1;
    }
    let mut map = HashMap::new();
    let mut nr = first;
    while valid(nr) {
        if let (Some(n), Ok(v)) = (name(nr), u32::try_from(nr)) {
            map.entry(n).or_insert(v);
        }
        nr += 1;
    }
    map
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
        // n32: syscall_n32.tbl 308 + 6000.
        assert_eq!(Arch::Mips64N32.syscall_nr("setns"), Some(6308));
        assert_eq!(Arch::Mipsel64N32.syscall_nr("setns"), Some(6308));
        assert_eq!(Arch::Mips64N32.syscall_nr("read"), Some(6000));
        // syscall_n32.tbl 226 clock_gettime (entry point sys_clock_gettime32),
        // 403 clock_gettime64.
        assert_eq!(Arch::Mips64N32.syscall_nr("clock_gettime"), Some(6226));
        assert_eq!(Arch::Mips64N32.syscall_nr("clock_gettime64"), Some(6403));
        assert_eq!(Arch::Mips64N32.syscall_nr("gettimeofday"), Some(6094));
        assert_eq!(Arch::X86_64.syscall_nr("no_such_syscall"), None);
        // mkdir exists on x86_64 but not on the generic-table arches.
        assert_eq!(Arch::X86_64.syscall_nr("mkdir"), Some(83));
        assert_eq!(Arch::Aarch64.syscall_nr("mkdir"), None);
    }

    #[test]
    fn x32_has_its_own_entries() {
        // syscall_64.tbl: 13 is the 64-bit-only rt_sigaction, 512 the x32 one.
        assert_eq!(
            Arch::X32.syscall_nr("rt_sigaction"),
            Some(512 | X32_SYSCALL_BIT)
        );
        assert_eq!(Arch::X86_64.syscall_nr("rt_sigaction"), Some(13));
        assert_eq!(Arch::X32.syscall_nr("ioctl"), Some(514 | X32_SYSCALL_BIT));
        assert_eq!(Arch::X32.syscall_nr("read"), Some(X32_SYSCALL_BIT));
        // x86_64-only entries that x32 cannot call have no x32 number.
        assert_eq!(Arch::X32.syscall_nr("uselib"), None);
        assert_eq!(Arch::X32.syscall_nr("create_module"), None);
        // Every other x32 entry below 512 is a `common` one: same number as x86_64.
        let mut common = 0;
        for n in X32_SYSCALL_BIT..X32_SYSCALL_BIT + 512 {
            if let Some(name) = syscall_numbers::x32::sys_call_name(n as c_long) {
                assert_eq!(
                    Arch::X86_64.syscall_nr(name),
                    Some(n & !X32_SYSCALL_BIT),
                    "{name}"
                );
                common += 1;
            }
        }
        assert!(common > 300, "{common}");
    }

    /// Both table crates, both ways, on each ABI both have: where both
    /// know a name, the numbers must be equal (two independently generated
    /// tables agree), and every number `syscalls` has is a valid number in
    /// `syscall-numbers`.
    #[test]
    fn tables_agree() {
        fn check<T: Copy + std::fmt::Debug>(
            arch: Arch,
            all: impl Iterator<Item = T>,
            name_id: impl Fn(T) -> (&'static str, i32),
            bad: &mut Vec<String>,
        ) {
            let numbers = numbers_table(arch);
            assert!(numbers.len() > 250, "{arch:?}: {}", numbers.len());
            let mut shared = 0;
            for s in all {
                let (name, id) = name_id(s);
                if let Some(&n) = numbers.get(name) {
                    shared += 1;
                    if n != id as u32 {
                        bad.push(format!(
                            "{arch:?} {name}: syscalls {id}, syscall-numbers {n}"
                        ));
                    }
                }
            }
            assert!(shared > 250, "{arch:?}: {shared}");
        }
        macro_rules! both {
            ($arch:expr, $m:ident, $bad:expr) => {
                check(
                    $arch,
                    syscalls::$m::Sysno::iter(),
                    |s| (s.name(), s.id()),
                    $bad,
                )
            };
        }
        let mut bad = Vec::new();
        both!(Arch::X86_64, x86_64, &mut bad);
        both!(Arch::X86, x86, &mut bad);
        both!(Arch::Aarch64, aarch64, &mut bad);
        both!(Arch::Arm, arm, &mut bad);
        both!(Arch::Mips, mips, &mut bad);
        both!(Arch::Mips64, mips64, &mut bad);
        both!(Arch::Ppc64le, powerpc64, &mut bad);
        both!(Arch::S390x, s390x, &mut bad);
        both!(Arch::Riscv64, riscv64, &mut bad);
        both!(Arch::Loongarch64, loongarch64, &mut bad);
        assert!(
            bad.is_empty(),
            "{} disagreements:\n{}",
            bad.len(),
            bad.join("\n")
        );
        // aarch64 is `syscall-numbers` alone (see `Arch::syscall_nr`).
        assert_eq!(Arch::Aarch64.syscall_nr("newfstatat"), Some(79));
        assert_eq!(Arch::Aarch64.syscall_nr("clock_gettime64"), None);
        assert_eq!(Arch::Aarch64.syscall_nr("clock_gettime"), Some(113));
        // Names only one crate has.
        assert_eq!(Arch::Arm.syscall_nr("sync_file_range2"), Some(341));
        assert_eq!(Arch::Arm.syscall_nr("arm_sync_file_range"), Some(341));
        assert_eq!(Arch::Loongarch64.syscall_nr("fcntl"), Some(25));
        assert_eq!(Arch::Loongarch64.syscall_nr("newfstatat"), Some(79));
        assert_eq!(Arch::X86.syscall_nr("getrlimit"), Some(76));
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
