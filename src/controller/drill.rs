//! Restore drills of a successful Backup: its schedule's `spec.drill` asks for one by
//! recording the time in the Backup's `status.drillRequestedAt` (see
//! [`super::drill_schedule`]); the Backup runs a worker Job (`<backup>-drill`) that restores
//! it into a scratch instance and checks it, then records the verdict in
//! `status.verification`, an Event and the `coffer_drills_total` metric.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::backup::{kind_word, schedule_name};
use super::context::Context;
use super::error::Error;
use super::job::{self, JobRequest};
use super::metrics::{RunLabels, ScheduleLabels};
use super::notify;
use super::status;
use super::workers::{self, Created, Found, JobState};
use crate::api::{
    Backup, BackupSchedule, BackupStatus, DrillSpec, JobTemplate, NotifyEvent, Verification,
    VerificationPhase,
};
use crate::worker::plan::DrillPlan;
use crate::worker::{Failure, Plan, Summary};

/// How often a running drill is looked at (its Job's changes wake the Backup too).
const RECHECK: Duration = Duration::from_secs(10);
/// The annotation on a drill Job naming the request it answers (`drillRequestedAt`), so that
/// a Job left from an earlier request is never read as the answer to a later one.
const REQUEST_ANNOTATION: &str = "coffer.dev/drill-requested-at";

fn request_key(wanted: &Time) -> String {
    status::chrono(wanted).to_rfc3339()
}

/// The drill a Backup still has to run or finish: the time it was asked for.
pub fn pending(status: &BackupStatus) -> Option<Time> {
    let wanted = status.drill_requested_at.as_ref()?;
    status.resolved.as_ref()?;
    match &status.verification {
        Some(v) if v.requested_at == *wanted && v.phase != VerificationPhase::Running => None,
        _ => Some(wanted.clone()),
    }
}

/// The drill's Job settings: the schedule's `jobTemplate` (placement, labels, user), with
/// the drill's own resources and deadline, defaulted for a scratch database server.
pub fn template(schedule: Option<&JobTemplate>, drill: &DrillSpec) -> JobTemplate {
    let mut template = schedule.cloned().unwrap_or_default();
    template.resources = Some(drill.resources.clone().unwrap_or_else(|| {
        let quantity = |q: &str| Quantity(q.to_owned());
        ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), quantity("100m")),
                    ("memory".to_owned(), quantity("256Mi")),
                ]
                .into(),
            ),
            limits: Some([("memory".to_owned(), quantity("2Gi"))].into()),
            ..ResourceRequirements::default()
        }
    }));
    template.active_deadline_seconds = Some(
        drill
            .active_deadline_seconds
            .unwrap_or(job::DEFAULT_DRILL_DEADLINE_SECONDS),
    );
    // A drill is asked for again by the schedule, never retried by Kubernetes.
    template.backoff_limit = Some(0);
    template
}

/// The Backup's verification from its drill's summary.
pub fn verification(summary: &Summary, requested_at: Time) -> Verification {
    let phase = match (&summary.drill, summary.failure) {
        (Some(d), None) if d.verified => VerificationPhase::Verified,
        (Some(_), None) => VerificationPhase::VerificationFailed,
        // A backup that is gone or does not match its manifest failed its drill.
        (_, Some(Failure::IntegrityCheckFailed | Failure::BackupNotFound)) => {
            VerificationPhase::VerificationFailed
        }
        _ => VerificationPhase::Error,
    };
    let drill = summary.drill.clone().unwrap_or_default();
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let measured = summary.drill.is_some();
    Verification {
        phase,
        requested_at,
        time: Some(status::time(summary.completed_at.unwrap_or_else(Utc::now))),
        restore_seconds: measured.then(|| drill.restore_millis as f64 / 1000.0),
        bytes: measured.then(|| i64::try_from(drill.bytes).unwrap_or(i64::MAX)),
        checks_passed: count(drill.passed),
        // A backup that could not even be read failed its one check.
        checks_failed: if measured {
            count(drill.failed)
        } else {
            i32::from(phase == VerificationPhase::VerificationFailed)
        },
        message: crate::text::one_line(&summary.message),
    }
}

