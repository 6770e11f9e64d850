//! The Backup reconciler: dereference (the schedule, if the Backup takes its settings from
//! one) → validate (Secrets and claims exist) → build the worker Job (pure) → apply it →
//! read the worker's summary into status. A finalizer deletes the stored data with the Backup
//! when `deletionPolicy` is `Delete`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::job::{self, JobRequest};
use super::location::{self, SCHEDULED_TIME_ANNOTATION};
use super::metrics::{RunLabels, ScheduleLabels};
use super::references::{self, Problem};
use super::status::{self, set_condition};
use super::workers::{self, JobState};
use crate::api::{
    Backup, BackupPhase, BackupSchedule, BackupSource, BackupStatus, BackupStorage, Compression,
    DeletionPolicy, JobTemplate, SourceKind,
};
use crate::worker::Plan;
use crate::worker::plan::{BackupPlan, DeletePlan};
use crate::worker::{Failure, Summary};

/// The finalizer that deletes a Backup's stored data before the Backup goes.
pub const FINALIZER: &str = "coffer.dev/delete-data";
/// How often a Backup waiting for something outside the controller's watch is looked at.
const RECHECK: Duration = Duration::from_secs(15);

/// A Backup with its settings taken from its schedule where it has none of its own.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub source: BackupSource,
    pub storage: BackupStorage,
    pub compression: Compression,
    pub template: Option<JobTemplate>,
    /// The folder name below the namespace: the schedule's name, or the Backup's own.
    pub group: String,
    /// The schedule's name, or empty.
    pub schedule: String,
    /// The backup's folder in the store.
    pub folder: String,
}

/// When the run was due (scheduled Backups) or asked for (its creation).
pub fn run_time(backup: &Backup) -> DateTime<Utc> {
    backup
        .annotations()
        .get(SCHEDULED_TIME_ANNOTATION)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            backup
                .metadata
                .creation_timestamp
                .as_ref()
                .map(status::chrono)
        })
        .unwrap_or_else(Utc::now)
}

/// The source kind as a lowercase word (metrics, manifests).
pub fn kind_word(kind: Option<SourceKind>) -> &'static str {
    match kind {
        Some(SourceKind::Redis) => "redis",
        Some(SourceKind::Postgres) => "postgres",
        Some(SourceKind::Volume) => "volume",
        None => "unknown",
    }
}

/// Takes the Backup's settings from itself or its schedule.
pub async fn resolve(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
) -> Result<Result<Resolved, Problem>, Error> {
    let spec = &backup.spec;
    let schedule = spec
        .schedule_ref
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let group = if schedule.is_empty() {
        backup.name_any()
    } else {
        schedule.clone()
    };
    let folder = location::folder(namespace, &group, run_time(backup));
    if let (Some(source), Some(storage)) = (&spec.source, &spec.storage) {
        return Ok(Ok(Resolved {
            source: source.clone(),
            storage: storage.clone(),
            compression: spec.compression.unwrap_or_default(),
            template: spec.job_template.clone(),
            group,
            schedule,
            folder,
        }));
    }
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(found) = api.get_opt(&schedule).await? else {
        return Ok(Err(Problem {
            reason: "ScheduleNotFound",
            message: format!(
                "BackupSchedule {namespace}/{schedule} does not exist: create it, or give source and storage"
            ),
        }));
    };
    Ok(Ok(Resolved {
        source: found.spec.source.clone(),
        storage: found.spec.storage.clone(),
        compression: spec.compression.unwrap_or(found.spec.compression),
        template: spec
            .job_template
            .clone()
            .or(found.spec.job_template.clone()),
        group,
        schedule,
        folder,
    }))
}

