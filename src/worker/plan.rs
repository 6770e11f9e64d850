//! The plan the controller writes into a worker Job: what to do, where, and which Secret
//! keys hold the credentials, but never a secret value. Pure data, serialised as JSON into
//! the `COFFER_PLAN` environment variable.

use serde::{Deserialize, Serialize};

use crate::api::{
    BackupSource, BackupStorage, Compression, PostgresRestoreOptions, RedisRestoreOptions,
    VolumeRestoreOptions,
};
use crate::storage::manifest::BackupOwner;

/// The environment variable holding the plan as JSON.
pub const PLAN_ENV: &str = "COFFER_PLAN";
/// The environment variable holding the Redis or PostgreSQL password (from a `secretKeyRef`).
pub const PASSWORD_ENV: &str = "COFFER_PASSWORD";
/// The environment variables holding recipients from `spec.encryption.recipientsFrom`, one
/// per reference: `COFFER_RECIPIENTS_0`, `COFFER_RECIPIENTS_1`, ...
pub const RECIPIENTS_ENV_PREFIX: &str = "COFFER_RECIPIENTS_";
/// The environment variable holding a restore's age identity (from a `secretKeyRef`).
pub const IDENTITY_ENV: &str = "COFFER_IDENTITY";
/// Where the worker Pod mounts the claim of a volume source or target.
pub const SOURCE_MOUNT: &str = "/coffer/source";
/// Where the worker Pod mounts the claim of a filesystem store.
pub const STORE_MOUNT: &str = "/coffer/store";
/// Where the worker Pod mounts the claim of the n-th copy store (a copy's destination, a
/// restore's fallbacks): `/coffer/copy-0`, `/coffer/copy-1`, ...
pub const COPY_MOUNT_PREFIX: &str = "/coffer/copy-";
/// The variables holding the n-th copy store's S3 credentials:
/// `COFFER_COPY_0_AWS_ACCESS_KEY_ID`, `COFFER_COPY_0_AWS_SECRET_ACCESS_KEY`, ...
pub fn copy_credential_env(n: usize, key: &str) -> String {
    format!("COFFER_COPY_{n}_{key}")
}
/// The worker's writable scratch directory (an emptyDir; the root filesystem is read-only).
pub const TMP_MOUNT: &str = "/tmp";
/// Where the worker writes its JSON summary for the controller.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// One thing for a worker to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "camelCase")]
pub enum Plan {
    /// Take a backup into `folder` of the store.
    Backup(BackupPlan),
    /// Restore the backup in `folder` (or the newest one below it).
    Restore(RestorePlan),
    /// Delete the backup in `folder`: its manifest first, then its objects.
    Delete(DeletePlan),
    /// Read the manifest in `folder` and report it as a backup's result (the backup Job
    /// vanished before the controller read its summary). Writes nothing.
    Inspect(InspectPlan),
    /// Remove what failed runs left in `folder` (a schedule's), older than `minAgeSeconds`.
    Sweep(SweepPlan),
    /// The pre-flight check of a schedule: log in to the source, check the privileges a
    /// backup needs, and write, read back and delete a small object in `folder`.
    Check(CheckPlan),
    /// Copy the backup in `folder` to the same folder of another store, checking every
    /// object there; the manifest last.
    Copy(CopyPlan),
    /// Lock every object of the backup in `folder` until a later date (S3 Object Lock).
    Lock(LockPlan),
    /// Restore the backup in `folder` into a scratch instance the worker starts itself and
    /// throws away, and check it. Never touches the source: the plan does not name it.
    Drill(DrillPlan),
}

/// Drill one backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillPlan {
    pub storage: BackupStorage,
    pub folder: String,
    /// The manifest's SHA-256 recorded when the backup was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    #[serde(default)]
    pub checks: crate::api::DrillChecks,
    /// The Secret key holding the age identity of an encrypted backup (its value reaches
    /// the worker as [`IDENTITY_ENV`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<crate::api::SecretKeySelector>,
    /// The size limit of the emptyDir the scratch instance lives on (`spec.drill.scratchSize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_size: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

/// Extend the lock of one backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockPlan {
    pub storage: BackupStorage,
    pub folder: String,
    pub lock: crate::api::LockRecord,
}

/// Another store a backup is copied to (its credentials and mount are those of copy store
/// number `index` in the Job: [`copy_credential_env`], [`COPY_MOUNT_PREFIX`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyStore {
    /// The copy's name in the schedule's `spec.copies`.
    pub name: String,
    pub storage: BackupStorage,
}

/// Copy one backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyPlan {
    pub storage: BackupStorage,
    pub folder: String,
    /// Where to (copy store number 0).
    pub to: CopyStore,
    /// The manifest's SHA-256 recorded when the backup was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// The copy store's retention, applied after the copy to the backups in `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::api::Retention>,
    /// The folder of the schedule's backups (`<namespace>/<schedule>/`) retention chooses in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The schedule's time zone, in which retention counts days, weeks and months.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    /// The copy's objects are locked until then (the copy store's `objectLock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::api::LockRecord>,
}

/// Check that a schedule's backups can run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckPlan {
    pub source: BackupSource,
    pub storage: BackupStorage,
    pub folder: String,
    /// The schedule's encryption: its recipients must be usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::api::Encryption>,
}

