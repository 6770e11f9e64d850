//! The Redis engine against real `redis-server`s, a real S3 server and a directory: round
//! trips of every type in both modes and framings, conflict policies, databases, expiry,
//! 100 MB values, and failures that lose nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coffer::api::{Compression, RedisConflict};
use coffer::engine::redis::{
    self, BackupRequest, Limits, Mode, RedisTarget, RestoreRequest, RestoreStats,
};
use coffer::pipeline::Progress;
use coffer::pipeline::fetch::Spool;
use coffer::storage::manifest::{MANIFEST, Manifest};
use coffer::storage::{Destination, S3Options, Store};
use coffer_testenv::{RedisServer, S3Server};

mod support;
use support::redis_data::{assert_same, connect, populate, state};

fn target(url: &str) -> RedisTarget {
    RedisTarget::parse(url).unwrap()
}

async fn s3_store(server: &S3Server, part_size: Option<usize>) -> Store {
    support::s3_client(server)
        .create_bucket()
        .bucket("backups")
        .send()
        .await
        .unwrap();
    let options = S3Options {
        credentials: Some((
            server.access_key().to_owned(),
            server.secret_key().to_owned(),
        )),
        endpoint: Some(server.endpoint()),
        region: Some(server.region().to_owned()),
        part_size,
        ..S3Options::default()
    };
    Store::open(&Destination::parse("s3://backups/prod").unwrap(), &options).await
}

fn dir_store(dir: &tempfile::TempDir) -> Store {
    Store::Fs(coffer::storage::fs::FsStore::new(dir.path().join("store")))
}

async fn take(
    store: &Store,
    url: &str,
    mode: Mode,
    compression: Compression,
    folder: &str,
) -> Result<Manifest, redis::RedisError> {
    let request = BackupRequest {
        target: target(url),
        mode,
        compression,
        name: "test".to_owned(),
        folder: folder.to_owned(),
        owner: None,
        seal: None,
    };
    redis::backup(store, &request, &Progress::default()).await
}

async fn put_back(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    url: &str,
    conflict: RedisConflict,
    database: Option<u32>,
) -> Result<RestoreStats, redis::RedisError> {
    let request = RestoreRequest {
        target: target(url),
        conflict,
        database,
        spool: Spool::default(),
        key: None,
    };
    redis::restore(store, folder, manifest, &request, &Progress::default()).await
}

/// Diskless replication (`$EOF:` framing) without the default 5-second wait for replicas.
const DISKLESS: &[(&str, &str)] = &[
    ("repl-diskless-sync", "yes"),
    ("repl-diskless-sync-delay", "0"),
];
/// Disk-based replication (`$<len>` framing).
const DISK: &[(&str, &str)] = &[("repl-diskless-sync", "no")];

async fn round_trip(store: &Store, mode: Mode, compression: Compression, config: &[(&str, &str)]) {
    let source = RedisServer::start_with(Some("source-pass"), config).unwrap();
    let mut con = connect(&source.url()).await;
    populate(&mut con).await;
    let (expected, functions) = state(&mut con).await;

    let manifest = take(store, &source.url(), mode, compression, "round/trip/")
        .await
        .unwrap();
    assert_eq!(manifest.stats.keys, Some(expected.len() as u64));
    assert_eq!(
        manifest
            .stats
            .keys_per_database
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [0, 2]
    );
    assert_eq!(manifest.stats.functions, Some(1));
    assert_eq!(manifest.source.mode.as_deref(), Some(mode.as_str()));
    assert!(manifest.stats.expiring_keys >= Some(2));
    // The manifest was written last and describes the stored object exactly.
    let listed = store.list("round/trip/").await.unwrap();
    assert_eq!(listed.len(), 2);
    let data = listed
        .iter()
        .find(|o| o.key.ends_with(&manifest.objects[0].name))
        .unwrap();
    assert_eq!(data.size, manifest.objects[0].stored_bytes);
    assert!(
        listed
            .iter()
            .any(|o| o.key == format!("round/trip/{MANIFEST}"))
    );

    let destination = RedisServer::start().unwrap();
    let stats = put_back(
        store,
        "round/trip/",
        &manifest,
        &destination.url(),
        RedisConflict::Skip,
        None,
    )
    .await
    .unwrap();
    assert_eq!(stats.restored, expected.len() as u64);
    assert_eq!(
        (stats.skipped, stats.expired, stats.functions_restored),
        (0, 0, 1)
    );
    let mut restored = connect(&destination.url()).await;
    let (actual, restored_functions) = state(&mut restored).await;
    assert_same(&expected, &actual);
    assert_eq!(restored_functions, functions);
}

