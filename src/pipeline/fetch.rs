//! Reading a backup's objects back for a restore, so that what is restored is exactly what
//! was checked against the manifest.
//!
//! [`prepare`] checks every object a restore needs before anything is written, in one of two
//! ways, chosen by room:
//!
//! - **Spooled** (when the stored objects fit in the spool directory, `TMPDIR` by default,
//!   leaving [`SPOOL_RESERVE`] free): each object is downloaded once into an unnamed file
//!   there while its size and SHA-256 are taken, and compared with the manifest. The restore
//!   then reads that copy, which nothing else can write: a store that serves other bytes on a
//!   later read cannot change what is restored. One read from the store.
//! - **Streamed** (no room, or spooling turned off): each object is read through once and
//!   checked (stored and decompressed size and SHA-256), so an object damaged in the store is
//!   refused before anything is written; the restore then reads it again.
//!
//! Either way, [`Prepared::open`] gives the restore a stream of the decompressed bytes that
//! are hashed again as they pass, and **holds back the object's last byte** (by the
//! manifest's count) until every stored byte has been read and matched the manifest. On a
//! mismatch the stream ends with an error instead: a consumer that needs the whole object
//! before it commits (`pg_restore` reading its archive to the end, in one transaction) never
//! commits bytes that did not match, and the [`Verdict`] names the mismatch
//! ([`IntegrityError::Changed`] when the object had matched before). What a consumer that
//! applies as it reads (Redis keys) has applied by then is the engine's to say.
//!
//! The limit of the streamed way: bytes that the store changed so that they form a shorter
//! complete input (a crafted archive that ends early) can be committed by a consumer before
//! the end of the object is read. Only a spooled restore rules that out; a store that can
//! rewrite objects can rewrite the manifest too, which no checksum stored beside the data
//! can catch.

use std::io::{self, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    Codec, IntegrityError, ObservedReader, Progress, READ_BUFFER, decoder, hashing, judge,
};
use crate::storage::manifest::ObjectRecord;
use crate::storage::{ObjectReader, StorageError, Store};

/// Space always left free in the spool directory's filesystem. The default directory also
/// leaves a tenth of its filesystem free (see [`reserve`]).
pub const SPOOL_RESERVE: u64 = 256 << 20;

/// Chunks in flight between the reader of an object and its restore.
const CHANNEL_CHUNKS: usize = 8;

/// `statfs`'s filesystem type of tmpfs (memory).
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Where a restore may keep its own copy of the objects it restores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spool {
    dir: Option<PathBuf>,
    /// Given by the user: used even on tmpfs, and an error when it cannot be used.
    explicit: bool,
    /// Leave only [`SPOOL_RESERVE`] free, not a tenth of the filesystem (which protects a
    /// worker's node from eviction; a user's own machine needs no such margin).
    small_reserve: bool,
    /// The most it may hold.
    limit: Option<u64>,
}

impl Default for Spool {
    /// The temporary directory (`TMPDIR`, else `/tmp`), unless it is in memory (tmpfs).
    fn default() -> Self {
        Self {
            dir: Some(std::env::temp_dir()),
            explicit: false,
            small_reserve: false,
            limit: None,
        }
    }
}

impl Spool {
    /// Never spool: check each object with one read, restore it with another.
    pub fn off() -> Self {
        Self {
            dir: None,
            explicit: false,
            small_reserve: false,
            limit: None,
        }
    }

    /// Spool into `dir` (given by the user) when there is room.
    pub fn in_dir(dir: PathBuf) -> Self {
        Self {
            dir: Some(dir),
            explicit: true,
            small_reserve: true,
            limit: None,
        }
    }

    /// The temporary directory unless it is in memory, as by default, leaving only
    /// [`SPOOL_RESERVE`] free: for the command line on a user's machine.
    pub fn temp_dir_on_disk() -> Self {
        Self {
            small_reserve: true,
            ..Self::default()
        }
    }

    /// Spool at most `bytes` (0: never).
    pub fn limited(mut self, bytes: u64) -> Self {
        self.limit = Some(bytes);
        self
    }

