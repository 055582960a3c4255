//! `org.rcrun.net.network`: a container that names a network in its annotations gets the
//! `rcrun-net` hook inserted into its spec (createRuntime attaches, poststop detaches), so
//! clients that cannot add hooks (`docker run --annotation`, CRI pod annotations) still reach
//! crates/net. The hook reads the rest of its options (`org.rcrun.net.ip`, `.name`, `.ports`,
//! ...) from the same annotations; `org.rcrun.net.store` points it at another network store.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{HookBuilder, HooksBuilder, LinuxNamespaceType, Spec};

pub const NETWORK: &str = "org.rcrun.net.network";
pub const STORE: &str = "org.rcrun.net.store";
const BINARY: &str = "rcrun-net";

#[derive(Debug, thiserror::Error)]
pub enum NetHookError {
    #[error("annotation {NETWORK}={network:?}: {BINARY} is not installed (not in PATH, nor RCRUN_NET_BIN, nor beside rcrun)")]
    NoBinary { network: String },
    #[error("annotation {NETWORK}={network:?}: the container needs a network namespace of its own (linux.namespaces: {{\"type\": \"network\"}} without a path)")]
    NoOwnNetns { network: String },
    #[error("annotation {NETWORK}={network:?}: {reason}")]
    Spec { network: String, reason: String },
}

fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RCRUN_NET_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    // Beside the rcrun that was called (argv[0]: the running copy may be a sealed clone of
    // the binary, whose /proc/self/exe says nothing about where it was installed).
    let beside = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .and_then(|exe| exe.parent().map(|d| d.join(BINARY)));
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    beside
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join(BINARY)))
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin"].map(|d| Path::new(d).join(BINARY)))
        .find(|p| p.is_file())
}

/// Adds the hooks when the annotation asks for a network and the spec has none of ours yet.
pub fn inject(spec: &mut Spec) -> Result<(), NetHookError> {
    let Some(network) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(NETWORK))
        .filter(|n| !n.is_empty())
        .cloned()
    else {
        return Ok(());
    };
    if !crate::spec::creates_namespace(spec, LinuxNamespaceType::Network) {
        return Err(NetHookError::NoOwnNetns { network });
    }
    let hooks = spec.hooks().clone().unwrap_or_default();
    let ours = |hs: &Option<Vec<oci_spec::runtime::Hook>>| {
        hs.as_ref().is_some_and(|v| {
            v.iter()
                .any(|h| h.path().file_name().is_some_and(|f| f == BINARY))
        })
    };
    if ours(hooks.create_runtime()) {
        return Ok(());
    }
    let bin = find_binary().ok_or_else(|| NetHookError::NoBinary {
        network: network.clone(),
    })?;
    let store = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(STORE))
        .cloned();
    let hook = |action: &str| {
        let mut args = vec![BINARY.to_string()];
        if let Some(s) = &store {
            args.extend(["--store".to_string(), s.clone()]);
        }
        args.extend(["hook".to_string(), action.to_string()]);
        HookBuilder::default()
            .path(bin.clone())
            .args(args)
            .build()
            .map_err(|e| NetHookError::Spec {
                network: network.clone(),
                reason: e.to_string(),
            })
    };
    // Attach before the other createRuntime hooks (they may want the network); detach last.
    let mut create_runtime = vec![hook("up")?];
    create_runtime.extend(hooks.create_runtime().clone().unwrap_or_default());
    let mut poststop = hooks.poststop().clone().unwrap_or_default();
    poststop.push(hook("down")?);
    let built = HooksBuilder::default()
        .prestart(hooks.prestart().clone().unwrap_or_default())
        .create_runtime(create_runtime)
        .create_container(hooks.create_container().clone().unwrap_or_default())
        .start_container(hooks.start_container().clone().unwrap_or_default())
        .poststart(hooks.poststart().clone().unwrap_or_default())
        .poststop(poststop)
        .build()
        .map_err(|e| NetHookError::Spec {
            network: network.clone(),
            reason: e.to_string(),
        })?;
    spec.set_hooks(Some(built));
    tracing::debug!(network, hook = %bin.display(), "network hooks inserted");
    Ok(())
}
