//! The pre-flight check of a schedule: when it is created, when its spec changes, and when a
//! Secret it names changes, a worker Job (the backup's identity, Secrets and network) logs
//! in to the source and writes, reads back and deletes an object in the store. The findings
//! become the `SourceReachable` and `StorageWritable` conditions; a failing check runs again
//! after [`RETRY`], then twice as long each time up to [`MAX_RETRY`]; a check turning
//! False (after a pass, or as the first) records one Event and notifies `preflightFailed`
//! once, however often the same failure is checked again.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::job::{self, JobRequest};
use super::references;
use super::status::{self, set_condition};
use super::workers::{self, Created, Found, JobState};
use crate::api::{BackupSchedule, BackupScheduleStatus, PreflightRecord};
use crate::worker::Plan;
use crate::worker::plan::CheckPlan;

/// How soon a failed check runs again the first time (at once when the settings change).
pub const RETRY: TimeDelta = TimeDelta::seconds(30);
/// The longest wait between checks of a failure that persists.
pub const MAX_RETRY: TimeDelta = TimeDelta::minutes(10);

/// What the check is judged against: the spec's generation and the Secrets' versions.
pub fn fingerprint(generation: Option<i64>, secrets: &str) -> String {
    format!("{}/{secrets}", generation.unwrap_or(0))
}

/// The wait before a check that failed `failures` times in a row runs again. Pure.
pub fn retry_after(failures: i32) -> TimeDelta {
    let doublings = u32::try_from(failures.saturating_sub(1).clamp(0, 10)).unwrap_or(0);
    RETRY
        .checked_mul(2i32.saturating_pow(doublings))
        .unwrap_or(MAX_RETRY)
        .min(MAX_RETRY)
}

/// When a failing check runs again (none when it passed). Pure.
pub fn next_retry(record: Option<&PreflightRecord>) -> Option<DateTime<Utc>> {
    let r = record.filter(|r| !(r.source_ok && r.storage_ok))?;
    Some(status::chrono(&r.time) + retry_after(r.failures))
}

/// The generation part of a fingerprint.
fn generation_of(fingerprint: &str) -> &str {
    fingerprint.split_once('/').map_or(fingerprint, |(g, _)| g)
}

/// Whether a check is due. Pure. A new spec is checked at once; new Secret versions after
/// [`RETRY`] since the last check at the soonest (something may rewrite a Secret often
/// without changing its values); a failure at its retry time.
pub fn due(record: Option<&PreflightRecord>, fingerprint: &str, now: DateTime<Utc>) -> bool {
    match record {
        None => true,
        Some(r) if generation_of(&r.fingerprint) != generation_of(fingerprint) => true,
        Some(r) if r.fingerprint != fingerprint => now - status::chrono(&r.time) >= RETRY,
        Some(r) => next_retry(Some(r)).is_some_and(|at| now >= at),
    }
}

/// What [`step`] found, and what to do once the status is written.
#[derive(Debug, Default)]
pub struct Step {
    /// A check Job runs: look again soon.
    pub running: bool,
    /// The check turned False: its one-line reason (an Event and a notification).
    pub newly_failed: Option<String>,
    /// The check passed after failing (an Event).
    pub recovered: bool,
    /// The finished check Job whose result is recorded: deleted after the status write.
    pub finished_job: Option<String>,
    /// The settings as they are now (empty when not read).
    pub fingerprint: String,
}

impl Step {
    fn running() -> Self {
        Self {
            running: true,
            ..Self::default()
        }
    }

    /// What follows a written status: the Events, and the check Job goes. Done only after
    /// the write, so that a write that fails repeats neither.
    pub async fn after_write(&self, ctx: &Context, schedule: &BackupSchedule, namespace: &str) {
        if let Some(message) = &self.newly_failed {
            ctx.event(schedule, true, "PreflightFailed", message).await;
        }
        if self.recovered {
            ctx.event(
                schedule,
                false,
                "PreflightPassed",
                "source and storage checked",
            )
            .await;
        }
        if let Some(job) = &self.finished_job
            && let Err(e) = workers::delete(ctx, namespace, job).await
        {
            tracing::warn!(%namespace, %job, "cannot delete the finished check Job: {e}");
        }
    }