    /// The directory, if it can take `bytes` within the limit and still leave
    /// [`reserve`] free. A directory the user gave that cannot be examined is an error.
    fn room_for(&self, bytes: u64) -> Result<Option<&PathBuf>, IntegrityError> {
        let Some(dir) = self.dir.as_ref() else {
            return Ok(None);
        };
        if self.limit.is_some_and(|limit| bytes > limit) {
            return Ok(None);
        }
        let stats = match rustix::fs::statvfs(dir) {
            Ok(stats) => stats,
            Err(e) if self.explicit => {
                return Err(IntegrityError::Spool(format!(
                    "the spool directory {} cannot be used ({e}): give another --spool-dir, or --no-spool",
                    dir.display()
                )));
            }
            Err(_) => return Ok(None),
        };
        if !self.explicit && in_memory(dir) {
            return Ok(None);
        }
        let size = stats.f_blocks.saturating_mul(stats.f_frsize);
        let available = stats.f_bavail.saturating_mul(stats.f_frsize);
        Ok((available.saturating_sub(reserve(self.small_reserve, size)) >= bytes).then_some(dir))
    }
}

/// What a spool leaves free in a filesystem of `size` bytes: [`SPOOL_RESERVE`] in a
/// directory the user gave (they chose the place), and at least a tenth of the filesystem in
/// the default one, which is also a worker's temporary volume on the node's disk (the
/// kubelet starts evicting Pods when less than a tenth of it is free).
fn reserve(small: bool, size: u64) -> u64 {
    if small {
        SPOOL_RESERVE
    } else {
        SPOOL_RESERVE.max(size / 10)
    }
}

/// Whether `dir` is on tmpfs, where a spool would take memory.
fn in_memory(dir: &std::path::Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| u64::try_from(s.f_type).is_ok_and(|t| t == TMPFS_MAGIC))
}

/// How [`prepare`] checked the objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Downloaded once into the spool and checked there; the restore reads that copy.
    Spooled,
    /// Read through once from the store; the restore reads the store again.
    Streamed,
}

/// An object that matched its manifest entry, ready to be restored.
#[derive(Debug)]
pub struct Prepared {
    key: String,
    location: String,
    record: ObjectRecord,
    codec: Codec,
    spooled: Option<std::fs::File>,
    /// Read through and matched once before: a mismatch now means the store changed it.
    checked: bool,
}

/// [`prepare`] of a restore's databases' dumps and, last, of the object it loads after
/// them when it has one (PostgreSQL's globals, MySQL's accounts): the dumps in order, and
/// that object apart.
pub async fn prepare_dumps<'r>(
    store: &Store,
    folder: &str,
    dumps: impl IntoIterator<Item = &'r ObjectRecord>,
    last: Option<&'r ObjectRecord>,
    codec: &Codec,
    spool: &Spool,
    progress: &Progress,
) -> Result<(Vec<Prepared>, Option<Prepared>), IntegrityError> {
    let records: Vec<&ObjectRecord> = dumps.into_iter().chain(last).collect();
    let (_, mut prepared) = prepare(store, folder, &records, codec, spool, progress).await?;
    let last = last.and_then(|_| prepared.pop());
    Ok((prepared, last))
}

/// Checks the objects `records` of the backup in `folder` against the manifest before a
/// restore (see the module's documentation), spooling them when `spool` has room for all.
pub async fn prepare(
    store: &Store,
    folder: &str,
    records: &[&ObjectRecord],
    codec: &Codec,
    spool: &Spool,
    progress: &Progress,
) -> Result<(Checked, Vec<Prepared>), IntegrityError> {
    let total = records.iter().map(|r| r.stored_bytes).sum();
    if let Some(dir) = spool.room_for(total)? {
        let mut prepared = Vec::new();
        let mut spooled = true;
        for record in records {
            let mut object = Prepared::new(store, folder, record, codec);
            match download(store, &object, dir, progress).await {
                Ok(file) => object.spooled = Some(file),
                // The spool cannot take it after all (someone else took the room, or the
                // directory refuses): check in the store instead.
                Err(Spooling::Local(e)) => {
                    tracing::info!(
                        "cannot keep a copy of the backup in {} ({e}); checking it in the store instead",
                        dir.display()
                    );
                    spooled = false;
                    break;
                }
                Err(Spooling::Failed(e)) => return Err(e),
            }
            prepared.push(object);
        }
        if spooled {
            return Ok((Checked::Spooled, prepared));
        }
    }
    let mut prepared = Vec::new();
    for record in records {
        let mut object = Prepared::new(store, folder, record, codec);
        super::verify_object(store, &object.key, record, codec, true).await?;
        object.checked = true;
        prepared.push(object);
    }
    Ok((Checked::Streamed, prepared))
}

