//! The S3 server's store: `s3s-fs`, plus ListMultipartUploads, which `s3s-fs` does not
//! implement (so that `coffer gc` can find, and abort, the uploads a killed backup left open).
//!
//! `s3s-fs` keeps one `.upload-<id>.json` file in its root for each open upload, holding only
//! the access key that started it. [`Store`] records the bucket, key and start time next to
//! it, in `.coffer-upload-<id>.json`, when the upload is created, and removes that record once
//! the upload is closed; an upload is open while its `.upload-<id>.json` exists.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput,
    ListBucketsInput, ListBucketsOutput, ListMultipartUploadsInput, ListMultipartUploadsOutput,
    ListObjectsInput, ListObjectsOutput, ListObjectsV2Input, ListObjectsV2Output, ListPartsInput,
    ListPartsOutput, MultipartUpload, PutObjectInput, PutObjectOutput, Timestamp,
    UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, s3_error};
use serde::{Deserialize, Serialize};

use crate::s3_hold::Answer;
use crate::s3_tamper::{Shared, Tampering};

/// What an operation returns: the signature `#[async_trait]` gives the methods of [`S3`].
type Op<'a, T> = Pin<Box<dyn Future<Output = S3Result<S3Response<T>>> + Send + 'a>>;

/// The most uploads one ListMultipartUploads page holds (S3's own limit and default).
const MAX_UPLOADS: usize = 1000;

/// `s3s-fs` serving a directory, with ListMultipartUploads.
#[derive(Debug)]
pub(crate) struct Store {
    fs: Arc<s3s_fs::FileSystem>,
    root: PathBuf,
    tampering: Shared,
    journal: crate::s3_journal::Shared,
    holds: crate::s3_hold::Shared,
}

/// What is recorded of an open upload, next to `s3s-fs`'s own file.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    bucket: String,
    key: String,
    /// When it was started, in milliseconds since the Unix epoch.
    initiated_ms: u64,
}

/// An open upload, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Upload {
    key: String,
    id: String,
    initiated: SystemTime,
}

impl Store {
    /// `s3s-fs` on `root`, which must be the directory it was opened on.
    pub(crate) fn new(
        fs: s3s_fs::FileSystem,
        root: &Path,
        tampering: Shared,
        journal: crate::s3_journal::Shared,
        holds: crate::s3_hold::Shared,
    ) -> Self {
        Self {
            fs: Arc::new(fs),
            root: root.to_owned(),
            tampering,
            journal,
            holds,
        }
    }

    async fn put(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.put_object(req).await?;
        self.journal.written(&bucket, &key);
        self.holds.ready(Answer::Write, &bucket, &key).await;
        Ok(response)
    }

    async fn copy(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.copy_object(req).await?;
        self.journal.written(&bucket, &key);
        Ok(response)
    }

    async fn delete(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.delete_object(req).await?;
        self.journal.deleted(&bucket, &key);
        Ok(response)
    }

    async fn delete_many(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        let keys: Vec<String> = req
            .input
            .delete
            .objects
            .iter()
            .map(|o| o.key.clone())
            .collect();
        let response = self.fs.delete_objects(req).await?;
        for key in keys {
            self.journal.deleted(&bucket, &key);
        }
        Ok(response)
    }

