//! Small types shared by every kind: references, compression, job settings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret in the same namespace as the object that refers to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret whose value is used.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference by name to an object in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How backup data is compressed before it is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (multi-threaded). Fast and compact; the default.
    #[default]
    Zstd,
    /// gzip, for tools that only read gzip.
    Gzip,
    /// No compression (for data that is already compressed or encrypted).
    None,
}

impl Compression {
    /// The name used in specs, manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::None => "none",
        }
    }
}

/// Settings for the Kubernetes Job (and its Pod) that runs a backup or a restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplate {
    /// CPU and memory requests and limits of the worker container. The worker streams with
    /// bounded memory, so a limit of 256Mi is enough for most backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the worker Pod must be scheduled on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the worker Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Priority class of the worker Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra labels for the worker Pod (for example for network policies or cost allocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Extra annotations for the worker Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// The UID the worker runs as. Default: 65532 (the image's user). Set it to the owner
    /// of a volume's files to back up files only their owner can read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub run_as_user: Option<i64>,
    /// The GID the worker runs as. Default: 65532.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub run_as_group: Option<i64>,
    /// The Pod's `fsGroup`: the kubelet makes every volume it mounts writable group-owned by
    /// it (the volume restored into too), recursively unless `fsGroupChangePolicy` says
    /// otherwise; it leaves volumes mounted read-only alone, such as the volume a backup
    /// reads. Default: 65532 (a claim used as the store becomes writable by the worker),
    /// except for a volume restore: none, so a restore never changes the owners of your
    /// data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub fs_group: Option<i64>,
    /// When the kubelet applies `fsGroup`: `OnRootMismatch` (the default here: only when the
    /// volume's root does not match already) or `Always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group_change_policy: Option<FsGroupChangePolicy>,
    /// Seconds the Job may run before Kubernetes stops it and the run is marked Failed.
    /// Default: 21600 (6 hours) for backups and restores, 3600 for deletions, so that a stuck
    /// run never blocks later ones forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// How many times a failed worker Pod is retried before the run is marked Failed.
    /// Default: 0 (a failed backup is reported at once; the next scheduled run is the retry).
    /// Restores ignore it: a restore is never run twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: Option<i32>,
    /// Seconds a finished Job (and its Pod and logs) is kept before Kubernetes deletes it.
    /// Default: 86400 (one day). At least 60, so that the controller reads the result first
    /// (a run whose Job vanished unread is judged by what is in storage, and a restore is
    /// never run twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// When the kubelet changes a volume's group to the Pod's `fsGroup`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FsGroupChangePolicy {
    /// Only when the volume's root directory does not have the group already.
    #[default]
    OnRootMismatch,
    /// On every mount, recursively.
    Always,
}
