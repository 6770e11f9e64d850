//! What a schedule does now: run, skip, or wait. Pure; the controller supplies the clock.

use chrono::{DateTime, Duration, Utc};

use crate::api::ConcurrencyPolicy;
use crate::schedule::CronSchedule;

/// What to do at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No run is due.
    Wait,
    /// Create the Backup of the run due at `time`; with `replace`, delete the running ones
    /// first.
    Create { time: DateTime<Utc>, replace: bool },
    /// The run due at `time` is skipped; it counts as scheduled.
    Skip { time: DateTime<Utc>, why: Skipped },
    /// The run due at `time` exists already; only the status has to say so.
    Made { time: DateTime<Utc> },
}

/// Why a due run is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// It could not start within `startingDeadlineSeconds` of its time.
    MissedDeadline { late_seconds: i64 },
    /// The previous run is still going and the policy is `Forbid`.
    StillRunning,
}

/// The newest time the schedule was due in `(since, now]`, if any. After a long downtime only
/// the newest missed run counts: at most one catch-up run. The search widens step by step,
/// so a frequent schedule never walks through months of occurrences.
pub fn latest_due(
    schedule: &CronSchedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if now <= since {
        return None;
    }
    let windows = [
        Duration::hours(1),
        Duration::days(2),
        Duration::days(40),
        Duration::days(400),
        Duration::days(4000),
    ];
    for window in windows {
        let start = (now - window).max(since);
        let mut found = None;
        let mut cursor = start;
        while let Some(t) = schedule.next_after(cursor) {
            if t > now {
                break;
            }
            found = Some(t);
            cursor = t;
        }
        if found.is_some() || start == since {
            return found;
        }
    }
    None
}

/// Decides what the schedule does at `now`, given when it last scheduled a run (or when it
/// was created), its `startingDeadlineSeconds`, the due times of the runs it has already
/// made, how many of them are running, and its concurrency policy.
///
/// A run that already exists is never made, skipped or replaced again, even when `since` is
/// older than it (the controller may read its own status before its last write shows).
pub fn step(
    schedule: &CronSchedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    starting_deadline_seconds: Option<i64>,
    made: &[DateTime<Utc>],
    running: usize,
    policy: ConcurrencyPolicy,
) -> Step {
    let Some(time) = latest_due(schedule, since, now) else {
        return Step::Wait;
    };
    if made.contains(&time) {
        return Step::Made { time };
    }
    let late_seconds = (now - time).num_seconds();
    if let Some(deadline) = starting_deadline_seconds
        && late_seconds > deadline
    {
        return Step::Skip {
            time,
            why: Skipped::MissedDeadline { late_seconds },
        };
    }
    match (policy, running) {
        (ConcurrencyPolicy::Forbid, n) if n > 0 => Step::Skip {
            time,
            why: Skipped::StillRunning,
        },
        (ConcurrencyPolicy::Replace, n) => Step::Create {
            time,
            replace: n > 0,
        },
        _ => Step::Create {
            time,
            replace: false,
        },
    }
}

