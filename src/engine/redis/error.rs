//! Errors of the Redis engine: one line each, naming the server or key and the fix.

use super::frames::FrameError;
use super::rdb::RdbError;
use super::target::RedisUrlError;
use crate::pipeline::{IntegrityError, PipelineError};
use crate::storage::StorageError;
use crate::storage::manifest::ManifestError;
use crate::text::one_line;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The bytes read for the restore did not match the manifest; `outcome` says what the
    /// target holds now.
    #[error("{source}: {outcome}")]
    RestoreRefused {
        source: IntegrityError,
        outcome: String,
    },
    #[error(transparent)]
    Url(#[from] RedisUrlError),
    #[error(
        "cannot connect to Redis at {address}: {detail}; check the host and port, and that the server is running"
    )]
    Connect { address: String, detail: String },
    /// The connection broke after it was made (a restart, a failover, `CLIENT KILL`).
    #[error(
        "Redis at {address} closed the connection during {command} ({detail}): the run stopped there (a backup stores nothing; a restore may have restored part of the keys); check the server's log (a restart, a failover, a killed client) and run it again"
    )]
    Dropped {
        address: String,
        command: &'static str,
        detail: String,
    },
    #[error(
        "Redis at {address} refused the login ({detail}): check the user and password in the URL"
    )]
    Auth { address: String, detail: String },
    #[error(
        "Redis at {address} refused SYNC ({detail}): use --mode keys (managed services such as ElastiCache block SYNC), or allow +sync for this user"
    )]
    SyncRefused { address: String, detail: String },
    #[error("Redis at {address}: {detail}")]
    Protocol { address: String, detail: String },
    /// The server stopped answering: nothing came back, and it took none of what was sent,
    /// for `seconds`.
    #[error("Redis at {address} sent nothing for {seconds}s {during}: {fix}")]
    Silent {
        address: String,
        seconds: u64,
        /// What Coffer was waiting for, for example `while it prepared the snapshot`.
        during: String,
        fix: &'static str,
    },
    #[error("Redis at {address} answered {command} with an error: {detail}")]
    Command {
        address: String,
        command: &'static str,
        detail: String,
    },
    #[error("restoring key {key} into {address}: {detail}")]
    Restore {
        address: String,
        key: String,
        detail: String,
    },
    #[error(
        "{address} cannot load this backup's data (RDB version {rdb_version}): restore into Redis of the same or a newer version, or back up with --mode keys"
    )]
    TargetTooOld { address: String, rdb_version: u16 },
    #[error("{0}")]
    Databases(String),
    #[error("the backup's data: {0}")]
    Rdb(#[from] RdbError),
    #[error("the backup's data: {0}")]
    Frames(#[from] FrameError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the backup's data: {0}")]
    Format(String),
    #[error("{0}")]
    Internal(String),
}

impl RedisError {
    /// The server could not be reached, or stopped answering.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Dropped { .. } | Self::Silent { .. } | Self::Auth { .. }
        )
    }

    /// Classifies an error of the `redis` crate talking to `address` while running
    /// `command`.
    pub fn from_redis(address: &str, command: &'static str, e: &redis::RedisError) -> Self {
        let detail = one_line(&e.to_string());
        let auth = matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
            || detail.contains("WRONGPASS")
            || detail.contains("NOAUTH");
        if auth {
            return Self::Auth {
                address: address.to_owned(),
                detail,
            };
        }
        if command != "CONNECT" && (e.is_connection_dropped() || e.is_io_error()) {
            return Self::Dropped {
                address: address.to_owned(),
                command,
                detail,
            };
        }
        if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_connection_dropped()
        {
            return Self::Connect {
                address: address.to_owned(),
                detail,
            };
        }
        Self::Command {
            address: address.to_owned(),
            command,
            detail,
        }
    }
}

impl<E: Into<RedisError>> From<PipelineError<E>> for RedisError {
    fn from(e: PipelineError<E>) -> Self {
        match e {
            PipelineError::Storage(e) => Self::Storage(e),
            PipelineError::Source(e) => e.into(),
            PipelineError::Read(e) => Self::Internal(format!("reading the Redis stream: {e}")),
            PipelineError::Compress(e) => Self::Internal(format!("compressing: {e}")),
            PipelineError::Encrypt(e) => Self::Internal(format!("encrypting: {e}")),
        }
    }
}
