//! Lengthening the lock of a backup that a longer retention rule keeps (a monthly one kept 12
//! months was written locked for the shortest period, a day or a week): the schedule's
//! retention records the date it wants in `status.lockWantedUntil`, and the Backup runs a
//! worker Job (`<backup>-lock`) that sets it on every object, then records it in
//! `status.lockedUntil`.

use std::time::Duration;

use chrono::Utc;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::job::{self, JobRequest};
use super::status;
use super::workers::{self, Created, Found, JobState};
use crate::api::{Backup, BackupStatus, LockRecord};
use crate::worker::Plan;
use crate::worker::plan::LockPlan;

/// How long a failed extension waits before it is tried again.
const RETRY: Duration = Duration::from_secs(3600);

/// The lock a Backup still has to be given, if any.
pub fn pending(status: &BackupStatus) -> Option<LockRecord> {
    let wanted = status.lock_wanted_until.as_ref()?;
    let lock = status.resolved.as_ref()?.lock.as_ref()?;
    let now = super::lock::current(status);
    (now.is_none_or(|n| n < status::chrono(wanted))).then(|| LockRecord {
        mode: lock.mode,
        retain_until: wanted.clone(),
    })
}

/// Runs (or looks at) the extension Job of a Backup whose lock is to be lengthened.
pub async fn reconcile(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    namespace: &str,
    old: Option<&BackupStatus>,
    lock: LockRecord,
) -> Result<Action, Error> {
    let Some(run) = old.and_then(|s| s.resolved.clone()) else {
        return Ok(Action::await_change());
    };
    let uid = super::backup::uid(backup)?;
    let name = job::job_name(&backup.name_any(), "lock");
    match workers::find(ctx, namespace, &name, &uid).await? {
        Found::Foreign(job) => {
            workers::clear_foreign(ctx, namespace, &job).await?;
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Found::None => {
            let plan = Plan::Lock(LockPlan {
                storage: run.storage.clone(),
                folder: run.folder.clone(),
                lock: lock.clone(),
            });
            let template = super::backup::job_template(ctx, namespace, backup).await?;
            let built = job::build(
                &JobRequest {
                    name: name.clone(),
                    namespace,
                    owner: backup.controller_owner_ref(&()),
                    owner_name: backup.name_any(),
                    owner_uid: uid.clone(),
                    plan: &plan,
                    template: template.as_ref(),
                },
                &ctx.settings.worker,
            )?;
            match workers::create(ctx, namespace, &built).await? {
                Created::Job(_) => Ok(Action::requeue(Duration::from_secs(5))),
                Created::Refused { message, .. } => {
                    ctx.event(backup, true, "LockNotExtended", message).await;
                    Ok(Action::requeue(RETRY))
                }
            }
        }
        Found::Mine(job) => match workers::observe(ctx, namespace, &job).await? {
            JobState::Running { .. } => Ok(Action::requeue(Duration::from_secs(10))),
            JobState::Finished(summary) => {
                if summary.failure.is_none() {
                    let mut status = old.cloned().unwrap_or_default();
                    // The date the Job set (a later one may be wanted meanwhile).
                    status.locked_until = Some(
                        summary
                            .retained_until
                            .map_or_else(|| lock.retain_until.clone(), status::time),
                    );
                    status::set_condition(
                        &mut status.conditions,
                        "LockExtended",
                        true,
                        "LockExtended",
                        &summary.message,
                        backup.metadata.generation,
                    );
                    status::apply_fresh(api, backup, old, &status).await?;
                    ctx.event(backup, false, "LockExtended", &summary.message)
                        .await;
                    workers::delete(ctx, namespace, &name).await?;
                    return Ok(Action::await_change());
                }
                let message = format!(
                    "the lock of the backup's objects could not be extended to {} (trying again in {} minutes; the credentials need s3:PutObjectRetention): {}",
                    status::chrono(&lock.retain_until).to_rfc3339(),
                    RETRY.as_secs() / 60,
                    summary.message
                );
                let mut status = old.cloned().unwrap_or_default();
                let first = status::condition(&status.conditions, "LockExtended")
                    .is_none_or(|c| c.status != "False");
                status::set_condition(
                    &mut status.conditions,
                    "LockExtended",
                    false,
                    "LockNotExtended",
                    &message,
                    backup.metadata.generation,
                );
                status::apply(api, backup, old, &status).await?;
                if first {
                    ctx.event(backup, true, "LockNotExtended", message).await;
                }
                // The failed Job stays until the retry, so that it is not made again at once.
                let finished = job
                    .status
                    .as_ref()
                    .and_then(|s| s.completion_time.clone().or(s.start_time.clone()))
                    .map_or_else(Utc::now, |t| status::chrono(&t));
                if Utc::now() - finished > chrono::TimeDelta::from_std(RETRY).unwrap_or_default() {
                    workers::delete(ctx, namespace, &name).await?;
                    return Ok(Action::requeue(Duration::from_secs(2)));
                }
                Ok(Action::requeue(RETRY))
            }
        },
    }
}
