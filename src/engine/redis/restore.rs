//! Restoring a Redis backup into a running server with `RESTORE … ABSTTL`.
//!
//! Order of work, so a bad backup or a bad target loses nothing: the stored object is
//! checked against the manifest (size, SHA-256, and again after decompression), downloaded
//! once into the spool when there is room (see [`crate::pipeline::fetch`]); the target is
//! reached and checked to load this data's RDB version; only then is anything written
//! (`FLUSHDB` first with `Flush`).
//!
//! What is restored is hashed again as it is read. From the spool it is the checked copy
//! itself. When there was no room to spool, the object is read from the store a second
//! time; if those bytes do not match the manifest, the restore stops at the end of the
//! object: the last batch of keys (up to 512 keys or 8 MiB) and the function libraries
//! (which are code) are never sent, but the keys sent before stay in the target: the error
//! counts them.
//!
//! A `coffer-keys` stream holds each key once (see [`mod@super::backup`]), so a key that
//! `RESTORE` finds already there existed before the restore: `Skip` counts it as skipped.
//! A stream that repeats a key (not one Coffer wrote) still restores and verifies; the
//! repeat then counts as skipped (`Skip`, `Flush`) or is restored again over the first
//! (`Overwrite`), because telling it from a key that existed before would mean remembering
//! every key restored.
//!
//! ## Payloads from the bucket
//!
//! `RESTORE` trusts its payload's structure unless the target checks it deeply, and a
//! crafted payload (written by someone who can write the bucket, with a manifest to
//! match) can then crash the server or corrupt its memory. `RESTORE` has no option to ask
//! for the check; the target's `sanitize-dump-payload` setting decides (Redis 6.2+:
//! `yes`, or `clients` for connections whose ACL user lacks `skip-sanitize-payload`; the
//! default, `no`, checks only lengths and the checksum). Coffer reads the setting before
//! it writes and warns when payloads will not be checked, naming the fix; it does not
//! change the server's configuration itself.

use std::collections::BTreeMap;

use chrono::Utc;
use redis::Value;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::backup::{KEYS_FORMAT, RDB_FORMAT};
use super::client::{self, Connection, FLUSH_SILENCE, Limits, ServerInfo, version_parts};
use super::error::RedisError;
use super::frames::{FrameReader, Record};
use super::rdb::{Item, RdbReader, dump_payload};
use super::target::RedisTarget;
use crate::api::RedisConflict;
use crate::pipeline::Codec;
use crate::pipeline::Progress;
use crate::pipeline::encryption::DataKey;
use crate::pipeline::fetch::{self, Checked, Spool};
use crate::storage::Store;
use crate::storage::manifest::{Manifest, ObjectRecord};

/// A restore to run.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub target: RedisTarget,
    pub conflict: RedisConflict,
    /// Restore only this database of the backup.
    pub database: Option<u32>,
    /// Where the object may be downloaded once before it is restored.
    pub spool: Spool,
    /// The backup's data key, when it is encrypted.
    pub key: Option<DataKey>,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub restored: u64,
    /// Keys that already existed and were left alone (`Skip`).
    pub skipped: u64,
    /// Keys whose expiry had passed.
    pub expired: u64,
    pub functions_restored: u64,
    /// Function libraries that already existed and were left alone (`Skip`).
    pub functions_skipped: u64,
}

/// Commands per pipeline, and payload bytes per pipeline, before it is sent.
const BATCH_COMMANDS: usize = 512;
const BATCH_BYTES: usize = 8 << 20;

/// One thing to restore, read from the backup by a parser thread.
pub(super) enum Work {
    Key {
        db: u32,
        key: Vec<u8>,
        expire_at_ms: Option<i64>,
        payload: Vec<u8>,
    },
    /// A function library's code (from an RDB): `FUNCTION LOAD`.
    FunctionCode(Vec<u8>),
    /// A `FUNCTION DUMP` payload (from keys mode): `FUNCTION RESTORE`.
    FunctionDump(Vec<u8>),
}

/// Restores the backup with the default [`Limits`].
pub async fn restore(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &RestoreRequest,
    progress: &Progress,
) -> Result<RestoreStats, RedisError> {
    restore_with(
        store,
        folder,
        manifest,
        request,
        &Limits::default(),
        progress,
    )
    .await
}

