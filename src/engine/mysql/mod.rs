//! The MySQL/MariaDB engine: `mariadb-dump`/`mysqldump --single-transaction` per database
//! (and the accounts when asked), streamed through Coffer's compression while the rows are
//! counted from the dump itself; restores with the server's own client program, proven by
//! counting rows again.

pub mod backup;
pub mod client;
pub mod drill;
pub mod error;
pub mod preview;
pub mod process;
pub mod rename;
pub mod restore;
pub mod scan;
pub mod target;
pub mod tools;

pub use backup::{MyBackupRequest, backup};
pub use error::MyError;
pub use restore::{MyRestoreRequest, MyRestoreStats, restore};
pub use target::MyTarget;
