//! The BackupSchedule reconciler: validate the schedule → decide what is due (pure, in
//! [`super::due`]) → create the run's Backup under its deterministic name → apply retention →
//! status. It wakes at the next due time and whenever one of its Backups changes.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::backup::run_time;
use super::context::Context;
use super::due::{self, Skipped, Step};
use super::error::Error;
use super::location::{SCHEDULE_LABEL, SCHEDULED_TIME_ANNOTATION};
use super::references::{self, Problem};
use super::retention::{self, Outcome, Run};
use super::status::{self, set_condition};
use crate::api::{
    Backup, BackupPhase, BackupSchedule, BackupScheduleStatus, BackupSpec, LocalObjectReference,
};
use crate::schedule::CronSchedule;

/// The longest a schedule sleeps without a look, whatever its next time.
const MAX_SLEEP: Duration = Duration::from_secs(300);

pub async fn reconcile(schedule: Arc<BackupSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (name, namespace, api) = ctx.scope(schedule.as_ref())?;
    let generation = schedule.metadata.generation;
    let old = schedule.status.clone();
    let mut status = old.clone().unwrap_or_default();
    status.observed_generation = generation;
    let spec = &schedule.spec;
    // Notifications recorded by an earlier reconcile go out first, each on its own write.
    let delivered = if super::notify::outstanding(&status.notifications) {
        super::notify::deliver(&ctx, schedule.as_ref()).await?
    } else {
        super::notify::Delivered::default()
    };
    if delivered.wrote {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }

    let cron = match CronSchedule::parse(&spec.schedule, &spec.time_zone) {
        Ok(cron) => cron,
        Err(e) => {
            let first = status::condition(&status.conditions, "Ready")
                .is_none_or(|c| c.reason != e.reason());
            status.next_schedule_time = None;
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                e.reason(),
                &e.to_string(),
                generation,
            );
            // It takes no backups, so it must still turn stale.
            let (stale_at, notice) =
                super::fresh::step(&ctx, &schedule, None, &mut status, Utc::now());
            if !write_status(&ctx, &api, &schedule, old.as_ref(), &status, notice, false).await? {
                return Ok(Action::requeue(CONFLICT_RETRY));
            }
            if first {
                ctx.event(schedule.as_ref(), true, e.reason(), e.to_string())
                    .await;
            }
            return Ok(match stale_at {
                Some(t) => Action::requeue(super::fresh::until(t) + Duration::from_millis(50)),
                None => Action::await_change(),
            });
        }
    };
    let now = Utc::now();
    let backups_api: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
    // The history comes from a watch; it must have listed every Backup once, or Forbid and
    // retention would decide on part of it.
    tokio::time::timeout(
        Duration::from_secs(30),
        ctx.scheduled_backups.wait_until_ready(),
    )
    .await
    .map_err(|_| Error::NotSynced("scheduled Backups"))?
    .map_err(|_| Error::NotSynced("scheduled Backups"))?;
    let mut backups: Vec<Backup> = ctx
        .scheduled_backups
        .state()
        .iter()
        .filter(|b| {
            b.namespace().as_deref() == Some(namespace.as_str())
                && b.labels().get(SCHEDULE_LABEL) == Some(&name)
        })
        .map(|b| Backup::clone(b))
        .collect();
    let since = status
        .last_schedule_time
        .as_ref()
        .or(schedule.metadata.creation_timestamp.as_ref())
        .map(status::chrono)
        .unwrap_or(now);
    // Schedules are woken by every change of their Backups; the Secrets and claims are looked
    // up only when it matters: a run is due, the spec changed, or they were missing before.
    let due_now = !spec.suspend && due::latest_due(&cron, since, now).is_some();
    let spec_changed = old.as_ref().and_then(|s| s.observed_generation) != generation;
    let was_missing = status::condition(&status.conditions, "Ready")
        .is_some_and(|c| matches!(c.reason.as_str(), "SecretNotFound" | "ClaimNotFound"));
    let mut problem = if due_now || spec_changed || was_missing {
        references::check(&ctx, &namespace, &spec.source, &spec.storage).await?
    } else {
        None
    };

    if !spec.suspend && problem.is_none() {
        // A Backup being deleted is being stopped: it does not hold up the next run.
        let running: Vec<&Backup> = backups
            .iter()
            .filter(|b| !finished(b) && b.metadata.deletion_timestamp.is_none())
            .collect();
        let made: Vec<_> = backups.iter().map(run_time).collect();
        match due::step(
            &cron,
            since,
            now,
            spec.starting_deadline_seconds,
            &made,
            running.len(),
            spec.concurrency_policy,
        ) {
            Step::Wait => {}
            Step::Made { time } => status.last_schedule_time = Some(status::time(time)),
            Step::Skip { time, why } => {
                status.last_schedule_time = Some(status::time(time));
                let note = match why {
                    Skipped::MissedDeadline { late_seconds } => format!(
                        "the run due at {time} was skipped: it could not start within startingDeadlineSeconds ({late_seconds}s late)"
                    ),
                    Skipped::StillRunning => format!(
                        "the run due at {time} was skipped: {} is still running (concurrencyPolicy: Forbid)",
                        running
                            .iter()
                            .map(|b| b.name_any())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                let reason = match why {
                    Skipped::MissedDeadline { .. } => "MissedSchedule",
                    Skipped::StillRunning => "SkippedStillRunning",
                };
                ctx.event(schedule.as_ref(), true, reason, note).await;
            }
            Step::Create { time, replace } => {
                if replace {
                    for old_run in &running {
                        backups_api
                            .delete(&old_run.name_any(), &DeleteParams::default())
                            .await?;
                        ctx.event_about(
                            schedule.as_ref(),
                            Some(old_run.object_ref(&())),
                            false,
                            "Replaced",
                            format!("{} was stopped for the run due at {time} (concurrencyPolicy: Replace)", old_run.name_any()),
                        )
                        .await;
                    }
                }
                let backup = scheduled_backup(&schedule, time);
                let backup_name = backup.name_any();
                match backups_api.create(&PostParams::default(), &backup).await {
                    Ok(created) => {
                        ctx.event_about(
                            schedule.as_ref(),
                            Some(created.object_ref(&())),
                            false,
                            "Scheduled",
                            format!("created Backup {backup_name} for the run due at {time}"),
                        )
                        .await;
                        backups.push(created);
                    }
                    // Made before a restart, or by another replica: the name is the run.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    // Refused for good (an admission policy, a quota, an invalid object):
                    // said once, tried again in a while, and the run stays due.
                    Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
                        // Logged at every attempt (the Event and condition say it once).
                        tracing::info!(namespace = %schedule.namespace().unwrap_or_default(), backup = %backup_name, reason = %e.message, "the API server refused a scheduled Backup; tried again later");
                        problem = Some(Problem {
                            reason: "BackupRefused",
                            message: format!(
                                "the API server refused Backup {backup_name} for the run due at {time}: {}; fix the cause, the run is tried again every 30s",
                                e.message
                            ),
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
                if problem.is_none() {
                    status.last_schedule_time = Some(status::time(time));
                }
            }
        }
    }

    // Before retention deletes failed runs: the next run's notifications need to know.
    status.last_failed_time = latest(
        status.last_failed_time.take(),
        backups
            .iter()
            .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Failed))
            .filter_map(|b| b.status.as_ref()?.completion_time.clone()),
    );
    // Drills' results and the successes they count, before retention deletes any.
    super::drill_schedule::observe(&schedule, &backups, &mut status, now);
    if let Some(policy) = &spec.retention {
        let history: Vec<Run> = backups
            .iter()
            .filter(|b| b.metadata.deletion_timestamp.is_none())
            .map(|b| Run {
                name: b.name_any(),
                time: run_time(b),
                outcome: match b.status.as_ref().and_then(|s| s.phase) {
                    // A copy being made reads the backup: it stays until the copy is done
                    // (or has failed, and waits for its next attempt).
                    Some(BackupPhase::Succeeded)
                        if b.status.as_ref().is_some_and(super::copies::in_progress) =>
                    {
                        Outcome::Unfinished
                    }
                    // So does a drill.
                    Some(BackupPhase::Succeeded)
                        if b.status
                            .as_ref()
                            .is_some_and(|s| super::drill::pending(s).is_some()) =>
                    {
                        Outcome::Unfinished
                    }
                    Some(BackupPhase::Succeeded) => Outcome::Succeeded,
                    Some(BackupPhase::Failed) => Outcome::Failed,
                    _ => Outcome::Unfinished,
                },
            })
            .collect();
        match retention::select(&history, policy, cron.time_zone(), now) {
            Ok(selection) => {
                for (doomed, why) in &selection.delete {
                    match backups_api.delete(doomed, &DeleteParams::default()).await {
                        Ok(_) => {
                            let related = backups
                                .iter()
                                .find(|b| b.name_any() == *doomed)
                                .map(|b| b.object_ref(&()));
                            ctx.event_about(
                                schedule.as_ref(),
                                related,
                                false,
                                "RetentionDeleted",
                                format!("deleted Backup {doomed}: {why}"),
                            )
                            .await;
                        }
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                backups.retain(|b| !selection.delete.iter().any(|(n, _)| *n == b.name_any()));
                // A backup a longer rule keeps is locked as long as that rule keeps it.
                let derived = spec
                    .storage
                    .s3
                    .as_ref()
                    .and_then(|s| s.object_lock.as_ref())
                    .is_some_and(|l| l.retain_for.is_none());
                if derived {
                    for (kept, why) in &selection.keep {
                        if let Some(backup) = backups.iter().find(|b| b.name_any() == *kept) {
                            want_lock(&backups_api, backup, why, policy, now, cron.time_zone())
                                .await;
                        }
                    }
                }
            }
            Err(e) => {
                set_condition(
                    &mut status.conditions,
                    "Ready",
                    false,
                    "InvalidRetention",
                    &e.to_string(),
                    generation,
                );
                let (stale_at, notice) =
                    super::fresh::step(&ctx, &schedule, Some(&cron), &mut status, now);
                if !write_status(&ctx, &api, &schedule, old.as_ref(), &status, notice, false)
                    .await?
                {
                    return Ok(Action::requeue(CONFLICT_RETRY));
                }
                return Ok(match stale_at {
                    Some(t) => Action::requeue(super::fresh::until(t) + Duration::from_millis(50)),
                    None => Action::await_change(),
                });
            }
        }
    }

    let next = if spec.suspend {
        None
    } else {
        cron.next_after(now)
    };
    status.next_schedule_time = next.map(status::time);
    let mut active: Vec<String> = backups
        .iter()
        .filter(|b| !finished(b))
        .map(|b| b.name_any())
        .collect();
    active.sort();
    status.active = active;
    let newest_success = backups
        .iter()
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Succeeded))
        .max_by_key(|b| run_time(b));
    if let Some(b) = newest_success {
        status.last_successful_backup = Some(b.name_any());
        status.last_successful_time = b.status.as_ref().and_then(|s| s.completion_time.clone());
    }
    // Restore drills: asked for when due; never hold up backups.
    let drill_wake = if spec.suspend {
        None
    } else {
        super::drill_schedule::step(&ctx, &schedule, &backups_api, &backups, &mut status, now).await
    };
    // The pre-flight check, when the settings are new or a failure is to be checked again;
    // a suspended schedule's check is stopped (it is checked again when resumed).
    let preflight = if spec.suspend {
        if let Err(e) = super::preflight::cancel(&ctx, &schedule, &namespace).await {
            tracing::warn!(schedule = %name, "cannot stop the pre-flight check: {e}");
        }
        super::preflight::Step::default()
    } else {
        super::preflight::step(&ctx, &schedule, &namespace, &mut status)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(schedule = %name, "cannot run the pre-flight check: {e}");
                super::preflight::Step::default()
            })
    };
    let failing_check = status
        .preflight
        .as_ref()
        .filter(|r| !(r.source_ok && r.storage_ok));
    match (&problem, spec.suspend) {
        (Some(problem), _) => {
            let first = status::condition(&status.conditions, "Ready")
                .is_none_or(|c| c.reason != problem.reason);
            problem.mark_not_ready(&mut status.conditions, generation);
            if first {
                ctx.event(schedule.as_ref(), true, problem.reason, &problem.message)
                    .await;
            }
        }
        (None, true) => set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Suspended",
            "the schedule is suspended: no new backups are taken",
            generation,
        ),
        // Decided once per reconcile (never True then False), so that an unchanged failure
        // writes nothing.
        (None, false) if failing_check.is_some() => {
            let why: Vec<String> = ["SourceReachable", "StorageWritable"]
                .iter()
                .filter_map(|t| status::condition(&status.conditions, t))
                .filter(|c| c.status == "False")
                .map(|c| c.message.clone())
                .collect();
            let again = super::preflight::next_retry(failing_check)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                "PreflightFailed",
                &format!(
                    "its backups would fail: {}; checked again at {again}, and when the schedule or a Secret it names changes",
                    why.join("; "),
                ),
                generation,
            );
        }
        (None, false) => set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Scheduled",
            &format!(
                "next backup at {}",
                next.map(|t| t.to_rfc3339()).unwrap_or_default()
            ),
            generation,
        ),
    }
    let (stale_at, notice) = super::fresh::step(&ctx, &schedule, Some(&cron), &mut status, now);
    // The daily sweep of the schedule's folder; it never holds up the schedule.
    let sweeping = super::sweep::step(&ctx, &schedule, &namespace, &mut status)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(schedule = %name, "cannot sweep: {e}");
            false
        });
    if !write_status(
        &ctx,
        &api,
        &schedule,
        old.as_ref(),
        &status,
        notice,
        preflight.newly_failed.is_some(),
    )
    .await?
    {
        return Ok(Action::requeue(CONFLICT_RETRY));
    }
    preflight.after_write(&ctx, &schedule, &namespace).await;

    let sleep = match (problem.is_some(), next) {
        (true, _) => Duration::from_secs(30),
        (false, Some(next)) => (next - Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(MAX_SLEEP),
        (false, None) => MAX_SLEEP,
    };
    // Looked at again when it would turn stale.
    let sleep = match stale_at {
        Some(t) => sleep.min(super::fresh::until(t)),
        None => sleep,
    };
    // A notification waiting for its next attempt.
    let sleep = match delivered.wake {
        Some(wake) => sleep.min(wake),
        None => sleep,
    };
    // A check in progress is looked at again soon; a failed one is checked again.
    let sleep = match preflight.wake(status.preflight.as_ref()) {
        Some(wake) if !spec.suspend => sleep.min(wake),
        _ => sleep,
    };
    // A drill due, asked for, or running.
    let sleep = match drill_wake {
        Some(wake) => sleep.min(wake),
        None => sleep,
    };
    // A sweep in progress is looked at again soon.
    let sleep = if sweeping {
        sleep.min(Duration::from_secs(5))
    } else {
        sleep
    };
    // Wake just after the due time, so that it is in the past when looked at.
    Ok(Action::requeue(sleep + Duration::from_millis(50)))
}

