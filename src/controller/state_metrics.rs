//! Metrics read from the watched objects at scrape time, for alerts that must survive a
//! controller restart and must not outlive the objects: a schedule's interval and its last
//! success, whether its newest run failed, failed hand-made Backups and failed restores.
//!
//! They are computed from the controllers' stores (only the leader has them), never stored,
//! so a deleted schedule or RestoreRequest disappears from the next scrape.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::backup::kind_word;
use super::location::SCHEDULE_LABEL;
use crate::api::{Backup, BackupPhase, BackupSchedule, RestorePhase, RestoreRequest};
use crate::schedule::CronSchedule;

/// The gauges this collector exports (without the `coffer_` prefix), in encoding order.
pub const GAUGES: [&str; 8] = [
    "schedule_interval_seconds",
    "schedule_backup_due_timestamp_seconds",
    "schedule_last_success_timestamp_seconds",
    "schedule_created_timestamp_seconds",
    "schedule_last_run_failed",
    "schedule_stale",
    "backup_failed",
    "restore_failed",
];

/// A schedule's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ScheduleSeries {
    pub namespace: String,
    pub schedule: String,
    pub source_kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct BackupSeries {
    pub namespace: String,
    pub backup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct RestoreSeries {
    pub namespace: String,
    pub restore_request: String,
}

/// What the objects say, as plain values.
#[derive(Debug, Default, PartialEq)]
pub struct State {
    /// Seconds between a schedule's next two runs (not for suspended or invalid schedules).
    pub interval: BTreeMap<ScheduleSeries, f64>,
    /// The first run due after the newest success (or after creation): a backup newer than
    /// the last one has been expected since then. Not for suspended or invalid schedules.
    pub backup_due: BTreeMap<ScheduleSeries, f64>,
    /// When a schedule's newest successful backup completed.
    pub last_success: BTreeMap<ScheduleSeries, f64>,
    /// When the schedule was created.
    pub created: BTreeMap<ScheduleSeries, f64>,
    /// 1 when a schedule's newest finished run failed, else 0.
    pub last_run_failed: BTreeMap<ScheduleSeries, f64>,
    /// 1 when a schedule is stale (its `Fresh` condition is False), else 0.
    pub stale: BTreeMap<ScheduleSeries, f64>,
    /// Failed Backups that no schedule made.
    pub backup_failed: BTreeMap<BackupSeries, f64>,
    /// Failed RestoreRequests.
    pub restore_failed: BTreeMap<RestoreSeries, f64>,
}

fn chrono_time(time: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(time.0.as_millisecond())
}

fn seconds(time: &Time) -> f64 {
    time.0.as_millisecond() as f64 / 1000.0
}

/// The state of `schedules`, `backups` and `restores` at `now`. Pure.
pub fn state(
    schedules: &[Arc<BackupSchedule>],
    backups: &[Arc<Backup>],
    restores: &[Arc<RestoreRequest>],
    now: DateTime<Utc>,
) -> State {
    let mut out = State::default();
    let newest_runs = newest_finished_runs(backups);
    for schedule in schedules {
        let series = ScheduleSeries {
            namespace: schedule.namespace().unwrap_or_default(),
            schedule: schedule.name_any(),
            source_kind: kind_word(schedule.spec.source.kind()).to_owned(),
        };
        let last_success = schedule
            .status
            .as_ref()
            .and_then(|s| s.last_successful_time.as_ref());
        let created = schedule.metadata.creation_timestamp.as_ref();
        let parsed = CronSchedule::parse(&schedule.spec.schedule, &schedule.spec.time_zone);
        if let (false, Ok(parsed)) = (schedule.spec.suspend, parsed) {
            if let Some(first) = parsed.next_after(now)
                && let Some(second) = parsed.next_after(first)
            {
                let gap = (second - first).num_milliseconds() as f64 / 1000.0;
                out.interval.insert(series.clone(), gap);
            }
            if let Some(since) = last_success.or(created).and_then(chrono_time)
                && let Some(due) = parsed.next_after(since)
            {
                let due = due.timestamp_millis() as f64 / 1000.0;
                out.backup_due.insert(series.clone(), due);
            }
        }
        if let Some(t) = last_success {
            out.last_success.insert(series.clone(), seconds(t));
        }
        if let Some(t) = created {
            out.created.insert(series.clone(), seconds(t));
        }
        if schedule.spec.suspend {
            // Suspended on purpose: its old runs raise no alert.
            continue;
        }
        // As the reconciler judged it (it looks again when a schedule would turn stale).
        if let Some(fresh) = schedule
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Fresh"))
        {
            let stale = if fresh.status == "False" && fresh.reason == "Stale" {
                1.0
            } else {
                0.0
            };
            out.stale.insert(series.clone(), stale);
        }
        let key = (series.namespace.clone(), series.schedule.clone());
        let newest_finished = newest_runs.get(&key);
        if let Some((_, finished)) = newest_finished {
            let failed = if *finished == BackupPhase::Failed {
                1.0
            } else {
                0.0
            };
            out.last_run_failed.insert(series, failed);
        }
    }
    for backup in backups {
        if !backup.labels().contains_key(SCHEDULE_LABEL)
            && phase(backup) == Some(BackupPhase::Failed)
        {
            let series = BackupSeries {
                namespace: backup.namespace().unwrap_or_default(),
                backup: backup.name_any(),
            };
            out.backup_failed.insert(series, 1.0);
        }
    }
    for restore in restores {
        if restore.status.as_ref().and_then(|s| s.phase) == Some(RestorePhase::Failed) {
            let series = RestoreSeries {
                namespace: restore.namespace().unwrap_or_default(),
                restore_request: restore.name_any(),
            };
            out.restore_failed.insert(series, 1.0);
        }
    }
    out
}

/// Each schedule's newest finished run (by creation time, then name) and how it ended, by
/// (namespace, schedule), in one pass over the Backups.
fn newest_finished_runs(
    backups: &[Arc<Backup>],
) -> HashMap<(String, String), (RunOrder, BackupPhase)> {
    let mut newest: HashMap<(String, String), (RunOrder, BackupPhase)> = HashMap::new();
    for backup in backups {
        let (Some(schedule), Some(finished)) = (backup.labels().get(SCHEDULE_LABEL), phase(backup))
        else {
            continue;
        };
        let order = (
            backup.metadata.creation_timestamp.clone(),
            backup.name_any(),
        );
        let key = (backup.namespace().unwrap_or_default(), schedule.clone());
        match newest.get(&key) {
            Some((seen, _)) if *seen >= order => {}
            _ => {
                newest.insert(key, (order, finished));
            }
        }
    }
    newest
}

/// How runs are ordered: creation time, then name.
type RunOrder = (Option<Time>, String);

/// A finished Backup's phase; `None` while it runs.
fn phase(backup: &Backup) -> Option<BackupPhase> {
    backup
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .filter(|p| matches!(p, BackupPhase::Succeeded | BackupPhase::Failed))
}

/// The controllers' stores, set once the controllers start.
#[derive(Clone)]
pub struct Stores {
    pub schedules: Store<BackupSchedule>,
    pub backups: Store<Backup>,
    pub restores: Store<RestoreRequest>,
}

/// The collector registered with the metrics registry; empty until [`Stores`] are set.
#[derive(Clone, Default)]
pub struct StateCollector {
    pub stores: Arc<OnceLock<Stores>>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector")
            .field("ready", &self.stores.get().is_some())
            .finish()
    }
}

