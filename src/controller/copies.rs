//! Copies of a successful Backup in its schedule's other stores (`spec.copies`): one worker
//! Job per copy (`<backup>-copy-<name>`), its result in `status.copies`, retried with a
//! doubling delay until it succeeds. A copy never changes the Backup's phase; the `Copied`
//! condition, an Event and the `coffer_copies_total` metric say how copies go.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::backup::schedule_name;
use super::context::Context;
use super::error::Error;
use super::job::{self, JobRequest};
use super::location;
use super::metrics::CopyLabels;
use super::references;
use super::status::{self, set_condition};
use super::workers::{self, Created, Found, JobState};
use crate::api::{Backup, BackupCopy, BackupStatus, CopyPhase, CopyStatus, ResolvedRun};
use crate::worker::Plan;
use crate::worker::Summary;
use crate::worker::plan::{CopyPlan, CopyStore};

/// How often running copies are looked at (their Jobs' changes wake the Backup too).
const RECHECK: Duration = Duration::from_secs(15);
/// The longest wait between two attempts of a copy.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Whether a Backup has copies still to make (or to retry).
pub fn outstanding(status: &BackupStatus) -> bool {
    let Some(run) = &status.resolved else {
        return false;
    };
    run.copies.iter().any(|copy| {
        !status.copies.iter().any(|c| {
            c.name == copy.name && matches!(c.phase, CopyPhase::Succeeded | CopyPhase::Removed)
        })
    })
}

/// Whether a copy of the Backup is about to be made or being made (not one that failed
/// and waits for its next attempt).
pub fn in_progress(status: &BackupStatus) -> bool {
    let Some(run) = &status.resolved else {
        return false;
    };
    run.copies.iter().any(|copy| {
        status
            .copies
            .iter()
            .find(|c| c.name == copy.name)
            .is_none_or(|c| matches!(c.phase, CopyPhase::Pending | CopyPhase::Running))
    })
}

/// When the copy that failed `attempts` times may be tried again.
pub fn next_attempt(now: DateTime<Utc>, attempts: i32, base: Duration) -> DateTime<Utc> {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
    let wait = base
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(MAX_BACKOFF);
    now + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::hours(1))
}

