//! `coffer check SOURCE --to DEST`, the pre-flight check, against real Redis, PostgreSQL,
//! MariaDB and S3 servers: what works is said in one line each; what would make a backup
//! fail is a one-line failure that names the fix, with exit status 1, and no password in
//! the output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer_testenv::{MariaDbServer, PostgresServer, RedisServer, S3Server};

mod support;
use support::cli::{coffer, fails, fails_hiding, ok, stderr, stdout};

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_good_source_and_store_pass_and_nothing_is_left_in_the_store() {
    let redis = RedisServer::start_with_password("pw").unwrap();
    let s3 = S3Server::start().unwrap();
    support::s3_client(&s3)
        .create_bucket()
        .bucket("backups")
        .send()
        .await
        .unwrap();
    let (_, out) = ok(
        &["check", &redis.url(), "--to", "s3://backups/prod/"],
        &s3.env(),
    );
    let text = stdout(&out);
    assert!(text.contains("ok   source: Redis "), "{text}");
    assert!(
        text.contains(
            "ok   storage: s3://backups/prod/: wrote, read back and deleted a test object"
        ),
        "{text}"
    );
    let left = support::s3_client(&s3)
        .list_objects_v2()
        .bucket("backups")
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count(), Some(0), "the test object is gone");

    let dir = tempfile::tempdir().unwrap();
    let (_, out) = ok(
        &[
            "check",
            &dir.path().display().to_string(),
            "--to",
            &dir.path().join("store").display().to_string(),
        ],
        &[],
    );
    assert!(stdout(&out).contains("ok   source: "), "{}", stdout(&out));
}

#[tokio::test]
async fn a_wrong_password_an_unreachable_host_and_a_missing_bucket_each_fail_with_the_fix() {
    let redis = RedisServer::start_with_password("right-pw").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let wrong = format!("redis://:wrong-pw-3141@127.0.0.1:{}", redis.port());
    fails_hiding(
        "wrong-pw-3141",
        &["check", &wrong, "--to", &store],
        &[],
        &["source check failed", "password"],
    );
    let nowhere = format!("redis://127.0.0.1:{}", closed_port());
    fails(
        &["check", &nowhere, "--to", &store],
        &[],
        &[
            "source check failed",
            &format!("127.0.0.1:{}", nowhere.rsplit(':').next().unwrap()),
        ],
    );

    let s3 = S3Server::start().unwrap();
    let message = fails(
        &["check", &redis.url(), "--to", "s3://no-such-bucket/x/"],
        &s3.env(),
        &["storage check failed", "no-such-bucket"],
    );
    assert!(!message.contains(s3.secret_key()), "{message}");
    let mut env = s3.env();
    for (name, value) in &mut env {
        if *name == "AWS_SECRET_ACCESS_KEY" {
            *value = "not-the-secret-key".to_owned();
        }
    }
    support::s3_client(&s3)
        .create_bucket()
        .bucket("backups")
        .send()
        .await
        .unwrap();
    fails(
        &["check", &redis.url(), "--to", "s3://backups/"],
        &env,
        &["storage check failed"],
    );
    // Keys that may read but not write: named as such, and the bucket is left as it was.
    let (read_only, read_only_secret) = s3.read_only_keys();
    let mut env = s3.env();
    for (name, value) in &mut env {
        match *name {
            "AWS_ACCESS_KEY_ID" => *value = read_only.to_owned(),
            "AWS_SECRET_ACCESS_KEY" => *value = read_only_secret.to_owned(),
            _ => {}
        }
    }
    let message = fails(
        &["check", &redis.url(), "--to", "s3://backups/"],
        &env,
        &["storage check failed", "cannot write", "need write access"],
    );
    assert!(!message.contains(read_only_secret), "{message}");
    let listed = support::s3_client(&s3)
        .list_objects_v2()
        .bucket("backups")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0));
}

#[tokio::test]
async fn database_users_without_the_privileges_a_backup_needs_are_named_with_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();

    let pg = PostgresServer::start().unwrap();
    let admin = support::pg_data::connect(&pg, "postgres").await;
    admin
        .batch_execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'")
        .await
        .unwrap();
    let reader = format!(
        "postgres://reader:reader-pw@127.0.0.1:{}/postgres",
        pg.port()
    );
    fails_hiding(
        "reader-pw",
        &["check", &reader, "--to", &store],
        &[],
        &[
            "user reader may not read every table",
            "GRANT pg_read_all_data TO reader",
        ],
    );
    admin
        .batch_execute("GRANT pg_read_all_data TO reader")
        .await
        .unwrap();
    let (_, out) = ok(&["check", &reader, "--to", &store], &[]);
    assert!(
        stdout(&out).contains("user reader may read every table"),
        "{}",
        stdout(&out)
    );

    let my = MariaDbServer::start().unwrap();
    my.sql_over_socket(
        "CREATE USER 'dumper'@'%' IDENTIFIED BY 'dumper-pw'; GRANT SELECT, SHOW VIEW ON *.* TO 'dumper'@'%';",
    )
    .unwrap();
    let dumper = format!("mysql://dumper:dumper-pw@127.0.0.1:{}", my.port());
    fails_hiding(
        "dumper-pw",
        &["check", &dumper, "--to", &store],
        &[],
        &[
            "user dumper lacks TRIGGER, EVENT, LOCK TABLES on *.*",
            "GRANT TRIGGER, EVENT, LOCK TABLES ON *.*",
        ],
    );
    // What the check passes, a backup does: MariaDB's dump reads the binary-log position
    // from its snapshot, without RELOAD (MySQL's takes RELOAD, asked for there).
    my.sql_over_socket(
        "GRANT TRIGGER, EVENT, LOCK TABLES ON *.* TO 'dumper'@'%'; CREATE DATABASE shop; \
         CREATE TABLE shop.orders (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO shop.orders VALUES (1), (2);",
    )
    .unwrap();
    let (_, out) = ok(&["check", &dumper, "--to", &store], &[]);
    assert!(stdout(&out).contains("ok   source: "), "{}", stdout(&out));
    let dump_store = dir.path().join("dumps").display().to_string();
    let (_, out) = ok(&["backup", &dumper, "--to", &dump_store], &[]);
    assert!(
        stderr(&out).contains("backed up 1 database"),
        "{}",
        stderr(&out)
    );
    let (_, out) = ok(&["check", &my.url(None), "--to", &store], &[]);
    assert!(
        stdout(&out).contains("ok   source: MySQL/MariaDB "),
        "{}",
        stdout(&out)
    );
    let out = coffer(&["check", "ftp://example/x", "--to", &store], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown kind of source is a usage error"
    );
}
