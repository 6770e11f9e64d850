//! Errors of the MySQL/MariaDB engine: one line each, naming the server, database, table or
//! privilege and the fix. Row data that a server's message quotes is left out.

use super::target::MyUrlError;
use crate::pipeline::{IntegrityError, PipelineError};
use crate::storage::StorageError;
use crate::storage::manifest::ManifestError;
use crate::text::one_line;

#[derive(Debug, thiserror::Error)]
pub enum MyError {
    #[error(transparent)]
    Url(#[from] MyUrlError),
    #[error(
        "cannot connect to MySQL at {address}: {detail}; check the host and port, and that the server is running"
    )]
    Connect { address: String, detail: String },
    #[error(
        "MySQL at {address} closed the connection while {what} ({detail}): a restart, a failover or a killed server; check its log, then run it again"
    )]
    Dropped {
        address: String,
        what: String,
        detail: String,
    },
    #[error(
        "MySQL at {address} refused user {user:?} ({detail}): check the user and password (URL, MYSQL_PWD or ~/.my.cnf)"
    )]
    Auth {
        address: String,
        user: String,
        detail: String,
    },
    #[error(
        "user {user:?} at {address} lacks the {privilege} privilege, needed for {what}: GRANT {privilege} ON *.* TO the user, or {alternative}"
    )]
    Privilege {
        address: String,
        user: String,
        privilege: String,
        what: String,
        alternative: String,
    },
    #[error("database {name:?} does not exist on {address} (it has: {existing})")]
    MissingDatabase {
        address: String,
        name: String,
        existing: String,
    },
    #[error(
        "database {name:?} does not exist on {address}: add --create to create it, or restore into an existing one"
    )]
    NeedCreate { address: String, name: String },
    #[error("MySQL at {address}: {what}: {detail}")]
    Query {
        address: String,
        what: String,
        detail: String,
    },
    #[error(
        "{tool} not found: install the Debian package mariadb-client (apt-get install mariadb-client), or point --mysql-bin-dir at the directory with mariadb-dump and mariadb"
    )]
    ToolMissing { tool: &'static str },
    #[error(
        "{tool} {found} is older than the server ({server}): install a {flavor} client of version {needed} or newer, or point --mysql-bin-dir at one"
    )]
    ToolTooOld {
        tool: String,
        found: String,
        server: String,
        flavor: &'static str,
        needed: String,
    },
    #[error("{tool} {subject} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        subject: String,
        status: String,
        stderr: String,
    },
    #[error(
        "the dump {subject} ended without its completion trailer (-- Dump completed): it was cut short, so nothing was stored; check the server's log, then run it again"
    )]
    CutShort { subject: String },
    #[error(
        "after the restore, database {database:?} does not match the backup: {differences}; the backup may be damaged or something wrote to the database during the restore"
    )]
    RowCount {
        database: String,
        differences: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// The bytes read for the restore did not match the manifest; `outcome` says what the
    /// target holds now.
    #[error("{source}: {outcome}")]
    RestoreRefused {
        source: IntegrityError,
        outcome: String,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Internal(String),
}

/// Server error codes the engine tells apart.
const ACCESS_DENIED: u16 = 1045;
const NO_DB_ACCESS: u16 = 1044;
const NEED_PRIVILEGE: u16 = 1227;

impl MyError {
    /// Classifies a `mysql_async` error talking to `address` as `user`.
    pub fn from_mysql(address: &str, user: &str, what: &str, e: &mysql_async::Error) -> Self {
        match e {
            mysql_async::Error::Server(server) => {
                let detail = without_row_data(&one_line(&server.message));
                match server.code {
                    ACCESS_DENIED => Self::Auth {
                        address: address.to_owned(),
                        user: user.to_owned(),
                        detail,
                    },
                    NO_DB_ACCESS | NEED_PRIVILEGE => match needed_privilege(&server.message) {
                        Some(privilege) => Self::Privilege {
                            address: address.to_owned(),
                            user: user.to_owned(),
                            privilege,
                            what: what.to_owned(),
                            alternative: "use an account that has it".to_owned(),
                        },
                        None => Self::Query {
                            address: address.to_owned(),
                            what: what.to_owned(),
                            detail,
                        },
                    },
                    _ => Self::Query {
                        address: address.to_owned(),
                        what: what.to_owned(),
                        detail,
                    },
                }
            }
            mysql_async::Error::Io(io) => {
                let detail = one_line(&io.to_string());
                if what == "connecting" {
                    Self::Connect {
                        address: address.to_owned(),
                        detail,
                    }
                } else {
                    Self::Dropped {
                        address: address.to_owned(),
                        what: what.to_owned(),
                        detail,
                    }
                }
            }
            mysql_async::Error::Driver(d) => {
                let detail = one_line(&d.to_string());
                if what == "connecting" {
                    Self::Connect {
                        address: address.to_owned(),
                        detail,
                    }
                } else {
                    Self::Dropped {
                        address: address.to_owned(),
                        what: what.to_owned(),
                        detail,
                    }
                }
            }
            other => Self::Query {
                address: address.to_owned(),
                what: what.to_owned(),
                detail: one_line(&other.to_string()),
            },
        }
    }
}

/// `Access denied; you need (at least one of) the RELOAD privilege(s) for this operation`
/// → `RELOAD`.
pub fn needed_privilege(message: &str) -> Option<String> {
    // `SHOW VIEW command denied to user 'app'@'h' for table ...` → `SHOW VIEW`.
    if let Some((before, _)) = message.split_once(" command denied to user") {
        let command = before
            .rsplit(['\'', '"', ':'])
            .next()
            .unwrap_or_default()
            .trim();
        if !command.is_empty() && command.chars().all(|c| c.is_ascii_uppercase() || c == ' ') {
            return Some(command.to_owned());
        }
    }
    let after = message.split("the ").skip(1).find_map(|part| {
        let (name, rest) = part.split_once(" privilege")?;
        (!name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || " ,_".contains(c)))
        .then(|| (name.to_owned(), rest))
    })?;
    Some(after.0)
}

