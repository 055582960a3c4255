//! The commands beyond the create/start/run/state/kill/delete core, one file each: argument
//! handling and output here, the work in `rcrun_runtime::container`.

pub mod events;
pub mod exec;
pub mod features;
pub mod pause;
pub mod ps;
pub mod update;
