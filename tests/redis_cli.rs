//! `coffer backup / list / verify / restore` for Redis, run as users run them, against real
//! servers; and the failures users meet, each a one-line message and a non-zero exit that
//! leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use coffer_testenv::{RedisServer, S3Server};
use serde_json::Value;

mod support;
use support::cli::{coffer, counted, fails, nothing_stored, ok, stderr, stdout};
use support::redis_data::{assert_same, connect, populate, state};

fn s3_env(s3: &S3Server) -> Vec<(&'static str, String)> {
    s3.env()
}

#[tokio::test]
async fn backup_list_verify_and_restore_through_a_directory_and_s3() {
    let source = RedisServer::start_with(Some("pw"), &[("repl-diskless-sync-delay", "0")]).unwrap();
    let mut con = connect(&source.url()).await;
    populate(&mut con).await;
    let (expected, _) = state(&mut con).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backups").display().to_string();

    let (first, out) = ok(
        &["backup", &source.url(), "--to", &dest, "--name", "shop"],
        &[],
    );
    assert!(
        first.starts_with(&format!("{dest}/shop/")) && first.ends_with("Z/"),
        "{first}"
    );
    let summary = stderr(&out);
    assert!(
        summary.contains(&format!("backed up {} keys in 2 databases", expected.len())),
        "{summary}"
    );
    assert!(
        summary.contains("snapshot mode") && summary.contains("stored (zstd)"),
        "{summary}"
    );
    assert!(
        !summary.contains(":pw@") && !summary.contains("pw@"),
        "no password in output: {summary}"
    );
    let (second, _) = ok(
        &[
            "backup",
            &source.url(),
            "--to",
            &dest,
            "--name",
            "shop",
            "--mode",
            "keys",
            "--compression",
            "gzip",
        ],
        &[],
    );
    assert_ne!(first, second);

    let (_, out) = ok(&["list", &dest, "--output", "json"], &[]);
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["location"], second, "newest first");
    assert_eq!(rows[1]["location"], first);
    for row in &rows {
        assert_eq!(row["status"], "ok");
        assert_eq!(row["keys"], expected.len());
        assert_eq!(row["source"], format!("redis 127.0.0.1:{}", source.port()));
    }
    assert_eq!(rows[0]["mode"], "keys");
    let (_, out) = ok(&["list", &dest], &[]);
    let table = stdout(&out);
    assert!(
        table.starts_with("TIME") && table.contains("shop") && table.lines().count() == 3,
        "{table}"
    );

    let (_, out) = ok(&["verify", &first], &[]);
    assert!(
        stdout(&out).starts_with("ok redis.rdb.zst"),
        "{}",
        stdout(&out)
    );

    let target = RedisServer::start().unwrap();
    let (line, _) = ok(&["restore", &first, "--to", &target.url()], &[]);
    assert_eq!(
        line,
        format!(
            "restored {} keys, skipped 0 existing, 0 expired; function libraries: 1 restored, 0 skipped",
            expected.len()
        )
    );
    let mut restored = connect(&target.url()).await;
    assert_same(&expected, &state(&mut restored).await.0);
    // --latest picks the keys-mode backup; everything exists already and is skipped.
    let (line, _) = ok(&["restore", &dest, "--latest", "--to", &target.url()], &[]);
    assert!(
        line.starts_with(&format!(
            "restored 0 keys, skipped {} existing",
            expected.len()
        )),
        "{line}"
    );

    // The same through S3, configured by the standard AWS variables.
    let s3 = S3Server::start().unwrap();
    support::s3_client(&s3)
        .create_bucket()
        .bucket("backups")
        .send()
        .await
        .unwrap();
    let env = s3_env(&s3);
    let (location, _) = ok(
        &[
            "backup",
            &source.url(),
            "--to",
            "s3://backups/prod",
            "--name",
            "shop",
        ],
        &env,
    );
    assert!(
        location.starts_with("s3://backups/prod/shop/"),
        "{location}"
    );
    let (_, out) = ok(&["list", "s3://backups/prod", "--output", "json"], &env);
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (rows.len(), rows[0]["location"].as_str()),
        (1, Some(location.as_str()))
    );
    ok(&["verify", &location], &env);
    let target = RedisServer::start().unwrap();
    ok(&["restore", &location, "--to", &target.url()], &env);
    let mut restored = connect(&target.url()).await;
    assert_same(&expected, &state(&mut restored).await.0);
    assert_eq!(s3.open_multipart_uploads(), 0);
}

