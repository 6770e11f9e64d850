//! The Backup reconciler: dereference (the schedule, if the Backup takes its settings from
//! one) → record what the run resolved in status → validate (Secrets and claims exist) →
//! build the worker Job (pure) → apply it → read the worker's summary into status. Every Job
//! is matched by its owner's UID, never by name alone. The finalizer that deletes the stored
//! data is in [`super::deletion`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::finalizers;
use super::job::{self, JobRequest};
use super::location::{self, SCHEDULED_TIME_ANNOTATION};
use super::lock;
use super::metrics::{RunLabels, ScheduleLabels};
use super::notify::{self, BackupNews};
use super::references::{self, Problem};
use super::status::{self, set_condition};
use super::workers::{self, Created, Found, JobState};
use crate::api::{
    Backup, BackupPhase, BackupSchedule, BackupStatus, JobTemplate, ResolvedRun, SourceKind,
};
use crate::storage::manifest::BackupOwner;
use crate::worker::Plan;
use crate::worker::plan::{BackupPlan, InspectPlan};
use crate::worker::{Failure, Summary};

pub use super::deletion::FINALIZER;

/// How often a Backup waiting for something outside the controller's watch is looked at.
const RECHECK: Duration = Duration::from_secs(15);
/// How long a Backup whose worker Job the API server refused waits before trying again.
const REFUSED_BACKOFF: Duration = Duration::from_secs(30);

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
        Some(SourceKind::MySql) => "mysql",
        Some(SourceKind::Volume) => "volume",
        None => "unknown",
    }
}

/// The schedule a Backup belongs to, or empty.
pub fn schedule_name(backup: &Backup) -> String {
    backup
        .spec
        .schedule_ref
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_default()
}

/// The folder name below the namespace: the schedule's name, or the Backup's own.
fn group(backup: &Backup) -> String {
    let schedule = schedule_name(backup);
    if schedule.is_empty() {
        backup.name_any()
    } else {
        schedule
    }
}

/// When a finished Backup with a `ttl` is to be deleted: that long after it finished (after
/// it was created, if the time it finished is not recorded). None without a valid `ttl`.
pub fn expires_at(backup: &Backup, status: &BackupStatus) -> Option<DateTime<Utc>> {
    let ttl = crate::freshness::parse_age(backup.spec.ttl.as_deref()?).ok()?;
    let finished = status
        .completion_time
        .as_ref()
        .or(backup.metadata.creation_timestamp.as_ref())
        .map(status::chrono)?;
    Some(finished + ttl)
}

/// The Backup's UID: what tells it from an earlier object of the same name.
pub fn uid(backup: &Backup) -> Result<String, Error> {
    backup.uid().ok_or_else(|| Error::NoUid(backup.name_any()))
}

/// What a Backup runs with, from itself or, where it has nothing of its own, its schedule as
/// it is now. Called once per run: the result is recorded in `status.resolved`.
pub async fn resolve(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
) -> Result<Result<ResolvedRun, Problem>, Error> {
    let spec = &backup.spec;
    let folder = location::folder(namespace, &group(backup), run_time(backup), &uid(backup)?);
    if let (Some(source), Some(storage)) = (&spec.source, &spec.storage) {
        return Ok(Ok(ResolvedRun {
            source: source.clone(),
            storage: storage.clone(),
            compression: spec.compression.unwrap_or_default(),
            encryption: spec.encryption.clone(),
            folder,
            copies: Vec::new(),
            lock: lock::record(storage, None, run_time(backup).max(Utc::now())),
        }));
    }
    let schedule = schedule_name(backup);
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(found) = api.get_opt(&schedule).await? else {
        return Ok(Err(Problem {
            reason: "ScheduleNotFound",
            message: format!(
                "BackupSchedule {namespace}/{schedule} does not exist: create it, or give source and storage"
            ),
        }));
    };
    Ok(Ok(ResolvedRun {
        source: found.spec.source.clone(),
        storage: found.spec.storage.clone(),
        compression: spec.compression.unwrap_or(found.spec.compression),
        encryption: spec.encryption.clone().or(found.spec.encryption),
        folder,
        // From when it is written (a run caught up late is not locked until a date past).
        lock: lock::record(
            &found.spec.storage,
            found.spec.retention.as_ref(),
            run_time(backup).max(Utc::now()),
        ),
        copies: found.spec.copies,
    }))
}

