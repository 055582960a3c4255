//! cgroup v2 has no devices controller: device rules are an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE attached to the cgroup (what runc and crun do). libcgroups only
//! provides this behind its `cgroupsv2_devices` feature (libbpf-sys), which rcrun does not enable,
//! so this is a small self-contained generator + loader using the bpf(2) syscall.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

// bpf_cgroup_dev_ctx.access_type: (access << 16) | type
pub const DEV_BLOCK: i32 = 1;
pub const DEV_CHAR: i32 = 2;
pub const ACC_MKNOD: i32 = 1;
pub const ACC_READ: i32 = 2;
pub const ACC_WRITE: i32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8, // the dst_reg:4 / src_reg:4 bit-fields of struct bpf_insn
    off: i16,
    imm: i32,
}

/// C bit-fields fill a byte from its least significant bit on little-endian targets and from
/// its most significant bit on big-endian ones (MIPS64, s390x): `dst_reg` is declared first.
fn pack_regs(dst: u8, src: u8) -> u8 {
    if cfg!(target_endian = "big") {
        ((dst & 0xf) << 4) | (src & 0xf)
    } else {
        (dst & 0xf) | ((src & 0xf) << 4)
    }
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: pack_regs(dst, src),
        off,
        imm,
    }
}
const LDXW: u8 = 0x61; // BPF_LDX|BPF_MEM|BPF_W
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const MOV32_X: u8 = 0xbc;
const MOV64_K: u8 = 0xb7;
const JNE_K: u8 = 0x55;
const JEQ_K: u8 = 0x15;
const EXIT: u8 = 0x95;

/// One rule: `typ` None = all types, `major`/`minor` None = wildcard, `access` bit mask.
#[derive(Clone, Debug)]
pub struct Rule {
    pub allow: bool,
    pub typ: Option<i32>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: i32,
}