/// Runs (or looks at) the drill Job of a Backup whose drill was asked for.
pub async fn reconcile(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    namespace: &str,
    old: Option<&BackupStatus>,
    wanted: Time,
) -> Result<Action, Error> {
    let Some(run) = old.and_then(|s| s.resolved.clone()) else {
        return Ok(Action::await_change());
    };
    let uid = super::backup::uid(backup)?;
    let name = job::job_name(&backup.name_any(), "drill");
    let running = old
        .and_then(|s| s.verification.as_ref())
        .is_some_and(|v| v.requested_at == wanted && v.phase == VerificationPhase::Running);
    match workers::find(ctx, namespace, &name, &uid).await? {
        Found::Foreign(job) => {
            workers::clear_foreign(ctx, namespace, &job).await?;
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Found::None if running => {
            let lost = Summary::failed(
                Failure::WorkerVanished,
                format!(
                    "the drill's worker Job {name} was gone before its result was read; the schedule's next drill tries again"
                ),
            );
            record(ctx, api, backup, old, &lost, wanted, true).await
        }
        Found::None => {
            // Only from the newest version of the Backup: a stale read could start a second
            // drill of a request already answered.
            let fresh = api.get(&backup.name_any()).await?;
            if fresh.resource_version() != backup.resource_version() {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            let schedules: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), namespace);
            let schedule = match backup.spec.schedule_ref {
                Some(_) => schedules.get_opt(&schedule_name(backup)).await?,
                None => None,
            };
            let Some(drill) = schedule.as_ref().and_then(|s| s.spec.drill.clone()) else {
                let cancelled = Summary::failed(
                    Failure::DrillNotRun,
                    "the drill was not run: its schedule no longer has spec.drill (or is gone)",
                );
                // Not news: the user turned drills off.
                return record(ctx, api, backup, old, &cancelled, wanted, false).await;
            };
            let template = template(
                schedule.as_ref().and_then(|s| s.spec.job_template.as_ref()),
                &drill,
            );
            let plan = Plan::Drill(DrillPlan {
                storage: run.storage.clone(),
                folder: run.folder.clone(),
                manifest_sha256: old.and_then(|s| s.manifest_sha256.clone()),
                checks: drill.checks.clone(),
                identity_secret: drill.identity_secret_ref.clone(),
                scratch_size: drill.scratch_size.clone(),
            });
            let mut built = job::build(
                &JobRequest {
                    name: name.clone(),
                    namespace,
                    owner: backup.controller_owner_ref(&()),
                    owner_name: backup.name_any(),
                    owner_uid: uid.clone(),
                    plan: &plan,
                    template: Some(&template),
                },
                &ctx.settings.worker,
            )?;
            built
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(REQUEST_ANNOTATION.to_owned(), request_key(&wanted));
            match workers::create(ctx, namespace, &built).await? {
                Created::Job(_) => {
                    let mut status = old.cloned().unwrap_or_default();
                    status.verification = Some(Verification {
                        phase: VerificationPhase::Running,
                        requested_at: wanted,
                        time: None,
                        restore_seconds: None,
                        bytes: None,
                        checks_passed: 0,
                        checks_failed: 0,
                        message: format!("the drill's worker Job {name} is running"),
                    });
                    // The first write of this reconcile, from the version just read.
                    status::apply_fresh(api, &fresh, old, &status).await?;
                    ctx.event(
                        backup,
                        false,
                        "DrillStarted",
                        format!("restoring the backup into a scratch instance (Job {name})"),
                    )
                    .await;
                    Ok(Action::requeue(RECHECK))
                }
                Created::Refused { message, .. } => {
                    let refused = Summary::failed(Failure::DrillNotRun, message);
                    record(ctx, api, backup, old, &refused, wanted, true).await
                }
            }
        }
        // A Job left from an earlier request (its result recorded, its deletion failed):
        // removed, and the drill asked for now runs anew.
        Found::Mine(job)
            if job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REQUEST_ANNOTATION))
                != Some(&request_key(&wanted)) =>
        {
            workers::delete(ctx, namespace, &name).await?;
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Found::Mine(job) => match workers::observe(ctx, namespace, &job).await? {
            JobState::Running { .. } => Ok(Action::requeue(RECHECK)),
            JobState::Finished(summary) => {
                let action = record(ctx, api, backup, old, &summary, wanted, true).await?;
                workers::delete(ctx, namespace, &name).await?;
                Ok(action)
            }
        },
    }
}

/// Records a finished drill: the verification, an Event and the metrics.
async fn record(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    old: Option<&BackupStatus>,
    summary: &Summary,
    wanted: Time,
    tell: bool,
) -> Result<Action, Error> {
    let verification = verification(summary, wanted.clone());
    let mut status = old.cloned().unwrap_or_default();
    status.verification = Some(verification.clone());
    let namespace = backup.namespace().unwrap_or_default();
    // A failed drill is told (`tell`: unless it was cancelled), in the same write: once per
    // drill (the request's time is in the delivery's id).
    let problems = if verification.phase == VerificationPhase::Verified || !tell {
        Vec::new()
    } else {
        plan_failure_notice(ctx, &namespace, backup, &mut status, &wanted).await?
    };
    // Once only: a reconcile that read stale status conflicts here instead of counting twice.
    status::apply_fresh(api, backup, old, &status).await?;
    let (warning, reason) = match verification.phase {
        VerificationPhase::Verified => (false, "Verified"),
        VerificationPhase::VerificationFailed => (true, "VerificationFailed"),
        _ => (true, "DrillNotRun"),
    };
    ctx.event(backup, warning, reason, &verification.message)
        .await;
    for problem in problems {
        ctx.event(backup, true, "NotificationFailed", &problem)
            .await;
    }
    let schedule = schedule_name(backup);
    let source_kind = kind_word(status.source_kind).to_owned();
    ctx.metrics
        .drills
        .get_or_create(&RunLabels {
            namespace: namespace.clone(),
            schedule: schedule.clone(),
            source_kind: source_kind.clone(),
            result: match (verification.phase, summary.failure) {
                (VerificationPhase::Error, Some(f)) => f.as_str().to_owned(),
                (phase, _) => format!("{phase:?}"),
            },
        })
        .inc();
    if let Some(seconds) = verification.restore_seconds {
        ctx.metrics
            .drill_restore_seconds
            .get_or_create(&ScheduleLabels {
                namespace,
                schedule,
                source_kind,
            })
            .set(seconds);
    }
    Ok(Action::await_change())
}

