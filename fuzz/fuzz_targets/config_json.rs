//! config.json from an untrusted bundle: parsing, the error diagnosis of a failed parse (which
//! re-scans the text to name the field), validation, and the namespace plan derived from it.
//!
//! Properties: no panic, bounded time (libFuzzer's -timeout), and an error is one line (the CLI
//! prints it as the command's one-line error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcrun_runtime::namespaces::Plan;
use rcrun_runtime::spec;

fuzz_target!(|data: &[u8]| {
    match spec::parse_and_validate(data) {
        Ok(s) => {
            let plan = Plan::from_spec(&s);
            let _ = plan.direct_clone();
            // What create derives from a valid spec without touching the host.
            let _ = spec::creates_namespace(&s, oci_spec::runtime::LinuxNamespaceType::User);
            if let Some(sc) = s.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
                if let Some(native) = rcrun_seccomp::Arch::native() {
                    let _ = rcrun_seccomp::compile(sc, native);
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
        }
    }
});
