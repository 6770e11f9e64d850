//! The operator's logic. So far only its pure parts: which backups retention keeps.

pub mod retention;