/// Program semantics: the LAST matching rule decides (cgroup v1 semantics for the usual
/// "deny all, then allow list" specs). An allow rule matches when it grants every requested
/// access bit; a deny rule matches when it covers any requested bit. No match: deny.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDXW, 2, 1, 0, 0),         // r2 = ctx->access_type
        insn(AND32_K, 2, 0, 0, 0xffff), // r2 = type
        insn(LDXW, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16), // r3 = access
        insn(LDXW, 4, 1, 4, 0),     // r4 = major
        insn(LDXW, 5, 1, 8, 0),     // r5 = minor
    ];
    for r in rules.iter().rev() {
        let mut block: Vec<(u8, u8, u8, i32)> = Vec::new(); // jumps to "next rule" get patched
        if let Some(t) = r.typ {
            block.push((JNE_K, 2, 0, t));
        }
        if let Some(m) = r.major.and_then(|m| i32::try_from(m).ok()) {
            block.push((JNE_K, 4, 0, m));
        }
        if let Some(m) = r.minor.and_then(|m| i32::try_from(m).ok()) {
            block.push((JNE_K, 5, 0, m));
        }
        let mut body: Vec<Insn> = Vec::new();
        let mut jumps: Vec<usize> = Vec::new();
        for (code, dst, src, imm) in block {
            jumps.push(body.len());
            body.push(insn(code, dst, src, 0, imm));
        }
        if r.allow {
            if r.access & 7 != 7 {
                body.push(insn(MOV32_X, 1, 3, 0, 0));
                body.push(insn(AND32_K, 1, 0, 0, !r.access & 7));
                jumps.push(body.len());
                body.push(insn(JNE_K, 1, 0, 0, 0));
            }
        } else if r.access & 7 != 7 {
            body.push(insn(MOV32_X, 1, 3, 0, 0));
            body.push(insn(AND32_K, 1, 0, 0, r.access & 7));
            jumps.push(body.len());
            body.push(insn(JEQ_K, 1, 0, 0, 0));
        }
        body.push(insn(MOV64_K, 0, 0, 0, i32::from(r.allow)));
        body.push(insn(EXIT, 0, 0, 0, 0));
        let len = body.len();
        let unconditional = jumps.is_empty();
        for j in jumps {
            // jump to the first instruction after this block
            body[j].off = i16::try_from(len - j - 1).unwrap_or(i16::MAX);
        }
        p.extend(body);
        if unconditional {
            // Everything after is unreachable (the verifier rejects unreachable code).
            return p;
        }
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, initialised #[repr(C)] bpf_attr prefix of the given size that
    // lives for the duration of the call; pointers inside it point to live buffers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> std::io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this new descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
pub fn load_only(insns: &[Insn]) -> std::io::Result<()> {
    let license = b"Apache-2.0\0";
    let mut la = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    if std::env::var_os("BPF_STATS").is_some() {
        let mut log = vec![0u8; 65536];
        la.log_level = 4;
        la.log_size = log.len() as u32;
        la.log_buf = log.as_mut_ptr() as u64;
        let r = bpf(BPF_PROG_LOAD, &mut la).and_then(owned).map(drop);
        let end = log.iter().position(|b| *b == 0).unwrap_or(0);
        eprintln!("{}", String::from_utf8_lossy(&log[..end]));
        return r;
    }
    bpf(BPF_PROG_LOAD, &mut la).and_then(owned).map(drop)
}

/// Load the program and attach it to `cgroup_dir`, replacing previously attached device
/// programs (so `update` works). Returns the verifier log on load failure.
pub fn attach(cgroup_dir: &Path, insns: &[Insn], replace: bool) -> Result<(), String> {
    let license = b"Apache-2.0\0";
    let mut la = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| "program too large".to_string())?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let name = b"rcrun_dev";
    la.prog_name[..name.len()].copy_from_slice(name);
    let prog = match bpf(BPF_PROG_LOAD, &mut la) {
        Ok(fd) => owned(fd).map_err(|e| e.to_string())?,
        Err(_) => {
            // Retry with the verifier log for a useful message.
            let mut log = vec![0u8; 64 * 1024];
            la.log_level = 1;
            la.log_size = u32::try_from(log.len()).unwrap_or(0);
            la.log_buf = log.as_mut_ptr() as u64;
            match bpf(BPF_PROG_LOAD, &mut la) {
                Ok(fd) => owned(fd).map_err(|e| e.to_string())?,
                Err(e) => {
                    let end = log.iter().position(|b| *b == 0).unwrap_or(0);
                    return Err(format!(
                        "BPF_PROG_LOAD: {e}; {}",
                        String::from_utf8_lossy(&log[..end]).trim()
                    ));
                }
            }
        }
    };
    let dir = std::fs::File::open(cgroup_dir)
        .map_err(|e| format!("open {}: {e}", cgroup_dir.display()))?;
    let dfd = u32::try_from(dir.as_raw_fd()).map_err(|e| e.to_string())?;

    // Programs already attached (re-apply / update).
    let mut ids = [0u32; 64];
    let mut q = QueryAttr {
        target_fd: dfd,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    let old: Vec<u32> = if !replace {
        Vec::new() // a cgroup we just created has no programs: skip the query
    } else {
        match bpf(BPF_PROG_QUERY, &mut q) {
            Ok(_) => ids[..(q.prog_cnt as usize).min(ids.len())].to_vec(),
            Err(_) => Vec::new(),
        }
    };

    let mut a = AttachAttr {
        target_fd: dfd,
        attach_bpf_fd: u32::try_from(prog.as_raw_fd()).map_err(|e| e.to_string())?,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut a).map_err(|e| format!("BPF_PROG_ATTACH: {e}"))?;

    for id in old {
        let mut g = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let Ok(ofd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut g).and_then(owned) else {
            continue;
        };
        let mut d = AttachAttr {
            target_fd: dfd,
            attach_bpf_fd: u32::try_from(ofd.as_raw_fd()).unwrap_or(u32::MAX),
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        if let Err(e) = bpf(BPF_PROG_DETACH, &mut d) {
            return Err(format!("BPF_PROG_DETACH of old device program {id}: {e}"));
        }
    }
    Ok(())
}
