//! Freshness (the recovery point objective) of a schedule: how old its newest successful
//! backup may get before the schedule is stale, and whether it is. Pure, no I/O.

use chrono::{DateTime, Duration, Utc};

use crate::schedule::CronSchedule;

/// How far ahead [`longest_gap`] looks: a little over a year, so that monthly and yearly
/// schedules and both daylight-saving changes are seen...
const LOOK_AHEAD_DAYS: i64 = 400;
/// ...unless there are more than this many runs in it (an hourly schedule has 9,600)...
const MAX_RUNS: usize = 10_000;
/// ...but always at least 8 days, so that a weekend is seen (an every-minute schedule has
/// 11,520 runs in them).
const AT_LEAST_DAYS: i64 = 8;

/// `maxAge` that is not a number followed by m, h, d or w.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("freshness.maxAge {0:?} is not a number followed by m, h, d or w (for example 36h or 2d)")]
pub struct AgeError(pub String);

/// Parses an age: a positive number followed by `m` (minutes), `h` (hours), `d` (days) or
/// `w` (weeks), for example `90m`, `36h`, `2d`, `8w`.
pub fn parse_age(text: &str) -> Result<Duration, AgeError> {
    let error = || AgeError(text.to_owned());
    let unit = text.chars().last().ok_or_else(error)?;
    let number: i64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| error())?;
    if number <= 0 || number > 999_999 {
        return Err(error());
    }
    match unit {
        'm' => Ok(Duration::minutes(number)),
        'h' => Ok(Duration::hours(number)),
        'd' => Ok(Duration::days(number)),
        'w' => Ok(Duration::weeks(number)),
        _ => Err(error()),
    }
}

/// An age as people say it, rounded down: `45m`, `30h05m`, `12d04h`.
pub fn age(d: Duration) -> String {
    let minutes = d.num_minutes().max(0);
    if minutes < 60 {
        format!("{minutes}m")
    } else if minutes < 72 * 60 {
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    } else {
        format!("{}d{:02}h", minutes / (24 * 60), minutes / 60 % 24)
    }
}

