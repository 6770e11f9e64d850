//! `RestoreRequest`: restore one backup into its source or another target, once.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{JobTemplate, LocalObjectReference};
use super::encryption::Decryption;
use super::notifier::{Delivery, NotifierReference};
use super::source::BackupSource;
use super::storage::BackupStorage;

/// A RestoreRequest restores one backup, once: it stops the listed workloads, runs the
/// restore, checks the result and starts the workloads again.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "RestoreRequest",
    namespaced,
    status = "RestoreRequestStatus",
    derive = "PartialEq",
    shortname = "crr",
    category = "coffer",
    doc = "A RestoreRequest restores one backup once: it scales the listed workloads to zero, restores the data after checking its integrity, verifies the result and scales the workloads back.",
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Location",
        type_ = "string",
        json_path = ".status.location",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.backupRef) != has(self.from)")
        .message("exactly one of backupRef or from must be set"),
    validation = Rule::new("!has(self.fromCopy) || has(self.backupRef)")
        .message("fromCopy names a copy of the Backup in backupRef; with from, give the copy's storage and location instead"),
    validation = Rule::new("self == oldSelf")
        .message("a RestoreRequest runs once and its spec cannot change; create a new RestoreRequest")
)]
pub struct RestoreRequestSpec {
    /// The Backup to restore, in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_ref: Option<LocalObjectReference>,
    /// Restore straight from storage, without a Backup object (disaster recovery into a new
    /// cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<RestoreFrom>,
    /// Restore from this copy of the Backup (a name in its schedule's `copies`) instead of
    /// from the Backup's own store. Without it, a Backup whose data is missing or damaged
    /// is restored from its first intact copy, and the status says which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40))]
    pub from_copy: Option<String>,
    /// Where to restore to. Default: the source the backup was taken from. The kind must
    /// match the backup's (a Redis backup restores into Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupSource>,
    /// Options for a Redis restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisRestoreOptions>,
    /// Options for a PostgreSQL restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresRestoreOptions>,
    /// Options for a MySQL/MariaDB restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MySqlRestoreOptions>,
    /// Options for a volume restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeRestoreOptions>,
    /// The private key of an encrypted backup. Without it, restoring an encrypted backup
    /// fails before the target is touched, naming the backup's recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// Workloads scaled to zero before the restore and back to their recorded replicas after
    /// it, even when the restore fails. Deleting the request before it ends scales them back
    /// too (after stopping its worker) before the request goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiesce: Vec<QuiesceTarget>,
    /// Settings of the worker Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_template: Option<JobTemplate>,
    /// Notifiers (in this namespace) told whether the restore succeeded or failed (events
    /// `restoreSucceeded` and `restoreFailed`, each once). Default: the Notifiers of the
    /// Backup named in `backupRef` (a schedule's Backups name the schedule's); none for a
    /// restore `from` storage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub notify: Vec<NotifierReference>,
    /// Take a backup of the target as it is now before a restore that overwrites or drops
    /// data in it: Redis with `conflict: Overwrite` or `Flush`, PostgreSQL with `clean`, every
    /// MySQL/MariaDB restore (the dump drops and creates again the tables it holds) and every
    /// volume restore (files of the same name are replaced; `clean` empties it). It is taken
    /// after the workloads are stopped and before anything is written, with the settings of
    /// what backs the target's server up: a BackupSchedule's whose source is that server
    /// (store, encryption, `jobTemplate`, credentials), else the restored Backup's;
    /// a target nothing backs up fails the restore before anything is touched. A database
    /// server is backed up whole. Its name is in
    /// `status.safetyBackup` and an Event; it is kept 7 days (its `ttl`); restoring it with
    /// `Flush` or `clean` undoes this restore. If it fails, nothing is restored. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_backup: Option<bool>,
    /// Preview the restore instead of running it: the worker checks the backup (every
    /// object against its manifest) and reads the target, writes nothing, and
    /// `status.preview` says what the restore would do — Redis: keys added, overwritten,
    /// skipped or flushed first (counts and examples); PostgreSQL and MySQL: each database
    /// created, dropped and created again or restored into, every table of the backup with
    /// its rows now and after, the target's other tables, and the roles or accounts;
    /// volumes: files created, replaced, left alone or removed. Nothing is quiesced and no
    /// safety backup is taken. The result is the phase `Succeeded` with the reason
    /// `DryRun`; to restore, create another RestoreRequest without it. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// A backup found directly in storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFrom {
    /// The store that holds the backup.
    pub storage: BackupStorage,
    /// Path of the backup inside the store, relative to its prefix, for example
    /// `shop/shop-redis/20261201T160000Z/`. With `latest`, a folder of backups instead.
    #[schemars(length(min = 1, max = 1024))]
    pub location: String,
    /// Treat `location` as a folder of backups (for example `shop/shop-redis/`) and restore
    /// the newest complete one in it.
    #[serde(default)]
    pub latest: bool,
}

