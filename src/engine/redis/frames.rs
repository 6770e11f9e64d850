//! The `coffer-keys` format of `keys` mode backups: a framed stream of `DUMP` payloads with
//! absolute expiries. Pure encoding and a streaming decoder.
//!
//! ```text
//! magic    "COFFER-KEYS\n" + version (1 byte, 1)
//! SELECT   0x01 db:u32
//! ENTRY    0x02 key_len:u32 key expire_at_ms:i64 (-1 = none) payload_len:u32 payload
//! FUNCTIONS 0x03 len:u32 payload (FUNCTION DUMP)
//! END      0xFF entries:u64
//! ```
//! All integers little-endian. The END record's count lets a reader tell a complete stream
//! from a truncated one.

use std::io::Read;

pub const MAGIC: &[u8] = b"COFFER-KEYS\n";
pub const VERSION: u8 = 1;
const SELECT: u8 = 0x01;
const ENTRY: u8 = 0x02;
const FUNCTIONS: u8 = 0x03;
const END: u8 = 0xFF;

/// The stream header.
pub fn header() -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out
}

pub fn select(db: u32) -> Vec<u8> {
    let mut out = vec![SELECT];
    out.extend_from_slice(&db.to_le_bytes());
    out
}

/// An entry. Keys and payloads over 4 GiB cannot exist in Redis (512 MB limit).
pub fn entry(key: &[u8], expire_at_ms: Option<i64>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + payload.len() + 17);
    out.push(ENTRY);
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&expire_at_ms.unwrap_or(-1).to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

pub fn functions(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![FUNCTIONS];
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

pub fn end(entries: u64) -> Vec<u8> {
    let mut out = vec![END];
    out.extend_from_slice(&entries.to_le_bytes());
    out
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Entry {
        db: u32,
        key: Vec<u8>,
        expire_at_ms: Option<i64>,
        payload: Vec<u8>,
    },
    Functions(Vec<u8>),
    End,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("this is not a coffer-keys stream")]
    NotKeys,
    #[error(
        "the coffer-keys stream has version {0}; this Coffer reads version {VERSION}: upgrade Coffer"
    )]
    Version(u8),
    #[error("the coffer-keys stream ends early: it is truncated")]
    Truncated,
    #[error("the coffer-keys stream is corrupt: {0}")]
    Corrupt(String),
    #[error("reading the coffer-keys stream: {0}")]
    Io(#[source] std::io::Error),
}

/// Reads records from a `coffer-keys` stream.
pub struct FrameReader<R> {
    inner: R,
    db: u32,
    entries: u64,
    done: bool,
}

impl<R: Read> FrameReader<R> {
    pub fn new(mut inner: R) -> Result<Self, FrameError> {
        let mut magic = [0u8; 13];
        read_exact(&mut inner, &mut magic)?;
        if &magic[..12] != MAGIC {
            return Err(FrameError::NotKeys);
        }
        if magic[12] != VERSION {
            return Err(FrameError::Version(magic[12]));
        }
        Ok(Self {
            inner,
            db: 0,
            entries: 0,
            done: false,
        })
    }

    /// The next record; `None` after [`Record::End`].
    pub fn next_record(&mut self) -> Result<Option<Record>, FrameError> {
        if self.done {
            return Ok(None);
        }
        loop {
            let [tag] = self.array::<1>()?;
            match tag {
                SELECT => self.db = u32::from_le_bytes(self.array()?),
                ENTRY => {
                    let key = self.blob()?;
                    let expire = i64::from_le_bytes(self.array()?);
                    let payload = self.blob()?;
                    self.entries += 1;
                    return Ok(Some(Record::Entry {
                        db: self.db,
                        key,
                        expire_at_ms: (expire >= 0).then_some(expire),
                        payload,
                    }));
                }
                FUNCTIONS => return Ok(Some(Record::Functions(self.blob()?))),
                END => {
                    let count = u64::from_le_bytes(self.array()?);
                    if count != self.entries {
                        return Err(FrameError::Corrupt(format!(
                            "it says {count} entries but holds {}",
                            self.entries
                        )));
                    }
                    self.done = true;
                    return Ok(Some(Record::End));
                }
                other => {
                    return Err(FrameError::Corrupt(format!(
                        "unknown record tag 0x{other:02x}"
                    )));
                }
            }
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut buf = [0u8; N];
        read_exact(&mut self.inner, &mut buf)?;
        Ok(buf)
    }

    fn blob(&mut self) -> Result<Vec<u8>, FrameError> {
        let len = u32::from_le_bytes(self.array()?);
        let mut out = Vec::new();
        (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut out)
            .map_err(FrameError::Io)?;
        if out.len() != len as usize {
            return Err(FrameError::Truncated);
        }
        Ok(out)
    }
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), FrameError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Vec<u8> {
        let mut s = header();
        s.extend(select(0));
        s.extend(entry(b"a\x00b", None, b"payload-1"));
        s.extend(select(7));
        s.extend(entry(b"", Some(1_900_000_000_123), b""));
        s.extend(functions(b"fn"));
        s.extend(end(2));
        s
    }

    #[test]
    fn round_trips_records() {
        let bytes = stream();
        let mut reader = FrameReader::new(&bytes[..]).unwrap();
        let mut records = vec![];
        while let Some(r) = reader.next_record().unwrap() {
            records.push(r);
        }
        assert_eq!(
            records,
            [
                Record::Entry {
                    db: 0,
                    key: b"a\x00b".to_vec(),
                    expire_at_ms: None,
                    payload: b"payload-1".to_vec()
                },
                Record::Entry {
                    db: 7,
                    key: vec![],
                    expire_at_ms: Some(1_900_000_000_123),
                    payload: vec![]
                },
                Record::Functions(b"fn".to_vec()),
                Record::End,
            ]
        );
    }

    #[test]
    fn truncation_and_miscounts_are_caught() {
        let bytes = stream();
        for cut in [5, 20, bytes.len() - 3, bytes.len() - 9] {
            let mut reader = match FrameReader::new(&bytes[..cut]) {
                Ok(r) => r,
                Err(e) => {
                    assert!(matches!(e, FrameError::Truncated));
                    continue;
                }
            };
            let err = loop {
                match reader.next_record() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("a cut stream at {cut} read to the end"),
                    Err(e) => break e,
                }
            };
            assert!(matches!(err, FrameError::Truncated), "cut at {cut}: {err}");
        }
        let mut wrong = header();
        wrong.extend(end(1));
        let mut reader = FrameReader::new(&wrong[..]).unwrap();
        assert!(
            reader
                .next_record()
                .unwrap_err()
                .to_string()
                .contains("holds 0")
        );
        assert!(matches!(
            FrameReader::new(&b"REDIS0010xxxx"[..]),
            Err(FrameError::NotKeys)
        ));
    }
}