#[tokio::test]
async fn login_and_connection_failures_are_one_line_and_store_nothing() {
    let source = RedisServer::start_with_password("right").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d");
    let dest_str = dest.display().to_string();
    let password = support::distinctive_secret("redis-pw");
    let wrong = format!("redis://:{password}@127.0.0.1:{}", source.port());
    let message = support::cli::fails_hiding(
        &password,
        &["backup", &wrong, "--to", &dest_str],
        &[],
        &["refused the login", "check the user and password"],
    );
    assert!(
        !message.contains(&password),
        "the password is not echoed: {message}"
    );
    fails(
        &["backup", "redis://127.0.0.1:1", "--to", &dest_str],
        &[],
        &[
            "cannot connect to Redis at 127.0.0.1:1",
            "check the host and port",
        ],
    );
    fails(
        &["backup", "redis://127.0.0.1:6379/notadb", "--to", &dest_str],
        &[],
        &["is not a Redis URL", "not a number"],
    );
    nothing_stored(&dest);

    let s3 = S3Server::start().unwrap();
    fails(
        &["backup", &source.url(), "--to", "s3://missing-bucket/x"],
        &s3_env(&s3),
        &["bucket \"missing-bucket\" does not exist: create it"],
    );
    let mut bad_keys = s3_env(&s3);
    for (k, v) in &mut bad_keys {
        if *k == "AWS_SECRET_ACCESS_KEY" {
            *v = "not-the-secret".to_owned();
        }
    }
    fails(
        &["list", "s3://missing-bucket"],
        &bad_keys,
        &["S3 refused the credentials", "AWS_SECRET_ACCESS_KEY"],
    );
}

#[tokio::test]
async fn a_server_that_refuses_sync_says_to_use_keys_mode() {
    let source = RedisServer::start().unwrap();
    let mut con = connect(&source.url()).await;
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "limited",
                "on",
                ">limited-pw",
                "~*",
                "&*",
                "+@all",
                "-sync",
                "-psync",
            ][..],
        )
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let url = format!("redis://limited:limited-pw@127.0.0.1:{}", source.port());
    fails(
        &["backup", &url, "--to", &dest],
        &[],
        &["refused SYNC", "use --mode keys"],
    );
    nothing_stored(&dir.path().join("d"));
    // The same ACL user can take a keys-mode backup.
    let (location, _) = ok(&["backup", &url, "--to", &dest, "--mode", "keys"], &[]);
    ok(&["verify", &location], &[]);
    // An ACL user allowed to SYNC takes snapshots (AUTH user password).
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "backup", "on", ">backup-pw", "~*", "&*", "+@all"][..])
        .query_async(&mut con)
        .await
        .unwrap();
    let url = format!("redis://backup:backup-pw@127.0.0.1:{}", source.port());
    let (location, out) = ok(&["backup", &url, "--to", &dest], &[]);
    assert!(
        stderr(&out).contains("backed up 1 keys"),
        "{}",
        stderr(&out)
    );
    ok(&["verify", &location], &[]);
}

#[tokio::test]
async fn a_full_disk_fails_the_backup_and_leaves_no_file() {
    let source = RedisServer::start_with(None, &[("repl-diskless-sync-delay", "0")]).unwrap();
    let mut con = connect(&source.url()).await;
    let value = support::noise(1 << 20);
    for i in 0..4 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(&value)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    // The backup (4 MiB, uncompressed) cannot fit on 256 KiB.
    support::cli::backup_fails_on_a_full_disk(&source.url(), &["--compression", "none"]);
}

#[tokio::test]
async fn verify_and_restore_catch_a_damaged_or_incomplete_backup() {
    let source = RedisServer::start_with(None, &[("repl-diskless-sync-delay", "0")]).unwrap();
    let mut con = connect(&source.url()).await;
    populate(&mut con).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(&["backup", &source.url(), "--to", &dest], &[]);
    let object = Path::new(&location).join("redis.rdb.zst");
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&object, &bytes).unwrap();

    let out = coffer(&["verify", &location], &[]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("redis.rdb.zst is damaged: the SHA-256 is"),
        "{message}"
    );

    let target = RedisServer::start().unwrap();
    let mut dst = connect(&target.url()).await;
    let _: () = redis::cmd("SET")
        .arg("precious")
        .arg("1")
        .query_async(&mut dst)
        .await
        .unwrap();
    fails(
        &[
            "restore",
            &location,
            "--to",
            &target.url(),
            "--conflict",
            "flush",
        ],
        &[],
        &["redis.rdb.zst is damaged"],
    );
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut dst).await.unwrap();
    assert_eq!(size, 1, "the target was not touched");

    // Data without a manifest is not a backup: list says so, restore refuses.
    std::fs::remove_file(Path::new(&location).join("manifest.json")).unwrap();
    let (_, out) = ok(&["list", &dest, "--output", "json"], &[]);
    let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[0]["status"], "incomplete");
    fails(
        &["restore", &location, "--to", &target.url()],
        &[],
        &["manifest.json does not exist", "not a complete backup"],
    );
    fails(
        &["restore", &dest, "--latest", "--to", &target.url()],
        &[],
        &["holds no complete backup"],
    );
}