#[tokio::test]
async fn snapshot_round_trip_with_end_mark_framing_through_s3() {
    let s3 = S3Server::start().unwrap();
    let store = s3_store(&s3, None).await;
    round_trip(&store, Mode::Snapshot, Compression::Zstd, DISKLESS).await;
}

#[tokio::test]
async fn snapshot_round_trip_with_sized_framing_through_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(&dir_store(&dir), Mode::Snapshot, Compression::Gzip, DISK).await;
}

#[tokio::test]
async fn keys_mode_round_trip_through_s3_and_a_directory() {
    let s3 = S3Server::start().unwrap();
    round_trip(
        &s3_store(&s3, None).await,
        Mode::Keys,
        Compression::Zstd,
        DISKLESS,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    round_trip(&dir_store(&dir), Mode::Keys, Compression::None, DISKLESS).await;
}

async fn set(con: &mut ::redis::aio::MultiplexedConnection, db: u32, key: &str, value: &str) {
    let _: () = ::redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(con)
        .await
        .unwrap();
}

async fn get(con: &mut ::redis::aio::MultiplexedConnection, db: u32, key: &str) -> Option<String> {
    let (_, value): ((), Option<String>) = ::redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .cmd("GET")
        .arg(key)
        .query_async(con)
        .await
        .unwrap();
    value
}

#[tokio::test]
async fn conflicts_skip_overwrite_and_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let source = RedisServer::start_with(None, DISKLESS).unwrap();
    let mut src = connect(&source.url()).await;
    for i in 0..10 {
        set(&mut src, 0, &format!("k{i}"), "from-backup").await;
    }
    set(&mut src, 1, "other-db", "from-backup").await;
    for mode in [Mode::Snapshot, Mode::Keys] {
        let folder = format!("{}/", mode.as_str());
        let manifest = take(&store, &source.url(), mode, Compression::Zstd, &folder)
            .await
            .unwrap();
        let target_server = RedisServer::start().unwrap();
        let mut dst = connect(&target_server.url()).await;
        let seed = |dst: &mut ::redis::aio::MultiplexedConnection| {
            let mut dst = dst.clone();
            async move {
                let _: () = ::redis::cmd("FLUSHALL")
                    .query_async(&mut dst)
                    .await
                    .unwrap();
                for i in 0..4 {
                    set(&mut dst, 0, &format!("k{i}"), "already-there").await;
                }
                set(&mut dst, 0, "unrelated", "keep-me").await;
            }
        };

        seed(&mut dst).await;
        let stats = put_back(
            &store,
            &folder,
            &manifest,
            &target_server.url(),
            RedisConflict::Skip,
            None,
        )
        .await
        .unwrap();
        assert_eq!((stats.restored, stats.skipped), (7, 4), "{mode:?}");
        assert_eq!(
            get(&mut dst, 0, "k0").await.as_deref(),
            Some("already-there")
        );
        assert_eq!(get(&mut dst, 0, "k9").await.as_deref(), Some("from-backup"));

        seed(&mut dst).await;
        let stats = put_back(
            &store,
            &folder,
            &manifest,
            &target_server.url(),
            RedisConflict::Overwrite,
            None,
        )
        .await
        .unwrap();
        assert_eq!((stats.restored, stats.skipped), (11, 0), "{mode:?}");
        assert_eq!(get(&mut dst, 0, "k0").await.as_deref(), Some("from-backup"));
        assert_eq!(
            get(&mut dst, 0, "unrelated").await.as_deref(),
            Some("keep-me")
        );

        seed(&mut dst).await;
        let stats = put_back(
            &store,
            &folder,
            &manifest,
            &target_server.url(),
            RedisConflict::Flush,
            None,
        )
        .await
        .unwrap();
        assert_eq!((stats.restored, stats.skipped), (11, 0), "{mode:?}");
        assert_eq!(get(&mut dst, 0, "k0").await.as_deref(), Some("from-backup"));
        assert_eq!(
            get(&mut dst, 0, "unrelated").await,
            None,
            "flush emptied database 0 first"
        );
        assert_eq!(
            get(&mut dst, 1, "other-db").await.as_deref(),
            Some("from-backup")
        );
    }
}