/// A server message without the row data some messages quote (`Duplicate entry 'x' for key
/// ...`, `Incorrect integer value: 'x' for column ...`): messages end up in logs, status
/// and Events, and the data may be personal.
pub fn without_row_data(message: &str) -> String {
    const LEFT_OUT: &str = "(data left out)";
    let mut out = message.to_owned();
    for marker in [
        "Duplicate entry '",
        "value: '",
        "value '",
        "for value '",
        "near '",
    ] {
        if let Some(at) = out.find(marker) {
            let start = at + marker.len();
            // The quoted value ends at the last `' for ` (the value may hold quotes).
            let end = out[start..]
                .rfind("' for ")
                .or_else(|| out[start..].rfind('\''))
                .map_or(out.len(), |e| start + e);
            out = format!("{}{LEFT_OUT}{}", &out[..start], &out[end..]);
        }
    }
    out
}

impl<E: Into<MyError>> From<PipelineError<E>> for MyError {
    fn from(e: PipelineError<E>) -> Self {
        match e {
            PipelineError::Storage(e) => Self::Storage(e),
            PipelineError::Source(e) => e.into(),
            PipelineError::Read(e) => Self::Internal(format!("reading the dump's output: {e}")),
            PipelineError::Compress(e) => Self::Internal(format!("compressing: {e}")),
            PipelineError::Encrypt(e) => Self::Internal(format!("encrypting: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_are_named() {
        assert_eq!(
            needed_privilege(
                "Access denied; you need (at least one of) the RELOAD privilege(s) for this operation"
            )
            .as_deref(),
            Some("RELOAD")
        );
        assert_eq!(
            needed_privilege(
                "Access denied; you need (at least one of) the PROCESS privilege(s) for this operation"
            )
            .as_deref(),
            Some("PROCESS")
        );
        assert_eq!(
            needed_privilege(
                "mariadb-dump: Couldn't execute 'show create table `v`': SHOW VIEW command denied to user 'app'@'h' for table `shop`.`v` (1142)"
            )
            .as_deref(),
            Some("SHOW VIEW")
        );
        assert_eq!(needed_privilege("Unknown database 'x'"), None);
    }

    #[test]
    fn row_data_is_left_out() {
        let m = "ERROR 1062 (23000) at line 40: Duplicate entry 'jane@example.com' for key 'email'";
        let out = without_row_data(m);
        assert!(!out.contains("jane"), "{out}");
        assert!(out.contains("for key 'email'"), "{out}");
        let m = "Incorrect integer value: 'it's secret' for column `shop`.`t`.`n` at row 1";
        let out = without_row_data(m);
        assert!(!out.contains("secret"), "{out}");
        assert!(out.contains("for column"), "{out}");
        let m = "You have an error in your SQL syntax; check the manual near 'jane@example.com')' at line 1";
        assert!(
            !without_row_data(m).contains("jane"),
            "{}",
            without_row_data(m)
        );
        let plain = "Table 'shop.items' doesn't exist";
        assert_eq!(without_row_data(plain), plain);
    }
}
