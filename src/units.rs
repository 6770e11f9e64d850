//! Human-readable sizes, rates and durations. Pure.

use std::time::Duration;

/// `12.5 MiB`, `512 B`: binary units, one decimal above KiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `18.2 MiB/s`.
pub fn rate(n: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return "-".to_owned();
    }
    format!("{}/s", bytes((n as f64 / seconds) as u64))
}

/// `1m32s`, `2.3s`, `1h02m`.
pub fn duration(d: Duration) -> String {
    let total = d.as_secs();
    if total >= 3600 {
        format!("{}h{:02}m", total / 3600, (total % 3600) / 60)
    } else if total >= 60 {
        format!("{}m{:02}s", total / 60, total % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_rates_and_durations() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(13_107_200), "12.5 MiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(rate(10 << 20, Duration::from_secs(2)), "5.0 MiB/s");
        assert_eq!(rate(1, Duration::ZERO), "-");
        assert_eq!(duration(Duration::from_millis(2300)), "2.3s");
        assert_eq!(duration(Duration::from_secs(92)), "1m32s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h02m");
    }
}
