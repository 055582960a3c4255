//! Where the binaries come from, and host prerequisites (busybox, runc).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The runtime under test: `$RCRUN_BIN`, else `<workspace>/target/debug/rcrun`,
/// else `<workspace>/target/release/rcrun`.
pub fn subject_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RCRUN_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let p = if p.components().count() == 1 {
            which(&p.to_string_lossy()).unwrap_or(p)
        } else {
            p
        };
        assert!(p.exists(), "RCRUN_BIN={} does not exist", p.display());
        return p;
    }
    let ws = workspace_root();
    // <workspace>/target first (as documented), then a custom CARGO_TARGET_DIR
    let mut targets = vec![ws.join("target")];
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        targets.push(PathBuf::from(t));
    }
    for t in &targets {
        for profile in ["debug", "release"] {
            let p = t.join(profile).join("rcrun");
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "no runtime under test: set RCRUN_BIN or build {}/target/debug/rcrun (cargo build -p rcrun)",
        ws.display()
    )
}

/// The network hook/CLI: `$RCRUN_NET_BIN`, else `rcrun-net` beside the runtime under test.
pub fn net_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RCRUN_NET_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let p = subject_bin().with_file_name("rcrun-net");
    assert!(
        p.exists(),
        "no {} (cargo build -p rcrun-net-cli, or set RCRUN_NET_BIN)",
        p.display()
    );
    p
}

/// The reference runtime: `$RUNC_BIN`, else `runc` on PATH (installed with
/// apt-get when missing, so a fresh CI machine can compare).
pub fn reference_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("RUNC_BIN").filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(p.exists(), "RUNC_BIN={} does not exist", p.display());
            return p;
        }
        if let Some(p) = which("runc") {
            return p;
        }
        apt_install("runc");
        which("runc")
            .unwrap_or_else(|| panic!("runc not found on PATH and apt-get install runc failed"))
    })
    .clone()
}

/// Look a program up on PATH (plus the sbin dirs, which a non-login PATH may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

pub fn apt_install(pkg: &str) {
    eprintln!("installing {pkg} with apt-get");
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", pkg])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install() {
        let _ = std::process::Command::new("apt-get")
            .args(["update", "-q"])
            .status();
        let _ = install();
    }
}

/// True if the ELF file at `p` has no program interpreter (i.e. is static).
pub fn is_static_elf(p: &Path) -> bool {
    let Ok(b) = std::fs::read(p) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false; // only 64-bit little-endian handled; treat others as unknown
    }
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a) as usize
    };
    let phoff = u64at(0x20);
    let phentsize = u16at(0x36);
    let phnum = u16at(0x38);
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > b.len() {
            return false;
        }
        let ptype = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if ptype == 3 {
            return false; // PT_INTERP
        }
    }
    true
}

/// Path of a static busybox on the host, installing `busybox-static` if needed.
pub fn busybox() -> &'static Path {
    static BB: OnceLock<PathBuf> = OnceLock::new();
    BB.get_or_init(|| {
        let candidates = ["/bin/busybox", "/usr/bin/busybox"];
        let find = || {
            candidates
                .iter()
                .map(PathBuf::from)
                .find(|p| is_static_elf(p))
        };
        if let Some(p) = find() {
            return p;
        }
        apt_install("busybox-static");
        find().unwrap_or_else(|| {
            panic!("no static busybox at /bin/busybox; apt-get install busybox-static failed")
        })
    })
}

/// Applet names from `busybox --list` (without `busybox` itself).
pub fn busybox_applets() -> &'static [String] {
    static APPLETS: OnceLock<Vec<String>> = OnceLock::new();
    APPLETS.get_or_init(|| {
        let out = std::process::Command::new(busybox())
            .arg("--list")
            .output()
            .unwrap_or_else(|e| panic!("busybox --list: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "busybox" && !l.contains('/'))
            .map(String::from)
            .collect()
    })
}

/// Whether the host kernel has a namespace of this /proc/self/ns name.
pub fn host_has_ns(name: &str) -> bool {
    Path::new("/proc/self/ns").join(name).exists()
}

/// Make sure a host tool is available (installing its Debian package if not).
pub fn ensure_tool(tool: &str, package: &str) -> PathBuf {
    if let Some(p) = which(tool) {
        return p;
    }
    apt_install(package);
    which(tool).unwrap_or_else(|| panic!("{tool} not found and apt-get install {package} failed"))
}

/// The suite creates real containers: it must run as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the conformance suite must run as root (it creates real containers)"
    );
}
