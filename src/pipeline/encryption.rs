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
use std::task::{Context, Poll};

use age::x25519;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{
    Compat, FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt, TokioAsyncReadCompatExt,
    TokioAsyncWriteCompatExt,
};

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

    /// A writer that encrypts what it is given into `out`. Shutting it down writes the last
    /// chunk and shuts `out` down.
    pub async fn writer<'a>(
        &self,
        out: impl AsyncWrite + Unpin + Send + 'a,
    ) -> io::Result<Box<dyn AsyncWrite + Unpin + Send + 'a>> {
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&self.data as &dyn age::Recipient))
                .map_err(io::Error::other)?;
        let writer = encryptor.wrap_async_output(out.compat_write()).await?;
        Ok(Box::new(writer.compat_write()))
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
        let mut out = Vec::new();
        let mut writer = seal.writer(&mut out).await.unwrap();
        writer.write_all(plain).await.unwrap();
        writer.shutdown().await.unwrap();
        drop(writer);
        out
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
    async fn a_cut_or_changed_ciphertext_does_not_open() {
        let key = DataKey::generate();
        let seal = Seal::new(key.public(), Vec::new(), "keys.json".into());
        let plain = vec![7u8; 150_000];
        let stored = sealed(&seal, &plain).await;
        // Cut at a chunk boundary: age knows its last chunk, so this fails too.
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
