//! Client-side encryption of a backup's data objects, with age (X25519, ChaCha20-Poly1305 in
//! 64 KiB chunks).
//!
//! Envelope encryption: each backup gets its own random **data key**, an age X25519 identity
//! made for that backup alone. Every data object is encrypted to the data key's public half
//! as it streams (after compression). The data key itself is encrypted ("wrapped") for the
//! users' recipients and stored beside the data in a small key object
//! ([`crate::storage::keys`]). A worker that backs up holds the users' public keys only: once
//! the backup is written, nothing in the cluster can read it. Changing who may read a backup
//! rewrites the key object only, never the data.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use age::x25519;
use std::io::Write;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::PollSender;

use crate::storage::manifest::EncryptionRecord;

/// The scheme recorded in manifests of encrypted backups.
pub const SCHEME: &str = "age-x25519";

/// A backup's data key, unwrapped: what decrypts its data objects. Only restores, verifies
/// with an identity and downloads hold one.
#[derive(Clone)]
pub struct DataKey(Arc<x25519::Identity>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({})", self.0.to_public())
    }
}

impl DataKey {
    /// A new random data key, for one backup.
    pub fn generate() -> Self {
        Self(Arc::new(x25519::Identity::generate()))
    }

    pub(crate) fn from_identity(identity: x25519::Identity) -> Self {
        Self(Arc::new(identity))
    }

    /// The public half, which the data objects are encrypted to.
    pub fn public(&self) -> x25519::Recipient {
        self.0.to_public()
    }

    pub(crate) fn identity(&self) -> &x25519::Identity {
        &self.0
    }
}

/// What a backup encrypts its data objects with: the data key's public half, and the record
/// the manifest keeps of it. Holds no secret.
#[derive(Clone, Debug)]
pub struct Seal {
    data: x25519::Recipient,
    record: EncryptionRecord,
}

impl Seal {
    /// Seals objects to `data`, the public half of a data key wrapped for `recipients`.
    pub fn new(data: x25519::Recipient, recipients: Vec<String>, keys: String) -> Self {
        let record = EncryptionRecord {
            scheme: SCHEME.to_owned(),
            keys,
            data_recipient: data.to_string(),
            recipients,
        };
        Self { data, record }
    }

    /// The manifest's record of the encryption.
    pub fn record(&self) -> &EncryptionRecord {
        &self.record
    }

    /// Encrypts, on a thread of its own, what is written into the returned stream, into
    /// `out`: the cipher then runs beside the compressor and the hashing instead of after
    /// them. Bytes cross to that thread in chunks of [`CHUNK`] and leave it in pieces of
    /// [`BUFFER`], so that the threads wake each other rarely. Shutting the stream down ends
    /// the age stream (its last chunk) and shuts `out` down; the task says whether all of it
    /// was written. Memory: a few chunks and the buffer.
    pub fn spawn(
        &self,
        out: impl AsyncWrite + Unpin + Send + 'static,
    ) -> io::Result<(ChunkWriter, JoinHandle<io::Result<()>>)> {
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&self.data as &dyn age::Recipient))
                .map_err(io::Error::other)?;
        let (sender, mut receiver) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
        let task = tokio::task::spawn_blocking(move || {
            let out = std::io::BufWriter::with_capacity(BUFFER, SyncIoBridge::new(out));
            let mut writer = encryptor.wrap_output(out)?;
            // An empty chunk is the writer's explicit end: a channel that closes without it
            // (the writer dropped half-way) must not end in a well-formed age stream.
            loop {
                match receiver.blocking_recv() {
                    Some(chunk) if chunk.is_empty() => break,
                    Some(chunk) => writer.write_all(&chunk)?,
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the data to encrypt stopped before its end",
                        ));
                    }
                }
            }
            let mut out = writer.finish()?;
            out.flush()?;
            out.into_inner().map_err(|e| e.into_error())?.shutdown()
        });
        let writer = ChunkWriter {
            buffer: BytesMut::with_capacity(CHUNK),
            sender: PollSender::new(sender),
        };
        Ok((writer, task))
    }
}

/// Plaintext handed to the cipher's thread at a time.
const CHUNK: usize = 256 << 10;
/// Chunks waiting for the cipher's thread.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Ciphertext gathered before it is written out.
const BUFFER: usize = 1 << 20;

/// The writing end of [`Seal::spawn`].
pub struct ChunkWriter {
    buffer: BytesMut,
    sender: PollSender<Bytes>,
}

impl ChunkWriter {
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the encryption stopped");
        ready!(self.sender.poll_reserve(cx)).map_err(|_| gone())?;
        let chunk = self.buffer.split().freeze();
        self.sender.send_item(chunk).map_err(|_| gone())?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChunkWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.buffer.len() >= CHUNK {
            ready!(self.poll_send(cx))?;
        }
        let n = data.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buffer.is_empty() {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        if !self.sender.is_closed() {
            // The end marker: an empty chunk.
            ready!(self.poll_send(cx))?;
            self.sender.close();
        }
        Poll::Ready(Ok(()))
    }
}