pub async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (name, namespace, api) = ctx.scope(backup.as_ref())?;
    if backup.metadata.deletion_timestamp.is_some() {
        return finalize(&backup, &ctx, &namespace, &api).await;
    }
    let old = backup.status.clone();
    let mut status = old.clone().unwrap_or_default();
    if matches!(
        status.phase,
        Some(BackupPhase::Succeeded | BackupPhase::Failed)
    ) {
        return Ok(Action::await_change());
    }
    if !backup.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = backup.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        set_finalizers(&api, &backup, finalizers).await?;
        return Ok(Action::await_change());
    }
    let generation = backup.metadata.generation;
    status.observed_generation = generation;

    let resolved = match resolve(&ctx, &namespace, &backup).await? {
        Ok(resolved) => resolved,
        Err(problem) => return wait(&ctx, &api, &backup, old.as_ref(), status, problem).await,
    };
    status.source_kind = resolved.source.kind();
    status.location = Some(location::display(&resolved.storage, &resolved.folder));
    let job_name = job::job_name(&name, "backup");

    let job = match workers::get(&ctx, &namespace, &job_name).await? {
        Some(job) => job,
        None if status.job_name.is_some() => {
            let summary = Summary::failed(
                Failure::Internal,
                format!("the worker Job {job_name} was deleted before it finished"),
            );
            return finish(
                &ctx,
                &api,
                &backup,
                old.as_ref(),
                status,
                &resolved,
                summary,
            )
            .await;
        }
        None => {
            if let Some(problem) =
                references::check(&ctx, &namespace, &resolved.source, &resolved.storage).await?
            {
                return wait(&ctx, &api, &backup, old.as_ref(), status, problem).await;
            }
            references::ensure_worker_account(&ctx, &namespace).await?;
            let plan = Plan::Backup(BackupPlan {
                source: resolved.source.clone(),
                storage: resolved.storage.clone(),
                folder: resolved.folder.clone(),
                name: resolved.group.clone(),
                compression: resolved.compression,
            });
            let built = job::build(
                &JobRequest {
                    name: job_name.clone(),
                    namespace: &namespace,
                    owner: backup.controller_owner_ref(&()),
                    owner_name: name.clone(),
                    plan: &plan,
                    template: resolved.template.as_ref(),
                },
                &ctx.settings.worker,
            )?;
            let job = workers::ensure(&ctx, &namespace, &built).await?;
            ctx.event(
                backup.as_ref(),
                false,
                "Started",
                format!(
                    "worker Job {job_name} backs up to {}",
                    status.location.as_deref().unwrap_or_default()
                ),
            )
            .await;
            job
        }
    };
    status.job_name = Some(job_name);
    if status.start_time.is_none() {
        status.start_time = job
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .or_else(|| Some(status::time(Utc::now())));
    }
    match workers::observe(&ctx, &namespace, &job).await? {
        JobState::Running { waiting } => {
            status.phase = Some(BackupPhase::Running);
            let message = waiting
                .clone()
                .unwrap_or_else(|| "the worker is running".to_owned());
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                if waiting.is_some() {
                    "WorkerWaiting"
                } else {
                    "Running"
                },
                &message,
                generation,
            );
            status::apply(&api, backup.as_ref(), old.as_ref(), &status).await?;
            // Job changes wake this Backup; a stuck container does not, so look again.
            Ok(match waiting {
                Some(_) => Action::requeue(RECHECK),
                None => Action::await_change(),
            })
        }
        JobState::Finished(summary) => {
            finish(
                &ctx,
                &api,
                &backup,
                old.as_ref(),
                status,
                &resolved,
                *summary,
            )
            .await
        }
    }
}

/// The Backup cannot start yet: it stays Pending with the reason, and is looked at again.
async fn wait(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    old: Option<&BackupStatus>,
    mut status: BackupStatus,
    problem: Problem,
) -> Result<Action, Error> {
    let first =
        status::condition(&status.conditions, "Ready").is_none_or(|c| c.reason != problem.reason);
    status.phase = Some(BackupPhase::Pending);
    problem.mark_not_ready(&mut status.conditions, backup.metadata.generation);
    status::apply(api, backup, old, &status).await?;
    if first {
        ctx.event(backup, true, problem.reason, &problem.message)
            .await;
    }
    Ok(Action::requeue(RECHECK))
}

