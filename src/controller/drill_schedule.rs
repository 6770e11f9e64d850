//! The schedule's side of restore drills (`spec.drill`): when one is due (at its cron times,
//! or after every N successful backups), it chooses a backup (the newest successful one;
//! every `olderEvery`-th drill a random older one) and asks it for a drill by recording the
//! time in its `status.drillRequestedAt` (the Backup runs it: [`super::drill`]). The newest
//! finished drill of its Backups is the schedule's `status.lastDrill`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::backup::run_time;
use super::context::Context;
use super::status::{self, set_condition};
use crate::api::{
    Backup, BackupPhase, BackupSchedule, BackupScheduleStatus, DrillSpec, LastDrill,
    VerificationPhase,
};
use crate::schedule::CronSchedule;

/// What the schedule decided about drills now.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do; look again at this time, if any.
    Wait(Option<DateTime<Utc>>),
    /// Ask the named Backup for a drill.
    Drill(String),
}

/// One of the schedule's Backups, as drills see it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    pub time: DateTime<Utc>,
    /// Successful, not being deleted.
    pub usable: bool,
    /// A drill was asked for and has not finished.
    pub drilling: bool,
}

/// What the schedule knows of its drills so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// When the last drill was asked for (or the schedule created).
    pub since: DateTime<Utc>,
    /// Successful backups seen since then (retention may have deleted some already).
    pub successes: u64,
    /// Drills asked for so far (every `olderEvery`-th takes an older backup).
    pub requests: u64,
}

/// Whether a drill is due and of which backup; `pick` chooses among the older ones.
pub fn decide(
    drill: &DrillSpec,
    cron: Option<&CronSchedule>,
    counts: Counts,
    now: DateTime<Utc>,
    backups: &[Candidate],
    pick: u64,
) -> Decision {
    let Counts {
        since,
        successes,
        requests,
    } = counts;
    let next = cron.and_then(|c| c.next_after(now));
    if backups.iter().any(|b| b.drilling) {
        return Decision::Wait(next);
    }
    let mut usable: Vec<&Candidate> = backups.iter().filter(|b| b.usable).collect();
    usable.sort_by_key(|b| b.time);
    let due = match (cron, drill.every) {
        (Some(cron), _) => super::due::latest_due(cron, since, now).is_some(),
        (None, Some(every)) => successes >= u64::from(every.max(1)),
        (None, None) => false,
    };
    let Some(newest) = usable.last() else {
        return Decision::Wait(next);
    };
    if !due {
        return Decision::Wait(next);
    }
    let older = &usable[..usable.len() - 1];
    let older_turn =
        drill.older_every > 0 && (requests + 1).is_multiple_of(u64::from(drill.older_every));
    if older_turn && !older.is_empty() {
        let index = usize::try_from(pick % older.len() as u64).unwrap_or(0);
        return Decision::Drill(older[index].name.clone());
    }
    Decision::Drill(newest.name.clone())
}

/// The newest finished drill among the Backups.
pub fn last_drill(backups: &[Backup]) -> Option<LastDrill> {
    backups
        .iter()
        .filter_map(|b| {
            let v = b.status.as_ref()?.verification.as_ref()?;
            (v.phase != VerificationPhase::Running).then(|| LastDrill {
                backup: b.name_any(),
                verification: v.clone(),
            })
        })
        .max_by_key(|d| d.verification.time.as_ref().map(status::chrono))
}

/// The record to keep of the last drill: the one found among the Backups, unless the one
/// recorded is newer (its Backup deleted since, by retention or by hand, the record stays).
pub fn newer(recorded: Option<LastDrill>, found: Option<LastDrill>) -> Option<LastDrill> {
    let time = |d: &LastDrill| d.verification.time.as_ref().map(status::chrono);
    match (recorded, found) {
        (Some(r), Some(f)) if time(&r) > time(&f) => Some(r),
        (r, f) => f.or(r),
    }
}

/// When the last drill was asked for: the schedule's record, or a Backup's if later (the
/// schedule's own record of a request can fail to be written after the request was).
pub fn since(schedule: &BackupSchedule, backups: &[Backup], now: DateTime<Utc>) -> DateTime<Utc> {
    let status = schedule.status.as_ref();
    status
        .and_then(|s| s.last_drill_request.as_ref())
        .into_iter()
        .chain(
            backups
                .iter()
                .filter_map(|b| b.status.as_ref()?.drill_requested_at.as_ref()),
        )
        .map(status::chrono)
        .max()
        .or_else(|| {
            schedule
                .metadata
                .creation_timestamp
                .as_ref()
                .map(status::chrono)
        })
        .unwrap_or(now)
}

