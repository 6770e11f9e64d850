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
use crate::api::{
    Backup, BackupCopy, BackupStatus, CopyPhase, CopyStatus, NotifyEvent, ResolvedRun,
};
use crate::worker::Plan;
use crate::worker::plan::{CopyPlan, CopyStore};
use crate::worker::{Failure, Summary};

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
            c.name == copy.name
                && matches!(
                    c.phase,
                    CopyPhase::Succeeded | CopyPhase::Removed | CopyPhase::Abandoned
                )
        })
    })
}

/// Whether a copy of the Backup is still to be made: about to be, being made, or waiting
/// for its next attempt (the schedule's retention keeps such a Backup).
pub fn in_progress(status: &BackupStatus) -> bool {
    outstanding(status)
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
    let abandoned = status
        .copies
        .iter()
        .find(|c| c.phase == CopyPhase::Abandoned);
    let (ok, reason, message) = if let Some(given_up) = abandoned {
        (
            false,
            "CopyAbandoned",
            format!(
                "copy {:?} cannot be made and is not tried again: {}",
                given_up.name, given_up.message
            ),
        )
    } else if let Some(first) = failed.first() {
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

/// Why a copy can never be made, found from the settings alone: a copy inside the schedule's
/// own store (or another copy's) would mix their backups and let one's retention delete the
/// other's; a copy without credentials of its own would be written with the schedule store's.
pub fn problems(run: &ResolvedRun) -> Vec<Option<String>> {
    use crate::worker::same_store;
    run.copies
        .iter()
        .enumerate()
        .map(|(n, copy)| {
            if same_store(&run.storage, &copy.storage) {
                return Some(format!(
                    "copy {:?} is in the schedule's own store (the same bucket with an overlapping prefix, or the same claim): give it another bucket, prefix or claim",
                    copy.name
                ));
            }
            if let Some(other) = run.copies[..n]
                .iter()
                .find(|o| same_store(&o.storage, &copy.storage))
            {
                return Some(format!(
                    "copy {:?} is in the same store as copy {:?} (the same bucket with an overlapping prefix, or the same claim): give each copy its own",
                    copy.name, other.name
                ));
            }
            let own_secret = |s: &crate::api::BackupStorage| {
                s.s3.as_ref().is_some_and(|s| s.credentials_secret_ref.is_some())
            };
            if copy.storage.s3.is_some() && own_secret(&run.storage) && !own_secret(&copy.storage) {
                return Some(format!(
                    "copy {:?} names no credentialsSecretRef: give it a Secret of its own (the schedule store's keys are never used for a copy)",
                    copy.name
                ));
            }
            None
        })
        .collect()
}

/// What a reconcile does once its status is written (so that a write that fails, on a stale
/// read, repeats none of it).
enum Effect {
    Event {
        warning: bool,
        reason: &'static str,
        message: String,
    },
    Count {
        copy: String,
        result: String,
    },
    /// Other Backups whose copy in `copy` its store's retention deleted.
    Removed {
        copy: String,
        folders: Vec<String>,
    },
    DeleteJob(String),
    /// Copy number n failed for the first time, or was given up: its Notifiers are told.
    Tell(usize),
}

/// Makes (or retries) the copies of a successful Backup. `also` is when the Backup wants to
/// be looked at anyway (a notification to retry).
pub async fn reconcile(
    ctx: &Context,
    api: &Api<Backup>,
    backup: &Backup,
    namespace: &str,
    old: Option<&BackupStatus>,
    also: Option<Duration>,
) -> Result<Action, Error> {
    let mut status = old.cloned().unwrap_or_default();
    let Some(run) = status.resolved.clone() else {
        return Ok(Action::await_change());
    };
    // Jobs are created and results recorded only from the newest version: a stale read would
    // start a copy that was already made, or take a finished Job for a vanished one.
    let fresh = api.get(&backup.name_any()).await?;
    if fresh.resource_version() != backup.resource_version() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let uid = super::backup::uid(backup)?;
    let now = Utc::now();
    let problems = problems(&run);
    let mut wake: Option<DateTime<Utc>> =
        also.and_then(|d| chrono::TimeDelta::from_std(d).ok().map(|d| now + d));
    let mut effects = Vec::new();
    let mut soon = |at: DateTime<Utc>| {
        wake = Some(wake.map_or(at, |w| w.min(at)));
    };
    let recheck = now + chrono::TimeDelta::from_std(RECHECK).unwrap_or_default();
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
        if matches!(
            entry.phase,
            CopyPhase::Succeeded | CopyPhase::Removed | CopyPhase::Abandoned
        ) {
            continue;
        }
        let step = Step {
            ctx,
            backup,
            namespace,
            uid: &uid,
            run: &run,
            copy,
            index: n,
            job_name: job::job_name(&backup.name_any(), &format!("copy-{n}")),
        };
        if let Some(problem) = &problems[n] {
            step.abandon(entry, "InvalidCopy", problem, &mut effects);
            continue;
        }
        if let Some(at) = entry.next_attempt_time.as_ref().map(status::chrono)
            && at > now
        {
            soon(at);
            continue;
        }
        let job_name = step.job_name.clone();
        match workers::find(ctx, namespace, &job_name, &uid).await? {
            Found::Foreign(job) => {
                workers::clear_foreign(ctx, namespace, &job).await?;
                soon(now + chrono::TimeDelta::seconds(2));
            }
            // A Pod left by a vanished Job may still be writing: the next attempt waits.
            Found::None
                if entry.phase == CopyPhase::Running
                    && workers::pods_left(ctx, namespace, &job_name).await? > 0 =>
            {
                soon(now + chrono::TimeDelta::seconds(5));
            }
            Found::None if entry.phase == CopyPhase::Running => {
                let lost = format!(
                    "the copy Job {job_name} is gone before its result was read; copying again"
                );
                step.failed(entry, "WorkerVanished", &lost, &mut effects);
                soon(next(entry));
            }
            Found::None => match step.start().await? {
                Ok(()) => {
                    entry.phase = CopyPhase::Running;
                    entry.next_attempt_time = None;
                    entry.message = format!("worker Job {job_name} copies the backup");
                    soon(recheck);
                }
                Err(problem) => {
                    step.failed(entry, "CopyNotStarted", &problem, &mut effects);
                    soon(next(entry));
                }
            },
            Found::Mine(job) => match workers::observe(ctx, namespace, &job).await? {
                JobState::Running { waiting } => {
                    entry.phase = CopyPhase::Running;
                    if let Some(waiting) = waiting {
                        entry.message = waiting;
                    }
                    soon(recheck);
                }
                JobState::Finished(summary) => {
                    step.finished(entry, &summary, &mut effects);
                    // Deleted once the result is in status: the next attempt needs the name
                    // free, and a result not yet recorded must stay readable.
                    effects.push(Effect::DeleteJob(job_name.clone()));
                    if entry.phase == CopyPhase::Failed {
                        soon(next(entry));
                    }
                }
            },
        }
    }
    // This Backup's own copies that a store's retention deleted (an old backup copied late).
    for effect in &effects {
        if let Effect::Removed { copy, folders } = effect
            && folders.contains(&run.folder)
        {
            removed(&mut status, copy);
        }
    }
    // The first failure of each copy (or its abandonment) is told, in the same write.
    let told: Vec<usize> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Tell(n) => Some(*n),
            _ => None,
        })
        .collect();
    if !told.is_empty() {
        let refs = super::backup::notifiers(ctx, namespace, backup).await?;
        if !refs.is_empty() {
            let wants = super::notify::lookup(ctx, namespace, &refs).await?;
            let base = status
                .completion_time
                .as_ref()
                .map_or_else(Utc::now, status::chrono);
            for n in told {
                // One delivery per copy of this Backup: its id is the copy's number.
                let at = base + chrono::TimeDelta::seconds(i64::try_from(n).unwrap_or(0));
                let planned = super::notify::plan_event(NotifyEvent::CopyFailed, at, &wants)
                    .into_iter()
                    .filter(|d| !status.notifications.iter().any(|o| o.id == d.id))
                    .collect();
                for problem in super::notify::add_planned(&mut status.notifications, planned) {
                    effects.push(Effect::Event {
                        warning: true,
                        reason: "NotificationFailed",
                        message: problem,
                    });
                }
            }
            super::notify::mark(
                &mut status.conditions,
                &status.notifications,
                backup.metadata.generation,
            );
        }
    }
    mark(&mut status, backup.metadata.generation);
    status::apply_fresh(api, backup, old, &status).await?;
    for effect in effects {
        match effect {
            Effect::Event {
                warning,
                reason,
                message,
            } => ctx.event(backup, warning, reason, message).await,
            Effect::Count { copy, result } => {
                ctx.metrics
                    .copies
                    .get_or_create(&CopyLabels {
                        namespace: namespace.to_owned(),
                        schedule: schedule_name(backup),
                        copy,
                        result,
                    })
                    .inc();
            }
            Effect::Removed { copy, folders } => {
                if let Err(e) = mark_removed(ctx, namespace, backup, &copy, &folders).await {
                    tracing::warn!("could not record the copies retention deleted: {e}");
                }
            }
            Effect::DeleteJob(name) => workers::delete(ctx, namespace, &name).await?,
            Effect::Tell(_) => {}
        }
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

/// Marks `copy` of a Backup's status as deleted by its store's retention.
fn removed(status: &mut BackupStatus, copy: &str) {
    for entry in status.copies.iter_mut().filter(|c| c.name == copy) {
        entry.phase = CopyPhase::Removed;
        entry.next_attempt_time = None;
        entry.message = format!(
            "deleted by the retention of copy {copy:?} (the Backup's own data is untouched)"
        );
    }
}

/// The other Backups of the schedule whose copy in `copy` was deleted by the copy store's
/// retention: each says so (read fresh and written with its version, so that nothing else in
/// its status is undone).
async fn mark_removed(
    ctx: &Context,
    namespace: &str,
    backup: &Backup,
    copy: &str,
    folders: &[String],
) -> Result<(), Error> {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), namespace);
    // Backups made by hand with a scheduleRef have no schedule label: all are looked at.
    let list = api.list(&kube::api::ListParams::default()).await?;
    for other in list.items {
        if other.uid() == backup.uid() || schedule_name(&other) != schedule_name(backup) {
            continue;
        }
        let folder = other
            .status
            .as_ref()
            .and_then(|s| s.resolved.as_ref())
            .map(|r| r.folder.clone());
        if !folder.is_some_and(|f| folders.contains(&f)) {
            continue;
        }
        let name = other.name_any();
        for _ in 0..3 {
            let Some(current) = api.get_opt(&name).await? else {
                break;
            };
            let old = current.status.clone();
            let mut status = old.clone().unwrap_or_default();
            removed(&mut status, copy);
            mark(&mut status, current.metadata.generation);
            match status::apply_fresh(&api, &current, old.as_ref(), &status).await {
                Ok(()) => break,
                Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
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
    /// The copy's number in the schedule's list.
    index: usize,
    job_name: String,
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
            lock: super::lock::record(
                &self.copy.storage,
                self.copy.retention.as_ref(),
                // From now: a copy made late is locked for its whole period (and never
                // with a date already past, which S3 refuses).
                super::backup::run_time(backup).max(Utc::now()),
            ),
        });
        let template = super::backup::job_template(ctx, namespace, backup).await?;
        let built = job::build(
            &JobRequest {
                name: self.job_name.clone(),
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
    fn finished(&self, entry: &mut CopyStatus, summary: &Summary, effects: &mut Vec<Effect>) {
        let Some(failure) = summary.failure else {
            entry.phase = CopyPhase::Succeeded;
            entry.attempts += 1;
            entry.verified_time = Some(status::time(summary.completed_at.unwrap_or_else(Utc::now)));
            entry.next_attempt_time = None;
            entry.message.clone_from(&summary.message);
            effects.push(self.count("succeeded"));
            effects.push(Effect::Event {
                warning: false,
                reason: "Copied",
                message: format!("copy {:?}: {}", entry.name, summary.message),
            });
            if let Some(problem) = &summary.prune_error {
                effects.push(Effect::Event {
                    warning: true,
                    reason: "CopyRetentionFailed",
                    message: format!(
                        "the retention of copy {:?} stopped: {problem}; it runs again after the next copy",
                        entry.name
                    ),
                });
            }
            if !summary.pruned.is_empty() {
                effects.push(Effect::Removed {
                    copy: entry.name.clone(),
                    folders: summary.pruned.clone(),
                });
            }
            return;
        };
        // What no attempt can change: said once, not retried.
        if matches!(
            failure,
            Failure::InvalidPlan
                | Failure::AlreadyExists
                | Failure::BackupNotFound
                | Failure::NotOwned
        ) {
            entry.attempts += 1;
            self.abandon(entry, failure.as_str(), &summary.message, effects);
            return;
        }
        self.failed(entry, failure.as_str(), &summary.message, effects);
    }

    /// An attempt failed: the copy is tried again later, with an Event and the metric.
    fn failed(
        &self,
        entry: &mut CopyStatus,
        reason: &str,
        message: &str,
        effects: &mut Vec<Effect>,
    ) {
        entry.phase = CopyPhase::Failed;
        entry.attempts += 1;
        if entry.attempts == 1 {
            effects.push(Effect::Tell(self.index));
        }
        let next = next_attempt(Utc::now(), entry.attempts, self.ctx.settings.copy_backoff);
        entry.next_attempt_time = Some(status::time(next));
        entry.message = format!("{reason}: {message}");
        effects.push(self.count(reason));
        effects.push(Effect::Event {
            warning: true,
            reason: "CopyFailed",
            message: format!(
                "copy {:?} to {} failed (attempt {}), trying again at {}: {reason}: {message}",
                entry.name,
                entry.location,
                entry.attempts,
                next.to_rfc3339()
            ),
        });
    }

    /// The copy can never be made: it is not tried again.
    fn abandon(
        &self,
        entry: &mut CopyStatus,
        reason: &str,
        message: &str,
        effects: &mut Vec<Effect>,
    ) {
        // Told unless an earlier failure of this copy was.
        if entry.attempts <= 1 {
            effects.push(Effect::Tell(self.index));
        }
        entry.phase = CopyPhase::Abandoned;
        entry.next_attempt_time = None;
        entry.message = format!("{reason}: {message}");
        effects.push(self.count(reason));
        effects.push(Effect::Event {
            warning: true,
            reason: "CopyFailed",
            message: format!(
                "copy {:?} to {} is given up: {reason}: {message}",
                entry.name, entry.location
            ),
        });
    }

    fn count(&self, result: &str) -> Effect {
        Effect::Count {
            copy: self.copy.name.clone(),
            result: result.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn s3(bucket: &str, prefix: &str, secret: Option<&str>) -> crate::api::BackupStorage {
        crate::api::BackupStorage {
            s3: Some(crate::api::S3Storage {
                bucket: bucket.into(),
                prefix: prefix.into(),
                endpoint: Some("http://minio:9000".into()),
                region: "us-east-1".into(),
                force_path_style: true,
                credentials_secret_ref: secret
                    .map(|name| crate::api::LocalObjectReference { name: name.into() }),
                object_lock: None,
            }),
            filesystem: None,
        }
    }

    fn run(copies: Vec<crate::api::BackupStorage>) -> ResolvedRun {
        ResolvedRun {
            source: crate::api::BackupSource {
                redis: None,
                postgres: None,
                mysql: None,
                volume: None,
            },
            storage: s3("backups", "prod/", Some("s3-creds")),
            compression: crate::api::Compression::Zstd,
            encryption: None,
            folder: "shop/bot/20261201T000000Z-abc/".into(),
            copies: copies
                .into_iter()
                .enumerate()
                .map(|(n, storage)| BackupCopy {
                    name: format!("c{n}"),
                    storage,
                    retention: None,
                })
                .collect(),
            lock: None,
        }
    }

    #[test]
    fn a_copy_in_the_schedules_store_or_another_copys_or_without_its_own_keys_is_refused() {
        let found = problems(&run(vec![
            // Inside the schedule's own prefix.
            s3("backups", "prod/dr/", Some("other")),
            // Another bucket: fine.
            s3("offsite", "", Some("offsite-creds")),
            // The same bucket and prefix as the copy before it.
            s3("offsite", "x/", Some("offsite-creds")),
            // No Secret while the schedule's store has one.
            s3("third", "", None),
            // Another prefix of the schedule's bucket that does not overlap: fine.
            s3("backups", "dr/", Some("s3-creds")),
        ]));
        assert!(found[0].as_ref().unwrap().contains("schedule's own store"));
        assert_eq!(found[1], None);
        assert!(
            found[2]
                .as_ref()
                .unwrap()
                .contains("same store as copy \"c1\"")
        );
        assert!(
            found[3]
                .as_ref()
                .unwrap()
                .contains("no credentialsSecretRef")
        );
        assert_eq!(found[4], None);
    }

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