/// The `Copied` condition from the copies' states: true when every copy is made.
pub fn mark(status: &mut BackupStatus, generation: Option<i64>) {
    let failed: Vec<&CopyStatus> = status
        .copies
        .iter()
        .filter(|c| c.phase == CopyPhase::Failed)
        .collect();
    let (ok, reason, message) = if let Some(first) = failed.first() {
        (
            false,
            "CopyFailed",
            format!(
                "copy {:?} failed {} time(s), trying again{}: {}",
                first.name,
                first.attempts,
                first
                    .next_attempt_time
                    .as_ref()
                    .map(|t| format!(" at {}", status::chrono(t).to_rfc3339()))
                    .unwrap_or_default(),
                first.message
            ),
        )
    } else if status
        .copies
        .iter()
        .any(|c| matches!(c.phase, CopyPhase::Pending | CopyPhase::Running))
    {
        (
            false,
            "Copying",
            "copying the backup to its copy stores".to_owned(),
        )
    } else {
        (
            true,
            "Copied",
            format!(
                "the backup is in {} other store(s), checked object by object",
                status.copies.len()
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        "Copied",
        ok,
        reason,
        &message,
        generation,
    );
}

/// Makes (or retries) the copies of a successful Backup.
pub async fn reconcile(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    namespace: &str,
    old: Option<&BackupStatus>,
) -> Result<Action, Error> {
    let mut status = old.cloned().unwrap_or_default();
    let Some(run) = status.resolved.clone() else {
        return Ok(Action::await_change());
    };
    let uid = super::backup::uid(backup)?;
    let now = Utc::now();
    let mut wake: Option<DateTime<Utc>> = None;
    let mut done = Vec::new();
    let mut soon = |at: DateTime<Utc>| {
        wake = Some(wake.map_or(at, |w| w.min(at)));
    };
    for (n, copy) in run.copies.iter().enumerate() {
        let index = match status.copies.iter().position(|c| c.name == copy.name) {
            Some(i) => i,
            None => {
                status.copies.push(CopyStatus {
                    name: copy.name.clone(),
                    location: location::display(&copy.storage, &run.folder),
                    phase: CopyPhase::Pending,
                    attempts: 0,
                    verified_time: None,
                    next_attempt_time: None,
                    message: String::new(),
                });
                status.copies.len() - 1
            }
        };
        let entry = &mut status.copies[index];
        if matches!(entry.phase, CopyPhase::Succeeded | CopyPhase::Removed) {
            continue;
        }
        if let Some(at) = entry.next_attempt_time.as_ref().map(status::chrono)
            && at > now
        {
            soon(at);
            continue;
        }
        let job_name = job::job_name(&backup.name_any(), &format!("copy-{n}"));
        let step = Step {
            ctx,
            backup,
            namespace,
            uid: &uid,
            run: &run,
            copy,
            job_name: &job_name,
        };
        match workers::find(ctx, namespace, &job_name, &uid).await? {
            Found::Foreign(job) => {
                workers::clear_foreign(ctx, namespace, &job).await?;
                soon(now + chrono::TimeDelta::seconds(2));
            }
            Found::None if entry.phase == CopyPhase::Running => {
                let lost = format!(
                    "the copy Job {job_name} is gone before its result was read; copying again"
                );
                step.failed(entry, "WorkerVanished", &lost).await;
                soon(now);
            }
            Found::None => match step.start().await? {
                Ok(()) => {
                    entry.phase = CopyPhase::Running;
                    entry.next_attempt_time = None;
                    entry.message = format!("worker Job {job_name} copies the backup");
                    soon(now + chrono::TimeDelta::from_std(RECHECK).unwrap_or_default());
                }
                Err(problem) => {
                    step.failed(entry, "CopyNotStarted", &problem).await;
                    soon(next(entry));
                }
            },
            Found::Mine(job) => match workers::observe(ctx, namespace, &job).await? {
                JobState::Running { waiting } => {
                    entry.phase = CopyPhase::Running;
                    if let Some(waiting) = waiting {
                        entry.message = waiting;
                    }
                    soon(now + chrono::TimeDelta::from_std(RECHECK).unwrap_or_default());
                }
                JobState::Finished(summary) => {
                    step.finished(entry, &summary).await;
                    // Deleted once the result is in status (below): the next attempt needs
                    // the name free, and a result not yet recorded must stay readable.
                    done.push(job_name.clone());
                    if entry.phase == CopyPhase::Failed {
                        soon(next(entry));
                    }
                }
            },
        }
    }
    mark(&mut status, backup.metadata.generation);
    status::apply_fresh(api, backup, old, &status).await?;
    for name in done {
        workers::delete(ctx, namespace, &name).await?;
    }
    Ok(match wake {
        Some(at) => Action::requeue((at - Utc::now()).to_std().unwrap_or(Duration::from_secs(1))),
        None => Action::await_change(),
    })
}

fn next(entry: &CopyStatus) -> DateTime<Utc> {
    entry
        .next_attempt_time
        .as_ref()
        .map_or_else(Utc::now, status::chrono)
}

/// The folder of a schedule's backups, from one backup's folder (its parent).
fn group_of(folder: &str) -> String {
    let trimmed = folder.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(at) => trimmed[..=at].to_owned(),
        None => String::new(),
    }
}

/// One copy of one Backup.
struct Step<'a> {
    ctx: &'a Context,
    backup: &'a Backup,
    namespace: &'a str,
    uid: &'a str,
    run: &'a ResolvedRun,
    copy: &'a BackupCopy,
    job_name: &'a str,
}

