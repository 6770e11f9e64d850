//! Prometheus metrics. Labels are bounded: namespace, schedule, source kind, result and
//! error category, never error text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::state_metrics::StateCollector;

/// A run of a backup or restore.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub namespace: String,
    /// The schedule's name; empty for a Backup made by hand or a restore.
    pub schedule: String,
    pub source_kind: String,
    /// `succeeded`, or the failure's category.
    pub result: String,
}

/// A schedule (or, for hand-made Backups, an empty schedule name) and its source kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub namespace: String,
    pub schedule: String,
    pub source_kind: String,
}

/// An attempt to copy a backup to one of its schedule's copy stores.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CopyLabels {
    pub namespace: String,
    pub schedule: String,
    /// The copy's name in the schedule.
    pub copy: String,
    /// `succeeded`, or the failure's category.
    pub result: String,
}

/// A failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub category: String,
}

fn duration_histogram() -> Histogram {
    // 1 s to about 4.5 hours.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    pub backups: Family<RunLabels, Counter>,
    pub restores: Family<RunLabels, Counter>,
    pub backup_duration: Family<ScheduleLabels, Histogram, fn() -> Histogram>,
    pub backup_stored_bytes: Family<ScheduleLabels, Counter>,
    pub last_success: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub copies: Family<CopyLabels, Counter>,
    pub drills: Family<RunLabels, Counter>,
    pub drill_restore_seconds: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    /// Gauges read from the watched objects at each scrape.
    pub state: StateCollector,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("coffer");
        let backups = Family::<RunLabels, Counter>::default();
        registry.register(
            "backups",
            "Backups that finished, by result (succeeded or the failure's category)",
            backups.clone(),
        );
        let restores = Family::<RunLabels, Counter>::default();
        registry.register(
            "restores",
            "Restores that finished, by result (succeeded or the failure's category)",
            restores.clone(),
        );
        let backup_duration =
            Family::<ScheduleLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "backup_duration_seconds",
            "How long successful backups took, from the worker's start to its end",
            backup_duration.clone(),
        );
        let backup_stored_bytes = Family::<ScheduleLabels, Counter>::default();
        registry.register(
            "backup_stored_bytes",
            "Bytes stored by successful backups",
            backup_stored_bytes.clone(),
        );
        let last_success = Family::<ScheduleLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_successful_backup_timestamp_seconds",
            "When the newest successful backup completed (Unix time)",
            last_success.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and will be retried, by controller and category",
            reconcile_errors.clone(),
        );
        let copies = Family::<CopyLabels, Counter>::default();
        registry.register(
            "copies",
            "Attempts to copy backups to their schedule's copy stores, by result (succeeded or the failure's category)",
            copies.clone(),
        );
        let drills = Family::<RunLabels, Counter>::default();
        registry.register(
            "drills",
            "Restore drills that finished, by result (Verified, VerificationFailed, or why the drill could not run)",
            drills.clone(),
        );
        let drill_restore_seconds = Family::<ScheduleLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "drill_restore_seconds",
            "How long the restore of the last drill took (the recovery time a real restore would take)",
            drill_restore_seconds.clone(),
        );
        let state = StateCollector::default();
        registry.register_collector(Box::new(state.clone()));
        Self {
            registry,
            backups,
            restores,
            backup_duration,
            backup_stored_bytes,
            last_success,
            reconcile_errors,
            copies,
            drills,
            drill_restore_seconds,
            state,
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, controller: &str, category: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_owned(),
                category: category.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exported_with_their_labels() {
        let metrics = Metrics::default();
        let labels = ScheduleLabels {
            namespace: "shop".into(),
            schedule: "redis".into(),
            source_kind: "redis".into(),
        };
        metrics
            .backups
            .get_or_create(&RunLabels {
                namespace: "shop".into(),
                schedule: "redis".into(),
                source_kind: "redis".into(),
                result: "succeeded".into(),
            })
            .inc();
        metrics.backup_duration.get_or_create(&labels).observe(3.0);
        metrics.last_success.get_or_create(&labels).set(1.7e9);
        let text = metrics.encode();
        assert!(
            text.contains(r#"coffer_backups_total{namespace="shop",schedule="redis",source_kind="redis",result="succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("coffer_backup_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("coffer_last_successful_backup_timestamp_seconds"),
            "{text}"
        );
    }
}
