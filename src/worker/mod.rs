//! `coffer worker`: runs one [`Plan`] inside a Job the controller created, with the same
//! engines as the local commands, and reports a [`Summary`] in its termination message.
//!
//! The worker has no Kubernetes API access. Everything it needs is in its environment: the
//! plan (`COFFER_PLAN`), the source's password (`COFFER_PASSWORD`) and the store's
//! credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), the last two from Secrets.

mod copies;
pub mod drill;
mod encryption;
mod failure;
pub mod plan;
mod preview;
pub mod summary;

use std::path::{Path, PathBuf};

use chrono::Utc;
use sha2::{Digest, Sha256};

pub use plan::Plan;
pub use summary::{Failure, Summary};

use crate::api::{BackupSource, BackupStats, BackupStorage, RestoreStats};
use crate::engine::mysql::{self, MyBackupRequest, MyRestoreRequest, MyTarget};
use crate::engine::postgres::{self, PgBackupRequest, PgRestoreRequest, PgTarget};
use crate::engine::redis::{self, RedisTarget};
use crate::engine::volume::{self, VolumeBackupRequest, VolumeRestoreRequest};
use crate::pipeline::Progress;
use crate::pipeline::encryption::DataKey;
use crate::pipeline::fetch::Spool;
use crate::storage::catalog::{self, ReadManifestError};
use crate::storage::keys;
use crate::storage::manifest::{MANIFEST, Manifest};
use crate::storage::purge::{self, PurgeError};
use crate::storage::{Destination, S3Options, Store};
use encryption::{recipients, unlock_failure};
use plan::{BackupPlan, CheckPlan, DeletePlan, InspectPlan, RestorePlan, SweepPlan};

