//! What a Redis restore would do, found without writing anything (`coffer restore
//! --dry-run`): the backup is checked as for a restore (the same integrity checks, the
//! target reached and checked to load its RDB version), then each key it would restore is
//! looked up in the target with `EXISTS`, in the database it would go to. Only `SELECT`,
//! `DBSIZE`, `SCAN` and `EXISTS` are sent: nothing in the target changes.
//!
//! The counts are what a restore started at the same moment would do; a target that changes
//! between the preview and the restore changes them.

use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::client::{self, Connection, Limits};
use super::error::RedisError;
use super::restore::{
    DatabasePlan, RestoreRequest, Work, check_target_loads, data_object, read_backup, show_key,
};
use crate::api::RedisConflict;
use crate::pipeline::fetch;
use crate::pipeline::{Codec, Progress};
use crate::storage::Store;
use crate::storage::manifest::Manifest;

/// Key names kept as examples of each outcome.
pub const SAMPLE: usize = 5;
/// Keys looked up per pipeline.
const BATCH: usize = 512;

/// What a Redis restore would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisPreview {
    /// Keys of the backup that are not in the target (all of them after a flush): restored.
    pub added: u64,
    /// Keys that exist in the target and would be left alone (`Skip`).
    pub skipped: u64,
    /// Keys that exist in the target and would be replaced (`Overwrite`).
    pub overwritten: u64,
    /// Keys in the target's restored databases that `Flush` would delete first.
    pub flushed: u64,
    /// Keys of the backup whose expiry has passed: not restored.
    pub expired: u64,
    /// Function libraries in the backup.
    pub functions: u64,
    /// Up to [`SAMPLE`] key names of each outcome (as in messages: text, or escaped bytes).
    pub samples: Samples,
}

impl RedisPreview {
    /// The preview for people, one outcome per line; the flushed keys only when the restore
    /// flushes (`flush`).
    pub fn lines(&self, flush: bool) -> Vec<String> {
        use crate::engine::preview::examples;
        let s = &self.samples;
        let mut lines = Vec::new();
        if self.flushed > 0 || flush {
            lines.push(format!(
                "flushed first: {} keys{}",
                self.flushed,
                examples(&s.flushed)
            ));
        }
        lines.extend([
            format!("added: {} keys{}", self.added, examples(&s.added)),
            format!(
                "overwritten: {} keys{}",
                self.overwritten,
                examples(&s.overwritten)
            ),
            format!("skipped: {} keys{}", self.skipped, examples(&s.skipped)),
            format!("expired (not restored): {} keys", self.expired),
            format!("function libraries in the backup: {}", self.functions),
        ]);
        lines
    }
}

/// Example key names, per outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    pub added: Vec<String>,
    pub skipped: Vec<String>,
    pub overwritten: Vec<String>,
    pub flushed: Vec<String>,
}

fn sample(into: &mut Vec<String>, key: &[u8]) {
    if into.len() < SAMPLE {
        into.push(show_key(key));
    }
}