    /// How soon the schedule should look again for the check's sake.
    pub fn wake(&self, record: Option<&PreflightRecord>) -> Option<Duration> {
        if self.running {
            return Some(Duration::from_secs(2));
        }
        // Recorded for older Secret versions: the current ones are checked after RETRY.
        let recheck = record
            .filter(|r| !self.fingerprint.is_empty() && r.fingerprint != self.fingerprint)
            .map(|r| status::chrono(&r.time) + RETRY);
        let at = match (next_retry(record), recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Overdue but not started (a Secret missing, the Job refused, a Job in the way):
        // looked at again after the first retry's wait, not in a loop.
        at.map(|at| {
            (at - Utc::now())
                .to_std()
                .ok()
                .filter(|wait| !wait.is_zero())
                .unwrap_or_else(|| RETRY.to_std().unwrap_or_default())
        })
    }
}

/// Starts, watches or records the schedule's check; sets its conditions in `status`.
pub async fn step(
    ctx: &Context,
    schedule: &BackupSchedule,
    namespace: &str,
    status: &mut BackupScheduleStatus,
) -> Result<Step, Error> {
    let spec = &schedule.spec;
    let secrets = references::secret_versions(ctx, namespace, &spec.source, &spec.storage).await?;
    let fingerprint = fingerprint(schedule.metadata.generation, &secrets);
    let mut step = act(ctx, schedule, namespace, status, &fingerprint).await?;
    step.fingerprint = fingerprint;
    Ok(step)
}

/// [`step`] for the settings `fingerprint`.
async fn act(
    ctx: &Context,
    schedule: &BackupSchedule,
    namespace: &str,
    status: &mut BackupScheduleStatus,
    fingerprint: &str,
) -> Result<Step, Error> {
    let name = schedule.name_any();
    let uid = schedule.uid().ok_or_else(|| Error::NoUid(name.clone()))?;
    let generation = schedule.metadata.generation;
    let spec = &schedule.spec;
    let job_name = job::job_name(&name, "check");
    match workers::find(ctx, namespace, &job_name, &uid).await? {
        // Another schedule's of the same name (deleted and made again): Coffer's, so it goes.
        Found::Foreign(job) if managed_by_coffer(&job) => {
            workers::clear_foreign(ctx, namespace, &job).await?;
            Ok(Step::running())
        }
        // Not Coffer's: never deleted; the check waits for the name.
        Found::Foreign(_) => {
            tracing::warn!(%namespace, schedule = %name, job = %job_name, "a Job that Coffer did not create has the check Job's name; the pre-flight check waits until it is renamed or deleted");
            Ok(Step::default())
        }
        Found::Mine(job) if job.metadata.deletion_timestamp.is_some() => Ok(Step::running()),
        Found::Mine(job) => {
            let checked = job
                .annotations()
                .get(FINGERPRINT_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            if generation_of(&checked) != generation_of(fingerprint) {
                // It checks a spec that has changed since: its verdict is not recorded. (A
                // check of older Secret versions is: it is checked again after RETRY.)
                workers::delete(ctx, namespace, &job_name).await?;
                return Ok(Step::running());
            }
            // Recorded already (its deletion failed after the write): not counted twice.
            let recorded = status.preflight.as_ref().is_some_and(|r| {
                r.fingerprint == checked
                    && job
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .is_some_and(|created| r.time.0 >= created.0)
            });
            if recorded {
                return Ok(Step {
                    finished_job: Some(job_name),
                    ..Step::default()
                });
            }
            let JobState::Finished(summary) = workers::observe(ctx, namespace, &job).await? else {
                return Ok(Step::running());
            };
            let checks = summary.checks.clone().unwrap_or_else(|| {
                // No findings of its own (killed, its deadline): neither side is known good.
                let message = format!("the check did not finish: {}", summary.message);
                crate::worker::summary::Checks {
                    source_ok: false,
                    source: message.clone(),
                    storage_ok: false,
                    storage: message,
                }
            });
            let current = checked == fingerprint;
            Ok(record(
                status, &checks, checked, current, generation, job_name,
            ))
        }
        Found::None => {
            if !due(status.preflight.as_ref(), fingerprint, Utc::now())
                || references::check(ctx, namespace, &spec.source, &spec.storage)
                    .await?
                    .is_some()
            {
                return Ok(Step::default());
            }
            references::ensure_worker_account(ctx, namespace).await?;
            let plan = Plan::Check(CheckPlan {
                source: spec.source.clone(),
                storage: spec.storage.clone(),
                folder: format!("{namespace}/{name}/"),
                encryption: spec.encryption.clone(),
            });
            let mut built = job::build(
                &JobRequest {
                    name: job_name,
                    namespace,
                    owner: schedule.controller_owner_ref(&()),
                    owner_name: name.clone(),
                    owner_uid: uid,
                    plan: &plan,
                    template: spec.job_template.as_ref(),
                },
                &ctx.settings.worker,
            )?;
            built
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(FINGERPRINT_ANNOTATION.to_owned(), fingerprint.to_owned());
            if let Created::Refused { message, .. } =
                workers::create(ctx, namespace, &built).await?
            {
                tracing::warn!(schedule = %name, "cannot run the pre-flight check: {message}");
                return Ok(Step::default());
            }
            Ok(Step::running())
        }
    }
}

/// Stops the schedule's check Job, if one runs (the schedule was suspended).
pub async fn cancel(
    ctx: &Context,
    schedule: &BackupSchedule,
    namespace: &str,
) -> Result<(), Error> {
    let name = schedule.name_any();
    let uid = schedule.uid().ok_or_else(|| Error::NoUid(name.clone()))?;
    let job_name = job::job_name(&name, "check");
    if let Found::Mine(job) = workers::find(ctx, namespace, &job_name, &uid).await?
        && job.metadata.deletion_timestamp.is_none()
    {
        workers::delete(ctx, namespace, &job_name).await?;
    }
    Ok(())
}

/// Records a finished check's findings in `status`: its record and conditions. No I/O.
/// A check of Secret versions that have changed since (`current` false) is recorded, but
/// its failure is not told: the next check, of the current versions, tells it if it
/// fails too (a fix made while a check ran must not page).
pub fn record(
    status: &mut BackupScheduleStatus,
    checks: &crate::worker::summary::Checks,
    checked: String,
    current: bool,
    generation: Option<i64>,
    job_name: String,
) -> Step {
    let ok = checks.source_ok && checks.storage_ok;
    let before = status.preflight.take();
    let was_ok = before.as_ref().is_none_or(|b| b.source_ok && b.storage_ok);
    let told_before = before.as_ref().is_some_and(|b| !was_ok && b.told);
    let tell = !ok && current && !told_before;
    status.preflight = Some(PreflightRecord {
        told: !ok && (told_before || tell),
        time: status::time(Utc::now()),
        fingerprint: checked,
        source_ok: checks.source_ok,
        storage_ok: checks.storage_ok,
        failures: if ok {
            0
        } else {
            before.as_ref().map_or(0, |b| b.failures).saturating_add(1)
        },
    });
    for (type_, good, reasons, message) in [
        (
            "SourceReachable",
            checks.source_ok,
            ("Reachable", "SourceCheckFailed"),
            &checks.source,
        ),
        (
            "StorageWritable",
            checks.storage_ok,
            ("Writable", "StorageCheckFailed"),
            &checks.storage,
        ),
    ] {
        let reason = if good { reasons.0 } else { reasons.1 };
        set_condition(
            &mut status.conditions,
            type_,
            good,
            reason,
            message,
            generation,
        );
    }
    let mut step = Step {
        finished_job: Some(job_name),
        ..Step::default()
    };
    if ok {
        step.recovered = !was_ok;
    } else if tell {
        // Told once per failure: not at every check of the same failure, nor when the
        // settings change while it goes on (each attempt at a fix).
        step.newly_failed = Some(match (checks.source_ok, checks.storage_ok) {
            (false, false) => format!("{}; {}", checks.source, checks.storage),
            (false, true) => checks.source.clone(),
            _ => checks.storage.clone(),
        });
    }
    step
}

/// Whether the operator made this Job (it never deletes a Job it did not make).
fn managed_by_coffer(job: &k8s_openapi::api::batch::v1::Job) -> bool {
    job.labels()
        .get("app.kubernetes.io/managed-by")
        .is_some_and(|v| v == "coffer")
}

/// The annotation on a check Job with the settings it checks.
pub const FINGERPRINT_ANNOTATION: &str = "coffer.dev/checked";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::summary::Checks;

    /// Records a check of `fingerprint` with these findings.
    fn check(
        status: &mut BackupScheduleStatus,
        source_ok: bool,
        storage_ok: bool,
        fingerprint: &str,
        current: bool,
    ) -> Step {
        let checks = Checks {
            source_ok,
            source: if source_ok { "ok" } else { "wrong password" }.to_owned(),
            storage_ok,
            storage: if storage_ok { "ok" } else { "no bucket" }.to_owned(),
        };
        record(
            status,
            &checks,
            fingerprint.to_owned(),
            current,
            Some(1),
            "j".to_owned(),
        )
    }

    /// A check of `1/s=5` that passed at `time`.
    fn passed(time: DateTime<Utc>) -> PreflightRecord {
        PreflightRecord {
            time: status::time(time),
            fingerprint: "1/s=5".to_owned(),
            source_ok: true,
            storage_ok: true,
            failures: 0,
            told: false,
        }
    }

    #[test]
    fn a_check_runs_for_new_settings_and_again_after_a_failure_less_often_each_time() {
        let now = Utc::now();
        assert!(due(None, "1/s=5", now));
        let passed = passed(now);
        assert!(!due(Some(&passed), "1/s=5", now + TimeDelta::days(2)));
        assert!(due(Some(&passed), "2/s=5", now), "the spec changed");
        assert!(
            !due(Some(&passed), "1/s=6", now + TimeDelta::seconds(5)),
            "a Secret changed: not at once after the last check"
        );
        assert!(due(Some(&passed), "1/s=6", now + RETRY), "a Secret changed");
        let failed = PreflightRecord {
            source_ok: false,
            failures: 1,
            ..passed
        };
        assert!(!due(Some(&failed), "1/s=5", now + TimeDelta::seconds(10)));
        assert!(due(Some(&failed), "1/s=5", now + RETRY));
        let third = PreflightRecord {
            failures: 3,
            ..failed.clone()
        };
        assert!(!due(Some(&third), "1/s=5", now + RETRY * 3));
        assert!(due(Some(&third), "1/s=5", now + RETRY * 4));
        assert_eq!(retry_after(1), RETRY);
        assert_eq!(retry_after(2), RETRY * 2);
        assert_eq!(retry_after(50), MAX_RETRY);
        assert_eq!(retry_after(i32::MAX), MAX_RETRY);
    }

    #[test]
    fn a_check_that_cannot_start_is_looked_at_again_after_a_wait_not_in_a_loop() {
        let overdue = PreflightRecord {
            source_ok: false,
            failures: 1,
            told: true,
            ..passed(Utc::now() - TimeDelta::hours(1))
        };
        assert_eq!(Step::default().wake(Some(&overdue)), RETRY.to_std().ok());
        assert_eq!(
            Step::running().wake(Some(&overdue)),
            Some(Duration::from_secs(2))
        );
        let passed = PreflightRecord {
            source_ok: true,
            ..overdue
        };
        assert_eq!(Step::default().wake(Some(&passed)), None);
    }

    #[test]
    fn a_failure_of_secrets_changed_since_is_not_told_until_the_current_ones_fail() {
        let mut status = BackupScheduleStatus::default();
        let old = check(&mut status, false, true, "1/a", false);
        assert!(
            old.newly_failed.is_none(),
            "the Secret was fixed while it ran"
        );
        let fixed = check(&mut status, true, true, "1/b", true);
        assert!(fixed.newly_failed.is_none());
        let old = check(&mut status, false, true, "1/c", false);
        assert!(old.newly_failed.is_none());
        let still = check(&mut status, false, true, "1/d", true);
        assert_eq!(still.newly_failed.as_deref(), Some("wrong password"));
        let again = check(&mut status, false, true, "1/d", true);
        assert!(again.newly_failed.is_none());
    }

    #[test]
    fn a_check_of_older_secrets_wakes_the_schedule_to_check_the_current_ones() {
        let passed = passed(Utc::now());
        let step = Step {
            fingerprint: "1/s=6".to_owned(),
            ..Step::default()
        };
        let wake = step.wake(Some(&passed)).unwrap();
        assert!(
            wake <= RETRY.to_std().unwrap() && wake > Duration::from_secs(20),
            "{wake:?}"
        );
        let same = Step {
            fingerprint: "1/s=5".to_owned(),
            ..Step::default()
        };
        assert_eq!(same.wake(Some(&passed)), None);
    }

    #[test]
    fn a_failure_is_told_once_however_often_it_is_checked_again() {
        let mut status = BackupScheduleStatus::default();
        let first = check(&mut status, false, true, "1/a", true);
        assert_eq!(first.newly_failed.as_deref(), Some("wrong password"));
        assert_eq!(status.preflight.as_ref().map(|r| r.failures), Some(1));
        // The same failure again, and again after the Secret changed: not told again.
        let again = check(&mut status, false, true, "1/a", true);
        assert!(again.newly_failed.is_none());
        let other = check(&mut status, false, false, "1/b", true);
        assert!(other.newly_failed.is_none());
        assert_eq!(status.preflight.as_ref().map(|r| r.failures), Some(3));
        let fixed = check(&mut status, true, true, "1/c", true);
        assert!(fixed.recovered && fixed.newly_failed.is_none());
        assert_eq!(status.preflight.as_ref().map(|r| r.failures), Some(0));
        let broken = check(&mut status, true, false, "1/d", true);
        assert_eq!(broken.newly_failed.as_deref(), Some("no bucket"));
        let storage = status::condition(&status.conditions, "StorageWritable").unwrap();
        assert_eq!(
            (storage.status.as_str(), storage.reason.as_str()),
            ("False", "StorageCheckFailed")
        );
    }
}