/// Writes the schedule's status, only if this reconcile read the newest copy: `false` when
/// it did not (a conflict; nothing was written and the caller looks again soon). A change of
/// freshness and the deliveries it calls for go in the same write, and their Events are
/// recorded only once it is stored: said once.
/// Records in a kept Backup the date retention wants its objects locked until, when that
/// is later than their lock (the Backup extends it). Best effort: the next look tries again.
async fn want_lock(
    api: &Api<Backup>,
    backup: &Backup,
    why: &[super::retention::KeptBy],
    policy: &crate::api::Retention,
    now: chrono::DateTime<Utc>,
    zone: chrono_tz::Tz,
) {
    let Some(old) = backup.status.as_ref() else {
        return;
    };
    if old.phase != Some(BackupPhase::Succeeded) {
        return;
    }
    let Some(wanted) = super::lock::wanted(why, policy, run_time(backup), now, zone) else {
        return;
    };
    let have = super::lock::current(old);
    let asked = old.lock_wanted_until.as_ref().map(status::chrono);
    // Only a day or more later is worth a Job.
    let later = |t: Option<chrono::DateTime<Utc>>| {
        t.is_none_or(|t| wanted - t > chrono::TimeDelta::days(1))
    };
    if have.is_none() || !later(have) || !later(asked) {
        return;
    }
    // Read fresh (the history is a watch, perhaps behind) and written with its version.
    for _ in 0..3 {
        let Ok(Some(current)) = api.get_opt(&backup.name_any()).await else {
            return;
        };
        let Some(old) = current.status.clone() else {
            return;
        };
        let mut status = old.clone();
        status.lock_wanted_until = Some(status::time(wanted));
        match status::apply_fresh(api, &current, Some(&old), &status).await {
            Ok(()) => return,
            Err(e) => {
                tracing::info!(backup = %backup.name_any(), "recording the lock wanted: {e}");
            }
        }
    }
}