/// Restores the backup in `folder`, described by `manifest`, into `request.target`.
pub async fn restore_with(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &RestoreRequest,
    limits: &Limits,
    progress: &Progress,
) -> Result<RestoreStats, RedisError> {
    let record = data_object(manifest)?;
    let plan = DatabasePlan::new(manifest, request)?;

    // 1. The backup is intact.
    let (checked, prepared) = fetch::prepare(
        store,
        folder,
        &[record],
        &Codec::of(manifest, request.key.clone()),
        &request.spool,
        progress,
    )
    .await?;
    let object = prepared
        .first()
        .ok_or_else(|| RedisError::Internal("the data object was not prepared".to_owned()))?;

    // 2. The target is reachable and can load this data.
    let target = &request.target;
    let address = target.address();
    let mut con = Connection::open(target, 0, limits).await?;
    let info = client::server_info(&mut con).await?;
    if let Some(version) = manifest.source.rdb_version {
        check_target_loads(&mut con, &plan, version).await?;
    }
    if let Some(warning) = payload_check_warning(&address, &info, payload_checks(&mut con).await?) {
        tracing::warn!("{warning}");
    }

    // 3. Now the target is changed.
    if request.conflict == RedisConflict::Flush {
        for db in plan.targets() {
            con.query::<()>("SELECT", redis::cmd("SELECT").arg(db))
                .await?;
            con.query_within::<()>("FLUSHDB", &redis::cmd("FLUSHDB"), FLUSH_SILENCE)
                .await?;
        }
    }
    let (restoring, verdict) = object.open(store, progress).await?;
    let (work, mut incoming) = mpsc::channel::<Work>(64);
    let format = record.format.clone();
    let parser = tokio::task::spawn_blocking(move || {
        read_backup(&format, SyncIoBridge::new(restoring), work)
    });
    let mut restorer = Restorer {
        con,
        address,
        conflict: request.conflict,
        batch: Batch::default(),
        current_db: None,
        rdb_version: manifest.source.rdb_version.unwrap_or_default(),
        stats: RestoreStats::default(),
    };
    let now_ms = Utc::now().timestamp_millis();
    let mut result = Ok(());
    let mut functions: Vec<(&[&str], Vec<u8>)> = Vec::new();
    while let Some(item) = incoming.recv().await {
        let step = match item {
            Work::Key {
                db,
                key,
                expire_at_ms,
                payload,
            } => match plan.map(db) {
                None => Ok(()),
                Some(_) if expire_at_ms.is_some_and(|at| at <= now_ms) => {
                    restorer.stats.expired += 1;
                    Ok(())
                }
                Some(to) => restorer.add_key(to, key, expire_at_ms, payload).await,
            },
            // Function libraries are code: they wait for the verdict.
            Work::FunctionCode(code) => {
                functions.push((&["LOAD"][..], code));
                Ok(())
            }
            Work::FunctionDump(dump) => {
                functions.push((&["RESTORE"][..], dump));
                Ok(())
            }
        };
        if let Err(e) = step {
            result = Err(e);
            break;
        }
    }
    drop(incoming);
    let parsed = parser
        .await
        .map_err(|e| RedisError::Internal(format!("the backup reader failed: {e}")))
        .and_then(|parsed| parsed);
    let refused = |mismatch, stats: &RestoreStats| RedisError::RestoreRefused {
        source: mismatch,
        outcome: refused_outcome(stats, request.conflict, checked),
    };
    let failed = match (result, parsed) {
        (Err(e), _) => Some((e, false)),
        (Ok(()), Err(e)) => Some((e, true)),
        (Ok(()), Ok(())) => None,
    };
    if let Some((e, unparsable)) = failed {
        // Bytes that did not parse may be bytes the store changed: the rest is read for the
        // verdict. The target's own refusals are reported as they are (unless the verdict
        // is already in).
        // A payload the target says is damaged or too new may be bytes the store changed.
        // The store failing mid-object explains it too.
        let unparsable = unparsable || matches!(e, RedisError::TargetTooOld { .. });
        return Err(match verdict.explain(unparsable).await {
            Some(verdict) => refused(verdict, &restorer.stats),
            None => e,
        });
    }
    // The last batch and the function libraries wait for the verdict on the whole object.
    if let Err(mismatch) = verdict.wait().await {
        return Err(if mismatch.is_mismatch() {
            refused(mismatch, &restorer.stats)
        } else {
            mismatch.into()
        });
    }
    restorer.flush().await?;
    for (verb, body) in functions {
        restorer.function(verb, body).await?;
    }
    Ok(restorer.stats)
}

