//! `coffer drill BACKUP` from the command line: a backup restored into a scratch
//! `redis-server` or directory that the drill starts and throws away, checked against the
//! manifest and the user's checks, against real servers. The source is never touched; a
//! damaged backup, a backup whose data holds less than its manifest counted, and a failing
//! user check each fail the drill naming what differed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use coffer_testenv::{MariaDbServer, PostgresServer, RedisServer};
use serde_json::Value;

use sha2::{Digest, Sha256};

mod support;
use support::cli::{coffer, ok, stderr, stdout};
use support::mysql_data::{rows, run};
use support::pg_data::{SHOP, SHOP_ROLES, connect as pg_connect, create, fingerprint};
use support::redis_data::{connect, populate, state};

/// The folder of a backup in a directory store (its printed location).
fn folder(location: &str) -> &Path {
    Path::new(location)
}

fn manifest(location: &str) -> Value {
    serde_json::from_slice(&std::fs::read(folder(location).join("manifest.json")).unwrap()).unwrap()
}

fn write_manifest(location: &str, manifest: &Value) {
    std::fs::write(
        folder(location).join("manifest.json"),
        serde_json::to_vec_pretty(manifest).unwrap(),
    )
    .unwrap();
}

/// A drill's JSON report, and its exit code.
fn drill(args: &[&str]) -> (Value, Option<i32>, String) {
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = coffer(&all, &[]);
    let report = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
    (report, out.status.code(), stderr(&out))
}

/// Processes whose working directory is inside `dir`: a scratch server left running (each
/// changes into its directory: redis-server its `dir`, postgres and mariadbd their data).
fn running_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir)))
        .map(|e| {
            std::fs::read_to_string(e.path().join("cmdline"))
                .unwrap_or_default()
                .replace('\0', " ")
        })
        .collect()
}

/// Runs a drill in a scratch directory of its own and checks that it left nothing there:
/// no file, no process.
fn drill_leaving_nothing(args: &[&str]) -> (Value, Option<i32>, String) {
    let scratch = tempfile::tempdir().unwrap();
    let place = scratch.path().display().to_string();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--scratch-dir", &place]);
    let result = drill(&all);
    assert_eq!(
        running_in(scratch.path()),
        Vec::<String>::new(),
        "left running"
    );
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    result
}

#[test]
fn the_leftover_check_sees_a_process_working_in_the_scratch_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(scratch.path())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let found = running_in(scratch.path());
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(found, ["sleep 30 "]);
}

fn failed_checks(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| {
            format!(
                "{}: {}",
                c["name"].as_str().unwrap(),
                c["message"].as_str().unwrap()
            )
        })
        .collect()
}

/// A PostgreSQL server holding the `shop` database and its roles, and its URL (no
/// database named).
async fn shop_postgres() -> (PostgresServer, String) {
    let pg = PostgresServer::start().unwrap();
    pg_connect(&pg, "postgres")
        .await
        .batch_execute(SHOP_ROLES)
        .await
        .unwrap();
    create(&pg, "shop", SHOP).await;
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{}",
        pg.password(),
        pg.port()
    );
    (pg, url)
}

