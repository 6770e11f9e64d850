//! Each engine error's [`Failure`] category. Pure.

use super::summary::Failure;
use crate::engine::mysql::MyError;
use crate::engine::postgres::PgError;
use crate::engine::redis::RedisError;
use crate::engine::volume::VolumeError;
use crate::engine::volume::extract::ExtractError;
use crate::pipeline::IntegrityError;
use crate::storage::StorageError;

/// An object's check: the store's failure when it could not be read, else the backup's (an
/// object of it missing too: the backup is damaged, not gone).
fn integrity(e: &IntegrityError) -> Failure {
    match e {
        IntegrityError::Storage(StorageError::NotFound { .. }) => Failure::IntegrityCheckFailed,
        IntegrityError::Storage(e) => e.into(),
        IntegrityError::Interrupted { .. } => Failure::StorageError,
        _ => Failure::IntegrityCheckFailed,
    }
}

impl From<&StorageError> for Failure {
    fn from(e: &StorageError) -> Self {
        match e {
            StorageError::DiskFull { .. } => Self::NoSpace,
            StorageError::NotFound { .. } => Self::BackupNotFound,
            StorageError::Retained { .. } => Self::Retained,
            _ => Self::StorageError,
        }
    }
}

impl From<&RedisError> for Failure {
    fn from(e: &RedisError) -> Self {
        match e {
            RedisError::Url(_) => Self::InvalidPlan,
            RedisError::Connect { .. } | RedisError::Dropped { .. } => Self::SourceUnreachable,
            RedisError::Auth { .. } => Self::AuthenticationFailed,
            RedisError::Storage(e) => e.into(),
            RedisError::Integrity(e) | RedisError::RestoreRefused { source: e, .. } => integrity(e),
            RedisError::Manifest(_) => Self::IntegrityCheckFailed,
            RedisError::Internal(_) => Self::Internal,
            _ => Self::SourceError,
        }
    }
}

impl From<&PgError> for Failure {
    fn from(e: &PgError) -> Self {
        match e {
            PgError::Url(_) | PgError::Usage(_) => Self::InvalidPlan,
            PgError::Connect { .. } | PgError::Dropped { .. } => Self::SourceUnreachable,
            PgError::Auth { .. } => Self::AuthenticationFailed,
            PgError::Storage(e) => e.into(),
            PgError::Integrity(e) | PgError::RestoreRefused { source: e, .. } => integrity(e),
            PgError::Manifest(_) | PgError::RowCount { .. } | PgError::Globals(_) => {
                Self::IntegrityCheckFailed
            }
            PgError::Internal(_) => Self::Internal,
            _ => Self::SourceError,
        }
    }
}

impl From<&MyError> for Failure {
    fn from(e: &MyError) -> Self {
        match e {
            MyError::Url(_) | MyError::Usage(_) => Self::InvalidPlan,
            MyError::Connect { .. } | MyError::Dropped { .. } => Self::SourceUnreachable,
            MyError::Auth { .. } => Self::AuthenticationFailed,
            MyError::Storage(e) => e.into(),
            MyError::Integrity(e) | MyError::RestoreRefused { source: e, .. } => integrity(e),
            MyError::Manifest(_) | MyError::RowCount { .. } => Self::IntegrityCheckFailed,
            MyError::Internal(_) => Self::Internal,
            _ => Self::SourceError,
        }
    }
}

impl From<&VolumeError> for Failure {
    fn from(e: &VolumeError) -> Self {
        match e {
            VolumeError::Storage(e) => e.into(),
            VolumeError::Integrity(e) => integrity(e),
            VolumeError::NoArchive => Self::IntegrityCheckFailed,
            VolumeError::Extract(ExtractError::NoSpace { .. }) => Self::NoSpace,
            VolumeError::Internal(_) => Self::Internal,
            _ => Self::SourceError,
        }
    }
}