type Plain<'a> = Compat<age::stream::StreamReader<Compat<Box<dyn AsyncRead + Unpin + Send + 'a>>>>;
type Header<'a> = Pin<Box<dyn Future<Output = io::Result<Plain<'a>>> + Send + 'a>>;

/// The plaintext of an encrypted object, read from its ciphertext (see [`open`]).
pub struct Opened<'a> {
    state: State<'a>,
}

enum State<'a> {
    /// Reading the object's age header.
    Header(Header<'a>),
    Body(Plain<'a>),
    Failed,
}

/// Decrypts `stored` with `key`. A wrong key or damaged bytes make a read fail with
/// [`io::ErrorKind::InvalidData`].
pub fn open<'a>(stored: impl AsyncRead + Unpin + Send + 'a, key: &DataKey) -> Opened<'a> {
    let key = key.clone();
    let stored: Box<dyn AsyncRead + Unpin + Send + 'a> = Box::new(stored);
    let header = async move {
        let decryptor = age::Decryptor::new_async(stored.compat())
            .await
            .map_err(undecryptable)?;
        let reader = decryptor
            .decrypt_async(std::iter::once(key.identity() as &dyn age::Identity))
            .map_err(undecryptable)?;
        Ok(reader.compat())
    };
    Opened {
        state: State::Header(Box::pin(header)),
    }
}

fn undecryptable(e: age::DecryptError) -> io::Error {
    match e {
        age::DecryptError::Io(e) => e,
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it cannot be decrypted with the backup's data key ({other})"),
        ),
    }
}

impl AsyncRead for Opened<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            match &mut self.state {
                State::Header(header) => match header.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(body)) => self.state = State::Body(body),
                    Poll::Ready(Err(e)) => {
                        self.state = State::Failed;
                        return Poll::Ready(Err(e));
                    }
                },
                State::Body(body) => return Pin::new(body).poll_read(cx, buf),
                State::Failed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the object could not be decrypted",
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn sealed(seal: &Seal, plain: &[u8]) -> Vec<u8> {
        let (mut stored, out) = tokio::io::duplex(1 << 16);
        let (mut writer, task) = seal.spawn(out).unwrap();
        let reader = tokio::spawn(async move {
            let mut bytes = Vec::new();
            stored.read_to_end(&mut bytes).await.map(|_| bytes)
        });
        writer.write_all(plain).await.unwrap();
        writer.shutdown().await.unwrap();
        task.await.unwrap().unwrap();
        reader.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn what_is_sealed_opens_with_the_data_key_only() {
        let key = DataKey::generate();
        let seal = Seal::new(key.public(), Vec::new(), "keys.json".into());
        // Several chunks and a partial one.
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let stored = sealed(&seal, &plain).await;
        assert!(stored.starts_with(b"age-encryption.org/v1\n"));
        assert!(!stored.windows(64).any(|w| w == &plain[1000..1064]));
        let mut back = Vec::new();
        open(&stored[..], &key)
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back, plain);

        let other = DataKey::generate();
        let e = open(&stored[..], &other)
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[tokio::test]
    async fn a_writer_dropped_before_its_end_is_an_error_not_a_shorter_stream() {
        let key = DataKey::generate();
        let seal = Seal::new(key.public(), Vec::new(), "keys-x.json".into());
        let (_stored, out) = tokio::io::duplex(1 << 20);
        let (mut writer, task) = seal.spawn(out).unwrap();
        writer.write_all(&[1u8; 300_000]).await.unwrap();
        drop(writer);
        let e = task.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }

    #[tokio::test]
    async fn a_cut_or_changed_ciphertext_does_not_open() {
        let key = DataKey::generate();
        let seal = Seal::new(key.public(), Vec::new(), "keys.json".into());
        // Two whole chunks: the second is the last, and age marks it so.
        let plain = vec![7u8; 2 << 16];
        let stored = sealed(&seal, &plain).await;
        let mut whole = Vec::new();
        open(&stored[..], &key)
            .read_to_end(&mut whole)
            .await
            .unwrap();
        assert_eq!(whole.len(), plain.len());
        // Cut exactly at the chunk boundary (a chunk is 64 KiB and a 16-byte tag): what is
        // left is a valid chunk that is not the last one, which age refuses.
        let cut = &stored[..stored.len() - ((1 << 16) + 16)];
        assert!(open(cut, &key).read_to_end(&mut Vec::new()).await.is_err());
        // Cut inside a chunk.
        let cut = &stored[..stored.len() - 20_000];
        assert!(open(cut, &key).read_to_end(&mut Vec::new()).await.is_err());
        let mut changed = stored.clone();
        let middle = changed.len() / 2;
        changed[middle] ^= 1;
        assert!(
            open(&changed[..], &key)
                .read_to_end(&mut Vec::new())
                .await
                .is_err()
        );
    }
}
