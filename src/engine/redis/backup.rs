//! Taking a Redis backup into a store: pre-flight, the data object, then the manifest.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::client::{self, Connection, Limits, ServerInfo, major_version};
use super::error::RedisError;
use super::frames;
use super::rdb::{Item, RdbReader, type_name};
use super::replication;
use super::target::RedisTarget;
use crate::api::Compression;
use crate::pipeline::encryption::Seal;
use crate::pipeline::{self, Effort, ObjectSpec, Progress, TapReader};
use crate::storage::Store;
use crate::storage::manifest::{BackupOwner, Manifest, ObjectRecord, SourceInfo, Stats};

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
    /// What the data objects are encrypted to (none: stored unencrypted).
    pub seal: Option<Seal>,
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

/// Takes the backup with the default [`Limits`].
pub async fn backup(
    store: &Store,
    request: &BackupRequest,
    progress: &Progress,
) -> Result<Manifest, RedisError> {
    backup_with(store, request, &Limits::default(), progress).await
}

/// Takes the backup: checks the server and the store first, streams the data object, and
/// writes the manifest last. A failure leaves no manifest, so no backup.
pub async fn backup_with(
    store: &Store,
    request: &BackupRequest,
    limits: &Limits,
    progress: &Progress,
) -> Result<Manifest, RedisError> {
    let started_at = Utc::now();
    let target = &request.target;
    let address = target.address();
    let mut con = Connection::open(target, target.database.unwrap_or(0), limits).await?;
    let info = client::server_info(&mut con).await?;
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
        effort: Effort::Standard,
        seal: request.seal.as_ref(),
    };
    let (record, counted) = match request.mode {
        Mode::Snapshot => snapshot(store, object, target, limits, progress).await?,
        Mode::Keys => keys(store, object, target, con, &info, limits, progress).await?,
    };
    let manifest = Manifest {
        format_version: Manifest::version_for(request.seal.as_ref().map(Seal::record)),
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
            position: None,
        },
        started_at,
        completed_at: Utc::now(),
        compression: request.compression,
        objects: vec![record],
        stats: counted.stats,
        owner: request.owner.clone(),
        encryption: request.seal.as_ref().map(|s| s.record().clone()),
    };
    store.put_manifest(&request.folder, &manifest).await?;
    Ok(manifest)
}

async fn snapshot(
    store: &Store,
    object: ObjectSpec<'_>,
    target: &RedisTarget,
    limits: &Limits,
    progress: &Progress,
) -> Result<(ObjectRecord, Counted), RedisError> {
    let snapshot = replication::start(target, limits).await?;
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
    let mut per_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut expiring_per_type: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(item) = rdb.next_item()? {
        match item {
            Item::Entry(entry) if only.is_none_or(|db| db == entry.db) => {
                keys += 1;
                expiring += u64::from(entry.expire_at_ms.is_some());
                *per_db.entry(entry.db).or_default() += 1;
                let kind = type_name(entry.value_type);
                *per_type.entry(kind.to_owned()).or_default() += 1;
                if entry.expire_at_ms.is_some() {
                    *expiring_per_type.entry(kind.to_owned()).or_default() += 1;
                }
            }
            Item::Function(_) => functions += 1,
            Item::Entry(_) | Item::ModuleAux | Item::End => {}
        }
    }
    counted.stats = Stats {
        keys: Some(keys),
        expiring_keys: Some(expiring),
        keys_per_database: per_db,
        keys_per_type: per_type,
        expiring_keys_per_type: expiring_per_type,
        functions: Some(functions),
        ..Stats::default()
    };
    Ok(counted)
}

