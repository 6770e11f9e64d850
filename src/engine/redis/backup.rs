//! Taking a Redis backup into a store: pre-flight, the data object, then the manifest.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use chrono::Utc;
use redis::aio::MultiplexedConnection;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::client::{self, ServerInfo, major_version};
use super::error::RedisError;
use super::frames;
use super::rdb::{Item, RdbReader};
use super::replication;
use super::target::RedisTarget;
use crate::api::Compression;
use crate::pipeline::{self, ObjectSpec, Progress, TapReader};
use crate::storage::Store;
use crate::storage::manifest::{
    BackupOwner, FORMAT_VERSION, Manifest, ObjectRecord, SourceInfo, Stats,
};

/// How the data is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A point-in-time RDB over the replication protocol.
    Snapshot,
    /// SCAN + DUMP + PTTL of every key (not point-in-time).
    Keys,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Keys => "keys",
        }
    }
}

/// One backup to take.
#[derive(Clone, Debug)]
pub struct BackupRequest {
    pub target: RedisTarget,
    pub mode: Mode,
    pub compression: Compression,
    /// The backup's name, recorded in the manifest.
    pub name: String,
    /// The backup's folder in the store, ending in `/` (for example `name/20261201T160000Z/`).
    pub folder: String,
    /// The Backup object this backup is taken for, recorded in the manifest.
    pub owner: Option<BackupOwner>,
}

/// The format name recorded for each mode's data object.
pub const RDB_FORMAT: &str = "rdb";
pub const KEYS_FORMAT: &str = "coffer-keys";

/// What a backup counted while it ran.
#[derive(Debug, Default)]
struct Counted {
    stats: Stats,
    rdb_version: Option<u16>,
}

/// Takes the backup: checks the server and the store first, streams the data object, and
/// writes the manifest last. A failure leaves no manifest, so no backup.
pub async fn backup(
    store: &Store,
    request: &BackupRequest,
    progress: &Progress,
) -> Result<Manifest, RedisError> {
    let started_at = Utc::now();
    let target = &request.target;
    let address = target.address();
    let mut con = client::connect(target, target.database.unwrap_or(0)).await?;
    let info = client::server_info(&mut con, &address).await?;
    store.preflight().await?;

    let object = ObjectSpec {
        folder: &request.folder,
        name: &format!(
            "redis.{}{}",
            match request.mode {
                Mode::Snapshot => "rdb",
                Mode::Keys => "keys",
            },
            pipeline::extension(request.compression)
        ),
        format: match request.mode {
            Mode::Snapshot => RDB_FORMAT,
            Mode::Keys => KEYS_FORMAT,
        },
        compression: request.compression,
    };
    let (record, counted) = match request.mode {
        Mode::Snapshot => snapshot(store, object, target, progress).await?,
        Mode::Keys => keys(store, object, target, con, &info, progress).await?,
    };
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        coffer_version: env!("CARGO_PKG_VERSION").to_owned(),
        name: request.name.clone(),
        source: SourceInfo {
            kind: "redis".to_owned(),
            address,
            server_version: Some(info.version.clone()),
            mode: Some(request.mode.as_str().to_owned()),
            database: target.database,
            rdb_version: counted.rdb_version,
            tool: None,
        },
        started_at,
        completed_at: Utc::now(),
        compression: request.compression,
        objects: vec![record],
        stats: counted.stats,
        owner: request.owner.clone(),
    };
    store.put_manifest(&request.folder, &manifest).await?;
    Ok(manifest)
}

async fn snapshot(
    store: &Store,
    object: ObjectSpec<'_>,
    target: &RedisTarget,
    progress: &Progress,
) -> Result<(ObjectRecord, Counted), RedisError> {
    let snapshot = replication::start(target).await?;
    let (tap, tapped) = mpsc::channel::<Bytes>(16);
    let only = target.database;
    let inspector = tokio::task::spawn_blocking(move || inspect(TapReader::new(tapped), only));
    let mut reader = snapshot.reader;
    let transfer = snapshot.task;
    let mut counted = None;
    let check = async {
        // The transfer's own error is the cause when both fail (the RDB then looks truncated).
        transfer.await.map_err(joined)??;
        counted = Some(inspector.await.map_err(joined)??);
        Ok::<_, RedisError>(())
    };
    let record = pipeline::upload(store, object, &mut reader, Some(tap), progress, check).await?;
    let counted =
        counted.ok_or_else(|| RedisError::Internal("the RDB was not inspected".into()))?;
    Ok((record, counted))
}

