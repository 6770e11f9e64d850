//! Pre-flight probes: can a backup of this source be taken, and can it be stored? Each
//! probe connects with the credentials a backup would use and says, in one line, what it
//! found or what to fix. Used by `coffer check`.

use crate::storage::Store;

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `source` or `storage`.
    pub subject: &'static str,
    /// False: a backup would fail.
    pub ok: bool,
    /// What was found, or what failed and how to fix it.
    pub message: String,
}

impl Finding {
    fn ok(subject: &'static str, message: impl Into<String>) -> Self {
        Self {
            subject,
            ok: true,
            message: message.into(),
        }
    }

    fn failed(subject: &'static str, message: impl Into<String>) -> Self {
        Self {
            subject,
            ok: false,
            message: crate::text::one_line(&message.into()),
        }
    }
}

/// Redis: log in, `PING`, read the version.
pub async fn redis(target: &super::redis::RedisTarget) -> Finding {
    use super::redis::client::{Connection, Limits, server_info};
    let limits = Limits {
        idle_timeout: std::time::Duration::from_secs(10),
        ..Limits::default()
    };
    let mut con = match Connection::open(target, target.database.unwrap_or(0), &limits).await {
        Ok(con) => con,
        Err(e) => return Finding::failed("source", e.to_string()),
    };
    match server_info(&mut con).await {
        Ok(info) => Finding::ok(
            "source",
            format!(
                "Redis {} at {}:{} answered; {} keys",
                info.version,
                target.host,
                target.port,
                info.keyspace.values().sum::<u64>()
            ),
        ),
        Err(e) => Finding::failed("source", e.to_string()),
    }
}

