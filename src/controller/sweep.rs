//! The daily sweep of a schedule's folder: what failed or killed runs left behind (data
//! without a manifest, open multipart uploads, temporary files), older than a safety age, is
//! removed by a worker Job and recorded in the schedule's status, with an Event naming it.
//! Only the schedule's own folder (`<namespace>/<schedule>/`) is swept, never the rest of
//! the store.

use chrono::{TimeDelta, Utc};
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::job::{self, JobRequest};
use super::references;
use super::status;
use super::workers::{self, Created, Found, JobState};
use crate::api::{BackupSchedule, BackupScheduleStatus, SweepRecord};
use crate::worker::Plan;
use crate::worker::plan::SweepPlan;

/// How often a schedule's folder is swept.
pub const EVERY: TimeDelta = TimeDelta::hours(24);

/// How old a leftover must be: a day, and always more than a run may last (so that a
/// backup still running is never taken for one). Pure.
pub fn min_age(schedule: &BackupSchedule) -> TimeDelta {
    let deadline = schedule
        .spec
        .job_template
        .as_ref()
        .and_then(|t| t.active_deadline_seconds)
        .unwrap_or(job::DEFAULT_RUN_DEADLINE_SECONDS);
    TimeDelta::hours(24).max(TimeDelta::seconds(deadline) + TimeDelta::hours(1))
}

/// Whether a sweep is due. Pure.
pub fn due(status: &BackupScheduleStatus, now: chrono::DateTime<Utc>) -> bool {
    status
        .last_sweep
        .as_ref()
        .is_none_or(|s| now - status::chrono(&s.time) >= EVERY)
}

/// Starts, watches or records the schedule's sweep; fills `status.last_sweep`. `true` while
/// a sweep runs (the schedule looks again soon).
pub async fn step(
    ctx: &Context,
    schedule: &BackupSchedule,
    namespace: &str,
    status: &mut BackupScheduleStatus,
) -> Result<bool, Error> {
    let name = schedule.name_any();
    let uid = schedule.uid().ok_or_else(|| Error::NoUid(name.clone()))?;
    let job_name = job::job_name(&name, "sweep");
    match workers::find(ctx, namespace, &job_name, &uid).await? {
        Found::Foreign(job) => workers::clear_foreign(ctx, namespace, &job)
            .await
            .map(|()| true),
        // Already recorded; going away.
        Found::Mine(job) if job.metadata.deletion_timestamp.is_some() => Ok(false),
        Found::Mine(job) => {
            // Recorded (the status write of a previous look went through): the Job can go.
            let made = job.metadata.creation_timestamp.as_ref().map(status::chrono);
            let recorded = status
                .last_sweep
                .as_ref()
                .zip(made)
                .is_some_and(|(sweep, made)| status::chrono(&sweep.time) > made);
            if recorded {
                workers::delete(ctx, namespace, &job_name).await?;
                return Ok(false);
            }
            let JobState::Finished(summary) = workers::observe(ctx, namespace, &job).await? else {
                return Ok(true);
            };
            let removed = summary.swept.unwrap_or(0);
            let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            status.last_sweep = Some(SweepRecord {
                time: status::time(Utc::now()),
                removed: signed(removed),
                removed_bytes: signed(summary.stored_bytes.unwrap_or(0)),
                message: crate::text::one_line(&summary.message),
            });
            if summary.failure.is_some() {
                ctx.event(schedule, true, "SweepFailed", &summary.message)
                    .await;
            } else if removed > 0 {
                ctx.event(schedule, false, "Swept", &summary.message).await;
            }
            // Deleted on the next look, once this record is written.
            Ok(true)
        }
        Found::None => {
            if schedule.spec.suspend
                || !due(status, Utc::now())
                || references::check_storage(ctx, namespace, &schedule.spec.storage)
                    .await?
                    .is_some()
            {
                return Ok(false);
            }
            references::ensure_worker_account(ctx, namespace).await?;
            let plan = Plan::Sweep(SweepPlan {
                storage: schedule.spec.storage.clone(),
                folder: format!("{namespace}/{name}/"),
                min_age_seconds: min_age(schedule).num_seconds(),
            });
            let built = job::build(
                &JobRequest {
                    name: job_name,
                    namespace,
                    owner: schedule.controller_owner_ref(&()),
                    owner_name: name,
                    owner_uid: uid,
                    plan: &plan,
                    template: schedule.spec.job_template.as_ref(),
                },
                &ctx.settings.worker,
            )?;
            let created = workers::create(ctx, namespace, &built).await?;
            if let Created::Refused { message, .. } = created {
                // Tried again at the next look; the schedule itself is not held up.
                tracing::warn!(schedule = %schedule.name_any(), "cannot sweep: {message}");
                status.last_sweep = Some(SweepRecord {
                    time: status::time(Utc::now()),
                    removed: 0,
                    removed_bytes: 0,
                    message,
                });
                return Ok(false);
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sweeps_are_daily_and_never_younger_than_a_run() {
        let mut schedule: BackupSchedule = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "n"},
            "spec": {"schedule": "@daily", "source": {"volume": {"claimName": "c"}},
                "storage": {"filesystem": {"claimName": "store"}}}}))
        .unwrap();
        assert_eq!(min_age(&schedule), TimeDelta::hours(24));
        schedule.spec.job_template = Some(crate::api::JobTemplate {
            active_deadline_seconds: Some(48 * 3600),
            ..Default::default()
        });
        assert_eq!(min_age(&schedule), TimeDelta::hours(49));
        let now = Utc::now();
        let mut status = BackupScheduleStatus::default();
        assert!(due(&status, now));
        status.last_sweep = Some(SweepRecord {
            time: status::time(now - TimeDelta::hours(2)),
            removed: 0,
            removed_bytes: 0,
            message: String::new(),
        });
        assert!(!due(&status, now));
        assert!(due(&status, now + TimeDelta::hours(23)));
    }
}
