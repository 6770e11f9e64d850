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
