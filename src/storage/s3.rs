//! The S3 backend (`aws-sdk-s3`): multipart upload of streams of unknown length with bounded
//! memory, and plain reads, listings and deletes.

use crate::text::one_line;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::parts::{INITIAL_PART_SIZE, MAX_PARTS, part_size};
use super::{Commit, ObjectInfo, ObjectReader, StorageError};

/// Aborts of multipart uploads whose writer was dropped mid-way (a cancelled backup): a
/// worker that stops early waits for them (see [`finish_cleanup`]), so that no open upload
/// is left behind.
static CLEANUP: std::sync::LazyLock<tokio_util::task::TaskTracker> =
    std::sync::LazyLock::new(tokio_util::task::TaskTracker::new);

/// Waits (at most `limit`) for the aborts of cancelled uploads to reach the store.
pub async fn finish_cleanup(limit: std::time::Duration) {
    CLEANUP.close();
    if tokio::time::timeout(limit, CLEANUP.wait()).await.is_err() {
        tracing::warn!(
            "an open multipart upload may be left behind: `coffer gc` or a bucket lifecycle rule removes it"
        );
    }
}

/// Aborts a multipart upload when dropped while still armed (`upload_id` set).
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let abort = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id);
        CLEANUP.spawn_on(
            async move {
                let _ = abort.send().await;
            },
            &runtime,
        );
    }
}

/// How to reach S3. Unset values come from the standard `AWS_*` environment variables and
/// files (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
#[derive(Clone, Default)]
pub struct S3Options {
    /// Access key id and secret; default: the AWS SDK's credential chain (environment,
    /// profile, web identity, ...).
    pub credentials: Option<(String, String)>,
    /// Endpoint URL of an S3-compatible store.
    pub endpoint: Option<String>,
    /// Region; default `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing; default: on when an endpoint is set (self-hosted stores need
    /// it), off for AWS.
    pub force_path_style: Option<bool>,
    /// Send request checksums only when an operation requires them, for S3-compatible
    /// stores that reject the SDK's default checksum trailers.
    pub checksums_when_required: bool,
    /// First part size of multipart uploads (default 8 MiB; tests use less).
    pub part_size: Option<usize>,
    /// Parts uploaded at once (default 4).
    pub parts_in_flight: Option<usize>,
    /// Every object written is locked until a date (S3 Object Lock).
    pub lock: Option<super::lock::Lock>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("checksums_when_required", &self.checksums_when_required)
            .finish_non_exhaustive()
    }
}

/// A bucket and a key prefix used as a store.
#[derive(Clone, Debug)]
pub struct S3Store {
    pub(super) client: Client,
    pub(super) bucket: String,
    pub(super) prefix: String,
    part_size: usize,
    parts_in_flight: usize,
    /// The lock every object written gets.
    pub(super) lock: Option<super::lock::Lock>,
    /// Whether the bucket keeps versions (asked once): deletions then remove every version
    /// by its id, since a plain delete only hides the object behind a delete marker.
    pub(super) versioned: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl S3Store {
    pub async fn connect(bucket: String, prefix: String, options: &S3Options) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &options.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((id, secret)) = &options.credentials {
            let credentials =
                aws_sdk_s3::config::Credentials::new(id, secret, None, None, "coffer");
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            config = config.region(Region::new("us-east-1"));
        }
        let custom_endpoint = shared.endpoint_url().is_some();
        config = config.force_path_style(options.force_path_style.unwrap_or(custom_endpoint));
        // A store that accepts connections and then stops answering fails the run instead of
        // hanging it: connecting may take 10 s, and a response may pause for at most 60 s.
        config = config.timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .read_timeout(std::time::Duration::from_secs(60))
                .build(),
        );
        if options.checksums_when_required {
            config = config
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Self {
            client: Client::from_conf(config.build()),
            bucket,
            prefix,
            part_size: options.part_size.unwrap_or(INITIAL_PART_SIZE),
            parts_in_flight: options.parts_in_flight.unwrap_or(4).max(1),
            lock: options.lock,
            versioned: std::sync::Arc::default(),
        }
    }

    /// The same bucket, one folder deeper.
    pub fn at(&self, folder: &str) -> Self {
        Self {
            prefix: format!("{}{folder}", self.prefix),
            ..self.clone()
        }
    }