#[tokio::test]
async fn restore_warns_when_the_target_does_not_check_payloads() {
    let source = RedisServer::start().unwrap();
    let mut con = connect(&source.url()).await;
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut con)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(
        &["backup", &source.url(), "--to", &dest, "--mode", "keys"],
        &[],
    );

    // Redis' default, sanitize-dump-payload no: restored, with a warning naming the fix.
    let unchecked = RedisServer::start().unwrap();
    let (line, out) = ok(&["restore", &location, "--to", &unchecked.url()], &[]);
    assert!(line.starts_with("restored 1 keys"), "{line}");
    let warnings = stderr(&out);
    let warning = warnings
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning: {warnings}"));
    for fragment in [
        &format!("127.0.0.1:{}", unchecked.port()),
        "does not deep-check the payloads it restores (sanitize-dump-payload is \"no\")",
        "a tampered backup could crash it",
        "CONFIG SET sanitize-dump-payload yes",
    ] {
        assert!(warning.contains(fragment), "{fragment:?} not in {warning}");
    }

    // A target that checks them: no warning.
    for setting in ["yes", "clients"] {
        let checked = RedisServer::start_with(None, &[("sanitize-dump-payload", setting)]).unwrap();
        let (line, out) = ok(&["restore", &location, "--to", &checked.url()], &[]);
        assert!(line.starts_with("restored 1 keys"), "{line}");
        assert!(
            !stderr(&out).contains("sanitize-dump-payload"),
            "{setting}: {}",
            stderr(&out)
        );
    }
}

/// `coffer download` writes the snapshot as the `dump.rdb` a fresh `redis-server` loads, into
/// a directory or to stdout, and refuses a tampered object without leaving anything behind.
#[tokio::test]
async fn download_writes_an_rdb_that_redis_server_loads_and_refuses_a_tampered_one() {
    let source = RedisServer::start_with(None, &[("repl-diskless-sync-delay", "0")]).unwrap();
    let mut con = connect(&source.url()).await;
    populate(&mut con).await;
    let (expected, _) = state(&mut con).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(&["backup", &source.url(), "--to", &dest], &[]);

    let into = dir.path().join("download");
    let (line, out) = ok(
        &["download", &location, "--to", &into.display().to_string()],
        &[],
    );
    assert!(
        line.starts_with(&format!("{}", into.join("redis.rdb").display())),
        "{line}"
    );
    assert!(
        stderr(&out).contains("checked against the manifest"),
        "{}",
        stderr(&out)
    );
    let mut files = support::cli::walk(&into);
    files.sort();
    assert_eq!(
        files,
        [into.join("manifest.json"), into.join("redis.rdb")].map(|p| p.display().to_string())
    );
    let rdb = std::fs::read(into.join("redis.rdb")).unwrap();
    assert!(rdb.starts_with(b"REDIS"), "an RDB file starts with REDIS");

    // A fresh server loads it at start, and holds exactly what the source held.
    let loaded = RedisServer::start_with(
        None,
        &[
            ("dir", &into.display().to_string()),
            ("dbfilename", "redis.rdb"),
        ],
    )
    .unwrap();
    let mut loaded_con = connect(&loaded.url()).await;
    assert_same(&expected, &state(&mut loaded_con).await.0);

    // To stdout: the same bytes.
    let piped = support::cli::coffer(&["download", &location, "--to", "-"], &[]);
    assert!(piped.status.success(), "{piped:?}");
    assert!(piped.stdout == rdb, "stdout holds the same RDB file");
    // Where the object cannot be kept while it is checked (a temporary directory in memory),
    // nothing reaches stdout: a second read from the store is not trusted.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let refused = support::cli::coffer(
            &["download", &location, "--to", "-"],
            &[("TMPDIR", shm.display().to_string())],
        );
        assert_eq!(refused.status.code(), Some(1), "{refused:?}");
        assert!(refused.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("give --spool-dir DIR"),
            "{refused:?}"
        );
        let given = support::cli::coffer(
            &[
                "download",
                &location,
                "--to",
                "-",
                "--spool-dir",
                "/dev/shm",
            ],
            &[],
        );
        assert!(given.status.success() && given.stdout == rdb, "{given:?}");
    }

    // Never over existing files.
    fails(
        &["download", &location, "--to", &into.display().to_string()],
        &[],
        &["redis.rdb already exists", "nothing was written"],
    );

    // A tampered object: refused, into a directory (nothing left) and to stdout (nothing
    // written).
    let object = Path::new(&location).join("redis.rdb.zst");
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&object, &bytes).unwrap();
    let other = dir.path().join("tampered");
    fails(
        &["download", &location, "--to", &other.display().to_string()],
        &[],
        &[
            "redis.rdb.zst is damaged: the SHA-256 is",
            "nothing of it was kept",
        ],
    );
    nothing_stored(&other);
    let piped = support::cli::coffer(&["download", &location, "--to", "-"], &[]);
    assert_eq!(piped.status.code(), Some(1), "{piped:?}");
    assert!(piped.stdout.is_empty(), "nothing reached stdout");
    assert!(
        String::from_utf8_lossy(&piped.stderr).contains("is damaged"),
        "{piped:?}"
    );
}

