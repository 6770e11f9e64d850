//! Errors of the PostgreSQL engine: one line each, naming the server, database or table and
//! the fix.

use super::target::PgUrlError;
use crate::pipeline::{IntegrityError, PipelineError};
use crate::storage::StorageError;
use crate::storage::manifest::ManifestError;
use crate::text::one_line;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Url(#[from] PgUrlError),
    #[error(
        "cannot connect to PostgreSQL at {address}: {detail}; check the host and port, and that the server is running"
    )]
    Connect { address: String, detail: String },
    /// The connection broke after it was made (a restart, a failover, a killed backend).
    #[error(
        "PostgreSQL at {address} closed the connection while {what} ({detail}): a restart, a failover or a killed backend; check its log, then run it again"
    )]
    Dropped {
        address: String,
        what: String,
        detail: String,
    },
    #[error(
        "PostgreSQL at {address} refused user {user:?} ({detail}): check the user and password (URL, PGPASSWORD or ~/.pgpass)"
    )]
    Auth {
        address: String,
        user: String,
        detail: String,
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
    #[error("PostgreSQL at {address}: {what}: {detail}")]
    Query {
        address: String,
        what: String,
        detail: String,
    },
    #[error(
        "{tool} not found: install the Debian package postgresql-client (apt-get install postgresql-client), or point --pg-bin-dir at PostgreSQL's bin directory"
    )]
    ToolMissing { tool: &'static str },
    #[error(
        "{tool} {found} is older than {what} ({needed}): install postgresql-client-{needed} or newer, or point --pg-bin-dir at it"
    )]
    ToolTooOld {
        tool: &'static str,
        found: u32,
        needed: u32,
        what: &'static str,
    },
    #[error("{tool} {subject} failed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        subject: String,
        status: String,
        stderr: String,
    },
    #[error(
        "after the restore, table {table} of database {database:?} has {found} rows; the backup counted {expected}"
    )]
    RowCount {
        database: String,
        table: String,
        found: String,
        expected: u64,
    },
    #[error("{0}")]
    Usage(String),
    /// The backup's roles script was refused before anything was restored.
    #[error(transparent)]
    Globals(#[from] super::restore::ScriptError),
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

impl PgError {
    /// Classifies a `tokio-postgres` error talking to `address` as `user`.
    pub fn from_pg(address: &str, user: &str, what: &str, e: &tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return Self::Auth {
                    address: address.to_owned(),
                    user: user.to_owned(),
                    detail: one_line(db.message()),
                };
            }
            return Self::Query {
                address: address.to_owned(),
                what: what.to_owned(),
                detail: one_line(db.message()),
            };
        }
        let detail = one_line(
            &std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string()),
        );
        // An established connection that broke: the server went away, not a wrong address.
        let reset = std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                )
            });
        if e.is_closed() || reset {
            return Self::Dropped {
                address: address.to_owned(),
                what: what.to_owned(),
                detail,
            };
        }
        // The server asked for a password and none was given.
        if detail == "password missing" {
            return Self::Auth {
                address: address.to_owned(),
                user: user.to_owned(),
                detail: "it asked for a password and none was given".to_owned(),
            };
        }
        Self::Connect {
            address: address.to_owned(),
            detail,
        }
    }
}

impl<E: Into<PgError>> From<PipelineError<E>> for PgError {
    fn from(e: PipelineError<E>) -> Self {
        match e {
            PipelineError::Storage(e) => Self::Storage(e),
            PipelineError::Source(e) => e.into(),
            PipelineError::Read(e) => Self::Internal(format!("reading pg_dump's output: {e}")),
            PipelineError::Compress(e) => Self::Internal(format!("compressing: {e}")),
            PipelineError::Encrypt(e) => Self::Internal(format!("encrypting: {e}")),
        }
    }
}