#[tokio::test]
async fn one_database_is_backed_up_and_restored_into_another_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let source = RedisServer::start_with(None, DISKLESS).unwrap();
    let mut src = connect(&source.url()).await;
    set(&mut src, 0, "zero", "0").await;
    set(&mut src, 2, "two", "2").await;
    let target_server = RedisServer::start().unwrap();
    let mut dst = connect(&target_server.url()).await;
    for mode in [Mode::Snapshot, Mode::Keys] {
        let folder = format!("{}/", mode.as_str());
        let manifest = take(&store, &source.url_db(2), mode, Compression::Zstd, &folder)
            .await
            .unwrap();
        assert_eq!(
            (manifest.source.database, manifest.stats.keys),
            (Some(2), Some(1))
        );
        let into_five = target_server.url_db(5);
        let stats = put_back(
            &store,
            &folder,
            &manifest,
            &into_five,
            RedisConflict::Overwrite,
            None,
        )
        .await
        .unwrap();
        assert_eq!(stats.restored, 1);
        assert_eq!(get(&mut dst, 5, "two").await.as_deref(), Some("2"));
        assert_eq!(get(&mut dst, 5, "zero").await, None);
    }
    // A backup of every database restores one of them into another index when asked.
    let manifest = take(
        &store,
        &source.url(),
        Mode::Snapshot,
        Compression::Zstd,
        "all/",
    )
    .await
    .unwrap();
    let into_seven = target_server.url_db(7);
    let err = put_back(
        &store,
        "all/",
        &manifest,
        &into_seven,
        RedisConflict::Skip,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("holds databases 0, 2: choose one with --database"),
        "{err}"
    );
    let stats = put_back(
        &store,
        "all/",
        &manifest,
        &into_seven,
        RedisConflict::Skip,
        Some(0),
    )
    .await
    .unwrap();
    assert_eq!(stats.restored, 1);
    assert_eq!(get(&mut dst, 7, "zero").await.as_deref(), Some("0"));
    let err = put_back(
        &store,
        "all/",
        &manifest,
        &into_seven,
        RedisConflict::Skip,
        Some(9),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("has no database 9"), "{err}");
}

#[tokio::test]
async fn keys_that_expired_since_the_backup_are_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let source = RedisServer::start_with(None, DISKLESS).unwrap();
    let mut src = connect(&source.url()).await;
    // Long enough for both backups to hold it however slow the machine (checked below);
    // the restores then wait for the expiry time itself, not a guess at it.
    let _: () = ::redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(8000)
        .query_async(&mut src)
        .await
        .unwrap();
    let expires_ms: u64 = ::redis::cmd("PEXPIRETIME")
        .arg("short")
        .query_async(&mut src)
        .await
        .unwrap();
    let _: () = ::redis::cmd("SET")
        .arg("long")
        .arg("v")
        .arg("EX")
        .arg(3600)
        .query_async(&mut src)
        .await
        .unwrap();
    let _: () = ::redis::cmd("SET")
        .arg("forever")
        .arg("v")
        .query_async(&mut src)
        .await
        .unwrap();
    let snapshot = take(
        &store,
        &source.url(),
        Mode::Snapshot,
        Compression::Zstd,
        "s/",
    )
    .await
    .unwrap();
    let keys = take(&store, &source.url(), Mode::Keys, Compression::Zstd, "k/")
        .await
        .unwrap();
    for manifest in [&snapshot, &keys] {
        assert_eq!(
            manifest.stats.keys,
            Some(3),
            "the backup holds the short-lived key"
        );
    }
    let expires = std::time::UNIX_EPOCH + Duration::from_millis(expires_ms);
    while std::time::SystemTime::now() <= expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (folder, manifest) in [("s/", &snapshot), ("k/", &keys)] {
        let target_server = RedisServer::start().unwrap();
        let stats = put_back(
            &store,
            folder,
            manifest,
            &target_server.url(),
            RedisConflict::Skip,
            None,
        )
        .await
        .unwrap();
        assert_eq!((stats.restored, stats.expired), (2, 1), "{folder}");
        let mut dst = connect(&target_server.url()).await;
        assert_eq!(get(&mut dst, 0, "short").await, None);
        let ttl: i64 = ::redis::cmd("TTL")
            .arg("long")
            .query_async(&mut dst)
            .await
            .unwrap();
        assert!((3590..=3600).contains(&ttl), "TTL kept: {ttl}");
    }
}

