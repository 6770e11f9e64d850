//! Copying a backup to another store (the "2" and the "1" of 3-2-1).
//!
//! The copy is a backup of its own once it is complete, and not before: every data object is
//! streamed across (or copied by the server, when both stores are the same S3 service), its
//! size and SHA-256 checked against the manifest as it passes, then read back at the
//! destination and checked again; an encrypted backup's key object goes with it (a copy
//! needs no key: it carries the ciphertext); the manifest goes last, byte for byte, so the
//! copy's manifest has the SHA-256 the Backup recorded. A copy that fails removes what it
//! wrote. A destination folder that already holds this very backup is checked and kept; one
//! that holds another backup is never overwritten.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use super::catalog::ReadManifestError;
use super::keys::{self, MAX_KEYS_BYTES, UnlockError};
use super::manifest::{MANIFEST, MAX_MANIFEST_BYTES, Manifest, ObjectRecord};
use super::{ObjectReader, StorageError, Store};
use crate::pipeline::{self, Codec, IntegrityError};

/// The largest object S3 copies in one `CopyObject`; larger ones are streamed.
const MAX_SERVER_COPY: u64 = 5 << 30;

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Data objects in the backup.
    pub objects: usize,
    /// Bytes of the data objects (as stored).
    pub bytes: u64,
    /// Objects the S3 service copied itself (no bytes through the worker).
    pub server_side: usize,
    /// The destination already held this backup, complete and intact: nothing was written.
    pub already: bool,
    /// The SHA-256 of the manifest (the same at both ends).
    pub manifest_sha256: String,
}

/// A copy failed; nothing of it is a backup at the destination.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The backup to copy cannot be read (missing, damaged, or not the one recorded).
    #[error(transparent)]
    Source(#[from] ReadManifestError),
    #[error(
        "{location} already holds another backup (its manifest's SHA-256 is {found}, this backup's {expected}): a copy never overwrites a backup; choose another destination, or delete that backup first"
    )]
    Occupied {
        location: String,
        found: String,
        expected: String,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    #[error(transparent)]
    Keys(#[from] UnlockError),
}

impl CopyError {
    /// The source is missing, damaged or not the recorded backup (not a passing fault).
    pub fn is_source_damaged(&self) -> bool {
        match self {
            Self::Source(ReadManifestError::Storage(_)) => false,
            Self::Source(_) => true,
            Self::Integrity(IntegrityError::Storage(StorageError::NotFound { .. })) => true,
            Self::Integrity(e) => e.is_mismatch(),
            Self::Keys(UnlockError::Key(_)) => true,
            _ => false,
        }
    }
}

/// How the copy is made.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions<'a> {
    /// The SHA-256 the manifest had when the backup was taken: another one is refused.
    pub manifest_sha256: Option<&'a str>,
    /// Both stores are the same S3 service with the same credentials: objects may be copied
    /// by the server (`CopyObject`) instead of through this process.
    pub server_side: bool,
}

