//! The PostgreSQL engine: `pg_dumpall --globals-only` and `pg_dump --format=custom` on a
//! snapshot whose rows were counted, streamed through Coffer's compression; restores with
//! `pg_restore` in one transaction per database, proven by counting rows again.

pub mod backup;
pub mod catalog;
pub mod drill;
pub mod error;
pub mod preview;
pub mod process;
pub mod restore;
pub mod target;
pub mod tools;

pub use backup::{PgBackupRequest, backup};
pub use error::PgError;
pub use restore::{PgRestoreRequest, PgRestoreStats, restore};
pub use target::PgTarget;
