//! Copies of a schedule's backups in other stores (3-2-1), and their state on each Backup.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::retention::Retention;
use super::storage::BackupStorage;

/// Another store every successful backup of the schedule is copied to, after it succeeds:
/// object by object, each checked there against the manifest (size and SHA-256), the
/// manifest last. An encrypted backup is copied as it is stored (no key is needed). A copy
/// that fails is retried with a growing delay and never fails the backup itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupCopy {
    /// The copy's name, unique in the schedule (shown in status, used by
    /// `RestoreRequest.spec.fromCopy`).
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Where the copies go: another bucket (its own endpoint and credentials) or a claim.
    /// The backup keeps its folder there (`<namespace>/<schedule>/<time>-<uid>/`).
    pub storage: BackupStorage,
    /// Which copies this store keeps, chosen among the copies it holds with the same rules as
    /// the schedule's retention (fewer daily and more monthly is typical). Deletions touch
    /// only this store. Without it, every copy is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// Where a copy of one backup is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CopyPhase {
    /// Waiting for its turn (the backup is running, or a retry is due later).
    Pending,
    /// Its worker Job runs.
    Running,
    /// The copy is complete and was checked object by object.
    Succeeded,
    /// The last attempt failed; another follows (see `nextAttemptTime`).
    Failed,
    /// The copy store's retention deleted it.
    Removed,
    /// It can never be made (its store is the schedule's own, it has no credentials of its
    /// own, another backup is in its place, or the backup is gone): not tried again.
    Abandoned,
}

/// The state of one copy of a Backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyStatus {
    /// The copy's name in the schedule.
    pub name: String,
    /// Where the copy is, for example `s3://offsite/prod/shop/shop-pg/20261201T020000Z-1a2b3c4d/`.
    pub location: String,
    pub phase: CopyPhase,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: i32,
    /// When the copy was last checked complete at its store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_time: Option<Time>,
    /// When the next attempt is due (after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// What the last attempt did, or why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