/// Before retention deletes any of them: the newest finished drill of the Backups becomes
/// `lastDrill`, and successful backups not seen before are counted (for `every`).
pub fn observe(
    schedule: &BackupSchedule,
    backups: &[Backup],
    status: &mut BackupScheduleStatus,
    now: DateTime<Utc>,
) {
    if schedule.spec.drill.is_none() {
        status.last_drill = None;
        status.successes_since_drill = 0;
        status.drill_counted_until = None;
        status.conditions.retain(|c| c.type_ != "DrillScheduled");
        return;
    }
    status.last_drill = newer(status.last_drill.take(), last_drill(backups));
    // A request recorded on a Backup that this status does not know (the schedule's status
    // write after asking was lost to a conflict): counted as if it had been written, so
    // that `every` does not ask again for the same backups and `olderEvery` keeps count.
    let asked = backups
        .iter()
        .filter_map(|b| b.status.as_ref()?.drill_requested_at.as_ref())
        .map(status::chrono)
        .max();
    let known = status.last_drill_request.as_ref().map(status::chrono);
    if let Some(asked) = asked
        && known.is_none_or(|known| known < asked)
    {
        status.last_drill_request = Some(status::time(asked));
        status.drills_requested += 1;
        status.successes_since_drill = 0;
        status.drill_counted_until = Some(status::time(asked));
    }
    // After the newest one counted; the first time, from the schedule's creation or last
    // request on (the same second included: times have whole seconds).
    let counted = status.drill_counted_until.as_ref().map(status::chrono);
    let from = since(schedule, backups, now);
    let new: Vec<DateTime<Utc>> = backups
        .iter()
        .filter_map(|b| {
            let s = b.status.as_ref()?;
            (s.phase == Some(BackupPhase::Succeeded))
                .then(|| s.completion_time.as_ref().map(status::chrono))?
        })
        .filter(|t| counted.map_or(*t >= from, |c| *t > c))
        .collect();
    if let Some(newest) = new.iter().max() {
        status.successes_since_drill += new.len() as u64;
        status.drill_counted_until = Some(status::time(*newest));
    }
}

/// Runs the schedule's drill step: asks for a drill when one is due.
/// Returns when to look again. Problems are conditions and Events, never errors: drills
/// never hold up backups.
pub async fn step(
    ctx: &Context,
    schedule: &BackupSchedule,
    api: &Api<Backup>,
    backups: &[Backup],
    status: &mut BackupScheduleStatus,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let drill = schedule.spec.drill.as_ref()?;
    let generation = schedule.metadata.generation;
    if let Err(e) = crate::worker::drill::user_checks(&drill.checks) {
        set_condition(
            &mut status.conditions,
            "DrillScheduled",
            false,
            "InvalidDrillCheck",
            &format!("{e}; no drill runs until it is fixed"),
            generation,
        );
        return None;
    }
    let cron = match &drill.schedule {
        Some(expression) => {
            let zone = drill
                .time_zone
                .as_deref()
                .unwrap_or(&schedule.spec.time_zone);
            match CronSchedule::parse(expression, zone) {
                Ok(cron) => Some(cron),
                Err(e) => {
                    set_condition(
                        &mut status.conditions,
                        "DrillScheduled",
                        false,
                        e.reason(),
                        &format!("spec.drill: {e}"),
                        generation,
                    );
                    return None;
                }
            }
        }
        None => None,
    };
    let counts = Counts {
        since: since(schedule, backups, now),
        successes: status.successes_since_drill,
        requests: status.drills_requested,
    };
    // A drill asked for longer ago than it may run (and an hour more) is not waited for:
    // its Backup cannot run it (being deleted, copies or a lock extension first).
    let deadline = drill
        .active_deadline_seconds
        .unwrap_or(super::job::DEFAULT_DRILL_DEADLINE_SECONDS)
        .saturating_add(3600);
    let candidates: Vec<Candidate> = backups
        .iter()
        .map(|b| {
            let s = b.status.as_ref();
            Candidate {
                name: b.name_any(),
                time: s
                    .and_then(|s| s.completion_time.as_ref())
                    .map_or_else(|| run_time(b), status::chrono),
                usable: b.metadata.deletion_timestamp.is_none()
                    && s.is_some_and(|s| {
                        s.phase == Some(BackupPhase::Succeeded)
                            && s.resolved.is_some()
                            && !super::copies::outstanding(s)
                            && super::relock::pending(s).is_none()
                    }),
                drilling: b.metadata.deletion_timestamp.is_none()
                    && s.and_then(super::drill::pending).is_some_and(|asked| {
                        (now - status::chrono(&asked)).num_seconds() < deadline
                    }),
            }
        })
        .collect();
    let pick = u64::from(now.timestamp_subsec_nanos()) ^ now.timestamp().unsigned_abs();
    let decision = decide(drill, cron.as_ref(), counts, now, &candidates, pick);
    set_condition(
        &mut status.conditions,
        "DrillScheduled",
        true,
        "DrillScheduled",
        &match (&drill.schedule, drill.every) {
            (Some(expression), _) => format!("drills at \"{expression}\""),
            (None, Some(n)) => format!("a drill after every {n} successful backups"),
            (None, None) => "no drill times given".to_owned(),
        },
        generation,
    );
    let wake = |at: Option<DateTime<Utc>>| at.map(|t| (t - now).to_std().unwrap_or_default());
    match decision {
        Decision::Wait(next) => wake(next),
        Decision::Drill(name) => {
            match ask(api, &name, now).await {
                Ok(false) => {}
                Ok(true) => {
                    status.last_drill_request = Some(status::time(now));
                    status.drills_requested += 1;
                    status.successes_since_drill = 0;
                    let related = backups
                        .iter()
                        .find(|b| b.name_any() == name)
                        .map(|b| b.object_ref(&()));
                    ctx.event_about(
                        schedule,
                        related,
                        false,
                        "DrillRequested",
                        format!("asked Backup {name} for a restore drill"),
                    )
                    .await;
                }
                Err(e) => {
                    tracing::info!(backup = %name, "asking for a drill: {e}");
                    return Some(Duration::from_secs(5));
                }
            }
            Some(Duration::from_secs(5))
        }
    }
}

