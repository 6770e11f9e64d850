//! S3 Object Lock: every object of a backup written once with a retain-until date, and
//! deletions that work in the versioned buckets object lock needs.
//!
//! In a versioned bucket, a `DeleteObject` without a version id *succeeds* and only hides the
//! object behind a delete marker: the data stays (and is billed). So in a versioned bucket
//! Coffer deletes each version of a key by its id; a locked version is refused with
//! `AccessDenied`, which becomes [`StorageError::Retained`] with the version's date. Coffer
//! never asks to bypass Governance retention.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder;
use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, ObjectLockEnabled, ObjectLockMode,
    ObjectLockRetentionMode,
};
use chrono::{DateTime, Utc};

use super::StorageError;

/// A failed `ListObjectVersions`.
type VersionsError = aws_sdk_s3::error::SdkError<
    aws_sdk_s3::operation::list_object_versions::ListObjectVersionsError,
    aws_sdk_s3::config::http::HttpResponse,
>;
use super::s3::S3Store;
use crate::api::ObjectLockMode as Mode;

/// The lock every object written gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    pub mode: Mode,
    pub until: DateTime<Utc>,
}

impl Lock {
    fn mode(self) -> ObjectLockMode {
        match self.mode {
            Mode::Governance => ObjectLockMode::Governance,
            Mode::Compliance => ObjectLockMode::Compliance,
        }
    }

    fn until(self) -> aws_sdk_s3::primitives::DateTime {
        aws_sdk_s3::primitives::DateTime::from_secs(self.until.timestamp())
    }
}