/// PostgreSQL: log in to each database (or `postgres`), and check that the user may read
/// every table (a superuser, or a member of `pg_read_all_data`).
pub async fn postgres(target: &super::postgres::PgTarget, databases: &[String]) -> Finding {
    let first = databases.first().map_or("postgres", String::as_str);
    let client = match super::postgres::catalog::connect(target, first).await {
        Ok(client) => client,
        Err(e) => return Finding::failed("source", e.to_string()),
    };
    for database in databases.iter().skip(1) {
        if let Err(e) = super::postgres::catalog::connect(target, database).await {
            return Finding::failed("source", e.to_string());
        }
    }
    let version: String = match client.query_one("SHOW server_version", &[]).await {
        Ok(row) => row.get(0),
        Err(e) => return Finding::failed("source", format!("{}: {e}", target.address())),
    };
    let may_read_all: Result<bool, _> = client
        .query_one(
            "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_data', 'MEMBER') FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map(|row| row.get(0));
    match may_read_all {
        Ok(false) => Finding::failed(
            "source",
            format!(
                "PostgreSQL {version} at {}: user {} may not read every table: GRANT pg_read_all_data TO {} (PostgreSQL 14+), or use the tables' owner",
                target.address(),
                target.user,
                target.user
            ),
        ),
        // pg_read_all_data is new in PostgreSQL 14: before, only the backup itself can tell.
        Ok(true) | Err(_) => Finding::ok(
            "source",
            format!(
                "PostgreSQL {version} at {} answered; user {} may read every table",
                target.address(),
                target.user
            ),
        ),
    }
}

/// MySQL/MariaDB: log in, read the version, and check that the user holds the global
/// privileges a consistent dump needs.
pub async fn mysql(target: &super::mysql::MyTarget) -> Finding {
    let mut client = match super::mysql::client::Client::connect(target).await {
        Ok(client) => client,
        Err(e) => return Finding::failed("source", e.to_string()),
    };
    let version = match client.version().await {
        Ok(v) => v,
        Err(e) => return Finding::failed("source", e.to_string()),
    };
    let grants = match client.grants().await {
        Ok(g) => g,
        Err(e) => return Finding::failed("source", e.to_string()),
    };
    // With the binary log on, mysqldump records MySQL's position under a brief FLUSH
    // TABLES WITH READ LOCK, which takes RELOAD (mariadb-dump reads MariaDB's from the
    // snapshot, without).
    let binary_log = match client.binary_log().await {
        Ok(on) => on,
        Err(e) => return Finding::failed("source", e.to_string()),
    };
    let mysql = super::mysql::tools::Version::of_server(&version)
        .is_some_and(|v| v.flavor == super::mysql::tools::Flavor::MySql);
    let binary_log = binary_log && mysql;
    let missing = missing_mysql_privileges(&grants, binary_log);
    if missing.is_empty() {
        Finding::ok(
            "source",
            format!(
                "MySQL/MariaDB {version} at {} answered; user {} holds SELECT, SHOW VIEW, TRIGGER, EVENT and LOCK TABLES{}",
                target.address(),
                target.user,
                if binary_log {
                    ", and RELOAD for the binary log position"
                } else {
                    ""
                }
            ),
        )
    } else {
        Finding::failed(
            "source",
            format!(
                "MySQL/MariaDB {version} at {}: user {} lacks {} on *.*: GRANT {} ON *.* TO the user",
                target.address(),
                target.user,
                missing.join(", "),
                missing.join(", ")
            ),
        )
    }
}

/// The privileges a dump needs that `SHOW GRANTS` does not give on `*.*` (RELOAD too when
/// the dump records a MySQL server's binary-log position).
pub fn missing_mysql_privileges(grants: &[String], binary_log: bool) -> Vec<&'static str> {
    let global: Vec<String> = grants
        .iter()
        .filter(|g| g.contains(" ON *.* "))
        .map(|g| g.to_uppercase())
        .collect();
    if global.iter().any(|g| g.contains("ALL PRIVILEGES")) {
        return Vec::new();
    }
    let reload = binary_log.then_some("RELOAD");
    ["SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "LOCK TABLES"]
        .into_iter()
        .chain(reload)
        .filter(|p| !global.iter().any(|g| g.contains(p)))
        .collect()
}

/// A directory: it exists and can be listed.
pub fn directory(path: &std::path::Path) -> Finding {
    match std::fs::read_dir(path) {
        Ok(entries) => Finding::ok(
            "source",
            format!(
                "{} can be read ({} entries)",
                path.display(),
                entries.count()
            ),
        ),
        Err(e) => Finding::failed(
            "source",
            format!(
                "{} cannot be read ({e}): check the path and that this user may read it",
                path.display()
            ),
        ),
    }
}

/// The store: it exists, and a small object can be written, read back and deleted.
pub async fn storage(store: &Store, destination: &str) -> Finding {
    if let Err(e) = store.preflight().await {
        return Finding::failed("storage", e.to_string());
    }
    let key = format!(
        ".coffer-check-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let body = b"coffer pre-flight check: safe to delete\n";
    if let Err(e) = store.put_bytes(&key, body).await {
        return Finding::failed(
            "storage",
            format!("{destination}: cannot write: {e} (the credentials need write access)"),
        );
    }
    let read = store.get_bytes(&key, 1024).await;
    let deleted = store.delete(&key).await;
    match (read, deleted) {
        (Ok(bytes), Ok(())) if bytes == body => Finding::ok(
            "storage",
            format!("{destination}: wrote, read back and deleted a test object"),
        ),
        (Ok(_), Ok(())) => Finding::failed(
            "storage",
            format!("{destination}: a test object read back different bytes than were written"),
        ),
        (Err(e), _) => Finding::failed("storage", format!("{destination}: cannot read back: {e}")),
        (_, Err(e)) => Finding::failed(
            "storage",
            format!(
                "{destination}: cannot delete (retention and deletions would fail): {e}; remove {key} by hand"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_privileges_are_read_from_global_grants() {
        let all = vec!["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`".to_owned()];
        assert!(missing_mysql_privileges(&all, true).is_empty());
        let some = vec![
            "GRANT SELECT, SHOW VIEW ON *.* TO `backup`@`%`".to_owned(),
            "GRANT ALL PRIVILEGES ON `app`.* TO `backup`@`%`".to_owned(),
        ];
        assert_eq!(
            missing_mysql_privileges(&some, false),
            ["TRIGGER", "EVENT", "LOCK TABLES"]
        );
        assert_eq!(
            missing_mysql_privileges(&some, true),
            ["TRIGGER", "EVENT", "LOCK TABLES", "RELOAD"]
        );
        let usage = vec!["GRANT USAGE ON *.* TO `nobody`@`%`".to_owned()];
        assert_eq!(missing_mysql_privileges(&usage, false).len(), 5);
    }
}