/// A limit in the largest unit that says it exactly: `2d`, `50h`, `90m`.
pub fn limit(d: Duration) -> String {
    let minutes = d.num_minutes().max(0);
    if minutes % (24 * 60) == 0 && minutes > 0 {
        format!("{}d", minutes / (24 * 60))
    } else if minutes % 60 == 0 && minutes > 0 {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

/// The longest time between two consecutive runs of `cron` after `from`, in its time zone
/// (a daily run in a zone with daylight saving has a 25-hour gap once a year; a weekday
/// schedule has a 3-day gap every weekend). `None` for a schedule with fewer than two runs
/// ahead, which [`CronSchedule::parse`] makes impossible in practice.
pub fn longest_gap(cron: &CronSchedule, from: DateTime<Utc>) -> Option<Duration> {
    let end = from + Duration::days(LOOK_AHEAD_DAYS);
    let week = from + Duration::days(AT_LEAST_DAYS);
    let mut previous = cron.next_after(from)?;
    let mut longest: Option<Duration> = None;
    let mut runs = 0usize;
    while let Some(next) = cron.next_after(previous) {
        let gap = next - previous;
        longest = Some(longest.map_or(gap, |l| l.max(gap)));
        runs += 1;
        // Past the horizon, one more gap is still taken: a yearly schedule needs it.
        if next > end || (runs >= MAX_RUNS && next > week) {
            break;
        }
        previous = next;
    }
    longest
}

/// The `maxAge` used when the schedule gives none: twice its longest gap between runs, so
/// that one missed or failed run is tolerated and a second one is not.
pub fn default_max_age(cron: &CronSchedule, from: DateTime<Utc>) -> Option<Duration> {
    longest_gap(cron, from).map(|gap| gap * 2)
}

/// What a schedule's freshness is at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Suspended on purpose: not judged.
    Suspended,
    /// The newest success (or, before the first one, the schedule's creation) is younger
    /// than `max_age`; it becomes stale at `stale_at`.
    Fresh {
        since: DateTime<Utc>,
        succeeded: bool,
        stale_at: DateTime<Utc>,
    },
    /// No success for longer than `max_age`.
    Stale {
        since: DateTime<Utc>,
        succeeded: bool,
        age: Duration,
    },
}

/// Judges a schedule at `now`: `last_success` is when its newest successful backup
/// completed, `created` when the schedule was made (a new schedule has `max_age` to make its
/// first backup).
pub fn judge(
    suspended: bool,
    last_success: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Verdict {
    if suspended {
        return Verdict::Suspended;
    }
    let (since, succeeded) = match last_success {
        Some(t) => (t, true),
        None => (created, false),
    };
    let age = now - since;
    if age > max_age {
        Verdict::Stale {
            since,
            succeeded,
            age,
        }
    } else {
        Verdict::Fresh {
            since,
            succeeded,
            stale_at: since + max_age,
        }
    }
}

impl Verdict {
    /// The `Fresh` condition: status, reason and a one-line message that names the fix.
    pub fn condition(&self, max_age: Duration, how_to_look: &str) -> (bool, &'static str, String) {
        let limit = limit(max_age);
        match self {
            Verdict::Suspended => (
                true,
                "Suspended",
                "the schedule is suspended: freshness is not checked".to_owned(),
            ),
            Verdict::Fresh {
                since,
                succeeded: true,
                stale_at,
            } => (
                true,
                "Fresh",
                format!(
                    "the newest successful backup completed at {}; stale at {} (maxAge {limit})",
                    since.to_rfc3339(),
                    stale_at.to_rfc3339()
                ),
            ),
            Verdict::Fresh {
                succeeded: false,
                stale_at,
                ..
            } => (
                true,
                "Fresh",
                format!(
                    "no backup has succeeded yet; stale at {} if none does (maxAge {limit})",
                    stale_at.to_rfc3339()
                ),
            ),
            Verdict::Stale {
                since,
                succeeded: true,
                age: old,
            } => (
                false,
                "Stale",
                format!(
                    "the newest successful backup is {} old (completed at {}), older than maxAge {limit}; {how_to_look}",
                    age(*old),
                    since.to_rfc3339()
                ),
            ),
            Verdict::Stale {
                succeeded: false,
                age: old,
                ..
            } => (
                false,
                "Stale",
                format!(
                    "no backup has succeeded in the {} since the schedule was created, longer than maxAge {limit}; {how_to_look}",
                    age(*old)
                ),
            ),
        }
    }

    pub fn is_stale(&self) -> bool {
        matches!(self, Verdict::Stale { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn default_of(expr: &str, tz: &str) -> Duration {
        let cron = CronSchedule::parse(expr, tz).unwrap();
        default_max_age(&cron, utc(2026, 11, 30, 12, 0)).unwrap()
    }

    #[test]
    fn the_default_is_twice_the_longest_gap_in_the_schedules_time_zone() {
        assert_eq!(default_of("*/15 * * * *", "UTC"), Duration::minutes(30));
        assert_eq!(default_of("@hourly", "UTC"), Duration::hours(2));
        assert_eq!(default_of("0 2 * * *", "UTC"), Duration::days(2));
        // A daily run in Berlin: the autumn change makes one day 25 hours long.
        assert_eq!(
            default_of("30 2 * * *", "Europe/Berlin"),
            Duration::hours(50)
        );
        // In Manila (no daylight saving) every day is 24 hours.
        assert_eq!(default_of("30 2 * * *", "Asia/Manila"), Duration::hours(48));
        // Weekdays only: the weekend is a 3-day gap.
        assert_eq!(default_of("0 2 * * 1-5", "UTC"), Duration::days(6));
        // Every minute on weekdays: the weekend is still seen.
        assert_eq!(
            default_of("* * * * 1-5", "UTC"),
            (Duration::days(2) + Duration::minutes(1)) * 2
        );
        // Monthly: the longest month is 31 days.
        assert_eq!(default_of("@monthly", "UTC"), Duration::days(62));
        // Yearly: 2028 is a leap year, seen within the look-ahead.
        assert_eq!(default_of("@yearly", "UTC"), Duration::days(2 * 366));
        // On 29 February only: a gap of four years.
        assert_eq!(
            default_of("0 0 29 2 *", "UTC"),
            Duration::days(2 * (365 * 4 + 1))
        );
    }

    #[test]
    fn ages_parse_strictly() {
        assert_eq!(parse_age("90m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_age("36h"), Ok(Duration::hours(36)));
        assert_eq!(parse_age("2d"), Ok(Duration::days(2)));
        assert_eq!(parse_age("8w"), Ok(Duration::weeks(8)));
        for bad in ["", "d", "0d", "-1d", "1.5d", "10y", "1000000d", "2 d", "٣d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ages_are_said_in_the_unit_that_matters() {
        assert_eq!(age(Duration::seconds(59)), "0m");
        assert_eq!(age(Duration::minutes(59)), "59m");
        assert_eq!(age(Duration::minutes(121)), "2h01m");
        assert_eq!(age(Duration::hours(50)), "50h00m");
        assert_eq!(age(Duration::hours(80)), "3d08h");
        assert_eq!(limit(Duration::hours(48)), "2d");
        assert_eq!(limit(Duration::hours(50)), "50h");
        assert_eq!(limit(Duration::minutes(90)), "90m");
    }

    #[test]
    fn stale_once_the_newest_success_is_older_than_max_age() {
        let created = utc(2026, 11, 1, 0, 0);
        let success = utc(2026, 11, 28, 2, 0);
        let max = Duration::days(2);
        assert_eq!(
            judge(false, Some(success), created, max, utc(2026, 11, 30, 2, 0)),
            Verdict::Fresh {
                since: success,
                succeeded: true,
                stale_at: utc(2026, 11, 30, 2, 0)
            }
        );
        let verdict = judge(false, Some(success), created, max, utc(2026, 11, 30, 3, 0));
        assert!(verdict.is_stale());
        let (ok, reason, message) = verdict.condition(max, "see its Backups");
        assert!(!ok);
        assert_eq!(reason, "Stale");
        assert!(message.contains("49h00m old"), "{message}");
        assert!(message.contains("maxAge 2d"), "{message}");
        assert!(message.ends_with("see its Backups"), "{message}");
    }

    #[test]
    fn a_new_schedule_has_max_age_for_its_first_success_and_a_suspended_one_is_never_stale() {
        let created = utc(2026, 11, 30, 0, 0);
        let max = Duration::hours(2);
        assert!(!judge(false, None, created, max, utc(2026, 11, 30, 1, 0)).is_stale());
        let verdict = judge(false, None, created, max, utc(2026, 11, 30, 2, 1));
        assert!(verdict.is_stale());
        let (_, _, message) = verdict.condition(max, "look");
        assert!(
            message.starts_with("no backup has succeeded in the 2h01m"),
            "{message}"
        );
        let suspended = judge(true, None, created, max, utc(2027, 1, 1, 0, 0));
        assert_eq!(suspended, Verdict::Suspended);
        assert!(suspended.condition(max, "look").0);
    }
}