async fn keys(
    store: &Store,
    object: ObjectSpec<'_>,
    target: &RedisTarget,
    con: Connection,
    info: &ServerInfo,
    limits: &Limits,
    progress: &Progress,
) -> Result<(ObjectRecord, Counted), RedisError> {
    let databases: Vec<u32> = match target.database {
        Some(db) => vec![db],
        None => info.keyspace.keys().copied().collect(),
    };
    let (writer, mut reader) = tokio::io::duplex(1 << 20);
    // Redis 7 has function libraries, and PEXPIRETIME: the exact expiry time.
    let redis7 = major_version(&info.version) >= 7;
    let producer = tokio::spawn(write_keys(
        con,
        databases,
        redis7,
        redis7,
        limits.keys_per_pass,
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

/// Writes every key of `databases` as `coffer-keys` frames: SCAN, then DUMP and the expiry in
/// one pipeline per batch, each key exactly once. The expiry is the server's own absolute
/// time with `absolute_expiry` (`PEXPIRETIME`, Redis 7+), else PTTL added to the time the
/// pipeline's answer came back (which may be a few milliseconds late).
///
/// SCAN returns every key that exists throughout the scan at least once, but may return
/// one more than once (when the server's table shrinks or rehashes). Dropping the repeats
/// exactly means remembering the keys written so far, 16 bytes of SHA-256 each: a
/// database of 100 million keys would need gigabytes. So the keys are divided by their
/// hash into ranges, each read by a full SCAN pass of its own that writes only the keys
/// whose hash falls in its range and remembers only those: memory stays near
/// [`Limits::keys_per_pass`] keys whatever the size of the database, and a key is still
/// written once, in the one pass that owns its hash. Each pass's range is chosen from
/// `DBSIZE` when it starts, so a database that grows meanwhile mostly adds passes (only
/// growth during one pass makes that pass hold more than planned). A
/// database that fits (the usual case) is read in one pass, as before; a larger one pays
/// an extra SCAN of every key name per pass, while DUMP still reads each value once.
///
/// The alternatives were worse: a probabilistic filter would drop keys it wrongly thinks
/// it has seen, and dropping repeats at restore time would need the same memory there, and
/// leave the manifest's key counts (including repeats) wrong.
async fn write_keys(
    mut con: Connection,
    databases: Vec<u32>,
    with_functions: bool,
    absolute_expiry: bool,
    keys_per_pass: u64,
    mut out: DuplexStream,
) -> Result<Counted, RedisError> {
    let expiry = if absolute_expiry {
        "PEXPIRETIME"
    } else {
        "PTTL"
    };
    let write_error = |e: std::io::Error| {
        RedisError::Internal(format!("the backup stopped reading the keys ({e})"))
    };
    out.write_all(&frames::header())
        .await
        .map_err(write_error)?;
    let (mut total, mut expiring) = (0u64, 0u64);
    let mut per_db = BTreeMap::new();
    let mut per_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut expiring_per_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut rdb_version = None;
    for db in databases {
        con.query::<()>("SELECT", redis::cmd("SELECT").arg(db))
            .await?;
        out.write_all(&frames::select(db))
            .await
            .map_err(write_error)?;
        let mut in_db = 0u64;
        let mut from = 0u128;
        while from < HASH_SPACE {
            let size: u64 = con.query("DBSIZE", &redis::cmd("DBSIZE")).await?;
            let mut pass = Pass::plan(from, size, keys_per_pass);
            if from == 0 && pass.range.end < HASH_SPACE {
                tracing::info!(
                    "database {db} of {} holds {size} keys: reading it in about {} SCAN passes of at most {keys_per_pass} keys, to keep memory bounded",
                    con.address(),
                    size.div_ceil(keys_per_pass.max(1))
                );
            }
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = con
                    .query(
                        "SCAN",
                        redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(SCAN_COUNT),
                    )
                    .await?;
                let fresh: Vec<Vec<u8>> = keys.into_iter().filter(|k| pass.admit(k)).collect();
                let sizes = memory_usage(&mut con, &fresh).await?;
                for batch in dump_batches(sizes.as_deref(), fresh.len()) {
                    let batch = &fresh[batch];
                    let mut pipe = redis::pipe();
                    for key in batch {
                        pipe.cmd("DUMP").arg(key).cmd(expiry).arg(key);
                    }
                    let replies: Vec<(Option<Vec<u8>>, i64)> = con.pipeline("DUMP", &pipe).await?;
                    let now_ms = Utc::now().timestamp_millis();
                    for (key, (payload, expires)) in batch.iter().zip(replies) {
                        // Gone between SCAN and DUMP.
                        let Some(payload) = payload.filter(|_| expires != -2) else {
                            continue;
                        };
                        if rdb_version.is_none() && payload.len() >= 10 {
                            let at = payload.len() - 10;
                            rdb_version = Some(u16::from_le_bytes([payload[at], payload[at + 1]]));
                        }
                        let expire_at = match (expires >= 0, absolute_expiry) {
                            (false, _) => None,
                            (true, true) => Some(expires),
                            (true, false) => Some(now_ms + expires),
                        };
                        expiring += u64::from(expire_at.is_some());
                        let kind = type_name(payload.first().copied().unwrap_or_default());
                        *per_type.entry(kind.to_owned()).or_default() += 1;
                        if expire_at.is_some() {
                            *expiring_per_type.entry(kind.to_owned()).or_default() += 1;
                        }
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
            from = pass.range.end;
        }
        total += in_db;
        per_db.insert(db, in_db);
    }
    let mut functions = 0;
    if with_functions {
        let libraries: Vec<redis::Value> = con
            .query("FUNCTION LIST", redis::cmd("FUNCTION").arg("LIST"))
            .await?;
        if !libraries.is_empty() {
            functions = libraries.len() as u64;
            let dump: Vec<u8> = con
                .query("FUNCTION DUMP", redis::cmd("FUNCTION").arg("DUMP"))
                .await?;
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
            keys_per_type: per_type,
            expiring_keys_per_type: expiring_per_type,
            functions: Some(functions),
            ..Stats::default()
        },
        rdb_version,
    })
}

/// Where a key's hash falls: the first 64 bits of its SHA-256 say which pass owns it, the
/// whole 128 bits identify it among the keys of that pass.
const HASH_SPACE: u128 = 1 << 64;

/// One SCAN pass of `keys` mode: the keys whose position falls in `range`, and the
/// 128-bit hashes of those written so far (a collision among even a billion keys has a
/// chance of about 10⁻²¹).
struct Pass {
    range: Range<u128>,
    seen: HashSet<u128, BuildHasherDefault<Prehashed>>,
}

impl Pass {
    /// The next pass, from `from`: one that should hold about `keys_per_pass` of the
    /// database's `size` keys (all the rest when they fit), with room reserved for them.
    fn plan(from: u128, size: u64, keys_per_pass: u64) -> Self {
        let keys_per_pass = keys_per_pass.max(1);
        let (end, expected) = if size <= keys_per_pass {
            (HASH_SPACE, size)
        } else {
            let width = (HASH_SPACE * u128::from(keys_per_pass) / u128::from(size)).max(1);
            ((from + width).min(HASH_SPACE), keys_per_pass)
        };
        let mut seen = HashSet::default();
        // Room for an eighth more, for keys added while the pass runs.
        let room = expected.saturating_add(expected / 8);
        seen.reserve(usize::try_from(room).unwrap_or(usize::MAX));
        Self {
            range: from..end,
            seen,
        }
    }

    /// Whether to write `key`: its hash is this pass's and it was not written before.
    fn admit(&mut self, key: &[u8]) -> bool {
        let hash = key_hash(key);
        self.range.contains(&(hash >> 64)) && self.seen.insert(hash)
    }
}

fn key_hash(key: &[u8]) -> u128 {
    let digest = Sha256::digest(key);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// A `Hasher` for values that are already uniform hashes: their low 64 bits (the high
/// ones, which place a key in its pass, vary little within one).
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// What each key takes in the server's memory (`MEMORY USAGE`), to keep each DUMP pipeline
/// small; `None` where the command is not allowed (some managed services).
async fn memory_usage(
    con: &mut Connection,
    keys: &[Vec<u8>],
) -> Result<Option<Vec<u64>>, RedisError> {
    if keys.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(1);
    }
    match con
        .pipeline::<Vec<Option<u64>>>("MEMORY USAGE", &pipe)
        .await
    {
        Ok(sizes) => Ok(Some(sizes.into_iter().map(|s| s.unwrap_or(0)).collect())),
        // Not allowed, or unknown: fine, the batches are then counted in keys.
        Err(RedisError::Command { .. } | RedisError::Auth { .. }) => Ok(None),
        Err(e) => Err(e),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the passes of one database over a simulated SCAN, which returns every key
    /// once in `order` and `repeats` of them again; returns the keys written and the most
    /// hashes any pass held at once.
    fn run_passes(
        order: &[Vec<u8>],
        repeats: &[Vec<u8>],
        keys_per_pass: u64,
        mut size_at_pass: impl FnMut(usize) -> u64,
    ) -> (Vec<Vec<u8>>, usize, usize) {
        let (mut written, mut most, mut passes) = (Vec::new(), 0, 0);
        let mut from = 0u128;
        while from < HASH_SPACE {
            let mut pass = Pass::plan(from, size_at_pass(passes), keys_per_pass);
            passes += 1;
            // Repeats come back in the middle and at the end of each pass's scan.
            let (first, second) = order.split_at(order.len() / 2);
            for key in first.iter().chain(repeats).chain(second).chain(repeats) {
                if pass.admit(key) {
                    written.push(key.clone());
                }
                most = most.max(pass.seen.len());
            }
            from = pass.range.end;
        }
        (written, most, passes)
    }

    fn numbered(count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| format!("key:{i}").into_bytes())
            .collect()
    }

    #[test]
    fn passes_write_each_key_once_and_remember_a_bounded_number() {
        let keys = numbered(50_000);
        let repeats: Vec<Vec<u8>> = keys.iter().step_by(7).cloned().collect();
        let keys_per_pass = 4_000;
        let (mut written, most, passes) =
            run_passes(&keys, &repeats, keys_per_pass, |_| keys.len() as u64);
        assert_eq!(written.len(), keys.len(), "every key exactly once");
        written.sort();
        written.dedup();
        assert_eq!(written.len(), keys.len());
        // One set of every key (the old way) would have held 50 000.
        assert!(
            most as u64 <= keys_per_pass + keys_per_pass / 8,
            "a pass held {most} keys"
        );
        assert!((12..=14).contains(&passes), "{passes} passes");
    }

    #[test]
    fn a_database_that_fits_is_read_in_one_pass_and_growth_only_adds_passes() {
        let keys = numbered(3_000);
        let repeats = numbered(500);
        let (written, most, passes) = run_passes(&keys, &repeats, 3_000, |_| 3_000);
        assert_eq!((written.len(), most, passes), (3_000, 3_000, 1));
        let pass = Pass::plan(0, 3_000, 3_000);
        assert_eq!(pass.range, 0..HASH_SPACE);
        assert!(pass.seen.capacity() >= 3_000 + 375, "room is reserved");

        // The database doubles after the first pass is planned: later passes are planned
        // for its new size, so none holds much more than planned.
        let (written, most, passes) =
            run_passes(
                &keys,
                &repeats,
                500,
                |pass| {
                    if pass == 0 { 1_500 } else { 3_000 }
                },
            );
        assert_eq!(written.len(), 3_000);
        assert!(most <= 1_000 + 250, "a pass held {most} keys");
        assert!(passes >= 6, "{passes} passes");

        // Degenerate limits still end: each pass covers at least one position.
        let pass = Pass::plan(HASH_SPACE - 1, u64::MAX, 0);
        assert_eq!(pass.range, HASH_SPACE - 1..HASH_SPACE);
        assert_eq!(Pass::plan(0, 0, 10).range, 0..HASH_SPACE);
    }

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
