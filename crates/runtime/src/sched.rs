//! Scheduling-related process attributes: oomScoreAdj, ioPriority, scheduler, personality, and
//! the session keyring. Syscall numbers come from libc per target; the few constants below are
//! arch-independent values of the kernel's uapi headers that libc does not export.

use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Scheduler,
};

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("process.oomScoreAdj: write {value}: {source}")]
    Oom { value: i32, source: std::io::Error },
    #[error("process.ioPriority: ioprio_set class {class:?} priority {prio}: {source}")]
    IoPrio {
        class: IOPriorityClass,
        prio: i64,
        source: std::io::Error,
    },
    #[error("process.scheduler: sched_setattr policy {policy:?}: {source}")]
    Scheduler {
        policy: LinuxSchedulerPolicy,
        source: std::io::Error,
    },
    #[error("linux.personality: set {domain:?}: {source}")]
    Personality {
        domain: LinuxPersonalityDomain,
        source: std::io::Error,
    },
    #[error("join session keyring {name}: {source}")]
    Keyring {
        name: String,
        source: std::io::Error,
    },
}

pub fn set_oom_score_adj(value: i32) -> Result<(), SchedError> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
        .map_err(|source| SchedError::Oom { value, source })
}

// uapi/linux/ioprio.h
const IOPRIO_CLASS_SHIFT: i64 = 13;
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

pub fn set_io_priority(p: &LinuxIOPriority) -> Result<(), SchedError> {
    let class: i64 = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let ioprio = (class << IOPRIO_CLASS_SHIFT) | p.priority();
    // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, 0 = self, value).
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, ioprio) };
    if rc != 0 {
        return Err(SchedError::IoPrio {
            class: p.class(),
            prio: p.priority(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// struct sched_attr (uapi/linux/sched/types.h), the same layout on every architecture.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

pub fn set_scheduler(s: &Scheduler) -> Result<(), SchedError> {
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => libc::SCHED_OTHER,
        LinuxSchedulerPolicy::SchedFifo => libc::SCHED_FIFO,
        LinuxSchedulerPolicy::SchedRr => libc::SCHED_RR,
        LinuxSchedulerPolicy::SchedBatch => libc::SCHED_BATCH,
        LinuxSchedulerPolicy::SchedIso => 4, // reserved by the kernel, never implemented
        LinuxSchedulerPolicy::SchedIdle => libc::SCHED_IDLE,
        LinuxSchedulerPolicy::SchedDeadline => libc::SCHED_DEADLINE,
    };
    let mut flags: u64 = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSchedulerFlag::SchedResetOnFork => libc::SCHED_FLAG_RESET_ON_FORK,
            LinuxSchedulerFlag::SchedFlagReclaim => libc::SCHED_FLAG_RECLAIM,
            LinuxSchedulerFlag::SchedFlagDLOverrun => libc::SCHED_FLAG_DL_OVERRUN,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => libc::SCHED_FLAG_KEEP_POLICY,
            LinuxSchedulerFlag::SchedFlagKeepParams => libc::SCHED_FLAG_KEEP_PARAMS,
            LinuxSchedulerFlag::SchedFlagUtilClampMin => libc::SCHED_FLAG_UTIL_CLAMP_MIN,
            LinuxSchedulerFlag::SchedFlagUtilClampMax => libc::SCHED_FLAG_UTIL_CLAMP_MAX,
        } as u64;
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: policy as u32,
        sched_flags: flags,
        sched_nice: s.nice().unwrap_or(0),
        sched_priority: s.priority().unwrap_or(0) as u32,
        sched_runtime: s.runtime().unwrap_or(0),
        sched_deadline: s.deadline().unwrap_or(0),
        sched_period: s.period().unwrap_or(0),
        ..Default::default()
    };
    // SAFETY: sched_setattr(0 = self, &attr, 0).
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc != 0 {
        return Err(SchedError::Scheduler {
            policy: *s.policy(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

// uapi/linux/personality.h
const PER_LINUX: libc::c_ulong = 0x0000;
const PER_LINUX32: libc::c_ulong = 0x0008;

pub fn set_personality(p: &LinuxPersonality) -> Result<(), SchedError> {
    let persona = match p.domain() {
        LinuxPersonalityDomain::PerLinux => PER_LINUX,
        LinuxPersonalityDomain::PerLinux32 => PER_LINUX32,
    };
    // SAFETY: personality(2) with a plain value.
    if unsafe { libc::personality(persona) } < 0 {
        return Err(SchedError::Personality {
            domain: p.domain(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

// uapi/linux/keyctl.h
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;

/// A fresh session keyring per container (runc's `_ses.<id>`), so containers do not share the
/// host's keys. Kernels without keyrings (ENOSYS) are fine.
pub fn join_session_keyring(id: &str) -> Result<(), SchedError> {
    let name = format!("_ses.{id}");
    let c = std::ffi::CString::new(name.clone()).unwrap_or_default();
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, name).
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Ok(());
        }
        return Err(SchedError::Keyring { name, source: e });
    }
    Ok(())
}