    pub(super) fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// `s3://bucket/prefix/key`.
    pub fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(key))
    }

    pub(super) fn error<E, R>(
        &self,
        operation: &'static str,
        key: &str,
        err: SdkError<E, R>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let location = self.location(key);
        let context = one_line(&DisplayErrorContext(&err).to_string());
        if context.contains("no credentials") {
            return StorageError::NoCredentials { location };
        }
        if matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
        ) {
            return StorageError::Unreachable {
                location,
                detail: context,
            };
        }
        match err.code() {
            Some("NoSuchBucket") => StorageError::NoSuchBucket {
                bucket: self.bucket.clone(),
            },
            Some("NoSuchKey" | "NotFound") => StorageError::NotFound { location },
            Some(code @ ("InvalidAccessKeyId" | "SignatureDoesNotMatch")) => {
                StorageError::Credentials {
                    location,
                    code: code.to_owned(),
                }
            }
            Some("AccessDenied") => StorageError::AccessDenied { location },
            code => StorageError::S3 {
                operation,
                location,
                detail: match (code, err.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_owned(),
                    (None, _) => context,
                },
            },
        }
    }

    /// Uploads `reader` to `key`: one PutObject below one part, else a multipart upload with
    /// at most `parts_in_flight` parts in memory at once. The object is completed only if
    /// `commit` says so; otherwise, and on any error, the multipart upload is aborted.
    pub async fn put_stream(
        &self,
        key: &str,
        reader: &mut (impl AsyncRead + Unpin + Send),
        commit: Commit,
    ) -> Result<u64, StorageError> {
        let first_size = part_size(self.part_size, 0);
        let first = read_part(reader, first_size, &self.location(key)).await?;
        if first.len() < first_size {
            let bytes = first.len() as u64;
            if commit.await.is_err() {
                return Err(StorageError::Abandoned {
                    location: self.location(key),
                });
            }
            self.locked_put(self.client.put_object())
                .bucket(&self.bucket)
                .key(self.key(key))
                .body(ByteStream::from(first))
                .send()
                .await
                .map_err(|e| self.error("PutObject", key, e))?;
            return Ok(bytes);
        }
        let upload = self.create_upload(key).await?;
        let Some(upload_id) = upload.upload_id().map(str::to_owned) else {
            return Err(StorageError::S3 {
                operation: "CreateMultipartUpload",
                location: self.location(key),
                detail: "the response has no upload id".to_owned(),
            });
        };
        // Dropped before the upload ends (the backup was cancelled, for example on SIGTERM):
        // the upload is aborted in the background, and the worker waits for that.
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: self.key(key),
            upload_id: Some(upload_id.clone()),
        };
        let result = self
            .upload_parts(key, &upload_id, first, reader, commit)
            .await;
        guard.upload_id = None;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(self.key(key))
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    /// CreateMultipartUpload, in a task of its own that outlives a cancelled caller: the
    /// store may have opened the upload before the caller stopped waiting, and then only
    /// the answer knows its id. An answer nobody reads aborts its upload, and a worker that
    /// stops early waits for that like for the other aborts (see [`finish_cleanup`]).
    async fn create_upload(&self, key: &str) -> Result<CreateMultipartUploadOutput, StorageError> {
        let request = self
            .locked_upload(self.client.create_multipart_upload())
            .bucket(&self.bucket)
            .key(self.key(key));
        let (client, bucket, full_key) = (self.client.clone(), self.bucket.clone(), self.key(key));
        let (answer, waiting) = tokio::sync::oneshot::channel();
        CLEANUP.spawn(async move {
            let result = request.send().await;
            // The answer travels with a guard that aborts the upload when dropped unread:
            // here if the caller has gone, or with the channel if it goes before reading.
            let guard = result.as_ref().ok().map(|upload| AbortOnDrop {
                client,
                bucket,
                key: full_key,
                upload_id: upload.upload_id().map(str::to_owned),
            });
            drop(answer.send((result, guard)));
        });
        match waiting.await {
            Ok((result, guard)) => {
                if let Some(mut guard) = guard {
                    // From here on put_stream's own guard answers for the upload.
                    guard.upload_id = None;
                }
                result.map_err(|e| self.error("CreateMultipartUpload", key, e))
            }
            Err(_) => Err(StorageError::S3 {
                operation: "CreateMultipartUpload",
                location: self.location(key),
                detail: "the request's task ended without an answer".to_owned(),
            }),
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Vec<u8>,
        reader: &mut (impl AsyncRead + Unpin + Send),
        commit: Commit,
    ) -> Result<u64, StorageError> {
        let mut in_flight: JoinSet<Result<CompletedPart, StorageError>> = JoinSet::new();
        let mut done = Vec::new();
        let mut total = 0u64;
        let mut next = Some(first);
        let mut index = 0usize;
        while let Some(body) = next.take() {
            if body.is_empty() {
                break;
            }
            let size = part_size(self.part_size, index);
            let last = body.len() < size;
            total += body.len() as u64;
            let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
            if index >= MAX_PARTS {
                return Err(StorageError::S3 {
                    operation: "UploadPart",
                    location: self.location(key),
                    detail: format!("the stream needs more than {MAX_PARTS} parts"),
                });
            }
            while in_flight.len() >= self.parts_in_flight {
                done.push(join_next(&mut in_flight).await?);
            }
            let store = self.clone();
            let (part_key, part_upload) = (key.to_owned(), upload_id.to_owned());
            in_flight.spawn(async move {
                store
                    .upload_part(&part_key, &part_upload, number, body)
                    .await
            });
            index += 1;
            if !last {
                let size = part_size(self.part_size, index);
                next = Some(read_part(reader, size, &self.location(key)).await?);
            }
        }
        while !in_flight.is_empty() {
            done.push(join_next(&mut in_flight).await?);
        }
        if commit.await.is_err() {
            return Err(StorageError::Abandoned {
                location: self.location(key),
            });
        }
        done.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.key(key))
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("CompleteMultipartUpload", key, e))?;
        Ok(total)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<CompletedPart, StorageError> {
        let part = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.key(key))
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error("UploadPart", key, e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(part.e_tag().map(str::to_owned))
            .build())
    }

    /// Checks that the bucket exists and the credentials may list it.
    pub async fn preflight(&self) -> Result<(), StorageError> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.error("ListObjectsV2", "", e))?;
        Ok(())
    }

    pub async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.locked_put(self.client.put_object())
            .bucket(&self.bucket)
            .key(self.key(key))
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, e))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|e| self.error("GetObject", key, e))?;
        Ok(Box::new(object.body.into_async_read()))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.key(prefix))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                let Some(key) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                found.push(ObjectInfo {
                    key: key.to_owned(),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    modified: object
                        .last_modified()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                });
            }
        }
        Ok(found)
    }

    /// Multipart uploads that were started and never completed nor aborted, below `prefix`:
    /// (key, upload id, when it was started).
    pub async fn open_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, Option<chrono::DateTime<chrono::Utc>>)>, StorageError> {
        let mut found = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.key(prefix))
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.error("ListMultipartUploads", prefix, e))?;
            for upload in page.uploads() {
                let (Some(full), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let Some(key) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                let started = upload
                    .initiated()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0));
                found.push((key.to_owned(), id.to_owned(), started));
            }
            if page.is_truncated() != Some(true) {
                return Ok(found);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(found);
            }
        }
    }

    /// Aborts an open multipart upload.
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.key(key))
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", key, e))?;
        Ok(())
    }

    /// `CopyObject` of `source` in `from` (a store of the same service, reachable with this
    /// store's credentials) to `key`.
    pub async fn copy_from(
        &self,
        from: &S3Store,
        source: &str,
        key: &str,
    ) -> Result<(), StorageError> {
        use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
        // The copy source is `bucket/key`, URL-encoded except for what keys are made of.
        const KEEP: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'/')
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let copy_source = format!(
            "{}/{}",
            from.bucket,
            utf8_percent_encode(&from.key(source), KEEP)
        );
        self.locked_copy(self.client.copy_object())
            .bucket(&self.bucket)
            .key(self.key(key))
            .copy_source(copy_source)
            .send()
            .await
            .map_err(|e| self.error("CopyObject", key, e))?;
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        if self.is_versioned().await {
            return self.delete_versions(key).await;
        }
        self.delete_by_key(key).await
    }

    pub(super) async fn delete_by_key(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", key, e))?;
        Ok(())
    }
}

async fn join_next(
    set: &mut JoinSet<Result<CompletedPart, StorageError>>,
) -> Result<CompletedPart, StorageError> {
    match set.join_next().await {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(StorageError::S3 {
            operation: "UploadPart",
            location: String::new(),
            detail: format!("an upload task failed: {e}"),
        }),
        None => Err(StorageError::S3 {
            operation: "UploadPart",
            location: String::new(),
            detail: "no upload in flight".to_owned(),
        }),
    }
}

/// Reads up to `size` bytes (less only at the end of the stream).
async fn read_part(
    reader: &mut (impl AsyncRead + Unpin + Send),
    size: usize,
    location: &str,
) -> Result<Vec<u8>, StorageError> {
    let mut part = Vec::with_capacity(size);
    let mut limited = reader.take(size as u64);
    limited
        .read_to_end(&mut part)
        .await
        .map_err(|e| StorageError::io("reading the data for", location.to_owned(), e))?;
    Ok(part)
}
