//! Content digests (`sha256:<hex>`) and OCI chain IDs.

use sha2::{Digest as _, Sha256};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?}: unsupported algorithm (only sha256 is supported)")]
    Unsupported(String),
    #[error("digest {0:?}: not of the form sha256:<64 lowercase hex digits>")]
    Invalid(String),
}

/// A validated `sha256:<64 lowercase hex>` digest. Validation matters: the hex part becomes a
/// directory or file name in the store and in blob paths.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::Invalid(s.to_string()));
        };
        if alg != "sha256" {
            // Well-formed digests of other algorithms get their own message: they are valid OCI.
            if !alg.is_empty()
                && alg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                return Err(DigestError::Unsupported(s.to_string()));
            }
            return Err(DigestError::Invalid(s.to_string()));
        }
        if !is_sha256_hex(hex) {
            return Err(DigestError::Invalid(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    /// From a bare 64-hex string (a layer directory name, a legacy docker config file name).
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if !is_sha256_hex(hex) {
            return Err(DigestError::Invalid(hex.to_string()));
        }
        Ok(Self(format!("sha256:{hex}")))
    }

    pub fn of_bytes(data: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    pub fn from_hasher(hasher: Sha256) -> Self {
        let out = hasher.finalize();
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in out {
            s.push(hex_digit(b >> 4));
            s.push(hex_digit(b & 0xf));
        }
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, without `sha256:`.
    pub fn hex(&self) -> &str {
        self.0.get(7..).unwrap_or_default()
    }

    /// The hex part shortened to 12 characters, as docker shows image ids.
    pub fn short(&self) -> &str {
        self.hex().get(..12).unwrap_or_default()
    }
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(n & 0xf)])
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, DigestError> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The OCI chain IDs of a layer stack, bottom first: chainID(L0) = diffID(L0),
/// chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of_bytes(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_sha256_hex() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d.hex(), hex);
        assert_eq!(d.short(), &hex[..12]);
        assert_eq!(
            Digest::parse(&format!("sha512:{hex}")),
            Err(DigestError::Unsupported(format!("sha512:{hex}")))
        );
        for bad in [
            hex.clone(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:../{}", "a".repeat(61)),
            "sha256:".to_string(),
        ] {
            assert!(
                matches!(Digest::parse(&bad), Err(DigestError::Invalid(_))),
                "{bad}"
            );
        }
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of_bytes(format!("{a} {b}").as_bytes()));
        // Known value: sha256("") is e3b0...
        assert_eq!(
            Digest::of_bytes(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
