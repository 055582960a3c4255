//! An overlay2 layer store like Docker's: OCI image layouts, oci-archive and docker-archive tars
//! are imported layer by layer into `<store>/<layer>/diff` (whiteouts converted to overlayfs
//! whiteouts), layers are shared between images and containers, and a container's rootfs is an
//! overlay of its image's layers with its own upper directory.
//!
//! - [`apply`]: unpack one layer tar into a diff directory by the image-spec rules.
//! - [`store`]: the store directory, layers, links, reference counts.
//! - [`import`]: read an image (layout dir, oci-archive, docker-archive), verify digests, apply
//!   the missing layers, record the image.
//! - [`image`]: the image config kept for bundles (Entrypoint, Cmd, Env, ...).
//! - [`mount`]: mount a container's overlay rootfs (new mount API where the kernel has it).

pub mod apply;
pub mod image;
pub mod import;
pub mod mount;
pub mod store;
