//! Part sizes of an S3 multipart upload of a stream whose length is not known in advance.
//! Pure.

/// The first part size: 8 MiB.
pub const INITIAL_PART_SIZE: usize = 8 << 20;
/// S3's limit on the number of parts.
pub const MAX_PARTS: usize = 10_000;
/// S3's smallest part (except the last).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: usize = 5 << 30;
/// The part size doubles after each this many parts.
const PARTS_PER_STEP: usize = 1_000;

/// The size of part `index` (0-based): `initial` for the first 1,000 parts, then doubling
/// every 1,000 parts, capped at 5 GiB. With 8 MiB to start, the first 1,000 parts carry
/// 7.8 GiB, the stream can reach 7.8 TiB, and memory per part stays 8 MiB for streams under
/// 7.8 GiB.
pub fn part_size(initial: usize, index: usize) -> usize {
    let doublings = u32::try_from(index / PARTS_PER_STEP).unwrap_or(u32::MAX);
    initial
        .checked_shl(doublings)
        .filter(|size| *size <= MAX_PART_SIZE)
        .unwrap_or(MAX_PART_SIZE)
}

/// The largest stream `MAX_PARTS` parts can hold, starting at `initial`.
pub fn capacity(initial: usize) -> u64 {
    (0..MAX_PARTS).map(|i| part_size(initial, i) as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_8_mib_and_grows() {
        assert_eq!(part_size(INITIAL_PART_SIZE, 0), 8 << 20);
        assert_eq!(part_size(INITIAL_PART_SIZE, 999), 8 << 20);
        assert_eq!(part_size(INITIAL_PART_SIZE, 1_000), 16 << 20);
        assert_eq!(part_size(INITIAL_PART_SIZE, 9_999), (8 << 20) << 9);
        assert!((0..MAX_PARTS).all(|i| part_size(INITIAL_PART_SIZE, i) >= MIN_PART_SIZE));
        assert!((0..MAX_PARTS).all(|i| part_size(INITIAL_PART_SIZE, i) <= MAX_PART_SIZE));
    }

    #[test]
    fn a_stream_far_beyond_78_gib_fits() {
        let gib = 1u64 << 30;
        // A fixed 8 MiB part would stop at 78.1 GiB.
        assert!((INITIAL_PART_SIZE as u64) * (MAX_PARTS as u64) < 79 * gib);
        assert!(capacity(INITIAL_PART_SIZE) > 1_000 * gib);
    }

    #[test]
    fn sizes_are_capped_at_the_s3_maximum() {
        assert_eq!(part_size(1 << 30, 5_000), MAX_PART_SIZE);
        assert_eq!(part_size(INITIAL_PART_SIZE, usize::MAX), MAX_PART_SIZE);
    }
}
