//! Which backups of a schedule retention keeps: a pure function over the schedule's history.
//!
//! The rules, applied to successful backups newest first:
//! - `keepLast N` keeps the newest N;
//! - `keepHourly/Daily/Weekly/Monthly/Yearly N` keep the newest backup of each of the N most
//!   recent hours, days, ISO weeks, months or years *that have a backup* (as restic does:
//!   after a week of downtime, `keepDaily: 7` still keeps seven backups), with periods
//!   counted in the schedule's time zone;
//! - with none of those set, every successful backup is kept;
//! - `maxAge` deletes what is older, whatever the rules above say.
//!
//! Always: the newest successful backup is kept, running (or pending) backups are kept, and
//! the newest `keepFailed` failed runs are kept while older failed runs are deleted.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::api::Retention;

/// How a backup in the history ended, or that it has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Pending or running.
    Unfinished,
}

/// One backup of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub name: String,
    /// When it was scheduled (or created).
    pub time: DateTime<Utc>,
    pub outcome: Outcome,
}

/// Why a backup is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeptBy {
    Newest,
    Unfinished,
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    /// No keep rule is set: successful backups are kept (until `maxAge`).
    NoRule,
    Failed,
}

/// Why a backup is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletedBecause {
    OlderThanMaxAge,
    NotKeptByAnyRule,
    BeyondKeepFailed,
}

impl std::fmt::Display for DeletedBecause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OlderThanMaxAge => "older than maxAge",
            Self::NotKeptByAnyRule => "not kept by any retention rule",
            Self::BeyondKeepFailed => "a failed run beyond keepFailed",
        })
    }
}

/// What retention decided, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub keep: Vec<(String, Vec<KeptBy>)>,
    pub delete: Vec<(String, DeletedBecause)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("maxAge {0:?} is not a number followed by h, d or w (for example 90d)")]
pub struct MaxAgeError(pub String);

/// `90d`, `12h`, `8w` (freshness's ages without minutes).
pub fn parse_max_age(text: &str) -> Result<Duration, MaxAgeError> {
    match crate::freshness::parse_age(text) {
        Ok(age) if !text.ends_with('m') => Ok(age),
        _ => Err(MaxAgeError(text.to_owned())),
    }
}

/// The period a time falls in, as a comparable key.
type PeriodOf = fn(DateTime<Tz>) -> (i32, u32, u32, u32);

