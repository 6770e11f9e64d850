//! PostgreSQL test data and the fingerprints that prove a restore gave it all back.

use std::collections::BTreeMap;
use std::process::Command;

use coffer_testenv::PostgresServer;
use tokio_postgres::Client;

/// The shop schema of `tests/fixtures/shop.sql`: schemas, quoted and non-ASCII identifiers,
/// an enum, arrays, jsonb, bytea with every byte, large objects, sequences, a view, a
/// materialized view, functions, a trigger, a partitioned table, a 1M-row table, an
/// extension's type (citext), privileges granted to the roles of [`SHOP_ROLES`] (which must
/// exist first), comments and row-level security policies.
pub const SHOP: &str = include_str!("../fixtures/shop.sql");

/// The roles [`SHOP`] grants to, with attributes, settings, a comment and a membership with
/// its admin option. Roles belong to the cluster, not to a database: run this in the
/// server's `postgres` database before creating the shop.
pub const SHOP_ROLES: &str = "\
    CREATE ROLE shop_reader NOLOGIN; \
    COMMENT ON ROLE shop_reader IS 'Reads the shop, happy customers only'; \
    CREATE ROLE shop_clerk LOGIN CREATEDB CONNECTION LIMIT 7 PASSWORD 'clerk-pw' \
        VALID UNTIL '2099-12-31 23:59:59+00'; \
    ALTER ROLE shop_clerk SET search_path = sales, public; \
    ALTER ROLE shop_clerk SET statement_timeout = '5min'; \
    GRANT shop_reader TO shop_clerk WITH ADMIN OPTION";

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

/// The first column of every row `sql` returns in `database`, as text.
pub async fn texts(server: &PostgresServer, database: &str, sql: &str) -> Vec<String> {
    connect(server, database)
        .await
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
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

/// `pg_dump --schema-only` of `database`, privileges, comments and policies included,
/// without the random `\restrict` keys newer versions add.
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

/// `pg_dumpall --roles-only` of `server` in comparable form: its statements only (no
/// comments, blank lines, `SET`s or `\restrict` keys), sorted, with the bootstrap
/// superuser's password left out (each server has its own). Every other role keeps its
/// password's SCRAM verifier: a superuser's backup carries them.
pub fn roles(server: &PostgresServer) -> String {
    let out = Command::new(server.bin_dir().join("pg_dumpall"))
        .args(["--roles-only", "--dbname"])
        .arg(server.connection_string("postgres"))
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dumpall --roles-only: {out:?}");
    let superuser = format!("ALTER ROLE {} WITH ", server.user());
    let password = regex::Regex::new(" PASSWORD '[^']*'").unwrap();
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("--")
                && !l.starts_with("SET ")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
        })
        .map(|l| {
            if l.starts_with(&superuser) {
                password.replace(l, "").into_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    lines.sort();
    lines.join("\n")
}