#[tokio::test]
async fn values_of_100_mb_round_trip_in_both_modes() {
    let s3 = S3Server::start().unwrap();
    let store = s3_store(&s3, None).await;
    let source = RedisServer::start_with(None, DISKLESS).unwrap();
    let mut src = connect(&source.url()).await;
    // Incompressible: the stored object is as large as the data and takes many parts.
    let big = support::noise(100 << 20);
    let _: () = ::redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query_async(&mut src)
        .await
        .unwrap();
    let _: () = ::redis::cmd("SET")
        .arg("small")
        .arg("s")
        .query_async(&mut src)
        .await
        .unwrap();
    for mode in [Mode::Snapshot, Mode::Keys] {
        let folder = format!("{}/", mode.as_str());
        let manifest = take(&store, &source.url(), mode, Compression::Zstd, &folder)
            .await
            .unwrap();
        assert!(manifest.objects[0].stored_bytes > 100 << 20);
        let target_server = RedisServer::start().unwrap();
        let stats = put_back(
            &store,
            &folder,
            &manifest,
            &target_server.url(),
            RedisConflict::Skip,
            None,
        )
        .await
        .unwrap();
        assert_eq!(stats.restored, 2);
        let mut dst = connect(&target_server.url()).await;
        let restored: Vec<u8> = ::redis::cmd("GET")
            .arg("big")
            .query_async(&mut dst)
            .await
            .unwrap();
        assert!(restored == big, "{mode:?}: the 100 MB value differs");
    }
    assert_eq!(s3.open_multipart_uploads(), 0);
}

#[tokio::test]
async fn an_interrupted_backup_leaves_no_manifest_no_object_and_no_open_upload() {
    let s3 = S3Server::start().unwrap();
    // 5 MiB parts so the multipart upload is under way when the transfer breaks.
    let store = s3_store(&s3, Some(5 << 20)).await;
    let source = RedisServer::start_with(None, DISKLESS).unwrap();
    let mut src = connect(&source.url()).await;
    // Incompressible values: Redis would compress repeated bytes in its RDB to almost
    // nothing, and the backup would fit in one part.
    let value = support::noise(1 << 20);
    for i in 0..40 {
        let _: () = ::redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(&value)
            .query_async(&mut src)
            .await
            .unwrap();
    }
    // Redis sleeps this long (µs) after each key it writes to the snapshot: 4 s in all.
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(100_000)
        .query_async(&mut src)
        .await
        .unwrap();
    // The replication link is cut once a multipart upload is open (polled, not timed), so the
    // test proves that an upload under way is aborted.
    let killer = async {
        let mut src = src.clone();
        let started = std::time::Instant::now();
        while s3.open_multipart_uploads() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no multipart upload was opened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _: i64 = ::redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("replica")
            .query_async(&mut src)
            .await
            .unwrap();
    };
    // No compression: the bytes reach the store as they arrive.
    let url = source.url();
    let (taken, ()) = tokio::join!(
        take(&store, &url, Mode::Snapshot, Compression::None, "broken/",),
        killer
    );
    let err = taken.unwrap_err();
    assert!(err.to_string().contains("Redis at"), "{err}");
    assert!(
        store.list("").await.unwrap().is_empty(),
        "nothing is stored"
    );
    assert_eq!(
        s3.open_multipart_uploads(),
        0,
        "the multipart upload was aborted"
    );
}

#[tokio::test]
async fn a_damaged_backup_is_refused_before_the_target_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let source = RedisServer::start_with(None, DISKLESS).unwrap();
    let mut src = connect(&source.url()).await;
    populate(&mut src).await;
    let manifest = take(
        &store,
        &source.url(),
        Mode::Snapshot,
        Compression::Zstd,
        "b/",
    )
    .await
    .unwrap();
    let object = dir.path().join("store/b").join(&manifest.objects[0].name);
    let original = std::fs::read(&object).unwrap();

    let target_server = RedisServer::start().unwrap();
    let mut dst = connect(&target_server.url()).await;
    set(&mut dst, 0, "precious", "do not flush").await;
    let mut damaged = original.clone();
    damaged[original.len() / 2] ^= 0x40;
    for bad in [damaged, original[..original.len() - 100].to_vec()] {
        std::fs::write(&object, &bad).unwrap();
        let err = put_back(
            &store,
            "b/",
            &manifest,
            &target_server.url(),
            RedisConflict::Flush,
            None,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("is damaged"), "{err}");
        assert!(err.to_string().contains(&manifest.objects[0].name), "{err}");
        assert_eq!(
            get(&mut dst, 0, "precious").await.as_deref(),
            Some("do not flush")
        );
        let size: i64 = ::redis::cmd("DBSIZE").query_async(&mut dst).await.unwrap();
        assert_eq!(size, 1);
    }
}

