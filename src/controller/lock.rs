//! How long a backup's objects are locked (S3 Object Lock). Pure.
//!
//! A backup is locked when it is written, for `objectLock.retainFor` or, by default, the
//! shortest period any retention rule keeps a backup for; the backups a longer rule keeps
//! (monthly, yearly) are locked longer later ([`wanted`], [`super::relock`]).

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{BackupStorage, LockRecord, Retention};

/// Days a backup is locked when neither `objectLock.days` nor a retention rule says.
pub const DEFAULT_LOCK_DAYS: i64 = 30;

/// The lock of a backup taken at `time` into `storage`, kept by `retention`: none when the
/// storage has no `objectLock`.
pub fn record(
    storage: &BackupStorage,
    retention: Option<&Retention>,
    time: DateTime<Utc>,
) -> Option<LockRecord> {
    let lock = storage.s3.as_ref()?.object_lock.as_ref()?;
    let period = match lock
        .retain_for
        .as_deref()
        .and_then(|p| crate::freshness::parse_age(p).ok())
    {
        Some(period) => period,
        None => derived(retention),
    };
    let period = period.min(TimeDelta::days(MAX_LOCK_DAYS));
    Some(LockRecord {
        mode: lock.mode,
        retain_until: super::status::time(
            time.checked_add_signed(period)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        ),
    })
}

/// Until when the objects of a backup are locked, as far as its status says: the lock it was
/// written with, or a later one it was extended to.
pub fn current(status: &crate::api::BackupStatus) -> Option<DateTime<Utc>> {
    let written = status
        .resolved
        .as_ref()
        .and_then(|r| r.lock.as_ref())
        .map(|l| super::status::chrono(&l.retain_until));
    let extended = status.locked_until.as_ref().map(super::status::chrono);
    written.into_iter().chain(extended).max()
}

/// How long retention keeps a backup taken at `time` for the rules that keep it (`why`): the
/// longest of their periods (`Monthly` with `keepMonthly: 12` → 12 × 31 days), at most
/// `maxAge`; none when no rule with a period keeps it (`keepLast`, the newest backup).
/// A rule counts only once the backup's period of it has ended (in `zone`, at `now`):
/// retention keeps the newest backup of the running day, month and year too, and that
/// backup may not be the one kept for the month when the month ends.
pub fn wanted(
    why: &[super::retention::KeptBy],
    policy: &Retention,
    time: DateTime<Utc>,
    now: DateTime<Utc>,
    zone: chrono_tz::Tz,
) -> Option<DateTime<Utc>> {
    use super::retention::KeptBy;
    use chrono::{Datelike, TimeZone, Timelike};
    let n = |v: Option<i32>| {
        v.filter(|n| *n > 0)
            .map(|n| i64::from(n).min(MAX_LOCK_DAYS))
    };
    let (at, today) = (
        zone.from_utc_datetime(&time.naive_utc()),
        zone.from_utc_datetime(&now.naive_utc()),
    );
    let ended = |reason: &KeptBy| match reason {
        KeptBy::Hourly => (at.date_naive(), at.hour()) != (today.date_naive(), today.hour()),
        KeptBy::Daily => at.date_naive() != today.date_naive(),
        KeptBy::Weekly => at.iso_week() != today.iso_week(),
        KeptBy::Monthly => (at.year(), at.month()) != (today.year(), today.month()),
        KeptBy::Yearly => at.year() != today.year(),
        _ => false,
    };
    let period = why
        .iter()
        .filter(|reason| ended(reason))
        .filter_map(|reason| match reason {
            KeptBy::Hourly => n(policy.keep_hourly).map(TimeDelta::hours),
            KeptBy::Daily => n(policy.keep_daily).map(TimeDelta::days),
            KeptBy::Weekly => n(policy.keep_weekly).map(TimeDelta::weeks),
            KeptBy::Monthly => n(policy.keep_monthly).map(|m| TimeDelta::days(31 * m)),
            KeptBy::Yearly => n(policy.keep_yearly).map(|y| TimeDelta::days(366 * y)),
            _ => None,
        })
        .max()?;
    let max_age = policy
        .max_age
        .as_deref()
        .and_then(|a| super::retention::parse_max_age(a).ok());
    let period = max_age.map_or(period, |age| period.min(age));
    time.checked_add_signed(period.min(TimeDelta::days(MAX_LOCK_DAYS)))
}

/// The longest lock Coffer sets (100 years), whatever the retention counts say.
pub const MAX_LOCK_DAYS: i64 = 36_500;

