//! The data path shared by every engine: source stream → (tap) → compression → (encryption)
//! → upload, with the size and SHA-256 of the raw and of the stored bytes taken on the fly;
//! and back: download → integrity check → (decryption) → decompression.
//!
//! Memory is bounded: a 256 KiB read buffer, a 1 MiB pipe, the compressor's window and the
//! store's parts in flight, whatever the size of the data.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use async_compression::Level;
use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use async_compression::zstd::CParameter;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use crate::api::Compression;
use crate::storage::manifest::ObjectRecord;
use crate::storage::{StorageError, Store};

pub mod encryption;
pub mod fetch;

use encryption::{DataKey, Seal};

pub(crate) const READ_BUFFER: usize = 256 << 10;
const PIPE_BUFFER: usize = 1 << 20;
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// File-name suffix of each compression.
pub fn extension(compression: Compression) -> &'static str {
    match compression {
        Compression::Zstd => ".zst",
        Compression::Gzip => ".gz",
        Compression::None => "",
    }
}

/// The data path failed. `E` is the error of the caller's final check of its source.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError<E> {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Source(E),
    #[error("reading the source: {0}")]
    Read(std::io::Error),
    #[error("compressing: {0}")]
    Compress(std::io::Error),
    #[error("encrypting: {0}")]
    Encrypt(std::io::Error),
}

/// Bytes read from sources so far, for progress displays.
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn add(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What an uploaded object is: the backup's folder (ending in `/`) and the object's name in
/// it (which may hold `/`), what it holds once decompressed (recorded in the manifest, for
/// example `rdb`), how it is compressed, and what it is encrypted to, if it is.
#[derive(Clone, Copy, Debug)]
pub struct ObjectSpec<'a> {
    pub folder: &'a str,
    pub name: &'a str,
    pub format: &'a str,
    pub compression: Compression,
    pub effort: Effort,
    pub seal: Option<&'a Seal>,
}

/// How a stored object is read back: its compression, and the backup's data key when it is
/// encrypted.
#[derive(Clone, Debug)]
pub struct Codec {
    pub compression: Compression,
    pub key: Option<DataKey>,
}

impl Codec {
    /// A backup's objects': the manifest's compression, and the backup's data key when it
    /// is encrypted.
    pub fn of(manifest: &crate::storage::manifest::Manifest, key: Option<DataKey>) -> Self {
        Self {
            compression: manifest.compression,
            key,
        }
    }

    /// An unencrypted object's.
    pub fn plain(compression: Compression) -> Self {
        Self {
            compression,
            key: None,
        }
    }
}

/// How hard zstd works on an object (gzip always uses its default level).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Effort {
    /// Level 3, zstd's own default: the better trade for most data.
    #[default]
    Standard,
    /// Level 1, for SQL text dumps: on a sysbench-like MySQL dump it stores 10% less than
    /// level 3 (whose short matches in runs of digits cost more than they save) in 40% of
    /// the CPU time, and still less than `gzip -6`; on prose and code it stores about 14%
    /// more than level 3. MySQL Shell's dumps and XtraBackup default to it too.
    Fast,
}

/// Streams `source` into `object.key`, compressed. Every raw chunk is also sent to `tap` (an
/// inspector such as the RDB checker) when given. When the source ends, `check` decides
/// whether the data is good (it typically joins the task producing the source and the
/// inspector); only then is the object committed. On any failure nothing is left in the
/// store.
pub async fn upload<E>(
    store: &Store,
    object: ObjectSpec<'_>,
    source: &mut (impl AsyncRead + Unpin + Send),
    tap: Option<mpsc::Sender<Bytes>>,
    progress: &Progress,
    check: impl Future<Output = Result<(), E>>,
) -> Result<ObjectRecord, PipelineError<E>> {
    let key = format!("{}{}", object.folder, object.name);
    let (pipe_in, pipe_out) = tokio::io::duplex(PIPE_BUFFER);
    let (commit, committed) = oneshot::channel();
    let mut stored = hashing(pipe_out);
    let uploader = async {
        let bytes = store.put_stream(&key, &mut stored, committed).await?;
        Ok::<_, StorageError>((bytes, stored.into_observer().finish().1))
    };
    let producer = async {
        let raw = compress(source, pipe_in, object, tap, progress).await?;
        check.await.map_err(PipelineError::Source)?;
        let _ = commit.send(());
        Ok::<_, PipelineError<E>>(raw)
    };
    let (produced, uploaded) = tokio::join!(producer, uploader);
    match (produced, uploaded) {
        (Ok((raw_bytes, raw_sha256)), Ok((stored_bytes, sha256))) => Ok(ObjectRecord {
            name: object.name.to_owned(),
            format: object.format.to_owned(),
            raw_bytes,
            raw_sha256,
            stored_bytes,
            sha256,
            database: None,
        }),
        // The upload's own failure is the cause; the producer only saw a closed pipe.
        (_, Err(e)) if !matches!(e, StorageError::Abandoned { .. }) => Err(e.into()),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.into()),
    }
}