/// What a finished or running Backup ran with: its record in `status.resolved`. A Backup made
/// by a version before that record existed is resolved as it is now, with the folder its
/// `status.location` names; if that location is not in the store it resolves to now (the
/// schedule's bucket or prefix changed), the run cannot be found and the problem says what
/// to do.
pub async fn recorded_run(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
) -> Result<Result<ResolvedRun, Problem>, Error> {
    let status = backup.status.clone().unwrap_or_default();
    if let Some(run) = status.resolved {
        return Ok(Ok(run));
    }
    let mut run = match resolve(ctx, namespace, backup).await? {
        Ok(run) => run,
        Err(problem) => return Ok(Err(problem)),
    };
    let Some(recorded) = status.location else {
        return Ok(Ok(run));
    };
    // A run of a version before the record existed, which predates encryption too: whatever
    // its schedule says now, its data is not encrypted.
    run.encryption = None;
    match location::folder_in(&run.storage, &recorded) {
        Some(folder) => {
            run.folder = folder;
            Ok(Ok(run))
        }
        None => Ok(Err(Problem {
            reason: "StorageChanged",
            message: format!(
                "Backup {namespace}/{} was made by an earlier Coffer version and its data at {recorded} is not in the store its schedule names now ({}): restore with from: {{storage, location}}, or delete the data with `coffer delete {recorded}`",
                backup.name_any(),
                location::display(&run.storage, "")
            ),
        })),
    }
}

/// The Notifiers a Backup tells: its own, else (when it takes its settings from its
/// schedule) the schedule's.
pub async fn notifiers(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
) -> Result<Vec<crate::api::NotifierReference>, Error> {
    if !backup.spec.notify.is_empty() || backup.spec.source.is_some() {
        return Ok(backup.spec.notify.clone());
    }
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api
        .get_opt(&schedule_name(backup))
        .await?
        .map(|s| s.spec.notify)
        .unwrap_or_default())
}

/// Records the deliveries `news` calls for in `status` (they are sent once the status is
/// written); a Notifier that does not exist is recorded as a failed delivery, with an Event.
async fn plan_notifications(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
    status: &mut BackupStatus,
    news: BackupNews,
) -> Result<(), Error> {
    let refs = notifiers(ctx, namespace, backup).await?;
    if refs.is_empty() {
        return Ok(());
    }
    let wants = notify::lookup(ctx, namespace, &refs).await?;
    for delivery in notify::plan(news, &wants) {
        if status.notifications.iter().any(|d| d.id == delivery.id) {
            continue;
        }
        if let Some(problem) = delivery.message.as_deref() {
            ctx.event(backup, true, "NotificationFailed", problem).await;
        }
        status.notifications.push(delivery);
    }
    notify::mark(
        &mut status.conditions,
        &status.notifications,
        backup.metadata.generation,
    );
    Ok(())
}

/// The worker Job settings: the Backup's own, else its schedule's.
pub async fn job_template(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
) -> Result<Option<JobTemplate>, Error> {
    if backup.spec.job_template.is_some() || backup.spec.schedule_ref.is_none() {
        return Ok(backup.spec.job_template.clone());
    }
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api
        .get_opt(&schedule_name(backup))
        .await?
        .and_then(|s| s.spec.job_template))
}