/// The shortest period any keep rule keeps a backup for (`keepDaily: 7` → 7 days,
/// `keepMonthly: 12` → 12 × 31 days), at most `maxAge`; [`DEFAULT_LOCK_DAYS`] without rules.
/// `keepLast` says how many, not how long, and does not count.
pub fn derived(retention: Option<&Retention>) -> TimeDelta {
    let Some(r) = retention else {
        return TimeDelta::days(DEFAULT_LOCK_DAYS);
    };
    // Counts are capped first, so that no period overflows.
    let n = |v: Option<i32>| {
        v.filter(|n| *n > 0)
            .map(|n| i64::from(n).min(MAX_LOCK_DAYS))
    };
    let periods = [
        n(r.keep_hourly).map(TimeDelta::hours),
        n(r.keep_daily).map(TimeDelta::days),
        n(r.keep_weekly).map(TimeDelta::weeks),
        n(r.keep_monthly).map(|m| TimeDelta::days(31 * m)),
        n(r.keep_yearly).map(|y| TimeDelta::days(366 * y)),
    ];
    let shortest = periods.into_iter().flatten().min();
    let max_age = r
        .max_age
        .as_deref()
        .and_then(|a| super::retention::parse_max_age(a).ok());
    match (shortest, max_age) {
        (Some(p), Some(age)) => p.min(age),
        (Some(p), None) => p,
        (None, Some(age)) => age,
        (None, None) => TimeDelta::days(DEFAULT_LOCK_DAYS),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::api::{ObjectLock, ObjectLockMode, S3Storage};

    fn retention(f: impl FnOnce(&mut Retention)) -> Retention {
        let mut r = Retention::default();
        f(&mut r);
        r
    }

    #[test]
    fn the_lock_lasts_the_shortest_period_a_rule_keeps_a_backup_for() {
        let daily = retention(|r| {
            r.keep_daily = Some(7);
            r.keep_monthly = Some(12);
        });
        assert_eq!(derived(Some(&daily)), TimeDelta::days(7));
        let monthly = retention(|r| r.keep_monthly = Some(12));
        assert_eq!(derived(Some(&monthly)), TimeDelta::days(372));
        let capped = retention(|r| {
            r.keep_weekly = Some(8);
            r.max_age = Some("30d".into());
        });
        assert_eq!(derived(Some(&capped)), TimeDelta::days(30));
        let last = retention(|r| r.keep_last = Some(5));
        assert_eq!(derived(Some(&last)), TimeDelta::days(DEFAULT_LOCK_DAYS));
        assert_eq!(derived(None), TimeDelta::days(DEFAULT_LOCK_DAYS));
        // Absurd counts neither overflow nor lock beyond a century.
        let huge = retention(|r| r.keep_yearly = Some(i32::MAX));
        let storage = BackupStorage {
            s3: Some(S3Storage {
                bucket: "b".into(),
                prefix: String::new(),
                endpoint: None,
                region: "us-east-1".into(),
                force_path_style: false,
                credentials_secret_ref: None,
                object_lock: Some(ObjectLock {
                    mode: ObjectLockMode::Governance,
                    retain_for: None,
                }),
            }),
            filesystem: None,
        };
        let now = Utc::now();
        let lock = record(&storage, Some(&huge), now).unwrap();
        let until = super::super::status::chrono(&lock.retain_until);
        assert!(until - now <= TimeDelta::days(MAX_LOCK_DAYS), "{until}");
    }

    #[test]
    fn a_backup_kept_monthly_is_wanted_locked_for_the_months_once_its_month_ended() {
        use crate::controller::retention::KeptBy;
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let zone = chrono_tz::Tz::UTC;
        let time = at("2026-11-30T02:00:00Z");
        let policy = retention(|r| {
            r.keep_daily = Some(7);
            r.keep_monthly = Some(12);
        });
        let all = [KeptBy::Newest, KeptBy::Daily, KeptBy::Monthly];
        // The same day: the newest backup of a running day and month is kept for them, but
        // it may not stay the one kept: nothing more than the written lock.
        assert_eq!(
            wanted(&all, &policy, time, at("2026-11-30T20:00:00Z"), zone),
            None
        );
        // The day and the month ended (it is December): kept for the month.
        assert_eq!(
            wanted(&all, &policy, time, at("2026-12-01T00:01:00Z"), zone),
            Some(time + TimeDelta::days(372))
        );
        // The day ended, the month has not: kept as a daily one.
        let mid = at("2026-11-15T02:00:00Z");
        assert_eq!(
            wanted(&all, &policy, mid, at("2026-11-16T02:00:00Z"), zone),
            Some(mid + TimeDelta::days(7))
        );
        // Periods are the schedule's time zone's: at 03:00 UTC on 1 December it is still
        // the 30th of November in Los Angeles, where the backup was taken that morning.
        let la: chrono_tz::Tz = "America/Los_Angeles".parse().unwrap();
        let noon = at("2026-11-30T12:00:00Z");
        assert_eq!(
            wanted(&all, &policy, noon, at("2026-12-01T03:00:00Z"), la),
            None
        );
        assert_eq!(
            wanted(&all, &policy, noon, at("2026-12-01T03:00:00Z"), zone),
            Some(noon + TimeDelta::days(372))
        );
        let capped = retention(|r| {
            r.keep_monthly = Some(12);
            r.max_age = Some("90d".into());
        });
        assert_eq!(
            wanted(
                &[KeptBy::Monthly],
                &capped,
                time,
                at("2026-12-02T00:00:00Z"),
                zone
            ),
            Some(time + TimeDelta::days(90))
        );
    }

    #[test]
    fn explicit_days_win_and_no_object_lock_means_no_lock() {
        let time = DateTime::parse_from_rfc3339("2026-12-01T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut storage = BackupStorage {
            s3: Some(S3Storage {
                bucket: "b".into(),
                prefix: String::new(),
                endpoint: None,
                region: "us-east-1".into(),
                force_path_style: false,
                credentials_secret_ref: None,
                object_lock: None,
            }),
            filesystem: None,
        };
        assert_eq!(record(&storage, None, time), None);
        storage.s3.as_mut().unwrap().object_lock = Some(ObjectLock {
            mode: ObjectLockMode::Compliance,
            retain_for: Some("2d".into()),
        });
        let daily = retention(|r| r.keep_daily = Some(7));
        let lock = record(&storage, Some(&daily), time).unwrap();
        assert_eq!(lock.mode, ObjectLockMode::Compliance);
        assert_eq!(
            super::super::status::chrono(&lock.retain_until),
            time + TimeDelta::days(2)
        );
    }
}
