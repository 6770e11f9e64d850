//! The RestoreRequest reconciler, a small state machine kept in `status.phase`:
//! Pending (resolve the backup, record the workloads' replicas) → Quiescing (scale them to
//! zero and wait for their Pods to go) → BackingUp (a restore that overwrites or drops data
//! first takes a safety backup of the target, see [`super::safety`]) → Running (the restore
//! Job) → Resuming (scale them back to the recorded replicas, whether the restore worked or
//! not) → Succeeded or Failed.
//! Every step is idempotent, so a restarted controller carries on where it stopped.
//!
//! A restore that stops workloads holds its request with a finalizer until they are started
//! again: a request deleted on the way stops its worker, waits until the worker's Pods are
//! gone, scales the workloads back, and only then goes (see [`Step::withdrawn`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::backup::{self, kind_word};
use super::context::Context;
use super::error::Error;
use super::finalizers;
use super::job::{self, JobRequest, OWNER_UID_LABEL};
use super::location;
use super::metrics::RunLabels;
use super::notify;
use super::references::{self, Problem};
use super::safety;
use super::status::{self, MANAGER, set_condition};
use super::workers::{self, Created, Found, JobState};
use crate::api::{
    Backup, BackupPhase, BackupSource, BackupStorage, CopyPhase, NotifierReference, NotifyEvent,
    QuiescedWorkload, RestorePhase, RestoreRequest, RestoreRequestStatus, WorkloadKind,
};
use crate::worker::Plan;
use crate::worker::plan::{CopyStore, RestorePlan};
use crate::worker::{Failure, Summary};

/// What a restore that ended without its result tells the user to do.
const PARTLY_RUN: &str = "the restore may have run in part and is not run again: check the target, then create a new RestoreRequest if needed";

/// The condition that records the restore's own result while the workloads are resumed.
const RESTORED: &str = "Restored";
/// The reason of a dry run's result: nothing was restored, and the preview worked.
const DRY_RUN: &str = "DryRun";
const POLL: Duration = Duration::from_secs(2);
/// How long the quiesced workloads' Pods may take to stop before the restore gives up (and
/// scales them back) instead of waiting for ever with the app down.
const QUIESCE_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// The finalizer that keeps a RestoreRequest until the workloads it stopped are scaled back.
pub const RESUME_FINALIZER: &str = "coffer.dev/resume-workloads";
/// How long a deleted request waits for its worker's Pods to go (a Pod on a node that died
/// never reports its end) before it scales the workloads back all the same.
const WORKER_STOP_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// What to restore, from where, into what.
struct Resolved {
    storage: BackupStorage,
    folder: String,
    latest: bool,
    target: BackupSource,
    /// The manifest's SHA-256 recorded by the Backup (none for a restore from storage).
    manifest_sha256: Option<String>,
    /// The Backup's complete copies, tried in this order when its data is missing or damaged.
    fallbacks: Vec<CopyStore>,
    /// The copy read instead of the Backup's own store (`spec.fromCopy`).
    from_copy: Option<String>,
    /// The settings of the restored Backup, when the target is its own source: a safety
    /// backup of the target is taken with them.
    own_backup: Option<safety::Settings>,
}

/// A Backup of the safety backup's name exists and is not this request's.
fn conflict(name: &str) -> Problem {
    Problem {
        reason: "SafetyBackupConflict",
        message: format!(
            "Backup {name} exists and was not taken for this RestoreRequest, so it is not its safety backup; nothing was restored: delete that Backup, or set safetyBackup: false in a new RestoreRequest"
        ),
    }
}

/// Either wait (the backup is not there yet) or fail (it never will be).
enum Unresolved {
    Wait(Problem),
    Fail(Problem),
}

