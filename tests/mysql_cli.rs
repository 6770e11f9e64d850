//! The MySQL/MariaDB engine from the command line, against real MariaDB servers (Debian's
//! `mariadb-server`) and a real S3 server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer_testenv::{MariaDbServer, S3Server};
use serde_json::Value;

mod support;
use support::cli::{fails, ok};
use support::mysql_data::{rows, run, value};

async fn bucket(s3: &S3Server, name: &str) {
    support::s3_client(s3)
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .unwrap();
}

/// A Laravel-like shop and a second database, with every kind of object and column type a
/// dump must carry.
const SHOP: &str = "
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE shop;
CREATE TABLE customers (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  note TEXT,
  balance DECIMAL(12,4) NOT NULL DEFAULT 0,
  seen DATETIME(6),
  prefs JSON,
  avatar BLOB,
  place POINT,
  upper_name VARCHAR(100) AS (UPPER(name)) VIRTUAL,
  name_len INT AS (CHAR_LENGTH(name)) STORED
) ENGINE=InnoDB;
CREATE TABLE orders (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  customer_id BIGINT UNSIGNED NOT NULL,
  total DECIMAL(10,2) NOT NULL,
  CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE CASCADE
) ENGINE=InnoDB;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(200)) ENGINE=InnoDB;
INSERT INTO customers (name, note, balance, seen, prefs, avatar, place) VALUES
  ('Zoë 🐘', 'it''s \"quoted\";\\nnot a newline', 1234.5678, '2026-11-30 12:34:56.123456',
   '{\"theme\": \"dark\", \"tags\": [1, 2]}', X'00FF00FE0A0D27225C', ST_GeomFromText('POINT(1.5 -2.25)')),
  ('Ann', NULL, -0.0001, NULL, NULL, NULL, NULL),
  ('INSERT INTO `customers` VALUES (1);', 'line one\nline two', 0, '1999-12-31 23:59:59.999999',
   '[]', X'', ST_GeomFromText('POINT(0 0)'));
INSERT INTO orders (customer_id, total) VALUES (1, 10.50), (1, 20.25), (2, 3.00);
DELETE FROM orders WHERE id = 3;
ALTER TABLE orders AUTO_INCREMENT = 1000;
CREATE VIEW big_orders AS SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.total > 15;
CREATE FUNCTION tax(amount DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN amount * 0.2;
CREATE PROCEDURE add_order(IN who BIGINT UNSIGNED, IN amount DECIMAL(10,2))
BEGIN
-- it's a comment with a quote
INSERT INTO orders (customer_id, total) VALUES (who, amount);
END;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
  INSERT INTO audit (what) VALUES (CONCAT('order ', NEW.id));
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 02:00:00' DISABLE DO DELETE FROM audit;
CALL add_order(2, 99.99);
CREATE DATABASE `blog-2`;
USE `blog-2`;
CREATE TABLE posts (id INT PRIMARY KEY, title VARCHAR(50)) ENGINE=InnoDB;
INSERT INTO posts VALUES (1, 'hello'), (2, 'world');
CREATE TABLE counters (name VARCHAR(20) PRIMARY KEY, n INT) ENGINE=MyISAM;
INSERT INTO counters VALUES ('visits', 3);
CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret';
GRANT SELECT, INSERT, UPDATE, DELETE ON shop.* TO 'app'@'%';
GRANT SELECT ON `blog-2`.posts TO 'app'@'%';
";

/// Everything about a database that a restore must give back: each table's definition, its
/// rows in order, AUTO_INCREMENT positions, views, routines, triggers and events.
async fn describe(server: &MariaDbServer, database: &str) -> Vec<String> {
    let db = Some(database);
    let mut out = Vec::new();
    let tables = rows(
        server,
        db,
        &format!("SELECT TABLE_NAME, TABLE_TYPE, ENGINE, AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{database}' ORDER BY TABLE_NAME"),
    )
    .await;
    for table in &tables {
        out.push(format!("table {table:?}"));
        let name = &table[0];
        if table[1] == "VIEW" {
            let create = rows(server, db, &format!("SHOW CREATE VIEW `{name}`")).await;
            out.push(create[0][1].clone());
            continue;
        }
        let create = rows(server, db, &format!("SHOW CREATE TABLE `{name}`")).await;
        out.push(create[0][1].clone());
        let data = rows(server, db, &format!("SELECT * FROM `{name}` ORDER BY 1")).await;
        out.push(format!("{data:?}"));
    }
    for sql in [
        format!(
            "SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION, DEFINER FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{database}' ORDER BY 1"
        ),
        format!(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT, DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{database}' ORDER BY 1"
        ),
        format!(
            "SELECT EVENT_NAME, EVENT_DEFINITION, STATUS, INTERVAL_VALUE, STARTS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{database}' ORDER BY 1"
        ),
        format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{database}'"
        ),
    ] {
        out.push(format!("{:?}", rows(server, db, &sql).await));
    }
    out
}