/// What the target holds after the bytes read for the restore did not match the manifest.
fn refused_outcome(stats: &RestoreStats, conflict: RedisConflict, checked: Checked) -> String {
    let flushed = if conflict == RedisConflict::Flush {
        "the target's databases were emptied first and "
    } else {
        ""
    };
    let mut outcome = format!(
        "{flushed}{} key(s) had been restored into the target and stay there (no function library was)",
        stats.restored
    );
    if checked == Checked::Streamed {
        outcome.push_str(
            " (the backup was not spooled, so it was read from the store twice, once to check it and once to restore it: give the restore a spool directory with room for it)",
        );
    }
    outcome.push_str("; check the store, then restore again from a good copy");
    outcome
}

/// The backup's data object.
pub(super) fn data_object(manifest: &Manifest) -> Result<&ObjectRecord, RedisError> {
    manifest
        .objects
        .iter()
        .find(|o| o.format == RDB_FORMAT || o.format == KEYS_FORMAT)
        .ok_or_else(|| RedisError::Format("the manifest lists no Redis data object".to_owned()))
}

/// Which databases of the backup go where.
pub(super) struct DatabasePlan {
    mapping: BTreeMap<u32, u32>,
}

impl DatabasePlan {
    pub(super) fn new(manifest: &Manifest, request: &RestoreRequest) -> Result<Self, RedisError> {
        let held: Vec<u32> = match manifest.source.database {
            Some(db) => vec![db],
            None => manifest.stats.keys_per_database.keys().copied().collect(),
        };
        let list = |dbs: &[u32]| {
            dbs.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let chosen = match request.database {
            Some(db) if !held.contains(&db) => {
                return Err(RedisError::Databases(format!(
                    "the backup has no database {db} (it holds {}): choose one of those with --database",
                    if held.is_empty() {
                        "none".to_owned()
                    } else {
                        list(&held)
                    }
                )));
            }
            Some(db) => vec![db],
            None => held,
        };
        let mapping = match request.target.database {
            Some(to) if chosen.len() > 1 => {
                return Err(RedisError::Databases(format!(
                    "the backup holds databases {}: choose one with --database N to restore it into database {to}",
                    list(&chosen)
                )));
            }
            Some(to) => chosen.iter().map(|from| (*from, to)).collect(),
            None => chosen.iter().map(|db| (*db, *db)).collect(),
        };
        Ok(Self { mapping })
    }

    pub(super) fn map(&self, db: u32) -> Option<u32> {
        self.mapping.get(&db).copied()
    }

    pub(super) fn targets(&self) -> impl Iterator<Item = u32> + '_ {
        let mut seen = std::collections::BTreeSet::new();
        self.mapping
            .values()
            .copied()
            .filter(move |db| seen.insert(*db))
    }
}

/// Refuses a target whose RDB version is older than the backup's data, found read-only by
/// dumping one of its existing keys (an empty target loses nothing if the first RESTORE
/// fails).
pub(super) async fn check_target_loads(
    con: &mut Connection,
    plan: &DatabasePlan,
    backup_version: u16,
) -> Result<(), RedisError> {
    for db in plan.targets() {
        let (_, key): ((), Option<Vec<u8>>) = con
            .pipeline(
                "RANDOMKEY",
                redis::pipe().cmd("SELECT").arg(db).cmd("RANDOMKEY"),
            )
            .await?;
        let Some(key) = key else { continue };
        let dump: Option<Vec<u8>> = con.query("DUMP", redis::cmd("DUMP").arg(&key)).await?;
        let Some(dump) = dump.filter(|d| d.len() >= 10) else {
            continue;
        };
        let at = dump.len() - 10;
        let target_version = u16::from_le_bytes([dump[at], dump[at + 1]]);
        if target_version < backup_version {
            return Err(RedisError::TargetTooOld {
                address: con.address().to_owned(),
                rdb_version: backup_version,
            });
        }
        return Ok(());
    }
    Ok(())
}

