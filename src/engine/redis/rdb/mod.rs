//! Reading RDB streams entry by entry, as Redis writes them (RDB versions 1 to 12).
//!
//! The reader does not decode values: it finds where each one ends, which is all a restore
//! needs, because a value in an RDB is serialised exactly as in a `DUMP` payload
//! ([`dump_payload`] adds the version and CRC-64 footer). With `capture` off it only walks
//! the stream (to count keys and check the file's CRC-64 while a backup is taken).
//!
//! Supported value types: strings, lists, sets, sorted sets, hashes in every encoding
//! (linked, ziplist, listpack, intset, zipmap, quicklist), streams v1–v3 with consumer
//! groups and pending entries, and module values (type 7, self-describing). Hashes with
//! field expirations (Redis 7.4+, types 22–25) and newer stream versions are refused with a
//! clear error.

mod crc64;

use std::io::Read;

pub use crc64::{Crc64, checksum};

/// The highest RDB version this reader understands.
pub const MAX_VERSION: u16 = 12;

/// Something in the stream that is not an RDB this reader can walk.
#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    #[error("the RDB stream ends early (at byte {offset}): it is truncated")]
    Truncated { offset: u64 },
    #[error("reading the RDB stream: {0}")]
    Io(#[source] std::io::Error),
    #[error("this is not an RDB stream (it starts with {0:?}, not \"REDIS\")")]
    NotRdb(String),
    #[error(
        "the RDB stream has version {0}; this Coffer reads versions 1 to {MAX_VERSION}: upgrade Coffer or use --mode keys"
    )]
    Version(u16),
    #[error(
        "the RDB stream holds {what} (at byte {offset}), which this Coffer cannot read yet: use --mode keys"
    )]
    Unsupported { what: String, offset: u64 },
    #[error("the RDB stream is corrupt at byte {offset}: {what}")]
    Corrupt { what: String, offset: u64 },
    #[error(
        "the RDB stream's CRC-64 does not match (stored {stored:016x}, computed {computed:016x}): it is damaged"
    )]
    Checksum { stored: u64, computed: u64 },
}

/// One key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub db: u32,
    /// The key (empty unless capturing).
    pub key: Vec<u8>,
    /// Absolute expiry in Unix milliseconds.
    pub expire_at_ms: Option<i64>,
    /// The RDB value type.
    pub value_type: u8,
    /// The type byte followed by the serialised value (empty unless capturing).
    pub value: Vec<u8>,
}

/// The type `TYPE` reports for a key of RDB value type `value_type` (the first byte of a
/// `DUMP` payload): `string`, `list`, `set`, `zset`, `hash`, `stream`, or `module` for a
/// module's own type.
pub fn type_name(value_type: u8) -> &'static str {
    match value_type {
        0 => "string",
        1 | 10 | 14 | 18 => "list",
        2 | 11 | 20 => "set",
        3 | 5 | 12 | 17 => "zset",
        4 | 9 | 13 | 16 | 22..=25 => "hash",
        15 | 19 | 21 => "stream",
        _ => "module",
    }
}

/// What the stream holds, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Entry(Entry),
    /// A function library's source code (Redis 7+).
    Function(Vec<u8>),
    /// A module's auxiliary data, which cannot be restored without the module.
    ModuleAux,
    /// The end of the stream; the CRC-64 was checked if the writer computed one.
    End,
}

/// Reads the items of an RDB stream.
pub struct RdbReader<R> {
    input: Input<R>,
    version: u16,
    db: u32,
    finished: bool,
}

impl<R: Read> RdbReader<R> {
    /// Reads the header. With `capture`, entries carry their serialised values.
    pub fn new(reader: R, capture: bool) -> Result<Self, RdbError> {
        let mut input = Input {
            inner: reader,
            crc: Crc64::new(),
            offset: 0,
            capture: None,
            capturing: capture,
            scratch: vec![0; CHUNK],
        };
        let magic = input.bytes(9)?;
        if &magic[..5] != b"REDIS" {
            return Err(RdbError::NotRdb(
                String::from_utf8_lossy(&magic).into_owned(),
            ));
        }
        let version = std::str::from_utf8(&magic[5..])
            .ok()
            .and_then(|v| v.parse::<u16>().ok())
            .ok_or_else(|| RdbError::NotRdb(String::from_utf8_lossy(&magic).into_owned()))?;
        if version == 0 || version > MAX_VERSION {
            return Err(RdbError::Version(version));
        }
        Ok(Self {
            input,
            version,
            db: 0,
            finished: false,
        })
    }

