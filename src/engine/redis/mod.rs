//! The Redis engine: `snapshot` mode (an RDB over the replication protocol) and `keys` mode
//! (SCAN + DUMP), and restores of either with `RESTORE … ABSTTL`.

pub mod backup;
pub mod client;
pub mod drill;
pub mod error;
pub mod frames;
pub mod preview;
pub mod rdb;
pub mod replication;
pub mod restore;
pub mod target;

pub use backup::{BackupRequest, Mode, backup, backup_with};
pub use client::Limits;
pub use error::RedisError;
pub use preview::{RedisPreview, preview};
pub use restore::{RestoreRequest, RestoreStats, restore, restore_with};
pub use target::RedisTarget;
