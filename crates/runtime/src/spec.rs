//! Loading and validating a bundle's config.json.
//!
//! The fast path is one `serde_json` parse straight into `oci_spec`'s types. Only when that fails do
//! we parse again loosely, to tell the user which field and value were wrong rather than echo a
//! serde message about enum variants.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("open {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON at line {line} column {column}: {msg}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    #[error("{path}: {field}: {msg}")]
    Field {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("config.json: ociVersion {0:?} is not supported: this runtime implements 1.x")]
    Version(String),
    #[error("rootfs ({0}) does not exist")]
    RootfsMissing(PathBuf),
    #[error("rootfs ({0}) is not a directory")]
    RootfsNotDir(PathBuf),
    #[error("config.json: {0}")]
    Invalid(String),
}

/// A parsed, validated config.json plus the absolute paths derived from the bundle.
#[derive(Debug)]
pub struct LoadedSpec {
    pub spec: Spec,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
}

/// Read `<bundle>/config.json`, parse it and check what the kernel cannot check for us later.
pub fn load(bundle: &Path) -> Result<LoadedSpec, SpecError> {
    let bundle = absolute(bundle);
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    let spec = parse(&path, &bytes)?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| SpecError::Invalid("root.path must be set".into()))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(SpecError::RootfsNotDir(rootfs)),
        Err(_) => return Err(SpecError::RootfsMissing(rootfs)),
    }
    validate(&spec)?;
    Ok(LoadedSpec {
        spec,
        bundle,
        rootfs,
    })
}

/// Parse `<bundle>/config.json` without the create-time checks: for commands on an existing
/// container (`exec`), whose namespace paths may be gone by now (a CNI netns file removed, a
/// donor container stopped) while the container itself is fine.
pub fn read(bundle: &Path) -> Result<Spec, SpecError> {
    let path = absolute(bundle).join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&path, &bytes)
}

/// Parse and validate a config.json held in memory: the checks of [`load`] except those that need
/// the bundle on disk (the rootfs directory). Errors are the ones `load` gives for the same text.
/// This is the entry point of the `config_json` fuzz target.
pub fn parse_and_validate(bytes: &[u8]) -> Result<Spec, SpecError> {
    let spec = parse(Path::new("config.json"), bytes)?;
    if spec.root().is_none() {
        return Err(SpecError::Invalid("root.path must be set".into()));
    }
    validate(&spec)?;
    Ok(spec)
}

/// `path` made absolute against the current directory, without resolving symlinks (runc keeps the
/// bundle path as given, made absolute).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(cwd) => {
            let mut out = cwd;
            for c in path.components() {
                match c {
                    std::path::Component::CurDir => {}
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    other => out.push(other),
                }
            }
            out
        }
        Err(_) => path.to_path_buf(),
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Spec, SpecError> {
    match serde_json::from_slice::<Spec>(bytes) {
        Ok(spec) => Ok(spec),
        Err(err) => Err(diagnose(path, bytes, err)),
    }
}

/// Turn a failed typed parse into an error that names the offending field and value.
fn diagnose(path: &Path, bytes: &[u8], err: serde_json::Error) -> SpecError {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return SpecError::Syntax {
                path: path.to_path_buf(),
                line: e.line(),
                column: e.column(),
                msg: strip_position(&e.to_string()),
            }
        }
    };
    let field = |field: &str, msg: String| SpecError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        msg,
    };
    if let Some(nss) = value
        .pointer("/linux/namespaces")
        .and_then(|v| v.as_array())
    {
        for (i, ns) in nss.iter().enumerate() {
            let typ = ns.get("type").and_then(|t| t.as_str()).unwrap_or("");
            if LinuxNamespaceType::try_from(typ).is_err() {
                return field(
                    &format!("linux.namespaces[{i}].type"),
                    format!("unknown namespace type {typ:?}"),
                );
            }
        }
    }
    if let Some(caps) = value
        .pointer("/process/capabilities")
        .and_then(|v| v.as_object())
    {
        for (set, list) in caps {
            for name in list.as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or("");
                let parsed: Result<oci_spec::runtime::Capability, _> =
                    serde_json::from_value(serde_json::Value::String(name.to_string()));
                if parsed.is_err() {
                    return field(
                        &format!("process.capabilities.{set}"),
                        format!("unknown capability {name:?}"),
                    );
                }
            }
        }
    }
    if let Some(rl) = value.pointer("/process/rlimits").and_then(|v| v.as_array()) {
        for (i, r) in rl.iter().enumerate() {
            let typ = r.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let parsed: Result<oci_spec::runtime::PosixRlimitType, _> =
                serde_json::from_value(serde_json::Value::String(typ.to_string()));
            if parsed.is_err() {
                return field(
                    &format!("process.rlimits[{i}].type"),
                    format!("unknown rlimit type {typ:?}"),
                );
            }
        }
    }
    // Anything else (a wrong type, a missing field): name the field at the error's position.
    let field = json_path_at(bytes, err.line(), err.column());
    SpecError::Field {
        path: path.to_path_buf(),
        field: if field.is_empty() {
            "(document)".into()
        } else {
            field
        },
        msg: strip_position(&err.to_string()),
    }
}

