//! Where backups are kept: one abstraction ([`Store`]) over two backends, S3 ([`s3`]) and a
//! directory ([`fs`]), plus the manifest that makes a backup exist ([`manifest`]).
//!
//! Keys are relative to the destination the store was opened at. Writes are streamed, and a
//! streamed object only appears when the writer commits it, so a failed backup leaves no
//! object behind (and no open multipart upload).

pub mod catalog;
pub mod copy;
pub mod error;
pub mod fs;
pub mod keys;
pub mod location;
pub mod lock;
pub mod manifest;
pub mod parts;
pub mod purge;
pub mod s3;
pub mod sweep;

use tokio::io::AsyncRead;

pub use error::StorageError;
pub use location::{Destination, DestinationError};
pub use s3::S3Options;

/// Tells a streamed write whether to keep the object: send `()` to commit; drop the sender
/// to abandon it.
pub type Commit = tokio::sync::oneshot::Receiver<()>;

/// A stream of an object's bytes.
pub type ObjectReader = Box<dyn AsyncRead + Unpin + Send>;

/// An object found by [`Store::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the store's destination.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written, if the store says.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A destination opened for reading and writing.
#[derive(Clone, Debug)]
pub enum Store {
    S3(s3::S3Store),
    Fs(fs::FsStore),
}

impl Store {
    /// Opens a destination. Nothing is contacted until the first operation.
    pub async fn open(destination: &Destination, options: &S3Options) -> Self {
        match destination {
            Destination::S3 { bucket, prefix } => {
                Self::S3(s3::S3Store::connect(bucket.clone(), prefix.clone(), options).await)
            }
            Destination::Dir(dir) => Self::Fs(fs::FsStore::new(dir.clone())),
        }
    }

    /// The same store, one folder deeper (`folder` is a key prefix ending in `/`).
    pub fn at(&self, folder: &str) -> Self {
        match self {
            Self::S3(s) => Self::S3(s.at(folder)),
            Self::Fs(f) => Self::Fs(fs::FsStore::new(
                f.root().join(folder.trim_end_matches('/')),
            )),
        }
    }

    /// Where `key` is, as a user would write it (`s3://bucket/prefix/key` or a path).
    pub fn location(&self, key: &str) -> String {
        match self {
            Self::S3(s) => s.location(key),
            Self::Fs(f) => f.root().join(key).display().to_string(),
        }
    }

    /// Checks, before any work, that the destination exists and can be written (S3: the
    /// bucket exists and may be listed; a directory: it can be created and written).
    pub async fn preflight(&self) -> Result<(), StorageError> {
        match self {
            Self::S3(s) => s.preflight().await,
            Self::Fs(f) => f.preflight().await,
        }
    }

    /// Streams `reader` into `key`. The object exists only once `commit` has been sent and
    /// the write succeeded; returns the bytes stored.
    pub async fn put_stream(
        &self,
        key: &str,
        reader: &mut (impl AsyncRead + Unpin + Send),
        commit: Commit,
    ) -> Result<u64, StorageError> {
        match self {
            Self::S3(s) => s.put_stream(key, reader, commit).await,
            Self::Fs(f) => f.put_stream(key, reader, commit).await,
        }
    }

    /// Writes a small object in one piece.
    pub async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        match self {
            Self::S3(s) => s.put_bytes(key, bytes).await,
            Self::Fs(f) => f.put_bytes(key, bytes).await,
        }
    }

    /// Writes a backup's manifest into its folder (ending in `/`): the last object of every
    /// backup, which makes it one. When the manifest cannot be written, the data objects it
    /// lists are removed (best effort), so a failed backup leaves nothing behind.
    pub async fn put_manifest(
        &self,
        folder: &str,
        manifest: &manifest::Manifest,
    ) -> Result<(), StorageError> {
        let written = self
            .put_bytes(
                &format!("{folder}{}", manifest::MANIFEST),
                &manifest.to_json(),
            )
            .await;
        if written.is_err() {
            self.discard(folder, &manifest.objects).await;
        }
        written
    }

    /// Removes the data objects a failed backup had stored in `folder` (best effort: what
    /// cannot be removed is logged, and `coffer gc` finds it later).
    pub async fn discard(&self, folder: &str, objects: &[manifest::ObjectRecord]) {
        for object in objects {
            let key = format!("{folder}{}", object.name);
            if let Err(e) = self.delete(&key).await {
                tracing::warn!("could not remove {key} of the failed backup: {e}");
            }
        }
    }

    /// Reads an object as a stream.
    pub async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        match self {
            Self::S3(s) => s.get(key).await,
            Self::Fs(f) => f.get(key).await,
        }
    }

    /// Reads a small object whole, refusing one larger than `limit` bytes.
    pub async fn get_bytes(&self, key: &str, limit: u64) -> Result<Vec<u8>, StorageError> {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        self.get(key)
            .await?
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| StorageError::io("reading", self.location(key), e))?;
        if bytes.len() as u64 > limit {
            return Err(StorageError::Io {
                what: "reading",
                location: self.location(key),
                source: std::io::Error::other(format!("larger than {limit} bytes")),
            });
        }
        Ok(bytes)
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut found = match self {
            Self::S3(s) => s.list(prefix).await?,
            Self::Fs(f) => f.list(prefix).await?,
        };
        found.retain(|o| o.key.starts_with(prefix));
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// Has the S3 service copy `source` of `from` to `key` of this store, without the bytes
    /// passing through here (`CopyObject`, up to 5 GiB). `false` when the two are not both
    /// S3 (nothing was done); the caller then streams the object.
    pub async fn copy_within(
        &self,
        from: &Store,
        source: &str,
        key: &str,
    ) -> Result<bool, StorageError> {
        match (self, from) {
            (Self::S3(to), Self::S3(from)) => to.copy_from(from, source, key).await.map(|()| true),
            _ => Ok(false),
        }
    }

    /// Every key below `prefix` that holds data: in a versioned S3 bucket also those whose
    /// current version is a delete marker (their older versions still hold data).
    pub async fn keys_holding_data(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        if let Self::S3(s3) = self
            && s3.is_versioned_bucket().await
            && let Some(versioned) = s3.versioned_keys(prefix).await
        {
            for key in versioned {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self {
            Self::S3(s) => s.delete(key).await,
            Self::Fs(f) => f.delete(key).await,
        }
    }
}