fn encode_gauges<L>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &BTreeMap<L, f64>,
) -> Result<(), std::fmt::Error>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge<f64, AtomicU64>>::default();
    for (labels, value) in values {
        family.get_or_create(labels).set(*value);
    }
    let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
    family.encode(metric)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stores) = self.stores.get() else {
            return Ok(());
        };
        let s = state(
            &stores.schedules.state(),
            &stores.backups.state(),
            &stores.restores.state(),
            Utc::now(),
        );
        let e = &mut encoder;
        encode_gauges(
            e,
            GAUGES[0],
            "Seconds between the schedule's next two runs (absent while suspended)",
            &s.interval,
        )?;
        encode_gauges(
            e,
            GAUGES[1],
            "When the first run after the newest successful backup (or after creation) was or is due (Unix time)",
            &s.backup_due,
        )?;
        encode_gauges(
            e,
            GAUGES[2],
            "When the schedule's newest successful backup completed (Unix time)",
            &s.last_success,
        )?;
        encode_gauges(
            e,
            GAUGES[3],
            "When the schedule was created (Unix time)",
            &s.created,
        )?;
        encode_gauges(
            e,
            GAUGES[4],
            "1 when the schedule's newest finished run failed, else 0",
            &s.last_run_failed,
        )?;
        encode_gauges(
            e,
            GAUGES[5],
            "1 when no backup of the schedule has succeeded within its freshness.maxAge (absent while suspended)",
            &s.stale,
        )?;
        encode_gauges(
            e,
            GAUGES[6],
            "1 for each failed Backup that no schedule made",
            &s.backup_failed,
        )?;
        encode_gauges(
            e,
            GAUGES[7],
            "1 for each failed RestoreRequest",
            &s.restore_failed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schedule(
        name: &str,
        cron: &str,
        suspend: bool,
        last_success: Option<&str>,
    ) -> Arc<BackupSchedule> {
        let mut status = json!({});
        if let Some(t) = last_success {
            status = json!({"lastSuccessfulTime": t});
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "coffer.dev/v1alpha1", "kind": "BackupSchedule",
                "metadata": {"name": name, "namespace": "shop", "creationTimestamp": "2026-11-01T00:00:00Z"},
                "spec": {"schedule": cron, "timeZone": "Asia/Manila", "suspend": suspend,
                    "source": {"redis": {"host": "r", "port": 6379}},
                    "storage": {"s3": {"bucket": "b"}}},
                "status": status,
            }))
            .unwrap(),
        )
    }

    fn backup(name: &str, schedule: Option<&str>, created: &str, phase: &str) -> Arc<Backup> {
        let labels = schedule.map_or(json!({}), |s| json!({SCHEDULE_LABEL: s}));
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "coffer.dev/v1alpha1", "kind": "Backup",
                "metadata": {"name": name, "namespace": "shop", "labels": labels,
                    "creationTimestamp": created},
                "spec": {"scheduleRef": {"name": schedule.unwrap_or("x")}},
                "status": {"phase": phase},
            }))
            .unwrap(),
        )
    }

    fn series(schedule: &str) -> ScheduleSeries {
        ScheduleSeries {
            namespace: "shop".into(),
            schedule: schedule.into(),
            source_kind: "redis".into(),
        }
    }

    #[test]
    fn schedules_report_interval_last_success_and_whether_the_newest_run_failed() {
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let schedules = [
            schedule("daily", "0 0 * * *", false, Some("2026-11-22T16:00:05Z")),
            schedule("paused", "*/5 * * * *", true, None),
        ];
        let backups = [
            backup(
                "daily-1",
                Some("daily"),
                "2026-11-21T16:00:00Z",
                "Succeeded",
            ),
            backup("daily-2", Some("daily"), "2026-11-22T16:00:00Z", "Failed"),
            backup("daily-3", Some("daily"), "2026-11-23T09:59:00Z", "Running"),
            backup("by-hand", None, "2026-11-23T09:00:00Z", "Failed"),
            backup("by-hand-ok", None, "2026-11-23T09:00:00Z", "Succeeded"),
        ];
        let s = state(&schedules, &backups, &[], now);
        assert_eq!(s.interval.get(&series("daily")), Some(&86400.0));
        assert_eq!(s.interval.get(&series("paused")), None, "suspended");
        // Succeeded at 16:00:05 UTC (midnight in Manila): the next backup is due a day later.
        assert_eq!(
            s.backup_due.get(&series("daily")),
            Some(&1_795_449_600.0),
            "2026-11-23T16:00:00Z"
        );
        assert_eq!(s.backup_due.get(&series("paused")), None, "suspended");
        assert_eq!(s.last_success.get(&series("daily")), Some(&1_795_363_205.0));
        assert_eq!(s.last_success.get(&series("paused")), None);
        assert_eq!(s.created.len(), 2);
        // daily-3 still runs: the newest finished run is daily-2, which failed.
        assert_eq!(s.last_run_failed.get(&series("daily")), Some(&1.0));
        assert_eq!(s.last_run_failed.get(&series("paused")), None);
        assert_eq!(
            s.backup_failed
                .keys()
                .map(|k| k.backup.as_str())
                .collect::<Vec<_>>(),
            ["by-hand"]
        );

        let recovered = [
            backup("daily-2", Some("daily"), "2026-11-22T16:00:00Z", "Failed"),
            backup(
                "daily-3",
                Some("daily"),
                "2026-11-23T09:59:00Z",
                "Succeeded",
            ),
        ];
        let s = state(&schedules[..1], &recovered, &[], now);
        assert_eq!(s.last_run_failed.get(&series("daily")), Some(&0.0));
    }

    #[test]
    fn failed_restores_are_reported_by_name() {
        let restore = |name: &str, phase: &str| -> Arc<RestoreRequest> {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "coffer.dev/v1alpha1", "kind": "RestoreRequest",
                    "metadata": {"name": name, "namespace": "shop"},
                    "spec": {"backupRef": {"name": "b"}},
                    "status": {"phase": phase},
                }))
                .unwrap(),
            )
        };
        let s = state(
            &[],
            &[],
            &[restore("undo", "Failed"), restore("ok", "Succeeded")],
            Utc::now(),
        );
        assert_eq!(
            s.restore_failed
                .keys()
                .map(|k| k.restore_request.as_str())
                .collect::<Vec<_>>(),
            ["undo"]
        );
    }

    #[test]
    fn a_schedule_is_stale_as_its_fresh_condition_says_and_never_while_suspended() {
        let with_fresh = |name: &str, suspend: bool, status: &str, reason: &str| {
            let mut s = schedule(name, "0 0 * * *", suspend, None);
            let condition = serde_json::from_value(json!({"type": "Fresh", "status": status,
                "reason": reason, "message": "m", "lastTransitionTime": "2026-11-23T00:00:00Z"}))
            .unwrap();
            Arc::make_mut(&mut s)
                .status
                .get_or_insert_default()
                .conditions
                .push(condition);
            s
        };
        let schedules = [
            with_fresh("old", false, "False", "Stale"),
            with_fresh("new", false, "True", "Fresh"),
            with_fresh("typo", false, "False", "InvalidFreshness"),
            with_fresh("paused", true, "False", "Stale"),
            schedule("unjudged", "0 0 * * *", false, None),
        ];
        let s = state(
            &schedules,
            &[],
            &[],
            "2026-11-23T10:00:00Z".parse().unwrap(),
        );
        assert_eq!(s.stale.get(&series("old")), Some(&1.0));
        assert_eq!(s.stale.get(&series("new")), Some(&0.0));
        assert_eq!(s.stale.get(&series("typo")), Some(&0.0));
        assert_eq!(s.stale.get(&series("paused")), None);
        assert_eq!(s.stale.get(&series("unjudged")), None);
    }
}