/// Where the worker finds its mounted claims and secrets.
#[derive(Clone)]
pub struct Environment {
    /// The claim of a volume source or target.
    pub source_dir: PathBuf,
    /// The claim of a filesystem store.
    pub store_dir: PathBuf,
    /// The Redis or PostgreSQL password.
    pub password: Option<String>,
    /// A backup's recipients from `spec.encryption.recipientsFrom`, by index (a missing
    /// Secret, ConfigMap or key leaves its index out).
    pub recipients: std::collections::BTreeMap<usize, String>,
    /// A restore's age identity file (from `spec.decryption`).
    pub identity: Option<String>,
    /// Where copy store n's claim is mounted (copy stores on a claim).
    pub copy_dirs: Vec<PathBuf>,
    /// Copy store n's S3 credentials (copy stores whose storage names a Secret).
    pub copy_credentials: std::collections::BTreeMap<usize, (String, String)>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("source_dir", &self.source_dir)
            .field("store_dir", &self.store_dir)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("recipients", &self.recipients)
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("copy_dirs", &self.copy_dirs)
            .field(
                "copy_credentials",
                &self.copy_credentials.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Runs the plan to the end and says how it went; never panics on bad input.
pub async fn run(plan: &Plan, env: &Environment) -> Summary {
    let started_at = Utc::now();
    let result = match plan {
        Plan::Backup(p) => backup(p, env).await,
        Plan::Restore(p) => restore(p, env).await,
        Plan::Delete(p) => delete(p, env).await,
        Plan::Inspect(p) => inspect(p, env).await,
        Plan::Sweep(p) => sweep(p, env).await,
        Plan::Check(p) => check(p, env).await,
        Plan::Copy(p) => copies::copy(p, env).await,
        Plan::Lock(p) => lock(p, env).await,
        Plan::Drill(p) => drill::drill(p, env).await,
    };
    let mut summary = result.unwrap_or_else(|f| Summary::failed(f.failure, f.message));
    summary.started_at = Some(started_at);
    summary.completed_at = Some(Utc::now());
    summary
}

type Outcome = Result<Summary, Failed>;

/// A run that failed: its category and one-line message.
#[derive(Debug)]
struct Failed {
    failure: Failure,
    message: String,
}

fn fail(failure: impl Into<Failure>, e: impl std::fmt::Display) -> Failed {
    Failed {
        failure: failure.into(),
        message: e.to_string(),
    }
}

/// The store a plan names: an S3 bucket (credentials from `AWS_*`) or the mounted claim.
fn destination(
    storage: &BackupStorage,
    env: &Environment,
) -> Result<(Destination, S3Options), Failed> {
    match (&storage.s3, &storage.filesystem) {
        (Some(s3), None) => {
            let destination = Destination::parse(&format!("s3://{}/{}", s3.bucket, s3.prefix))
                .map_err(|e| fail(Failure::InvalidPlan, e))?;
            let options = S3Options {
                endpoint: s3.endpoint.clone(),
                region: Some(s3.region.clone()),
                force_path_style: Some(s3.force_path_style),
                ..S3Options::default()
            };
            Ok((destination, options))
        }
        (None, Some(_)) => Ok((
            Destination::Dir(env.store_dir.clone()),
            S3Options::default(),
        )),
        _ => Err(fail(
            Failure::InvalidPlan,
            "the plan's storage names neither s3 nor filesystem",
        )),
    }
}

/// Whether two storages are the same store or one is inside the other (same bucket of the
/// same service with nested prefixes, or the same claim): copying one into the other, or
/// applying one's retention to the other, would mix their backups.
pub fn same_store(a: &BackupStorage, b: &BackupStorage) -> bool {
    match (&a.s3, &b.s3, &a.filesystem, &b.filesystem) {
        (Some(a), Some(b), _, _) => {
            let endpoint = |s: &crate::api::S3Storage| {
                s.endpoint
                    .clone()
                    .unwrap_or_else(|| format!("aws:{}", s.region))
                    .trim_end_matches('/')
                    .to_ascii_lowercase()
            };
            let prefix = |s: &crate::api::S3Storage| {
                let p = s.prefix.trim_start_matches('/');
                if p.is_empty() || p.ends_with('/') {
                    p.to_owned()
                } else {
                    format!("{p}/")
                }
            };
            endpoint(a) == endpoint(b)
                && a.bucket == b.bucket
                && (prefix(a).starts_with(&prefix(b)) || prefix(b).starts_with(&prefix(a)))
        }
        (_, _, Some(a), Some(b)) => a.claim_name == b.claim_name,
        _ => false,
    }
}

/// The store of a plan, opened at `folder` (relative to the storage prefix; "" for its root).
async fn open(
    storage: &BackupStorage,
    env: &Environment,
    folder: &str,
) -> Result<(Store, Destination), Failed> {
    let (root, options) = destination(storage, env)?;
    let destination = if folder.is_empty() {
        root
    } else {
        root.join(folder)
    };
    Ok((Store::open(&destination, &options).await, destination))
}

fn redis_target(source: &BackupSource, env: &Environment) -> Result<RedisTarget, Failed> {
    let redis = source.redis.as_ref().ok_or_else(|| invalid("redis"))?;
    Ok(RedisTarget {
        host: redis.host.clone(),
        port: port(redis.port)?,
        username: redis.username.clone(),
        password: env.password.clone(),
        database: redis
            .database
            .map(|d| u32::try_from(d).map_err(|_| invalid("redis database")))
            .transpose()?,
    })
}

fn pg_target(source: &BackupSource, env: &Environment) -> Result<PgTarget, Failed> {
    let pg = source
        .postgres
        .as_ref()
        .ok_or_else(|| invalid("postgres"))?;
    Ok(PgTarget {
        host: pg.host.clone(),
        port: port(pg.port)?,
        user: pg.user.clone(),
        password: env.password.clone(),
        database: None,
    })
}

fn my_target(source: &BackupSource, env: &Environment) -> Result<MyTarget, Failed> {
    let my = source.mysql.as_ref().ok_or_else(|| invalid("mysql"))?;
    Ok(MyTarget {
        host: my.host.clone(),
        port: port(my.port)?,
        user: my.user.clone(),
        password: env.password.clone(),
        database: None,
    })
}

fn port(port: i32) -> Result<u16, Failed> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid("port"))
}