/// Options for restoring Redis data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisRestoreOptions {
    /// What to do with keys that already exist in the target: `Skip` leaves them alone (the
    /// default, and they are counted), `Overwrite` replaces them, `Flush` empties each
    /// restored database first.
    #[serde(default)]
    pub conflict: RedisConflict,
    /// Restore only this database of the backup (its index in the source). Default: every
    /// database in the backup, each into the database of the same index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub database: Option<i32>,
}

/// What a Redis restore does with keys that already exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RedisConflict {
    /// Keep the existing key; count it as skipped (the default).
    #[default]
    Skip,
    /// Replace the existing key with the backup's.
    Overwrite,
    /// Empty each restored database before restoring into it.
    Flush,
}

/// Options for restoring PostgreSQL databases.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRestoreOptions {
    /// Drop each object before re-creating it (`pg_restore --clean --if-exists`).
    #[serde(default)]
    pub clean: bool,
    /// Create databases that do not exist in the target.
    #[serde(default)]
    pub create: bool,
    /// Restore only these databases. Default: every database in the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub databases: Vec<String>,
    /// Also restore roles and tablespaces from the backup. Roles that do not exist in the
    /// target are created with the backup's attributes and password; what happens to roles
    /// that exist is `roles`. The role the restore logs in as is never changed. Role
    /// memberships and privileges on configuration parameters from the backup are added
    /// (nothing is revoked). Tablespaces that exist are left as they are. It all happens in
    /// one transaction: if any statement fails, no role or tablespace is changed and the
    /// restore fails naming it. A roles script holding anything but the role and tablespace
    /// statements pg_dumpall writes (psql meta-commands such as `\!` in particular) is
    /// refused before anything is restored.
    #[serde(default)]
    pub globals: bool,
    /// With `globals`: what to do with roles that already exist in the target. `Keep` (the
    /// default) leaves their password, attributes (`LOGIN`, `SUPERUSER`, `VALID UNTIL`...),
    /// settings and comment as they are. `Replace` gives them the backup's (settings and
    /// comments the backup does not have stay; a backup taken without role passwords leaves
    /// passwords alone).
    #[serde(default)]
    pub roles: RoleConflict,
}

/// Options for restoring MySQL/MariaDB databases. Each database's dump is loaded with the
/// server's own client; tables the dump holds are dropped and created again, other tables
/// stay (unless `clean`). Afterwards every table's row count is compared with the backup's
/// and the restore fails, naming the tables, on any difference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MySqlRestoreOptions {
    /// Drop each restored database and create it again first.
    #[serde(default)]
    pub clean: bool,
    /// Create databases that do not exist in the target (with the backup's character set
    /// and collation).
    #[serde(default)]
    pub create: bool,
    /// Restore only these databases. Default: every database in the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub databases: Vec<String>,
    /// Restore a database of the backup under another name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renames: Vec<DatabaseRename>,
    /// Also restore the accounts and grants from the backup, after the databases. Missing
    /// accounts are created with the backup's password; accounts that exist keep their
    /// password and attributes and only gain the backup's grants (nothing is revoked);
    /// `root`, the server's own accounts and the account the restore logs in as are never
    /// changed.
    #[serde(default)]
    pub users: bool,
}