/// The dotted path (`process.args`, `mounts[2].options`) of the value at a line/column of a
/// JSON text. A small scanner instead of a path-tracking deserializer: that would double the
/// size of the spec's deserialization code in the binary for an error path.
fn json_path_at(bytes: &[u8], line: usize, column: usize) -> String {
    enum Frame {
        Obj(Option<String>),
        Arr(usize),
    }
    let (mut l, mut c) = (1usize, 0usize);
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < bytes.len() && (l < line || (l == line && c < column.saturating_sub(1))) {
        let b = bytes[i];
        match b {
            b'\n' => {
                l += 1;
                c = 0;
                i += 1;
                continue;
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                let text = String::from_utf8_lossy(&bytes[start..j.min(bytes.len())]).into_owned();
                c += j + 1 - i;
                i = j + 1;
                // A string directly followed by ':' is a key.
                let mut k = i;
                while k < bytes.len() && bytes[k].is_ascii_whitespace() {
                    k += 1;
                }
                if bytes.get(k) == Some(&b':') {
                    if let Some(Frame::Obj(key)) = stack.last_mut() {
                        *key = Some(text);
                    }
                }
                continue;
            }
            b'{' => stack.push(Frame::Obj(None)),
            b'[' => stack.push(Frame::Arr(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(Frame::Arr(n)) = stack.last_mut() {
                    *n += 1;
                }
            }
            _ => {}
        }
        c += 1;
        i += 1;
    }
    let mut out = String::new();
    for f in &stack {
        match f {
            Frame::Obj(Some(k)) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Frame::Obj(None) => {}
            Frame::Arr(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Checks that need the whole document: things serde accepts but no container can honour.
pub fn validate(spec: &Spec) -> Result<(), SpecError> {
    let major = spec.version().split('.').next().unwrap_or("");
    if major != "1" {
        return Err(SpecError::Version(spec.version().clone()));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpecError::Invalid("process must be set".into()))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(SpecError::Invalid("process.args must not be empty".into()));
    }
    if !process.cwd().is_absolute() {
        return Err(SpecError::Invalid(format!(
            "process.cwd {:?} must be an absolute path",
            process.cwd()
        )));
    }
    let linux = spec.linux().as_ref();
    let mut seen = HashSet::new();
    let mut new_user = false;
    let mut has_uts = false;
    for ns in linux
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        if !seen.insert(ns.typ()) {
            return Err(SpecError::Invalid(format!(
                "linux.namespaces: duplicate namespace type {:?}",
                ns.typ().to_string()
            )));
        }
        if let Some(p) = ns.path() {
            if !p.exists() {
                return Err(SpecError::Invalid(format!(
                    "linux.namespaces: {} namespace path {p:?} does not exist",
                    ns.typ()
                )));
            }
        } else if ns.typ() == LinuxNamespaceType::User {
            new_user = true;
        }
        if ns.typ() == LinuxNamespaceType::Uts {
            has_uts = true;
        }
    }
    if new_user {
        let has_maps = linux.is_some_and(|l| {
            l.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
                && l.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        });
        if !has_maps {
            return Err(SpecError::Invalid(
                "linux.uidMappings and linux.gidMappings are required with a new user namespace"
                    .into(),
            ));
        }
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !has_uts {
        return Err(SpecError::Invalid(
            "hostname: unable to set hostname without a private UTS namespace".into(),
        ));
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty()) && !has_uts {
        return Err(SpecError::Invalid(
            "domainname: unable to set domainname without a private UTS namespace".into(),
        ));
    }
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        for key in sysctl.keys() {
            crate::namespaces::check_sysctl(key, &seen).map_err(SpecError::Invalid)?;
        }
    }
    crate::net_devices::validate(spec).map_err(|e| SpecError::Invalid(e.to_string()))?;
    Ok(())
}

/// Whether the spec asks for a new (not joined) namespace of this type.
pub fn creates_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    namespace(spec, typ).is_some_and(|ns| ns.path().is_none())
}

/// The spec's entry for one namespace type, if any.
pub fn namespace(
    spec: &Spec,
    typ: LinuxNamespaceType,
) -> Option<&oci_spec::runtime::LinuxNamespace> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == typ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn parse_and_validate_gives_the_errors_of_load() {
        let good = crate::default_spec::default_spec(None).to_string();
        assert!(parse_and_validate(good.as_bytes()).is_ok());
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v["process"]["args"] = serde_json::json!([]);
        assert!(matches!(
            parse_and_validate(v.to_string().as_bytes()),
            Err(SpecError::Invalid(m)) if m.contains("process.args")
        ));
        v["process"]["args"] = serde_json::json!("true");
        assert!(matches!(
            parse_and_validate(v.to_string().as_bytes()),
            Err(SpecError::Field { field, .. }) if field == "process.args"
        ));
        v.as_object_mut().unwrap().remove("root");
        v["process"]["args"] = serde_json::json!(["true"]);
        assert!(matches!(
            parse_and_validate(v.to_string().as_bytes()),
            Err(SpecError::Invalid(m)) if m.contains("root.path")
        ));
        assert!(matches!(
            parse_and_validate(b"{bad"),
            Err(SpecError::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn type_errors_name_the_field() {
        let text = br#"{"ociVersion": "1.0.0",
  "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
     "args": "true"},
  "mounts": [{"destination": "/a"}, {"destination": "/b", "options": "ro"}]}"#;
        let err = serde_json::from_slice::<Spec>(text).err().unwrap();
        assert!(
            matches!(diagnose(Path::new("c"), text, err), SpecError::Field { field, .. } if field == "process.args")
        );
        let text2 = br#"{"ociVersion": "1.0.0", "mounts": [{"destination": "/a"}, {"destination": "/b", "options": "ro"}]}"#;
        let err = serde_json::from_slice::<Spec>(text2).err().unwrap();
        assert!(
            matches!(diagnose(Path::new("c"), text2, err), SpecError::Field { field, .. } if field == "mounts[1].options")
        );
    }
}