/// Records the drill request in the Backup's status, read fresh and written with its
/// version; `false` when the fresh Backup is being deleted or has a drill pending already
/// (the list this reconcile read was behind).
async fn ask(api: &Api<Backup>, name: &str, now: DateTime<Utc>) -> Result<bool, super::Error> {
    let current = api.get(name).await?;
    let old = current.status.clone().unwrap_or_default();
    if current.metadata.deletion_timestamp.is_some() || super::drill::pending(&old).is_some() {
        return Ok(false);
    }
    let mut status = old.clone();
    status.drill_requested_at = Some(status::time(now));
    status::apply_fresh(api, &current, Some(&old), &status).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap_or_default()
    }

    fn backup(name: &str, minute: i64) -> Candidate {
        Candidate {
            name: name.into(),
            time: t(minute),
            usable: true,
            drilling: false,
        }
    }

    /// One success seen since a drill at minute 0.
    fn one() -> Counts {
        Counts {
            since: t(0),
            successes: 1,
            requests: 0,
        }
    }

    fn every(n: u32) -> DrillSpec {
        DrillSpec {
            every: Some(n),
            ..DrillSpec::default()
        }
    }

    #[test]
    fn every_n_drills_the_newest_once_n_backups_succeeded_since_the_last_drill() {
        // Retention may have deleted most: the count of successes seen decides.
        let backups = [backup("c", 3)];
        let decide = |n, successes| {
            let counts = Counts {
                since: t(0),
                successes,
                requests: 0,
            };
            decide(&every(n), None, counts, t(10), &backups, 0)
        };
        assert_eq!(decide(1, 1), Decision::Drill("c".into()));
        assert_eq!(decide(3, 3), Decision::Drill("c".into()));
        assert_eq!(decide(3, 7), Decision::Drill("c".into()));
        assert_eq!(decide(4, 3), Decision::Wait(None));
        assert_eq!(decide(1, 0), Decision::Wait(None));
    }

    #[test]
    fn failed_deleted_or_unfinished_backups_are_never_drilled_and_one_drill_runs_at_a_time() {
        let mut backups = vec![backup("a", 1), backup("b", 2)];
        backups[1].usable = false;
        assert_eq!(
            decide(&every(1), None, one(), t(10), &backups, 0),
            Decision::Drill("a".into())
        );
        backups[0].drilling = true;
        assert_eq!(
            decide(&every(1), None, one(), t(10), &backups, 0),
            Decision::Wait(None)
        );
        backups[0].usable = false;
        backups[0].drilling = false;
        assert_eq!(
            decide(&every(1), None, one(), t(10), &backups, 0),
            Decision::Wait(None)
        );
    }

    #[test]
    fn the_last_drill_stays_recorded_when_its_backup_is_deleted() {
        let drill = |backup: &str, minute| LastDrill {
            backup: backup.into(),
            verification: crate::api::Verification {
                phase: VerificationPhase::Verified,
                requested_at: status::time(t(minute)),
                time: Some(status::time(t(minute))),
                restore_seconds: None,
                bytes: None,
                checks_passed: 1,
                checks_failed: 0,
                message: String::new(),
            },
        };
        // The drilled Backup was deleted; an older drilled one is still there.
        assert_eq!(
            newer(Some(drill("b", 5)), Some(drill("a", 2))),
            Some(drill("b", 5))
        );
        assert_eq!(newer(Some(drill("b", 5)), None), Some(drill("b", 5)));
        assert_eq!(
            newer(Some(drill("b", 5)), Some(drill("c", 9))),
            Some(drill("c", 9))
        );
        // The same drill, its verdict now final.
        let mut done = drill("b", 5);
        done.verification.message = "verified".into();
        assert_eq!(newer(Some(drill("b", 5)), Some(done.clone())), Some(done));
    }

    #[test]
    fn a_request_the_schedule_did_not_record_is_counted_from_its_backup() {
        let schedule: BackupSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "coffer.dev/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": "s", "namespace": "shop",
                "creationTimestamp": "2026-11-01T00:00:00Z"},
            "spec": {"schedule": "@daily", "drill": {"every": 2},
                "source": {"redis": {"host": "r", "port": 6379}},
                "storage": {"s3": {"bucket": "b"}}},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let backup = |name: &str, done: i64, asked: Option<i64>| -> Backup {
            let mut backup: Backup = serde_json::from_value(serde_json::json!({
                "apiVersion": "coffer.dev/v1alpha1", "kind": "Backup",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"scheduleRef": {"name": "s"}},
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            backup.status = Some(crate::api::BackupStatus {
                phase: Some(BackupPhase::Succeeded),
                completion_time: Some(status::time(t(done))),
                drill_requested_at: asked.map(|m| status::time(t(m))),
                ..Default::default()
            });
            backup
        };
        // Two successes counted; a drill of the newest asked at minute 3, but the status
        // that said so was never written; then one more success.
        let mut status = BackupScheduleStatus {
            successes_since_drill: 2,
            drill_counted_until: Some(status::time(t(2))),
            ..Default::default()
        };
        let backups = [
            backup("a", 1, None),
            backup("b", 2, Some(3)),
            backup("c", 4, None),
        ];
        observe(&schedule, &backups, &mut status, t(5));
        assert_eq!(status.drills_requested, 1);
        assert_eq!(status.last_drill_request, Some(status::time(t(3))));
        assert_eq!(status.successes_since_drill, 1, "only c, after the request");
        // Seen again: nothing changes.
        let before = status.clone();
        observe(&schedule, &backups, &mut status, t(6));
        assert_eq!(status, before);
        // A request the status recorded is not counted twice.
        let mut recorded = BackupScheduleStatus {
            last_drill_request: Some(status::time(t(3))),
            drills_requested: 1,
            drill_counted_until: Some(status::time(t(2))),
            ..Default::default()
        };
        observe(&schedule, &backups, &mut recorded, t(5));
        assert_eq!(
            (recorded.drills_requested, recorded.successes_since_drill),
            (1, 1)
        );
    }

    #[test]
    fn every_older_every_th_drill_takes_an_older_backup() {
        let backups = [backup("a", 1), backup("b", 2), backup("c", 3)];
        let drill = DrillSpec {
            older_every: 3,
            ..every(1)
        };
        let nth = |requests, pick| {
            let counts = Counts { requests, ..one() };
            decide(&drill, None, counts, t(10), &backups, pick)
        };
        assert_eq!(nth(0, 0), Decision::Drill("c".into()));
        assert_eq!(nth(1, 0), Decision::Drill("c".into()));
        assert_eq!(nth(2, 0), Decision::Drill("a".into()));
        assert_eq!(nth(2, 1), Decision::Drill("b".into()));
        assert_eq!(nth(5, 7), Decision::Drill("b".into()));
    }

    #[test]
    fn a_cron_drill_runs_at_its_times_in_its_zone() {
        let cron = CronSchedule::parse("0 3 * * 0", "Europe/Berlin").unwrap_or_else(|e| {
            panic!("{e}");
        });
        let drill = DrillSpec {
            schedule: Some("0 3 * * 0".into()),
            ..DrillSpec::default()
        };
        let backups = [backup("a", 1)];
        // 2027-01-03 is a Sunday: 03:00 in Berlin is 02:00 UTC.
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let counts = Counts {
            since: at("2027-01-02T00:00:00Z"),
            ..Counts::default()
        };
        assert!(matches!(
            decide(&drill, Some(&cron), counts, at("2027-01-03T01:59:00Z"), &backups, 0),
            Decision::Wait(Some(next)) if next == at("2027-01-03T02:00:00Z")
        ));
        assert_eq!(
            decide(
                &drill,
                Some(&cron),
                counts,
                at("2027-01-03T02:00:30Z"),
                &backups,
                0
            ),
            Decision::Drill("a".into())
        );
    }
}