    /// The RDB version of the stream (also the version of its values' DUMP payloads).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The next item, or `None` after [`Item::End`].
    pub fn next_item(&mut self) -> Result<Option<Item>, RdbError> {
        if self.finished {
            return Ok(None);
        }
        let mut expire_at_ms = None;
        loop {
            let offset = self.input.offset;
            let opcode = self.input.u8()?;
            match opcode {
                0xFF => {
                    self.finished = true;
                    if self.version >= 5 {
                        let computed = self.input.crc.value();
                        let stored = u64::from_le_bytes(self.input.array()?);
                        if stored != 0 && stored != computed {
                            return Err(RdbError::Checksum { stored, computed });
                        }
                    }
                    return Ok(Some(Item::End));
                }
                0xFE => self.db = self.input.small_len("database number")?,
                0xFD => {
                    let seconds = i32::from_le_bytes(self.input.array()?);
                    expire_at_ms = Some(i64::from(seconds) * 1000);
                }
                0xFC => expire_at_ms = Some(i64::from_le_bytes(self.input.array()?)),
                0xFB => {
                    self.input.len()?;
                    self.input.len()?;
                }
                0xFA => {
                    self.input.string()?;
                    self.input.string()?;
                }
                0xF9 => {
                    self.input.u8()?;
                }
                0xF8 => {
                    self.input.len()?;
                }
                0xF7 => {
                    self.input.len()?;
                    self.input.skip_module_value()?;
                    return Ok(Some(Item::ModuleAux));
                }
                0xF6 => {
                    return Err(self
                        .input
                        .unsupported("a function library in the pre-GA 7.0 format", offset));
                }
                0xF5 => return Ok(Some(Item::Function(self.input.string()?))),
                0xF4 => {
                    // Cluster slot info: slot, size, expires size.
                    self.input.len()?;
                    self.input.len()?;
                    self.input.len()?;
                }
                value_type => {
                    // Walking without capture only counts: the key is skipped, not decoded.
                    let key = if self.input.capturing {
                        self.input.string()?
                    } else {
                        self.input.skip_string()?;
                        Vec::new()
                    };
                    self.input.start_capture(value_type);
                    self.input.skip_value(value_type, offset)?;
                    let value = self.input.take_capture();
                    return Ok(Some(Item::Entry(Entry {
                        db: self.db,
                        key,
                        expire_at_ms,
                        value_type,
                        value,
                    })));
                }
            }
        }
    }
}

/// Builds the `DUMP` payload `RESTORE` expects from a captured value: the value, the RDB
/// version (2 bytes, little-endian) and the CRC-64 of both (8 bytes, little-endian).
pub fn dump_payload(mut value: Vec<u8>, rdb_version: u16) -> Vec<u8> {
    value.extend_from_slice(&rdb_version.to_le_bytes());
    let crc = checksum(&value);
    value.extend_from_slice(&crc.to_le_bytes());
    value
}

/// A length as RDB writes it, or the special encoding of a string.
enum Length {
    Plain(u64),
    Encoded(u8),
}

/// Bytes read at a time when skipping or collecting long strings.
const CHUNK: usize = 64 << 10;

/// The byte source: counts offsets, keeps the running CRC-64 and optionally captures bytes.
struct Input<R> {
    inner: R,
    crc: Crc64,
    offset: u64,
    capture: Option<Vec<u8>>,
    capturing: bool,
    /// Reused buffer for skipped bytes.
    scratch: Vec<u8>,
}

fn read_counted(
    inner: &mut impl Read,
    crc: &mut Crc64,
    offset: &mut u64,
    capture: &mut Option<Vec<u8>>,
    buf: &mut [u8],
) -> Result<(), RdbError> {
    inner.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => RdbError::Truncated { offset: *offset },
        _ => RdbError::Io(e),
    })?;
    crc.update(buf);
    *offset += buf.len() as u64;
    if let Some(capture) = capture {
        capture.extend_from_slice(buf);
    }
    Ok(())
}

