//! A deleted Backup's finalizer: wait while a restore reads the backup, stop its worker and
//! wait for its Pods to be gone, then (with `deletionPolicy: Delete`) run a deletion Job on
//! the folder recorded in status, and let the Backup go. Deleting a namespace always
//! finishes: when the namespace is terminating, the store's credentials are gone or deletion
//! keeps failing for `--deletion-timeout`, the data is left in storage with a
//! `DataNotDeleted` Event that names it and how to delete it by hand.

use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;

use super::backup::{recorded_run, uid};
use super::context::Context;
use super::error::Error;
use super::finalizers;
use super::job::{self, JobRequest};
use super::location;
use super::references;
use super::status::{self, set_condition};
use super::workers::{self, Created, Found, JobState};
use crate::api::{Backup, DeletionPolicy, ResolvedRun, RestorePhase, RestoreRequest};
use crate::worker::plan::DeletePlan;
use crate::worker::{Failure, Plan};

/// The finalizer that deletes a Backup's stored data before the Backup goes.
pub const FINALIZER: &str = "coffer.dev/delete-data";
/// The condition that tells how the deletion of the data is going.
const DELETING: &str = "Deleting";
/// The reason of a deletion waiting for the date its objects are locked until.
const RETAINED: &str = "Retained";

/// Where the deletion of a Backup's data is.
enum Deletion {
    /// Deleted; the message says what.
    Done(String),
    /// Not yet: look again.
    Waiting(Action),
    /// Left in storage: why.
    GaveUp(String),
    /// The folder holds another Backup's data: left alone, and not ours to point at.
    NotOurs(String),
}

