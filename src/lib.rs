//! Coffer: a Kubernetes operator that backs up Redis, PostgreSQL and volumes to
//! S3-compatible storage on a schedule, and restores them on request.
//!
//! - [`api`]: the custom resources (`BackupSchedule`, `Backup`, `RestoreRequest`).
//! - [`schedule`]: cron schedules in time zones (pure).
//! - [`cli`]: the `coffer` command line.

pub mod api;
pub mod cli;
pub mod controller;
pub mod drill;
pub mod engine;
pub mod freshness;
pub mod logging;
pub mod notify;
pub mod pipeline;
pub mod schedule;
pub mod storage;
pub mod text;
pub mod units;
pub mod worker;