fn invalid(what: &str) -> Failed {
    fail(
        Failure::InvalidPlan,
        format!("the plan's {what} is missing or invalid"),
    )
}

async fn backup(plan: &BackupPlan, env: &Environment) -> Outcome {
    let (root, mut options) = destination(&plan.storage, env)?;
    if let Some(lock) = &plan.lock {
        if plan.storage.s3.is_none() {
            return Err(invalid("objectLock on a store that is not S3"));
        }
        options.lock = Some(crate::storage::lock::Lock {
            mode: lock.mode,
            until: crate::controller::status::chrono(&lock.retain_until),
        });
    }
    let store = Store::open(&root, &options).await;
    let destination = root;
    let location = destination.join(&plan.folder).to_string();
    let existing = store
        .list(&plan.folder)
        .await
        .map_err(|e| fail(&e, e.to_string()))?;
    if existing
        .iter()
        .any(|o| o.key == format!("{}{MANIFEST}", plan.folder))
    {
        // This run's own manifest (a retried Pod, or a Job made again after the first one
        // finished unread): the backup is there, and it is this one.
        if let (Some(owner), Ok(manifest)) = (
            &plan.owner,
            catalog::read_manifest(&store, &plan.folder).await,
        ) && manifest.owner.as_ref().is_some_and(|o| o.uid == owner.uid)
        {
            keys::check(&store, &plan.folder, &manifest)
                .await
                .map_err(|e| unlock_failure(&e))?;
            return Ok(backed_up(&manifest, &plan.folder, &location));
        }
        return Err(fail(
            Failure::AlreadyExists,
            format!("a backup already exists at {location}; nothing was written"),
        ));
    }
    let recipients = recipients(plan.encryption.as_ref(), env)?;
    let seal = if recipients.is_empty() {
        None
    } else {
        Some(
            keys::store(&store, &plan.folder, &recipients)
                .await
                .map_err(|e| unlock_failure(&e))?,
        )
    };
    let result = take(plan, env, &store, seal.clone()).await;
    if let (Some(seal), true) = (&seal, result.is_err()) {
        // Without a manifest the key object is garbage.
        keys::discard(&store, &plan.folder, seal).await;
    }
    Ok(backed_up(&result?, &plan.folder, &location))
}

