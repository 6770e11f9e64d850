//! Restore drills: a backup restored into a scratch instance that the drill starts itself and
//! throws away (a `redis-server`, later a PostgreSQL or MariaDB server, or a scratch
//! directory), then checked: built-in checks against the manifest, and the user's own. The
//! production source is never touched. The report says Verified or VerificationFailed, with
//! every check and the measured restore time (the recovery time a real restore would take).
//!
//! A restore that fails in the scratch instance (the backup is damaged, its rows do not
//! match the manifest) is a failed verification, not an error: that is what a drill is for.
//! An error is what kept the drill from running (no scratch server could be started), or
//! stopped its restore on something other than the backup (the store failing while it is
//! read, the scratch disk filling up, the scratch server going away): see [`Blame`].

pub mod checks;
pub mod passwd;
pub mod report;
pub mod scratch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use checks::UserCheck;
pub use report::{CheckResult, DrillReport, Verdict};

use crate::engine::{mysql, postgres, redis, volume};
use crate::pipeline::IntegrityError;
use crate::pipeline::Progress;
use crate::pipeline::encryption::DataKey;
use crate::pipeline::fetch::Spool;
use crate::storage::manifest::Manifest;
use crate::storage::{StorageError, Store};

/// One drill to run.
#[derive(Clone, Debug)]
pub struct DrillRequest {
    /// The user's checks (those that fit the backup's kind; others are refused).
    pub checks: Vec<UserCheck>,
    /// Where the scratch instance lives (a new directory is made in it and removed after).
    pub scratch: PathBuf,
    /// The directory with the scratch server's programs, when not on PATH.
    pub bin_dir: Option<PathBuf>,
    pub spool: Spool,
    pub key: Option<DataKey>,
}

/// What kept a drill from running.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("{what}: {detail}")]
    Scratch { what: String, detail: String },
    #[error("drills of {0} backups are not implemented yet: not run")]
    NotImplemented(String),
    #[error("{0}")]
    Usage(String),
    /// The restore into the scratch instance stopped on something other than the backup.
    #[error("the restore into the scratch instance stopped: {detail}")]
    Stopped { cause: Cause, detail: String },
}

/// What stopped a drill's restore, when it was not the backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The store could not be reached, refused, or failed while the data was read.
    Store,
    /// The scratch disk (the spool or the scratch server's data) filled up.
    NoSpace,
    /// The scratch server went away, or the drill's own work failed.
    Scratch,
}

/// Whose fault a failed restore into the scratch instance is: the backup's (a failed
/// verification) or what the drill stands on (an error: nothing was verified).
pub trait Blame: std::fmt::Display {
    /// What the drill stands on failed, not the backup; `None` when the backup did not
    /// restore: its objects are missing, damaged or do not hold what the manifest counted.
    fn not_the_backup(&self) -> Option<Cause>;
}

/// A store's failure: the backup's only when an object of it is missing.
pub fn store_cause(e: &StorageError) -> Option<Cause> {
    match e {
        StorageError::NotFound { .. } => None,
        StorageError::DiskFull { .. } => Some(Cause::NoSpace),
        _ => Some(Cause::Store),
    }
}

/// An object's check: the backup's when its bytes did not match; the store's or the
/// scratch disk's when they could not be read or kept.
pub fn integrity_cause(e: &IntegrityError) -> Option<Cause> {
    match e {
        IntegrityError::Storage(e) => store_cause(e),
        IntegrityError::Interrupted { .. } => Some(Cause::Store),
        IntegrityError::Spool(_) => Some(Cause::NoSpace),
        IntegrityError::Mismatch { .. }
        | IntegrityError::Changed { .. }
        | IntegrityError::Decompress { .. } => None,
    }
}

/// A tool's or server's message that says the scratch disk is full (`pg_restore` and
/// PostgreSQL: `could not extend file ... No space left on device`; MariaDB: `Got error 28
/// "No space left on device"`, `ERROR 1114 ... The table 't' is full`, `ERROR 1021 ...
/// Disk full`).
pub fn says_no_space(message: &str) -> bool {
    message.contains("No space left on device")
        || message.contains("could not extend file")
        || message.contains("Disk full")
        || (message.contains("ERROR 1114") && message.contains("is full"))
}

/// What an engine's drill found: how the restore went and what its checks said.
pub struct Outcome {
    pub restore_time: Duration,
    /// The restore's own summary, or why it failed.
    pub restored: Result<String, String>,
    pub checks: Vec<CheckResult>,
}

impl Outcome {
    /// A restore that failed: the drill's first (and only) check.
    pub fn restore_failed(restore_time: Duration, error: String) -> Self {
        Self {
            restore_time,
            restored: Err(error.clone()),
            checks: vec![CheckResult::failed("restore", error)],
        }
    }
}

