//! The Coffer API: group `coffer.dev`, version `v1alpha1`.
//!
//! One file per kind, plus the shared types they are built from. The CRDs in `crds/` are
//! generated from these types by `coffer crds` (see [`crds`]).

pub mod backup;
pub mod backup_schedule;
pub mod common;
pub mod copies;
pub mod crds;
pub mod drill;
pub mod encryption;
pub mod notifier;
pub mod restore_request;
pub mod retention;
pub mod source;
pub mod storage;

pub use backup::{
    Backup, BackupPhase, BackupSpec, BackupStats, BackupStatus, DeletionPolicy, ResolvedRun,
};
pub use backup_schedule::{
    BackupSchedule, BackupScheduleSpec, BackupScheduleStatus, ConcurrencyPolicy, Freshness,
    PreflightRecord, SweepRecord,
};
pub use common::{
    Compression, FsGroupChangePolicy, JobTemplate, LocalObjectReference, SecretKeySelector,
};
pub use copies::{BackupCopy, CopyPhase, CopyStatus};
pub use drill::{DrillChecks, DrillSpec, LastDrill, Verification, VerificationPhase};
pub use encryption::{ConfigMapKeySelector, Decryption, Encryption, RecipientsSource};
pub use notifier::{
    Delivery, DeliveryState, EmailSink, EmailTls, HeartbeatSink, Notifier, NotifierReference,
    NotifierSpec, NotifierStatus, NotifyEvent, WebhookFormat, WebhookSink,
};
pub use restore_request::{
    DatabaseRename, MySqlRestoreOptions, PostgresRestoreOptions, QuiesceTarget, QuiescedWorkload,
    RedisConflict, RedisRestoreOptions, RestoreFrom, RestorePhase, RestoreRequest,
    RestoreRequestSpec, RestoreRequestStatus, RestoreStats, RoleConflict, VolumeRestoreOptions,
    WorkloadKind,
};
pub use retention::Retention;
pub use source::{
    BackupSource, MySqlSource, PostgresSource, RedisMode, RedisSource, SourceKind, VolumeSource,
};
pub use storage::{
    BackupStorage, FilesystemStorage, LockRecord, ObjectLock, ObjectLockMode, S3Storage,
};

/// The API group of every Coffer kind.
pub const GROUP: &str = "coffer.dev";