async fn compress<E>(
    source: &mut (impl AsyncRead + Unpin + Send),
    pipe: tokio::io::DuplexStream,
    object: ObjectSpec<'_>,
    tap: Option<mpsc::Sender<Bytes>>,
    progress: &Progress,
) -> Result<(u64, String), PipelineError<E>> {
    let (sink, sealing): (Box<dyn AsyncWrite + Unpin + Send>, _) = match object.seal {
        Some(seal) => {
            let (input, task) = seal.spawn(pipe).map_err(PipelineError::Encrypt)?;
            (Box::new(input), Some(task))
        }
        None => (Box::new(pipe), None),
    };
    let mut encoder = encoder(object.compression, object.effort, sink);
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        let n = source
            .read(&mut buffer)
            .await
            .map_err(PipelineError::Read)?;
        if n == 0 {
            break;
        }
        let chunk = &buffer[..n];
        hasher.update(chunk);
        total += n as u64;
        progress.add(n as u64);
        if let Some(tap) = &tap {
            // A tap that went away has failed; its owner reports why in `check`.
            let _ = tap.send(Bytes::copy_from_slice(chunk)).await;
        }
        encoder
            .write_all(chunk)
            .await
            .map_err(PipelineError::Compress)?;
    }
    drop(tap);
    encoder.shutdown().await.map_err(PipelineError::Compress)?;
    drop(encoder);
    if let Some(task) = sealing {
        task.await
            .map_err(|e| PipelineError::Encrypt(std::io::Error::other(e)))?
            .map_err(PipelineError::Encrypt)?;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

fn encoder(
    compression: Compression,
    effort: Effort,
    out: Box<dyn AsyncWrite + Unpin + Send>,
) -> Box<dyn AsyncWrite + Unpin + Send> {
    match compression {
        Compression::Zstd => {
            let workers = std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1);
            let workers = u32::try_from(workers).unwrap_or(1);
            // 2 MiB jobs instead of zstd's default (4 windows, 8 MiB at level 3): the same
            // speed, and about 45 MiB of memory instead of 125 MiB with 2 workers.
            Box::new(ZstdEncoder::with_quality_and_params(
                out,
                match effort {
                    Effort::Standard => Level::Default,
                    Effort::Fast => Level::Precise(1),
                },
                &[
                    CParameter::nb_workers(workers),
                    CParameter::job_size(ZSTD_JOB_SIZE),
                ],
            ))
        }
        Compression::Gzip => Box::new(GzipEncoder::with_quality(out, Level::Default)),
        Compression::None => out,
    }
}

/// The decrypted and decompressed contents of a stored object.
pub fn decoder<'a>(
    codec: &Codec,
    stored: impl AsyncRead + Unpin + Send + 'a,
) -> Box<dyn AsyncRead + Unpin + Send + 'a> {
    let buffered = match &codec.key {
        Some(key) => BufReader::with_capacity(
            READ_BUFFER,
            Box::new(encryption::open(stored, key)) as Box<dyn AsyncRead + Unpin + Send + 'a>,
        ),
        None => BufReader::with_capacity(READ_BUFFER, Box::new(stored) as _),
    };
    match codec.compression {
        Compression::Zstd => {
            let mut decoder = ZstdDecoder::new(buffered);
            decoder.multiple_members(true);
            Box::new(decoder)
        }
        Compression::Gzip => {
            let mut decoder = GzipDecoder::new(buffered);
            decoder.multiple_members(true);
            Box::new(decoder)
        }
        Compression::None => Box::new(buffered),
    }
}

/// An object that does not match its manifest entry.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{location} is damaged: {what} is {found}, the manifest says {expected}")]
    Mismatch {
        location: String,
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error("{location} is damaged: it cannot be decoded ({source})")]
    Decompress {
        location: String,
        #[source]
        source: std::io::Error,
    },
    /// The object matched when it was checked, but a later read of it for the restore did not:
    /// the store served other bytes the second time.
    #[error(
        "{location} changed while it was restored: {what} of what was read is {found}, the manifest says {expected} (it matched when it was checked before the restore; the store served other bytes)"
    )]
    Changed {
        location: String,
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error("reading {location} for the restore stopped: {detail}")]
    Interrupted { location: String, detail: String },
    #[error("{0}")]
    Spool(String),
}

impl IntegrityError {
    /// The bytes do not match the manifest (as opposed to: they could not be read).
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            Self::Mismatch { .. } | Self::Changed { .. } | Self::Decompress { .. }
        )
    }

    /// The store failed to send the object (as opposed to: it sent other bytes).
    pub fn is_read_failure(&self) -> bool {
        matches!(self, Self::Storage(_) | Self::Interrupted { .. })
    }

    /// The same finding, about bytes read again after the object had been checked.
    fn changed(self) -> Self {
        match self {
            Self::Mismatch {
                location,
                what,
                found,
                expected,
            } => Self::Changed {
                location,
                what,
                found,
                expected,
            },
            other => other,
        }
    }
}

