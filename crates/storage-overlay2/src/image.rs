//! The OCI/Docker image config (`application/vnd.oci.image.config.v1+json`): the file as
//! imported ([`ImageConfigFile`]), the part kept in the store's image record ([`ImageConfig`])
//! and how Docker turns it into a container process ([`ImageConfig::to_process`]).

use crate::store::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Docker's default when the image sets no PATH.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error(
        "no command: the image config has neither Entrypoint nor Cmd and no arguments were given"
    )]
    NoCommand,
}

/// The whole config blob; only what the store needs is typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Docker writes `"config": null` for some scratch images.
    #[serde(default)]
    pub config: Option<ImageConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digests of the uncompressed layer tars, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// The `config` object of an image config: what a container created from the image runs.
/// Field names are the spec's (Docker's Go names); unknown fields (Healthcheck, Shell, ...)
/// are kept in `other` so a record round-trips.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none",
        with = "set_as_object"
    )]
    pub exposed_ports: Option<BTreeSet<String>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "Option::is_none",
        with = "set_as_object"
    )]
    pub volumes: Option<BTreeSet<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// What a container's `process` gets from the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=value`; PATH is always present.
    pub env: Vec<String>,
    /// Absolute; `/` when the image sets none.
    pub cwd: String,
    /// The image's `User` as written (`""` = root; `name`, `uid`, `uid:gid`, `name:group`):
    /// resolving names needs the rootfs's /etc/passwd and /etc/group.
    pub user: String,
}

impl ImageConfig {
    /// As `docker run IMAGE [ARGS...]`: Entrypoint + (ARGS if any, else Cmd).
    pub fn to_process(&self, args_override: Option<&[String]>) -> Result<ProcessSpec, ImageError> {
        self.to_process_with(None, args_override)
    }

    /// As `docker run --entrypoint E IMAGE [ARGS...]`: an overridden entrypoint also drops the
    /// image's Cmd (Docker does the same); empty `args` means "not given".
    pub fn to_process_with(
        &self,
        entrypoint_override: Option<&[String]>,
        args_override: Option<&[String]>,
    ) -> Result<ProcessSpec, ImageError> {
        let entrypoint: Vec<String> = match entrypoint_override {
            Some(e) => e.to_vec(),
            None => self.entrypoint.clone().unwrap_or_default(),
        };
        let rest: Vec<String> = match args_override.filter(|a| !a.is_empty()) {
            Some(a) => a.to_vec(),
            None if entrypoint_override.is_some() => Vec::new(),
            None => self.cmd.clone().unwrap_or_default(),
        };
        let args: Vec<String> = entrypoint.into_iter().chain(rest).collect();
        if args.is_empty() {
            return Err(ImageError::NoCommand);
        }
        let mut env = self.env.clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH_ENV.to_string());
        }
        let cwd = match self.working_dir.as_deref() {
            None | Some("") => "/".to_string(),
            Some(w) if w.starts_with('/') => w.to_string(),
            // Docker makes a relative WorkingDir absolute against /.
            Some(w) => format!("/{w}"),
        };
        Ok(ProcessSpec {
            args,
            env,
            cwd,
            user: self.user.clone().unwrap_or_default(),
        })
    }
}

/// `{"80/tcp": {}, ...}` <-> a set of keys (the values are always empty objects).
mod set_as_object {
    use serde::de::IgnoredAny;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Serialize)]
    struct Empty {}

    pub fn serialize<S: Serializer>(v: &Option<BTreeSet<String>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(set) => s.collect_map(set.iter().map(|k| (k, Empty {}))),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeSet<String>>, D::Error> {
        let m: Option<BTreeMap<String, IgnoredAny>> = Option::deserialize(d)?;
        Ok(m.map(|m| m.into_keys().collect()))
    }
}
