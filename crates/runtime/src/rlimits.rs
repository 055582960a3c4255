//! process.rlimits through setrlimit(2), with resource numbers from libc for the build target.

use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

#[derive(Debug, thiserror::Error)]
#[error("process.rlimits: set {name} to soft {soft} hard {hard}: {source}")]
pub struct RlimitError {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
    pub source: std::io::Error,
}

fn resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::__rlimit_resource_t
}

pub fn apply(limits: &[PosixRlimit]) -> Result<(), RlimitError> {
    for l in limits {
        let rl = libc::rlimit {
            rlim_cur: l.soft() as libc::rlim_t,
            rlim_max: l.hard() as libc::rlim_t,
        };
        // SAFETY: plain syscall with a valid struct.
        if unsafe { libc::setrlimit(resource(l.typ()), &rl) } != 0 {
            return Err(RlimitError {
                name: format!("{:?}", l.typ())
                    .to_uppercase()
                    .replace("RLIMIT", "RLIMIT_"),
                soft: l.soft(),
                hard: l.hard(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}