/// Compares what was read of an object with its manifest entry: the stored size and SHA-256,
/// then (when it was decompressed) whether that worked and the raw size and SHA-256.
fn judge(
    location: &str,
    record: &ObjectRecord,
    stored: (u64, String),
    decoded: Option<Result<(u64, String), std::io::Error>>,
) -> Result<(), IntegrityError> {
    let mismatch = |what, found: String, expected: String| IntegrityError::Mismatch {
        location: location.to_owned(),
        what,
        found,
        expected,
    };
    let (bytes, sha) = stored;
    // A damaged object usually also breaks decompression; the checksum is the clearer
    // message, so it is checked first.
    if bytes != record.stored_bytes {
        return Err(mismatch(
            "the size",
            bytes.to_string(),
            record.stored_bytes.to_string(),
        ));
    }
    if sha != record.sha256 {
        return Err(mismatch("the SHA-256", sha, record.sha256.clone()));
    }
    match decoded {
        None => Ok(()),
        Some(Err(source)) => Err(IntegrityError::Decompress {
            location: location.to_owned(),
            source,
        }),
        Some(Ok((raw_bytes, raw_sha))) => {
            if raw_bytes != record.raw_bytes {
                return Err(mismatch(
                    "the decompressed size",
                    raw_bytes.to_string(),
                    record.raw_bytes.to_string(),
                ));
            }
            if raw_sha != record.raw_sha256 {
                return Err(mismatch(
                    "the decompressed SHA-256",
                    raw_sha,
                    record.raw_sha256.clone(),
                ));
            }
            Ok(())
        }
    }
}

/// Decompresses `stored` to its end: the raw size and SHA-256, or why it cannot be
/// decompressed.
async fn decoded_digest(
    stored: impl AsyncRead + Unpin + Send,
    codec: &Codec,
) -> Result<(u64, String), std::io::Error> {
    let mut decoded = hashing(decoder(codec, stored));
    tokio::io::copy(&mut decoded, &mut tokio::io::sink()).await?;
    Ok(decoded.into_observer().finish())
}

/// Reads a stored object through and checks its size and SHA-256 against the manifest;
/// with `raw`, also decrypts and decompresses it and checks the raw size and SHA-256.
pub async fn verify_object(
    store: &Store,
    key: &str,
    record: &ObjectRecord,
    codec: &Codec,
    raw: bool,
) -> Result<(), IntegrityError> {
    let location = store.location(key);
    let mut stored = hashing(store.get(key).await?);
    let decoded = if raw {
        Some(decoded_digest(&mut stored, codec).await)
    } else {
        None
    };
    // Whatever the decoder did not need still counts towards the stored size and hash.
    tokio::io::copy(&mut stored, &mut tokio::io::sink())
        .await
        .map_err(|e| StorageError::io("reading", location.clone(), e))?;
    judge(&location, record, stored.into_observer().finish(), decoded)
}

/// Something that looks at every byte an [`ObservedReader`] passes on.
pub trait Observe {
    fn observe(&mut self, bytes: &[u8]);
}

/// An [`AsyncRead`] that shows what passes through it to an [`Observe`]r.
pub struct ObservedReader<R, O> {
    inner: R,
    observer: O,
}

impl<R, O> ObservedReader<R, O> {
    pub fn new(inner: R, observer: O) -> Self {
        Self { inner, observer }
    }

    pub fn into_observer(self) -> O {
        self.observer
    }

    /// The reader inside.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: AsyncRead + Unpin, O: Observe + Unpin> AsyncRead for ObservedReader<R, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.observer.observe(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

/// Counts bytes and takes their SHA-256.
#[derive(Default)]
pub struct Hashed {
    hasher: Sha256,
    bytes: u64,
}

impl Hashed {
    /// Bytes seen and their SHA-256 (hex).
    pub fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl Observe for Hashed {
    fn observe(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }
}

impl Observe for Progress {
    fn observe(&mut self, bytes: &[u8]) {
        self.add(bytes.len() as u64);
    }
}

/// A reader that hashes what it passes on.
pub type HashingReader<R> = ObservedReader<R, Hashed>;

/// Wraps `inner` to hash what is read from it.
pub fn hashing<R>(inner: R) -> HashingReader<R> {
    ObservedReader::new(inner, Hashed::default())
}

/// The receiving end of an upload's tap, as a blocking [`std::io::Read`] for parsers that run
/// in `spawn_blocking` threads. It ends when the sender is dropped.
pub struct TapReader {
    receiver: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl TapReader {
    pub fn new(receiver: mpsc::Receiver<Bytes>) -> Self {
        Self {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for TapReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
