//! Restore drills of a schedule's backups (`BackupSchedule.spec.drill`) and their record
//! (`Backup.status.verification`, `BackupSchedule.status.lastDrill`).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeySelector;

/// When and how the schedule proves that its backups restore: a drill restores a backup
/// into a scratch instance the drill's worker Pod starts itself and throws away (a
/// `redis-server`, a PostgreSQL or MariaDB server on an emptyDir, or a scratch directory
/// for volumes), never the production source, then checks it against the backup's manifest
/// and with the checks given here. The result is the drilled Backup's
/// `status.verification` and this schedule's `status.lastDrill`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.schedule) != has(self.every)")
        .message("spec.drill needs exactly one of schedule (a cron expression) and every (a number of backups)")
)]
pub struct DrillSpec {
    /// A cron expression (five fields, as `spec.schedule`) in `timeZone`: a drill runs at
    /// each of its times, of the newest successful backup then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The time zone of `schedule` (IANA name). Default: the schedule's `spec.timeZone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Drill after every N successful backups (1: each one), instead of on a cron schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub every: Option<u32>,
    /// Every N-th drill takes a successful backup chosen at random among the older ones
    /// instead of the newest, which catches silent loss in long-kept backups. Default: 0
    /// (always the newest).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub older_every: u32,
    /// The user's checks, run against the scratch instance after the built-in ones.
    #[serde(default)]
    pub checks: DrillChecks,
    /// The key (an age identity file) that opens the schedule's encrypted backups. Without
    /// it, a drill of an encrypted backup cannot run and says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret_ref: Option<SecretKeySelector>,
    /// The drill's worker container resources. Default: requests of 100m CPU and 256Mi of
    /// memory, a limit of 2Gi of memory (a scratch PostgreSQL or MariaDB runs in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How long a drill may run before Kubernetes stops it. Default: 3600 (one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60))]
    pub active_deadline_seconds: Option<i64>,
    /// The most the scratch instance may hold on its emptyDir (the restored data, the
    /// server's files). The kubelet evicts a drill that goes over. Default: 10Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_size: Option<Quantity>,
}

/// Checks of a restored backup, written like `coffer drill`'s options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillChecks {
    /// Redis: `COMMAND ARG... => REPLY`, run in database 0 of the scratch server; the reply
    /// must match (integers as digits, nil as `(nil)`). Example: `GET config:version => 7`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub redis: Vec<String>,
    /// PostgreSQL, MySQL: `DATABASE: QUERY`, whose first value must be true. Example:
    /// `shop: SELECT count(*) > 0 FROM orders`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub sql: Vec<String>,
    /// Volumes: paths (relative to the volume's root) that must exist once restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub paths: Vec<String>,
}

/// How a drill of a backup went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VerificationPhase {
    /// Asked for; its worker has not reported yet.
    Running,
    /// The backup restored and every check passed.
    Verified,
    /// The backup did not restore, or a check failed: `message` says what differed.
    VerificationFailed,
    /// The drill could not run (no scratch server, no key, no room): nothing was verified.
    Error,
}

/// The last drill of a Backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub phase: VerificationPhase,
    /// When the drill was asked for (by the schedule's `spec.drill`).
    pub requested_at: Time,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// How long the restore into the scratch instance took, in seconds: what a real
    /// restore of this backup would take (its recovery time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
    /// The backup's data size before compression, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// How many checks passed (built-in and the spec's).
    #[serde(default)]
    pub checks_passed: i32,
    /// How many checks failed; a backup that could not be read or restored failed one.
    #[serde(default)]
    pub checks_failed: i32,
    /// One line: the first check that failed, or what the drill verified.
    #[serde(default)]
    pub message: String,
}

/// A schedule's most recent finished drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastDrill {
    /// The Backup drilled.
    pub backup: String,
    #[serde(flatten)]
    pub verification: Verification,
}