/// Why a bucket does not fit the lock asked for.
#[derive(Debug, thiserror::Error)]
pub enum LockCheckError {
    #[error(
        "bucket {bucket:?} has no object lock, so objects cannot be locked there: create a bucket with object lock enabled (most services cannot turn it on later), or remove objectLock"
    )]
    NotEnabled { bucket: String },
    #[error(
        "bucket {bucket:?} has a default retention rule ({rule}): it would lock every object for its own period, including Coffer's check object; remove the bucket's default rule, Coffer sets each backup's date itself"
    )]
    DefaultRule { bucket: String, rule: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl S3Store {
    pub(super) fn locked_put(&self, request: PutObjectFluentBuilder) -> PutObjectFluentBuilder {
        match self.lock {
            // A locked write needs a checksum (AWS refuses it without one).
            Some(lock) => request
                .object_lock_mode(lock.mode())
                .object_lock_retain_until_date(lock.until())
                .checksum_algorithm(ChecksumAlgorithm::Crc32),
            None => request,
        }
    }

    pub(super) fn locked_upload(
        &self,
        request: CreateMultipartUploadFluentBuilder,
    ) -> CreateMultipartUploadFluentBuilder {
        match self.lock {
            Some(lock) => request
                .object_lock_mode(lock.mode())
                .object_lock_retain_until_date(lock.until()),
            None => request,
        }
    }

    pub(super) fn locked_copy(&self, request: CopyObjectFluentBuilder) -> CopyObjectFluentBuilder {
        match self.lock {
            Some(lock) => request
                .object_lock_mode(lock.mode())
                .object_lock_retain_until_date(lock.until()),
            None => request,
        }
    }

    /// Whether the bucket keeps versions (asked once). A store that cannot say is asked again
    /// next time, and meanwhile treated as versioned (deleting by version id works in an
    /// unversioned bucket too; deleting by key would only hide data in a versioned one).
    pub(super) async fn is_versioned(&self) -> bool {
        if let Some(known) = self.versioned.get() {
            return *known;
        }
        match self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(v) => {
                let versioned = matches!(
                    v.status(),
                    Some(BucketVersioningStatus::Enabled | BucketVersioningStatus::Suspended)
                );
                let _ = self.versioned.set(versioned);
                versioned
            }
            Err(e) => {
                tracing::warn!(
                    "cannot tell whether bucket {} keeps versions ({}); deleting by version id",
                    self.bucket,
                    e.code().unwrap_or("no answer")
                );
                true
            }
        }
    }

    /// Whether deletions here go by version id (see [`Self::is_versioned`]).
    pub async fn is_versioned_bucket(&self) -> bool {
        self.is_versioned().await
    }

    /// Every key below `prefix` that has a version or a delete marker (in a versioned
    /// bucket, a key hidden behind a delete marker still holds data); `None` when the store
    /// does not list versions.
    pub async fn versioned_keys(&self, prefix: &str) -> Option<Vec<String>> {
        let keys: std::collections::BTreeSet<String> = self
            .versions(&self.key(prefix))
            .await
            .ok()?
            .into_iter()
            .filter_map(|(key, _)| key.strip_prefix(&self.prefix).map(str::to_owned))
            .collect();
        Some(keys.into_iter().collect())
    }

    /// The (full key, version id) of every version and delete marker below `full`.
    async fn versions(&self, full: &str) -> Result<Vec<(String, String)>, VersionsError> {
        let mut found = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(full)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await?;
            let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
            let markers = page
                .delete_markers()
                .iter()
                .map(|m| (m.key(), m.version_id()));
            for (key, id) in versions.chain(markers) {
                if let Some(key) = key {
                    found.push((key.to_owned(), id.unwrap_or("null").to_owned()));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() && version_marker.is_none() {
                break;
            }
        }
        Ok(found)
    }

    /// Deletes every version of `key` (and its delete markers) by id.
    pub(super) async fn delete_versions(&self, key: &str) -> Result<(), StorageError> {
        let full = self.key(key);
        let ids: Vec<String> = match self.versions(&full).await {
            Ok(found) => found
                .into_iter()
                .filter(|(k, _)| *k == full)
                .map(|(_, id)| id)
                .collect(),
            // A store without versions at all (no ListObjectVersions): by key.
            Err(e) if e.code() == Some("NotImplemented") => {
                return self.delete_by_key(key).await;
            }
            Err(e) => return Err(self.error("ListObjectVersions", key, e)),
        };
        for id in ids {
            let deleted = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .version_id(&id)
                .send()
                .await;
            match deleted {
                Ok(_) => {}
                Err(e) if e.code() == Some("AccessDenied") => {
                    let location = self.location(key);
                    // Locked only if the store says until a date still ahead; otherwise the
                    // credentials lack the permission (or a legal hold is on it).
                    return Err(match self.retained_until(&full, &id).await {
                        Some(until) if until > Utc::now() => StorageError::Retained {
                            location,
                            until: Some(until),
                        },
                        _ => StorageError::VersionDeleteDenied { location },
                    });
                }
                Err(e) => return Err(self.error("DeleteObject", key, e)),
            }
        }
        Ok(())
    }

    /// The retain-until date of one version, if the store says.
    async fn retained_until(&self, full: &str, version: &str) -> Option<DateTime<Utc>> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .version_id(version)
            .send()
            .await
            .ok()?;
        let t = head.object_lock_retain_until_date()?;
        DateTime::from_timestamp(t.secs(), 0)
    }

    /// Locks `key` until `lock.until`, unless it is locked that long already (a lock is
    /// only ever lengthened: S3 refuses to shorten Compliance, and Coffer never shortens).
    pub async fn extend_lock(&self, key: &str, lock: Lock) -> Result<(), StorageError> {
        let full = self.key(key);
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.error("HeadObject", key, e))?;
        if head
            .object_lock_retain_until_date()
            .is_some_and(|t| t.secs() >= lock.until.timestamp())
        {
            return Ok(());
        }
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(match lock.mode {
                Mode::Governance => ObjectLockRetentionMode::Governance,
                Mode::Compliance => ObjectLockRetentionMode::Compliance,
            })
            .retain_until_date(lock.until())
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(&full)
            .retention(retention)
            .send()
            .await
            .map_err(|e| self.error("PutObjectRetention", key, e))?;
        Ok(())
    }

    /// Checks that the bucket can take objects locked in `mode`: object lock enabled, and no
    /// default retention rule.
    pub async fn check_lock(&self) -> Result<(), LockCheckError> {
        let config = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        let config = match config {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.code(),
                    Some("ObjectLockConfigurationNotFoundError" | "NoSuchObjectLockConfiguration")
                ) =>
            {
                return Err(LockCheckError::NotEnabled {
                    bucket: self.bucket.clone(),
                });
            }
            Err(e) => return Err(self.error("GetObjectLockConfiguration", "", e).into()),
        };
        let Some(config) = config.object_lock_configuration() else {
            return Err(LockCheckError::NotEnabled {
                bucket: self.bucket.clone(),
            });
        };
        if config.object_lock_enabled() != Some(&ObjectLockEnabled::Enabled) {
            return Err(LockCheckError::NotEnabled {
                bucket: self.bucket.clone(),
            });
        }
        if let Some(rule) = config.rule().and_then(|r| r.default_retention()) {
            let mode = match rule.mode() {
                Some(ObjectLockRetentionMode::Compliance) => "Compliance",
                Some(ObjectLockRetentionMode::Governance) => "Governance",
                _ => "a mode",
            };
            let period = match (rule.days(), rule.years()) {
                (Some(d), _) => format!("{d} days"),
                (_, Some(y)) => format!("{y} years"),
                _ => "a period".to_owned(),
            };
            return Err(LockCheckError::DefaultRule {
                bucket: self.bucket.clone(),
                rule: format!("{mode}, {period}"),
            });
        }
        Ok(())
    }
}