fn joined(e: tokio::task::JoinError) -> RedisError {
    RedisError::Internal(format!("a backup task failed: {e}"))
}

/// Walks the RDB as it streams past: counts keys and checks its CRC-64, so a backup that
/// could not be restored is refused now rather than discovered later.
fn inspect(reader: TapReader, only: Option<u32>) -> Result<Counted, RedisError> {
    let mut rdb = RdbReader::new(std::io::BufReader::with_capacity(256 << 10, reader), false)?;
    let mut counted = Counted {
        rdb_version: Some(rdb.version()),
        ..Counted::default()
    };
    let (mut keys, mut expiring, mut functions) = (0u64, 0u64, 0u64);
    let mut per_db: BTreeMap<u32, u64> = BTreeMap::new();
    while let Some(item) = rdb.next_item()? {
        match item {
            Item::Entry(entry) if only.is_none_or(|db| db == entry.db) => {
                keys += 1;
                expiring += u64::from(entry.expire_at_ms.is_some());
                *per_db.entry(entry.db).or_default() += 1;
            }
            Item::Function(_) => functions += 1,
            Item::Entry(_) | Item::ModuleAux | Item::End => {}
        }
    }
    counted.stats = Stats {
        keys: Some(keys),
        expiring_keys: Some(expiring),
        keys_per_database: per_db,
        functions: Some(functions),
        ..Stats::default()
    };
    Ok(counted)
}

async fn keys(
    store: &Store,
    object: ObjectSpec<'_>,
    target: &RedisTarget,
    con: MultiplexedConnection,
    info: &ServerInfo,
    progress: &Progress,
) -> Result<(ObjectRecord, Counted), RedisError> {
    let databases: Vec<u32> = match target.database {
        Some(db) => vec![db],
        None => info.keyspace.keys().copied().collect(),
    };
    let (writer, mut reader) = tokio::io::duplex(1 << 20);
    let with_functions = major_version(&info.version) >= 7;
    let producer = tokio::spawn(write_keys(
        con,
        target.address(),
        databases,
        with_functions,
        writer,
    ));
    let mut counted = None;
    let check = async {
        counted = Some(producer.await.map_err(joined)??);
        Ok::<_, RedisError>(())
    };
    let record = pipeline::upload(store, object, &mut reader, None, progress, check).await?;
    let counted =
        counted.ok_or_else(|| RedisError::Internal("the keys were not counted".into()))?;
    Ok((record, counted))
}

/// Keys per SCAN call.
const SCAN_COUNT: usize = 1000;