enum Spooling {
    /// The spool directory failed.
    Local(io::Error),
    /// The store failed, or the object does not match.
    Failed(IntegrityError),
}

/// Copies an object into an unnamed file in `dir`, checking its size and SHA-256, then
/// decompresses that copy to check the raw size and SHA-256 too.
async fn download(
    store: &Store,
    object: &Prepared,
    dir: &PathBuf,
    progress: &Progress,
) -> Result<std::fs::File, Spooling> {
    let file = tempfile::tempfile_in(dir).map_err(Spooling::Local)?;
    let mut writer = tokio::fs::File::from_std(file.try_clone().map_err(Spooling::Local)?);
    let source = store
        .get(&object.key)
        .await
        .map_err(|e| Spooling::Failed(e.into()))?;
    let mut stored = hashing(ObservedReader::new(source, progress.clone()));
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        let n = stored.read(&mut buffer).await.map_err(|e| {
            Spooling::Failed(StorageError::io("reading", object.location.clone(), e).into())
        })?;
        if n == 0 {
            break;
        }
        writer
            .write_all(&buffer[..n])
            .await
            .map_err(Spooling::Local)?;
    }
    writer.flush().await.map_err(Spooling::Local)?;
    judge(
        &object.location,
        &object.record,
        stored.into_observer().finish(),
        None,
    )
    .map_err(Spooling::Failed)?;
    // The copy matched; now what it decompresses to, before anything is restored.
    let mut copy = tokio::fs::File::from_std(file.try_clone().map_err(Spooling::Local)?);
    copy.seek(SeekFrom::Start(0))
        .await
        .map_err(Spooling::Local)?;
    let raw = super::decoded_digest(&mut copy, &object.codec).await;
    let stored = (object.record.stored_bytes, object.record.sha256.clone());
    judge(&object.location, &object.record, stored, Some(raw)).map_err(Spooling::Failed)?;
    Ok(file)
}

impl Prepared {
    fn new(store: &Store, folder: &str, record: &ObjectRecord, codec: &Codec) -> Self {
        let key = format!("{folder}{}", record.name);
        Self {
            location: store.location(&key),
            key,
            record: record.clone(),
            codec: codec.clone(),
            spooled: None,
            checked: false,
        }
    }

    /// An object that is read once, for the restore, and checked only as it is restored: for
    /// a restore that keeps what it writes apart until the verdict (a volume restore into
    /// its staging directory).
    pub fn unchecked(store: &Store, folder: &str, record: &ObjectRecord, codec: &Codec) -> Self {
        Self::new(store, folder, record, codec)
    }

    /// The object's manifest entry.
    pub fn record(&self) -> &ObjectRecord {
        &self.record
    }

    /// Opens the object for the restore: its decompressed bytes, checked as they pass, the
    /// last chunk held back until all matched (see the module's documentation).
    pub async fn open(
        &self,
        store: &Store,
        progress: &Progress,
    ) -> Result<(Restoring, Verdict), IntegrityError> {
        let (source, local): (ObjectReader, bool) = match &self.spooled {
            Some(file) => {
                let interrupted = |e: io::Error| IntegrityError::Interrupted {
                    location: self.location.clone(),
                    detail: format!("reading its spooled copy: {e}"),
                };
                let mut copy = tokio::fs::File::from_std(file.try_clone().map_err(interrupted)?);
                copy.seek(SeekFrom::Start(0)).await.map_err(interrupted)?;
                (Box::new(copy), true)
            }
            None => (store.get(&self.key).await?, false),
        };
        let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        let judged = Arc::new(AtomicBool::new(false));
        // A spooled copy's bytes were counted when they were downloaded.
        let counted = if local {
            Progress::default()
        } else {
            progress.clone()
        };
        let task = tokio::spawn(pass(
            ObservedReader::new(source, counted),
            sender,
            self.location.clone(),
            self.record.clone(),
            self.codec.clone(),
            self.checked,
            judged.clone(),
        ));
        let failed = Arc::new(AtomicBool::new(false));
        Ok((
            Restoring {
                receiver,
                current: Bytes::new(),
                ended: false,
                failed: failed.clone(),
            },
            Verdict {
                task,
                location: self.location.clone(),
                local,
                judged,
                failed,
            },
        ))
    }
}