pub async fn reconcile(request: Arc<RestoreRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (_, namespace, api) = ctx.scope(request.as_ref())?;
    let old = request.status.clone();
    let mut status = old.clone().unwrap_or_default();
    status.observed_generation = request.metadata.generation;
    let step = Step {
        ctx: &ctx,
        api: &api,
        request: &request,
        namespace: &namespace,
        old: old.as_ref(),
    };
    if request.metadata.deletion_timestamp.is_some() {
        return step.withdrawn(&status).await;
    }
    if matches!(
        status.phase,
        Some(RestorePhase::Succeeded | RestorePhase::Failed)
    ) {
        // The workloads were given back: nothing holds the request any more.
        if finalizers::has(request.as_ref(), RESUME_FINALIZER) {
            finalizers::remove(&api, request.as_ref(), RESUME_FINALIZER).await?;
            return Ok(Action::await_change());
        }
        // Its result's notifications, recorded with the result, go out, each on its own
        // write (its finalizer is gone by now: deleting it early gives them up).
        if !notify::outstanding(&status.notifications) {
            return Ok(Action::await_change());
        }
        let delivered = notify::deliver(&ctx, request.as_ref()).await?;
        if delivered.wrote {
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        return Ok(delivered
            .wake
            .map_or_else(Action::await_change, Action::requeue));
    }
    // A restore acts only on the version the server holds: a reconcile that read a watch
    // lagging behind this restore's own later writes would otherwise start a finished
    // restore again (writing Quiescing over Succeeded), or stop an app that was already
    // given back, with nothing left to scale it back.
    if !step.current().await? {
        tracing::debug!(%namespace, restore = %request.name_any(), "read an older version than the server's; looking again");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // A request that stopped workloads before this finalizer existed (an upgrade) gets it.
    if !status.quiesced.is_empty() && !finalizers::has(request.as_ref(), RESUME_FINALIZER) {
        finalizers::add(&api, request.as_ref(), RESUME_FINALIZER).await?;
        return Ok(Action::await_change());
    }
    match status.phase {
        Some(RestorePhase::Succeeded | RestorePhase::Failed) => Ok(Action::await_change()),
        None | Some(RestorePhase::Pending) => step.start(status).await,
        Some(RestorePhase::Quiescing) => step.quiesce(status).await,
        Some(RestorePhase::BackingUp) => step.safety_backup(status).await,
        Some(RestorePhase::Running) => step.run(status).await,
        Some(RestorePhase::Resuming) => step.resume(status).await,
    }
}

struct Step<'a> {
    ctx: &'a Context,
    api: &'a Api<RestoreRequest>,
    request: &'a RestoreRequest,
    namespace: &'a str,
    old: Option<&'a RestoreRequestStatus>,
}

impl Step<'_> {
    async fn save(&self, status: &RestoreRequestStatus) -> Result<(), Error> {
        status::apply(self.api, self.request, self.old, status).await
    }

    fn generation(&self) -> Option<i64> {
        self.request.metadata.generation
    }

    async fn start(&self, mut status: RestoreRequestStatus) -> Result<Action, Error> {
        let resolved = match self.resolve().await? {
            Ok(resolved) => resolved,
            Err(Unresolved::Wait(problem)) => return self.wait(status, problem).await,
            Err(Unresolved::Fail(problem)) => {
                return self.failed(status, problem.reason, &problem.message).await;
            }
        };
        if let Some(problem) = references::check(
            self.ctx,
            self.namespace,
            &resolved.target,
            &resolved.storage,
        )
        .await?
        {
            return self.wait(status, problem).await;
        }
        if let Some(decryption) = &self.request.spec.decryption
            && let Some(problem) = references::check_secret(
                self.ctx,
                self.namespace,
                &decryption.identity_secret_ref.name,
            )
            .await?
        {
            return self.wait(status, problem).await;
        }
        // Decided before anything is touched: whether the target can be backed up first.
        if let Err(problem) = self.check_safety(&resolved).await? {
            return self.failed(status, problem.reason, &problem.message).await;
        }
        status.location = Some(location::display(&resolved.storage, &resolved.folder));
        status.restored_from_copy = resolved.from_copy.clone();
        status.start_time = Some(status::time(Utc::now()));
        // Record every workload's replicas before touching any, so that a restart in the
        // middle still knows what to scale back to.
        let mut quiesced = Vec::new();
        // A dry run checks what a restore would do before its worker, and says it in its
        // preview (the worker's lines follow): the workloads go on.
        let dry_run = self.request.spec.dry_run;
        let mut preview = Vec::new();
        for target in &self.request.spec.quiesce {
            match self.replicas(target.kind, &target.name).await? {
                Some(replicas) if dry_run => preview.push(format!(
                    "would stop {:?} {} ({replicas} replicas) during the restore, and start it again",
                    target.kind, target.name
                )),
                Some(replicas) => quiesced.push(QuiescedWorkload {
                    kind: target.kind,
                    name: target.name.clone(),
                    replicas,
                }),
                None => {
                    return self
                        .failed(
                            status,
                            "WorkloadNotFound",
                            &format!(
                                "{:?} {}/{} does not exist: fix spec.quiesce and create a new RestoreRequest",
                                target.kind, self.namespace, target.name
                            ),
                        )
                        .await;
                }
            }
        }
        if dry_run && let Some(why) = safety::wanted(&self.request.spec, resolved.target.kind()) {
            preview.push(format!(
                "would take a safety backup of the target first ({why})"
            ));
        }
        // From here until they are scaled back, deleting the request does not leave the
        // workloads stopped.
        if !quiesced.is_empty() {
            finalizers::add(self.api, self.request, RESUME_FINALIZER).await?;
        }
        status.preview = preview;
        status.quiesced = quiesced;
        status.phase = Some(if !status.quiesced.is_empty() {
            RestorePhase::Quiescing
        } else if self.takes_safety_backup(&resolved) {
            RestorePhase::BackingUp
        } else {
            RestorePhase::Running
        });
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            "InProgress",
            "the restore has started",
            self.generation(),
        );
        self.save(&status).await?;
        self.ctx
            .event(
                self.request,
                false,
                "Started",
                format!(
                    "{} {}",
                    if self.request.spec.dry_run {
                        "previewing a restore of"
                    } else {
                        "restoring"
                    },
                    status.location.as_deref().unwrap_or_default()
                ),
            )
            .await;
        Ok(Action::requeue(Duration::ZERO))
    }

    /// Nothing has been touched yet and something is missing: stay Pending, look again.
    async fn wait(
        &self,
        mut status: RestoreRequestStatus,
        problem: Problem,
    ) -> Result<Action, Error> {
        status.phase = Some(RestorePhase::Pending);
        problem.mark_not_ready(&mut status.conditions, self.generation());
        self.save(&status).await?;
        Ok(Action::requeue(Duration::from_secs(10)))
    }

    async fn quiesce(&self, mut status: RestoreRequestStatus) -> Result<Action, Error> {
        let mut remaining = 0;
        for workload in &status.quiesced {
            match self.scale(workload.kind, &workload.name, 0).await? {
                Some(selector) => remaining += self.pods(&selector).await?,
                None => {
                    let message = format!(
                        "{:?} {} disappeared while it was being stopped",
                        workload.kind, workload.name
                    );
                    return self.failed(status, "WorkloadNotFound", &message).await;
                }
            }
        }
        if remaining > 0 {
            let waited = status
                .start_time
                .as_ref()
                .map_or(chrono::TimeDelta::zero(), |t| {
                    Utc::now() - status::chrono(t)
                });
            if waited > QUIESCE_TIMEOUT {
                let message = format!(
                    "{remaining} Pod(s) of the quiesced workloads were still running after {}s: nothing was restored; find out what keeps them (kubectl get pods), then create a new RestoreRequest",
                    waited.num_seconds()
                );
                return self.failed(status, "QuiesceTimeout", &message).await;
            }
            return Ok(Action::requeue(POLL));
        }
        // Whether a safety backup comes first (decided again, as when the restore started).
        let backing_up = match self.resolve().await? {
            Ok(resolved) => self.takes_safety_backup(&resolved),
            Err(Unresolved::Wait(p) | Unresolved::Fail(p)) => {
                return self.failed(status, p.reason, &p.message).await;
            }
        };
        status.phase = Some(if backing_up {
            RestorePhase::BackingUp
        } else {
            RestorePhase::Running
        });
        self.save(&status).await?;
        Ok(Action::requeue(Duration::ZERO))
    }

    /// Whether the restore takes a safety backup of its target first.
    fn takes_safety_backup(&self, resolved: &Resolved) -> bool {
        // A dry run checks that it could (`check_safety`), and says so.
        !self.request.spec.dry_run
            && safety::wanted(&self.request.spec, resolved.target.kind()).is_some()
    }

    /// The settings of a backup of the target, for its safety backup: those of a
    /// BackupSchedule whose source is the target, as they are now (its current store and
    /// recipients), else the restored Backup's when the target is its own source. Never a
    /// store the request names (see [`safety`]).
    async fn safety_settings(
        &self,
        resolved: &Resolved,
    ) -> Result<Option<safety::Settings>, Error> {
        let schedules: Api<crate::api::BackupSchedule> =
            Api::namespaced(self.ctx.client.clone(), self.namespace);
        // Every backup of the target's server, the schedules' as they are now first.
        let mut candidates: Vec<safety::Settings> = schedules
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|s| safety::same_server(&s.spec.source, &resolved.target))
            .map(|s| safety::Settings {
                target: s.spec.source,
                storage: s.spec.storage,
                compression: s.spec.compression,
                encryption: s.spec.encryption,
                job_template: s.spec.job_template,
            })
            .collect();
        candidates.extend(resolved.own_backup.clone());
        // One that reads the target as the request names it (the same credentials), else
        // one of the same server with its own credentials (a restore as an administrator
        // into a server an application user backs up).
        let exact = candidates.iter().position(|c| c.target == resolved.target);
        Ok(match exact {
            Some(i) => Some(candidates.swap_remove(i)),
            None => candidates.into_iter().next(),
        })
    }

    /// Before anything is touched: a restore that takes a safety backup can take it (a backup
    /// of the target exists to take its settings from; the Backup would be admitted; its name
    /// is free).
    async fn check_safety(&self, resolved: &Resolved) -> Result<Result<(), Problem>, Error> {
        let Some(why) = safety::wanted(&self.request.spec, resolved.target.kind()) else {
            return Ok(Ok(()));
        };
        let Some(settings) = self.safety_settings(resolved).await? else {
            return Ok(Err(Problem {
                reason: "SafetyBackupImpossible",
                message: format!(
                    "this restore overwrites data in its target ({why}), and nothing backs that target up (it is neither the restored Backup's source nor a BackupSchedule's in this namespace), so there is no store and encryption its safety backup may use: back the target up with a schedule first, or set safetyBackup: false in a new RestoreRequest; nothing was touched"
                ),
            }));
        };
        // Its Secrets and claims exist (else it would wait, with the app stopped).
        if let Some(problem) = references::check(
            self.ctx,
            self.namespace,
            &settings.target,
            &settings.storage,
        )
        .await?
        {
            return Ok(Err(Problem {
                reason: "SafetyBackupFailed",
                message: format!(
                    "the safety backup of the target cannot be taken ({}): fix it, or set safetyBackup: false in a new RestoreRequest; nothing was touched",
                    problem.message
                ),
            }));
        }
        let (backup, name) = self.safety_backup_object(settings.clone())?;
        let backups: Api<Backup> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        if let Some(existing) = backups.get_opt(&name).await? {
            if !safety::belongs_to(&existing, &self.uid()?, &settings) {
                return Ok(Err(conflict(&name)));
            }
            return Ok(Ok(()));
        }
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        match backups.create(&dry_run, &backup).await {
            Ok(_) => Ok(Ok(())),
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => Ok(Err(Problem {
                reason: "SafetyBackupFailed",
                message: format!(
                    "the safety backup {name} of the target would not be admitted ({}): fix it, or set safetyBackup: false in a new RestoreRequest; nothing was touched",
                    e.message
                ),
            })),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Err(conflict(&name))),
            Err(e) => Err(e.into()),
        }
    }

    fn uid(&self) -> Result<String, Error> {
        self.request
            .uid()
            .ok_or_else(|| Error::NoUid(self.request.name_any()))
    }

    /// The safety Backup this request takes with `settings`, and its name.
    fn safety_backup_object(&self, settings: safety::Settings) -> Result<(Backup, String), Error> {
        let uid = self.uid()?;
        Ok((
            safety::build(self.request, &uid, settings),
            safety::name(&self.request.name_any(), &uid),
        ))
    }

    /// The safety backup of the target: created once (named by this request's UID), waited
    /// for, and the restore goes on only once it succeeded.
    async fn safety_backup(&self, mut status: RestoreRequestStatus) -> Result<Action, Error> {
        let resolved = match self.resolve().await? {
            Ok(resolved) => resolved,
            Err(Unresolved::Wait(p) | Unresolved::Fail(p)) => {
                return self.failed(status, p.reason, &p.message).await;
            }
        };
        let Some(why) = safety::wanted(&self.request.spec, resolved.target.kind()) else {
            status.phase = Some(RestorePhase::Running);
            self.save(&status).await?;
            return Ok(Action::requeue(Duration::ZERO));
        };
        let Some(settings) = self.safety_settings(&resolved).await? else {
            let message = "the target is no longer backed up by the restored Backup or a BackupSchedule, so its safety backup cannot be taken; nothing was restored: create a new RestoreRequest (with safetyBackup: false to restore without one)";
            return self.failed(status, "SafetyBackupImpossible", message).await;
        };
        let uid = self.uid()?;
        let (object, name) = self.safety_backup_object(settings.clone())?;
        let backups: Api<Backup> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let Some(backup) = backups.get_opt(&name).await? else {
            if status.safety_backup.is_some() {
                let message = format!(
                    "the safety backup {name} was deleted before the restore began; nothing was restored: create a new RestoreRequest"
                );
                return self.failed(status, "SafetyBackupFailed", &message).await;
            }
            match backups.create(&PostParams::default(), &object).await {
                Ok(_) => {
                    status.safety_backup = Some(name.clone());
                    self.save(&status).await?;
                    self.ctx
                        .event(
                            self.request,
                            false,
                            "SafetyBackupStarted",
                            format!(
                                "taking safety backup {name} of the target before the restore writes to it ({why})"
                            ),
                        )
                        .await;
                }
                // Made meanwhile (by an earlier reconcile): looked at next time.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                    let message = format!(
                        "the safety backup {name} of the target could not be created ({}); nothing was restored: fix it, or set safetyBackup: false in a new RestoreRequest",
                        e.message
                    );
                    return self.failed(status, "SafetyBackupFailed", &message).await;
                }
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::requeue(POLL));
        };
        if !safety::belongs_to(&backup, &uid, &settings) {
            return self
                .failed(status, "SafetyBackupConflict", &conflict(&name).message)
                .await;
        }
        if status.safety_backup.is_none() {
            // Created by a reconcile that stopped before it said so.
            status.safety_backup = Some(name.clone());
            self.save(&status).await?;
        }
        let backup_status = backup.status.clone().unwrap_or_default();
        let ready_message = || {
            backup_status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.message.clone())
                .unwrap_or_default()
        };
        if backup.metadata.deletion_timestamp.is_some() {
            let message = format!(
                "the safety backup {name} is being deleted; nothing was restored: create a new RestoreRequest"
            );
            return self.failed(status, "SafetyBackupFailed", &message).await;
        }
        match backup_status.phase {
            Some(BackupPhase::Succeeded) => {
                self.ctx
                    .event(
                        self.request,
                        false,
                        "SafetyBackupTaken",
                        format!(
                            "safety backup {name} of the target is stored at {}; to undo this restore, restore it (backupRef: {name}) with Flush or clean; it is kept {}",
                            backup_status.location.as_deref().unwrap_or_default(),
                            safety::TTL
                        ),
                    )
                    .await;
                status.phase = Some(RestorePhase::Running);
                self.save(&status).await?;
                Ok(Action::requeue(Duration::ZERO))
            }
            Some(BackupPhase::Failed) => {
                let message = format!(
                    "the safety backup {name} of the target failed ({}); nothing was restored: fix the cause and create a new RestoreRequest, or set safetyBackup: false in it to restore without one",
                    ready_message()
                );
                self.failed(status, "SafetyBackupFailed", &message).await
            }
            Some(BackupPhase::Running) => Ok(Action::requeue(POLL)),
            // Not started: it may be waiting for something that never comes (a Secret, a
            // Job the API server refuses); the app is down meanwhile.
            _ => {
                let waited = backup
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(chrono::TimeDelta::zero(), |t| {
                        Utc::now() - status::chrono(t)
                    });
                if waited <= QUIESCE_TIMEOUT {
                    return Ok(Action::requeue(POLL));
                }
                let message = format!(
                    "the safety backup {name} of the target did not start within {} minutes ({}); nothing was restored: fix the cause and create a new RestoreRequest, or set safetyBackup: false in it",
                    QUIESCE_TIMEOUT.num_minutes(),
                    ready_message()
                );
                // It never ran: nothing of it is worth keeping.
                let _ = backups.delete(&name, &Default::default()).await;
                self.failed(status, "SafetyBackupFailed", &message).await
            }
        }
    }

    async fn run(&self, mut status: RestoreRequestStatus) -> Result<Action, Error> {
        let name = self.request.name_any();
        let uid = self
            .request
            .uid()
            .ok_or_else(|| Error::NoUid(name.clone()))?;
        let job_name = job::job_name(&name, "restore");
        let job = match workers::find(self.ctx, self.namespace, &job_name, &uid).await? {
            Found::Mine(job) => *job,
            Found::Foreign(job) => {
                workers::clear_foreign(self.ctx, self.namespace, &job).await?;
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            // The restore started and its Job is gone: it may have run, in part or whole. It
            // is never run again by itself (a Flush or clean restore twice, with the app
            // stopped, is worse than a clear failure).
            Found::None if status.job_name.is_some() => {
                let message = format!(
                    "the restore Job {job_name} is gone before its result was read (or its creation was interrupted); {}",
                    if self.request.spec.dry_run {
                        "it was a dry run: nothing was written; create a new RestoreRequest to look again"
                    } else {
                        PARTLY_RUN
                    }
                );
                return self
                    .failed(status, Failure::WorkerVanished.as_str(), &message)
                    .await;
            }
            Found::None => {
                // Resolved again only to build the Job: once it exists, it holds the plan.
                let resolved = match self.resolve().await? {
                    Ok(resolved) => resolved,
                    Err(Unresolved::Wait(p) | Unresolved::Fail(p)) => {
                        return self.failed(status, p.reason, &p.message).await;
                    }
                };
                references::ensure_worker_account(self.ctx, self.namespace).await?;
                let spec = &self.request.spec;
                let plan = Plan::Restore(RestorePlan {
                    storage: resolved.storage.clone(),
                    folder: resolved.folder.clone(),
                    latest: resolved.latest,
                    latest_before: resolved
                        .latest
                        .then(|| status.start_time.as_ref().map(status::chrono))
                        .flatten(),
                    target: resolved.target.clone(),
                    redis: spec.redis.clone(),
                    postgres: spec.postgres.clone(),
                    mysql: spec.mysql.clone(),
                    volume: spec.volume.clone(),
                    manifest_sha256: resolved.manifest_sha256.clone(),
                    identity_secret: spec
                        .decryption
                        .as_ref()
                        .map(|d| d.identity_secret_ref.clone()),
                    fallbacks: self.usable(resolved.fallbacks).await?,
                    dry_run: spec.dry_run,
                });
                let built = job::build(
                    &JobRequest {
                        name: job_name.clone(),
                        namespace: self.namespace,
                        owner: self.request.controller_owner_ref(&()),
                        owner_name: name.clone(),
                        owner_uid: uid.clone(),
                        plan: &plan,
                        template: spec.job_template.as_ref(),
                    },
                    &self.ctx.settings.worker,
                )?;
                // Recorded before the Job exists: from here on the restore is never started
                // again (a crash between the two, or a Job that vanishes, fails it instead).
                status.job_name = Some(job_name.clone());
                self.save(&status).await?;
                let created = match workers::create(self.ctx, self.namespace, &built).await {
                    Ok(created) => created,
                    Err(e) => {
                        // Not created (as far as this process knows): the intent is taken
                        // back so that the next look tries again.
                        status.job_name = None;
                        let _ = status::apply(self.api, self.request, None, &status).await;
                        return Err(e);
                    }
                };
                match created {
                    Created::Job(job) => *job,
                    Created::Refused { message, .. } => {
                        return self.failed(status, "JobRefused", &message).await;
                    }
                }
            }
        };
        status.job_name = Some(job_name);
        match workers::observe(self.ctx, self.namespace, &job).await? {
            JobState::Running { waiting } => {
                if let Some(waiting) = waiting {
                    set_condition(
                        &mut status.conditions,
                        "Ready",
                        false,
                        "WorkerWaiting",
                        &waiting,
                        self.generation(),
                    );
                }
                self.save(&status).await?;
                Ok(Action::requeue(Duration::from_secs(15)))
            }
            JobState::Finished(mut summary) => {
                // A restore that ended without its result may have applied part of the
                // backup; it is never run again by itself.
                if !self.request.spec.dry_run
                    && matches!(
                        summary.failure,
                        Some(Failure::WorkerKilled | Failure::WorkerVanished)
                    )
                {
                    summary.message = format!("{}; {PARTLY_RUN}", summary.message);
                }
                // With `from.latest`, the worker says which backup it found.
                if let (Some(from), Some(folder)) = (&self.request.spec.from, &summary.folder)
                    && from.latest
                {
                    status.location = Some(location::display(&from.storage, folder));
                }
                status.stats = summary.restore.clone();
                status.preview.extend(summary.preview.iter().cloned());
                if let Some(copy) = &summary.restored_from_copy {
                    status.restored_from_copy = Some(copy.clone());
                    if let Some(folder) = &summary.folder
                        && let Some(store) = self.copy_storage(copy).await?
                    {
                        status.location = Some(location::display(&store, folder));
                    }
                    self.ctx
                        .event(self.request, true, "RestoredFromCopy", &summary.message)
                        .await;
                }
                self.finished(status, &summary).await
            }
        }
    }

    /// Records the restore's result, then resumes the workloads (or ends at once).
    async fn finished(
        &self,
        mut status: RestoreRequestStatus,
        summary: &Summary,
    ) -> Result<Action, Error> {
        // A dry run restores nothing: its result is `DryRun`, and `Restored` stays false.
        let dry_run = self.request.spec.dry_run;
        let reason = summary
            .failure
            .map_or(if dry_run { DRY_RUN } else { "Restored" }, Failure::as_str);
        let message = match (dry_run, summary.failure) {
            (true, Some(_)) => format!("dry run: {}", summary.message),
            _ => summary.message.clone(),
        };
        set_condition(
            &mut status.conditions,
            RESTORED,
            summary.failure.is_none() && !dry_run,
            reason,
            &message,
            self.generation(),
        );
        status.phase = Some(RestorePhase::Resuming);
        self.save(&status).await?;
        Ok(Action::requeue(Duration::ZERO))
    }

    /// The kind of the source of the Backup this restore restores, as its run recorded it.
    async fn backup_source_kind(&self) -> Option<String> {
        let reference = self.request.spec.backup_ref.as_ref()?;
        let backups: Api<Backup> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let backup = backups.get_opt(&reference.name).await.ok()??;
        let run = backup::recorded_run(self.ctx, self.namespace, &backup)
            .await
            .ok()?
            .ok()?;
        run.source.kind().map(|k| kind_word(Some(k)).to_owned())
    }

    /// Fails the restore before or during quiescing; what was stopped is started again.
    async fn failed(
        &self,
        status: RestoreRequestStatus,
        reason: &str,
        message: &str,
    ) -> Result<Action, Error> {
        let mut status = status;
        set_condition(
            &mut status.conditions,
            RESTORED,
            false,
            reason,
            message,
            self.generation(),
        );
        status.phase = Some(RestorePhase::Resuming);
        self.save(&status).await?;
        Ok(Action::requeue(Duration::ZERO))
    }

    /// The request was deleted before it ended. A worker that may still write to the target
    /// is stopped, and its Pods waited for until none runs (a Pod told to stop more than
    /// [`WORKER_STOP_TIMEOUT`] ago, on a node that died, is given up on, and the Event names
    /// it); then the workloads it stopped are scaled back to their recorded replicas (one
    /// that is gone is left gone), and the request goes. A request that ended already only
    /// goes (its workloads were given back). In a namespace being deleted nothing is waited
    /// for or scaled: everything in it goes.
    async fn withdrawn(&self, status: &RestoreRequestStatus) -> Result<Action, Error> {
        if !finalizers::has(self.request, RESUME_FINALIZER) {
            return Ok(Action::await_change());
        }
        // Decided on the version the server holds: a lagging watch may show the request
        // without the Job it made, or before it ended.
        if !self.current().await? {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        // Ended (its workloads were given back), or everything here goes: nothing to do.
        let ended = matches!(
            status.phase,
            Some(RestorePhase::Succeeded | RestorePhase::Failed)
        );
        if ended || workers::namespace_terminating(self.ctx, self.namespace).await? {
            finalizers::remove(self.api, self.request, RESUME_FINALIZER).await?;
            return Ok(Action::await_change());
        }
        let uid = self.uid()?;
        let job_name = job::job_name(&self.request.name_any(), "restore");
        // Looked for whatever the status says: a creation may have worked unrecorded.
        let mut worker_ran = status.job_name.is_some();
        if let Found::Mine(job) = workers::find(self.ctx, self.namespace, &job_name, &uid).await? {
            worker_ran = true;
            if workers::finished(&job).is_none() && job.metadata.deletion_timestamp.is_none() {
                workers::delete(self.ctx, self.namespace, &job_name).await?;
            }
        }
        let selector = format!("batch.kubernetes.io/job-name={job_name},{OWNER_UID_LABEL}={uid}");
        let running = workers::running_pods(self.ctx, self.namespace, &selector).await?;
        worker_ran |= !running.is_empty();
        // A Pod's deletionTimestamp is when its grace period ends.
        let overdue = |pod: &Pod| {
            pod.metadata
                .deletion_timestamp
                .as_ref()
                .is_some_and(|t| Utc::now() - status::chrono(t) > WORKER_STOP_TIMEOUT)
        };
        if !running.iter().all(overdue) {
            return Ok(Action::requeue(POLL));
        }
        let given_up: Vec<String> = running.iter().map(ResourceExt::name_any).collect();
        let back = self.scale_back(&status.quiesced).await?;
        let (warning, message) = withdrawn_message(status, worker_ran, &given_up, &back);
        self.ctx
            .event(self.request, warning, "Withdrawn", message)
            .await;
        finalizers::remove(self.api, self.request, RESUME_FINALIZER).await?;
        Ok(Action::await_change())
    }

    /// Scales the workloads back to their recorded replicas; says which were (`web to 2`): one
    /// that no longer exists is left gone.
    async fn scale_back(&self, quiesced: &[QuiescedWorkload]) -> Result<Vec<String>, Error> {
        let mut back = Vec::new();
        for workload in quiesced {
            match self
                .scale(workload.kind, &workload.name, workload.replicas)
                .await?
            {
                Some(_) => back.push(format!("{} to {}", workload.name, workload.replicas)),
                None => {
                    tracing::warn!(workload = %workload.name, "cannot scale back a workload that no longer exists");
                }
            }
        }
        Ok(back)
    }

    async fn resume(&self, mut status: RestoreRequestStatus) -> Result<Action, Error> {
        self.scale_back(&status.quiesced).await?;
        let restored = status::condition(&status.conditions, RESTORED).cloned();
        let ok = restored
            .as_ref()
            .is_some_and(|c| c.status == "True" || c.reason == DRY_RUN);
        let reason = restored
            .as_ref()
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| "Internal".to_owned());
        let mut message = restored.map(|c| c.message).unwrap_or_default();
        if !status.quiesced.is_empty() {
            message.push_str(&format!(
                "; scaled back {}",
                status
                    .quiesced
                    .iter()
                    .map(|w| format!("{} to {}", w.name, w.replicas))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        status.phase = Some(if ok {
            RestorePhase::Succeeded
        } else {
            RestorePhase::Failed
        });
        status.completion_time = Some(status::time(Utc::now()));
        set_condition(
            &mut status.conditions,
            "Ready",
            ok,
            &reason,
            &message,
            self.generation(),
        );
        // The result's notifications go in the same write as the result: both or neither. A
        // dry run that worked is no news.
        let unknown_notifiers = if ok && self.request.spec.dry_run {
            Vec::new()
        } else {
            self.plan_notifications(&mut status, ok).await?
        };
        status::apply_fresh(self.api, self.request, self.old, &status).await?;
        for problem in unknown_notifiers {
            self.ctx
                .event(self.request, true, "NotificationFailed", problem)
                .await;
        }
        self.ctx
            .event(
                self.request,
                !ok,
                if ok { "Succeeded" } else { "Failed" },
                format!("{reason}: {message}"),
            )
            .await;
        let source_kind = match self
            .request
            .spec
            .target
            .as_ref()
            .and_then(BackupSource::kind)
        {
            Some(kind) => kind_word(Some(kind)).to_owned(),
            // Restored into the Backup's own source: its kind.
            None => self
                .backup_source_kind()
                .await
                .unwrap_or_else(|| "unknown".to_owned()),
        };
        self.ctx
            .metrics
            .restores
            .get_or_create(&RunLabels {
                namespace: self.namespace.to_owned(),
                schedule: String::new(),
                source_kind,
                result: match (self.request.spec.dry_run, ok) {
                    (true, true) => "dryRun".to_owned(),
                    (true, false) => format!("dryRun{reason}"),
                    (false, true) => "succeeded".to_owned(),
                    (false, false) => reason,
                },
            })
            .inc();
        Ok(if notify::outstanding(&status.notifications) {
            Action::requeue(Duration::ZERO)
        } else {
            Action::await_change()
        })
    }

    /// Records the deliveries of the restore's result in `status` (sent once it is
    /// written); a Notifier that does not exist is recorded as a failed delivery, and what
    /// it says is returned (for an Event once the status is written).
    async fn plan_notifications(
        &self,
        status: &mut RestoreRequestStatus,
        ok: bool,
    ) -> Result<Vec<String>, Error> {
        let refs = self.notifiers().await?;
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let wants = notify::lookup(self.ctx, self.namespace, &refs).await?;
        let event = if ok {
            NotifyEvent::RestoreSucceeded
        } else {
            NotifyEvent::RestoreFailed
        };
        let planned = notify::plan_event(event, Utc::now(), &wants);
        let problems = notify::add_planned(&mut status.notifications, planned);
        notify::mark(
            &mut status.conditions,
            &status.notifications,
            self.generation(),
        );
        Ok(problems)
    }

    /// The Notifiers this restore tells: its own, else those of the Backup it restores.
    async fn notifiers(&self) -> Result<Vec<NotifierReference>, Error> {
        if !self.request.spec.notify.is_empty() {
            return Ok(self.request.spec.notify.clone());
        }
        let Some(reference) = self.request.spec.backup_ref.as_ref() else {
            return Ok(Vec::new());
        };
        let backups: Api<Backup> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        match backups.get_opt(&reference.name).await? {
            Some(backup) => backup::notifiers(self.ctx, self.namespace, &backup).await,
            None => Ok(Vec::new()),
        }
    }

    /// The backup to restore and the target, from `backupRef` or `from`.
    /// What to restore: [`Self::find`], with a complete copy standing in when the Backup's
    /// own store cannot be used (its Secret or claim is gone).
    async fn resolve(&self) -> Result<Result<Resolved, Unresolved>, Error> {
        let mut resolved = match self.find().await? {
            Ok(resolved) => resolved,
            Err(e) => return Ok(Err(e)),
        };
        if !resolved.fallbacks.is_empty()
            && let Some(problem) =
                references::check_storage(self.ctx, self.namespace, &resolved.storage).await?
        {
            let copy = resolved.fallbacks.remove(0);
            tracing::warn!(
                copy = copy.name.as_str(),
                "the backup's store cannot be used ({}); restoring from a copy",
                problem.message
            );
            resolved.storage = copy.storage;
            resolved.from_copy = Some(copy.name);
        }
        Ok(Ok(resolved))
    }

    async fn find(&self) -> Result<Result<Resolved, Unresolved>, Error> {
        let spec = &self.request.spec;
        if let Some(from) = &spec.from {
            let Some(target) = spec.target.clone() else {
                return Ok(Err(Unresolved::Fail(Problem {
                    reason: "TargetRequired",
                    message: "a restore from storage needs spec.target: there is no Backup to take the source from".to_owned(),
                })));
            };
            if let Some(problem) = unsafe_location(&from.location) {
                return Ok(Err(Unresolved::Fail(problem)));
            }
            return Ok(Ok(Resolved {
                storage: from.storage.clone(),
                folder: from.location.clone(),
                latest: from.latest,
                target,
                manifest_sha256: None,
                fallbacks: Vec::new(),
                from_copy: None,
                own_backup: None,
            }));
        }
        let Some(reference) = &spec.backup_ref else {
            return Ok(Err(Unresolved::Fail(Problem {
                reason: "BackupNotFound",
                message: "set backupRef or from".to_owned(),
            })));
        };
        let backups: Api<Backup> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        let Some(backup) = backups.get_opt(&reference.name).await? else {
            return Ok(Err(Unresolved::Wait(Problem {
                reason: "BackupNotFound",
                message: format!(
                    "Backup {}/{} does not exist (yet)",
                    self.namespace, reference.name
                ),
            })));
        };
        match backup.status.as_ref().and_then(|s| s.phase) {
            Some(BackupPhase::Succeeded) => {}
            Some(BackupPhase::Failed) => {
                return Ok(Err(Unresolved::Fail(Problem {
                    reason: "BackupFailed",
                    message: format!(
                        "Backup {} failed; choose a Backup that succeeded",
                        reference.name
                    ),
                })));
            }
            _ => {
                return Ok(Err(Unresolved::Wait(Problem {
                    reason: "BackupNotReady",
                    message: format!(
                        "Backup {} has not finished; the restore waits for it",
                        reference.name
                    ),
                })));
            }
        }
        // A Backup that waits for its lock date to be deleted is still there, whole: it may
        // be restored (its deletion waits for the restore).
        // (With half a minute to spare, so that it cannot go while the restore starts; once
        // it runs, the deletion waits for it.)
        let waiting_for_lock = backup
            .status
            .as_ref()
            .and_then(|s| s.retained_until.as_ref())
            .is_some_and(|t| status::chrono(t) > Utc::now() + chrono::TimeDelta::seconds(30));
        let started = matches!(
            self.request.status.as_ref().and_then(|s| s.phase),
            Some(RestorePhase::Quiescing | RestorePhase::BackingUp | RestorePhase::Running)
        );
        if backup.metadata.deletion_timestamp.is_some() && !waiting_for_lock && !started {
            return Ok(Err(Unresolved::Fail(Problem {
                reason: "BackupDeleting",
                message: format!(
                    "Backup {} is being deleted; choose another backup",
                    reference.name
                ),
            })));
        }
        let status = backup.status.clone().unwrap_or_default();
        // The store and folder the backup was written to, as recorded when it ran.
        let run = match backup::recorded_run(self.ctx, self.namespace, &backup).await? {
            Ok(run) => run,
            Err(problem) => return Ok(Err(Unresolved::Fail(problem))),
        };
        // Decided before any workload is stopped: what the manifest said when the backup
        // finished, else what the run asked for.
        let encrypted = status.encrypted.unwrap_or(run.encryption.is_some());
        match (encrypted, &spec.decryption) {
            (true, None) => {
                let to = run
                    .encryption
                    .as_ref()
                    .map(|e| format!(" to {}", e.describe()))
                    .unwrap_or_default();
                return Ok(Err(Unresolved::Fail(Problem {
                    reason: "EncryptionKeyError",
                    message: format!(
                        "Backup {} is encrypted{to}: give the private key of one of them in spec.decryption.identitySecretRef of a new RestoreRequest; nothing was touched",
                        reference.name
                    ),
                })));
            }
            (false, Some(_)) => {
                return Ok(Err(Unresolved::Fail(Problem {
                    reason: "EncryptionKeyError",
                    message: format!(
                        "Backup {} is not encrypted, but spec.decryption gives a key for it: leave spec.decryption out of a new RestoreRequest to restore it; nothing was touched",
                        reference.name
                    ),
                })));
            }
            _ => {}
        }
        // The copies that are complete, in the schedule's order.
        let complete: Vec<CopyStore> = run
            .copies
            .iter()
            .filter(|c| {
                status
                    .copies
                    .iter()
                    .any(|s| s.name == c.name && s.phase == CopyPhase::Succeeded)
            })
            .map(|c| CopyStore {
                name: c.name.clone(),
                storage: c.storage.clone(),
            })
            .collect();
        let (storage, fallbacks, from_copy) = match &spec.from_copy {
            None => (run.storage.clone(), complete, None),
            Some(name) => match complete.into_iter().find(|c| &c.name == name) {
                Some(copy) => (copy.storage, Vec::new(), Some(copy.name)),
                None => {
                    let known: Vec<&str> = status.copies.iter().map(|c| c.name.as_str()).collect();
                    return Ok(Err(Unresolved::Fail(Problem {
                        reason: "CopyNotFound",
                        message: format!(
                            "Backup {} has no complete copy named {name:?} (its copies: {}): name a copy whose phase is Succeeded, or leave fromCopy out",
                            reference.name,
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    })));
                }
            },
        };
        let target = spec.target.clone().unwrap_or(run.source.clone());
        let own_backup = if safety::same_server(&target, &run.source) {
            Some(safety::Settings {
                // What the Backup read, with its credentials.
                target: run.source.clone(),
                // Its own store, also when restoring from a copy (a copy store keeps copies).
                storage: run.storage.clone(),
                compression: run.compression,
                encryption: run.encryption,
                job_template: backup::job_template(self.ctx, self.namespace, &backup).await?,
            })
        } else {
            None
        };
        Ok(Ok(Resolved {
            storage,
            folder: run.folder,
            latest: false,
            target,
            manifest_sha256: status.manifest_sha256,
            fallbacks,
            from_copy,
            own_backup,
        }))
    }

    /// The fallbacks whose Secrets and claims exist (a copy that cannot be mounted would keep
    /// the worker's Pod from starting).
    async fn usable(&self, fallbacks: Vec<CopyStore>) -> Result<Vec<CopyStore>, Error> {
        let mut usable = Vec::new();
        for copy in fallbacks {
            match references::check_storage(self.ctx, self.namespace, &copy.storage).await? {
                None => usable.push(copy),
                Some(problem) => tracing::warn!(
                    copy = copy.name.as_str(),
                    "copy left out of the restore's fallbacks: {}",
                    problem.message
                ),
            }
        }
        Ok(usable)
    }

    /// The storage of the Backup's copy `name` (for the location shown in status).
    async fn copy_storage(&self, name: &str) -> Result<Option<BackupStorage>, Error> {
        let Some(reference) = &self.request.spec.backup_ref else {
            return Ok(None);
        };
        let backups: Api<Backup> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        Ok(backups
            .get_opt(&reference.name)
            .await?
            .and_then(|b| b.status)
            .and_then(|s| s.resolved)
            .and_then(|r| r.copies.into_iter().find(|c| c.name == name))
            .map(|c| c.storage))
    }

    /// Whether the RestoreRequest on the server is the version this reconcile read.
    async fn current(&self) -> Result<bool, Error> {
        let fresh = self.api.get(&self.request.name_any()).await?;
        Ok(fresh.resource_version() == self.request.resource_version())
    }

    /// The workload's replicas, or `None` if it does not exist. Read through the `scale`
    /// subresource, the only access the controller has to workloads.
    async fn replicas(&self, kind: WorkloadKind, name: &str) -> Result<Option<i32>, Error> {
        let scale = match kind {
            WorkloadKind::Deployment => self.deployments().get_scale(name).await,
            WorkloadKind::StatefulSet => self.stateful_sets().get_scale(name).await,
        };
        match scale {
            Ok(scale) => Ok(Some(scale.spec.and_then(|s| s.replicas).unwrap_or(1))),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the workload's replicas through its `scale` subresource; returns its Pod
    /// selector (as a label selector string), or `None` if it is gone.
    async fn scale(
        &self,
        kind: WorkloadKind,
        name: &str,
        replicas: i32,
    ) -> Result<Option<String>, Error> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        let params = PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let result = match kind {
            WorkloadKind::Deployment => {
                self.deployments()
                    .patch_scale(name, &params, &Patch::Merge(&patch))
                    .await
            }
            WorkloadKind::StatefulSet => {
                self.stateful_sets()
                    .patch_scale(name, &params, &Patch::Merge(&patch))
                    .await
            }
        };
        match result {
            Ok(scale) => Ok(Some(
                scale.status.and_then(|s| s.selector).unwrap_or_default(),
            )),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// How many Pods match the selector (`matchLabels` and `matchExpressions`, as the
    /// `scale` subresource spells them). An empty selector counts none.
    async fn pods(&self, selector: &str) -> Result<usize, Error> {
        if selector.is_empty() {
            return Ok(0);
        }
        // Pods that ended (Succeeded, or Failed such as Evicted) do not hold up the restore.
        Ok(workers::running_pods(self.ctx, self.namespace, selector)
            .await?
            .len())
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.ctx.client.clone(), self.namespace)
    }

    fn stateful_sets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.ctx.client.clone(), self.namespace)
    }
}

/// What a `Withdrawn` Event says of a request deleted before it ended, and whether it is a
/// warning: what became of the restore, the worker Pods given up on, and the workloads
/// scaled back. Pure.
fn withdrawn_message(
    status: &RestoreRequestStatus,
    worker_ran: bool,
    given_up: &[String],
    back: &[String],
) -> (bool, String) {
    let restored = status::condition(&status.conditions, RESTORED);
    let (warning, mut message) = match (status.phase, restored) {
        (Some(RestorePhase::Resuming), Some(c)) => (
            c.status != "True" && c.reason != DRY_RUN,
            format!(
                "the RestoreRequest was deleted after the restore ended ({}: {})",
                c.reason, c.message
            ),
        ),
        _ if worker_ran => (
            true,
            "the RestoreRequest was deleted while the restore ran: its worker was stopped, so the target may hold part of the backup; check it".to_owned(),
        ),
        _ => (
            false,
            "the RestoreRequest was deleted before the restore began: nothing was restored"
                .to_owned(),
        ),
    };
    if let Some(safety) = &status.safety_backup {
        message.push_str(&format!(
            "; its safety backup {safety} is kept ({})",
            safety::TTL
        ));
    }
    if !given_up.is_empty() {
        message.push_str(&format!(
            "; worker Pod {} did not stop within {} minutes of being told to (its node may be gone) and may still write to the target",
            given_up.join(", "),
            WORKER_STOP_TIMEOUT.num_minutes()
        ));
    }
    if !back.is_empty() {
        message.push_str(&format!("; scaled back {}", back.join(", ")));
    }
    (warning || !given_up.is_empty(), message)
}

/// Why a `from.location` is refused: it must be a relative path inside the store's prefix
/// (no `..`, no leading `/`), or the worker could read outside it. Pure.
fn unsafe_location(location: &str) -> Option<Problem> {
    let bad = location.starts_with('/')
        || location.contains('\\')
        || location.split('/').any(|part| part == ".." || part == ".");
    bad.then(|| Problem {
        reason: "InvalidLocation",
        message: format!(
            "from.location {location:?} must be a relative path inside the store's prefix, without '..', '.' or a leading '/': fix it and create a new RestoreRequest"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: RestorePhase) -> RestoreRequestStatus {
        RestoreRequestStatus {
            phase: Some(phase),
            ..RestoreRequestStatus::default()
        }
    }

    #[test]
    fn a_withdrawn_request_says_what_became_of_the_restore() {
        let back = ["web to 2".to_owned()];
        let (warning, said) =
            withdrawn_message(&status(RestorePhase::Quiescing), false, &[], &back);
        assert!(!warning);
        assert_eq!(
            said,
            "the RestoreRequest was deleted before the restore began: nothing was restored; scaled back web to 2"
        );
        let mut backing_up = status(RestorePhase::BackingUp);
        backing_up.safety_backup = Some("back-safety-1".to_owned());
        let (_, said) = withdrawn_message(&backing_up, false, &[], &[]);
        assert!(
            said.ends_with("nothing was restored; its safety backup back-safety-1 is kept (7d)"),
            "{said}"
        );
        let (warning, said) = withdrawn_message(
            &status(RestorePhase::Running),
            true,
            &["back-restore-x".to_owned()],
            &back,
        );
        assert!(warning);
        assert!(
            said.contains("its worker was stopped, so the target may hold part of the backup"),
            "{said}"
        );
        assert!(
            said.contains("worker Pod back-restore-x did not stop within 5 minutes"),
            "{said}"
        );
        // Deleted while resuming: the restore's own result is told.
        let mut resuming = status(RestorePhase::Resuming);
        set_condition(
            &mut resuming.conditions,
            RESTORED,
            false,
            "SourceUnreachable",
            "cannot connect",
            None,
        );
        let (warning, said) = withdrawn_message(&resuming, true, &[], &back);
        assert!(warning);
        assert!(
            said.contains("after the restore ended (SourceUnreachable: cannot connect)"),
            "{said}"
        );
        set_condition(
            &mut resuming.conditions,
            RESTORED,
            true,
            "Restored",
            "restored 5 keys",
            None,
        );
        let (warning, _) = withdrawn_message(&resuming, true, &[], &back);
        assert!(!warning);
    }

    #[test]
    fn locations_outside_the_prefix_are_refused() {
        for bad in ["../other/", "/etc/", "shop/../../x/", "a/./b/", "a\\..\\b"] {
            assert!(unsafe_location(bad).is_some(), "{bad}");
        }
        for good in [
            "shop/shop-redis/20261201T160000Z-3f6c2a1e/",
            "shop/shop-redis/",
            "x..y/",
        ] {
            assert!(unsafe_location(good).is_none(), "{good}");
        }
    }
}