/// Runs the finalizer of a Backup being deleted.
pub async fn finalize(
    backup: &Backup,
    ctx: &Context,
    namespace: &str,
    api: &Api<Backup>,
) -> Result<Action, Error> {
    if !finalizers::has(backup, FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = backup.name_any();
    let uid = uid(backup)?;
    if let Some(restore) = restoring(ctx, namespace, backup).await? {
        note(
            ctx,
            api,
            backup,
            "InUse",
            &format!(
                "RestoreRequest {restore} is restoring this backup; its data is deleted when the restore ends"
            ),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let started = backup
        .status
        .as_ref()
        .is_some_and(|s| s.resolved.is_some() || s.job_name.is_some());
    // Objects locked until a date cannot be deleted before it: the Backup says so and waits
    // (a date recorded when it was taken, for a backup that stored something, or one the store
    // gave when a deletion was refused), unless its namespace is going.
    if backup.spec.deletion_policy == DeletionPolicy::Delete
        && started
        && let Some(until) = locked_until(backup)
        && until > Utc::now()
    {
        if workers::namespace_terminating(ctx, namespace).await? {
            let left = recorded_run(ctx, namespace, backup)
                .await?
                .map(|run| {
                    format!(
                        "the backup's data is left at {}, locked until {}: after that date, {}",
                        location::display(&run.storage, &run.folder),
                        until.to_rfc3339(),
                        location::delete_hint(&run.storage, &run.folder, &uid)
                    )
                })
                .unwrap_or_else(|p| p.message);
            ctx.event(
                backup,
                true,
                "DataNotDeleted",
                format!("namespace {namespace} is being deleted; {left}"),
            )
            .await;
            return let_go(api, backup).await;
        }
        let mode = backup
            .status
            .as_ref()
            .and_then(|s| s.resolved.as_ref())
            .and_then(|r| r.lock.as_ref())
            .map_or("S3", |l| l.mode.as_str());
        return retained(ctx, api, backup, until, mode).await;
    }
    if backup
        .status
        .as_ref()
        .and_then(|s| status::condition(&s.conditions, DELETING))
        .is_none_or(|c| c.status != "True")
    {
        note(
            ctx,
            api,
            backup,
            "Deleting",
            "stopping the worker, then deleting the stored data",
        )
        .await?;
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    // Stop the worker, and wait until its Pod is gone: a worker still running could write
    // its manifest after the folder was purged.
    for operation in ["backup", "inspect", "lock", "drill"] {
        let job_name = job::job_name(&name, operation);
        if let Found::Mine(job) = workers::find(ctx, namespace, &job_name, &uid).await?
            && workers::finished(&job).is_none()
            && job.metadata.deletion_timestamp.is_none()
        {
            workers::delete(ctx, namespace, &job_name).await?;
        }
        if workers::pods_left(ctx, namespace, &job_name).await? > 0 && !overdue(ctx, backup) {
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }
    if backup.spec.deletion_policy == DeletionPolicy::Delete && started {
        let run = recorded_run(ctx, namespace, backup)
            .await?
            .map_err(|p| p.message);
        let outcome = match &run {
            Ok(run) => match delete_data(ctx, api, backup, &uid, run).await {
                Ok(outcome) => outcome,
                // A namespace being deleted refuses everything new (the worker's
                // ServiceAccount too); and no error holds a Backup for ever.
                Err(e) if terminating(&e) => Deletion::GaveUp(format!(
                    "namespace {namespace} is being deleted, so no deletion Job can run in it"
                )),
                Err(e) if overdue(ctx, backup) => Deletion::GaveUp(e.to_string()),
                Err(e) => return Err(e),
            },
            Err(why) => Deletion::GaveUp(why.clone()),
        };
        match outcome {
            Deletion::Waiting(action) => return Ok(action),
            Deletion::Done(message) => ctx.event(backup, false, "DataDeleted", message).await,
            Deletion::NotOurs(why) => {
                ctx.event(
                    backup,
                    true,
                    "DataNotDeleted",
                    format!("{why}; the folder was left as it is"),
                )
                .await;
            }
            Deletion::GaveUp(why) => {
                let left = match &run {
                    Ok(run) => format!(
                        "the backup's data is left at {}: {}",
                        location::display(&run.storage, &run.folder),
                        location::delete_hint(&run.storage, &run.folder, &uid)
                    ),
                    Err(_) => "the backup's data, if any, is left in storage".to_owned(),
                };
                ctx.event(backup, true, "DataNotDeleted", format!("{why}; {left}"))
                    .await;
            }
        }
    }
    let_go(api, backup).await
}

/// Removes this finalizer: the Backup goes.
async fn let_go(api: &Api<Backup>, backup: &Backup) -> Result<Action, Error> {
    finalizers::remove(api, backup, FINALIZER).await?;
    Ok(Action::await_change())
}

/// Whether the finalizer has worked on the data for longer than `--deletion-timeout`
/// (counted from when the `Deleting` condition became True).
fn overdue(ctx: &Context, backup: &Backup) -> bool {
    let since = backup
        .status
        .as_ref()
        .and_then(|s| status::condition(&s.conditions, DELETING))
        .filter(|c| c.status == "True")
        .map_or_else(Utc::now, |c| status::chrono(&c.last_transition_time));
    (Utc::now() - since).to_std().unwrap_or_default() > ctx.settings.deletion_timeout
}

/// Whether the API server refused a request because the namespace is being deleted.
fn terminating(error: &Error) -> bool {
    matches!(error, Error::Kube(kube::Error::Api(e)) if e.code == 403 && e.message.contains("being terminated"))
}

/// The running RestoreRequest (Quiescing or Running) that reads this Backup, if any: by
/// `backupRef`, or by `from` a location that is the Backup's folder or holds it (`latest`).
async fn restoring(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
) -> Result<Option<String>, Error> {
    let name = backup.name_any();
    let location = backup.status.as_ref().and_then(|s| s.location.clone());
    let api: Api<RestoreRequest> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|r| {
            let running = matches!(
                r.status.as_ref().and_then(|s| s.phase),
                Some(RestorePhase::Quiescing | RestorePhase::BackingUp | RestorePhase::Running)
            );
            let by_ref = r.spec.backup_ref.as_ref().is_some_and(|b| b.name == name);
            let by_location = r.spec.from.is_some()
                && r.status
                    .as_ref()
                    .and_then(|s| s.location.as_deref())
                    .zip(location.as_deref())
                    .is_some_and(|(reading, ours)| ours.starts_with(reading));
            running && (by_ref || by_location)
        })
        .map(|r| r.name_any()))
}

/// Records where deletion stands in the `Deleting` condition, with an Event the first time
/// for each reason.
async fn note(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let old = backup.status.clone();
    let mut status = old.clone().unwrap_or_default();
    let first = status::condition(&status.conditions, DELETING).is_none_or(|c| c.reason != reason);
    // True once the finalizer works on the data: its transition time starts the clock of
    // --deletion-timeout (waiting for a restore does not count).
    set_condition(
        &mut status.conditions,
        DELETING,
        reason != "InUse" && reason != RETAINED,
        reason,
        message,
        backup.metadata.generation,
    );
    status::apply(api, backup, old.as_ref(), &status).await?;
    if first {
        // A deletion held up by a lock is worth a look: who deleted the Backup?
        ctx.event(backup, reason == RETAINED, reason, message).await;
    }
    Ok(())
}

/// Until when the Backup's objects are locked, as far as it knows: the lock it was written
/// with (if it stored something) or the date the store gave when a deletion was refused.
fn locked_until(backup: &Backup) -> Option<chrono::DateTime<Utc>> {
    let status = backup.status.as_ref()?;
    let written = super::lock::current(status)
        .filter(|_| status.phase == Some(crate::api::BackupPhase::Succeeded));
    let refused = status.retained_until.as_ref().map(status::chrono);
    written.into_iter().chain(refused).max()
}

/// Runs the deletion Job on the recorded folder.
async fn delete_data(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    uid: &str,
    run: &ResolvedRun,
) -> Result<Deletion, Error> {
    let name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_default();
    let overdue = overdue(ctx, backup);
    let retry =
        (ctx.settings.deletion_timeout / 4).clamp(Duration::from_secs(2), Duration::from_secs(60));
    if let Some(problem) = references::check_storage(ctx, &namespace, &run.storage).await? {
        return Ok(Deletion::GaveUp(format!(
            "the store cannot be reached: {}",
            problem.message
        )));
    }
    let job_name = job::job_name(&name, "delete");
    let job = match workers::find(ctx, &namespace, &job_name, uid).await? {
        Found::Mine(job) => *job,
        Found::Foreign(job) => {
            if overdue {
                return Ok(Deletion::GaveUp(format!(
                    "the Job {job_name} of an earlier Backup of the same name is still running"
                )));
            }
            workers::clear_foreign(ctx, &namespace, &job).await?;
            return Ok(Deletion::Waiting(Action::requeue(Duration::from_secs(2))));
        }
        Found::None => {
            let plan = Plan::Delete(DeletePlan {
                storage: run.storage.clone(),
                folder: run.folder.clone(),
                owner_uid: Some(uid.to_owned()),
            });
            let mut template = backup.spec.job_template.clone().unwrap_or_default();
            template.ttl_seconds_after_finished = Some(3600);
            references::ensure_worker_account(ctx, &namespace).await?;
            let built = job::build(
                &JobRequest {
                    name: job_name.clone(),
                    namespace: &namespace,
                    // Not owned by the Backup: it must outlive it, even under foreground
                    // deletion.
                    owner: None,
                    owner_name: name.clone(),
                    owner_uid: uid.to_owned(),
                    plan: &plan,
                    template: Some(&template),
                },
                &ctx.settings.worker,
            )?;
            match workers::create(ctx, &namespace, &built).await? {
                Created::Job(job) => *job,
                Created::Refused {
                    terminating: true, ..
                } => {
                    return Ok(Deletion::GaveUp(format!(
                        "namespace {namespace} is being deleted, so no deletion Job can run in it"
                    )));
                }
                Created::Refused { message, .. } if overdue => {
                    return Ok(Deletion::GaveUp(message));
                }
                Created::Refused { message, .. } => {
                    note(ctx, api, backup, "DeleteFailed", &escape_hatch(&message)).await?;
                    return Ok(Deletion::Waiting(Action::requeue(retry)));
                }
            }
        }
    };
    match workers::observe(ctx, &namespace, &job).await? {
        JobState::Running { waiting: Some(why) } if overdue => {
            // Its Pod would wait for ever: it goes with the Backup.
            workers::delete(ctx, &namespace, &job_name).await?;
            Ok(Deletion::GaveUp(why))
        }
        JobState::Running { waiting: Some(why) } => {
            note(ctx, api, backup, "DeletionWaiting", &escape_hatch(&why)).await?;
            Ok(Deletion::Waiting(Action::requeue(Duration::from_secs(5))))
        }
        JobState::Running { waiting: None } => {
            Ok(Deletion::Waiting(Action::requeue(Duration::from_secs(2))))
        }
        JobState::Finished(summary) => match summary.failure {
            None => Ok(Deletion::Done(summary.message)),
            // The folder holds another Backup's data: it is theirs to delete.
            Some(Failure::NotOwned) => Ok(Deletion::NotOurs(summary.message)),
            // Locked longer than recorded (or the store says so): tried again at its date.
            Some(Failure::Retained) => {
                workers::delete(ctx, &namespace, &job_name).await?;
                let until = summary
                    .retained_until
                    .unwrap_or_else(|| Utc::now() + chrono::TimeDelta::hours(1));
                let mode = run.lock.as_ref().map_or("S3", |l| l.mode.as_str());
                Ok(Deletion::Waiting(
                    retained(ctx, api, backup, until, mode).await?,
                ))
            }
            Some(_) if overdue => Ok(Deletion::GaveUp(summary.message)),
            Some(_) => {
                ctx.event(
                    backup,
                    true,
                    "DeleteFailed",
                    escape_hatch(&format!(
                        "{}; retrying in {}s",
                        summary.message,
                        retry.as_secs()
                    )),
                )
                .await;
                workers::delete(ctx, &namespace, &job_name).await?;
                Ok(Deletion::Waiting(Action::requeue(retry)))
            }
        },
    }
}

/// The Backup's objects are locked until `until`: said in its `Deleting` condition (and an
/// Event), and looked at again then.
async fn retained(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    until: chrono::DateTime<Utc>,
    mode: &str,
) -> Result<Action, Error> {
    // The date is kept, so that every later look waits for it without asking the store.
    let recorded = backup
        .status
        .as_ref()
        .and_then(|s| s.retained_until.as_ref())
        .map(status::chrono);
    if recorded.is_none_or(|r| r < until) {
        let old = backup.status.clone();
        let mut status = old.clone().unwrap_or_default();
        status.retained_until = Some(status::time(until));
        status::apply(api, backup, old.as_ref(), &status).await?;
        // The write wakes the next look, which finds the date.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    note(
        ctx,
        api,
        backup,
        RETAINED,
        &format!(
            "retained until {}: its objects are locked ({mode} object lock) and cannot be deleted before then; the data is deleted, and the Backup goes, after that date (to let the Backup go now and leave the data, set spec.deletionPolicy: Retain)",
            until.to_rfc3339()
        ),
    )
    .await?;
    // At least a minute: the store's clock decides, and it may run behind this one.
    let wait = (until - Utc::now())
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(60));
    // Looked at every ten minutes at most: a namespace deleted meanwhile lets it go soon.
    Ok(Action::requeue(wait.min(Duration::from_secs(600))))
}

/// A deletion problem, with the way out.
fn escape_hatch(message: &str) -> String {
    format!(
        "{message} (to let the Backup go and keep its data, set spec.deletionPolicy: Retain; it gives up by itself after the operator's --deletion-timeout)"
    )
}
