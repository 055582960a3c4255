//! A CRI client: what kubelet sends to containerd's CRI plugin, over gRPC.
//!
//! Debian 12 has no `crictl`, so `conformance/cri/cri_client.py` (grpcio from PyPI, stubs
//! generated from `conformance/cri/cri_subset.proto`) makes the RuntimeService calls; this
//! module installs it in a venv under `/var/cache/rcrun-cri` and wraps it.

use super::containerd::Containerd;
use super::{Cmd, Out};
use crate::env::workspace_root;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The venv and generated stubs (kept across runs: installing grpcio takes ~10 s).
pub const CACHE: &str = "/var/cache/rcrun-cri";

/// The venv's python with `grpc` and `grpc_tools` importable, created on first use.
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = Path::new(CACHE).join("venv");
        let py = venv.join("bin/python");
        let importable = |py: &Path| {
            std::process::Command::new(py)
                .args(["-c", "import grpc, grpc_tools"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if importable(&py) {
            return py;
        }
        let _ = std::fs::remove_dir_all(&venv);
        let python3 = crate::env::ensure_tool("python3", "python3");
        let mk_venv = || {
            std::process::Command::new(&python3)
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !mk_venv() {
            crate::env::apt_install("python3-venv");
            assert!(mk_venv(), "python3 -m venv {} failed", venv.display());
        }
        let st = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "grpcio>=1.50", "grpcio-tools>=1.50"])
            .status()
            .unwrap_or_else(|e| panic!("spawn pip: {e}"));
        assert!(
            st.success() && importable(&py),
            "pip install grpcio grpcio-tools failed"
        );
        py
    })
}

/// The CRI RuntimeService of a private containerd.
pub struct Cri<'a> {
    pub ctd: &'a Containerd,
    endpoint: String,
    script: PathBuf,
}

impl<'a> Cri<'a> {
    pub fn new(ctd: &'a Containerd) -> Cri<'a> {
        python();
        Cri {
            ctd,
            endpoint: format!("unix://{}", ctd.sock.display()),
            script: workspace_root().join("conformance/cri/cri_client.py"),
        }
    }

    /// One RPC; the raw outcome (exit 1 and `CODE: details` on stderr for a gRPC error).
    pub fn call_raw(&self, method: &str, request: &serde_json::Value) -> Out {
        let script = self.script.display().to_string();
        let req = request.to_string();
        Cmd::new(
            &self.ctd.io,
            python(),
            &[
                &script,
                "--endpoint",
                &self.endpoint,
                "--cache",
                CACHE,
                method,
                &req,
            ],
        )
        .timeout(150)
        .run()
    }

    /// One RPC that must succeed; its response.
    pub fn call(&self, method: &str, request: serde_json::Value) -> serde_json::Value {
        let o = self.call_raw(method, &request);
        assert!(o.ok(), "CRI {method} failed:\n{o}");
        serde_json::from_str(o.stdout.trim())
            .unwrap_or_else(|e| panic!("CRI {method}: bad JSON response ({e}):\n{o}"))
    }
}
