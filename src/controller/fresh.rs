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
    if let Some(text) = schedule
        .spec
        .freshness
        .as_ref()
        .and_then(|f| f.max_age.as_deref())
    {
        return freshness::parse_age(text).map(Some);
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

/// Sets `Fresh` in `status` and records an Event when the schedule turns stale or fresh
/// again. Returns when the schedule becomes stale if nothing succeeds before, so that the
/// reconciler looks again then.
pub async fn step(
    ctx: &Context,
    schedule: &BackupSchedule,
    cron: &CronSchedule,
    status: &mut BackupScheduleStatus,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let generation = schedule.metadata.generation;
    let was = status::condition(&status.conditions, "Fresh").map(|c| c.reason.clone());
    let max_age = match max_age(ctx, schedule, cron, now) {
        Ok(Some(max_age)) => max_age,
        Ok(None) => return None,
        Err(e) => {
            set_condition(
                &mut status.conditions,
                "Fresh",
                false,
                "InvalidFreshness",
                &e.to_string(),
                generation,
            );
            if was.as_deref() != Some("InvalidFreshness") {
                ctx.event(schedule, true, "InvalidFreshness", e.to_string())
                    .await;
            }
            return None;
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
    match (was.as_deref(), &verdict) {
        (Some("Stale"), Verdict::Stale { .. }) => {}
        (_, Verdict::Stale { .. }) => ctx.event(schedule, true, "Stale", message).await,
        (Some("Stale"), Verdict::Fresh { .. }) => {
            ctx.event(schedule, false, "Fresh", message).await
        }
        _ => {}
    }
    match verdict {
        Verdict::Fresh { stale_at, .. } => Some(stale_at),
        _ => None,
    }
}