/// Reads `source` to its end, sending its decompressed bytes but the last one the manifest
/// counts, then judges it: that last byte and the end when everything matched, an error
/// otherwise. A stream longer than the manifest says is judged as soon as it is. Once the
/// restore stops reading, the rest is still read and hashed, for the verdict.
async fn pass(
    source: ObservedReader<ObjectReader, Progress>,
    sender: mpsc::Sender<io::Result<Bytes>>,
    location: String,
    record: ObjectRecord,
    codec: Codec,
    again: bool,
    judged: Arc<AtomicBool>,
) -> Result<(), IntegrityError> {
    let mut stored = hashing(Latched {
        inner: source,
        error: None,
    });
    let mut decoded = hashing(decoder(&codec, &mut stored));
    // What may reach the restore before the verdict: all but the last byte of the object as
    // the manifest has it. A consumer that needs the whole object (pg_restore reading to the
    // end of its archive) cannot finish before the verdict, whatever the store sends.
    let may_pass = record.raw_bytes.saturating_sub(1);
    let mut passed = 0u64;
    let mut read_so_far = 0u64;
    let mut held = Vec::new();
    let mut listening = true;
    let mut buffer = vec![0u8; READ_BUFFER];
    let read = loop {
        match decoded.read(&mut buffer).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                read_so_far += n as u64;
                if read_so_far > record.raw_bytes {
                    // Longer than it should be: no need to read on for the verdict.
                    break Ok(());
                }
                let now = usize::try_from(may_pass - passed)
                    .unwrap_or(usize::MAX)
                    .min(n);
                held.extend_from_slice(&buffer[now..n]);
                passed += now as u64;
                if now > 0
                    && listening
                    && sender
                        .send(Ok(Bytes::copy_from_slice(&buffer[..now])))
                        .await
                        .is_err()
                {
                    listening = false;
                }
            }
            Err(e) => break Err(e),
        }
    };
    if read_so_far > record.raw_bytes {
        let verdict = Err(IntegrityError::Mismatch {
            location: location.clone(),
            what: "the decompressed size",
            found: format!("more than {}", record.raw_bytes),
            expected: record.raw_bytes.to_string(),
        });
        return finish(verdict, again, &judged, &sender, held).await;
    }
    let raw = decoded.into_observer().finish();
    let drained = tokio::io::copy(&mut stored, &mut tokio::io::sink()).await;
    // The store failing to serve the object is not the object failing to match.
    if let Some(e) = stored.get_mut().error.take() {
        let failed = Err(StorageError::io("reading", location.clone(), e).into());
        return finish(failed, false, &judged, &sender, held).await;
    }
    let verdict = drained
        .map_err(|e| StorageError::io("reading", location.clone(), e).into())
        .and_then(|_| {
            judge(
                &location,
                &record,
                stored.into_observer().finish(),
                Some(read.map(|()| raw)),
            )
        });
    finish(verdict, again, &judged, &sender, held).await
}

/// A reader that keeps its first error (the store's), so that it is not taken for the
/// object's bytes failing to decompress.
struct Latched<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Latched<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_read(cx, buf)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => {
                let kept = io::Error::new(e.kind(), e.to_string());
                this.error.get_or_insert(e);
                Poll::Ready(Err(kept))
            }
        }
    }
}

/// Gives the restore the verdict: the bytes held back and the end, or the error.
async fn finish(
    verdict: Result<(), IntegrityError>,
    again: bool,
    judged: &AtomicBool,
    sender: &mpsc::Sender<io::Result<Bytes>>,
    held: Vec<u8>,
) -> Result<(), IntegrityError> {
    let verdict = if again {
        verdict.map_err(IntegrityError::changed)
    } else {
        verdict
    };
    judged.store(true, Ordering::Release);
    match &verdict {
        Ok(()) => {
            if !held.is_empty() {
                let _ = sender.send(Ok(Bytes::from(held))).await;
            }
            // The explicit end: a stream that stops without it failed.
            let _ = sender.send(Ok(Bytes::new())).await;
        }
        Err(e) => {
            let _ = sender
                .send(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    e.to_string(),
                )))
                .await;
        }
    }
    verdict
}