/// Copies the backup in `from_folder` of `from` to `to_folder` of `to` (both ending in `/`, or
/// empty for the store's root).
pub async fn copy_backup(
    from: &Store,
    from_folder: &str,
    to: &Store,
    to_folder: &str,
    options: CopyOptions<'_>,
) -> Result<Copied, CopyError> {
    let (bytes, manifest) =
        super::catalog::read_manifest_bytes(from, from_folder, options.manifest_sha256).await?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let mut copied = Copied {
        objects: manifest.objects.len(),
        bytes: manifest.stored_bytes(),
        manifest_sha256: sha.clone(),
        ..Copied::default()
    };

    // A destination that has a manifest already: this backup (a copy that was retried after
    // it finished) is checked and kept; another is never touched.
    let target = format!("{to_folder}{MANIFEST}");
    match to.get_bytes(&target, MAX_MANIFEST_BYTES).await {
        Ok(there) => {
            let found = hex::encode(Sha256::digest(&there));
            if found != sha {
                return Err(CopyError::Occupied {
                    location: to.location(&target),
                    found,
                    expected: sha,
                });
            }
            match check_at(to, to_folder, &manifest).await {
                Ok(()) => {
                    copied.already = true;
                    return Ok(copied);
                }
                // This backup, damaged at the destination: its objects are written again
                // (new versions in a versioned store), then its manifest; nothing of it is
                // deleted (a locked store would refuse, and a failure keeps what was there).
                Err(e) if damaged(&e) => {
                    tracing::warn!(
                        "the copy at {} is damaged ({e}); copying it again",
                        to.location(to_folder)
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }

    let written = copy_contents(from, from_folder, to, to_folder, &manifest, options).await;
    let result = match written {
        Ok(server_side) => {
            copied.server_side = server_side;
            to.put_bytes(&target, &bytes).await.map_err(CopyError::from)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        discard(to, to_folder, &manifest).await;
        return Err(e);
    }
    // Read back: a store that kept other bytes than it was given is found now, not at
    // restore time.
    let back = to.get_bytes(&target, MAX_MANIFEST_BYTES).await?;
    let found = hex::encode(Sha256::digest(&back));
    if found != sha {
        // Not a backup: removed, so that a later attempt is not refused as another backup.
        let _ = to.delete(&target).await;
        discard(to, to_folder, &manifest).await;
        return Err(IntegrityError::Mismatch {
            location: to.location(&target),
            what: "SHA-256",
            found,
            expected: sha,
        }
        .into());
    }
    Ok(copied)
}

/// Copies the data objects and the key object, each checked at the destination; returns how
/// many objects the server copied.
async fn copy_contents(
    from: &Store,
    from_folder: &str,
    to: &Store,
    to_folder: &str,
    manifest: &Manifest,
    options: CopyOptions<'_>,
) -> Result<usize, CopyError> {
    let mut server_side = 0;
    for record in &manifest.objects {
        let source = format!("{from_folder}{}", record.name);
        let key = format!("{to_folder}{}", record.name);
        // A service that refuses to copy (across buckets, or credentials that may not read
        // the source) leaves it to the stream.
        let by_server = options.server_side
            && record.stored_bytes <= MAX_SERVER_COPY
            && match to.copy_within(from, &source, &key).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::info!(
                        "the S3 service did not copy {source} itself ({e}); streaming it"
                    );
                    false
                }
            };
        if by_server {
            server_side += 1;
        } else {
            let reader = from.get(&source).await?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let mut checked = Checked {
                inner: reader,
                hasher: Sha256::new(),
                bytes: 0,
                record,
                location: from.location(&source),
                commit: Some(tx),
            };
            to.put_stream(&key, &mut checked, rx).await.map_err(|e| {
                // The source's damage, found as it passed, says more than the aborted write.
                match checked.damage() {
                    Some(damage) => CopyError::Integrity(damage),
                    None => e.into(),
                }
            })?;
        }
        pipeline::verify_object(to, &key, record, &Codec::plain(manifest.compression), false)
            .await?;
    }
    if let Some(record) = &manifest.encryption {
        if !keys::valid_keys_name(&record.keys) {
            // `check` below says what is wrong with it.
            keys::check(from, from_folder, manifest).await?;
        }
        let bytes = from
            .get_bytes(&format!("{from_folder}{}", record.keys), MAX_KEYS_BYTES)
            .await?;
        to.put_bytes(&format!("{to_folder}{}", record.keys), &bytes)
            .await?;
        keys::check(to, to_folder, manifest).await?;
    }
    Ok(server_side)
}

/// Reads the manifest of the backup in `folder` (refusing one whose SHA-256 is not
/// `expected`) and checks every object's size and SHA-256 and the key object, without
/// decrypting anything: whether the backup is whole, before a restore relies on it.
pub async fn check_whole(
    store: &Store,
    folder: &str,
    expected: Option<&str>,
) -> Result<Manifest, CopyError> {
    let manifest = super::catalog::read_manifest_expecting(store, folder, expected)
        .await
        .map_err(|e| match e {
            // The store itself is gone: as lost as the backup.
            ReadManifestError::Storage(StorageError::NoSuchBucket { .. }) => {
                ReadManifestError::Missing {
                    location: store.location(&format!("{folder}{MANIFEST}")),
                }
            }
            other => other,
        })?;
    check_at(store, folder, &manifest).await?;
    Ok(manifest)
}

/// Whether the destination's copy is missing objects or holds other bytes.
fn damaged(e: &CopyError) -> bool {
    match e {
        CopyError::Integrity(IntegrityError::Storage(StorageError::NotFound { .. })) => true,
        CopyError::Integrity(i) => i.is_mismatch(),
        CopyError::Storage(StorageError::NotFound { .. }) => true,
        CopyError::Keys(UnlockError::Key(keys::KeyError::Damaged { .. })) => true,
        _ => false,
    }
}

/// That every object of the backup in `folder` matches its manifest, and its key object is
/// there (without decrypting anything).
async fn check_at(store: &Store, folder: &str, manifest: &Manifest) -> Result<(), CopyError> {
    for record in &manifest.objects {
        let key = format!("{folder}{}", record.name);
        pipeline::verify_object(
            store,
            &key,
            record,
            &Codec::plain(manifest.compression),
            false,
        )
        .await?;
    }
    keys::check(store, folder, manifest).await?;
    Ok(())
}

/// Removes what a failed copy wrote (best effort), unless a manifest appeared after all.
async fn discard(store: &Store, folder: &str, manifest: &Manifest) {
    if store
        .get_bytes(&format!("{folder}{MANIFEST}"), MAX_MANIFEST_BYTES)
        .await
        .is_ok()
    {
        return;
    }
    store.discard(folder, &manifest.objects).await;
    if let Some(record) = &manifest.encryption
        && keys::valid_keys_name(&record.keys)
    {
        let key = format!("{folder}{}", record.keys);
        if let Err(e) = store.delete(&key).await {
            tracing::warn!("could not remove {key} of the failed copy: {e}");
        }
    }
}

/// Passes a source object on while hashing it; at its end, commits the write only if the
/// size and SHA-256 match the manifest, and fails the read otherwise.
struct Checked<'a> {
    inner: ObjectReader,
    hasher: Sha256,
    bytes: u64,
    record: &'a ObjectRecord,
    location: String,
    commit: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Checked<'_> {
    /// How the bytes read differ from the manifest, once they are all read.
    fn damage(&self) -> Option<IntegrityError> {
        if self.commit.is_some() {
            return None;
        }
        let found = hex::encode(self.hasher.clone().finalize());
        if self.bytes != self.record.stored_bytes {
            return Some(IntegrityError::Mismatch {
                location: self.location.clone(),
                what: "size",
                found: self.bytes.to_string(),
                expected: self.record.stored_bytes.to_string(),
            });
        }
        (!found.eq_ignore_ascii_case(&self.record.sha256)).then(|| IntegrityError::Mismatch {
            location: self.location.clone(),
            what: "SHA-256",
            found,
            expected: self.record.sha256.clone(),
        })
    }
}

impl AsyncRead for Checked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.hasher.update(read);
            this.bytes += read.len() as u64;
            return Poll::Ready(Ok(()));
        }
        // The end: the write is committed only for the bytes the manifest describes.
        let Some(commit) = this.commit.take() else {
            return Poll::Ready(Ok(()));
        };
        if let Some(damage) = this.damage() {
            return Poll::Ready(Err(std::io::Error::other(damage.to_string())));
        }
        let _ = commit.send(());
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::storage::Destination;
    use crate::storage::manifest::{SourceInfo, Stats};

    fn record(name: &str, bytes: &[u8]) -> ObjectRecord {
        ObjectRecord {
            name: name.to_owned(),
            format: "tar".to_owned(),
            raw_bytes: bytes.len() as u64,
            raw_sha256: hex::encode(Sha256::digest(bytes)),
            stored_bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            database: None,
        }
    }

    fn manifest(objects: Vec<ObjectRecord>) -> Manifest {
        Manifest {
            format_version: 1,
            coffer_version: "test".to_owned(),
            name: "t".to_owned(),
            source: SourceInfo {
                kind: "volume".to_owned(),
                address: "/data".to_owned(),
                server_version: None,
                mode: None,
                database: None,
                rdb_version: None,
                tool: None,
                position: None,
            },
            started_at: chrono::Utc::now(),
            completed_at: chrono::Utc::now(),
            compression: crate::api::Compression::None,
            objects,
            stats: Stats::default(),
            owner: None,
            encryption: None,
        }
    }

    async fn dir_store(dir: &std::path::Path) -> Store {
        Store::open(
            &Destination::Dir(dir.to_owned()),
            &crate::storage::S3Options::default(),
        )
        .await
    }

    async fn backup(store: &Store, folder: &str, objects: &[(&str, &[u8])]) -> Manifest {
        let mut records = Vec::new();
        for (name, bytes) in objects {
            store
                .put_bytes(&format!("{folder}{name}"), bytes)
                .await
                .unwrap();
            records.push(record(name, bytes));
        }
        let manifest = manifest(records);
        store.put_manifest(folder, &manifest).await.unwrap();
        manifest
    }

    #[tokio::test]
    async fn a_copy_is_byte_for_byte_with_the_same_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir_store(&dir.path().join("a")).await;
        let to = dir_store(&dir.path().join("b")).await;
        backup(
            &from,
            "x/1/",
            &[("one.tar", b"first"), ("two.tar", b"second")],
        )
        .await;
        let copied = copy_backup(&from, "x/1/", &to, "y/1/", CopyOptions::default())
            .await
            .unwrap();
        assert_eq!(
            (copied.objects, copied.bytes, copied.already),
            (2, 11, false)
        );
        for name in ["one.tar", "two.tar", MANIFEST] {
            assert_eq!(
                from.get_bytes(&format!("x/1/{name}"), 1 << 20)
                    .await
                    .unwrap(),
                to.get_bytes(&format!("y/1/{name}"), 1 << 20).await.unwrap(),
                "{name}"
            );
        }
        // Again: the destination holds it already, checked, nothing written.
        let again = copy_backup(&from, "x/1/", &to, "y/1/", CopyOptions::default())
            .await
            .unwrap();
        assert!(again.already);
    }

    #[tokio::test]
    async fn a_damaged_copy_of_the_same_backup_is_copied_again() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir_store(&dir.path().join("a")).await;
        let to = dir_store(&dir.path().join("b")).await;
        backup(&from, "", &[("one.tar", b"first")]).await;
        copy_backup(&from, "", &to, "", CopyOptions::default())
            .await
            .unwrap();
        to.put_bytes("one.tar", b"FIRST").await.unwrap();
        let again = copy_backup(&from, "", &to, "", CopyOptions::default())
            .await
            .unwrap();
        assert!(!again.already);
        assert_eq!(to.get_bytes("one.tar", 100).await.unwrap(), b"first");
    }

    #[tokio::test]
    async fn a_damaged_source_object_leaves_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir_store(&dir.path().join("a")).await;
        let to = dir_store(&dir.path().join("b")).await;
        backup(&from, "", &[("one.tar", b"first"), ("two.tar", b"second")]).await;
        // Same size, other bytes: only the SHA-256 can tell.
        from.put_bytes("two.tar", b"SECOND").await.unwrap();
        let err = copy_backup(&from, "", &to, "", CopyOptions::default())
            .await
            .unwrap_err();
        assert!(err.is_source_damaged(), "{err}");
        assert!(err.to_string().contains("two.tar is damaged"), "{err}");
        assert!(to.list("").await.unwrap().is_empty(), "nothing is left");
    }

    #[tokio::test]
    async fn another_backup_at_the_destination_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir_store(&dir.path().join("a")).await;
        let to = dir_store(&dir.path().join("b")).await;
        backup(&from, "", &[("one.tar", b"first")]).await;
        backup(&to, "", &[("one.tar", b"other")]).await;
        let err = copy_backup(&from, "", &to, "", CopyOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, CopyError::Occupied { .. }), "{err}");
        assert_eq!(to.get_bytes("one.tar", 100).await.unwrap(), b"other");
    }

    #[tokio::test]
    async fn a_manifest_other_than_the_recorded_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir_store(&dir.path().join("a")).await;
        let to = dir_store(&dir.path().join("b")).await;
        backup(&from, "", &[("one.tar", b"first")]).await;
        let options = CopyOptions {
            manifest_sha256: Some(&"0".repeat(64)),
            server_side: false,
        };
        let err = copy_backup(&from, "", &to, "", options).await.unwrap_err();
        assert!(err.is_source_damaged(), "{err}");
        assert!(to.list("").await.unwrap().is_empty());
    }
}