/// The source server's connections so far, read on one connection that stays open.
async fn connections_received(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.trim().strip_prefix("total_connections_received:"))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_redis_drill_verifies_a_good_backup_in_a_scratch_server_and_never_touches_the_source() {
    let source = RedisServer::start_with(Some("pw"), &[("repl-diskless-sync-delay", "0")]).unwrap();
    let mut con = connect(&source.url()).await;
    populate(&mut con).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backups").display().to_string();
    let (location, _) = ok(&["backup", &source.url(), "--to", &dest], &[]);
    let counted = manifest(&location)["stats"].clone();
    let before = state(&mut con).await;
    // Keys per type, as the source's TYPE says, recorded by both modes of backup.
    let mut types: std::collections::BTreeMap<String, u64> = Default::default();
    let mut expiring: std::collections::BTreeMap<String, u64> = Default::default();
    for key in before.0.values() {
        *types.entry(key.kind.clone()).or_default() += 1;
        if key.expire_at.is_some() {
            *expiring.entry(key.kind.clone()).or_default() += 1;
        }
    }
    assert_eq!(types.len(), 6, "every type: {types:?}");
    assert!(!expiring.is_empty());
    assert_eq!(counted["keysPerType"], serde_json::json!(types));
    assert_eq!(counted["expiringKeysPerType"], serde_json::json!(expiring));
    let keys_dir = dir.path().join("keys").display().to_string();
    let (by_keys, _) = ok(
        &["backup", &source.url(), "--to", &keys_dir, "--mode", "keys"],
        &[],
    );
    let by_keys = manifest(&by_keys)["stats"].clone();
    assert_eq!(by_keys["keysPerType"], serde_json::json!(types));
    assert_eq!(by_keys["expiringKeysPerType"], serde_json::json!(expiring));
    let before = state(&mut con).await;
    let connections = connections_received(&mut con).await;

    let (report, code, err) = drill_leaving_nothing(&[
        &location,
        "--check-redis",
        "GET string => hello",
        "--check-redis",
        "EXISTS no-such-key => 0",
    ]);
    assert_eq!(code, Some(0), "{err} {report}");
    assert_eq!(report["verdict"], "Verified", "{report}");
    assert!(report["restoreTime"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["bytes"].as_u64().unwrap() > 0, "{report}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let mut expected = vec![
        "keys without a TTL".to_owned(),
        "keys with a TTL".to_owned(),
        "keys in database 0".to_owned(),
        "keys in database 2".to_owned(),
    ];
    expected.extend(types.keys().map(|kind| format!("{kind} keys")));
    expected.extend(
        [
            "function libraries",
            "redis GET string => hello",
            "redis EXISTS no-such-key => 0",
        ]
        .map(String::from),
    );
    assert_eq!(names, expected, "{report}");
    let hashes = &report["checks"][4 + types.keys().position(|k| k == "hash").unwrap()];
    assert_eq!(
        hashes["message"],
        format!("{}, as in the backup", types["hash"]),
        "{report}"
    );
    let keys = report["checks"][0]["message"].as_str().unwrap();
    let without_ttl = counted["keys"].as_u64().unwrap() - counted["expiringKeys"].as_u64().unwrap();
    assert_eq!(
        keys,
        format!("{without_ttl}, as in the backup"),
        "the count is the manifest's"
    );
    // The source: the same keys, values and TTLs, and nobody connected to it.
    assert_eq!(connections_received(&mut con).await, connections);
    assert_eq!(state(&mut con).await.0, before.0);
    // The human report: the verdict, the restore time and every check.
    let out = coffer(&["drill", &location], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "Verified ({} checks passed, 0 failed)",
            5 + types.len()
        )),
        "{text}"
    );
    assert!(text.contains("  ok     keys without a TTL: "), "{text}");
    assert!(text.contains("restore time: "), "{text}");
}