/// What the target's `sanitize-dump-payload` setting is: `Ok(None)` when the server has no
/// such setting (before 6.2), `Err` with the server's reason when it refuses to say
/// (`CONFIG` is often not allowed on managed services).
async fn payload_checks(
    con: &mut Connection,
) -> Result<Result<Option<String>, String>, RedisError> {
    let reply = con
        .query::<Vec<String>>(
            "CONFIG GET",
            redis::cmd("CONFIG").arg("GET").arg("sanitize-dump-payload"),
        )
        .await;
    match reply {
        // [name, value] (RESP2), as a flat list.
        Ok(pair) => Ok(Ok(pair.into_iter().nth(1))),
        Err(RedisError::Command { detail, .. } | RedisError::Auth { detail, .. }) => {
            Ok(Err(detail))
        }
        Err(e) => Err(e),
    }
}

/// The warning to give before restoring into a target that will not deep-check the
/// payloads it is sent (`sanitize-dump-payload`), if any.
fn payload_check_warning(
    address: &str,
    info: &ServerInfo,
    setting: Result<Option<String>, String>,
) -> Option<String> {
    const RISK: &str = "a tampered backup could crash it or corrupt its memory";
    match setting {
        Ok(Some(value)) if value == "yes" || value == "clients" => None,
        Ok(Some(value)) => Some(format!(
            "{address} does not deep-check the payloads it restores (sanitize-dump-payload is {value:?}): {RISK}; restore only backups from a bucket you trust, or run CONFIG SET sanitize-dump-payload yes on it first"
        )),
        Ok(None) if version_parts(&info.version) < (6, 2) => Some(format!(
            "{address} (Redis {}) cannot deep-check the payloads it restores: {RISK}; restore only backups from a bucket you trust, or into Redis 6.2 or newer with sanitize-dump-payload yes",
            if info.version.is_empty() {
                "of an unknown version"
            } else {
                &info.version
            }
        )),
        Ok(None) => None,
        Err(reason) => {
            tracing::info!(
                "cannot tell whether {address} deep-checks the payloads it restores (CONFIG GET sanitize-dump-payload: {reason}); unless it does, {RISK}"
            );
            None
        }
    }
}

