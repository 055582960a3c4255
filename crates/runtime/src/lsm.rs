//! AppArmor profiles and SELinux labels for the container's process: applied on exec through
//! /proc/self/attr, and a clear error when the spec asks for an LSM the host does not run.

#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("process.apparmorProfile {0:?}: AppArmor is not enabled on this host")]
    AppArmorAbsent(String),
    #[error("process.selinuxLabel {0:?}: SELinux is not enabled on this host")]
    SelinuxAbsent(String),
    #[error("{what} {value:?}: write {file}: {source}")]
    Apply {
        what: &'static str,
        value: String,
        file: &'static str,
        source: std::io::Error,
    },
}

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'))
}

pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// Check before the container is set up, so a missing LSM fails create early and cleanly.
pub fn check(apparmor: Option<&str>, selinux: Option<&str>) -> Result<(), LsmError> {
    if let Some(p) = apparmor.filter(|p| !p.is_empty()) {
        if !apparmor_enabled() {
            return Err(LsmError::AppArmorAbsent(p.to_string()));
        }
    }
    if let Some(l) = selinux.filter(|l| !l.is_empty()) {
        if !selinux_enabled() {
            return Err(LsmError::SelinuxAbsent(l.to_string()));
        }
    }
    Ok(())
}

/// Arrange for the next execve to switch profile/label (inside the container, after pivot_root).
pub fn apply_on_exec(apparmor: Option<&str>, selinux: Option<&str>) -> Result<(), LsmError> {
    if let Some(p) = apparmor.filter(|p| !p.is_empty()) {
        let file = if std::path::Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        std::fs::write(file, format!("exec {p}")).map_err(|source| LsmError::Apply {
            what: "process.apparmorProfile",
            value: p.to_string(),
            file,
            source,
        })?;
    }
    if let Some(l) = selinux.filter(|l| !l.is_empty()) {
        let file = "/proc/self/attr/exec";
        std::fs::write(file, l).map_err(|source| LsmError::Apply {
            what: "process.selinuxLabel",
            value: l.to_string(),
            file,
            source,
        })?;
    }
    Ok(())
}