#[tokio::test]
async fn a_redis_drill_fails_on_a_damaged_backup_on_keys_the_data_lacks_and_on_a_user_check() {
    let source = RedisServer::start_with(None, &[("repl-diskless-sync-delay", "0")]).unwrap();
    let mut con = connect(&source.url()).await;
    populate(&mut con).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backups").display().to_string();
    let (location, _) = ok(&["backup", &source.url(), "--to", &dest], &[]);

    // A user check that fails: the drill fails, naming the reply and what was expected.
    let (report, code, err) = drill(&[&location, "--check-redis", "GET string => goodbye"]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["verdict"], "VerificationFailed");
    assert_eq!(
        failed_checks(&report),
        ["redis GET string => goodbye: replied \"hello\", expected \"goodbye\""]
    );
    assert!(
        err.contains("failed its drill: redis GET string => goodbye: replied \"hello\""),
        "{err}"
    );

    // The data holds fewer keys than the manifest counted (as if keys were lost between
    // counting and writing): the restore itself succeeds, the counts catch it.
    let good = manifest(&location);
    let mut counted_more = good.clone();
    let keys = good["stats"]["keys"].as_u64().unwrap();
    counted_more["stats"]["keys"] = (keys + 1).into();
    let db2 = good["stats"]["keysPerDatabase"]["2"].as_u64().unwrap();
    counted_more["stats"]["keysPerDatabase"]["2"] = (db2 + 1).into();
    write_manifest(&location, &counted_more);
    let (report, code, _) = drill_leaving_nothing(&[&location]);
    assert_eq!(code, Some(1), "{report}");
    assert!(report["restored"].is_string(), "the restore ran: {report}");
    let without_ttl = keys - good["stats"]["expiringKeys"].as_u64().unwrap();
    assert_eq!(
        failed_checks(&report),
        [
            format!(
                "keys without a TTL: {without_ttl}, the backup {}",
                without_ttl + 1
            ),
            format!("keys in database 2: {db2}, the backup {}", db2 + 1),
        ]
    );
    // A key restored as another type (the totals hold): the type that fell short is named.
    let mut counted_hash = good.clone();
    let hashes = good["stats"]["keysPerType"]["hash"].as_u64().unwrap();
    counted_hash["stats"]["keysPerType"]["hash"] = (hashes + 1).into();
    let strings = good["stats"]["keysPerType"]["string"].as_u64().unwrap();
    counted_hash["stats"]["keysPerType"]["string"] = (strings - 1).into();
    write_manifest(&location, &counted_hash);
    let (report, code, _) = drill_leaving_nothing(&[&location]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        failed_checks(&report),
        [format!("hash keys: {hashes}, the backup {}", hashes + 1)]
    );
    write_manifest(&location, &good);

    // Bytes of the data object changed after it was stored, its hash in the manifest left
    // alone: the restore refuses it before writing, and the drill says so.
    let object = good["objects"][0]["name"].as_str().unwrap();
    let path = folder(&location).join(object);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (report, code, err) = drill_leaving_nothing(&[&location]);
    assert_eq!(code, Some(1), "{report}");
    let failed = failed_checks(&report);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("restore: ") && failed[0].contains("SHA-256"),
        "{failed:?}"
    );
    assert!(err.contains("failed its drill: restore: "), "{err}");
}