/// Parses the decompressed data object and sends what to restore. Runs on a blocking thread.
pub(super) fn read_backup(
    format: &str,
    reader: impl std::io::Read,
    work: mpsc::Sender<Work>,
) -> Result<(), RedisError> {
    // A closed channel means the restore stopped; its error is the one reported.
    let send = |item: Work| work.blocking_send(item).is_ok();
    if format == RDB_FORMAT {
        let mut rdb = RdbReader::new(reader, true)?;
        let version = rdb.version();
        while let Some(item) = rdb.next_item()? {
            let sent = match item {
                Item::Entry(entry) => send(Work::Key {
                    db: entry.db,
                    key: entry.key,
                    expire_at_ms: entry.expire_at_ms,
                    payload: dump_payload(entry.value, version),
                }),
                Item::Function(code) => send(Work::FunctionCode(code)),
                Item::ModuleAux | Item::End => true,
            };
            if !sent {
                return Ok(());
            }
        }
    } else {
        let mut frames = FrameReader::new(reader)?;
        while let Some(record) = frames.next_record()? {
            let sent = match record {
                Record::Entry {
                    db,
                    key,
                    expire_at_ms,
                    payload,
                } => send(Work::Key {
                    db,
                    key,
                    expire_at_ms,
                    payload,
                }),
                Record::Functions(dump) => send(Work::FunctionDump(dump)),
                Record::End => true,
            };
            if !sent {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Batch {
    pipe: redis::Pipeline,
    /// The key of each RESTORE in the pipeline (`None` for SELECT), to name it on error.
    keys: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

struct Restorer {
    con: Connection,
    address: String,
    conflict: RedisConflict,
    batch: Batch,
    current_db: Option<u32>,
    rdb_version: u16,
    stats: RestoreStats,
}

impl Restorer {
    async fn add_key(
        &mut self,
        db: u32,
        key: Vec<u8>,
        expire_at_ms: Option<i64>,
        payload: Vec<u8>,
    ) -> Result<(), RedisError> {
        if self.current_db != Some(db) {
            self.batch.pipe.cmd("SELECT").arg(db);
            self.batch.keys.push(None);
            self.current_db = Some(db);
        }
        // A full batch is sent when the next key comes, so that the last one always waits
        // for the verdict on the whole object.
        if self.batch.keys.len() >= BATCH_COMMANDS || self.batch.bytes >= BATCH_BYTES {
            self.flush().await?;
        }
        self.batch.bytes += payload.len() + key.len();
        let command = self
            .batch
            .pipe
            .cmd("RESTORE")
            .arg(&key)
            .arg(expire_at_ms.unwrap_or(0))
            .arg(payload);
        if expire_at_ms.is_some() {
            command.arg("ABSTTL");
        }
        if self.conflict == RedisConflict::Overwrite {
            command.arg("REPLACE");
        }
        self.batch.keys.push(Some(key));
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), RedisError> {
        if self.batch.keys.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let mut pipe = batch.pipe;
        let replies: Vec<redis::RedisResult<Value>> =
            self.con.pipeline("RESTORE", pipe.ignore_errors()).await?;
        // Every reply is counted, also after an error: the keys after it were restored too.
        let mut first_error = None;
        for (key, reply) in batch.keys.iter().zip(replies) {
            match (key, reply) {
                (None, Ok(_)) => {}
                (Some(_), Ok(_)) => self.stats.restored += 1,
                (Some(_), Err(e))
                    if e.code() == Some("BUSYKEY") && self.conflict != RedisConflict::Overwrite =>
                {
                    self.stats.skipped += 1;
                }
                (_, Err(_)) if first_error.is_some() => {}
                (key, Err(e)) => {
                    let detail = e.to_string();
                    first_error = Some(if detail.contains("payload version or checksum") {
                        RedisError::TargetTooOld {
                            address: self.address.clone(),
                            rdb_version: self.rdb_version,
                        }
                    } else {
                        RedisError::Restore {
                            address: self.address.clone(),
                            key: key
                                .as_deref()
                                .map(show_key)
                                .unwrap_or_else(|| "(SELECT)".to_owned()),
                            detail: crate::text::one_line(&detail),
                        }
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// `FUNCTION LOAD` (code) or `FUNCTION RESTORE` (dump); existing libraries are skipped
    /// unless the conflict policy replaces.
    async fn function(&mut self, verb: &[&str], body: Vec<u8>) -> Result<(), RedisError> {
        self.flush().await?;
        let replace = self.conflict != RedisConflict::Skip;
        let mut command = redis::cmd("FUNCTION");
        command.arg(verb);
        let is_load = verb == ["LOAD"];
        if is_load && replace {
            command.arg("REPLACE");
        }
        command.arg(body);
        if !is_load {
            command.arg(if replace { "REPLACE" } else { "APPEND" });
        }
        match self.con.query::<Value>("FUNCTION", &command).await {
            Ok(_) => self.stats.functions_restored += 1,
            Err(RedisError::Command { detail, .. })
                if !replace && detail.contains("already exists") =>
            {
                self.stats.functions_skipped += 1
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// A key for messages: text when printable, else escaped bytes.
pub(super) fn show_key(key: &[u8]) -> String {
    format!("\"{}\"", key.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(version: &str) -> ServerInfo {
        ServerInfo {
            version: version.to_owned(),
            ..ServerInfo::default()
        }
    }

    #[test]
    fn warns_when_the_target_will_not_check_payloads() {
        let seven = server("7.0.15");
        for checked in ["yes", "clients"] {
            assert_eq!(
                payload_check_warning("r:6379", &seven, Ok(Some(checked.to_owned()))),
                None
            );
        }
        let warning =
            payload_check_warning("r:6379", &seven, Ok(Some("no".to_owned()))).unwrap_or_default();
        for fragment in [
            "r:6379 does not deep-check",
            "(sanitize-dump-payload is \"no\")",
            "a tampered backup could crash it",
            "run CONFIG SET sanitize-dump-payload yes on it first",
        ] {
            assert!(warning.contains(fragment), "{fragment:?} not in {warning}");
        }
        let old = payload_check_warning("r:6379", &server("6.0.9"), Ok(None)).unwrap_or_default();
        assert!(
            old.contains("r:6379 (Redis 6.0.9) cannot deep-check") && old.contains("6.2 or newer"),
            "{old}"
        );
        // A server that hides the setting or refuses CONFIG: nothing to warn about for sure.
        assert_eq!(payload_check_warning("r:6379", &seven, Ok(None)), None);
        assert_eq!(
            payload_check_warning("r:6379", &seven, Err("NOPERM".to_owned())),
            None
        );
    }
}
