//! Restore drills: a backup restored into a scratch instance that the drill starts itself and
//! throws away (a `redis-server`, later a PostgreSQL or MariaDB server, or a scratch
//! directory), then checked: built-in checks against the manifest, and the user's own. The
//! production source is never touched. The report says Verified or VerificationFailed, with
//! every check and the measured restore time (the recovery time a real restore would take).
//!
//! A restore that fails in the scratch instance (the backup is damaged, its rows do not
//! match the manifest) is a failed verification, not an error: that is what a drill is for.
//! An error is what kept the drill from running (no scratch server could be started).

pub mod checks;
pub mod passwd;
pub mod report;
pub mod scratch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use checks::UserCheck;
pub use report::{CheckResult, DrillReport, Verdict};

use crate::engine::{mysql, postgres, redis, volume};
use crate::pipeline::Progress;
use crate::pipeline::encryption::DataKey;
use crate::pipeline::fetch::Spool;
use crate::storage::Store;
use crate::storage::manifest::Manifest;

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
/// gives the drill's outcome instead.
pub async fn restore_into<T, E: std::fmt::Display>(
    server: scratch::ScratchProcess,
    restore: impl std::future::Future<Output = Result<T, E>>,
) -> Result<(scratch::ScratchProcess, Duration, T), Outcome> {
    match timed(restore).await {
        (restore_time, Ok(done)) => Ok((server, restore_time, done)),
        (restore_time, Err(e)) => {
            server.stop().await;
            Err(Outcome::restore_failed(restore_time, e))
        }
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
pub async fn timed<T, E: std::fmt::Display>(
    restore: impl std::future::Future<Output = Result<T, E>>,
) -> (Duration, Result<T, String>) {
    let started = Instant::now();
    let result = restore.await.map_err(|e| e.to_string());
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
