//! (being written by the apply helper) Unpack one layer tar into a diff directory.
//!
//! Public API (fixed, others code against it):
//! ```ignore
//! pub struct ApplyOptions { pub preserve_owner: bool }   // Default: preserve_owner = true
//! pub struct ApplyStats { pub entries: u64, pub bytes: u64, pub whiteouts: u64 }
//! pub fn apply_layer<R: std::io::Read>(tar: R, diff: &std::path::Path, opts: &ApplyOptions)
//!     -> Result<ApplyStats, ApplyError>;
//! ```