/// The decompressed bytes of an object being restored (see [`Prepared::open`]). It ends only
/// after the whole object matched the manifest; otherwise it fails with the reason.
#[derive(Debug)]
pub struct Restoring {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    ended: bool,
    /// Set once the restore was given the verdict's error instead of bytes.
    failed: Arc<AtomicBool>,
}

impl AsyncRead for Restoring {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.receiver.poll_recv(cx)) {
                Some(Ok(chunk)) if chunk.is_empty() => self.ended = true,
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    self.failed.store(true, Ordering::Release);
                    return Poll::Ready(Err(e));
                }
                None => {
                    return Poll::Ready(Err(io::Error::other(
                        "the object's reader stopped before the end",
                    )));
                }
            }
        }
        let n = buf.remaining().min(self.current.len());
        let chunk = self.current.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// Whether the bytes a restore read matched the manifest.
#[derive(Debug)]
pub struct Verdict {
    task: JoinHandle<Result<(), IntegrityError>>,
    location: String,
    /// The object is read from the spool: reading the rest is quick.
    local: bool,
    /// The whole object has been read and judged.
    judged: Arc<AtomicBool>,
    /// The restore was given the verdict's error (see [`Restoring`]).
    failed: Arc<AtomicBool>,
}

impl Verdict {
    /// Waits until the whole object has been read (also after the restore stopped reading)
    /// and says whether it matched.
    pub async fn wait(self) -> Result<(), IntegrityError> {
        match self.task.await {
            Ok(verdict) => verdict,
            Err(e) => Err(IntegrityError::Interrupted {
                location: self.location,
                detail: e.to_string(),
            }),
        }
    }

    /// After the restore failed: the verdict when it explains the failure better than the
    /// restore's own error: the bytes did not match (see [`Self::after_failure`]; with
    /// `read_rest`, the rest of the object is read for that answer, for a failure on bytes
    /// that may be damaged ones), or the store failed to send them: the restore was given
    /// that error instead of bytes, or (`read_rest`) the store failed while the rest was
    /// read, so that nothing can be said of the bytes that did not parse.
    pub async fn explain(self, read_rest: bool) -> Option<IntegrityError> {
        let given = self.failed.clone();
        let verdict = if read_rest {
            self.wait().await.err()
        } else {
            self.after_failure().await
        }?;
        let store = read_rest || given.load(Ordering::Acquire);
        (verdict.is_mismatch() || (store && verdict.is_read_failure())).then_some(verdict)
    }

    /// After the restore failed: whether the bytes it was given did not match, which then
    /// explains the failure better than the consumer's own error (`pg_restore` or a parser
    /// meeting bytes that are not what was backed up). A spooled object is read to its end
    /// for the answer; one read from the store only when it has been judged already, so that
    /// a restore that failed for another reason does not download the rest first.
    pub async fn after_failure(self) -> Option<IntegrityError> {
        if self.local || self.judged.load(Ordering::Acquire) {
            self.wait().await.err()
        } else {
            self.task.abort();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_directory_the_user_gave_leaves_only_the_fixed_reserve() {
        let disk = 252 << 30;
        assert_eq!(reserve(true, disk), SPOOL_RESERVE);
        assert_eq!(reserve(false, disk), disk / 10);
        // A small filesystem: the fixed reserve either way.
        assert_eq!(reserve(false, 1 << 30), SPOOL_RESERVE);
        assert_eq!(reserve(true, 1 << 30), SPOOL_RESERVE);
    }

    #[test]
    fn a_directory_the_user_gave_takes_what_fits_beside_the_fixed_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let stats = rustix::fs::statvfs(dir.path()).unwrap();
        let available = stats.f_bavail.saturating_mul(stats.f_frsize);
        let room = available.saturating_sub(SPOOL_RESERVE);
        assert!(
            room > 64 << 20,
            "the test needs 320 MiB free beside {dir:?}"
        );
        let spool = Spool::in_dir(dir.path().to_owned());
        assert_eq!(
            spool.room_for(16 << 20).unwrap(),
            Some(&dir.path().to_owned())
        );
        assert_eq!(spool.room_for(available).unwrap(), None);
        assert_eq!(
            spool.clone().limited(1 << 20).room_for(16 << 20).unwrap(),
            None
        );
        assert_eq!(Spool::off().room_for(1).unwrap(), None);
    }
}