    /// UploadPart, recording the part's size.
    async fn upload_part_recorded(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let size = req
            .input
            .content_length
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| s3_error!(MissingContentLength))?;
        let response = self.fs.upload_part(req).await?;
        self.journal.part(&bucket, &key, size);
        Ok(response)
    }

    /// GetObject, with a byte changed on the reads [`Tampering`] names.
    async fn get(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.holds.ready(Answer::Read, &bucket, &key).await;
        let change = Tampering::count(&self.tampering, &req.input.bucket, &req.input.key);
        let response = self.fs.get_object(req).await?;
        match change {
            Some(served) => crate::s3_tamper::changed(response, served).await,
            None => Ok(response),
        }
    }

    fn record_path(&self, id: &str) -> PathBuf {
        record_path(&self.root, id)
    }

    /// CreateMultipartUpload, recording the upload. It runs to its end even when the client
    /// goes away while it runs (a killed worker): `s3s-fs` opens the upload before the record is
    /// written, and a request future dropped between the two would leave an open upload that
    /// no listing shows, which no real S3 does.
    async fn create_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let (fs, root) = (Arc::clone(&self.fs), self.root.clone());
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = tokio::spawn(create_upload_recorded(fs, root, req))
            .await
            .map_err(S3Error::internal_error)??;
        self.holds.ready(Answer::UploadStart, &bucket, &key).await;
        Ok(response)
    }

    async fn complete_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let id = req.input.upload_id.clone();
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let result = self.fs.complete_multipart_upload(req).await;
        self.forget_if_closed(&id);
        if result.is_ok() {
            self.journal.written(&bucket, &key);
            self.holds.ready(Answer::Write, &bucket, &key).await;
        }
        result
    }

    async fn abort_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let id = req.input.upload_id.clone();
        let result = self.fs.abort_multipart_upload(req).await;
        self.forget_if_closed(&id);
        result
    }

    /// Removes an upload's record once `s3s-fs` no longer has it open (also after a failed
    /// completion that closed it nonetheless).
    fn forget_if_closed(&self, id: &str) {
        if is_upload_id(id) && !open_upload_ids(&self.root).iter().any(|open| open == id) {
            let _ = std::fs::remove_file(self.record_path(id));
        }
    }

    async fn list_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        if input.delimiter.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "the test server lists multipart uploads without a delimiter only"
            ));
        }
        if !self.root.join(&input.bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        let prefix = input.prefix.as_deref().unwrap_or("");
        let uploads = open_upload_ids(&self.root)
            .into_iter()
            .filter_map(|id| {
                let json = std::fs::read(self.record_path(&id)).ok()?;
                let record: Record = serde_json::from_slice(&json).ok()?;
                (record.bucket == input.bucket && record.key.starts_with(prefix)).then(|| Upload {
                    key: record.key,
                    id,
                    initiated: SystemTime::UNIX_EPOCH + Duration::from_millis(record.initiated_ms),
                })
            })
            .collect();
        let max = input
            .max_uploads
            .and_then(|m| usize::try_from(m).ok())
            .map_or(MAX_UPLOADS, |m| m.clamp(1, MAX_UPLOADS));
        let (page, truncated) = page(
            uploads,
            input.key_marker.as_deref(),
            input.upload_id_marker.as_deref(),
            max,
        );
        let last = page.last().filter(|_| truncated);
        let output = ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            next_key_marker: last.map(|u| u.key.clone()),
            next_upload_id_marker: last.map(|u| u.id.clone()),
            max_uploads: i32::try_from(max).ok(),
            is_truncated: Some(truncated),
            uploads: Some(
                page.into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.id),
                        initiated: Some(Timestamp::from(u.initiated)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

/// `s3s-fs`'s CreateMultipartUpload, then the record of the upload it opened.
async fn create_upload_recorded(
    fs: Arc<s3s_fs::FileSystem>,
    root: PathBuf,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let record = Record {
        bucket: req.input.bucket.clone(),
        key: req.input.key.clone(),
        initiated_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    let response = fs.create_multipart_upload(req).await?;
    let Some(id) = response.output.upload_id.as_deref() else {
        return Ok(response);
    };
    // Written aside and renamed, so that a listing never reads half a record.
    let path = record_path(&root, id);
    let partial = path.with_extension("json.partial");
    let json = serde_json::to_vec(&record).map_err(S3Error::internal_error)?;
    std::fs::write(&partial, json).map_err(S3Error::internal_error)?;
    std::fs::rename(&partial, &path).map_err(S3Error::internal_error)?;
    Ok(response)
}

/// Where the record of upload `id` is kept.
fn record_path(root: &Path, id: &str) -> PathBuf {
    root.join(format!(".coffer-upload-{id}.json"))
}

/// The ids of the uploads `s3s-fs` has open in `root`: one `.upload-<id>.json` each.
pub(crate) fn open_upload_ids(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let id = name.strip_prefix(".upload-")?.strip_suffix(".json")?;
            Some(id.to_owned())
        })
        .collect()
}

/// Whether `id` looks like an upload id of `s3s-fs` (a UUID), so naming no other file.
fn is_upload_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// One page of `uploads`, in S3's order (by key, then upload id), after the markers: the
/// uploads with a key after `key_marker`, and those with that key and an id after
/// `id_marker` (which counts only with a key marker). Also whether more follow. Pure.
fn page(
    mut uploads: Vec<Upload>,
    key_marker: Option<&str>,
    id_marker: Option<&str>,
    max: usize,
) -> (Vec<Upload>, bool) {
    uploads.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id)));
    let after = |u: &Upload| match key_marker {
        None => true,
        Some(marker) => {
            u.key.as_str() > marker
                || (u.key == marker && id_marker.is_some_and(|id| u.id.as_str() > id))
        }
    };
    let mut rest = uploads.into_iter().filter(after);
    let page: Vec<Upload> = rest.by_ref().take(max).collect();
    let truncated = rest.next().is_some();
    (page, truncated)
}

