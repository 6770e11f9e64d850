//! PostgreSQL test data and the fingerprints that prove a restore gave it all back.

use std::collections::BTreeMap;
use std::process::Command;

use coffer_testenv::PostgresServer;
use tokio_postgres::Client;

/// The shop schema of `tests/fixtures/shop.sql`: schemas, quoted and non-ASCII identifiers,
/// an enum, arrays, jsonb, bytea with every byte, large objects, sequences, a view, a
/// materialized view, functions, a trigger, a partitioned table and a 1M-row table.
pub const SHOP: &str = include_str!("../fixtures/shop.sql");

/// A connection to `database` of `server` as its superuser.
pub async fn connect(server: &PostgresServer, database: &str) -> Client {
    connect_to(&server.connection_string(database)).await
}

pub async fn connect_to(conninfo: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting with {conninfo:?}: {e}"));
    tokio::spawn(connection);
    client
}

/// Creates `database` on `server` and runs `sql` in it.
pub async fn create(server: &PostgresServer, database: &str, sql: &str) {
    let admin = connect(server, "postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{database}\""))
        .await
        .unwrap();
    connect(server, database)
        .await
        .batch_execute(sql)
        .await
        .unwrap();
}

/// Everything a database holds, in comparable form: each table's row count and checksum of
/// its rows, each sequence's position, and each large object's checksum.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub tables: BTreeMap<String, (i64, String)>,
    pub sequences: BTreeMap<String, Option<i64>>,
    pub large_objects: BTreeMap<u32, String>,
}

pub async fn fingerprint(client: &Client) -> Fingerprint {
    let mut tables = BTreeMap::new();
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    for row in rows {
        let table: String = row.get(0);
        let sums = client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') \
                     FROM ONLY {table} AS t"
                ),
                &[],
            )
            .await
            .unwrap();
        tables.insert(table, (sums.get(0), sums.get(1)));
    }
    let sequences = client
        .query(
            "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let large_objects = client
        .query(
            "SELECT oid, md5(lo_get(oid)) FROM pg_largeobject_metadata",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Fingerprint {
        tables,
        sequences,
        large_objects,
    }
}

/// `pg_dump --schema-only` of `database`, without the random `\restrict` keys newer
/// versions add.
pub fn schema(server: &PostgresServer, database: &str) -> String {
    let out = Command::new(server.bin_dir().join("pg_dump"))
        .args(["--schema-only", "--dbname"])
        .arg(server.connection_string(database))
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dump --schema-only: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}