impl<R: Read> Input<R> {
    fn start_capture(&mut self, value_type: u8) {
        if self.capturing {
            self.capture = Some(vec![value_type]);
        }
    }

    fn take_capture(&mut self) -> Vec<u8> {
        self.capture.take().unwrap_or_default()
    }

    fn unsupported(&self, what: &str, offset: u64) -> RdbError {
        RdbError::Unsupported {
            what: what.to_owned(),
            offset,
        }
    }

    fn corrupt(&self, what: &str) -> RdbError {
        RdbError::Corrupt {
            what: what.to_owned(),
            offset: self.offset,
        }
    }

    /// Fills `buf` from the stream, counting, checksumming and capturing the bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RdbError> {
        read_counted(
            &mut self.inner,
            &mut self.crc,
            &mut self.offset,
            &mut self.capture,
            buf,
        )
    }

    fn u8(&mut self) -> Result<u8, RdbError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RdbError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    /// Reads `n` bytes into a vector, growing it as data arrives (a corrupt length cannot
    /// make it allocate more than the stream holds).
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, RdbError> {
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let take = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let start = out.len();
            out.resize(start + take, 0);
            self.fill(&mut out[start..])?;
            left -= take as u64;
        }
        Ok(out)
    }

    fn skip(&mut self, n: u64) -> Result<(), RdbError> {
        let Self {
            inner,
            crc,
            offset,
            capture,
            scratch,
            ..
        } = self;
        let mut left = n;
        while left > 0 {
            let take = usize::try_from(left.min(scratch.len() as u64)).unwrap_or(scratch.len());
            read_counted(inner, crc, offset, capture, &mut scratch[..take])?;
            left -= take as u64;
        }
        Ok(())
    }

    fn length(&mut self) -> Result<Length, RdbError> {
        let first = self.u8()?;
        Ok(match first >> 6 {
            0 => Length::Plain(u64::from(first & 0x3F)),
            1 => Length::Plain((u64::from(first & 0x3F) << 8) | u64::from(self.u8()?)),
            2 => match first {
                0x80 => Length::Plain(u64::from(u32::from_be_bytes(self.array()?))),
                0x81 => Length::Plain(u64::from_be_bytes(self.array()?)),
                _ => return Err(self.corrupt(&format!("unknown length prefix 0x{first:02x}"))),
            },
            _ => Length::Encoded(first & 0x3F),
        })
    }

    fn len(&mut self) -> Result<u64, RdbError> {
        match self.length()? {
            Length::Plain(n) => Ok(n),
            Length::Encoded(_) => {
                Err(self.corrupt("an encoded string where a length was expected"))
            }
        }
    }

    fn small_len(&mut self, what: &str) -> Result<u32, RdbError> {
        let n = self.len()?;
        u32::try_from(n).map_err(|_| self.corrupt(&format!("{what} {n} is out of range")))
    }

    /// Reads a string, decoding integer and LZF encodings.
    fn string(&mut self) -> Result<Vec<u8>, RdbError> {
        match self.length()? {
            Length::Plain(n) => self.bytes(n),
            Length::Encoded(0) => Ok(i64::from(self.u8()? as i8).to_string().into_bytes()),
            Length::Encoded(1) => Ok(i64::from(i16::from_le_bytes(self.array()?))
                .to_string()
                .into_bytes()),
            Length::Encoded(2) => Ok(i64::from(i32::from_le_bytes(self.array()?))
                .to_string()
                .into_bytes()),
            Length::Encoded(3) => {
                let compressed_len = self.len()?;
                let raw_len = self.len()?;
                let compressed = self.bytes(compressed_len)?;
                let raw_len = usize::try_from(raw_len)
                    .map_err(|_| self.corrupt("LZF length out of range"))?;
                let raw = lzf::decompress(&compressed, raw_len)
                    .map_err(|e| self.corrupt(&format!("LZF data does not decompress ({e:?})")))?;
                if raw.len() != raw_len {
                    return Err(self.corrupt("LZF data has the wrong length"));
                }
                Ok(raw)
            }
            Length::Encoded(other) => {
                Err(self.corrupt(&format!("unknown string encoding {other}")))
            }
        }
    }

    /// Skips a string without decoding it.
    fn skip_string(&mut self) -> Result<(), RdbError> {
        match self.length()? {
            Length::Plain(n) => self.skip(n),
            Length::Encoded(0) => self.skip(1),
            Length::Encoded(1) => self.skip(2),
            Length::Encoded(2) => self.skip(4),
            Length::Encoded(3) => {
                let compressed_len = self.len()?;
                self.len()?;
                self.skip(compressed_len)
            }
            Length::Encoded(other) => {
                Err(self.corrupt(&format!("unknown string encoding {other}")))
            }
        }
    }

    /// A double written as text: a length byte (253 NaN, 254 +inf, 255 -inf) and digits.
    fn skip_text_double(&mut self) -> Result<(), RdbError> {
        match self.u8()? {
            253..=255 => Ok(()),
            n => self.skip(u64::from(n)),
        }
    }

    fn skip_strings(&mut self, per_item: u64) -> Result<(), RdbError> {
        let n = self.len()?;
        for _ in 0..n.saturating_mul(per_item) {
            self.skip_string()?;
        }
        Ok(())
    }

    /// Module values (type 7) and module aux data: typed opcodes until EOF.
    fn skip_module_value(&mut self) -> Result<(), RdbError> {
        loop {
            match self.len()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.len()?;
                }
                3 => self.skip(4)?,
                4 => self.skip(8)?,
                5 => self.skip_string()?,
                other => return Err(self.corrupt(&format!("unknown module opcode {other}"))),
            }
        }
    }

    fn skip_value(&mut self, value_type: u8, offset: u64) -> Result<(), RdbError> {
        match value_type {
            // A string, or one blob: ziplist, intset, listpack and zipmap encodings.
            0 | 9 | 10 | 11 | 12 | 13 | 16 | 17 | 20 => self.skip_string(),
            // Linked list, set, quicklist (v1): n strings.
            1 | 2 | 14 => self.skip_strings(1),
            // Hash: n field/value pairs.
            4 => self.skip_strings(2),
            // Sorted set, doubles as text.
            3 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_string()?;
                    self.skip_text_double()?;
                }
                Ok(())
            }
            // Sorted set, binary doubles.
            5 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_string()?;
                    self.skip(8)?;
                }
                Ok(())
            }
            7 => {
                self.len()?;
                self.skip_module_value()
            }
            // Quicklist v2: n nodes of (container, blob).
            18 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.len()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            15 | 19 | 21 => self.skip_stream(value_type),
            6 => Err(self.unsupported("a module value in the pre-GA 4.0 format", offset)),
            22..=25 => Err(self.unsupported(
                &format!("a hash with field expirations (RDB type {value_type}, Redis 7.4+)"),
                offset,
            )),
            other => Err(self.unsupported(&format!("a value of unknown RDB type {other}"), offset)),
        }
    }

    fn skip_stream(&mut self, value_type: u8) -> Result<(), RdbError> {
        let v2 = value_type >= 19;
        let v3 = value_type >= 21;
        // Listpacks: (master entry id, listpack) pairs.
        self.skip_strings(2)?;
        // Length, last id.
        for _ in 0..3 {
            self.len()?;
        }
        if v2 {
            // First id, max deleted id, entries added.
            for _ in 0..5 {
                self.len()?;
            }
        }
        let groups = self.len()?;
        for _ in 0..groups {
            self.skip_string()?;
            self.len()?;
            self.len()?;
            if v2 {
                self.len()?;
            }
            // Pending entries: raw id, delivery time, delivery count.
            let pending = self.len()?;
            for _ in 0..pending {
                self.skip(16 + 8)?;
                self.len()?;
            }
            let consumers = self.len()?;
            for _ in 0..consumers {
                self.skip_string()?;
                self.skip(8)?;
                if v3 {
                    self.skip(8)?;
                }
                let owned = self.len()?;
                self.skip(owned.saturating_mul(16))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made RDB: header, aux field, db 2, a string with an expiry, an integer-encoded
    /// string, an LZF key, end and CRC.
    fn sample(version: u16) -> Vec<u8> {
        let mut rdb = format!("REDIS{version:04}").into_bytes();
        rdb.extend_from_slice(&[0xFA, 9]);
        rdb.extend_from_slice(b"redis-ver");
        rdb.extend_from_slice(&[6]);
        rdb.extend_from_slice(b"7.0.15");
        rdb.extend_from_slice(&[0xFE, 2, 0xFB, 2, 1]);
        rdb.extend_from_slice(&[0xFC]);
        rdb.extend_from_slice(&1_900_000_000_000i64.to_le_bytes());
        rdb.extend_from_slice(&[0, 3]);
        rdb.extend_from_slice(b"k\x00\xff");
        rdb.extend_from_slice(&[5]);
        rdb.extend_from_slice(b"hello");
        // key "12345" stored as INT16, value stored as INT8 -3.
        rdb.extend_from_slice(&[0, 0xC1]);
        rdb.extend_from_slice(&12345i16.to_le_bytes());
        rdb.extend_from_slice(&[0xC0, (-3i8) as u8]);
        // key stored LZF-compressed: "aaaaaaaaaa" (literal 'a' + back-reference).
        rdb.extend_from_slice(&[0, 0xC3, 5, 10, 0x00, b'a', 0xE0, 0x00, 0x00]);
        rdb.extend_from_slice(&[0]);
        rdb.push(0xFF);
        let crc = checksum(&rdb);
        rdb.extend_from_slice(&crc.to_le_bytes());
        rdb
    }

    fn items(bytes: &[u8], capture: bool) -> Result<Vec<Item>, RdbError> {
        let mut reader = RdbReader::new(bytes, capture)?;
        let mut out = vec![];
        while let Some(item) = reader.next_item()? {
            out.push(item);
        }
        Ok(out)
    }

    #[test]
    fn reads_entries_with_databases_expiries_and_encodings() {
        let items = items(&sample(10), true).unwrap();
        assert_eq!(items.len(), 4);
        let Item::Entry(first) = &items[0] else {
            panic!()
        };
        assert_eq!(first.db, 2);
        assert_eq!(first.key, b"k\x00\xff");
        assert_eq!(first.expire_at_ms, Some(1_900_000_000_000));
        assert_eq!(first.value, [0, 5, b'h', b'e', b'l', b'l', b'o']);
        let Item::Entry(second) = &items[1] else {
            panic!()
        };
        assert_eq!(
            (second.key.as_slice(), second.expire_at_ms),
            (&b"12345"[..], None)
        );
        assert_eq!(second.value, [0, 0xC0, (-3i8) as u8]);
        let Item::Entry(third) = &items[2] else {
            panic!()
        };
        assert_eq!(third.key, b"aaaaaaaaaa");
        assert_eq!(items[3], Item::End);
    }

    #[test]
    fn walking_without_capture_keeps_no_values() {
        let items = items(&sample(10), false).unwrap();
        let Item::Entry(first) = &items[0] else {
            panic!()
        };
        assert!(first.value.is_empty());
    }

    #[test]
    fn damage_truncation_and_unknown_versions_are_refused() {
        let mut damaged = sample(10);
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x01;
        assert!(items(&damaged, false).is_err());

        let whole = sample(10);
        let err = items(&whole[..whole.len() - 12], false).unwrap_err();
        assert!(matches!(err, RdbError::Truncated { .. }), "{err}");

        let err = items(&sample(13), false).unwrap_err();
        assert!(
            err.to_string().contains("version 13") && err.to_string().contains("--mode keys"),
            "{err}"
        );

        let err = items(b"NOTANRDB!", false).unwrap_err();
        assert!(matches!(err, RdbError::NotRdb(_)), "{err}");
    }

    #[test]
    fn a_zero_checksum_means_none_was_computed() {
        let mut rdb = sample(10);
        let len = rdb.len();
        rdb[len - 8..].fill(0);
        assert!(items(&rdb, false).is_ok());
    }

    #[test]
    fn dump_payloads_carry_version_and_crc() {
        let payload = dump_payload(vec![0, 5, b'h', b'e', b'l', b'l', b'o'], 10);
        assert_eq!(&payload[7..9], &10u16.to_le_bytes());
        let crc = u64::from_le_bytes(payload[9..].try_into().unwrap());
        assert_eq!(crc, checksum(&payload[..9]));
    }
}
