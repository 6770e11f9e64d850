//! The operator's logic. So far only its pure parts: which backups retention keeps.

pub mod job;
pub mod retention;
