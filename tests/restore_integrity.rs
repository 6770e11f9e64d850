//! Restores read from a store that lies: the test S3 server serves an object with one byte
//! changed on a chosen read of it (`S3Server::tamper`). Every engine restores only bytes that
//! matched the manifest:
//!
//! - a change on the first read (the check) is refused before the target is touched;
//! - when the backup is spooled (into a directory given with `--spool-dir`, which has room
//!   wherever the tests run; the default directory also leaves a tenth of its disk free),
//!   the store is read once: a change on a later read never reaches the restore;
//! - without the spool, the store is read twice; a change on the second read is refused at
//!   the end of the object, and the target is left as each engine promises: PostgreSQL rolls
//!   the database back (pg_restore never sees the end of its input), Redis names the keys
//!   restored before, a volume is extracted apart and never moved into place.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use coffer_testenv::{PostgresServer, RedisServer, S3Server};
use serde_json::Value;

mod support;
use support::cli::{fails, ok, stderr, walk};
use support::pg_data::{connect, create, texts};
use support::redis_data::{connect as redis_connect, set_numbered};

async fn bucket(s3: &S3Server, name: &str) {
    support::s3_client(s3)
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .unwrap();
}

/// The name of the backup's data object (the one whose format is `format`).
fn data_object(s3: &S3Server, location: &str, format: &str) -> String {
    let folder = s3.root().join(location.strip_prefix("s3://").unwrap());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["format"] == format)
        .unwrap_or_else(|| panic!("no {format} object in {manifest}"))["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Changes the `ahead`th read of `object` from now.
fn tamper_ahead(s3: &S3Server, object: &str, ahead: u32) {
    s3.tamper(object, s3.reads(object) + ahead);
}

async fn redis_keys(url: &str) -> Vec<String> {
    let mut con = redis_connect(url).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn function_libraries(url: &str) -> usize {
    let mut con = redis_connect(url).await;
    let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .unwrap();
    libraries.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restores_only_bytes_that_matched() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let source = RedisServer::start().unwrap();
    let mut con = redis_connect(&source.url()).await;
    set_numbered(&mut con, "key:", &"letters".repeat(64), 3000).await;
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("#!lua name=shop\nredis.register_function('ping', function() return 1 end)")
        .query_async::<String>(&mut con)
        .await
        .unwrap();
    // Snapshot mode: a changed byte in a value goes unnoticed by Redis itself (payloads are
    // rebuilt from the RDB); keys mode: the changed payload fails RESTORE's own checksum.
    for (mode, format) in [("snapshot", "rdb"), ("keys", "coffer-keys")] {
        let (location, _) = ok(
            &[
                "backup",
                &source.url(),
                "--to",
                &format!("s3://backups/redis-{mode}"),
                "--mode",
                mode,
                "--compression",
                "none",
            ],
            &env,
        );
        let object = data_object(&s3, &location, format);
        // Payloads are deep-checked (and Coffer does not warn that they are not).
        let target = RedisServer::start_with(None, &[("sanitize-dump-payload", "yes")]).unwrap();
        let mut tcon = redis_connect(&target.url()).await;
        redis::cmd("SET")
            .arg("existing")
            .arg("keep")
            .query_async::<()>(&mut tcon)
            .await
            .unwrap();
        let restore = |extra: &[&str]| -> Vec<String> {
            let mut args: Vec<String> = [
                "restore",
                location.as_str(),
                "--to",
                &target.url(),
                "--conflict",
                "flush",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            args
        };

        // The check's read changed: refused before the target is touched (not even flushed).
        tamper_ahead(&s3, &object, 1);
        let owned = restore(&[]);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        fails(
            &args,
            &env,
            &[&format!("{object} is damaged: the SHA-256 is")],
        );
        assert_eq!(redis_keys(&target.url()).await, ["existing"], "{mode}");

        // Without a spool the store is read twice; the second read changed: the restore
        // stops, says how many keys it had restored (they stay), and never sends its last
        // batch or the function library.
        tamper_ahead(&s3, &object, 2);
        let owned = restore(&["--no-spool"]);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let message = fails(
            &args,
            &env,
            &[
                &format!("{object} changed while it was restored"),
                "had been restored into the target and stay there (no function library was)",
                "read from the store twice",
            ],
        );
        let restored: usize = message
            .split(" key(s) had been restored")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no key count in {message}"));
        assert!(restored > 0 && restored < 3000, "{mode}: {message}");
        assert_eq!(
            redis_keys(&target.url()).await.len(),
            restored,
            "{mode}: {message}"
        );
        assert_eq!(function_libraries(&target.url()).await, 0, "{mode}");

        // Spooled: one read of the store, so a change on the read after it is never served
        // to the restore, which gives back exactly the source's keys.
        let tampered = s3.tampered();
        let reads = s3.reads(&object);
        tamper_ahead(&s3, &object, 2);
        let spool = tempfile::tempdir().unwrap();
        let owned = restore(&["--spool-dir", &spool.path().display().to_string()]);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (line, _) = ok(&args, &env);
        assert!(line.starts_with("restored 3000 keys"), "{line}");
        assert_eq!(s3.reads(&object), reads + 1, "read once");
        assert_eq!(s3.tampered(), tampered, "the changed read never happened");
        assert_eq!(
            redis_keys(&target.url()).await,
            redis_keys(&source.url()).await
        );
        assert_eq!(function_libraries(&target.url()).await, 1, "{mode}");
    }
}

async fn tables(server: &PostgresServer, database: &str) -> Vec<String> {
    texts(
        server,
        database,
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_never_commits_bytes_that_did_not_match() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let server = PostgresServer::start().unwrap();
    // Most of the dump is rows of letters: a byte changed in its middle (its lowest bit) is
    // still a valid row, so only the checksum can tell.
    create(
        &server,
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL);
         INSERT INTO items SELECT i, repeat('abcdefghij', 50) FROM generate_series(1, 8000) i;",
    )
    .await;
    let (location, _) = ok(
        &[
            "backup",
            &server.url("app"),
            "--to",
            "s3://backups/pg",
            "--compression",
            "none",
        ],
        &env,
    );
    let object = data_object(&s3, &location, "pg-dump-custom");
    create(
        &server,
        "restored",
        "CREATE TABLE marker (note text); INSERT INTO marker VALUES ('before');",
    )
    .await;
    let target = server.url("restored");

    // The check's read changed: refused before the target is touched.
    tamper_ahead(&s3, &object, 1);
    fails(
        &["restore", &location, "--to", &target, "--databases", "app"],
        &env,
        &[&format!("{object} is damaged: the SHA-256 is")],
    );
    assert_eq!(tables(&server, "restored").await, ["marker"]);

    // Read twice (no spool), the second read changed and longer than the object, its added
    // bytes late: pg_restore loaded every row but never got the object's last byte; it was
    // stopped and its transaction rolled back.
    s3.tamper_lengthening(&object, s3.reads(&object) + 2);
    fails(
        &[
            "restore",
            &location,
            "--to",
            &target,
            "--databases",
            "app",
            "--no-spool",
        ],
        &env,
        &[
            &format!("{object} changed while it was restored"),
            "nothing was restored into database \"restored\" (pg_restore was stopped before it could commit)",
        ],
    );
    assert_eq!(tables(&server, "restored").await, ["marker"]);
    assert_eq!(s3.tampered(), 2);

    // Spooled: read once; the change planned for the next read never reaches pg_restore.
    let reads = s3.reads(&object);
    tamper_ahead(&s3, &object, 2);
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().display().to_string();
    let (line, _) = ok(
        &[
            "restore",
            &location,
            "--to",
            &target,
            "--databases",
            "app",
            "--spool-dir",
            &spool_dir,
        ],
        &env,
    );
    assert!(line.contains("verified 1 tables, 8000 rows"), "{line}");
    assert_eq!(s3.reads(&object), reads + 1, "read once");
    assert_eq!(s3.tampered(), 2);
    let client = connect(&server, "restored").await;
    let mismatched: i64 = client
        .query_one(
            "SELECT count(*) FROM items WHERE body <> repeat('abcdefghij', 50)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mismatched, 0);

    // The read planned to change is still ahead: `verify` makes it, and says so.
    fails(
        &["verify", &location],
        &env,
        &[&format!("{object} is damaged: the SHA-256 is")],
    );
    assert_eq!(s3.tampered(), 3);

    // pg_restore failing for its own reason (the table exists), several MiB before the end of
    // a spooled dump: the failure is reported (the reader of the copy does not wait for a
    // pg_restore that is gone).
    fails(
        &[
            "restore",
            &location,
            "--to",
            &target,
            "--databases",
            "app",
            "--spool-dir",
            &spool_dir,
        ],
        &env,
        &["pg_restore into database \"restored\"", "already exists"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_is_moved_into_place_only_after_its_bytes_matched() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    for i in 0..40 {
        std::fs::write(
            source.join("sub").join(format!("file-{i}")),
            "abcdefghij".repeat(2000),
        )
        .unwrap();
    }
    let target = work.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep"), b"keep").unwrap();
    let target_str = target.display().to_string();
    let before = walk(&target);

    let mut locations = Vec::new();
    for compression in ["none", "zstd"] {
        let (location, _) = ok(
            &[
                "backup",
                &source.display().to_string(),
                "--to",
                &format!("s3://backups/volume-{compression}"),
                "--compression",
                compression,
            ],
            &env,
        );
        let object = data_object(&s3, &location, "tar");
        // One read: a change in it is found before anything is moved into the target,
        // even with --clean (which empties the target only once the archive matched).
        let reads = s3.reads(&object);
        tamper_ahead(&s3, &object, 1);
        fails(
            &["restore", &location, "--to", &target_str, "--clean"],
            &env,
            &[&format!("{object} is damaged: the SHA-256 is")],
        );
        assert_eq!(s3.reads(&object), reads + 1, "read once");
        assert_eq!(
            walk(&target),
            before,
            "{compression}: the target is as it was"
        );
        assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"keep");
        locations.push(location);
    }

    // The same backup, read without a change, restores (and --clean removes the rest).
    let out = support::cli::coffer(
        &["restore", &locations[0], "--to", &target_str, "--clean"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!target.join("keep").exists());
    for i in 0..40 {
        let name = format!("file-{i}");
        assert_eq!(
            std::fs::read(target.join("sub").join(&name)).unwrap(),
            std::fs::read(source.join("sub").join(&name)).unwrap()
        );
    }
    assert!(
        !walk(&target)
            .iter()
            .any(|p| Path::new(p).to_string_lossy().contains(".coffer-restore-")),
        "no staging directory is left"
    );
}
