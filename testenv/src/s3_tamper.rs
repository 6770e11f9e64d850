//! A store that lies: the test S3 server can serve an object with one byte changed on a
//! chosen read of it, as a compromised or faulty S3 service might, while its other reads
//! (and its listings, sizes and ETag) stay as they were. Checksum headers are left out of
//! the changed response, as a store that lies would not send ones that give it away.
//!
//! A rule may also make the response longer: after the object's own (changed) bytes, it
//! pauses for [`TAIL_PAUSE`], as a slow connection may, then sends [`APPENDED`] more bytes.
//! A reader that passes on every byte as it comes and judges the object only at its end has
//! then handed a consumer the whole of the object's length well before it can know that the
//! object did not match.
//!
//! Or a rule serves the object unchanged, its second half after the same pause: a test
//! knows its reader is in the middle of the object, however loaded the machine is. Or it
//! sends the object's first half and then cuts the connection, as a store or network
//! failing mid-read does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::{GetObjectOutput, StreamingBlob};
use s3s::{S3Response, S3Result};

/// How long a lengthened response waits before the bytes it adds.
pub const TAIL_PAUSE: Duration = Duration::from_secs(5);

/// How many bytes a lengthened response adds.
pub const APPENDED: usize = 4096;

/// How a read a rule matches is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Served {
    /// With one byte changed.
    Changed,
    /// With one byte changed, then [`APPENDED`] more bytes after [`TAIL_PAUSE`].
    ChangedLonger,
    /// Unchanged, but the second half of its bytes only after [`TAIL_PAUSE`]: a reader is
    /// caught in the middle of the object.
    Paused,
    /// The first half of its bytes, then the connection is cut.
    Cut,
}

/// One rule: the `read`th GET (counting from 1) of the object whose key ends with `suffix`.
#[derive(Clone, Debug)]
struct Rule {
    suffix: String,
    read: u32,
    served: Served,
}

/// The rules, and how often each object was read, shared by the server's restarts.
#[derive(Debug, Default)]
pub(crate) struct Tampering {
    rules: Vec<Rule>,
    reads: HashMap<String, u32>,
    changed: u32,
}

/// A handle on the server's [`Tampering`].
pub(crate) type Shared = Arc<Mutex<Tampering>>;

impl Tampering {
    pub(crate) fn add(shared: &Shared, suffix: &str, read: u32, served: Served) {
        let mut this = shared.lock().unwrap_or_else(PoisonError::into_inner);
        this.rules.push(Rule {
            suffix: suffix.to_owned(),
            read,
            served,
        });
    }

    /// Responses served with a changed byte so far.
    pub(crate) fn changed(shared: &Shared) -> u32 {
        shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .changed
    }

    /// GETs of objects whose key ends with `suffix` so far.
    pub(crate) fn reads(shared: &Shared, suffix: &str) -> u32 {
        let this = shared.lock().unwrap_or_else(PoisonError::into_inner);
        this.reads
            .iter()
            .filter(|(key, _)| key.ends_with(suffix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Counts a GET of `bucket/key`; how this read is to be served, if a rule says.
    pub(crate) fn count(shared: &Shared, bucket: &str, key: &str) -> Option<Served> {
        let mut this = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let path = format!("{bucket}/{key}");
        let reads = this.reads.entry(path.clone()).or_default();
        *reads += 1;
        let read = *reads;
        let hit = this
            .rules
            .iter()
            .find(|r| r.read == read && path.ends_with(&r.suffix))
            .map(|r| r.served);
        if matches!(hit, Some(Served::Changed | Served::ChangedLonger)) {
            this.changed += 1;
        }
        hit
    }
}

/// The response with the byte in the middle of the object changed (its lowest bit flipped:
/// an ASCII letter stays one), and [`APPENDED`] bytes after a pause (`ChangedLonger`); or
/// unchanged, its second half after a pause (`Paused`); or its first half only, then an
/// error that cuts the connection (`Cut`).
pub(crate) async fn changed(
    mut response: S3Response<GetObjectOutput>,
    served: Served,
) -> S3Result<S3Response<GetObjectOutput>> {
    let output = &mut response.output;
    let mut bytes = Vec::new();
    if let Some(mut body) = output.body.take() {
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| s3s::s3_error!(InternalError, "reading the object: {e}"))?;
            bytes.extend_from_slice(&chunk);
        }
    }
    if served == Served::Cut {
        bytes.truncate(bytes.len() / 2);
        let first =
            futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(bytes)) });
        // After a moment: what was sent reaches the reader before the connection goes.
        let cut = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err(std::io::Error::other("the test store cut the connection"))
        });
        response.output.body = Some(StreamingBlob::wrap(first.chain(cut)));
        return Ok(response);
    }
    if served == Served::Paused {
        let second = Bytes::from(bytes.split_off(bytes.len() / 2));
        let first =
            futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(bytes)) });
        let rest = futures::stream::once(async move {
            tokio::time::sleep(TAIL_PAUSE).await;
            Ok(second)
        });
        response.output.body = Some(StreamingBlob::wrap(first.chain(rest)));
        return Ok(response);
    }
    if let Some(middle) = bytes.len().checked_div(2).filter(|_| !bytes.is_empty()) {
        bytes[middle] ^= 0x01;
    }
    output.checksum_crc32 = None;
    output.checksum_crc32c = None;
    output.checksum_crc64nvme = None;
    output.checksum_sha1 = None;
    output.checksum_sha256 = None;
    output.checksum_type = None;
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(bytes)) });
    if served == Served::ChangedLonger {
        output.content_length = output
            .content_length
            .map(|n| n + i64::try_from(APPENDED).unwrap_or(0));
        let tail = futures::stream::once(async {
            tokio::time::sleep(TAIL_PAUSE).await;
            Ok(Bytes::from(vec![b'x'; APPENDED]))
        });
        output.body = Some(StreamingBlob::wrap(first.chain(tail)));
    } else {
        output.body = Some(StreamingBlob::wrap(first));
    }
    Ok(response)
}