/// Take one backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupPlan {
    pub source: BackupSource,
    pub storage: BackupStorage,
    /// The backup's folder in the store, relative to the storage prefix, ending in `/`.
    pub folder: String,
    /// The name recorded in the manifest (the schedule's or the Backup's).
    pub name: String,
    pub compression: Compression,
    /// Who may read the backup: it is encrypted when set. Keys named in `recipientsFrom`
    /// reach the worker as environment variables ([`RECIPIENTS_ENV_PREFIX`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::api::Encryption>,
    /// The Backup object this run is for, recorded in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<BackupOwner>,
    /// Every object is locked until `until` (S3 Object Lock; the storage's `objectLock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::api::LockRecord>,
}

/// Restore one backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    pub storage: BackupStorage,
    /// The backup's folder, or with `latest` the folder whose newest complete backup is used.
    pub folder: String,
    #[serde(default)]
    pub latest: bool,
    /// With `latest`: only backups completed by then count (the restore's start: never a
    /// backup taken since, such as its own safety backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_before: Option<chrono::DateTime<chrono::Utc>>,
    pub target: BackupSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisRestoreOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresRestoreOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<crate::api::MySqlRestoreOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeRestoreOptions>,
    /// The SHA-256 of the manifest recorded when the backup was taken (restores of a Backup
    /// object): a manifest that differs is refused before anything is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// The Secret key holding the age identity of an encrypted backup ([`IDENTITY_ENV`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<crate::api::SecretKeySelector>,
    /// Copies of the backup (copy stores 0, 1, ... in this order), tried when the backup in
    /// `storage` is missing or damaged, before anything is restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<CopyStore>,
    /// Only find out what the restore would do (the summary's `preview`); write nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// Delete one backup's objects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletePlan {
    pub storage: BackupStorage,
    pub folder: String,
    /// The UID of the Backup whose data this is: a folder whose manifest names another
    /// Backup is left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<String>,
}

/// Sweep one folder of the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepPlan {
    pub storage: BackupStorage,
    pub folder: String,
    pub min_age_seconds: i64,
}

/// Report the backup in `folder` (a run whose Job vanished).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectPlan {
    pub storage: BackupStorage,
    pub folder: String,
    /// The UID of the Backup the run was for: only a manifest naming it counts.
    pub owner_uid: String,
}

impl Plan {
    /// The plan as the JSON the worker reads.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Reads a plan; the error names what is wrong with it.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The store this plan works on.
    pub fn storage(&self) -> &BackupStorage {
        match self {
            Self::Backup(p) => &p.storage,
            Self::Restore(p) => &p.storage,
            Self::Delete(p) => &p.storage,
            Self::Inspect(p) => &p.storage,
            Self::Sweep(p) => &p.storage,
            Self::Check(p) => &p.storage,
            Self::Copy(p) => &p.storage,
            Self::Lock(p) => &p.storage,
            Self::Drill(p) => &p.storage,
        }
    }

    /// The other stores the plan reads or writes, in the order of their numbers.
    pub fn copy_stores(&self) -> Vec<&CopyStore> {
        match self {
            Self::Copy(p) => vec![&p.to],
            Self::Restore(p) => p.fallbacks.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The encryption a backup or a check works with.
    pub fn encryption(&self) -> Option<&crate::api::Encryption> {
        match self {
            Self::Backup(p) => p.encryption.as_ref(),
            Self::Check(p) => p.encryption.as_ref(),
            Self::Restore(_)
            | Self::Delete(_)
            | Self::Inspect(_)
            | Self::Sweep(_)
            | Self::Copy(_)
            | Self::Lock(_)
            | Self::Drill(_) => None,
        }
    }

    /// The source or target whose claim is mounted, if it is a volume.
    pub fn volume_claim(&self) -> Option<&str> {
        let source = match self {
            Self::Backup(p) => &p.source,
            Self::Restore(p) => &p.target,
            // A check does not mount the volume: the operator checks that its claim exists.
            Self::Delete(_)
            | Self::Inspect(_)
            | Self::Sweep(_)
            | Self::Check(_)
            | Self::Copy(_)
            | Self::Lock(_)
            | Self::Drill(_) => return None,
        };
        source.volume.as_ref().map(|v| v.claim_name.as_str())
    }

    /// The Secret key holding the Redis, PostgreSQL or MySQL password, if any.
    pub fn password_secret(&self) -> Option<&crate::api::SecretKeySelector> {
        let source = match self {
            Self::Backup(p) => &p.source,
            Self::Restore(p) => &p.target,
            Self::Check(p) => &p.source,
            Self::Delete(_)
            | Self::Inspect(_)
            | Self::Sweep(_)
            | Self::Copy(_)
            | Self::Lock(_)
            | Self::Drill(_) => {
                return None;
            }
        };
        source
            .redis
            .as_ref()
            .and_then(|r| r.password_secret_ref.as_ref())
            .or_else(|| {
                source
                    .postgres
                    .as_ref()
                    .and_then(|p| p.password_secret_ref.as_ref())
            })
            .or_else(|| {
                source
                    .mysql
                    .as_ref()
                    .and_then(|m| m.password_secret_ref.as_ref())
            })
    }

    /// `backup`, `restore`, `delete` or `inspect`.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Backup(_) => "backup",
            Self::Restore(_) => "restore",
            Self::Delete(_) => "delete",
            Self::Inspect(_) => "inspect",
            Self::Sweep(_) => "sweep",
            Self::Check(_) => "check",
            Self::Copy(_) => "copy",
            Self::Lock(_) => "lock",
            Self::Drill(_) => "drill",
        }
    }
}
