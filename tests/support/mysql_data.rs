//! Talking to a test MariaDB server: statements and a table's rows as text.

use coffer_testenv::MariaDbServer;
use mysql_async::prelude::Queryable;

/// A connection as root, to `database` if given.
pub async fn connect(server: &MariaDbServer, database: Option<&str>) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(server.port())
        .user(Some("root"))
        .pass(Some(server.password()))
        .db_name(database)
        .prefer_socket(false);
    mysql_async::Conn::new(opts).await.unwrap()
}

/// Runs statements (several, separated by `;`).
pub async fn run(server: &MariaDbServer, database: Option<&str>, sql: &str) {
    let mut conn = connect(server, database).await;
    conn.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.disconnect().await.unwrap();
}

/// The rows of a query, each column as text (`NULL` for null), in order.
pub async fn rows(server: &MariaDbServer, database: Option<&str>, sql: &str) -> Vec<Vec<String>> {
    let mut conn = connect(server, database).await;
    let result: Vec<mysql_async::Row> = conn
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.disconnect().await.unwrap();
    result
        .into_iter()
        .map(|row| {
            (0..row.len())
                .map(|i| match row.as_ref(i) {
                    Some(mysql_async::Value::NULL) | None => "NULL".to_owned(),
                    Some(mysql_async::Value::Bytes(b)) => hex_or_text(b),
                    Some(other) => other.as_sql(true),
                })
                .collect()
        })
        .collect()
}

fn hex_or_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => text.to_owned(),
        _ => format!("0x{}", hex::encode(bytes)),
    }
}

/// The single value of a query.
pub async fn value(server: &MariaDbServer, database: Option<&str>, sql: &str) -> String {
    rows(server, database, sql)
        .await
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .unwrap_or_else(|| panic!("{sql} returned nothing"))
}