#[tokio::test]
async fn a_slow_disk_snapshot_is_waited_for_through_keep_alive_newlines() {
    // Disk-based replication: Redis writes the snapshot to disk first, sending a newline
    // every second meanwhile. 300 ms per key makes that take 6 seconds, twice the 3-second
    // limit on silence: each newline restarts the wait.
    let limits = Limits {
        idle_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let source = RedisServer::start_with(None, DISK).unwrap();
    let mut src = connect(&source.url()).await;
    for i in 0..20 {
        set(&mut src, 0, &format!("k{i}"), "v").await;
    }
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(300_000)
        .query_async(&mut src)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let manifest = take_with(
        &dir_store(&dir),
        &source.url(),
        Mode::Snapshot,
        &limits,
        "slow/",
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "the snapshot really was slow"
    );
    assert_eq!(manifest.stats.keys, Some(20));

    // Diskless replication with Redis' default 5-second wait for more replicas: newlines
    // keep that wait alive too.
    let source = RedisServer::start_with(None, &[("repl-diskless-sync", "yes")]).unwrap();
    let mut src = connect(&source.url()).await;
    set(&mut src, 0, "k", "v").await;
    let manifest = take_with(
        &dir_store(&dir),
        &source.url(),
        Mode::Snapshot,
        &limits,
        "delayed/",
    )
    .await
    .unwrap();
    assert_eq!(manifest.stats.keys, Some(1));
}

// ---------------------------------------------------------------------------------------
// Bounded memory in keys mode, timeouts, and payload checks.

/// Limits with 2-second timeouts, so a silent server fails a test quickly.
fn short_limits(keys_per_pass: u64) -> Limits {
    Limits {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        keys_per_pass,
    }
}

async fn take_with(
    store: &Store,
    url: &str,
    mode: Mode,
    limits: &Limits,
    folder: &str,
) -> Result<Manifest, redis::RedisError> {
    let request = BackupRequest {
        target: target(url),
        mode,
        compression: Compression::Zstd,
        name: "test".to_owned(),
        folder: folder.to_owned(),
        owner: None,
        seal: None,
    };
    redis::backup_with(store, &request, limits, &Progress::default()).await
}

/// What a scripted server does on a command.
enum Answer {
    /// These RESP bytes.
    Reply(Vec<u8>),
    /// These bytes, then nothing ever again (the connection stays open).
    ThenSilence(Vec<u8>),
    /// A newline every `every` for `lasting`, as Redis does while it prepares a snapshot,
    /// then nothing ever again.
    NewlinesThenSilence { every: Duration, lasting: Duration },
}

fn simple(text: &str) -> Vec<u8> {
    format!("+{text}\r\n").into_bytes()
}

fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

fn integer(n: i64) -> Vec<u8> {
    format!(":{n}\r\n").into_bytes()
}

fn array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

/// A scripted Redis on a loopback port: every command (an array of bulk strings) gets what
/// `answer` says. Runs until the test ends.
async fn scripted_redis(answer: impl Fn(&[Vec<u8>]) -> Answer + Send + Sync + 'static) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                let mut line = String::new();
                loop {
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let count: usize = line.trim_start_matches('*').trim().parse().unwrap();
                    let mut command = Vec::with_capacity(count);
                    for _ in 0..count {
                        line.clear();
                        read.read_line(&mut line).await.unwrap();
                        let len: usize = line.trim_start_matches('$').trim().parse().unwrap();
                        let mut arg = vec![0u8; len + 2];
                        read.read_exact(&mut arg).await.unwrap();
                        arg.truncate(len);
                        command.push(arg);
                    }
                    match answer(&command) {
                        Answer::Reply(bytes) => {
                            if write.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Answer::ThenSilence(bytes) => {
                            let _ = write.write_all(&bytes).await;
                            std::future::pending::<()>().await;
                        }
                        Answer::NewlinesThenSilence { every, lasting } => {
                            let started = std::time::Instant::now();
                            while started.elapsed() < lasting {
                                let _ = write.write_all(b"\n").await;
                                tokio::time::sleep(every).await;
                            }
                            std::future::pending::<()>().await;
                        }
                    }
                }
            });
        }
    });
    format!("redis://127.0.0.1:{port}")
}