/// The Backup name of a scheduled run: `<schedule>-<yyyymmdd-hhmmss>` of its due time in
/// UTC. The name is the run's identity, so a restart or a second operator cannot duplicate it.
pub fn backup_name(schedule: &str, time: DateTime<Utc>) -> String {
    format!("{schedule}-{}", time.format("%Y%m%d-%H%M%S"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::TimeZone;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn every_minute() -> CronSchedule {
        CronSchedule::parse("* * * * *", "UTC").unwrap()
    }

    #[test]
    fn nothing_is_due_before_the_first_time() {
        let s = CronSchedule::parse("0 3 * * *", "Asia/Manila").unwrap();
        let created = utc(2026, 12, 1, 10, 0, 0);
        assert_eq!(latest_due(&s, created, utc(2026, 12, 1, 18, 59, 59)), None);
        // 03:00 in Manila is 19:00 UTC the day before.
        assert_eq!(
            latest_due(&s, created, utc(2026, 12, 1, 19, 0, 5)),
            Some(utc(2026, 12, 1, 19, 0, 0))
        );
    }

    #[test]
    fn after_downtime_only_the_newest_missed_run_is_caught_up() {
        let since = utc(2026, 12, 1, 0, 0, 0);
        let now = utc(2026, 12, 9, 7, 30, 20);
        assert_eq!(
            latest_due(&every_minute(), since, now),
            Some(utc(2026, 12, 9, 7, 30, 0))
        );
        let monthly = CronSchedule::parse("@monthly", "UTC").unwrap();
        assert_eq!(
            latest_due(&monthly, utc(2026, 1, 15, 0, 0, 0), now),
            Some(utc(2026, 12, 1, 0, 0, 0))
        );
        // A run already scheduled is not due again.
        assert_eq!(
            latest_due(&every_minute(), utc(2026, 12, 9, 7, 30, 0), now),
            None
        );
    }

    #[test]
    fn a_run_later_than_the_deadline_is_skipped() {
        let since = utc(2026, 12, 1, 0, 0, 0);
        let now = utc(2026, 12, 1, 0, 5, 30);
        let s = every_minute();
        let step_with =
            |deadline| step(&s, since, now, deadline, &[], 0, ConcurrencyPolicy::Forbid);
        assert_eq!(
            step_with(Some(10)),
            Step::Skip {
                time: utc(2026, 12, 1, 0, 5, 0),
                why: Skipped::MissedDeadline { late_seconds: 30 }
            }
        );
        assert_eq!(
            step_with(Some(60)),
            Step::Create {
                time: utc(2026, 12, 1, 0, 5, 0),
                replace: false
            }
        );
        assert!(matches!(step_with(None), Step::Create { .. }));
    }

    #[test]
    fn concurrency_policies() {
        let since = utc(2026, 12, 1, 0, 0, 0);
        let now = utc(2026, 12, 1, 0, 1, 1);
        let time = utc(2026, 12, 1, 0, 1, 0);
        let s = every_minute();
        let with = |running, policy| step(&s, since, now, None, &[], running, policy);
        assert_eq!(
            with(1, ConcurrencyPolicy::Forbid),
            Step::Skip {
                time,
                why: Skipped::StillRunning
            }
        );
        assert_eq!(
            with(0, ConcurrencyPolicy::Forbid),
            Step::Create {
                time,
                replace: false
            }
        );
        assert_eq!(
            with(2, ConcurrencyPolicy::Replace),
            Step::Create {
                time,
                replace: true
            }
        );
        assert_eq!(
            with(2, ConcurrencyPolicy::Allow),
            Step::Create {
                time,
                replace: false
            }
        );
    }

    #[test]
    fn a_run_that_exists_is_not_made_skipped_or_replaced_again() {
        let since = utc(2026, 12, 1, 0, 0, 0);
        let now = utc(2026, 12, 1, 0, 1, 1);
        let time = utc(2026, 12, 1, 0, 1, 0);
        let s = every_minute();
        for policy in [
            ConcurrencyPolicy::Forbid,
            ConcurrencyPolicy::Replace,
            ConcurrencyPolicy::Allow,
        ] {
            assert_eq!(
                step(&s, since, now, Some(0), &[time], 1, policy),
                Step::Made { time }
            );
        }
    }

    #[test]
    fn dst_in_berlin_runs_once_per_day() {
        // 2026-10-25: clocks go back from 03:00 to 02:00 in Europe/Berlin; 02:30 happens
        // twice but runs once.
        let s = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let first = latest_due(&s, utc(2026, 10, 24, 12, 0, 0), utc(2026, 10, 25, 2, 0, 0));
        assert_eq!(first, Some(utc(2026, 10, 25, 0, 30, 0)));
        assert_eq!(
            latest_due(&s, first.unwrap(), utc(2026, 10, 25, 12, 0, 0)),
            None
        );
    }

    #[test]
    fn backup_names_are_the_utc_due_time() {
        assert_eq!(
            backup_name("shop-redis", utc(2026, 12, 1, 16, 0, 0)),
            "shop-redis-20261201-160000"
        );
    }
}
