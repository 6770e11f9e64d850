//! The CRC-64 Redis uses for RDB files and DUMP payloads (Jones polynomial, reflected).

use crc::{CRC_64_REDIS, Crc, Digest, Table};

static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// A running CRC-64.
pub struct Crc64(Digest<'static, u64, Table<16>>);

impl Crc64 {
    pub fn new() -> Self {
        Self(CRC64.digest())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of everything so far (the digest keeps going).
    pub fn value(&self) -> u64 {
        self.0.clone().finalize()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

/// The CRC-64 of `bytes`.
pub fn checksum(bytes: &[u8]) -> u64 {
    CRC64.checksum(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_redis_reference_value() {
        // src/crc64.c in Redis: crc64(0, "123456789", 9) == 0xe9c6d914c4b8d9ca.
        assert_eq!(checksum(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let mut running = Crc64::new();
        running.update(b"1234");
        running.update(b"56789");
        assert_eq!(running.value(), 0xe9c6_d914_c4b8_d9ca);
    }
}