/// Times the restore into the scratch `server`; when the restore fails, stops the server and
/// gives the drill's outcome instead (a failed verification), or the error when the backup
/// is not to blame (see [`Blame`]).
pub async fn restore_into<T, E: Blame>(
    server: scratch::ScratchProcess,
    restore: impl std::future::Future<Output = Result<T, E>>,
) -> Result<Result<(scratch::ScratchProcess, Duration, T), Outcome>, DrillError> {
    match timed(restore).await {
        (restore_time, Ok(done)) => Ok(Ok((server, restore_time, done))),
        (restore_time, Err(e)) => {
            server.stop().await;
            Ok(Err(failed_restore(restore_time, &e)?))
        }
    }
}
/// A restore that failed: the drill's outcome when the backup is to blame, else the error.
pub fn failed_restore<E: Blame>(restore_time: Duration, e: &E) -> Result<Outcome, DrillError> {
    match e.not_the_backup() {
        Some(cause) => Err(DrillError::Stopped {
            cause,
            detail: e.to_string(),
        }),
        None => Ok(Outcome::restore_failed(restore_time, e.to_string())),
    }
}

/// The built-in checks of a SQL engine's drill: the databases restored, and the tables and
/// rows the restore verified, against what the manifest counted.
pub fn table_checks(
    manifest: &Manifest,
    databases: u64,
    restored: u64,
    tables_verified: u64,
    rows_verified: u64,
) -> Vec<CheckResult> {
    let counted = manifest.stats.table_rows.values();
    let tables = counted.clone().map(|t| t.len() as u64).sum();
    let rows = counted.flatten().map(|t| t.rows).sum();
    vec![
        CheckResult::count("databases", databases, restored),
        CheckResult::count("tables with their rows counted", tables, tables_verified),
        CheckResult::count("rows", rows, rows_verified),
    ]
}

/// Times `restore`.
pub async fn timed<T, E>(
    restore: impl std::future::Future<Output = Result<T, E>>,
) -> (Duration, Result<T, E>) {
    let started = Instant::now();
    let result = restore.await;
    (started.elapsed(), result)
}

/// Runs a drill of the backup in `folder` of `store` (at `location`).
pub async fn drill(
    store: &Store,
    folder: &str,
    location: String,
    manifest: &Manifest,
    request: &DrillRequest,
    progress: &Progress,
) -> Result<DrillReport, DrillError> {
    let kind = manifest.source.kind.as_str();
    if let Some(check) = request.checks.iter().find(|c| !c.fits(kind)) {
        return Err(DrillError::Usage(format!(
            "the check \"{}\" does not apply to a {kind} backup: {}",
            check.name(),
            match kind {
                "redis" => "use --check-redis",
                "volume" => "use --check-path",
                _ => "use --check-sql",
            }
        )));
    }
    let dir = tempfile::Builder::new()
        .prefix("coffer-drill-")
        .tempdir_in(&request.scratch)
        .map_err(|e| DrillError::Scratch {
            what: format!(
                "making a scratch directory in {}",
                request.scratch.display()
            ),
            detail: e.to_string(),
        })?;
    let scratch = dir.path();
    let outcome = match kind {
        "redis" => redis::drill::drill(store, folder, manifest, request, scratch, progress).await?,
        "volume" => {
            volume::drill::drill(store, folder, manifest, request, scratch, progress).await?
        }
        "postgres" => {
            postgres::drill::drill(store, folder, manifest, request, scratch, progress).await?
        }
        "mysql" => mysql::drill::drill(store, folder, manifest, request, scratch, progress).await?,
        other => return Err(DrillError::NotImplemented(other.to_owned())),
    };
    let bytes = manifest.objects.iter().map(|o| o.raw_bytes).sum();
    Ok(DrillReport::new(
        location,
        kind.to_owned(),
        outcome.restore_time,
        bytes,
        outcome.restored.ok(),
        outcome.checks,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_or_mismatched_object_is_the_backups_fault() {
        let location = || "s3://b/x".to_owned();
        assert_eq!(
            store_cause(&StorageError::NotFound {
                location: location()
            }),
            None
        );
        assert_eq!(
            store_cause(&StorageError::DiskFull {
                location: location()
            }),
            Some(Cause::NoSpace)
        );
        let cut = StorageError::io("reading", location(), std::io::Error::other("reset"));
        assert_eq!(store_cause(&cut), Some(Cause::Store));
        assert_eq!(
            integrity_cause(&IntegrityError::Storage(cut)),
            Some(Cause::Store)
        );
        assert_eq!(
            integrity_cause(&IntegrityError::Interrupted {
                location: location(),
                detail: "reset".to_owned()
            }),
            Some(Cause::Store)
        );
        for damaged in [
            IntegrityError::Mismatch {
                location: location(),
                what: "the SHA-256",
                found: "a".to_owned(),
                expected: "b".to_owned(),
            },
            IntegrityError::Decompress {
                location: location(),
                source: std::io::Error::other("bad frame"),
            },
        ] {
            assert_eq!(integrity_cause(&damaged), None, "{damaged}");
        }
        assert!(says_no_space(
            "pg_restore: error: could not extend file \"base/16384/16390\": No space left on device"
        ));
        assert!(says_no_space(
            "ERROR 1114 (HY000) at line 40: The table 'orders' is full"
        ));
        assert!(!says_no_space(
            "ERROR 1064 (42000): You have an error in your SQL syntax"
        ));
    }
}
