//! Cron schedules read in an IANA time zone: validation and next run times. Pure, no I/O.
//!
//! The controller reports a [`ScheduleError`] as the `Ready` condition of a BackupSchedule,
//! with [`ScheduleError::reason`] as the condition's reason.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A schedule or time zone that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse or never fires.
    #[error(
        "schedule {expression:?} is not valid: {detail}; use 5 fields (minute hour day-of-month month day-of-week, e.g. \"0 0 * * *\") or @hourly, @daily, @weekly, @monthly, @yearly"
    )]
    InvalidSchedule { expression: String, detail: String },
    /// The time zone is not an IANA time zone name.
    #[error(
        "time zone {name:?} is not known: use an IANA name such as \"UTC\", \"Asia/Manila\" or \"Europe/Berlin\""
    )]
    UnknownTimeZone { name: String },
}

impl ScheduleError {
    /// The bounded, CamelCase reason used for conditions, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSchedule { .. } => "InvalidSchedule",
            Self::UnknownTimeZone { .. } => "UnknownTimeZone",
        }
    }
}

/// A validated cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

impl CronSchedule {
    /// Parses a 5-field cron expression (or `@hourly`, `@daily`, `@weekly`, `@monthly`,
    /// `@yearly`, `@annually`) read in the IANA time zone `time_zone`.
    ///
    /// Seconds and years fields are refused, as in Kubernetes CronJobs. An expression that
    /// can never fire (such as `0 0 30 2 *`) is refused too.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let zone = Tz::from_str(time_zone).map_err(|_| ScheduleError::UnknownTimeZone {
            name: time_zone.to_owned(),
        })?;
        let invalid = |detail: String| ScheduleError::InvalidSchedule {
            expression: expression.to_owned(),
            detail,
        };
        let trimmed = expression.trim();
        if trimmed.starts_with('@') && !is_supported_alias(trimmed) {
            return Err(invalid(format!("unknown alias {trimmed}")));
        }
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && fields != 5 {
            return Err(invalid(format!("it has {fields} fields, not 5")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| invalid(e.to_string()))?;
        let schedule = Self { cron, zone };
        // An expression such as "0 0 30 2 *" parses but never fires.
        let probe = DateTime::<Utc>::UNIX_EPOCH;
        if schedule.next_after(probe).is_none() {
            return Err(invalid("it never fires".to_owned()));
        }
        Ok(schedule)
    }

    /// The time zone the schedule is read in.
    pub fn time_zone(&self) -> Tz {
        self.zone
    }

    /// The first run strictly after `after`, or `None` if there is none (in practice only
    /// for expressions that can never fire, which [`CronSchedule::parse`] refuses).
    ///
    /// Daylight-saving changes follow the Open Cron Pattern Specification, as implemented by
    /// `croner`: a wall-clock time skipped by a spring-forward gap runs at the first instant
    /// after the gap; a time repeated by a fall-back overlap runs once, at its first
    /// occurrence.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

fn is_supported_alias(alias: &str) -> bool {
    matches!(
        alias.to_ascii_lowercase().as_str(),
        "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@hourly"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn next(expr: &str, tz: &str, after: DateTime<Utc>) -> DateTime<Utc> {
        CronSchedule::parse(expr, tz)
            .unwrap()
            .next_after(after)
            .unwrap()
    }

    #[test]
    fn midnight_in_manila_is_four_pm_utc_the_day_before() {
        assert_eq!(
            next("0 0 * * *", "Asia/Manila", utc(2026, 12, 1, 12, 0)),
            utc(2026, 12, 1, 16, 0)
        );
        // Exactly at a run time, the next run is the following day's.
        assert_eq!(
            next("0 0 * * *", "Asia/Manila", utc(2026, 12, 1, 16, 0)),
            utc(2026, 12, 2, 16, 0)
        );
    }

    #[test]
    fn default_utc_and_aliases() {
        let t = utc(2026, 12, 1, 10, 30);
        assert_eq!(next("@hourly", "UTC", t), utc(2026, 12, 1, 11, 0));
        assert_eq!(next("@daily", "UTC", t), utc(2026, 12, 2, 0, 0));
        assert_eq!(next("@DAILY", "UTC", t), utc(2026, 12, 2, 0, 0));
        // 2026-12-06 is a Sunday.
        assert_eq!(next("@weekly", "UTC", t), utc(2026, 12, 6, 0, 0));
        assert_eq!(next("@monthly", "UTC", t), utc(2027, 1, 1, 0, 0));
        assert_eq!(next("@yearly", "UTC", t), utc(2027, 1, 1, 0, 0));
        assert_eq!(next("*/15 * * * *", "UTC", t), utc(2026, 12, 1, 10, 45));
        assert_eq!(next("0 9 * * MON-FRI", "UTC", t), utc(2026, 12, 2, 9, 0));
        assert_eq!(next("  0 0 * * *  ", "UTC", t), utc(2026, 12, 2, 0, 0));
    }

    #[test]
    fn invalid_expressions_are_refused_with_the_reason() {
        for expr in [
            "",
            "0 0 * *",
            "0 0 0 * * *",
            "0 0 * * * 2026",
            "61 * * * *",
            "0 24 * * *",
            "0 0 32 * *",
            "0 0 * 13 *",
            "0 0 * * 8",
            "every day",
            "@midnight",
            "@reboot",
            "0 0 30 2 *",
        ] {
            let err = CronSchedule::parse(expr, "UTC").unwrap_err();
            assert_eq!(err.reason(), "InvalidSchedule", "{expr:?} gave {err}");
            assert!(err.to_string().contains("use 5 fields"), "{err}");
        }
    }

    #[test]
    fn unknown_time_zones_are_refused() {
        for tz in ["Mars/Olympus_Mons", "", "asia/manila", "UTC+8", "Local"] {
            let err = CronSchedule::parse("0 0 * * *", tz).unwrap_err();
            assert_eq!(err.reason(), "UnknownTimeZone", "{tz:?}");
            assert!(err.to_string().contains("IANA"));
        }
        assert!(CronSchedule::parse("0 0 * * *", "Etc/UTC").is_ok());
        assert_eq!(
            CronSchedule::parse("0 0 * * *", "Europe/Berlin")
                .unwrap()
                .time_zone(),
            chrono_tz::Europe::Berlin
        );
    }

    #[test]
    fn spring_forward_gap_runs_once_right_after_the_gap() {
        // 2026-03-08 02:00 EST jumps to 03:00 EDT in New York: 02:30 does not exist.
        let first = next("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12, 0));
        assert_eq!(first, utc(2026, 3, 8, 7, 0), "03:00 EDT");
        let second = CronSchedule::parse("30 2 * * *", "America/New_York")
            .unwrap()
            .next_after(first)
            .unwrap();
        assert_eq!(second, utc(2026, 3, 9, 6, 30), "02:30 EDT the next day");
    }

    #[test]
    fn fall_back_overlap_runs_once() {
        // 2026-11-01 02:00 EDT falls back to 01:00 EST: 01:30 happens twice.
        let schedule = CronSchedule::parse("30 1 * * *", "America/New_York").unwrap();
        let first = schedule.next_after(utc(2026, 10, 31, 12, 0)).unwrap();
        assert_eq!(first, utc(2026, 11, 1, 5, 30), "01:30 EDT, the first one");
        let second = schedule.next_after(first).unwrap();
        assert_eq!(second, utc(2026, 11, 2, 6, 30), "01:30 EST on the next day");
    }

    #[test]
    fn daily_midnight_keeps_local_time_across_dst() {
        // Europe/Berlin changes to CEST on 2026-03-29: midnight moves from 23:00Z to 22:00Z.
        let schedule = CronSchedule::parse("0 0 * * *", "Europe/Berlin").unwrap();
        let a = schedule.next_after(utc(2026, 3, 28, 12, 0)).unwrap();
        let b = schedule.next_after(a).unwrap();
        let c = schedule.next_after(b).unwrap();
        assert_eq!(a, utc(2026, 3, 28, 23, 0));
        assert_eq!(b, utc(2026, 3, 29, 22, 0));
        assert_eq!(c, utc(2026, 3, 30, 22, 0));
    }
}
