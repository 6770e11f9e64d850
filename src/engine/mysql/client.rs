//! The queries the engine itself makes (versions, databases, tables, row counts), over
//! `mysql_async`. The dump and the load are the server's own programs.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use super::error::MyError;
use super::target::MyTarget;
use crate::storage::manifest::DatabaseObjects;

/// The server's own schemas, never backed up as databases.
pub const SYSTEM_SCHEMAS: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

/// An open connection and what is needed to describe its failures.
pub struct Client {
    conn: Conn,
    address: String,
    user: String,
}

/// A base table of a database, with its storage engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub engine: String,
}

impl Client {
    /// Connects to `target` (no default database).
    pub async fn connect(target: &MyTarget) -> Result<Self, MyError> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(target.host.clone())
            .tcp_port(target.port)
            .user(Some(target.user.clone()))
            .pass(target.password.clone())
            .prefer_socket(false)
            .conn_ttl(None::<Duration>)
            .wait_timeout(Some(28_800));
        let address = target.address();
        let fail =
            |e: &mysql_async::Error| MyError::from_mysql(&address, &target.user, "connecting", e);
        let conn = match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(fail(&e)),
            Err(_) => {
                return Err(MyError::Connect {
                    address: address.clone(),
                    detail: "no answer within 10 s".to_owned(),
                });
            }
        };
        Ok(Self {
            conn,
            address,
            user: target.user.clone(),
        })
    }

    /// Runs statements that return nothing.
    pub async fn execute(&mut self, sql: &str, what: &str) -> Result<(), MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        self.conn
            .query_drop(sql)
            .await
            .map_err(|e| MyError::from_mysql(&address, &user, what, &e))
    }

    /// `SHOW GRANTS` for the logged-in user, one statement per line.
    pub async fn grants(&mut self) -> Result<Vec<String>, MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        self.conn
            .query("SHOW GRANTS")
            .await
            .map_err(|e| MyError::from_mysql(&address, &user, "reading the grants", &e))
    }

    /// `SELECT VERSION()`.
    pub async fn version(&mut self) -> Result<String, MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        let version: Option<String> = self
            .conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| MyError::from_mysql(&address, &user, "reading the version", &e))?;
        Ok(version.unwrap_or_default())
    }

    /// Whether the binary log is on (a dump can then record its position).
    pub async fn binary_log(&mut self) -> Result<bool, MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        let on: Option<i64> = self
            .conn
            .query_first("SELECT @@log_bin")
            .await
            .map_err(|e| MyError::from_mysql(&address, &user, "reading log_bin", &e))?;
        Ok(on == Some(1))
    }

    /// Every database but the server's own schemas, sorted.
    pub async fn databases(&mut self) -> Result<Vec<String>, MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        let names: Vec<String> = self
            .conn
            .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")
            .await
            .map_err(|e| MyError::from_mysql(&address, &user, "listing databases", &e))?;
        Ok(names
            .into_iter()
            .filter(|n| !SYSTEM_SCHEMAS.contains(&n.as_str()))
            .collect())
    }

    /// `CHARACTER SET x COLLATE y` of a database, to create it again the same.
    pub async fn database_options(&mut self, database: &str) -> Result<String, MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        let row: Option<(String, String)> = self
            .conn
            .exec_first(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
                 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (database,),
            )
            .await
            .map_err(|e| {
                MyError::from_mysql(&address, &user, "reading a database's character set", &e)
            })?;
        Ok(row
            .map(|(charset, collation)| format!("CHARACTER SET {charset} COLLATE {collation}"))
            .unwrap_or_default())
    }

    /// The base tables of `database` (views left out), sorted.
    pub async fn tables(&mut self, database: &str) -> Result<Vec<Table>, MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        let rows: Vec<(String, Option<String>)> = self
            .conn
            .exec(
                "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND BINARY TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' \
                 ORDER BY TABLE_NAME",
                (database, database),
            )
            .await
            .map_err(|e| MyError::from_mysql(&address, &user, "listing tables", &e))?;
        Ok(rows
            .into_iter()
            .map(|(name, engine)| Table {
                name,
                engine: engine.unwrap_or_default(),
            })
            .collect())
    }

    /// The routines, views, triggers and events of `database`, each list sorted. Its name is
    /// compared byte for byte too: `information_schema` compares names without case, and
    /// `Shop` and `shop` are two databases on most servers.
    pub async fn objects(&mut self, database: &str) -> Result<DatabaseObjects, MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        let mut list = async |sql: &str| {
            let mut names: Vec<String> =
                self.conn
                    .exec(sql, (database, database))
                    .await
                    .map_err(|e| {
                        MyError::from_mysql(
                            &address,
                            &user,
                            "listing routines, views, triggers and events",
                            &e,
                        )
                    })?;
            names.sort();
            Ok::<_, MyError>(names)
        };
        Ok(DatabaseObjects {
            schemas: Vec::new(),
            functions: list(
                "SELECT CONCAT(ROUTINE_NAME, ' (', LOWER(ROUTINE_TYPE), ')') \
                 FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? AND BINARY ROUTINE_SCHEMA = ?",
            )
            .await?,
            views: list("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? AND BINARY TABLE_SCHEMA = ?")
                .await?,
            triggers: list(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND BINARY TRIGGER_SCHEMA = ?",
            )
            .await?,
            events: list("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND BINARY EVENT_SCHEMA = ?")
                .await?,
        })
    }

    /// `SELECT COUNT(*)` of a table.
    pub async fn count(&mut self, database: &str, table: &str) -> Result<u64, MyError> {
        let sql = format!("SELECT COUNT(*) FROM {}.{}", ident(database), ident(table));
        let what = format!("counting the rows of {database}.{table}");
        let address = self.address.clone();
        let user = self.user.clone();
        let n: Option<u64> = self
            .conn
            .query_first(sql)
            .await
            .map_err(|e| MyError::from_mysql(&address, &user, &what, &e))?;
        Ok(n.unwrap_or(0))
    }

    /// The first value a user's query returns in `database`, as text (`None`: NULL or no
    /// row). The server's own message when it fails.
    pub async fn first_value(
        &mut self,
        database: &str,
        query: &str,
    ) -> Result<Option<String>, String> {
        self.conn
            .query_drop(format!("USE {}", ident(database)))
            .await
            .map_err(|e| e.to_string())?;
        let row: Option<mysql_async::Row> = self
            .conn
            .query_first(query)
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.and_then(|r| r.get_opt::<Option<String>, _>(0)?.ok().flatten()))
    }

    /// The accounts and their grants as SQL (MySQL, where `mysqldump` has no
    /// `--system=users`): `CREATE USER IF NOT EXISTS` for every account but the server's own
    /// (`mysql.*`) and `root`, password hashes as hex (MySQL 8.0.17+; raw hashes can hold
    /// quotes and newlines), then every `GRANT` (roles are accounts too: they all exist
    /// before any is granted). One statement per line. A `DEFAULT ROLE` naming a role created
    /// later in the script fails the restore of the accounts (not tested here: there is no
    /// MySQL server in the test environment).
    pub async fn accounts_sql(&mut self) -> Result<String, MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        let err = |what: &'static str| {
            let address = address.clone();
            let user = user.clone();
            move |e: mysql_async::Error| MyError::from_mysql(&address, &user, what, &e)
        };
        // Older servers do not know the setting; their hashes are printable already.
        let _ = self
            .conn
            .query_drop("SET SESSION print_identified_with_as_hex = ON")
            .await;
        let accounts: Vec<(String, String)> = self
            .conn
            .query("SELECT User, Host FROM mysql.user ORDER BY User, Host")
            .await
            .map_err(err("reading accounts"))?;
        let mut creates = String::new();
        let mut grants = String::new();
        for (name, host) in accounts {
            if name.is_empty() || name == "root" || name.starts_with("mysql.") {
                continue;
            }
            let account = format!("{}@{}", literal(&name), literal(&host));
            let create: Option<String> = self
                .conn
                .query_first(format!("SHOW CREATE USER {account}"))
                .await
                .map_err(err("reading accounts"))?;
            if let Some(create) = create {
                let create = create.replacen("CREATE USER ", "CREATE USER IF NOT EXISTS ", 1);
                creates.push_str(&create.replace('\n', " "));
                creates.push_str(";\n");
            }
            let granted: Vec<String> = self
                .conn
                .query(format!("SHOW GRANTS FOR {account}"))
                .await
                .map_err(err("reading grants"))?;
            for grant in granted {
                grants.push_str(&grant.replace('\n', " "));
                grants.push_str(";\n");
            }
        }
        Ok(creates + &grants)
    }

    /// Every account of the server, as (user, host).
    pub async fn accounts(&mut self) -> Result<Vec<(String, String)>, MyError> {
        let address = self.address.clone();
        let user = self.user.clone();
        self.conn
            .query("SELECT User, Host FROM mysql.user")
            .await
            .map_err(|e| MyError::from_mysql(&address, &user, "listing the target's accounts", &e))
    }

    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// A quoted identifier: `` `a``b` ``.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A quoted string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal("o'b\\"), "'o\\'b\\\\'");
    }
}
