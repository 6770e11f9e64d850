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

    let target = MariaDbServer::start().unwrap();
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
