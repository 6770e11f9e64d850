//! `BackupSchedule`: backups taken on a cron schedule, in a time zone, with retention.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Compression, JobTemplate};
use super::encryption::Encryption;
use super::notifier::{Delivery, NotifierReference};
use super::retention::Retention;
use super::source::BackupSource;
use super::storage::BackupStorage;

/// A BackupSchedule takes a Backup of one source at the times its cron schedule names, in its
/// time zone, and deletes old ones according to its retention policy.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "BackupSchedule",
    namespaced,
    status = "BackupScheduleStatus",
    derive = "PartialEq",
    shortname = "cbs",
    category = "coffer",
    doc = "A BackupSchedule takes a Backup of one source (Redis, PostgreSQL, MySQL/MariaDB or a volume) at the times its cron schedule names, in its time zone, and keeps as many as its retention policy says.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Time Zone", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Last Success",
        type_ = "date",
        json_path = ".status.lastSuccessfulTime"
    ),
    // A string, not a date: kubectl shows a future date as "<invalid>".
    printcolumn(
        name = "Next Run",
        type_ = "string",
        json_path = ".status.nextScheduleTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("a BackupSchedule's name is at most 63 characters: it becomes a label on its Backups")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// When to take a backup: a 5-field cron expression (minute hour day-of-month month
    /// day-of-week, for example `0 0 * * *`) or one of `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`. Read in `timeZone`.
    #[schemars(
        length(min = 1, max = 128),
        regex(
            pattern = r"^\s*(@(yearly|annually|monthly|weekly|daily|hourly)|\S+(\s+\S+){4})\s*$"
        )
    )]
    pub schedule: String,
    /// IANA time zone the schedule is read in, for example `Asia/Manila` or
    /// `Europe/Berlin`. Daylight-saving changes are handled: a time that does not exist runs
    /// at the first minute after the gap, a time that happens twice runs once.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// Stop taking new scheduled backups. Running backups finish; nothing is deleted.
    #[serde(default)]
    pub suspend: bool,
    /// What to do when a run is due while the previous one is still running: `Forbid` skips
    /// the new run (with an Event), `Replace` stops the running one, `Allow` runs both.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run that could not start within this many seconds of its time (for example
    /// because the operator was down) is skipped with an Event. Default: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// What to back up.
    pub source: BackupSource,
    /// Where backups are stored.
    pub storage: BackupStorage,
    /// Compression of the stored data.
    #[serde(default)]
    pub compression: Compression,
    /// Encrypt every backup with age before it leaves the worker. Each backup gets its own
    /// data key, wrapped for every recipient (age public keys) in a key object beside the data;
    /// the worker holds public keys only, so nothing in the cluster can read a backup once
    /// it is written. Restore with a RestoreRequest's `decryption`. Changing the recipients
    /// affects new backups; `coffer rewrap` changes them for existing ones without
    /// rewriting their data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Which backups are kept. Default: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Other stores each successful backup is copied to (3-2-1: another bucket, another
    /// provider, or a claim), each with its own retention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 4),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub copies: Vec<super::copies::BackupCopy>,
    /// How old the newest successful backup may get (the recovery point objective) before
    /// the schedule is stale: its `Fresh` condition turns False with reason `Stale`, an
    /// Event is recorded and the `coffer_schedule_stale` gauge is 1. Default: twice the
    /// longest time between two runs of the schedule in its time zone (for a daily
    /// schedule, 48 hours; 50 where a daylight-saving day is 25 hours long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
    /// Settings of the worker Job (resources, node placement, deadlines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_template: Option<JobTemplate>,
    /// Restore drills: when to restore one of this schedule's backups into a scratch
    /// instance and check it (see `kubectl explain backupschedule.spec.drill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<super::drill::DrillSpec>,
    /// Notifiers (in this namespace) told about this schedule's events. Its Backups are
    /// created with the same list: failed and recovered backups, and the schedule turning
    /// stale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub notify: Vec<NotifierReference>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// How fresh a schedule's backups must be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Freshness {
    /// The age after which the newest successful backup (or, before the first one, the
    /// schedule itself) makes the schedule stale: a number followed by `m` (minutes), `h`
    /// (hours), `d` (days) or `w` (weeks), for example `36h`. A suspended schedule is never
    /// stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}[mhdw]$"))]
    pub max_age: Option<String>,
}

/// What happens when a run is due while the previous one is still running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the new run and record an Event (the default).
    #[default]
    Forbid,
    /// Stop the running backup and start the new one.
    Replace,
    /// Run both.
    Allow,
}

/// The observed state of a BackupSchedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state. `Ready` is `False` with a reason such as `InvalidSchedule`,
    /// `UnknownTimeZone`, `SecretNotFound` or `PreflightFailed` when the schedule cannot run
    /// (or its backups would fail). `SourceReachable` and `StorageWritable` are the pre-flight
    /// check's findings. `Fresh` is `False` with reason `Stale` when no backup has succeeded
    /// within `freshness.maxAge`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the last Backup was created by this schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the next Backup is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Name of the newest Backup of this schedule that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// When the newest successful Backup of this schedule completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When the newest failed Backup of this schedule completed, remembered after retention
    /// deletes it (so that a series of failures is told once even with `keepFailed: 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_time: Option<Time>,
    /// Names of this schedule's Backups that are running now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// The last daily sweep of this schedule's folder in the store: what failed or killed
    /// runs left behind (data without a manifest, open multipart uploads, temporary files)
    /// that was older than a day, and was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sweep: Option<SweepRecord>,
    /// The last pre-flight check: when, of which settings, and whether the source and the
    /// store passed (the `SourceReachable` and `StorageWritable` conditions say why not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<PreflightRecord>,
    /// The last drill that finished: the Backup, its verdict, its checks and the measured
    /// restore time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<super::drill::LastDrill>,
    /// When the schedule last asked for a drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill_request: Option<Time>,
    /// How many drills the schedule has asked for (every `olderEvery`-th takes an older
    /// backup).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drills_requested: u64,
    /// Successful backups seen since the last drill was asked for (for `spec.drill.every`;
    /// counted as they succeed, so that retention deleting some does not delay the drill).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub successes_since_drill: u64,
    /// The completion time of the newest successful backup counted in
    /// `successesSinceDrill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_counted_until: Option<Time>,
    /// The notifications about the schedule itself (`stale`, `preflightFailed`), each
    /// recorded before it is sent; the newest 20 are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Delivery>,
}

/// One pre-flight check of a schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreflightRecord {
    /// When its result was read.
    pub time: Time,
    /// The settings it checked: the spec's generation and the versions of the Secrets it
    /// names. Another value makes the schedule check again.
    pub fingerprint: String,
    /// The source answered, the credentials worked and the privileges sufficed.
    pub source_ok: bool,
    /// The store took, returned and deleted a test object.
    pub storage_ok: bool,
    /// Checks failed in a row (0 once one passes): a failing check is run again after 30 s,
    /// then twice as long each time, up to 10 minutes.
    #[serde(default)]
    pub failures: i32,
    /// The failure has been told (the `PreflightFailed` Event, the `preflightFailed`
    /// notification): once per failure, and only of a check of the current Secrets.
    #[serde(default = "told_by_default")]
    pub told: bool,
}

/// Records written before `told` existed were told when they failed.
fn told_by_default() -> bool {
    true
}

/// One sweep of a schedule's folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepRecord {
    /// When the sweep finished.
    pub time: Time,
    /// Leftovers removed.
    pub removed: i64,
    /// Bytes they held.
    pub removed_bytes: i64,
    /// What was removed, or why the sweep failed.
    pub message: String,
}