fn manifest_of(s3: &S3Server, location: &str) -> Value {
    let folder = s3.root().join(location.strip_prefix("s3://").unwrap());
    serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_and_row_comes_back_with_the_accounts() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let source = MariaDbServer::start().unwrap();
    run(&source, None, SHOP).await;
    let (location, out) = ok(
        &[
            "backup",
            &source.url(None),
            "--to",
            "s3://backups/db",
            "--users",
        ],
        &env,
    );
    let said = support::cli::stderr(&out);
    assert!(said.contains("blog-2.counters (MyISAM)"), "{said}");
    let manifest = manifest_of(&s3, &location);
    assert_eq!(manifest["source"]["kind"], "mysql");
    assert!(
        manifest["source"]["position"]
            .as_str()
            .unwrap()
            .contains("gtid_slave_pos"),
        "{manifest}"
    );
    let rows_of = |db: &str| -> Vec<(String, u64)> {
        manifest["stats"]["tableRows"][db]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["table"].as_str().unwrap().to_owned(),
                    t["rows"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        rows_of("shop"),
        [
            ("audit".to_owned(), 1),
            ("customers".to_owned(), 3),
            ("orders".to_owned(), 3)
        ]
    );
    assert_eq!(
        rows_of("blog-2"),
        [("counters".to_owned(), 1), ("posts".to_owned(), 2)]
    );

    // `list` and `verify` show it like the others.
    let (_, listed) = ok(&["list", "s3://backups/db"], &env);
    let listed = support::cli::stdout(&listed);
    assert!(
        listed.contains(&format!("mysql 127.0.0.1:{}", source.port())),
        "{listed}"
    );
    ok(&["verify", &location], &env);

    let target = MariaDbServer::start().unwrap();
    // The dry run says what the restore will do, and does none of it.
    let databases = rows(&target, None, "SHOW DATABASES").await;
    let accounts = rows(
        &target,
        None,
        "SELECT user, host FROM mysql.user ORDER BY 1, 2",
    )
    .await;
    let (_, out) = ok(
        &[
            "restore",
            &location,
            "--to",
            &target.url(None),
            "--create",
            "--users",
            "--dry-run",
        ],
        &env,
    );
    let said = support::cli::stdout(&out);
    for line in [
        "database \"shop\": created\n  audit: no such table now, 1 rows after\n  customers: no such table now, 3 rows after\n  orders: no such table now, 3 rows after\n",
        "database \"blog-2\": created\n  counters: no such table now, 1 rows after\n  posts: no such table now, 2 rows after\n",
        "\naccounts: 1 created (app@%), 0 existing get the backup's grants added, ",
    ] {
        assert!(said.contains(line), "{line:?} not in {said}");
    }
    assert_eq!(rows(&target, None, "SHOW DATABASES").await, databases);
    assert_eq!(
        rows(
            &target,
            None,
            "SELECT user, host FROM mysql.user ORDER BY 1, 2"
        )
        .await,
        accounts
    );
    let (line, _) = ok(
        &[
            "restore",
            &location,
            "--to",
            &target.url(None),
            "--create",
            "--users",
        ],
        &env,
    );
    assert!(
        line.contains(
            "restored 2 database(s) (2 created) and the accounts; verified 5 tables, 10 rows"
        ),
        "{line}"
    );
    for db in ["shop", "blog-2"] {
        let (before, after) = (describe(&source, db).await, describe(&target, db).await);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b, a, "{db}");
        }
        assert_eq!(before.len(), after.len(), "{db}");
    }
    let grants = "SHOW GRANTS FOR 'app'@'%'";
    assert_eq!(
        rows(&source, None, grants).await,
        rows(&target, None, grants).await
    );
    // The account logs in with its password on the target (and may not back up the view).
    let url = format!("mysql://app:app-secret@127.0.0.1:{}/shop", target.port());
    fails(
        &["backup", &url, "--to", "s3://backups/app"],
        &env,
        &[
            "user \"app\" at 127.0.0.1:",
            "lacks the SHOW VIEW privilege",
            "GRANT SHOW VIEW ON *.*",
        ],
    );
    // The procedure and its trigger work on the restored database.
    run(&target, Some("shop"), "CALL add_order(1, 5.00)").await;
    assert_eq!(
        value(&target, Some("shop"), "SELECT COUNT(*) FROM audit").await,
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_database_and_unreachable_host_are_one_line() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let source = MariaDbServer::start().unwrap();
    let secret = support::distinctive_secret("pw");
    let url = format!("mysql://root:{secret}@127.0.0.1:{}", source.port());
    let message = fails(
        &["backup", &url, "--to", "s3://backups/x"],
        &env,
        &["refused user \"root\"", "MYSQL_PWD"],
    );
    assert!(!message.contains(&secret), "{message}");
    fails(
        &[
            "backup",
            &source.url(Some("nope")),
            "--to",
            "s3://backups/x",
        ],
        &env,
        &["database \"nope\" does not exist", "(it has: )"],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fails(
        &[
            "backup",
            &format!("mysql://root@127.0.0.1:{port}"),
            "--to",
            "s3://backups/x",
        ],
        &env,
        &[
            "cannot connect to MySQL at 127.0.0.1:",
            "check the host and port",
        ],
    );
    let listing = s3.root().join("backups");
    assert_eq!(
        std::fs::read_dir(listing).unwrap().count(),
        0,
        "nothing stored"
    );
}

/// Fills `database.padding` with `rows` rows of ~200 bytes, so that a dump takes a while.
async fn pad(server: &MariaDbServer, database: &str, rows: u32) {
    run(
        server,
        Some(database),
        &format!(
            "CREATE TABLE padding (id INT PRIMARY KEY, body VARCHAR(255)) ENGINE=InnoDB;
             INSERT INTO padding SELECT seq, REPEAT('abcdefghij', 20) FROM seq_1_to_{rows};"
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restore_is_one_point_in_time_while_writes_go_on() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let source = MariaDbServer::start().unwrap();
    run(
        &source,
        None,
        "CREATE DATABASE bank; USE bank;
         CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB;
         INSERT INTO accounts SELECT seq, 1000 FROM seq_1_to_100;
         CREATE TABLE transfers (id INT AUTO_INCREMENT PRIMARY KEY, amount INT) ENGINE=InnoDB;",
    )
    .await;
    pad(&source, "bank", 150_000).await;
    // Transfers between accounts (the sum never changes), each logged, in one transaction.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut conn = support::mysql_data::connect(&source, Some("bank")).await;
        tokio::spawn(async move {
            use mysql_async::prelude::Queryable;
            let mut done = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (a, b) = (done % 100 + 1, (done * 7 + 3) % 100 + 1);
                conn.query_drop(format!(
                    "START TRANSACTION;
                     UPDATE accounts SET balance = balance - 5 WHERE id = {a};
                     UPDATE accounts SET balance = balance + 5 WHERE id = {b};
                     INSERT INTO transfers (amount) VALUES (5);
                     COMMIT;"
                ))
                .await
                .unwrap();
                done += 1;
            }
            done
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before: u64 = value(&source, Some("bank"), "SELECT COUNT(*) FROM transfers")
        .await
        .parse()
        .unwrap();
    let (location, _) = ok(
        &[
            "backup",
            &source.url(Some("bank")),
            "--to",
            "s3://backups/bank",
        ],
        &env,
    );
    let after: u64 = value(&source, Some("bank"), "SELECT COUNT(*) FROM transfers")
        .await
        .parse()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert!(after > before, "writes went on during the backup");

    let target = MariaDbServer::start().unwrap();
    ok(
        &["restore", &location, "--to", &target.url(None), "--create"],
        &env,
    );
    assert_eq!(
        value(&target, Some("bank"), "SELECT SUM(balance) FROM accounts").await,
        "100000",
        "one point in time: every transfer whole or absent"
    );
    let restored: u64 = value(&target, Some("bank"), "SELECT COUNT(*) FROM transfers")
        .await
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&restored),
        "{before} <= {restored} <= {after}"
    );
    // The balances match the transfers logged at that point: replaying the first
    // `restored` transfers on fresh accounts gives the restored balances.
    let mut balances = vec![1000i64; 101];
    for done in 0..restored {
        let (a, b) = (
            (done % 100 + 1) as usize,
            ((done * 7 + 3) % 100 + 1) as usize,
        );
        balances[a] -= 5;
        balances[b] += 5;
    }
    let restored_balances = rows(
        &target,
        Some("bank"),
        "SELECT id, balance FROM accounts ORDER BY id",
    )
    .await;
    for row in restored_balances {
        let id: usize = row[0].parse().unwrap();
        assert_eq!(row[1], balances[id].to_string(), "account {id}");
    }
}

/// The shop and blog databases of [`SHOP`], and the account `app`.
async fn shop_and_blog(server: &MariaDbServer) {
    run(server, None, SHOP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_create_rename_and_one_database_of_several() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let server = MariaDbServer::start().unwrap();
    shop_and_blog(&server).await;
    let (location, _) = ok(
        &["backup", &server.url(None), "--to", "s3://backups/all"],
        &env,
    );
    let url = server.url(None);

    // A database that does not exist is refused without --create, before anything is
    // written.
    fails(
        &[
            "restore",
            &location,
            "--to",
            &url,
            "--databases",
            "shop",
            "--rename",
            "shop=shop_copy",
        ],
        &env,
        &["database \"shop_copy\" does not exist", "add --create"],
    );
    assert!(
        !rows(&server, None, "SHOW DATABASES")
            .await
            .iter()
            .any(|r| r[0] == "shop_copy")
    );

    // One database of two, under another name, created.
    let (line, _) = ok(
        &[
            "restore",
            &location,
            "--to",
            &url,
            "--databases",
            "shop",
            "--rename",
            "shop=shop_copy",
            "--create",
        ],
        &env,
    );
    assert!(
        line.contains("restored 1 database(s) (1 created); verified 3 tables, 7 rows"),
        "{line}"
    );
    let (original, copy) = (
        describe(&server, "shop").await,
        describe(&server, "shop_copy").await,
    );
    assert_eq!(original.len(), copy.len());
    for (o, c) in original.iter().zip(&copy) {
        // Routines' and views' definitions name no database; the character set is kept.
        assert_eq!(o, c);
    }
    assert_eq!(
        value(&server, Some("shop_copy"), "SELECT tax(10)").await,
        "2.00"
    );

    // Without --clean, what the backup does not hold stays; tables it holds are replaced.
    // The dry runs (without and with --clean) say so, and write nothing.
    run(
        &server,
        Some("shop_copy"),
        "CREATE TABLE extra (id INT); DELETE FROM orders;",
    )
    .await;
    let before = describe(&server, "shop_copy").await;
    let preview = |clean: bool| {
        let mut args = vec![
            "restore".to_owned(),
            location.clone(),
            "--to".to_owned(),
            format!("{url}/shop_copy"),
            "--databases".to_owned(),
            "shop".to_owned(),
            "--dry-run".to_owned(),
        ];
        if clean {
            args.push("--clean".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, out) = ok(&args, &env);
        let said = support::cli::stdout(&out);
        assert!(!said.contains(server.password()), "{said}");
        said.lines().skip(1).map(str::to_owned).collect::<Vec<_>>()
    };
    let tables = [
        "  audit: 1 rows now, 1 rows after",
        "  customers: 3 rows now, 3 rows after",
        "  orders: 0 rows now, 3 rows after",
    ];
    assert_eq!(
        preview(false),
        [
            &["database \"shop_copy\" (from \"shop\"): exists: the backup's tables are replaced"][..],
            &tables,
            &["  left alone (not in the backup): extra"],
        ]
        .concat()
    );
    assert_eq!(
        preview(true),
        [
            &["database \"shop_copy\" (from \"shop\"): exists: dropped and created again (clean)"]
                [..],
            &tables,
            &["  dropped with the database (not in the backup): extra"],
        ]
        .concat()
    );
    assert_eq!(
        describe(&server, "shop_copy").await,
        before,
        "the dry run wrote"
    );
    ok(
        &[
            "restore",
            &location,
            "--to",
            &format!("{url}/shop_copy"),
            "--databases",
            "shop",
        ],
        &env,
    );
    let tables = rows(&server, Some("shop_copy"), "SHOW FULL TABLES").await;
    assert!(tables.iter().any(|t| t[0] == "extra"), "{tables:?}");
    assert_eq!(
        value(&server, Some("shop_copy"), "SELECT COUNT(*) FROM orders").await,
        "3"
    );
    // With --clean the database is dropped and created again first.
    ok(
        &[
            "restore",
            &location,
            "--to",
            &format!("{url}/shop_copy"),
            "--databases",
            "shop",
            "--clean",
        ],
        &env,
    );
    let tables = rows(&server, Some("shop_copy"), "SHOW FULL TABLES").await;
    assert!(!tables.iter().any(|t| t[0] == "extra"), "{tables:?}");
    assert_eq!(describe(&server, "shop_copy").await, copy);

    // Mistakes in the request are one line and touch nothing.
    fails(
        &[
            "restore",
            &location,
            "--to",
            &format!("{url}/x"),
            "--create",
        ],
        &env,
        &["the target URL names a database, but the restore holds 2 (blog-2, shop)"],
    );
    fails(
        &[
            "restore",
            &location,
            "--to",
            &url,
            "--rename",
            "shop=blog-2",
            "--create",
        ],
        &env,
        &["two databases of the backup would be restored into \"blog-2\""],
    );
    fails(
        &["restore", &location, "--to", &url, "--databases", "nope"],
        &env,
        &["the backup holds no database \"nope\" (it holds: blog-2, shop)"],
    );
    fails(
        &["restore", &location, "--to", &url, "--users"],
        &env,
        &["the backup holds no accounts", "restore without --users"],
    );
    let out = support::cli::coffer(
        &["restore", &location, "--to", &url, "--rename", "shop"],
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(support::cli::stderr(&out).contains("--rename \"shop\" is not OLD=NEW"));
}

/// Rewrites an uncompressed backup's object as `edit` says and its manifest entry to match,
/// through the S3 API, as someone with write access to the bucket could.
/// A database whose routines, trigger and event were made while its character set was
/// another (the dump switches the database's character set around each of them, naming it).
const LEGACY: &str = "
CREATE DATABASE legacy CHARACTER SET latin1;
USE legacy;
CREATE TABLE t (a INT) ENGINE=InnoDB;
INSERT INTO t VALUES (1), (2);
CREATE PROCEDURE p() SELECT COUNT(*) FROM t;
CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = NEW.a + 1;
CREATE EVENT ev ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 02:00:00' DISABLE DO DELETE FROM t;
ALTER DATABASE legacy CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE USER 'clerk'@'%' IDENTIFIED BY 'clerk-secret';
GRANT SELECT, INSERT ON legacy.* TO 'clerk'@'%';
GRANT EXECUTE ON PROCEDURE legacy.p TO 'clerk'@'%';
";

/// The collation each routine, trigger and event of `database` was made under.
async fn made_under(server: &MariaDbServer, database: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (table, name, schema) in [
        ("ROUTINES", "ROUTINE_NAME", "ROUTINE_SCHEMA"),
        ("TRIGGERS", "TRIGGER_NAME", "TRIGGER_SCHEMA"),
        ("EVENTS", "EVENT_NAME", "EVENT_SCHEMA"),
    ] {
        out.extend(
            rows(
                server,
                None,
                &format!(
                    "SELECT {name}, DATABASE_COLLATION FROM information_schema.{table} WHERE {schema} = '{database}' ORDER BY 1"
                ),
            )
            .await,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_database_keeps_its_routines_collation_and_never_touches_the_original_name() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let server = MariaDbServer::start().unwrap();
    run(&server, None, LEGACY).await;
    let (location, _) = ok(
        &[
            "backup",
            &server.url(Some("legacy")),
            "--to",
            "s3://backups/legacy",
            "--users",
        ],
        &env,
    );
    let original = (
        describe(&server, "legacy").await,
        made_under(&server, "legacy").await,
    );
    assert_eq!(original.1.len(), 3, "{:?}", original.1);
    assert!(
        original.1.iter().all(|r| r[1] == "latin1_swedish_ci"),
        "{:?}",
        original.1
    );

    // Restored under another name on a server where the original name is not there (a
    // staging server, or after the original was dropped): the dump's lines naming `legacy`
    // must not be sent as they are.
    // The account goes too: restored with the database, its grants name the copy.
    run(&server, None, "DROP DATABASE legacy; DROP USER 'clerk'@'%'").await;
    let (line, _) = ok(
        &[
            "restore",
            &location,
            "--to",
            &server.url(None),
            "--rename",
            "legacy=legacy_copy",
            "--create",
            "--users",
        ],
        &env,
    );
    assert!(line.contains("verified 1 tables, 2 rows"), "{line}");
    assert_eq!(
        (
            describe(&server, "legacy_copy").await,
            made_under(&server, "legacy_copy").await
        ),
        original
    );
    let databases = rows(&server, None, "SHOW DATABASES").await;
    assert!(!databases.iter().any(|r| r[0] == "legacy"), "{databases:?}");
    let grants: Vec<String> = rows(&server, None, "SHOW GRANTS FOR 'clerk'@'%'")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert!(
        grants
            .iter()
            .any(|g| g.starts_with("GRANT SELECT, INSERT ON `legacy\\_copy`.* TO")),
        "{grants:?}"
    );
    assert!(
        grants
            .iter()
            .any(|g| g.starts_with("GRANT EXECUTE ON PROCEDURE `legacy_copy`.`p` TO")),
        "{grants:?}"
    );
    assert!(!grants.iter().any(|g| g.contains("`legacy`")), "{grants:?}");
}

async fn rewrite(s3: &S3Server, location: &str, object: &str, edit: impl Fn(&str) -> String) {
    use sha2::Digest;
    let client = support::s3_client(s3);
    let (bucket, prefix) = location
        .strip_prefix("s3://")
        .unwrap()
        .split_once('/')
        .unwrap();
    let folder = s3.root().join(location.strip_prefix("s3://").unwrap());
    let text = std::fs::read_to_string(folder.join(object)).unwrap();
    let changed = edit(&text);
    assert_ne!(text, changed, "the edit changed nothing");
    let sha = hex::encode(sha2::Sha256::digest(changed.as_bytes()));
    let mut manifest = manifest_of(s3, location);
    for o in manifest["objects"].as_array_mut().unwrap() {
        if o["name"] == object {
            o["rawBytes"] = changed.len().into();
            o["storedBytes"] = changed.len().into();
            o["rawSha256"] = sha.clone().into();
            o["sha256"] = sha.clone().into();
        }
    }
    for (name, body) in [
        (object.to_owned(), changed.into_bytes()),
        (
            "manifest.json".to_owned(),
            manifest.to_string().into_bytes(),
        ),
    ] {
        client
            .put_object()
            .bucket(bucket)
            .key(format!("{prefix}{name}"))
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_do_not_match_the_manifest_fail_the_restore_naming_the_table() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let server = MariaDbServer::start().unwrap();
    shop_and_blog(&server).await;
    let (location, _) = ok(
        &[
            "backup",
            &server.url(Some("blog-2")),
            "--to",
            "s3://backups/b",
            "--compression",
            "none",
        ],
        &env,
    );
    // A row taken out of the dump, the checksums made to match: only the count can tell.
    rewrite(&s3, &location, "mysql/blog-2.sql", |dump| {
        dump.replace("(1,'hello'),", "")
    })
    .await;
    let target = MariaDbServer::start().unwrap();
    fails(
        &["restore", &location, "--to", &target.url(None), "--create"],
        &env,
        &["database \"blog-2\" does not match the backup: table posts has 1 rows, the backup 2"],
    );
}

/// A directory whose `mariadb-dump` and `mariadb` are the shell `script` (for `--mysql-bin-dir`).
fn stand_in_tools(script: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for program in ["mariadb-dump", "mariadb"] {
        let path = dir.path().join(program);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// The command lines of every process whose program name is `name`.
fn command_lines(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| {
            c.split(' ')
                .next()
                .is_some_and(|p| p.rsplit('/').next() == Some(name))
        })
        .collect()
}

/// Every file under `dir`.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_dump_leaves_no_backup_and_no_password_is_shown() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let mut server = MariaDbServer::start().unwrap();
    run(&server, None, "CREATE DATABASE huge").await;
    pad(&server, "huge", 600_000).await;
    let backup = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["backup", &server.url(None), "--to", "s3://backups/huge"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let dumping = loop {
        let lines: Vec<String> = command_lines("mariadb-dump")
            .into_iter()
            .filter(|l| l.trim_end().ends_with(" huge"))
            .collect();
        if !lines.is_empty() || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!dumping.is_empty(), "mariadb-dump never ran");
    for line in &dumping {
        assert!(!line.contains(server.password()), "{line}");
        assert!(line.contains("--defaults-file="), "{line}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.kill();
    let out = backup.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let message = support::cli::stderr(&out);
    assert!(
        message.contains("closed the connection while running mariadb-dump of database \"huge\""),
        "{message}"
    );
    assert!(!message.contains(server.password()), "{message}");
    assert_eq!(
        files(&s3.root().join("backups")),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_restore_is_one_line() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let source = MariaDbServer::start().unwrap();
    run(&source, None, "CREATE DATABASE big").await;
    pad(&source, "big", 100_000).await;
    let (location, _) = ok(
        &["backup", &source.url(None), "--to", "s3://backups/big"],
        &env,
    );
    // InnoDB's only data file cannot grow past 12 MiB: the target's disk is full.
    let target = MariaDbServer::start_with(&[
        "--innodb-data-file-path=ibdata1:12M",
        "--innodb-file-per-table=0",
    ])
    .unwrap();
    fails(
        &["restore", &location, "--to", &target.url(None), "--create"],
        &env,
        &[
            "mariadb loading database \"big\" into \"big\"",
            "ERROR 1114",
            "is full",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_mysql_pwd_or_the_option_file_and_old_clients_are_refused() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let mut env = s3.env();
    let server = MariaDbServer::start().unwrap();
    run(&server, None, "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1)").await;
    let url = format!("mysql://root@127.0.0.1:{}/app", server.port());
    env.push(("MYSQL_PWD", server.password().to_owned()));
    let (line, _) = ok(&["backup", &url, "--to", "s3://backups/pwd"], &env);
    assert!(line.starts_with("s3://backups/pwd/"), "{line}");
    env.pop();
    let home = tempfile::tempdir().unwrap();
    // The login comes from ~/.my.cnf; its other settings (a port, dump options that would
    // leave the rows out) never reach the programs.
    std::fs::write(
        home.path().join(".my.cnf"),
        format!(
            "[client]\nuser=root\npassword=\"{}\"\nport=1\n[mysqldump]\nno-data\n[mariadb-dump]\nwhere=1=0\n",
            server.password()
        ),
    )
    .unwrap();
    env.push(("HOME", home.path().display().to_string()));
    let url = format!("mysql://127.0.0.1:{}/app", server.port());
    let (location, _) = ok(&["backup", &url, "--to", "s3://backups/cnf"], &env);
    let manifest = manifest_of(&s3, &location);
    assert_eq!(
        manifest["stats"]["tableRows"]["app"][0]["rows"], 1,
        "{manifest}"
    );
    // A dump program older than the server is refused, naming both.
    let old = stand_in_tools(
        "#!/bin/sh\necho 'mariadb-dump  Ver 10.19 Distrib 5.5.68-MariaDB, for Linux (x86_64)'\n",
    );
    fails(
        &[
            "backup",
            &url,
            "--to",
            "s3://backups/old",
            "--mysql-bin-dir",
            &old.path().display().to_string(),
        ],
        &env,
        &[
            "mariadb-dump 5.5.68 is older than the server (MariaDB 10.11",
            "install a MariaDB client of version 10.11 or newer",
        ],
    );
    // A dump program that stops early but says it succeeded: the missing trailer fails the
    // backup and nothing is stored.
    let short = stand_in_tools(
            "#!/bin/sh
if [ \"$1\" = --version ]; then echo 'mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for Linux'; exit 0; fi
\
             /usr/bin/mariadb-dump \"$@\" | head -c 300
",
    );
    fails(
        &[
            "backup",
            &url,
            "--to",
            "s3://backups/short",
            "--mysql-bin-dir",
            &short.path().display().to_string(),
        ],
        &env,
        &[
            "the dump of database \"app\" at 127.0.0.1:",
            "ended without its completion trailer",
            "nothing was stored",
        ],
    );
    assert_eq!(
        files(&s3.root().join("backups/short")),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_only_the_documented_privileges_backs_up() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let server = MariaDbServer::start().unwrap();
    shop_and_blog(&server).await;
    run(
        &server,
        None,
        "CREATE USER 'backup'@'%' IDENTIFIED BY 'backup-pw';
         GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.* TO 'backup'@'%';",
    )
    .await;
    let url = format!("mysql://backup:backup-pw@127.0.0.1:{}", server.port());
    let (location, _) = ok(
        &["backup", &url, "--to", "s3://backups/least", "--users"],
        &env,
    );
    let manifest = manifest_of(&s3, &location);
    assert_eq!(manifest["stats"]["databases"], 2, "{manifest}");
    assert!(
        manifest["source"]["position"]
            .as_str()
            .unwrap()
            .contains("shop: "),
        "each database's own position: {manifest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_changed_to_run_a_shell_is_refused_at_that_line() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let env = s3.env();
    let server = MariaDbServer::start().unwrap();
    shop_and_blog(&server).await;
    let (location, _) = ok(
        &[
            "backup",
            &server.url(Some("blog-2")),
            "--to",
            "s3://backups/b",
            "--compression",
            "none",
        ],
        &env,
    );
    let work = tempfile::tempdir().unwrap();
    let planted = work.path().join("planted");
    // Someone with write access to the bucket adds client commands (and fixes the
    // checksums): the client, in binary mode (which turns client commands off) and in its
    // sandbox, stops at the first one. Without both it runs the shell.
    rewrite(&s3, &location, "mysql/blog-2.sql", |dump| {
        let at = dump.find("DROP TABLE IF EXISTS").unwrap();
        format!(
            "{}\\! touch {}\n{}",
            dump[..at].replace("/*M!999999\\- enable the sandbox mode */", ""),
            planted.display(),
            &dump[at..]
        )
    })
    .await;
    let target = MariaDbServer::start().unwrap();
    fails(
        &["restore", &location, "--to", &target.url(None), "--create"],
        &env,
        &[
            "mariadb loading database \"blog-2\"",
            "Unknown command '\\!'",
        ],
    );
    assert!(!planted.exists(), "the shell command ran");
}

/// `coffer download` writes the SQL dump that the server's own client loads, without Coffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_writes_a_dump_the_mariadb_client_loads() {
    let source = MariaDbServer::start().unwrap();
    run(&source, None, SHOP).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d").display().to_string();
    let (location, _) = ok(
        &[
            "backup",
            &source.url(None),
            "--to",
            &dest,
            "--databases",
            "shop",
        ],
        &[],
    );
    let into = dir.path().join("download");
    ok(
        &["download", &location, "--to", &into.display().to_string()],
        &[],
    );
    let dump = into.join("mysql/shop.sql");
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(text.contains("-- Dump completed"), "the dump is whole");

    run(&source, None, "CREATE DATABASE by_hand").await;
    let loaded = std::process::Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &source.port().to_string(),
            "-u",
            "root",
        ])
        .arg("by_hand")
        .env("MYSQL_PWD", source.password())
        .stdin(std::fs::File::open(&dump).unwrap())
        .output()
        .unwrap();
    assert!(loaded.status.success(), "mariadb < shop.sql: {loaded:?}");
    for table in ["customers", "orders", "audit"] {
        let sql = format!("SELECT * FROM {table} ORDER BY id");
        assert_eq!(
            rows(&source, Some("by_hand"), &sql).await,
            rows(&source, Some("shop"), &sql).await,
            "{table}"
        );
    }
    assert_eq!(
        value(&source, Some("by_hand"), "SELECT tax(10)").await,
        "2.00"
    );
}