pub async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (name, namespace, api) = ctx.scope(backup.as_ref())?;
    let old = backup.status.clone();
    let mut status = old.clone().unwrap_or_default();
    if backup.metadata.deletion_timestamp.is_some() {
        // What is due goes out before the finalizer lets the Backup go (retention may delete
        // a failed run at once); what waits for a retry is given up.
        if notify::due(&status.notifications, ctx.settings.notify_retry)
            && notify::deliver(&ctx, backup.as_ref()).await?.wrote
        {
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        return super::deletion::finalize(&backup, &ctx, &namespace, &api).await;
    }
    // Notifications recorded by an earlier reconcile go out first, each on its own write.
    let delivered = if notify::outstanding(&status.notifications) {
        notify::deliver(&ctx, backup.as_ref()).await?
    } else {
        notify::Delivered::default()
    };
    if delivered.wrote {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    if status.phase == Some(BackupPhase::Succeeded)
        && let Some(lock) = super::relock::pending(&status)
    {
        return super::relock::reconcile(&ctx, &api, &backup, &namespace, old.as_ref(), lock).await;
    }
    if status.phase == Some(BackupPhase::Succeeded) && super::copies::outstanding(&status) {
        return super::copies::reconcile(
            &ctx,
            &api,
            &backup,
            &namespace,
            old.as_ref(),
            delivered.wake,
        )
        .await;
    }
    if status.phase == Some(BackupPhase::Succeeded)
        && let Some(wanted) = super::drill::pending(&status)
    {
        return super::drill::reconcile(&ctx, &api, &backup, &namespace, old.as_ref(), wanted)
            .await;
    }
    if matches!(
        status.phase,
        Some(BackupPhase::Succeeded | BackupPhase::Failed)
    ) {
        let mut wake = delivered.wake;
        if let Some(at) = expires_at(&backup, &status) {
            let left = at - Utc::now();
            if left <= chrono::TimeDelta::zero() {
                ctx.event(
                    backup.as_ref(),
                    false,
                    "Expired",
                    format!(
                        "deleting Backup {name}: its ttl of {} has passed",
                        backup.spec.ttl.as_deref().unwrap_or_default()
                    ),
                )
                .await;
                match api.delete(&name, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok(Action::await_change());
            }
            let left = left.to_std().unwrap_or(RECHECK);
            wake = Some(wake.map_or(left, |w| w.min(left)));
        }
        return Ok(wake.map_or_else(Action::await_change, Action::requeue));
    }
    if !finalizers::has(backup.as_ref(), FINALIZER) {
        finalizers::add(&api, backup.as_ref(), FINALIZER).await?;
        return Ok(Action::await_change());
    }
    let uid = uid(&backup)?;
    status.observed_generation = backup.metadata.generation;
    let run = match recorded_run(&ctx, &namespace, &backup).await? {
        Ok(run) => run,
        Err(problem) => return wait(&ctx, &api, &backup, old.as_ref(), status, problem).await,
    };
    status.source_kind = run.source.kind();
    status.location = Some(location::display(&run.storage, &run.folder));
    let run_ctx = Run {
        ctx: &ctx,
        api: &api,
        backup: &backup,
        namespace: &namespace,
        uid: &uid,
        old: old.as_ref(),
    };
    let job_name = job::job_name(&name, "backup");
    let job = match workers::find(&ctx, &namespace, &job_name, &uid).await? {
        // The Job exists but this read does not say the run started: the read predates
        // the start's record (a lagging watch), or the operator stopped between creating the
        // Job and recording it. A stale read must not write (it would erase the record);
        // a current one records the start now, so that it is told and never repeated.
        Found::Mine(job) if status.job_name.is_none() => {
            let fresh = api.get(&name).await?;
            if fresh.resource_version() != backup.resource_version() {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            status.resolved.get_or_insert_with(|| run.clone());
            let created = job.metadata.creation_timestamp.as_ref();
            let started = created.map_or_else(Utc::now, status::chrono);
            run_ctx
                .record_start(&mut status, &job_name, started, true)
                .await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        Found::Mine(job) => *job,
        Found::Foreign(job) => {
            workers::clear_foreign(&ctx, &namespace, &job).await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        Found::None if status.job_name.is_some() => {
            let lost = Summary::failed(
                Failure::WorkerVanished,
                format!(
                    "the result of worker Job {} was lost before it was read (the Job or its Pod is gone)",
                    status.job_name.as_deref().unwrap_or_default()
                ),
            );
            return run_ctx.recover(status, &run, lost).await;
        }
        Found::None => {
            // Only from the newest version: a read from before the start was recorded would
            // start the run again (after its Job vanished, a second run instead of a verdict).
            let fresh = api.get(&name).await?;
            if fresh.resource_version() != backup.resource_version() {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            return match run_ctx.start(&mut status, &run, &job_name).await? {
                // Its state is read by the next reconcile, which the Job's creation wakes:
                // every write there is then the first of its reconcile.
                Ok(_) => Ok(Action::requeue(Duration::from_secs(1))),
                Err(action) => Ok(action),
            };
        }
    };
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
                backup.metadata.generation,
            );
            // A copy read before the latest write must not undo it: with notifications
            // recorded, only the newest copy writes.
            if status.notifications.is_empty() {
                status::apply(&api, backup.as_ref(), old.as_ref(), &status).await?;
            } else {
                status::apply_fresh(&api, backup.as_ref(), old.as_ref(), &status).await?;
            }
            // Job changes wake this Backup; a Pod stuck before it starts does not.
            Ok(Action::requeue(RECHECK))
        }
        // The result is lost with the worker's Pod, or the worker was killed before it could
        // report (perhaps after its manifest was written): storage says whether the backup is
        // there.
        JobState::Finished(summary) if judged_by_storage(&summary) => {
            run_ctx.recover(status, &run, *summary).await
        }
        JobState::Finished(summary) => run_ctx.finish(status, &run, *summary).await,
    }
}

/// Whether a finished backup's outcome must be read from storage: the worker left no
/// verdict of its own (killed, crashed, stopped by its deadline, its Pod gone), or it was
/// told to stop (SIGTERM), which can land after the store took its manifest but before the
/// worker heard so.
fn judged_by_storage(summary: &Summary) -> bool {
    summary.failure.is_some()
        && (summary.unreported || summary.failure == Some(Failure::Interrupted))
}

/// One reconcile of a running Backup.
struct Run<'a> {
    ctx: &'a Context,
    api: &'a Api<Backup>,
    backup: &'a Backup,
    namespace: &'a str,
    uid: &'a str,
    old: Option<&'a BackupStatus>,
}

impl Run<'_> {
    /// Records what the run resolved, then creates its worker Job: `Err(action)` when the
    /// run cannot start yet.
    async fn start(
        &self,
        status: &mut BackupStatus,
        run: &ResolvedRun,
        job_name: &str,
    ) -> Result<Result<k8s_openapi::api::batch::v1::Job, Action>, Error> {
        let (ctx, namespace, backup) = (self.ctx, self.namespace, self.backup);
        if let Some(problem) = references::check(ctx, namespace, &run.source, &run.storage).await? {
            let status = status.clone();
            return Ok(Err(
                wait(ctx, self.api, backup, self.old, status, problem).await?
            ));
        }
        references::ensure_worker_account(ctx, namespace).await?;
        // The record comes first: whatever happens to the schedule later, deleting or
        // restoring this Backup uses the store and folder it was written to.
        if status.resolved.is_none() {
            status.resolved = Some(run.clone());
            status.phase = Some(BackupPhase::Pending);
            status::apply(self.api, backup, self.old, status).await?;
        }
        let name = backup.name_any();
        let plan = Plan::Backup(BackupPlan {
            source: run.source.clone(),
            storage: run.storage.clone(),
            folder: run.folder.clone(),
            name: group(backup),
            compression: run.compression,
            encryption: run.encryption.clone(),
            lock: run.lock.clone(),
            owner: Some(BackupOwner {
                kind: "Backup".to_owned(),
                namespace: namespace.to_owned(),
                name: name.clone(),
                uid: self.uid.to_owned(),
            }),
        });
        let job = match self.create_job(job_name, &plan).await? {
            Created::Job(job) => *job,
            Created::Refused { message, .. } => {
                let problem = Problem {
                    reason: "JobRefused",
                    message: format!("{message}; retrying in {}s", REFUSED_BACKOFF.as_secs()),
                };
                let status = status.clone();
                wait(ctx, self.api, backup, self.old, status, problem).await?;
                return Ok(Err(Action::requeue(REFUSED_BACKOFF)));
            }
        };
        self.record_start(status, job_name, Utc::now(), false)
            .await?;
        Ok(Ok(job))
    }

    /// Records that the run's worker Job exists: its name, the start time, the `Started`
    /// notifications and Event. From here on, a Job that vanishes is never replaced by a
    /// second run. `fresh`: write only if the Backup is still as this reconcile read it.
    async fn record_start(
        &self,
        status: &mut BackupStatus,
        job_name: &str,
        started: DateTime<Utc>,
        fresh: bool,
    ) -> Result<(), Error> {
        let (ctx, namespace, backup) = (self.ctx, self.namespace, self.backup);
        status.job_name = Some(job_name.to_owned());
        status.phase = Some(BackupPhase::Running);
        status.start_time = Some(status::time(started));
        plan_notifications(ctx, namespace, backup, status, BackupNews::Started).await?;
        if fresh {
            status::apply_fresh(self.api, backup, self.old, status).await?;
        } else {
            status::apply(self.api, backup, self.old, status).await?;
        }
        ctx.event(
            backup,
            false,
            "Started",
            format!(
                "worker Job {job_name} backs up to {}",
                status.location.as_deref().unwrap_or_default()
            ),
        )
        .await;
        Ok(())
    }

    /// Creates a worker Job of this Backup (owned by it, labelled with its UID).
    async fn create_job(&self, job_name: &str, plan: &Plan) -> Result<Created, Error> {
        let (ctx, namespace, backup) = (self.ctx, self.namespace, self.backup);
        let template = job_template(ctx, namespace, backup).await?;
        let built = job::build(
            &JobRequest {
                name: job_name.to_owned(),
                namespace,
                owner: backup.controller_owner_ref(&()),
                owner_name: backup.name_any(),
                owner_uid: self.uid.to_owned(),
                plan,
                template: template.as_ref(),
            },
            &ctx.settings.worker,
        )?;
        workers::create(ctx, namespace, &built).await
    }

    /// The backup Job's result was lost before it was read (the Job or its Pod deleted by
    /// hand, or its TTL ran out while the operator was down), or its worker was killed before
    /// it reported (`lost` says which): the run is judged by what is in storage. An
    /// inspection Job reads the folder's manifest; one that names this Backup means the
    /// backup succeeded; anything else fails the run with `lost`'s category.
    async fn recover(
        &self,
        status: BackupStatus,
        run: &ResolvedRun,
        lost: Summary,
    ) -> Result<Action, Error> {
        let (ctx, namespace, backup) = (self.ctx, self.namespace, self.backup);
        let name = backup.name_any();
        let job_name = job::job_name(&name, "inspect");
        let category = lost.failure;
        let vanished = lost.message;
        // Until the storage can say, the Backup says why it waits; nothing here is a verdict.
        let lost = vanished.clone();
        let waiting = |mut status: BackupStatus, why: String| async move {
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                "Recovering",
                &format!("{lost}; {why}"),
                backup.metadata.generation,
            );
            status::apply(self.api, backup, self.old, &status).await?;
            Ok::<_, Error>(Action::requeue(Duration::from_secs(10)))
        };
        // A worker orphaned from its Job may still be writing: the verdict waits for it.
        let worker = job::job_name(&name, "backup");
        if workers::pods_left(ctx, namespace, &worker).await? > 0 {
            return waiting(status, "waiting for the worker's Pod to end".to_owned()).await;
        }
        let job = match workers::find(ctx, namespace, &job_name, self.uid).await? {
            Found::Mine(job) => *job,
            Found::Foreign(job) => {
                workers::clear_foreign(ctx, namespace, &job).await?;
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            Found::None => {
                if let Some(problem) =
                    references::check_storage(ctx, namespace, &run.storage).await?
                {
                    let why = format!("storage cannot be checked yet: {}", problem.message);
                    return waiting(status, why).await;
                }
                let plan = Plan::Inspect(InspectPlan {
                    storage: run.storage.clone(),
                    folder: run.folder.clone(),
                    owner_uid: self.uid.to_owned(),
                });
                match self.create_job(&job_name, &plan).await? {
                    Created::Job(job) => *job,
                    Created::Refused { message, .. } => {
                        let why = format!("storage cannot be checked yet: {message}");
                        return waiting(status, why).await;
                    }
                }
            }
        };
        match workers::observe(ctx, namespace, &job).await? {
            JobState::Running { waiting: stuck } => {
                let why = format!(
                    "checking storage for this run's manifest{}",
                    stuck.map(|w| format!(": {w}")).unwrap_or_default()
                );
                waiting(status, why).await
            }
            JobState::Finished(summary) => {
                let mut summary = *summary;
                match summary.failure {
                    None => {
                        summary.message = format!(
                            "{vanished}; storage holds its manifest: {}",
                            summary.message
                        );
                    }
                    // A verdict: no manifest, one of another run, or one that is damaged.
                    Some(
                        Failure::BackupNotFound
                        | Failure::NotOwned
                        | Failure::IntegrityCheckFailed
                        | Failure::EncryptionKeyError,
                    ) if !summary.unreported => {
                        summary.failure = category;
                        summary.message = format!("{vanished}: {}", summary.message);
                    }
                    // The store could not answer, or the inspection itself did not finish
                    // (killed, its deadline, a worker too old for it): look again later,
                    // never a verdict.
                    Some(_) => {
                        workers::delete(ctx, namespace, &job_name).await?;
                        let why = format!(
                            "storage could not be read ({}); trying again",
                            summary.message
                        );
                        return waiting(status, why).await;
                    }
                }
                let action = self.finish(status, run, summary).await?;
                // The verdict is recorded: the inspection has nothing more to say.
                workers::delete(ctx, namespace, &job_name).await?;
                Ok(action)
            }
        }
    }

    /// The status of the schedule this Backup is a run of, when it has one and notifies.
    async fn schedule_status(
        &self,
        backup: &Backup,
    ) -> Result<Option<crate::api::BackupScheduleStatus>, Error> {
        let schedule = schedule_name(backup);
        if schedule.is_empty()
            || notifiers(self.ctx, self.namespace, backup)
                .await?
                .is_empty()
        {
            return Ok(None);
        }
        let api: Api<BackupSchedule> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        Ok(api.get_opt(&schedule).await?.and_then(|s| s.status))
    }

    /// The worker finished: the Backup's final status, an Event and metrics.
    async fn finish(
        &self,
        mut status: BackupStatus,
        run: &ResolvedRun,
        mut summary: Summary,
    ) -> Result<Action, Error> {
        let backup = self.backup;
        if summary.failure.is_none() && run.encryption.is_some() && !summary.encrypted {
            // A worker that ignored the setting (one older than the CRD): never a good backup.
            summary.failure = Some(Failure::EncryptionKeyError);
            summary.message = format!(
                "the backup was stored without encryption although its settings ask for it (a worker older than the CRD?): it is not a good backup; delete this Backup and upgrade Coffer; {}",
                summary.message
            );
        }
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
            status.encrypted = Some(summary.encrypted);
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
        // The notifications go in the same write as the verdict: both or neither.
        let schedule = self.schedule_status(backup).await?;
        let after_failure = notify::previous_run_failed(
            self.ctx,
            self.namespace,
            backup,
            completed,
            schedule.as_ref(),
        );
        let news = if succeeded {
            BackupNews::Succeeded { after_failure }
        } else {
            BackupNews::Failed {
                again: after_failure,
            }
        };
        plan_notifications(self.ctx, self.namespace, backup, &mut status, news).await?;
        status::apply_fresh(self.api, backup, self.old, &status).await?;
        let first = self.old.and_then(|s| s.phase) != status.phase;
        if !first {
            return Ok(Action::await_change());
        }
        let ctx = self.ctx;
        ctx.event(
            backup,
            !succeeded,
            if succeeded { "Succeeded" } else { "Failed" },
            format!("{reason}: {}", summary.message),
        )
        .await;
        let source_kind = kind_word(run.source.kind()).to_owned();
        let schedule = schedule_name(backup);
        ctx.metrics
            .backups
            .get_or_create(&RunLabels {
                namespace: self.namespace.to_owned(),
                schedule: schedule.clone(),
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
                namespace: self.namespace.to_owned(),
                schedule,
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
        Ok(Action::await_change())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn backup(ttl: Option<&str>, created: &str) -> Backup {
        let mut b: Backup = serde_json::from_value(serde_json::json!({
            "apiVersion": "coffer.dev/v1alpha1", "kind": "Backup",
            "metadata": {"name": "b", "creationTimestamp": created},
            "spec": {"scheduleRef": {"name": "s"}}
        }))
        .unwrap();
        b.spec.ttl = ttl.map(str::to_owned);
        b
    }

    #[test]
    fn a_ttl_counts_from_when_the_backup_finished() {
        let finished = BackupStatus {
            completion_time: Some(status::time(
                "2026-12-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap(),
            )),
            ..Default::default()
        };
        let b = backup(Some("7d"), "2026-11-01T00:00:00Z");
        assert_eq!(
            expires_at(&b, &finished).unwrap().to_rfc3339(),
            "2026-12-08T10:00:00+00:00"
        );
        // Without a completion time: from its creation.
        assert_eq!(
            expires_at(&b, &BackupStatus::default())
                .unwrap()
                .to_rfc3339(),
            "2026-11-08T00:00:00+00:00"
        );
        assert_eq!(
            expires_at(&backup(None, "2026-11-01T00:00:00Z"), &finished),
            None
        );
        assert_eq!(
            expires_at(&backup(Some("90m"), "2026-11-01T00:00:00Z"), &finished)
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T11:30:00+00:00"
        );
    }
}