impl Step<'_> {
    /// Creates the copy's worker Job; `Err` says why it cannot start now.
    async fn start(&self) -> Result<Result<(), String>, Error> {
        let (ctx, namespace, backup) = (self.ctx, self.namespace, self.backup);
        for storage in [&self.run.storage, &self.copy.storage] {
            if let Some(problem) = references::check_storage(ctx, namespace, storage).await? {
                return Ok(Err(problem.message));
            }
        }
        references::ensure_worker_account(ctx, namespace).await?;
        let plan = Plan::Copy(CopyPlan {
            storage: self.run.storage.clone(),
            folder: self.run.folder.clone(),
            to: CopyStore {
                name: self.copy.name.clone(),
                storage: self.copy.storage.clone(),
            },
            manifest_sha256: backup
                .status
                .as_ref()
                .and_then(|s| s.manifest_sha256.clone()),
            retention: self.copy.retention.clone(),
            group: group_of(&self.run.folder),
            time_zone: self.time_zone().await?,
        });
        let template = super::backup::job_template(ctx, namespace, backup).await?;
        let built = job::build(
            &JobRequest {
                name: self.job_name.to_owned(),
                namespace,
                owner: backup.controller_owner_ref(&()),
                owner_name: backup.name_any(),
                owner_uid: self.uid.to_owned(),
                plan: &plan,
                template: template.as_ref(),
            },
            &ctx.settings.worker,
        )?;
        Ok(match workers::create(ctx, namespace, &built).await? {
            Created::Job(_) => Ok(()),
            Created::Refused { message, .. } => Err(message),
        })
    }

    /// The schedule's time zone (retention counts its days in it).
    async fn time_zone(&self) -> Result<String, Error> {
        let schedules: Api<crate::api::BackupSchedule> =
            Api::namespaced(self.ctx.client.clone(), self.namespace);
        Ok(schedules
            .get_opt(&schedule_name(self.backup))
            .await?
            .map(|s| s.spec.time_zone)
            .unwrap_or_default())
    }

    /// Records the worker's result.
    async fn finished(&self, entry: &mut CopyStatus, summary: &Summary) {
        match summary.failure {
            None => {
                entry.phase = CopyPhase::Succeeded;
                entry.attempts += 1;
                entry.verified_time =
                    Some(status::time(summary.completed_at.unwrap_or_else(Utc::now)));
                entry.next_attempt_time = None;
                entry.message.clone_from(&summary.message);
                self.count("succeeded");
                if let Err(e) = self.mark_removed(&summary.pruned).await {
                    tracing::warn!("could not record the copies retention deleted: {e}");
                }
                self.ctx
                    .event(
                        self.backup,
                        false,
                        "Copied",
                        format!("copy {:?}: {}", entry.name, summary.message),
                    )
                    .await;
            }
            Some(failure) => self.failed(entry, failure.as_str(), &summary.message).await,
        }
    }

    /// The copies the copy store's retention deleted: their Backups say so.
    async fn mark_removed(&self, folders: &[String]) -> Result<(), Error> {
        if folders.is_empty() {
            return Ok(());
        }
        let api: Api<Backup> = Api::namespaced(self.ctx.client.clone(), self.namespace);
        // Backups made by hand with a scheduleRef have no schedule label: all are looked at.
        let list = api.list(&kube::api::ListParams::default()).await?;
        for other in list.items {
            if schedule_name(&other) != schedule_name(self.backup) {
                continue;
            }
            let Some(old) = other.status.clone() else {
                continue;
            };
            let folder = old.resolved.as_ref().map(|r| r.folder.as_str());
            if !folder.is_some_and(|f| folders.iter().any(|p| p == f)) {
                continue;
            }
            let mut status = old.clone();
            for entry in status
                .copies
                .iter_mut()
                .filter(|c| c.name == self.copy.name)
            {
                entry.phase = CopyPhase::Removed;
                entry.message = format!(
                    "deleted by the retention of copy {:?} (the Backup's own data is untouched)",
                    self.copy.name
                );
            }
            status::apply(&api, &other, Some(&old), &status).await?;
        }
        Ok(())
    }

    /// An attempt failed: the copy is tried again later, with an Event and the metric.
    async fn failed(&self, entry: &mut CopyStatus, reason: &str, message: &str) {
        entry.phase = CopyPhase::Failed;
        entry.attempts += 1;
        let next = next_attempt(Utc::now(), entry.attempts, self.ctx.settings.copy_backoff);
        entry.next_attempt_time = Some(status::time(next));
        entry.message = format!("{reason}: {message}");
        self.count(reason);
        self.ctx
            .event(
                self.backup,
                true,
                "CopyFailed",
                format!(
                    "copy {:?} to {} failed (attempt {}), trying again at {}: {reason}: {message}",
                    entry.name,
                    entry.location,
                    entry.attempts,
                    next.to_rfc3339()
                ),
            )
            .await;
    }

    fn count(&self, result: &str) {
        self.ctx
            .metrics
            .copies
            .get_or_create(&CopyLabels {
                namespace: self.namespace.to_owned(),
                schedule: schedule_name(self.backup),
                copy: self.copy.name.clone(),
                result: result.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn attempts_wait_twice_as_long_each_time_up_to_an_hour() {
        let now = Utc::now();
        let base = Duration::from_secs(60);
        let waits: Vec<i64> = [1, 2, 3, 7, 30]
            .iter()
            .map(|n| (next_attempt(now, *n, base) - now).num_seconds())
            .collect();
        assert_eq!(waits, [60, 120, 240, 3600, 3600]);
    }

    fn copy(name: &str, phase: CopyPhase) -> CopyStatus {
        CopyStatus {
            name: name.to_owned(),
            location: format!("s3://{name}/x/"),
            phase,
            attempts: 1,
            verified_time: None,
            next_attempt_time: None,
            message: "boom".to_owned(),
        }
    }

    #[test]
    fn the_condition_says_which_copy_failed_and_is_true_only_when_all_are_made() {
        let mut status = BackupStatus {
            copies: vec![
                copy("a", CopyPhase::Succeeded),
                copy("b", CopyPhase::Failed),
            ],
            ..BackupStatus::default()
        };
        mark(&mut status, None);
        let c = status::condition(&status.conditions, "Copied").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "CopyFailed")
        );
        assert!(
            c.message.contains("\"b\"") && c.message.contains("boom"),
            "{}",
            c.message
        );
        status.copies[1].phase = CopyPhase::Running;
        mark(&mut status, None);
        let c = status::condition(&status.conditions, "Copied").unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Copying"));
        status.copies[1].phase = CopyPhase::Succeeded;
        mark(&mut status, None);
        let c = status::condition(&status.conditions, "Copied").unwrap();
        assert_eq!(c.status, "True");
    }
}