/// Runs the engine of the plan's source.
async fn take(
    plan: &BackupPlan,
    env: &Environment,
    store: &Store,
    seal: Option<crate::pipeline::encryption::Seal>,
) -> Result<Manifest, Failed> {
    let store = store.clone();
    let progress = Progress::default();
    let folder = plan.folder.clone();
    let name = plan.name.clone();
    let compression = plan.compression;
    let manifest = if plan.source.redis.is_some() {
        let request = redis::BackupRequest {
            target: redis_target(&plan.source, env)?,
            mode: match plan.source.redis.as_ref().map(|r| r.mode) {
                Some(crate::api::RedisMode::Keys) => redis::Mode::Keys,
                _ => redis::Mode::Snapshot,
            },
            compression,
            name,
            folder,
            owner: plan.owner.clone(),
            seal: seal.clone(),
        };
        redis::backup(&store, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?
    } else if let Some(pg) = &plan.source.postgres {
        let request = PgBackupRequest {
            target: pg_target(&plan.source, env)?,
            databases: pg.databases.clone(),
            globals: pg.globals,
            compression,
            name,
            folder,
            owner: plan.owner.clone(),
            seal: seal.clone(),
            bin_dir: None,
        };
        postgres::backup(&store, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?
    } else if let Some(my) = &plan.source.mysql {
        let request = MyBackupRequest {
            target: my_target(&plan.source, env)?,
            databases: my.databases.clone(),
            users: my.users,
            compression,
            name,
            folder,
            owner: plan.owner.clone(),
            seal: seal.clone(),
            bin_dir: None,
        };
        mysql::backup(&store, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?
    } else if plan.source.volume.is_some() {
        let request = VolumeBackupRequest {
            path: env.source_dir.clone(),
            compression,
            name,
            folder,
            owner: plan.owner.clone(),
            seal: seal.clone(),
            skip_unreadable: plan
                .source
                .volume
                .as_ref()
                .is_some_and(|v| v.skip_unreadable),
        };
        volume::backup(&store, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?
    } else {
        return Err(invalid("source"));
    };
    Ok(manifest)
}

/// A backup's summary, from its manifest.
fn backed_up(manifest: &Manifest, folder: &str, location: &str) -> Summary {
    let mut message = format!(
        "backed up {} ({} stored) to {location}",
        crate::units::bytes(manifest.raw_bytes()),
        crate::units::bytes(manifest.stored_bytes())
    );
    // What the backup could not guarantee reaches the Ready condition and the Event (the
    // whole list is in the manifest).
    for warning in &manifest.stats.warnings {
        let mut shown = warning.clone();
        if shown.len() > 400 {
            let mut end = 400;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
            shown.push('…');
        }
        message.push_str(&format!("; warning: {shown}"));
    }
    Summary {
        message,
        folder: Some(folder.to_owned()),
        raw_bytes: Some(manifest.raw_bytes()),
        stored_bytes: Some(manifest.stored_bytes()),
        manifest_sha256: Some(hex::encode(Sha256::digest(manifest.to_json()))),
        backup: Some(backup_stats(manifest)),
        encrypted: manifest.encryption.is_some(),
        ..Summary::default()
    }
}

/// What the Backup's status shows of a manifest's statistics.
pub fn backup_stats(manifest: &Manifest) -> BackupStats {
    let s = &manifest.stats;
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let tables: usize = s.table_rows.values().map(Vec::len).sum();
    let entries = [s.files, s.directories, s.symlinks, s.hard_links];
    let is_sql = matches!(manifest.source.kind.as_str(), "postgres" | "mysql");
    BackupStats {
        keys: s.keys.map(signed),
        databases: s.databases.map(signed),
        tables: is_sql.then(|| signed(tables as u64)),
        rows: is_sql.then(|| signed(s.total_rows())),
        files: entries
            .iter()
            .any(Option::is_some)
            .then(|| signed(entries.iter().flatten().sum())),
    }
}

async fn restore(plan: &RestorePlan, env: &Environment) -> Outcome {
    let (root, destination, folder, manifest, from_copy) = if plan.latest {
        let (root, destination) = open(&plan.storage, env, "").await?;
        let (store, _) = open(&plan.storage, env, &plan.folder).await?;
        let (found, manifest) = catalog::latest_before(&store, plan.latest_before)
            .await
            .map_err(|e| fail(&e, &e))?
            .ok_or_else(|| {
                fail(
                    Failure::BackupNotFound,
                    format!(
                        "{} holds no complete backup",
                        destination.join(&plan.folder)
                    ),
                )
            })?;
        let folder = format!("{}{found}", normalized(&plan.folder));
        (root, destination, folder, manifest, None)
    } else {
        let found = copies::locate(plan, env).await?;
        (
            found.root,
            found.destination,
            found.folder,
            found.manifest,
            found.copy,
        )
    };
    let store = root.at(&folder);
    let location = destination.join(&folder).to_string();
    let target_kind = plan.target.kind().map(|k| match k {
        crate::api::SourceKind::Redis => "redis",
        crate::api::SourceKind::Postgres => "postgres",
        crate::api::SourceKind::MySql => "mysql",
        crate::api::SourceKind::Volume => "volume",
    });
    if target_kind != Some(manifest.source.kind.as_str()) {
        return Err(fail(
            Failure::InvalidPlan,
            format!(
                "{location} is a {} backup; it cannot be restored into {}: choose a target of the same kind",
                manifest.source.kind,
                target_kind.unwrap_or("this target")
            ),
        ));
    }
    // An encrypted backup opens before the target is touched.
    let identities = match (&env.identity, &plan.identity_secret) {
        (_, Some(_)) if manifest.encryption.is_none() => {
            // A key was given for a backup that should be encrypted and is not: it may have
            // been replaced in the bucket.
            return Err(fail(
                Failure::EncryptionKeyError,
                format!(
                    "{location} is not encrypted, but spec.decryption gives a key for it: if the backup was meant to be encrypted, it was replaced or taken without encryption; remove spec.decryption to restore it anyway; nothing was restored"
                ),
            ));
        }
        (Some(text), _) => {
            keys::parse_identities(text, "the Secret key in spec.decryption.identitySecretRef")
                .map_err(|e| fail(Failure::EncryptionKeyError, e))?
        }
        (None, Some(secret)) => {
            return Err(fail(
                Failure::EncryptionKeyError,
                format!(
                    "spec.decryption names key {} of Secret {}, which does not exist or is empty: create it with the age identity file; nothing was restored",
                    secret.key, secret.name
                ),
            ));
        }
        (None, None) => Vec::new(),
    };
    let key = keys::unlock(&store, "", &manifest, &identities)
        .await
        .map_err(|e| unlock_failure(&e))?;
    if plan.dry_run {
        let at = (&store, folder.as_str(), location.as_str());
        return preview::preview(plan, env, at, &manifest, key, from_copy).await;
    }
    let progress = Progress::default();
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let (stats, what) = if plan.target.redis.is_some() {
        let request = redis_request(plan, env, key.clone())?;
        let s = redis::restore(&store, "", &manifest, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?;
        let stats = RestoreStats {
            restored: Some(signed(s.restored)),
            skipped: Some(signed(s.skipped)),
            expired: Some(signed(s.expired)),
            rows_verified: None,
        };
        (stats, format!("{} keys", s.restored))
    } else if plan.target.postgres.is_some() {
        let request = pg_request(plan, env, key.clone())?;
        let s = postgres::restore(&store, "", &manifest, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?;
        let stats = RestoreStats {
            restored: Some(signed(s.tables_verified)),
            rows_verified: Some(signed(s.rows_verified)),
            ..RestoreStats::default()
        };
        (
            stats,
            format!(
                "{} database(s), {} rows verified",
                s.databases, s.rows_verified
            ),
        )
    } else if plan.target.mysql.is_some() {
        let request = my_request(plan, env, key.clone())?;
        let s = mysql::restore(&store, "", &manifest, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?;
        let stats = RestoreStats {
            restored: Some(signed(s.tables_verified)),
            rows_verified: Some(signed(s.rows_verified)),
            ..RestoreStats::default()
        };
        (
            stats,
            format!(
                "{} database(s), {} rows verified",
                s.databases, s.rows_verified
            ),
        )
    } else {
        let request = volume_request(plan, env, key.clone());
        let n = volume::restore(&store, "", &manifest, &request, &progress)
            .await
            .map_err(|e| fail(&e, &e))?;
        let stats = RestoreStats {
            restored: Some(signed(n)),
            ..RestoreStats::default()
        };
        (stats, format!("{n} entries"))
    };
    Ok(Summary {
        message: match &from_copy {
            None => format!("restored {what} from {location}"),
            Some((name, why)) => format!(
                "restored {what} from copy {name:?} at {location}, because the backup itself could not be used: {why}"
            ),
        },
        restored_from_copy: from_copy.map(|(name, _)| name),
        folder: Some(folder),
        raw_bytes: Some(manifest.raw_bytes()),
        stored_bytes: Some(manifest.stored_bytes()),
        restore: Some(stats),
        ..Summary::default()
    })
}

/// The Redis restore `plan` asks for.
fn redis_request(
    plan: &RestorePlan,
    env: &Environment,
    key: Option<DataKey>,
) -> Result<redis::RestoreRequest, Failed> {
    let options = plan.redis.clone().unwrap_or_default();
    Ok(redis::RestoreRequest {
        target: redis_target(&plan.target, env)?,
        conflict: options.conflict,
        database: options
            .database
            .map(|d| u32::try_from(d).map_err(|_| invalid("redis database")))
            .transpose()?,
        spool: spool(),
        key,
    })
}

/// The PostgreSQL restore `plan` asks for.
fn pg_request(
    plan: &RestorePlan,
    env: &Environment,
    key: Option<DataKey>,
) -> Result<PgRestoreRequest, Failed> {
    let options = plan.postgres.clone().unwrap_or_default();
    Ok(PgRestoreRequest {
        target: pg_target(&plan.target, env)?,
        databases: options.databases,
        clean: options.clean,
        create: options.create,
        globals: options.globals,
        roles: options.roles,
        bin_dir: None,
        spool: spool(),
        key,
    })
}

/// The MySQL restore `plan` asks for.
fn my_request(
    plan: &RestorePlan,
    env: &Environment,
    key: Option<DataKey>,
) -> Result<MyRestoreRequest, Failed> {
    let options = plan.mysql.clone().unwrap_or_default();
    Ok(MyRestoreRequest {
        target: my_target(&plan.target, env)?,
        databases: options.databases,
        renames: options
            .renames
            .into_iter()
            .map(|r| (r.from, r.to))
            .collect(),
        clean: options.clean,
        create: options.create,
        users: options.users,
        bin_dir: None,
        spool: spool(),
        key,
    })
}

/// The volume restore `plan` asks for (into the mounted claim).
fn volume_request(
    plan: &RestorePlan,
    env: &Environment,
    key: Option<DataKey>,
) -> VolumeRestoreRequest {
    VolumeRestoreRequest {
        target: env.source_dir.clone(),
        clean: plan.volume.as_ref().is_some_and(|v| v.clean),
        key,
    }
}

/// Where a restore may keep its copy of the backup: the Pod's TMPDIR (an emptyDir), up to
/// what the Job allows (`COFFER_SPOOL_BYTES`, which is also the volume's size limit).
fn spool() -> Spool {
    let limit = std::env::var(crate::controller::job::SPOOL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match limit {
        Some(bytes) => Spool::default().limited(bytes),
        None => Spool::default(),
    }
}

/// `a/b` → `a/b/`; `` stays ``.
fn normalized(folder: &str) -> String {
    let trimmed = folder.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
    }
}

fn manifest_failure(e: &ReadManifestError) -> Failed {
    match e {
        ReadManifestError::Missing { .. } => fail(Failure::BackupNotFound, e),
        ReadManifestError::Storage(s) => fail(s, e),
        ReadManifestError::Invalid(_) | ReadManifestError::Changed { .. } => {
            fail(Failure::IntegrityCheckFailed, e)
        }
    }
}

async fn delete(plan: &DeletePlan, env: &Environment) -> Outcome {
    let (store, destination) = open(&plan.storage, env, "").await?;
    let folder = normalized(&plan.folder);
    if folder.is_empty() {
        return Err(invalid("folder"));
    }
    let location = destination.join(&folder).to_string();
    let purged = match purge::delete_backup(&store, &folder, plan.owner_uid.as_deref()).await {
        Err(PurgeError::Storage(crate::storage::StorageError::Retained { location, until })) => {
            // The manifest goes first: a locked backup is refused whole, and stays whole.
            let e = crate::storage::StorageError::Retained { location, until };
            return Ok(Summary {
                failure: Some(Failure::Retained),
                message: e.to_string(),
                retained_until: until,
                ..Summary::default()
            });
        }
        other => other,
    };
    let purged = purged.map_err(|e| match &e {
        PurgeError::NotOwned { .. } => fail(Failure::NotOwned, &e),
        PurgeError::Root | PurgeError::Nested { .. } => fail(Failure::InvalidPlan, &e),
        PurgeError::Storage(s) => fail(s, &e),
    })?;
    Ok(Summary {
        message: format!(
            "deleted {} objects ({}) at {location}",
            purged.objects,
            crate::units::bytes(purged.stored_bytes)
        ),
        folder: Some(folder),
        stored_bytes: Some(purged.stored_bytes),
        ..Summary::default()
    })
}

/// Locks every object of a backup until a later date.
async fn lock(plan: &plan::LockPlan, env: &Environment) -> Outcome {
    let folder = normalized(&plan.folder);
    if folder.is_empty() {
        return Err(invalid("folder"));
    }
    let (store, destination) = open(&plan.storage, env, "").await?;
    let Store::S3(s3) = &store else {
        return Err(invalid("a lock on a store that is not S3"));
    };
    let until = crate::controller::status::chrono(&plan.lock.retain_until);
    let lock = crate::storage::lock::Lock {
        mode: plan.lock.mode,
        until,
    };
    let mut objects = store.list(&folder).await.map_err(|e| fail(&e, &e))?;
    // The manifest first, then the key object: a backup half extended is then locked whole
    // for the shorter date, and its manifest for the longer one (a deletion goes manifest
    // first and is refused before any data goes).
    objects.sort_by_key(|o| {
        let name = o.key.strip_prefix(&folder).unwrap_or(&o.key);
        (name != MANIFEST, !name.starts_with("keys-"))
    });
    for object in &objects {
        s3.extend_lock(&object.key, lock)
            .await
            .map_err(|e| fail(&e, &e))?;
    }
    Ok(Summary {
        message: format!(
            "locked the {} objects of {} until {}",
            objects.len(),
            destination.join(&folder),
            until.to_rfc3339()
        ),
        folder: Some(folder),
        retained_until: Some(until),
        ..Summary::default()
    })
}

/// The result of a backup whose Job vanished, judged by what is in storage: a manifest that
/// names this run means it succeeded.
async fn inspect(plan: &InspectPlan, env: &Environment) -> Outcome {
    let (root, destination) = open(&plan.storage, env, "").await?;
    let folder = normalized(&plan.folder);
    if folder.is_empty() {
        return Err(invalid("folder"));
    }
    let location = destination.join(&folder).to_string();
    let manifest = catalog::read_manifest(&root, &folder)
        .await
        .map_err(|e| match &e {
            ReadManifestError::Missing { .. } => fail(
                Failure::BackupNotFound,
                format!("the backup's worker stopped before it wrote a manifest at {location}: the backup is incomplete"),
            ),
            _ => manifest_failure(&e),
        })?;
    let owner = manifest.owner.as_ref().map(|o| o.uid.as_str());
    if owner != Some(plan.owner_uid.as_str()) {
        return Err(fail(
            Failure::NotOwned,
            format!(
                "the manifest at {location} was not written for this Backup (UID {}): it is not this run's result",
                plan.owner_uid
            ),
        ));
    }
    keys::check(&root, &folder, &manifest)
        .await
        .map_err(|e| unlock_failure(&e))?;
    Ok(backed_up(&manifest, &folder, &location))
}

/// Removes what failed runs left in the plan's folder, older than its minimum age.
async fn sweep(plan: &SweepPlan, env: &Environment) -> Outcome {
    let folder = normalized(&plan.folder);
    if folder.is_empty() {
        return Err(invalid("folder"));
    }
    let (store, destination) = open(&plan.storage, env, &folder).await?;
    let min_age = chrono::TimeDelta::seconds(plan.min_age_seconds.max(0));
    let found = crate::storage::sweep::find(&store, Utc::now(), min_age)
        .await
        .map_err(|e| fail(&e, &e))?;
    let mut removed = Vec::new();
    let mut bytes = 0;
    let mut locked = 0;
    for leftover in &found.leftovers {
        match crate::storage::sweep::remove(&store, leftover).await {
            Ok(()) => {}
            // Locked (a failed run in a locked bucket): removed by a sweep after its date.
            Err(crate::storage::StorageError::Retained { .. }) => {
                locked += 1;
                continue;
            }
            Err(e) => return Err(fail(&e, &e)),
        }
        removed.push(format!("{} {}", leftover.kind.as_str(), leftover.key));
        bytes += leftover.bytes;
    }
    let mut message = if removed.is_empty() {
        format!("nothing to sweep in {destination}")
    } else {
        format!(
            "removed {} leftover(s) ({}) from {destination}: {}",
            removed.len(),
            crate::units::bytes(bytes),
            removed.join(", ")
        )
    };
    if locked > 0 {
        message.push_str(&format!(
            "; {locked} leftover(s) are locked (S3 Object Lock) and are removed after their date"
        ));
    }
    for blind in &found.blind_spots {
        message.push_str(&format!("; {blind}"));
    }
    Ok(Summary {
        message,
        folder: Some(folder),
        stored_bytes: Some(bytes),
        swept: Some(removed.len() as u64),
        ..Summary::default()
    })
}

/// The pre-flight check: each probe's finding, both reported (a check fails only as a
/// whole when the plan itself is wrong).
async fn check(plan: &CheckPlan, env: &Environment) -> Outcome {
    use crate::engine::probe;
    let source = if plan.source.redis.is_some() {
        probe::redis(&redis_target(&plan.source, env)?).await
    } else if let Some(pg) = &plan.source.postgres {
        probe::postgres(&pg_target(&plan.source, env)?, &pg.databases).await
    } else if plan.source.mysql.is_some() {
        probe::mysql(&my_target(&plan.source, env)?).await
    } else if let Some(volume) = &plan.source.volume {
        probe::Finding {
            subject: "source",
            ok: true,
            message: format!(
                "claim {} exists; its files are read by the backup itself",
                volume.claim_name
            ),
        }
    } else {
        return Err(invalid("source"));
    };
    let folder = normalized(&plan.folder);
    let (store, destination) = open(&plan.storage, env, &folder).await?;
    // The bucket's lock settings first: in a bucket with a default retention rule the probe
    // object would be locked, and could not be removed.
    let lock_problem = match (
        plan.storage
            .s3
            .as_ref()
            .and_then(|s| s.object_lock.as_ref()),
        &store,
    ) {
        (Some(_), Store::S3(s3)) => s3.check_lock().await.err(),
        _ => None,
    };
    let mut storage = match lock_problem {
        Some(e) => probe::Finding {
            subject: "storage",
            ok: false,
            message: e.to_string(),
        },
        None => probe::storage(&store, &destination.to_string()).await,
    };
    if let Err(e) = recipients(plan.encryption.as_ref(), env) {
        // Backups could be stored but not encrypted: the store's side of the check fails.
        storage = probe::Finding {
            subject: "storage",
            ok: false,
            message: if storage.ok {
                format!("backups cannot be encrypted: {}", e.message)
            } else {
                format!(
                    "{}; backups cannot be encrypted: {}",
                    storage.message, e.message
                )
            },
        };
    }
    let failure = match (source.ok, storage.ok) {
        (true, true) => None,
        (false, _) => Some(Failure::SourceUnreachable),
        (true, false) => Some(Failure::StorageError),
    };
    let message = match (source.ok, storage.ok) {
        (true, true) => format!("{}; {}", source.message, storage.message),
        (false, true) => source.message.clone(),
        (true, false) => storage.message.clone(),
        (false, false) => format!("{}; {}", source.message, storage.message),
    };
    Ok(Summary {
        failure,
        message,
        checks: Some(summary::Checks {
            source_ok: source.ok,
            source: source.message,
            storage_ok: storage.ok,
            storage: storage.message,
        }),
        ..Summary::default()
    })
}

/// Writes the summary where Kubernetes reads the termination message. A failure to write it
/// is logged: the Job's own status still tells success from failure.
pub fn write_termination_message(path: &Path, summary: &Summary) {
    if let Err(e) = std::fs::write(path, summary.to_termination_message()) {
        tracing::warn!("cannot write the summary to {}: {e}", path.display());
    }
}
