//! The pre-flight check of a schedule: when it is created, when its spec changes, and when a
//! Secret it names changes, a worker Job (the backup's identity, Secrets and network) logs
//! in to the source and writes, reads back and deletes an object in the store. The findings
//! become the `SourceReachable` and `StorageWritable` conditions, a failing one is checked
//! again every [`RETRY`], and turning False notifies `preflightFailed`.

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

/// How soon a failed check runs again (it also runs at once when a Secret changes).
pub const RETRY: TimeDelta = TimeDelta::seconds(30);

/// What the check is judged against: the spec's generation and the Secrets' versions.
pub fn fingerprint(generation: Option<i64>, secrets: &str) -> String {
    format!("{}/{secrets}", generation.unwrap_or(0))
}

/// Whether a check is due. Pure.
pub fn due(record: Option<&PreflightRecord>, fingerprint: &str, now: DateTime<Utc>) -> bool {
    match record {
        None => true,
        Some(r) if r.fingerprint != fingerprint => true,
        Some(r) => !(r.source_ok && r.storage_ok) && now - status::chrono(&r.time) >= RETRY,
    }
}

/// What [`step`] found.
#[derive(Debug, Default)]
pub struct Step {
    /// A check Job runs: look again soon.
    pub running: bool,
    /// A check has just failed where the last one for these settings did not (notify).
    pub newly_failed: Option<String>,
}

/// Starts, watches or records the schedule's check; sets its conditions in `status`.
pub async fn step(
    ctx: &Context,
    schedule: &BackupSchedule,
    namespace: &str,
    status: &mut BackupScheduleStatus,
) -> Result<Step, Error> {
    let name = schedule.name_any();
    let uid = schedule.uid().ok_or_else(|| Error::NoUid(name.clone()))?;
    let generation = schedule.metadata.generation;
    let spec = &schedule.spec;
    let secrets = references::secret_versions(ctx, namespace, &spec.source, &spec.storage).await?;
    let fingerprint = fingerprint(generation, &secrets);
    let job_name = job::job_name(&name, "check");
    match workers::find(ctx, namespace, &job_name, &uid).await? {
        Found::Foreign(job) => {
            workers::clear_foreign(ctx, namespace, &job).await?;
            Ok(Step {
                running: true,
                ..Step::default()
            })
        }
        Found::Mine(job) if job.metadata.deletion_timestamp.is_some() => Ok(Step {
            running: true,
            ..Step::default()
        }),
        Found::Mine(job) => {
            let JobState::Finished(summary) = workers::observe(ctx, namespace, &job).await? else {
                return Ok(Step {
                    running: true,
                    ..Step::default()
                });
            };
            let checked = job
                .annotations()
                .get(FINGERPRINT_ANNOTATION)
                .cloned()
                .unwrap_or_default();
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
            let before = status.preflight.clone();
            status.preflight = Some(PreflightRecord {
                time: status::time(Utc::now()),
                fingerprint: checked.clone(),
                source_ok: checks.source_ok,
                storage_ok: checks.storage_ok,
            });
            set_condition(
                &mut status.conditions,
                "SourceReachable",
                checks.source_ok,
                if checks.source_ok {
                    "Reachable"
                } else {
                    "SourceCheckFailed"
                },
                &checks.source,
                generation,
            );
            set_condition(
                &mut status.conditions,
                "StorageWritable",
                checks.storage_ok,
                if checks.storage_ok {
                    "Writable"
                } else {
                    "StorageCheckFailed"
                },
                &checks.storage,
                generation,
            );
            workers::delete(ctx, namespace, &job_name).await?;
            let ok = checks.source_ok && checks.storage_ok;
            let was_ok = before.as_ref().is_none_or(|b| b.source_ok && b.storage_ok);
            let same_settings = before.as_ref().is_some_and(|b| b.fingerprint == checked);
            let mut step = Step::default();
            if !ok {
                let message = match (checks.source_ok, checks.storage_ok) {
                    (false, false) => format!("{}; {}", checks.source, checks.storage),
                    (false, true) => checks.source.clone(),
                    _ => checks.storage.clone(),
                };
                // Said once per failure, not at every retry of the same failure.
                if was_ok || !same_settings {
                    ctx.event(schedule, true, "PreflightFailed", &message).await;
                    step.newly_failed = Some(message);
                }
            } else if !was_ok {
                ctx.event(
                    schedule,
                    false,
                    "PreflightPassed",
                    "source and storage checked",
                )
                .await;
            }
            Ok(step)
        }
        Found::None => {
            if !due(status.preflight.as_ref(), &fingerprint, Utc::now())
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
                .insert(FINGERPRINT_ANNOTATION.to_owned(), fingerprint);
            if let Created::Refused { message, .. } =
                workers::create(ctx, namespace, &built).await?
            {
                tracing::warn!(schedule = %name, "cannot run the pre-flight check: {message}");
                return Ok(Step::default());
            }
            Ok(Step {
                running: true,
                ..Step::default()
            })
        }
    }
}

/// The annotation on a check Job with the settings it checks.
pub const FINGERPRINT_ANNOTATION: &str = "coffer.dev/checked";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_runs_for_new_settings_and_again_after_a_failure() {
        let now = Utc::now();
        assert!(due(None, "1/s=5", now));
        let passed = PreflightRecord {
            time: status::time(now),
            fingerprint: "1/s=5".to_owned(),
            source_ok: true,
            storage_ok: true,
        };
        assert!(!due(Some(&passed), "1/s=5", now + TimeDelta::days(2)));
        assert!(due(Some(&passed), "2/s=5", now), "the spec changed");
        assert!(due(Some(&passed), "1/s=6", now), "a Secret changed");
        let failed = PreflightRecord {
            source_ok: false,
            ..passed
        };
        assert!(!due(Some(&failed), "1/s=5", now + TimeDelta::seconds(10)));
        assert!(due(Some(&failed), "1/s=5", now + RETRY));
    }
}