/// The answers of a Redis 6.2 with `keys` (key → DUMP payload) in database 0, whose SCAN
/// returns every key in pages of 100 and, with each page, a few keys of earlier pages
/// again, as a real SCAN may when the server's table shrinks. Counts full scans in `scans`.
fn keys_server(
    keys: Vec<(Vec<u8>, Vec<u8>)>,
    scans: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl Fn(&[Vec<u8>]) -> Answer {
    const PAGE: usize = 100;
    move |command| {
        let name = String::from_utf8_lossy(&command[0]).to_ascii_uppercase();
        let arg = |i: usize| String::from_utf8_lossy(&command[i]).into_owned();
        let reply = match name.as_str() {
            "INFO" if arg(1) == "server" => bulk(b"# Server\r\nredis_version:6.2.0\r\n"),
            "INFO" => {
                bulk(format!("# Keyspace\r\ndb0:keys={},expires=0\r\n", keys.len()).as_bytes())
            }
            "DBSIZE" => integer(keys.len() as i64),
            "SCAN" => {
                let page: usize = arg(1).parse().unwrap();
                if page == 0 {
                    scans.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let start = page * PAGE;
                let end = (start + PAGE).min(keys.len());
                let mut names: Vec<Vec<u8>> =
                    keys[start..end].iter().map(|(k, _)| bulk(k)).collect();
                // Repeats: the first key of this page, and keys of the two pages before.
                names.push(bulk(&keys[start].0));
                for back in [1, 2] {
                    if page >= back {
                        names.push(bulk(&keys[(page - back) * PAGE + page % PAGE].0));
                    }
                }
                let next = if end == keys.len() { 0 } else { page + 1 };
                array(&[bulk(next.to_string().as_bytes()), array(&names)])
            }
            "MEMORY" => integer(64),
            "DUMP" => {
                let payload = &keys.iter().find(|(k, _)| *k == command[1]).unwrap().1;
                bulk(payload)
            }
            "PTTL" => integer(-1),
            _ => simple("OK"),
        };
        Answer::Reply(reply)
    }
}

#[tokio::test]
async fn keys_mode_reads_a_large_database_in_passes_and_writes_each_key_once() {
    // A real server with 3000 keys in database 0, read 500 keys per pass (about six
    // passes), and 300 in database 3 (one pass). (The round trips above cover every type.)
    let source = RedisServer::start().unwrap();
    let mut src = connect(&source.url()).await;
    let select = |con: &mut ::redis::aio::MultiplexedConnection, db: u32| {
        let mut con = con.clone();
        async move {
            ::redis::cmd("SELECT")
                .arg(db)
                .query_async::<()>(&mut con)
                .await
                .unwrap()
        }
    };
    select(&mut src, 3).await;
    support::redis_data::set_numbered(&mut src, "other:", "value-", 300).await;
    select(&mut src, 0).await;
    support::redis_data::set_numbered(&mut src, "many:", "value-", 3000).await;
    let (expected, _) = state(&mut src).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let manifest = take_with(
        &store,
        &source.url(),
        Mode::Keys,
        &short_limits(500),
        "passes/",
    )
    .await
    .unwrap();
    assert_eq!(manifest.stats.keys, Some(expected.len() as u64));
    let destination = RedisServer::start().unwrap();
    let stats = put_back(
        &store,
        "passes/",
        &manifest,
        &destination.url(),
        RedisConflict::Skip,
        None,
    )
    .await
    .unwrap();
    assert_eq!((stats.restored, stats.skipped), (expected.len() as u64, 0));
    let mut dst = connect(&destination.url()).await;
    assert_same(&expected, &state(&mut dst).await.0);

    // A server whose SCAN repeats keys, within a page and across pages (and so across
    // passes): each key is still written once, and the counts are exact.
    let mut payloads = Vec::new();
    for i in 0..1000 {
        let key = format!("many:{i}");
        let payload: Vec<u8> = ::redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut src)
            .await
            .unwrap();
        payloads.push((key.into_bytes(), payload));
    }
    let scans = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let scripted = scripted_redis(keys_server(payloads, scans.clone())).await;
    for (keys_per_pass, passes) in [(5000, 1..=1), (150, 6..=8)] {
        scans.store(0, std::sync::atomic::Ordering::Relaxed);
        let folder = format!("repeats-{keys_per_pass}/");
        let manifest = take_with(
            &store,
            &scripted,
            Mode::Keys,
            &short_limits(keys_per_pass),
            &folder,
        )
        .await
        .unwrap();
        let scanned = scans.load(std::sync::atomic::Ordering::Relaxed);
        assert!(passes.contains(&scanned), "{scanned} passes");
        assert_eq!(manifest.stats.keys, Some(1000));
        assert_eq!(manifest.stats.keys_per_database.get(&0), Some(&1000));
        let destination = RedisServer::start().unwrap();
        let stats = put_back(
            &store,
            &folder,
            &manifest,
            &destination.url(),
            RedisConflict::Skip,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            (stats.restored, stats.skipped),
            (1000, 0),
            "{keys_per_pass}"
        );
        let mut dst = connect(&destination.url()).await;
        assert_eq!(
            get(&mut dst, 0, "many:999").await.as_deref(),
            Some("value-999")
        );
    }
}

#[tokio::test]
async fn a_stream_that_repeats_a_key_still_verifies_and_restores() {
    // Coffer never writes a key twice, but a stream that does (written by something else)
    // must not break a restore.
    use coffer::engine::redis::frames;
    use sha2::{Digest, Sha256};
    let source = RedisServer::start().unwrap();
    let mut src = connect(&source.url()).await;
    set(&mut src, 0, "a", "first").await;
    set(&mut src, 0, "b", "b").await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let mut manifest = take(&store, &source.url(), Mode::Keys, Compression::None, "rep/")
        .await
        .unwrap();
    let reader = src.clone();
    let dump = |key: &'static str| {
        let mut reader = reader.clone();
        async move {
            let payload: Vec<u8> = ::redis::cmd("DUMP")
                .arg(key)
                .query_async(&mut reader)
                .await
                .unwrap();
            payload
        }
    };
    let (a, b) = (dump("a").await, dump("b").await);
    set(&mut src, 0, "a", "second").await;
    let a_again = dump("a").await;
    let mut stream = frames::header();
    stream.extend(frames::select(0));
    stream.extend(frames::entry(b"a", None, &a));
    stream.extend(frames::entry(b"b", None, &b));
    stream.extend(frames::entry(b"a", None, &a_again));
    stream.extend(frames::end(3));
    let object = dir.path().join("store/rep").join(&manifest.objects[0].name);
    std::fs::write(&object, &stream).unwrap();
    let record = &mut manifest.objects[0];
    record.raw_bytes = stream.len() as u64;
    record.stored_bytes = stream.len() as u64;
    record.raw_sha256 = hex::encode(Sha256::digest(&stream));
    record.sha256 = record.raw_sha256.clone();

    for (conflict, restored, skipped, value) in [
        (RedisConflict::Skip, 2, 1, "first"),
        (RedisConflict::Overwrite, 3, 0, "second"),
    ] {
        let destination = RedisServer::start().unwrap();
        let stats = put_back(
            &store,
            "rep/",
            &manifest,
            &destination.url(),
            conflict,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            (stats.restored, stats.skipped),
            (restored, skipped),
            "{conflict:?}"
        );
        let mut dst = connect(&destination.url()).await;
        assert_eq!(get(&mut dst, 0, "a").await.as_deref(), Some(value));
        assert_eq!(get(&mut dst, 0, "b").await.as_deref(), Some("b"));
    }
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_fails_within_the_timeout() {
    // A listener that accepts connections and never says anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let silent = format!("redis://{address}");
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let limits = short_limits(1000);
    let expected = format!(
        "Redis at {address} sent nothing for 2s after accepting the connection (logging in): check that a Redis server listens there"
    );
    for mode in [Mode::Snapshot, Mode::Keys] {
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            take_with(&store, &silent, mode, &limits, "silent/"),
        )
        .await
        .expect("the backup gave up on its own")
        .unwrap_err()
        .to_string();
        assert!(err.starts_with(&expected), "{mode:?}: {err}");
        assert_eq!(err.lines().count(), 1);
        assert!(started.elapsed() >= Duration::from_secs(2));
    }
    assert!(
        store.list("").await.unwrap().is_empty(),
        "nothing is stored"
    );

    // A restore into such a server gives up the same way, before writing anything.
    let source = RedisServer::start().unwrap();
    let mut src = connect(&source.url()).await;
    set(&mut src, 0, "k", "v").await;
    let manifest = take(&store, &source.url(), Mode::Keys, Compression::Zstd, "ok/")
        .await
        .unwrap();
    let request = RestoreRequest {
        target: target(&silent),
        conflict: RedisConflict::Skip,
        database: None,
        spool: Spool::default(),
        key: None,
    };
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        redis::restore_with(
            &store,
            "ok/",
            &manifest,
            &request,
            &limits,
            &Progress::default(),
        ),
    )
    .await
    .expect("the restore gave up on its own")
    .unwrap_err()
    .to_string();
    assert!(err.starts_with(&expected), "{err}");
    held.abort();
}