async fn write_status(
    ctx: &Context,
    api: &Api<BackupSchedule>,
    schedule: &BackupSchedule,
    old: Option<&BackupScheduleStatus>,
    status: &BackupScheduleStatus,
    notice: Option<super::fresh::Notice>,
    failed_check: bool,
) -> Result<bool, Error> {
    let mut status = status.clone();
    let mut unknown_notifiers = Vec::new();
    let namespace = schedule.namespace().unwrap_or_default();
    // A failed pre-flight check notifies, recorded in the same write (and only once).
    if failed_check && !schedule.spec.notify.is_empty() {
        let wants = super::notify::lookup(ctx, &namespace, &schedule.spec.notify).await?;
        let planned =
            super::notify::plan_event(crate::api::NotifyEvent::PreflightFailed, Utc::now(), &wants);
        unknown_notifiers.extend(super::notify::add_planned(
            &mut status.notifications,
            planned,
        ));
    }
    // Turning stale notifies likewise.
    if notice.as_ref().is_some_and(|n| n.reason == "Stale") && !schedule.spec.notify.is_empty() {
        let wants = super::notify::lookup(ctx, &namespace, &schedule.spec.notify).await?;
        let since = status::condition(&status.conditions, "Fresh")
            .map(|c| status::chrono(&c.last_transition_time))
            .unwrap_or_else(Utc::now);
        let planned = super::notify::plan_stale(since, &wants);
        unknown_notifiers.extend(super::notify::add_planned(
            &mut status.notifications,
            planned,
        ));
    }
    super::notify::mark(
        &mut status.conditions,
        &status.notifications,
        schedule.metadata.generation,
    );
    // A copy read before the latest write must not undo it (a check's findings, planned
    // deliveries): only the newest copy writes.
    match status::apply_fresh(api, schedule, old, &status).await {
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
            tracing::debug!(schedule = %schedule.name_any(), "read an older copy than the server's; looking again");
            return Ok(false);
        }
        other => other?,
    }
    for problem in unknown_notifiers {
        ctx.event(schedule, true, "NotificationFailed", problem)
            .await;
    }
    if let Some(notice) = notice {
        ctx.event(schedule, notice.warning, notice.reason, notice.message)
            .await;
    }
    Ok(true)
}