/// Reads the backup in `folder` and the target of `request`, and says what restoring it
/// would do. Fails as the restore would (a damaged backup, a target that cannot load it).
pub async fn preview(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &RestoreRequest,
    progress: &Progress,
) -> Result<RedisPreview, RedisError> {
    let record = data_object(manifest)?;
    let plan = DatabasePlan::new(manifest, request)?;
    let codec = Codec {
        compression: manifest.compression,
        key: request.key.clone(),
    };
    let (_, prepared) =
        fetch::prepare(store, folder, &[record], &codec, &request.spool, progress).await?;
    let object = prepared
        .first()
        .ok_or_else(|| RedisError::Internal("the data object was not prepared".to_owned()))?;
    let limits = Limits::default();
    let mut con = Connection::open(&request.target, 0, &limits).await?;
    client::server_info(&mut con).await?;
    if let Some(version) = manifest.source.rdb_version {
        check_target_loads(&mut con, &plan, version).await?;
    }
    let mut preview = RedisPreview::default();
    if request.conflict == RedisConflict::Flush {
        for db in plan.targets() {
            con.query::<()>("SELECT", redis::cmd("SELECT").arg(db))
                .await?;
            preview.flushed += con.query::<u64>("DBSIZE", &redis::cmd("DBSIZE")).await?;
            // A SCAN page may be empty while keys remain: a few pages at most.
            let mut cursor = 0u64;
            for _ in 0..10 {
                if preview.samples.flushed.len() >= SAMPLE {
                    break;
                }
                let (next, keys): (u64, Vec<Vec<u8>>) = con
                    .query("SCAN", redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(100))
                    .await?;
                for key in keys {
                    sample(&mut preview.samples.flushed, &key);
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
    }

    let (reading, verdict) = object.open(store, progress).await?;
    let (work, mut incoming) = mpsc::channel::<Work>(64);
    let format = record.format.clone();
    let parser =
        tokio::task::spawn_blocking(move || read_backup(&format, SyncIoBridge::new(reading), work));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut batch: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut looked_up = Ok(());
    while let Some(item) = incoming.recv().await {
        match item {
            Work::Key {
                db,
                key,
                expire_at_ms,
                ..
            } => match plan.map(db) {
                None => {}
                Some(_) if expire_at_ms.is_some_and(|at| at <= now_ms) => preview.expired += 1,
                Some(_) if request.conflict == RedisConflict::Flush => {
                    preview.added += 1;
                    sample(&mut preview.samples.added, &key);
                }
                Some(to) => {
                    batch.push((to, key));
                    if batch.len() >= BATCH {
                        looked_up =
                            look_up(&mut con, &mut batch, request.conflict, &mut preview).await;
                        if looked_up.is_err() {
                            break;
                        }
                    }
                }
            },
            Work::FunctionCode(_) | Work::FunctionDump(_) => preview.functions += 1,
        }
    }
    drop(incoming);
    if looked_up.is_ok() {
        looked_up = look_up(&mut con, &mut batch, request.conflict, &mut preview).await;
    }
    let parsed = parser
        .await
        .map_err(|e| RedisError::Internal(format!("the backup reader failed: {e}")))
        .and_then(|parsed| parsed);
    if let Err(e) = looked_up {
        // The target failed: the rest of the object is not downloaded for a verdict, unless
        // it is already in.
        return Err(match verdict.after_failure().await {
            Some(mismatch) if mismatch.is_mismatch() => mismatch.into(),
            _ => e,
        });
    }
    // The bytes read must match the manifest, or nothing said about them counts.
    verdict.wait().await?;
    parsed?;
    Ok(preview)
}

/// Looks the keys of `batch` up in the target and counts them; empties the batch.
async fn look_up(
    con: &mut Connection,
    batch: &mut Vec<(u32, Vec<u8>)>,
    conflict: RedisConflict,
    preview: &mut RedisPreview,
) -> Result<(), RedisError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    let mut current = None;
    for (db, key) in batch.iter() {
        if current != Some(*db) {
            pipe.cmd("SELECT").arg(*db).ignore();
            current = Some(*db);
        }
        pipe.cmd("EXISTS").arg(key);
    }
    let exists: Vec<u64> = con.pipeline("EXISTS", &pipe).await?;
    for ((_, key), found) in batch.drain(..).zip(exists) {
        match (found > 0, conflict) {
            (false, _) => {
                preview.added += 1;
                sample(&mut preview.samples.added, &key);
            }
            (true, RedisConflict::Overwrite) => {
                preview.overwritten += 1;
                sample(&mut preview.samples.overwritten, &key);
            }
            (true, _) => {
                preview.skipped += 1;
                sample(&mut preview.samples.skipped, &key);
            }
        }
    }
    Ok(())
}
