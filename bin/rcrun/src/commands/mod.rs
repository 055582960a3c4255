//! The commands beyond the create/start/run/state/kill/delete core, one file each: argument
//! handling and output here, the work in `rcrun_runtime::container` (and, for `image` and
//! `bundle`, in `rcrun_storage_overlay2`).

pub mod bundle;
pub mod checkpoint;
pub mod events;
pub mod exec;
pub mod features;
pub mod image;
pub mod image_user;
pub mod migrate;
pub mod pause;
pub mod progress;
pub mod ps;
pub mod restore;
pub mod storage_link;
pub mod update;
