//! Where backups are kept: an S3-compatible bucket or a PersistentVolumeClaim.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::LocalObjectReference;

/// Where backups are stored. Set exactly one of `s3` or `filesystem`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.filesystem)")
    .message("exactly one of s3 or filesystem must be set"))]
pub struct BackupStorage {
    /// An S3 bucket (AWS or any S3-compatible store: MinIO, Ceph RGW, R2, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    /// A PersistentVolumeClaim in the same namespace used as the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemStorage>,
}

/// An S3 or S3-compatible bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Bucket name.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// Key prefix inside the bucket, for example `prod/`. Backups are written under
    /// `<prefix><namespace>/<schedule or backup name>/<UTC timestamp>/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512))]
    pub prefix: String,
    /// Endpoint URL of an S3-compatible store, for example `https://minio.storage.svc:9000`.
    /// Default: AWS S3 for `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Address the bucket as `<endpoint>/<bucket>` instead of `<bucket>.<endpoint>`; most
    /// self-hosted S3-compatible stores need this.
    #[serde(default)]
    pub force_path_style: bool,
    /// Secret with the keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`. The values reach
    /// the worker as environment variables and never appear in status, events or logs.
    /// Default: the AWS SDK's default credential chain of the worker Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// Write every object of a backup once, locked against deletion and overwriting until a
    /// date (S3 Object Lock). The bucket must have been created with object lock enabled and
    /// have no default retention rule (Coffer sets each object's date itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
}

/// How a backup's objects are locked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectLock {
    /// `Governance`: nobody deletes a locked object before its date unless they hold the
    /// `s3:BypassGovernanceRetention` permission (Coffer never uses it). `Compliance`: nobody
    /// at all, not even the account's root user, and the date can never be shortened.
    pub mode: ObjectLockMode,
    /// How long each backup is locked, from the time it was taken: a number followed by `m`
    /// (minutes), `h`, `d` or `w`, for example `30d`. Default: derived from the schedule's
    /// retention, the shortest period a rule keeps a backup (`keepDaily: 7` locks 7 days;
    /// `keepMonthly: 12` alone locks 12 × 31 days), at most `maxAge`; 30 days without
    /// retention rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}[mhdw]$"))]
    pub retain_for: Option<String>,
}

/// The S3 Object Lock retention mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ObjectLockMode {
    Governance,
    Compliance,
}

impl ObjectLockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Governance => "Governance",
            Self::Compliance => "Compliance",
        }
    }
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

/// A PersistentVolumeClaim used as a backup store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemStorage {
    /// Name of the PersistentVolumeClaim. It must allow being mounted by the worker Pods
    /// (ReadWriteMany, or ReadWriteOnce on a single node).
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// The lock a backup's objects were written with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockRecord {
    pub mode: ObjectLockMode,
    /// Until when no object of the backup can be deleted or overwritten.
    pub retain_until: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}