/// Implements [`S3`] operations with the signature `#[async_trait]` expands to (so that this
/// crate needs no dependency on it): `op(Input) -> Output;` hands the request to `s3s-fs` as
/// it is, `op(Input) -> Output by method;` to a method of [`Store`].
macro_rules! operations {
    ($($op:ident($input:ident) -> $output:ident $(by $method:ident)?;)*) => {
        $(
            fn $op<'life0, 'async_trait>(
                &'life0 self,
                req: S3Request<$input>,
            ) -> Op<'async_trait, $output>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                operations!(@call self, req, $op $(, $method)?)
            }
        )*
    };
    (@call $store:ident, $req:ident, $op:ident) => {
        $store.fs.$op($req)
    };
    (@call $store:ident, $req:ident, $op:ident, $method:ident) => {
        Box::pin($store.$method($req))
    };
}

/// Every operation `s3s-fs` implements (its `impl S3 for FileSystem`), the multipart ones
/// through [`Store`] to keep its records, and ListMultipartUploads.
impl S3 for Store {
    operations! {
        create_bucket(CreateBucketInput) -> CreateBucketOutput;
        copy_object(CopyObjectInput) -> CopyObjectOutput by copy;
        delete_bucket(DeleteBucketInput) -> DeleteBucketOutput;
        delete_object(DeleteObjectInput) -> DeleteObjectOutput by delete;
        delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput by delete_many;
        get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
        get_object(GetObjectInput) -> GetObjectOutput by get;
        head_bucket(HeadBucketInput) -> HeadBucketOutput;
        head_object(HeadObjectInput) -> HeadObjectOutput;
        list_buckets(ListBucketsInput) -> ListBucketsOutput;
        list_objects(ListObjectsInput) -> ListObjectsOutput;
        list_objects_v2(ListObjectsV2Input) -> ListObjectsV2Output;
        put_object(PutObjectInput) -> PutObjectOutput by put;
        upload_part(UploadPartInput) -> UploadPartOutput by upload_part_recorded;
        upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput;
        list_parts(ListPartsInput) -> ListPartsOutput;
        create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput
            by create_upload;
        complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput
            by complete_upload;
        abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput
            by abort_upload;
        list_multipart_uploads(ListMultipartUploadsInput) -> ListMultipartUploadsOutput
            by list_uploads;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(key: &str, id: &str) -> Upload {
        Upload {
            key: key.to_owned(),
            id: id.to_owned(),
            initiated: SystemTime::UNIX_EPOCH,
        }
    }

    fn names(page: &[Upload]) -> Vec<(&str, &str)> {
        page.iter()
            .map(|u| (u.key.as_str(), u.id.as_str()))
            .collect()
    }

    #[test]
    fn pages_follow_key_then_upload_id_after_the_markers() {
        let uploads = vec![
            upload("b", "2"),
            upload("a", "9"),
            upload("b", "1"),
            upload("c", "5"),
        ];
        let (first, more) = page(uploads.clone(), None, None, 2);
        assert_eq!(names(&first), [("a", "9"), ("b", "1")]);
        assert!(more);
        let (second, more) = page(uploads.clone(), Some("b"), Some("1"), 2);
        assert_eq!(names(&second), [("b", "2"), ("c", "5")]);
        assert!(!more);
        // A key marker alone skips every upload of that key; an id marker alone counts not.
        let (rest, _) = page(uploads.clone(), Some("b"), None, 10);
        assert_eq!(names(&rest), [("c", "5")]);
        let (all, more) = page(uploads, None, Some("5"), 10);
        assert_eq!(all.len(), 4);
        assert!(!more);
    }

    /// A gate on a runtime with one blocking thread: the file operations queued after it
    /// wait until it is opened, one at a time.
    struct Gate {
        open: std::sync::mpsc::Sender<()>,
        entered: std::sync::mpsc::Receiver<()>,
    }

    impl Gate {
        fn new() -> Self {
            let (open, wait) = std::sync::mpsc::channel();
            let (enter, entered) = std::sync::mpsc::channel();
            tokio::task::spawn_blocking(move || {
                let _ = enter.send(());
                let _ = wait.recv();
            });
            Self { open, entered }
        }

        /// Lets what waits behind this gate run, up to the next gate.
        fn step(self) -> Self {
            let next = Self::new();
            let _ = self.open.send(());
            next.entered.recv().unwrap();
            next
        }
    }

    fn request<T>(input: T) -> S3Request<T> {
        S3Request {
            input,
            method: http::Method::POST,
            uri: http::Uri::from_static("/bucket"),
            headers: http::HeaderMap::new(),
            extensions: http::Extensions::new(),
            credentials: None,
            region: None,
            service: None,
            trailing_headers: None,
        }
    }

    /// A client that goes away while its CreateMultipartUpload runs (a killed worker: hyper
    /// drops the request's future) right after `s3s-fs` opened the upload still leaves an
    /// upload that ListMultipartUploads shows, so that `coffer gc` can abort it.
    #[test]
    fn an_upload_whose_client_went_away_is_still_listed() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bucket")).unwrap();
        let store = Store::new(
            s3s_fs::FileSystem::new(root.path()).unwrap(),
            root.path(),
            Shared::default(),
            crate::s3_journal::Shared::default(),
            crate::s3_hold::Shared::default(),
        );
        let create = CreateMultipartUploadInput::builder()
            .bucket("bucket".to_owned())
            .key("folder/data".to_owned())
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut gate = Gate::new();
            gate.entered.recv().unwrap();
            {
                // One file operation at a time, until the upload is open; then dropped.
                let mut call = std::pin::pin!(store.create_upload(request(create)));
                while open_upload_ids(root.path()).is_empty() {
                    let polled = futures::poll!(call.as_mut());
                    assert!(
                        polled.is_pending(),
                        "finished before the upload was seen open"
                    );
                    tokio::task::yield_now().await;
                    gate = gate.step();
                }
            }
            let _ = gate.open.send(());
            // What still runs finishes; every open upload is listed.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let list = ListMultipartUploadsInput::builder()
                .bucket("bucket".to_owned())
                .build()
                .unwrap();
            let listed = store.list_uploads(request(list)).await.unwrap();
            let listed: Vec<_> = listed
                .output
                .uploads
                .unwrap_or_default()
                .into_iter()
                .filter_map(|u| u.upload_id)
                .collect();
            assert_eq!(
                listed,
                open_upload_ids(root.path()),
                "an open upload not listed"
            );
        });
    }

    #[test]
    fn only_upload_files_name_open_uploads() {
        let root = tempfile::tempdir().unwrap();
        for name in [
            ".upload-0f3a.json",
            ".coffer-upload-0f3a.json",
            ".upload_id-0f3a.part-1",
            "bucket",
        ] {
            std::fs::write(root.path().join(name), b"null").unwrap();
        }
        assert_eq!(open_upload_ids(root.path()), ["0f3a"]);
        assert!(is_upload_id("67e55044-10b1-426f-9247-bb680e5fe0c8"));
        assert!(!is_upload_id("../x"));
        assert!(!is_upload_id(""));
    }
}