/// The worker finished: the Backup's final status, an Event and metrics.
async fn finish(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    old: Option<&BackupStatus>,
    mut status: BackupStatus,
    resolved: &Resolved,
    summary: Summary,
) -> Result<Action, Error> {
    let completed = summary.completed_at.unwrap_or_else(Utc::now);
    let started = summary
        .started_at
        .or(status.start_time.as_ref().map(status::chrono))
        .unwrap_or(completed);
    status.completion_time = Some(status::time(completed));
    status.duration = Some(status::duration((completed - started).num_seconds()));
    let succeeded = summary.failure.is_none();
    let reason = summary.failure.map_or("Succeeded", Failure::as_str);
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    if succeeded {
        status.phase = Some(BackupPhase::Succeeded);
        status.raw_bytes = summary.raw_bytes.map(signed);
        status.stored_bytes = summary.stored_bytes.map(signed);
        status.stored_size = summary.stored_bytes.map(crate::units::bytes);
        status.manifest_sha256 = summary.manifest_sha256.clone();
        status.stats = summary.backup.clone();
    } else {
        status.phase = Some(BackupPhase::Failed);
    }
    set_condition(
        &mut status.conditions,
        "Ready",
        succeeded,
        reason,
        &summary.message,
        backup.metadata.generation,
    );
    status::apply(api, backup, old, &status).await?;
    let first = old.and_then(|s| s.phase) != status.phase;
    if first {
        ctx.event(
            backup,
            !succeeded,
            if succeeded { "Succeeded" } else { "Failed" },
            format!("{reason}: {}", summary.message),
        )
        .await;
        let source_kind = kind_word(resolved.source.kind()).to_owned();
        let namespace = backup.namespace().unwrap_or_default();
        ctx.metrics
            .backups
            .get_or_create(&RunLabels {
                namespace: namespace.clone(),
                schedule: resolved.schedule.clone(),
                source_kind: source_kind.clone(),
                result: if succeeded {
                    "succeeded".to_owned()
                } else {
                    reason.to_owned()
                },
            })
            .inc();
        if succeeded {
            let labels = ScheduleLabels {
                namespace,
                schedule: resolved.schedule.clone(),
                source_kind,
            };
            ctx.metrics
                .backup_duration
                .get_or_create(&labels)
                .observe((completed - started).num_milliseconds() as f64 / 1000.0);
            ctx.metrics
                .backup_stored_bytes
                .get_or_create(&labels)
                .inc_by(summary.stored_bytes.unwrap_or(0));
            ctx.metrics
                .last_success
                .get_or_create(&labels)
                .set(completed.timestamp() as f64);
        }
    }
    Ok(Action::await_change())
}

/// The Backup is being deleted: stop its worker, delete its data if the policy says so
/// (through a deletion Job, manifest first), then let it go.
async fn finalize(
    backup: &Backup,
    ctx: &Context,
    namespace: &str,
    api: &Api<Backup>,
) -> Result<Action, Error> {
    if !backup.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = backup.name_any();
    let backup_job = job::job_name(&name, "backup");
    if let Some(running) = workers::get(ctx, namespace, &backup_job).await?
        && workers::finished(&running).is_none()
    {
        workers::delete(ctx, namespace, &backup_job).await?;
    }
    let started = backup.status.as_ref().is_some_and(|s| s.job_name.is_some());
    if backup.spec.deletion_policy == DeletionPolicy::Delete && started {
        match resolve(ctx, namespace, backup).await? {
            Err(problem) => {
                ctx.event(
                    backup,
                    true,
                    "DataNotDeleted",
                    format!("the stored data is kept: {}", problem.message),
                )
                .await;
            }
            Ok(resolved) => {
                if let Some(action) = delete_data(ctx, namespace, backup, &resolved).await? {
                    return Ok(action);
                }
            }
        }
    }
    let finalizers = backup
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(api, backup, finalizers).await?;
    Ok(Action::await_change())
}

/// Runs the deletion Job; `Some(action)` while it is not done.
async fn delete_data(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
    resolved: &Resolved,
) -> Result<Option<Action>, Error> {
    let name = backup.name_any();
    let job_name = job::job_name(&name, "delete");
    let job = match workers::get(ctx, namespace, &job_name).await? {
        Some(job) => job,
        None => {
            let plan = Plan::Delete(DeletePlan {
                storage: resolved.storage.clone(),
                folder: resolved.folder.clone(),
            });
            let mut template = resolved.template.clone().unwrap_or_default();
            template.ttl_seconds_after_finished = Some(3600);
            references::ensure_worker_account(ctx, namespace).await?;
            let built = job::build(
                &JobRequest {
                    name: job_name.clone(),
                    namespace,
                    // Not owned by the Backup: it must outlive it, even under foreground deletion.
                    owner: None,
                    owner_name: name.clone(),
                    plan: &plan,
                    template: Some(&template),
                },
                &ctx.settings.worker,
            )?;
            workers::ensure(ctx, namespace, &built).await?
        }
    };
    match workers::observe(ctx, namespace, &job).await? {
        JobState::Running { .. } => Ok(Some(Action::requeue(Duration::from_secs(2)))),
        JobState::Finished(summary) if summary.failure.is_none() => {
            ctx.event(backup, false, "DataDeleted", &summary.message)
                .await;
            Ok(None)
        }
        JobState::Finished(summary) => {
            ctx.event(
                backup,
                true,
                "DeleteFailed",
                format!("{}; retrying in a minute", summary.message),
            )
            .await;
            workers::delete(ctx, namespace, &job_name).await?;
            Ok(Some(Action::requeue(Duration::from_secs(60))))
        }
    }
}

/// Replaces the finalizers, failing if the Backup changed meanwhile.
async fn set_finalizers(
    api: &Api<Backup>,
    backup: &Backup,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": backup.resource_version(),
        }
    });
    api.patch(
        &backup.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