/// `coffer restore --dry-run` reads the backup and the target and writes nothing; its counts
/// are what the restore then does.
#[tokio::test]
async fn a_dry_run_changes_nothing_and_counts_what_the_restore_then_does() {
    let source = RedisServer::start_with(None, &[("repl-diskless-sync-delay", "0")]).unwrap();
    let mut con = connect(&source.url()).await;
    populate(&mut con).await;
    let (backed_up, _) = state(&mut con).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(&["backup", &source.url(), "--to", &dest], &[]);

    // A target holding one of the backup's keys (with another value) and two of its own.
    let target = RedisServer::start().unwrap();
    let mut tcon = connect(&target.url()).await;
    for (key, value) in [("string", "changed"), ("mine:1", "a"), ("mine:2", "b")] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut tcon)
            .await
            .unwrap();
    }
    let (before, before_functions) = state(&mut tcon).await;

    let (_, out) = ok(
        &["restore", &location, "--to", &target.url(), "--dry-run"],
        &[],
    );
    let said = stdout(&out);
    assert!(said.starts_with("dry run: nothing was written"), "{said}");
    let (after, after_functions) = state(&mut tcon).await;
    assert_eq!(after, before, "the dry run changed the target");
    assert_eq!(after_functions, before_functions);
    let added = counted(&said, "added: ");
    let skipped = counted(&said, "skipped: ");
    assert_eq!(skipped, 1, "{said}");
    assert!(
        said.contains("skipped: 1 keys (for example \"string\")"),
        "{said}"
    );
    assert_eq!(counted(&said, "overwritten: "), 0);
    assert_eq!(added + skipped, backed_up.len() as u64, "{said}");

    // Flush: what it would delete first is the target's own keys in the restored databases.
    let (_, out) = ok(
        &[
            "restore",
            &location,
            "--to",
            &target.url(),
            "--dry-run",
            "--conflict",
            "flush",
        ],
        &[],
    );
    let flush_said = stdout(&out);
    assert_eq!(counted(&flush_said, "flushed first: "), 3, "{flush_said}");
    assert_eq!(
        counted(&flush_said, "added: "),
        backed_up.len() as u64,
        "{flush_said}"
    );
    assert_eq!(
        state(&mut tcon).await.0,
        before,
        "nor did the flush preview"
    );

    // The restore then does what the preview said.
    let (line, _) = ok(&["restore", &location, "--to", &target.url()], &[]);
    assert!(
        line.starts_with(&format!(
            "restored {added} keys, skipped {skipped} existing"
        )),
        "{line} / {said}"
    );

    // A dry run into a target of another kind is refused as the restore is.
    let out = coffer(
        &[
            "restore",
            &location,
            "--to",
            "postgres://app@127.0.0.1:1/app",
            "--dry-run",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("is a redis backup; it cannot be restored into postgres"),
        "{out:?}"
    );
}
