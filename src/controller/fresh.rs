//! The `Fresh` condition of a BackupSchedule: judged by [`crate::freshness`] from the
//! schedule's newest success, with an Event when it turns stale and when it recovers.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::context::Context;
use super::location::SCHEDULE_LABEL;
use super::status::{self, set_condition};
use crate::api::{BackupSchedule, BackupScheduleStatus};
use crate::freshness::{self, Verdict};
use crate::schedule::CronSchedule;

/// How long a computed default is used before it is worked out again.
const DEFAULT_KEPT: chrono::Duration = chrono::Duration::days(1);

/// The schedule's `maxAge`: the one it gives, or the default from its cron expression
/// (remembered in `ctx` for a day).
fn max_age(
    ctx: &Context,
    schedule: &BackupSchedule,
    cron: &CronSchedule,
    now: DateTime<Utc>,
) -> Result<Option<chrono::Duration>, freshness::AgeError> {
    if let Some(given) = max_age_of_spec(schedule)? {
        return Ok(Some(given));
    }
    let key = (
        schedule.spec.schedule.clone(),
        schedule.spec.time_zone.clone(),
    );
    let known = ctx
        .default_max_ages
        .lock()
        .ok()
        .and_then(|cache| cache.get(&key).copied())
        .filter(|(at, _)| now - *at < DEFAULT_KEPT);
    if let Some((_, max_age)) = known {
        return Ok(Some(max_age));
    }
    let computed = freshness::default_max_age(cron, now);
    if let (Some(max_age), Ok(mut cache)) = (computed, ctx.default_max_ages.lock()) {
        cache.insert(key, (now, max_age));
    }
    Ok(computed)
}

/// The schedule's verdict at `now`, from its status (after this reconcile's updates).
fn verdict(
    schedule: &BackupSchedule,
    status: &BackupScheduleStatus,
    max_age: chrono::Duration,
    now: DateTime<Utc>,
) -> Verdict {
    freshness::judge(
        schedule.spec.suspend,
        status.last_successful_time.as_ref().map(status::chrono),
        schedule
            .metadata
            .creation_timestamp
            .as_ref()
            .map(status::chrono)
            .unwrap_or(now),
        max_age,
        now,
    )
}

/// The limit used when neither the schedule nor a valid cron expression gives one (the
/// default of a daily schedule): a schedule whose cron or time zone is wrong takes no
/// backups, and must still turn stale.
const FALLBACK: chrono::Duration = chrono::Duration::days(2);

/// An Event to record once the status that carries the change is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Sets `Fresh` in `status` (judged with `cron`'s default limit, or [`FALLBACK`] when the
/// schedule is invalid). Returns when the schedule becomes stale if nothing succeeds before,
/// so that the reconciler looks again then, and the Event to record when it turned stale or
/// fresh again.
pub fn step(
    ctx: &Context,
    schedule: &BackupSchedule,
    cron: Option<&CronSchedule>,
    status: &mut BackupScheduleStatus,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<Notice>) {
    let generation = schedule.metadata.generation;
    let was = status::condition(&status.conditions, "Fresh").map(|c| c.reason.clone());
    let limit = match cron {
        Some(cron) => max_age(ctx, schedule, cron, now),
        None => max_age_of_spec(schedule).map(|given| given.or(Some(FALLBACK))),
    };
    let max_age = match limit {
        Ok(Some(max_age)) => max_age,
        Ok(None) => return (None, None),
        Err(e) => {
            set_condition(
                &mut status.conditions,
                "Fresh",
                false,
                "InvalidFreshness",
                &e.to_string(),
                generation,
            );
            let notice = (was.as_deref() != Some("InvalidFreshness")).then(|| Notice {
                warning: true,
                reason: "InvalidFreshness",
                message: e.to_string(),
            });
            return (None, notice);
        }
    };
    let verdict = verdict(schedule, status, max_age, now);
    let how_to_look = format!(
        "`kubectl -n {} get backups -l {SCHEDULE_LABEL}={}` shows the runs and why they failed",
        schedule.namespace().unwrap_or_default(),
        schedule.name_any()
    );
    let (ok, reason, message) = verdict.condition(max_age, &how_to_look);
    set_condition(
        &mut status.conditions,
        "Fresh",
        ok,
        reason,
        &message,
        generation,
    );
    let notice = match (was.as_deref(), &verdict) {
        (Some("Stale"), Verdict::Stale { .. }) => None,
        (_, Verdict::Stale { .. }) => Some(Notice {
            warning: true,
            reason: "Stale",
            message,
        }),
        (Some("Stale"), Verdict::Fresh { .. }) => Some(Notice {
            warning: false,
            reason: "Fresh",
            message,
        }),
        _ => None,
    };
    let stale_at = match verdict {
        Verdict::Fresh { stale_at, .. } => Some(stale_at),
        _ => None,
    };
    (stale_at, notice)
}

/// The `maxAge` the schedule gives, if any.
fn max_age_of_spec(
    schedule: &BackupSchedule,
) -> Result<Option<chrono::Duration>, freshness::AgeError> {
    schedule
        .spec
        .freshness
        .as_ref()
        .and_then(|f| f.max_age.as_deref())
        .map(freshness::parse_age)
        .transpose()
}

/// How long to sleep until `stale_at` (zero once it has passed).
pub fn until(stale_at: DateTime<Utc>) -> std::time::Duration {
    (stale_at - Utc::now()).to_std().unwrap_or_default()
}
