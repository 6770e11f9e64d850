//! `Backup`: one backup run, created by a schedule or by a user ("right now").

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Compression, JobTemplate, LocalObjectReference};
use super::encryption::Encryption;
use super::notifier::{Delivery, NotifierReference};
use super::source::{BackupSource, SourceKind};
use super::storage::BackupStorage;

/// A Backup is one backup run. A BackupSchedule creates them at its times; create one yourself
/// to take a backup right now (for example before a deploy).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    derive = "PartialEq",
    shortname = "cbk",
    category = "coffer",
    doc = "A Backup is one backup run of a Redis server, PostgreSQL or MySQL/MariaDB databases, or a volume. BackupSchedules create them; create one yourself to take a backup right now.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Source", type_ = "string", json_path = ".status.sourceKind"),
    printcolumn(name = "Stored", type_ = "string", json_path = ".status.storedSize"),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startTime"),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "Location",
        type_ = "string",
        json_path = ".status.location",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.scheduleRef) || has(self.source)")
        .message("set scheduleRef to take source and storage from a BackupSchedule, or give source and storage"),
    validation = Rule::new("has(self.source) == has(self.storage)")
        .message("source and storage go together: give both, or neither and set scheduleRef"),
    validation = Rule::new(
        "has(self.scheduleRef) == has(oldSelf.scheduleRef) && has(self.source) == has(oldSelf.source) && has(self.compression) == has(oldSelf.compression) && has(self.encryption) == has(oldSelf.encryption)"
    ).message("only deletionPolicy can change after a Backup is created; create a new Backup instead")
)]
pub struct BackupSpec {
    /// The BackupSchedule this backup belongs to. Without `source`, the source, storage,
    /// compression and job settings are taken from it. With `source`, the inline values are
    /// used and the reference only groups the backup with its schedule (this is how scheduled
    /// runs are created, so that editing a schedule never changes a run in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("scheduleRef cannot change; create a new Backup instead"))]
    pub schedule_ref: Option<LocalObjectReference>,
    /// What to back up, when not taken from `scheduleRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("source cannot change; create a new Backup instead"))]
    pub source: Option<BackupSource>,
    /// Where to store the backup, when not taken from `scheduleRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage cannot change; create a new Backup instead"))]
    pub storage: Option<BackupStorage>,
    /// Compression of the stored data. Default: the schedule's, or `zstd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("compression cannot change; create a new Backup instead"))]
    pub compression: Option<Compression>,
    /// Encrypt the backup to these recipients. Default: the schedule's, for a Backup that
    /// takes its settings from `scheduleRef`; otherwise unencrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("encryption cannot change; create a new Backup instead"))]
    pub encryption: Option<Encryption>,
    /// What happens to the stored data when this Backup is deleted: `Delete` removes it
    /// (manifest first, so a half-deleted backup is never mistaken for a good one); `Retain`
    /// keeps it in storage.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Settings of the worker Job. Default: the schedule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_template: Option<JobTemplate>,
    /// Notifiers (in this namespace) told about this Backup's events. Default: the
    /// schedule's, for a Backup that takes its settings from `scheduleRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub notify: Vec<NotifierReference>,
    /// Delete this Backup (and, by `deletionPolicy`, its data) this long after it finished:
    /// a number followed by `m` (minutes), `h` (hours), `d` (days) or `w` (weeks), for
    /// example `7d`. Default: kept until deleted (or until its schedule's retention deletes
    /// it). The safety backups a restore takes have `7d`; remove it to keep one for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}[mhdw]$"))]
    pub ttl: Option<String>,
}

/// What happens to a backup's stored data when the Backup object is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the stored data with the Backup (the default).
    #[default]
    Delete,
    /// Keep the stored data; only the Backup object goes.
    Retain,
}

/// Where a Backup is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupPhase {
    /// Accepted; the worker Job is not running yet.
    Pending,
    /// The worker Job is running.
    Running,
    /// The backup is complete and its manifest is written.
    Succeeded,
    /// The backup failed; the `Ready` condition says why. Nothing of it is trusted.
    Failed,
}

/// The observed state of a Backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the backup is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// Conditions with reasons and messages; a failure names its cause here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The kind of source that was backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_kind: Option<SourceKind>,
    /// Name of the worker Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the worker started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the backup finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// How long the backup took, for display (for example `1m32s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Where the backup is stored, for example
    /// `s3://backups/prod/shop/shop-redis/20261201T160000Z/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Bytes read from the source, before compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<i64>,
    /// Bytes in storage, after compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    /// `storedBytes` for display (for example `12.5 MiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<String>,
    /// SHA-256 of the backup's manifest, which holds the size and SHA-256 of every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// What was backed up, counted by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<BackupStats>,
    /// Whether the stored data is encrypted (its manifest says so). A run whose settings ask
    /// for encryption and whose data is not encrypted has failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// What this run resolved when it started: the source, the store and the folder. Later
    /// deletions and restores use this record, never the schedule as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<ResolvedRun>,
    /// The notifications about this Backup, each recorded before it is sent: what was
    /// sent, to which Notifier, and what the sink answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Delivery>,
    /// When its schedule asked for a drill of this backup (`spec.drill`); the drill runs
    /// unless `verification` already answers that request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_requested_at: Option<Time>,
    /// The last restore drill of this backup: restored into a scratch instance and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<super::drill::Verification>,
    /// The date its schedule's retention wants the backup's objects locked until: a backup a
    /// longer rule keeps (monthly, yearly) is locked longer than it was written with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wanted_until: Option<Time>,
    /// The date the backup's objects were locked until when the lock was last extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<Time>,
    /// The Backup is being deleted and its objects are locked (S3 Object Lock) until then:
    /// its data is deleted, and the Backup goes, after that date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_until: Option<Time>,
    /// The copies of the backup in the schedule's other stores (`spec.copies`). A copy that
    /// fails never changes the Backup's phase: it is retried, and the `Copied` condition
    /// says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<super::copies::CopyStatus>,
}

/// The settings a Backup ran with, recorded before its worker Job is created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedRun {
    /// What was backed up (Secrets are named, never copied).
    pub source: BackupSource,
    /// The store the backup was written to.
    pub storage: BackupStorage,
    /// The compression of the stored data.
    pub compression: Compression,
    /// Who may read the backup, when it is encrypted (as written in the spec; the worker
    /// reads keys named in `recipientsFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// The backup's folder in the store, relative to its prefix; unique to this run
    /// (`<namespace>/<schedule or name>/<UTC time>-<UID prefix>/`).
    pub folder: String,
    /// The stores the backup is copied to once it succeeds (the schedule's `copies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<super::copies::BackupCopy>,
    /// The S3 Object Lock the backup's objects are written with: none of them can be deleted
    /// before `retainUntil`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<super::storage::LockRecord>,
}

/// Counts of what a backup holds; which ones are set depends on the source kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStats {
    /// Redis: keys backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<i64>,
    /// PostgreSQL, MySQL: databases backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<i64>,
    /// PostgreSQL, MySQL: tables backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<i64>,
    /// PostgreSQL, MySQL: rows counted in the backup's snapshot (MySQL: in the dump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// Volume: files, directories and links backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
}
