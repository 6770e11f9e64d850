//! Random timing for fault injection: a small deterministic generator, seeded from the clock
//! unless `COFFER_FAULT_SEED` says otherwise; the seed is printed so that a failure can be
//! replayed.

use std::time::Duration;

pub struct Random(u64);

impl Random {
    pub fn new(scenario: &str) -> Self {
        let seed = std::env::var("COFFER_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{scenario}: COFFER_FAULT_SEED={seed}");
        Self(seed)
    }

    /// A duration in `[low, high)`.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let span = (high.saturating_sub(low)).as_millis().max(1) as u64;
        low + Duration::from_millis(self.0 % span)
    }
}
