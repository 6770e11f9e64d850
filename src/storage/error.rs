//! Storage errors: one line each, naming the location and what to do.

use super::location::DestinationError;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error("{location} does not exist")]
    NotFound { location: String },
    #[error("bucket {bucket:?} does not exist: create it, or fix the destination")]
    NoSuchBucket { bucket: String },
    #[error(
        "S3 refused the credentials for {location} ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    Credentials { location: String, code: String },
    #[error(
        "no S3 credentials found for {location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or a web identity)"
    )]
    NoCredentials { location: String },
    #[error(
        "S3 denied access to {location}: the credentials need s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject"
    )]
    AccessDenied { location: String },
    #[error(
        "cannot reach S3 for {location}: {detail}; check --s3-endpoint (or AWS_ENDPOINT_URL) and the network"
    )]
    Unreachable { location: String, detail: String },
    #[error("S3 {operation} of {location} failed: {detail}")]
    S3 {
        operation: &'static str,
        location: String,
        detail: String,
    },
    #[error(
        "no space left on the device holding {location}: free some space or choose another destination"
    )]
    DiskFull { location: String },
    #[error("{what} {location}: {source}")]
    Io {
        what: &'static str,
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{location} is locked (S3 Object Lock) until {}: it cannot be deleted before then; try again after that date",
        until.map_or_else(|| "a date the store did not say".to_owned(), |t| t.to_rfc3339())
    )]
    Retained {
        location: String,
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    #[error(
        "S3 denied deleting a version of {location}: in a versioned bucket the credentials need s3:ListBucketVersions and s3:DeleteObjectVersion (or the object has a legal hold); nothing more was deleted"
    )]
    VersionDeleteDenied { location: String },
    #[error("the upload of {location} was abandoned because the backup failed")]
    Abandoned { location: String },
}

impl StorageError {
    /// An I/O error on a local path; a full disk gets its own message.
    pub fn io(what: &'static str, location: String, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(28) || source.kind() == std::io::ErrorKind::StorageFull {
            return Self::DiskFull { location };
        }
        if source.kind() == std::io::ErrorKind::NotFound {
            return Self::NotFound { location };
        }
        Self::Io {
            what,
            location,
            source,
        }
    }
}