#[tokio::test]
async fn a_server_that_goes_silent_mid_backup_fails_it_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    let limits = short_limits(1000);
    let fail = |url: String, mode: Mode| {
        let (store, limits) = (&store, &limits);
        async move {
            let started = std::time::Instant::now();
            let err = tokio::time::timeout(
                Duration::from_secs(60),
                take_with(store, &url, mode, limits, "stalled/"),
            )
            .await
            .expect("the backup gave up on its own")
            .unwrap_err()
            .to_string();
            assert_eq!(err.lines().count(), 1, "{err}");
            (err, started.elapsed())
        }
    };
    let info = |command: &[Vec<u8>]| -> Option<Vec<u8>> {
        match String::from_utf8_lossy(&command[0])
            .to_ascii_uppercase()
            .as_str()
        {
            "INFO" => Some(bulk(b"redis_version:7.0.0\r\ndb0:keys=3,expires=0\r\n")),
            "CLIENT" | "SELECT" | "REPLCONF" => Some(simple("OK")),
            "DBSIZE" => Some(integer(3)),
            _ => None,
        }
    };

    // Snapshot: Redis prepares the snapshot for 3 s, sending newlines, which keeps the
    // backup waiting past the 2 s limit; then it falls silent.
    let url = scripted_redis(move |command| match info(command) {
        Some(reply) => Answer::Reply(reply),
        None => Answer::NewlinesThenSilence {
            every: Duration::from_millis(300),
            lasting: Duration::from_secs(3),
        },
    })
    .await;
    let (err, took) = fail(url.clone(), Mode::Snapshot).await;
    assert!(
        err.contains("sent nothing for 2s while Coffer waited for the snapshot to start")
            && err.contains(&url["redis://".len()..]),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(3),
        "the newlines were waited through"
    );

    // Snapshot: the transfer starts, then stops.
    let url = scripted_redis(move |command| match info(command) {
        Some(reply) => Answer::Reply(reply),
        None => Answer::ThenSilence(b"$1000\r\nREDIS0010".to_vec()),
    })
    .await;
    let (err, _) = fail(url, Mode::Snapshot).await;
    assert!(
        err.contains("sent nothing for 2s in the middle of the snapshot"),
        "{err}"
    );

    // Keys: SCAN answers, then the next command gets nothing.
    let url = scripted_redis(move |command| match info(command) {
        Some(reply) => Answer::Reply(reply),
        None if command[0].eq_ignore_ascii_case(b"SCAN") => Answer::Reply(array(&[
            bulk(b"0"),
            array(&[bulk(b"a"), bulk(b"b"), bulk(b"c")]),
        ])),
        None => Answer::ThenSilence(Vec::new()),
    })
    .await;
    let (err, _) = fail(url, Mode::Keys).await;
    assert!(
        err.contains("sent nothing for 2s while Coffer waited for its answer to MEMORY USAGE")
            && err.contains("check that it is up"),
        "{err}"
    );
    assert!(
        store.list("").await.unwrap().is_empty(),
        "nothing is stored"
    );
}

#[tokio::test]
async fn restores_pass_a_target_that_deep_checks_payloads() {
    // Coffer builds snapshot-mode payloads itself from the RDB: a target that checks every
    // payload in depth (sanitize-dump-payload yes) accepts them, and keys-mode ones too.
    let source = RedisServer::start_with(None, DISKLESS).unwrap();
    let mut src = connect(&source.url()).await;
    populate(&mut src).await;
    let (expected, _) = state(&mut src).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir_store(&dir);
    for mode in [Mode::Snapshot, Mode::Keys] {
        let folder = format!("{}/", mode.as_str());
        let manifest = take(&store, &source.url(), mode, Compression::Zstd, &folder)
            .await
            .unwrap();
        let destination =
            RedisServer::start_with(None, &[("sanitize-dump-payload", "yes")]).unwrap();
        let stats = put_back(
            &store,
            &folder,
            &manifest,
            &destination.url(),
            RedisConflict::Skip,
            None,
        )
        .await
        .unwrap();
        assert_eq!(stats.restored, expected.len() as u64, "{mode:?}");
        let mut dst = connect(&destination.url()).await;
        assert_same(&expected, &state(&mut dst).await.0);
    }
}
