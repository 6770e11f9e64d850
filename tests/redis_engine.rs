//! The Redis engine against real `redis-server`s, a real S3 server and a directory: round
//! trips of every type in both modes and framings, conflict policies, databases, expiry,
//! 100 MB values, and failures that lose nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coffer::api::{Compression, RedisConflict};
use coffer::engine::redis::{self, BackupRequest, Mode, RedisTarget, RestoreRequest, RestoreStats};
use coffer::pipeline::Progress;
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
    let _: () = ::redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(1500)
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
    tokio::time::sleep(Duration::from_millis(1700)).await;
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
    let value = vec![b'v'; 1 << 20];
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
    let killer = {
        let mut src = src.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let _: i64 = ::redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("replica")
                .query_async(&mut src)
                .await
                .unwrap();
        })
    };
    // No compression: the bytes reach the store as they arrive.
    let err = take(
        &store,
        &source.url(),
        Mode::Snapshot,
        Compression::None,
        "broken/",
    )
    .await
    .unwrap_err();
    killer.await.unwrap();
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
    // every second meanwhile. 100 ms per key makes that take 2 seconds.
    let source = RedisServer::start_with(None, DISK).unwrap();
    let mut src = connect(&source.url()).await;
    for i in 0..20 {
        set(&mut src, 0, &format!("k{i}"), "v").await;
    }
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(100_000)
        .query_async(&mut src)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let manifest = take(
        &dir_store(&dir),
        &source.url(),
        Mode::Snapshot,
        Compression::Zstd,
        "slow/",
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the snapshot really was slow"
    );
    assert_eq!(manifest.stats.keys, Some(20));
}