/// Records in `status` the `drillFailed` deliveries for the Notifiers of `backup` (its
/// schedule's); returns what the ones that cannot be sent say, for Events.
async fn plan_failure_notice(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
    status: &mut BackupStatus,
    wanted: &Time,
) -> Result<Vec<String>, Error> {
    let refs = super::backup::notifiers(ctx, namespace, backup).await?;
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let wants = notify::lookup(ctx, namespace, &refs).await?;
    let planned = notify::plan_event(NotifyEvent::DrillFailed, status::chrono(wanted), &wants)
        .into_iter()
        .filter(|d| !status.notifications.iter().any(|o| o.id == d.id))
        .collect();
    let problems = notify::add_planned(&mut status.notifications, planned);
    notify::mark(
        &mut status.conditions,
        &status.notifications,
        backup.metadata.generation,
    );
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::summary::DrillSummary;

    fn at(seconds: i64) -> Time {
        status::time(chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default())
    }

    #[test]
    fn a_drill_is_pending_until_a_finished_verification_answers_its_request() {
        let mut status = BackupStatus {
            resolved: Some(
                serde_json::from_value(
                    serde_json::json!({"source": {}, "storage": {}, "folder": "f/", "compression": "gzip"}),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            ..BackupStatus::default()
        };
        assert_eq!(pending(&status), None);
        status.drill_requested_at = Some(at(100));
        assert_eq!(pending(&status), Some(at(100)));
        let mut verification = verification(
            &Summary {
                drill: Some(DrillSummary {
                    verified: true,
                    ..DrillSummary::default()
                }),
                ..Summary::default()
            },
            at(100),
        );
        verification.phase = VerificationPhase::Running;
        status.verification = Some(verification.clone());
        assert_eq!(pending(&status), Some(at(100)), "still running");
        verification.phase = VerificationPhase::Verified;
        status.verification = Some(verification);
        assert_eq!(pending(&status), None, "answered");
        status.drill_requested_at = Some(at(200));
        assert_eq!(pending(&status), Some(at(200)), "asked again");
    }

    #[test]
    fn the_verdict_follows_the_checks_and_a_damaged_backup_fails_its_drill() {
        let drilled = |verified, failed| Summary {
            message: "m".into(),
            drill: Some(DrillSummary {
                verified,
                restore_millis: 1500,
                bytes: 10,
                passed: 3,
                failed,
            }),
            ..Summary::default()
        };
        let ok = verification(&drilled(true, 0), at(1));
        assert_eq!(ok.phase, VerificationPhase::Verified);
        assert_eq!(ok.restore_seconds, Some(1.5));
        assert_eq!((ok.checks_passed, ok.checks_failed), (3, 0));
        let bad = verification(&drilled(false, 1), at(1));
        assert_eq!(bad.phase, VerificationPhase::VerificationFailed);
        let tampered = verification(
            &Summary::failed(Failure::IntegrityCheckFailed, "the manifest differs"),
            at(1),
        );
        assert_eq!(tampered.phase, VerificationPhase::VerificationFailed);
        assert_eq!(tampered.checks_failed, 1);
        assert_eq!(tampered.restore_seconds, None);
        let not_run = verification(&Summary::failed(Failure::DrillNotRun, "no room"), at(1));
        assert_eq!(not_run.phase, VerificationPhase::Error);
    }

    #[test]
    fn a_drill_job_is_bounded_by_default_and_keeps_the_schedules_placement() {
        let schedule = JobTemplate {
            priority_class_name: Some("backups".into()),
            active_deadline_seconds: Some(99_999),
            ..JobTemplate::default()
        };
        let t = template(Some(&schedule), &DrillSpec::default());
        assert_eq!(t.priority_class_name.as_deref(), Some("backups"));
        assert_eq!(t.active_deadline_seconds, Some(3600));
        assert_eq!(t.backoff_limit, Some(0));
        let limits = t.resources.and_then(|r| r.limits).unwrap_or_default();
        assert_eq!(limits.get("memory"), Some(&Quantity("2Gi".into())));
    }
}