/// Applies `policy` to `history` (in any order) at `now`, with periods counted in `zone`.
pub fn select(
    history: &[Run],
    policy: &Retention,
    zone: Tz,
    now: DateTime<Utc>,
) -> Result<Selection, MaxAgeError> {
    let max_age = policy.max_age.as_deref().map(parse_max_age).transpose()?;
    let mut runs: Vec<&Run> = history.iter().collect();
    // Newest first; equal times by name, so the result does not depend on the input order.
    runs.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));

    let successful: Vec<&Run> = runs
        .iter()
        .copied()
        .filter(|r| r.outcome == Outcome::Succeeded)
        .collect();
    let count = |n: Option<i32>| usize::try_from(n.unwrap_or(0)).unwrap_or(0);
    let periodic: [(KeptBy, usize, PeriodOf); 5] = [
        (KeptBy::Hourly, count(policy.keep_hourly), |t| {
            (t.year(), t.ordinal(), t.hour(), 0)
        }),
        (KeptBy::Daily, count(policy.keep_daily), |t| {
            (t.year(), t.ordinal(), 0, 0)
        }),
        (KeptBy::Weekly, count(policy.keep_weekly), |t| {
            let week = t.iso_week();
            (week.year(), week.week(), 0, 0)
        }),
        (KeptBy::Monthly, count(policy.keep_monthly), |t| {
            (t.year(), t.month(), 0, 0)
        }),
        (KeptBy::Yearly, count(policy.keep_yearly), |t| {
            (t.year(), 0, 0, 0)
        }),
    ];
    let any_rule = policy.keep_last.is_some() || periodic.iter().any(|(_, n, _)| *n > 0);

    let mut reasons: Vec<Vec<KeptBy>> = vec![Vec::new(); runs.len()];
    let index = |run: &Run| runs.iter().position(|r| std::ptr::eq(*r, run));
    let keep = |run: &Run, why: KeptBy, reasons: &mut Vec<Vec<KeptBy>>| {
        if let Some(i) = index(run) {
            reasons[i].push(why);
        }
    };
    if let Some(newest) = successful.first() {
        keep(newest, KeptBy::Newest, &mut reasons);
    }
    for run in successful.iter().take(count(policy.keep_last)) {
        keep(run, KeptBy::Last, &mut reasons);
    }
    for (why, n, period) in periodic {
        let mut seen = HashSet::new();
        for run in &successful {
            if seen.len() == n {
                break;
            }
            if seen.insert(period(zone.from_utc_datetime(&run.time.naive_utc()))) {
                keep(run, why, &mut reasons);
            }
        }
    }
    if !any_rule {
        for run in &successful {
            keep(run, KeptBy::NoRule, &mut reasons);
        }
    }
    let failed = runs.iter().filter(|r| r.outcome == Outcome::Failed);
    for run in failed.take(usize::try_from(policy.keep_failed).unwrap_or(0)) {
        keep(run, KeptBy::Failed, &mut reasons);
    }
    for run in runs.iter().filter(|r| r.outcome == Outcome::Unfinished) {
        keep(run, KeptBy::Unfinished, &mut reasons);
    }

    let mut selection = Selection::default();
    for (run, why) in runs.iter().zip(reasons) {
        let protected = why.contains(&KeptBy::Newest) || why.contains(&KeptBy::Unfinished);
        let too_old = max_age.is_some_and(|age| now - run.time > age);
        if protected || (!why.is_empty() && !too_old) {
            selection.keep.push((run.name.clone(), why));
        } else if too_old {
            selection
                .delete
                .push((run.name.clone(), DeletedBecause::OlderThanMaxAge));
        } else if run.outcome == Outcome::Failed {
            selection
                .delete
                .push((run.name.clone(), DeletedBecause::BeyondKeepFailed));
        } else {
            selection
                .delete
                .push((run.name.clone(), DeletedBecause::NotKeptByAnyRule));
        }
    }
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn run(name: &str, time: &str, outcome: Outcome) -> Run {
        Run {
            name: name.to_owned(),
            time: at(time),
            outcome,
        }
    }

    /// One successful backup every `hours` hours, newest at `newest`, named by index.
    fn every(hours: i64, count: usize, newest: &str) -> Vec<Run> {
        (0..count)
            .map(|i| Run {
                name: format!("b{i:03}"),
                time: at(newest) - Duration::hours(hours * i as i64),
                outcome: Outcome::Succeeded,
            })
            .collect()
    }

    fn kept(selection: &Selection) -> Vec<&str> {
        selection.keep.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn policy(f: impl FnOnce(&mut Retention)) -> Retention {
        let mut retention = Retention::default();
        f(&mut retention);
        retention
    }

    const UTC: Tz = chrono_tz::UTC;

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let history = every(1, 10, "2026-11-20T12:00:00Z");
        let s = select(
            &history,
            &policy(|p| p.keep_last = Some(3)),
            UTC,
            at("2026-11-20T12:30:00Z"),
        )
        .unwrap();
        assert_eq!(kept(&s), ["b000", "b001", "b002"]);
        assert_eq!(s.delete.len(), 7);
        assert!(
            s.delete
                .iter()
                .all(|(_, why)| *why == DeletedBecause::NotKeptByAnyRule)
        );
        // The input order does not matter.
        let mut reversed = history.clone();
        reversed.reverse();
        let again = select(
            &reversed,
            &policy(|p| p.keep_last = Some(3)),
            UTC,
            at("2026-11-20T12:30:00Z"),
        )
        .unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn daily_weekly_monthly_keep_the_newest_of_each_period() {
        // Every 6 hours for 70 days, newest on Sunday 2026-11-22 18:00 UTC.
        let history = every(6, 280, "2026-11-22T18:00:00Z");
        let p = policy(|p| {
            p.keep_daily = Some(7);
            p.keep_weekly = Some(4);
            p.keep_monthly = Some(3);
        });
        let s = select(&history, &p, UTC, at("2026-11-22T19:00:00Z")).unwrap();
        let names = kept(&s);
        // Daily: 18:00 of each of the 7 newest days (b000 is 22 Nov 18:00; 4 a day).
        for day in 0..7 {
            assert!(
                names.contains(&format!("b{:03}", day * 4).as_str()),
                "day {day}: {names:?}"
            );
        }
        // Weekly: the newest of the ISO weeks before: Sundays 15, 8 and 1 Nov at 18:00.
        for sunday in [7, 14, 21] {
            assert!(
                names.contains(&format!("b{:03}", sunday * 4).as_str()),
                "{sunday}: {names:?}"
            );
        }
        // Monthly: 31 Oct 18:00 (22 days + 1 back) and 30 Sep 18:00.
        let october = history
            .iter()
            .find(|r| r.time == at("2026-10-31T18:00:00Z"))
            .unwrap();
        let september = history
            .iter()
            .find(|r| r.time == at("2026-09-30T18:00:00Z"))
            .unwrap();
        assert!(names.contains(&october.name.as_str()) && names.contains(&september.name.as_str()));
        // 7 daily (which include this week's Sunday) + 3 weekly + 2 monthly (November's is
        // the newest) = 12.
        assert_eq!(names.len(), 12, "{names:?}");
        let (_, why) = &s.keep[0];
        assert_eq!(
            why,
            &[
                KeptBy::Newest,
                KeptBy::Daily,
                KeptBy::Weekly,
                KeptBy::Monthly
            ]
        );
    }

    #[test]
    fn days_are_counted_in_the_schedules_time_zone() {
        // 15:30 and 16:30 UTC are the same UTC day, but 23:30 and 00:30 of two days in
        // Manila (UTC+8).
        let history = vec![
            run("late", "2026-11-20T16:30:00Z", Outcome::Succeeded),
            run("early", "2026-11-20T15:30:00Z", Outcome::Succeeded),
        ];
        let p = policy(|p| p.keep_daily = Some(2));
        let now = at("2026-11-20T17:00:00Z");
        assert_eq!(kept(&select(&history, &p, UTC, now).unwrap()), ["late"]);
        let manila: Tz = "Asia/Manila".parse().unwrap();
        assert_eq!(
            kept(&select(&history, &p, manila, now).unwrap()),
            ["late", "early"]
        );
    }

    #[test]
    fn hours_are_wall_clock_hours_of_the_time_zone_and_a_repeated_hour_counts_once() {
        // Berlin falls back on 2026-10-25 at 01:00 UTC: 02:00-03:00 local happens twice
        // (CEST, then CET). Runs every 30 minutes from 23:30 UTC the day before.
        let history = vec![
            run("0330-cet", "2026-10-25T02:30:00Z", Outcome::Succeeded),
            run("0300-cet", "2026-10-25T02:00:00Z", Outcome::Succeeded),
            run("0230-cet", "2026-10-25T01:30:00Z", Outcome::Succeeded),
            run("0200-cet", "2026-10-25T01:00:00Z", Outcome::Succeeded),
            run("0230-cest", "2026-10-25T00:30:00Z", Outcome::Succeeded),
            run("0200-cest", "2026-10-25T00:00:00Z", Outcome::Succeeded),
            run("0130-cest", "2026-10-24T23:30:00Z", Outcome::Succeeded),
        ];
        let p = policy(|p| p.keep_hourly = Some(3));
        let now = at("2026-10-25T03:00:00Z");
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            kept(&select(&history, &p, berlin, now).unwrap()),
            ["0330-cet", "0230-cet", "0130-cest"],
            "local hours 3, 2 (twice: one period), 1"
        );
        // In UTC the same runs fall in three different hours.
        assert_eq!(
            kept(&select(&history, &p, UTC, now).unwrap()),
            ["0330-cet", "0230-cet", "0230-cest"]
        );
    }

    #[test]
    fn years_are_counted_in_the_schedules_time_zone() {
        // 20:00 UTC on 31 December is already 1 January in Manila (UTC+8).
        let history = vec![
            run(
                "new-year-in-manila",
                "2025-12-31T20:00:00Z",
                Outcome::Succeeded,
            ),
            run("new-years-eve", "2025-12-31T10:00:00Z", Outcome::Succeeded),
            run("summer", "2024-06-01T12:00:00Z", Outcome::Succeeded),
        ];
        let p = policy(|p| p.keep_yearly = Some(2));
        let now = at("2026-01-02T00:00:00Z");
        assert_eq!(
            kept(&select(&history, &p, UTC, now).unwrap()),
            ["new-year-in-manila", "summer"]
        );
        let manila: Tz = "Asia/Manila".parse().unwrap();
        assert_eq!(
            kept(&select(&history, &p, manila, now).unwrap()),
            ["new-year-in-manila", "new-years-eve"]
        );
    }

    #[test]
    fn periods_with_no_backup_do_not_count() {
        // A week of downtime: keepDaily 3 still keeps three backups.
        let history = vec![
            run("after", "2026-11-20T01:00:00Z", Outcome::Succeeded),
            run("before-1", "2026-11-12T01:00:00Z", Outcome::Succeeded),
            run("before-2", "2026-11-11T01:00:00Z", Outcome::Succeeded),
            run("before-3", "2026-11-10T01:00:00Z", Outcome::Succeeded),
        ];
        let s = select(
            &history,
            &policy(|p| p.keep_daily = Some(3)),
            UTC,
            at("2026-11-20T02:00:00Z"),
        )
        .unwrap();
        assert_eq!(kept(&s), ["after", "before-1", "before-2"]);
    }

    #[test]
    fn max_age_wins_except_for_the_newest_successful_backup() {
        let history = every(24, 10, "2026-11-01T00:00:00Z");
        let p = policy(|p| {
            p.keep_last = Some(10);
            p.max_age = Some("5d".to_owned());
        });
        // Now is long after every backup: only the newest survives.
        let s = select(&history, &p, UTC, at("2026-12-01T00:00:00Z")).unwrap();
        assert_eq!(kept(&s), ["b000"]);
        assert!(
            s.delete
                .iter()
                .all(|(_, why)| *why == DeletedBecause::OlderThanMaxAge)
        );
        // Soon after: the last 5 days' are kept.
        let s = select(&history, &p, UTC, at("2026-11-01T01:00:00Z")).unwrap();
        assert_eq!(kept(&s), ["b000", "b001", "b002", "b003", "b004"]);
    }

    #[test]
    fn failed_runs_are_kept_by_keep_failed_and_unfinished_ones_always() {
        let history = vec![
            run("running", "2026-11-20T06:00:00Z", Outcome::Unfinished),
            run("f1", "2026-11-20T05:00:00Z", Outcome::Failed),
            run("f2", "2026-11-20T04:00:00Z", Outcome::Failed),
            run("ok1", "2026-11-20T03:00:00Z", Outcome::Succeeded),
            run("f3", "2026-11-20T02:00:00Z", Outcome::Failed),
            run("f4", "2026-11-20T01:00:00Z", Outcome::Failed),
            run("ok2", "2026-11-20T00:00:00Z", Outcome::Succeeded),
            run("old-running", "2026-01-01T00:00:00Z", Outcome::Unfinished),
        ];
        let p = policy(|p| {
            p.keep_last = Some(1);
            p.max_age = Some("30d".to_owned());
        });
        let s = select(&history, &p, UTC, at("2026-11-20T07:00:00Z")).unwrap();
        assert_eq!(
            kept(&s),
            ["running", "f1", "f2", "ok1", "f3", "old-running"]
        );
        assert_eq!(
            s.delete,
            [
                ("f4".to_owned(), DeletedBecause::BeyondKeepFailed),
                ("ok2".to_owned(), DeletedBecause::NotKeptByAnyRule)
            ]
        );
        // The newest successful backup is kept even when keepLast is 0.
        let s = select(
            &history,
            &policy(|p| p.keep_last = Some(0)),
            UTC,
            at("2026-11-20T07:00:00Z"),
        )
        .unwrap();
        assert!(kept(&s).contains(&"ok1") && !kept(&s).contains(&"ok2"));
    }

    #[test]
    fn without_keep_rules_successful_backups_stay() {
        let history = every(24, 5, "2026-11-20T00:00:00Z");
        let s = select(
            &history,
            &Retention::default(),
            UTC,
            at("2026-11-21T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(kept(&s).len(), 5);
        assert!(s.delete.is_empty());
    }

    #[test]
    fn max_age_is_parsed_strictly() {
        assert_eq!(parse_max_age("90d"), Ok(Duration::days(90)));
        assert_eq!(parse_max_age("12h"), Ok(Duration::hours(12)));
        assert_eq!(parse_max_age("8w"), Ok(Duration::weeks(8)));
        for bad in ["", "d", "0d", "-1d", "10y", "1.5d", "ü"] {
            assert!(parse_max_age(bad).is_err(), "{bad}");
        }
        let s = select(
            &[],
            &policy(|p| p.max_age = Some("10y".into())),
            UTC,
            Utc::now(),
        );
        assert_eq!(
            s.unwrap_err().to_string(),
            "maxAge \"10y\" is not a number followed by h, d or w (for example 90d)"
        );
    }
}