/// A database restored under another name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRename {
    /// The database's name in the backup.
    #[schemars(length(min = 1, max = 64))]
    pub from: String,
    /// The name to restore it under.
    #[schemars(length(min = 1, max = 64))]
    pub to: String,
}

/// What a PostgreSQL restore of roles does with roles that already exist in the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RoleConflict {
    /// Leave existing roles as they are, password and attributes included (the default).
    #[default]
    Keep,
    /// Give existing roles the backup's attributes, password, settings and comment.
    Replace,
}

/// Options for restoring a volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestoreOptions {
    /// Empty the volume before extracting the backup into it.
    #[serde(default)]
    pub clean: bool,
    /// Give files back the owners (UID and GID) they had when backed up. This needs root:
    /// the restore worker then runs as UID 0 with only the CHOWN, DAC_OVERRIDE, FOWNER and
    /// FSETID capabilities (everything else dropped, no privilege escalation), which the
    /// `baseline` Pod Security Standard admits and `restricted` does not. Default: false,
    /// files belong to the worker's user (`jobTemplate.runAsUser`, 65532).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_owners: bool,
}

/// A workload stopped during the restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuiesceTarget {
    /// Kind of the workload.
    pub kind: WorkloadKind,
    /// Name of the workload, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A kind of workload that can be scaled to zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    /// An apps/v1 Deployment.
    Deployment,
    /// An apps/v1 StatefulSet.
    StatefulSet,
}

/// Where a RestoreRequest is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestorePhase {
    /// Accepted; nothing has been touched yet.
    Pending,
    /// Scaling the listed workloads to zero and waiting for their Pods to go.
    Quiescing,
    /// Taking the safety backup of the target (`status.safetyBackup`) before writing to it.
    BackingUp,
    /// The restore Job is running.
    Running,
    /// Scaling the workloads back to their recorded replicas.
    Resuming,
    /// The data is restored and verified, and the workloads are back.
    Succeeded,
    /// The restore failed; the `Ready` condition says why. Workloads were scaled back.
    Failed,
}

/// The observed state of a RestoreRequest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequestStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the restore is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// Conditions with reasons and messages; a failure names its cause here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where the restored backup is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Name of the restore Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Workloads that were scaled to zero, with the replicas they are scaled back to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiesced: Vec<QuiescedWorkload>,
    /// When the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the restore finished, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// What was restored, counted by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<RestoreStats>,
    /// The Backup of the target taken before the restore wrote to it (see
    /// `spec.safetyBackup`): restore it to undo this restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_backup: Option<String>,
    /// The copy the backup was read from, when it was not the Backup's own store (asked for
    /// with `fromCopy`, or because the backup itself was missing or damaged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from_copy: Option<String>,
    /// The notifications about this restore, each recorded before it is sent: what was
    /// sent, to which Notifier, and how it went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Delivery>,
    /// With `spec.dryRun`: what the restore would do, one line per outcome (as `coffer
    /// restore --dry-run` prints it). A long preview ends with a line saying how many more
    /// lines the worker's log holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview: Vec<String>,
}

/// A workload scaled to zero for a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuiescedWorkload {
    /// Kind of the workload.
    pub kind: WorkloadKind,
    /// Name of the workload.
    pub name: String,
    /// Replicas it had before the restore, and gets back after it.
    pub replicas: i32,
}

/// Counts of what a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStats {
    /// Keys, tables or files restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<i64>,
    /// Redis keys left alone because they already existed (`conflict: Skip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<i64>,
    /// Redis keys not restored because their expiry had passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<i64>,
    /// PostgreSQL: rows compared with the backup's counts after the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_verified: Option<i64>,
}