#[tokio::test]
async fn a_postgres_drill_restores_roles_and_databases_into_a_scratch_server_and_runs_queries() {
    let (source, url) = shop_postgres().await;
    let before = fingerprint(&pg_connect(&source, "shop").await).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backups").display().to_string();
    let (location, _) = ok(
        &[
            "backup",
            &url,
            "--to",
            &dest,
            "--pg-bin-dir",
            &source.bin_dir().display().to_string(),
        ],
        &[],
    );
    let good = manifest(&location);
    let tables: usize = good["stats"]["tableRows"]["shop"].as_array().unwrap().len();
    // The schemas, functions and views, listed without what the citext extension made.
    assert_eq!(
        good["stats"]["databaseObjects"]["shop"],
        serde_json::json!({
            "schemas": ["Données Clients", "public", "sales"],
            "functions": ["public.größe(x integer)", "sales.default_total()"],
            "views": ["sales.daily", "sales.order_totals"],
        })
    );

    let (report, code, err) = drill_leaving_nothing(&[
        &location,
        "--check-sql",
        "shop: SELECT count(*) > 0 FROM customers",
        "--check-sql",
        "shop: SELECT rolcanlogin FROM pg_roles WHERE rolname = 'shop_clerk'",
    ]);
    assert_eq!(code, Some(0), "{err} {report}");
    assert_eq!(report["verdict"], "Verified", "{report}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "databases",
            "tables with their rows counted",
            "rows",
            "schemas of database postgres",
            "schemas of database shop",
            "functions of database shop",
            "views of database shop",
            "sql shop: SELECT count(*) > 0 FROM customers",
            "sql shop: SELECT rolcanlogin FROM pg_roles WHERE rolname = 'shop_clerk'",
        ]
    );
    assert_eq!(
        report["checks"][1]["message"],
        format!("{tables}, as in the backup")
    );
    assert_eq!(report["checks"][5]["message"], "2, as in the backup");
    assert_eq!(
        fingerprint(&pg_connect(&source, "shop").await).await,
        before
    );

    // A function and a schema the backup listed that its dump does not hold (as if dropped
    // between listing and dumping): named.
    let mut listed_more = good.clone();
    let shop = &mut listed_more["stats"]["databaseObjects"]["shop"];
    shop["functions"]
        .as_array_mut()
        .unwrap()
        .push("sales.refund(integer)".into());
    shop["schemas"].as_array_mut().unwrap().push("audit".into());
    write_manifest(&location, &listed_more);
    let (report, code, _) = drill_leaving_nothing(&[&location]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        failed_checks(&report),
        [
            "schemas of database shop: 1 of 4 missing: audit",
            "functions of database shop: 1 of 3 missing: sales.refund(integer)",
        ]
    );
    write_manifest(&location, &good);

    // A query that is not true, and one that fails, fail the drill with what they returned.
    let (report, code, _) = drill(&[
        &location,
        "--check-sql",
        "shop: SELECT count(*) < 0 FROM customers",
        "--check-sql",
        "shop: SELECT * FROM no_such_table",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(
        failed_checks(&report),
        [
            "sql shop: SELECT count(*) < 0 FROM customers: returned f, not true",
            "sql shop: SELECT * FROM no_such_table: relation \"no_such_table\" does not exist",
        ]
    );

    // Rows the manifest counted that the dump does not hold (as if removed between counting
    // and dumping): the restore's own row count refuses it, naming the table.
    let mut counted_more = good.clone();
    let first = &mut counted_more["stats"]["tableRows"]["shop"][0];
    let table = first["table"].as_str().unwrap().to_owned();
    first["rows"] = (first["rows"].as_u64().unwrap() + 1).into();
    write_manifest(&location, &counted_more);
    let (report, code, _) = drill_leaving_nothing(&[&location]);
    assert_eq!(code, Some(1), "{report}");
    let failed = failed_checks(&report);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("restore: ") && failed[0].contains(&table),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_drill_restores_databases_and_accounts_into_a_scratch_mariadb_and_runs_queries() {
    let source = MariaDbServer::start().unwrap();
    run(
        &source,
        None,
        "CREATE DATABASE shop; USE shop;
         CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB;
         INSERT INTO items VALUES (1, 'cup'), (2, 'plate'), (3, 'bowl');
         CREATE TABLE notes (id INT PRIMARY KEY) ENGINE=InnoDB;
         CREATE VIEW cheap AS SELECT id FROM items WHERE id < 3;
         CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
         CREATE PROCEDURE tidy() DELETE FROM notes;
         CREATE TRIGGER stamp BEFORE INSERT ON notes FOR EACH ROW SET NEW.id = NEW.id;
         CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM notes;
         CREATE USER 'clerk'@'%' IDENTIFIED BY 'clerk-pw';
         GRANT SELECT ON shop.* TO 'clerk'@'%';",
    )
    .await;
    let before = rows(&source, Some("shop"), "SELECT * FROM items ORDER BY id").await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backups").display().to_string();
    let (location, _) = ok(
        &["backup", &source.url(None), "--to", &dest, "--users"],
        &[],
    );
    assert_eq!(
        manifest(&location)["stats"]["databaseObjects"]["shop"],
        serde_json::json!({
            "functions": ["tidy (procedure)", "twice (function)"],
            "views": ["cheap"],
            "triggers": ["stamp"],
            "events": ["nightly"],
        })
    );
    let (report, code, err) = drill_leaving_nothing(&[
        &location,
        "--check-sql",
        "shop: SELECT SUM(id) = 6 FROM items",
        "--check-sql",
        "mysql: SELECT COUNT(*) = 1 FROM mysql.user WHERE User = 'clerk'",
    ]);
    assert_eq!(code, Some(0), "{err} {report}");
    assert_eq!(report["verdict"], "Verified", "{report}");
    let checks: Vec<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c["name"].as_str().unwrap(),
                c["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        checks,
        [
            "databases: 1, as in the backup",
            "tables with their rows counted: 2, as in the backup",
            "rows: 3, as in the backup",
            "functions of database shop: 2, as in the backup",
            "views of database shop: 1, as in the backup",
            "triggers of database shop: 1, as in the backup",
            "events of database shop: 1, as in the backup",
            "sql shop: SELECT SUM(id) = 6 FROM items: returned 1",
            "sql mysql: SELECT COUNT(*) = 1 FROM mysql.user WHERE User = 'clerk': returned 1",
        ]
    );
    assert_eq!(
        rows(&source, Some("shop"), "SELECT * FROM items ORDER BY id").await,
        before
    );

    // A query that is not true fails the drill.
    let (report, code, _) = drill(&[
        &location,
        "--check-sql",
        "shop: SELECT COUNT(*) > 3 FROM items",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(
        failed_checks(&report),
        ["sql shop: SELECT COUNT(*) > 3 FROM items: returned 0, not true"]
    );

    // A trigger the backup listed that its dump does not hold: named.
    let good = manifest(&location);
    let mut listed_more = good.clone();
    listed_more["stats"]["databaseObjects"]["shop"]["triggers"] =
        serde_json::json!(["audit", "stamp"]);
    write_manifest(&location, &listed_more);
    let (report, code, _) = drill_leaving_nothing(&[&location]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        failed_checks(&report),
        ["triggers of database shop: 1 of 2 missing: audit"]
    );
    write_manifest(&location, &good);

    // Rows the manifest counted that the dump does not hold: the restore refuses, naming
    // the table.
    let mut counted_more = manifest(&location);
    let tables = counted_more["stats"]["tableRows"]["shop"]
        .as_array_mut()
        .unwrap();
    let items = tables.iter_mut().find(|t| t["table"] == "items").unwrap();
    items["rows"] = 4.into();
    write_manifest(&location, &counted_more);
    let (report, code, _) = drill_leaving_nothing(&[&location]);
    assert_eq!(code, Some(1), "{report}");
    let failed = failed_checks(&report);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("restore: ")
            && failed[0].contains("table items has 3 rows, the backup 4"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_directory_drill_counts_the_restored_tree_and_checks_paths() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("pg/base")).unwrap();
    std::fs::write(data.join("pg/PG_VERSION"), "15\n").unwrap();
    std::fs::write(data.join("pg/base/1"), vec![7u8; 100_000]).unwrap();
    std::fs::hard_link(data.join("pg/base/1"), data.join("pg/base/1-again")).unwrap();
    std::os::unix::fs::symlink("base/1", data.join("pg/latest")).unwrap();
    let dest = dir.path().join("backups").display().to_string();
    let (location, _) = ok(&["backup", &data.display().to_string(), "--to", &dest], &[]);

    let (report, code, err) = drill(&[
        &location,
        "--check-path",
        "pg/PG_VERSION",
        "--check-path",
        "pg/postmaster.pid",
    ]);
    assert_eq!(code, Some(1), "{err}");
    let checks: Vec<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}: {}",
                c["passed"],
                c["name"].as_str().unwrap(),
                c["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        checks,
        [
            "true files: 2, as in the backup",
            "true directories: 2, as in the backup",
            "true symbolic links: 1, as in the backup",
            "true hard links: 1, as in the backup",
            "true bytes in files: 100003, as in the backup",
            "true sampled files' contents: 2 files have the contents the backup archived",
            "true path pg/PG_VERSION: exists (a file)",
            "false path pg/postmaster.pid: does not exist in the restored tree",
        ]
    );

    // The sample's checksums are those of the files: a file the backup recorded otherwise
    // (as if changed between reading and archiving) fails the drill, naming it.
    let good = manifest(&location);
    let samples: Vec<&str> = good["stats"]["sampledFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(samples, ["pg/PG_VERSION", "pg/base/1"]);
    assert_eq!(
        good["stats"]["sampledFiles"][0]["sha256"],
        hex::encode(Sha256::digest(b"15\n"))
    );
    let mut other = good.clone();
    other["stats"]["sampledFiles"][1]["sha256"] = hex::encode(Sha256::digest(b"other")).into();
    write_manifest(&location, &other);
    let (report, code, _) = drill(&[&location]);
    assert_eq!(code, Some(1));
    assert_eq!(
        failed_checks(&report),
        ["sampled files' contents: pg/base/1 differs from the file the backup archived"]
    );

    // A file the manifest counted but the archive lacks fails the drill, naming the count.
    let mut counted_more = good;
    counted_more["stats"]["files"] = 3.into();
    write_manifest(&location, &counted_more);
    let (report, code, _) = drill(&[&location]);
    assert_eq!(code, Some(1));
    assert_eq!(failed_checks(&report), ["files: 2, the backup 3"]);
}

#[test]
fn a_check_must_fit_the_backups_kind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    let dest = dir.path().join("backups").display().to_string();
    let (location, _) = ok(&["backup", &data.display().to_string(), "--to", &dest], &[]);
    let out = coffer(&["drill", &location, "--check-redis", "GET x => 1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does not apply to a volume backup: use --check-path"),
        "{}",
        stderr(&out)
    );
}

/// `coffer drill --json` run as UID and GID 4242, which `/etc/passwd` does not list (as a
/// Pod's `runAsUser` may be), with a scratch directory of that user's; `store` (the backup's
/// directory store) is made readable by anyone.
fn drill_as_unlisted_user(store: &Path, location: &str) -> (Value, Option<i32>, String) {
    const UID: &str = "4242";
    let known = std::process::Command::new("getent")
        .args(["passwd", UID])
        .output()
        .unwrap();
    assert!(
        !known.status.success(),
        "UID {UID} must be unknown for this test"
    );
    let scratch = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(scratch.path(), Some(4242), Some(4242)).unwrap();
    // The binary, where that user may run it (the checkout may be in a private directory).
    let coffer = store.join("coffer");
    std::fs::copy(env!("CARGO_BIN_EXE_coffer"), &coffer).unwrap();
    let status = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(store)
        .status()
        .unwrap();
    assert!(status.success());
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", UID, "--regid", UID, "--clear-groups", "--"])
        .arg(&coffer)
        .args(["drill", location, "--json", "--scratch-dir"])
        .arg(scratch.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let report = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
    assert_eq!(
        running_in(scratch.path()),
        Vec::<String>::new(),
        "left running"
    );
    (report, out.status.code(), stderr(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_run_as_a_user_the_system_does_not_list() {
    if !support::needs_root("a drill as another user") {
        return;
    }
    // initdb refuses a user without a passwd entry: the drill gives it one (nss_wrapper).
    let (pg, url) = shop_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backups").display().to_string();
    let pg_bin = pg.bin_dir().display().to_string();
    let (location, _) = ok(
        &["backup", &url, "--to", &dest, "--pg-bin-dir", &pg_bin],
        &[],
    );
    let (report, code, err) = drill_as_unlisted_user(dir.path(), &location);
    assert_eq!(code, Some(0), "{err} {report}");
    assert_eq!(report["verdict"], "Verified", "{report}");

    let maria = MariaDbServer::start().unwrap();
    run(
        &maria,
        None,
        "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY) ENGINE=InnoDB;
         INSERT INTO shop.items VALUES (1), (2);",
    )
    .await;
    let dest = dir.path().join("mysql").display().to_string();
    let (location, _) = ok(&["backup", &maria.url(None), "--to", &dest], &[]);
    let (report, code, err) = drill_as_unlisted_user(dir.path(), &location);
    assert_eq!(code, Some(0), "{err} {report}");
    assert_eq!(report["verdict"], "Verified", "{report}");
}

/// Runs `coffer drill` on `location`, the S3 test server cutting off halfway the reads of
/// the backup's data object numbered `reads` from now (1: the next; a rule left unused
/// would cut a later drill's read), with `extra` arguments. Asserts that the drill could not run to its end (exit 3,
/// no verdict) and says the store failed while the object was read. Returns stderr.
fn drill_with_the_store_failing(
    s3: &coffer_testenv::S3Server,
    location: &str,
    reads: std::ops::RangeInclusive<u32>,
    extra: &[&str],
) -> String {
    let key = location.strip_prefix("s3://").unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(s3.root().join(key).join("manifest.json")).unwrap())
            .unwrap();
    // The data object (the largest: not PostgreSQL's globals, which are read apart).
    let object = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|o| o["storedBytes"].as_u64().unwrap())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = s3.reads(&object);
    for read in reads.clone() {
        s3.cut_midway(&object, before + read);
    }
    let scratch = tempfile::tempdir().unwrap();
    let place = scratch.path().display().to_string();
    let mut args = vec!["drill", location, "--json", "--scratch-dir", &place];
    args.extend_from_slice(extra);
    let out = coffer(&args, &s3.env());
    let err = stderr(&out);
    assert!(
        s3.reads(&object) >= before + reads.start(),
        "the cut read never happened: {err}"
    );
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        stdout(&out).is_empty(),
        "a report of a drill that did not run"
    );
    assert!(
        err.contains("the drill could not run: the restore into the scratch instance stopped")
            && err.contains(&format!("reading {location}{object}")),
        "{err}"
    );
    assert_eq!(
        running_in(scratch.path()),
        Vec::<String>::new(),
        "left running"
    );
    err
}

/// Bytes no compressor shrinks much (a xorshift generator's).
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A store that fails while a drill reads the backup does not make the backup look bad:
/// for every engine the drill could not run (exit 3, `Error` in a Backup's status), it is
/// not a failed verification (exit 1). Cut while the backup is spooled and checked, and,
/// with `--no-spool` (the store is read once to check, then again to restore), cut while
/// the restore reads it; a volume's archive (read once) cut in the middle of a file's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_mid_read_stops_the_drill_without_blaming_the_backup() {
    let s3 = support::resources::s3_with_bucket().await;
    let env = s3.env();

    let redis = RedisServer::start().unwrap();
    let mut con = connect(&redis.url()).await;
    populate(&mut con).await;
    let (location, _) = ok(
        &["backup", &redis.url(), "--to", "s3://backups/redis"],
        &env,
    );
    drill_with_the_store_failing(&s3, &location, 1..=1, &[]);
    drill_with_the_store_failing(&s3, &location, 2..=2, &["--no-spool"]);

    let (pg, url) = shop_postgres().await;
    let url = format!("{url}/shop");
    let bin = pg.bin_dir().display().to_string();
    let (location, _) = ok(
        &[
            "backup",
            &url,
            "--to",
            "s3://backups/pg",
            "--pg-bin-dir",
            &bin,
        ],
        &env,
    );
    drill_with_the_store_failing(&s3, &location, 1..=1, &[]);
    drill_with_the_store_failing(&s3, &location, 2..=2, &["--no-spool"]);

    let maria = MariaDbServer::start().unwrap();
    run(
        &maria,
        None,
        "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, note MEDIUMTEXT); INSERT INTO shop.items VALUES (1, REPEAT('a', 100000)), (2, REPEAT('b', 100000));",
    )
    .await;
    let (location, _) = ok(
        &["backup", &maria.url(None), "--to", "s3://backups/maria"],
        &env,
    );
    drill_with_the_store_failing(&s3, &location, 1..=1, &[]);
    drill_with_the_store_failing(&s3, &location, 2..=2, &["--no-spool"]);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("big"), noise(4 << 20)).unwrap();
    let (location, _) = ok(
        &[
            "backup",
            &data.display().to_string(),
            "--to",
            "s3://backups/files",
        ],
        &env,
    );
    drill_with_the_store_failing(&s3, &location, 1..=1, &[]);
}

/// A scratch disk without room for the backup's data stops the drill with an error that says
/// so (exit 3), not a failed verification: the backup is not to blame.
#[test]
fn a_scratch_disk_without_room_stops_the_drill_without_blaming_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // More than the 256 KiB scratch disk holds.
    std::fs::write(data.join("big"), vec![b'x'; 1 << 20]).unwrap();
    let dest = dir.path().join("backups").display().to_string();
    let (location, _) = ok(&["backup", &data.display().to_string(), "--to", &dest], &[]);
    let out =
        support::cli::on_a_full_disk(&["drill", &location, "--json", "--scratch-dir", "{disk}"]);
    let err = stderr(&out);
    assert!(err.contains("exit=3"), "{err}");
    assert!(
        err.contains("the drill could not run: the restore into the scratch instance stopped")
            && err.contains("no space left on the device"),
        "{err}"
    );
    assert!(
        stdout(&out).is_empty(),
        "a report of a drill that did not run"
    );
    let left: Vec<&str> = err.lines().filter(|l| l.starts_with("left: ")).collect();
    assert!(left.is_empty(), "files left on the scratch disk: {left:?}");
}