/// Writes every key of `databases` as `coffer-keys` frames: SCAN, then DUMP and PTTL in one
/// pipeline per batch. SCAN can return a key twice; a 128-bit hash of each key seen in the
/// current database (16 bytes per key) drops the repeats.
async fn write_keys(
    mut con: MultiplexedConnection,
    address: String,
    databases: Vec<u32>,
    with_functions: bool,
    mut out: DuplexStream,
) -> Result<Counted, RedisError> {
    let fail = |command, e: &redis::RedisError| RedisError::from_redis(&address, command, e);
    let write_error = |e: std::io::Error| {
        RedisError::Internal(format!("the backup stopped reading the keys ({e})"))
    };
    out.write_all(&frames::header())
        .await
        .map_err(write_error)?;
    let (mut total, mut expiring) = (0u64, 0u64);
    let mut per_db = BTreeMap::new();
    let mut rdb_version = None;
    for db in databases {
        redis::cmd("SELECT")
            .arg(db)
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| fail("SELECT", &e))?;
        out.write_all(&frames::select(db))
            .await
            .map_err(write_error)?;
        let mut seen: HashSet<[u8; 16]> = HashSet::new();
        let mut cursor = 0u64;
        let mut in_db = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut con)
                .await
                .map_err(|e| fail("SCAN", &e))?;
            let fresh: Vec<Vec<u8>> = keys
                .into_iter()
                .filter(|k| seen.insert(key_hash(k)))
                .collect();
            let sizes = memory_usage(&mut con, &fresh).await;
            for batch in dump_batches(sizes.as_deref(), fresh.len()) {
                let batch = &fresh[batch];
                let mut pipe = redis::pipe();
                for key in batch {
                    pipe.cmd("DUMP").arg(key).cmd("PTTL").arg(key);
                }
                let replies: Vec<(Option<Vec<u8>>, i64)> = pipe
                    .query_async(&mut con)
                    .await
                    .map_err(|e| fail("DUMP", &e))?;
                let now_ms = Utc::now().timestamp_millis();
                for (key, (payload, pttl)) in batch.iter().zip(replies) {
                    // Gone between SCAN and DUMP.
                    let Some(payload) = payload.filter(|_| pttl != -2) else {
                        continue;
                    };
                    if rdb_version.is_none() && payload.len() >= 10 {
                        let at = payload.len() - 10;
                        rdb_version = Some(u16::from_le_bytes([payload[at], payload[at + 1]]));
                    }
                    let expire_at = (pttl >= 0).then(|| now_ms + pttl);
                    expiring += u64::from(expire_at.is_some());
                    out.write_all(&frames::entry(key, expire_at, &payload))
                        .await
                        .map_err(write_error)?;
                    in_db += 1;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        total += in_db;
        per_db.insert(db, in_db);
    }
    let mut functions = 0;
    if with_functions {
        let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
            .arg("LIST")
            .query_async(&mut con)
            .await
            .map_err(|e| fail("FUNCTION LIST", &e))?;
        if !libraries.is_empty() {
            functions = libraries.len() as u64;
            let dump: Vec<u8> = redis::cmd("FUNCTION")
                .arg("DUMP")
                .query_async(&mut con)
                .await
                .map_err(|e| fail("FUNCTION DUMP", &e))?;
            out.write_all(&frames::functions(&dump))
                .await
                .map_err(write_error)?;
        }
    }
    out.write_all(&frames::end(total))
        .await
        .map_err(write_error)?;
    out.shutdown().await.map_err(write_error)?;
    Ok(Counted {
        stats: Stats {
            keys: Some(total),
            expiring_keys: Some(expiring),
            keys_per_database: per_db,
            functions: Some(functions),
            ..Stats::default()
        },
        rdb_version,
    })
}

/// What each key takes in the server's memory (`MEMORY USAGE`), to keep each DUMP pipeline
/// small; `None` where the command is not allowed (some managed services).
async fn memory_usage(con: &mut MultiplexedConnection, keys: &[Vec<u8>]) -> Option<Vec<u64>> {
    if keys.is_empty() {
        return Some(Vec::new());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(1);
    }
    let sizes: Vec<Option<u64>> = pipe.query_async(con).await.ok()?;
    Some(sizes.into_iter().map(|s| s.unwrap_or(0)).collect())
}

/// Bytes of values per DUMP pipeline (a single larger value goes alone).
const DUMP_BATCH_BYTES: u64 = 8 << 20;
/// Keys per DUMP pipeline when sizes are unknown.
const DUMP_BATCH_UNSIZED: usize = 16;

/// Splits `count` keys into consecutive batches of at most `DUMP_BATCH_BYTES` by their
/// estimated sizes (each batch has at least one key), or of `DUMP_BATCH_UNSIZED` keys.
fn dump_batches(sizes: Option<&[u64]>, count: usize) -> Vec<std::ops::Range<usize>> {
    let Some(sizes) = sizes.filter(|s| s.len() == count) else {
        return (0..count)
            .step_by(DUMP_BATCH_UNSIZED)
            .map(|start| start..(start + DUMP_BATCH_UNSIZED).min(count))
            .collect();
    };
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, size) in sizes.iter().enumerate() {
        if i > start && bytes + size > DUMP_BATCH_BYTES {
            batches.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < count {
        batches.push(start..count);
    }
    batches
}

fn key_hash(key: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn dump_batches_are_bounded_by_bytes() {
        let mib = 1 << 20;
        let sizes = [mib, 3 * mib, 5 * mib, 20 * mib, 100, 100];
        assert_eq!(dump_batches(Some(&sizes), 6), [0..2, 2..3, 3..4, 4..6]);
        assert_eq!(
            dump_batches(Some(&[]), 0),
            Vec::<std::ops::Range<usize>>::new()
        );
        let small = vec![10u64; 2000];
        assert_eq!(dump_batches(Some(&small), 2000), [0..2000]);
        assert_eq!(dump_batches(None, 40), [0..16, 16..32, 32..40]);
        assert_eq!(
            dump_batches(Some(&[1, 2]), 3),
            [0..3],
            "sizes that do not match are ignored"
        );
    }
}