fn finished(backup: &Backup) -> bool {
    matches!(
        backup.status.as_ref().and_then(|s| s.phase),
        Some(BackupPhase::Succeeded | BackupPhase::Failed)
    )
}

/// The Backup of the run due at `time`: the schedule's settings copied in, so that editing the
/// schedule never changes a run that has started.
pub fn scheduled_backup(schedule: &BackupSchedule, time: chrono::DateTime<Utc>) -> Backup {
    let name = schedule.name_any();
    let spec = &schedule.spec;
    Backup {
        metadata: ObjectMeta {
            name: Some(due::backup_name(&name, time)),
            namespace: schedule.namespace(),
            labels: Some(
                [
                    (SCHEDULE_LABEL.to_owned(), name.clone()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "coffer".to_owned(),
                    ),
                ]
                .into(),
            ),
            annotations: Some([(SCHEDULED_TIME_ANNOTATION.to_owned(), time.to_rfc3339())].into()),
            ..ObjectMeta::default()
        },
        spec: BackupSpec {
            schedule_ref: Some(LocalObjectReference { name }),
            source: Some(spec.source.clone()),
            storage: Some(spec.storage.clone()),
            compression: Some(spec.compression),
            encryption: spec.encryption.clone(),
            deletion_policy: Default::default(),
            job_template: spec.job_template.clone(),
            notify: spec.notify.clone(),
            ttl: None,
        },
        status: None,
    }
}

/// How soon a reconcile that read an old copy looks again.
const CONFLICT_RETRY: Duration = Duration::from_millis(500);

/// The latest of `known` and `seen`.
fn latest(known: Option<Time>, seen: impl Iterator<Item = Time>) -> Option<Time> {
    known.into_iter().chain(seen).max_by_key(|t| t.0)
}
