//! The worker's side of copies: copying a backup to a copy store, and finding a good copy
//! when the backup a restore asks for is missing or damaged.

use super::plan::{CopyPlan, CopyStore, RestorePlan};
use super::{Environment, Failed, Failure, Outcome, Summary, destination, fail, manifest_failure};
use crate::api::BackupStorage;
use crate::storage::catalog;
use crate::storage::copy::{self, CopyError, CopyOptions};
use crate::storage::manifest::Manifest;
use crate::storage::{Destination, Store};

/// Copy store number `index` of the Job, opened at its root: S3 with the credentials of its
/// own Secret, or its mounted claim.
async fn open_copy(
    index: usize,
    copy: &CopyStore,
    env: &Environment,
    lock: Option<&crate::api::LockRecord>,
) -> Result<(Store, Destination), Failed> {
    let (mut root, mut options) = destination(&copy.storage, env)?;
    options.lock = lock.map(|l| crate::storage::lock::Lock {
        mode: l.mode,
        until: crate::controller::status::chrono(&l.retain_until),
    });
    if copy.storage.filesystem.is_some() {
        let dir = env.copy_dirs.get(index).cloned().ok_or_else(|| {
            fail(
                Failure::InvalidPlan,
                format!(
                    "copy {:?} has no mounted claim (a worker older than the controller?): run the worker image of the controller's version",
                    copy.name
                ),
            )
        })?;
        root = Destination::Dir(dir);
    } else if copy
        .storage
        .s3
        .as_ref()
        .is_some_and(|s| s.credentials_secret_ref.is_some())
    {
        options.credentials = env.copy_credentials.get(&index).cloned();
        if options.credentials.is_none() {
            return Err(fail(
                Failure::StorageError,
                format!(
                    "the credentials of copy {:?} are missing: its Secret needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    copy.name
                ),
            ));
        }
    }
    Ok((Store::open(&root, &options).await, root))
}

/// Whether two stores are the same S3 service reached with the same credentials, so that
/// the service can copy objects itself.
pub fn same_service(a: &BackupStorage, b: &BackupStorage) -> bool {
    match (&a.s3, &b.s3) {
        (Some(a), Some(b)) => {
            a.endpoint == b.endpoint
                && a.region == b.region
                && a.force_path_style == b.force_path_style
                && a.credentials_secret_ref == b.credentials_secret_ref
        }
        _ => false,
    }
}

fn copy_failure(e: &CopyError) -> Failed {
    match e {
        CopyError::Source(m) => manifest_failure(m),
        CopyError::Occupied { .. } => fail(Failure::AlreadyExists, e),
        CopyError::Storage(s) => fail(s, e),
        CopyError::Integrity(i) if i.is_mismatch() => fail(Failure::IntegrityCheckFailed, e),
        CopyError::Integrity(crate::pipeline::IntegrityError::Storage(s)) => fail(s, e),
        CopyError::Integrity(_) => fail(Failure::StorageError, e),
        CopyError::Keys(k) => super::encryption::unlock_failure(k),
    }
}

/// Copies the plan's backup to its copy store, into the same folder.
pub(super) async fn copy(plan: &CopyPlan, env: &Environment) -> Outcome {
    let folder = super::normalized(&plan.folder);
    if folder.is_empty() {
        return Err(super::invalid("folder"));
    }
    if super::same_store(&plan.storage, &plan.to.storage) {
        return Err(fail(
            Failure::InvalidPlan,
            format!(
                "copy {:?} is in the schedule's own store (the same bucket and an overlapping prefix, or the same claim): give it another bucket, prefix or claim",
                plan.to.name
            ),
        ));
    }
    let (from, _) = super::open(&plan.storage, env, "").await?;
    let (to, root) = open_copy(0, &plan.to, env, plan.lock.as_ref()).await?;
    let location = root.join(&folder).to_string();
    let options = CopyOptions {
        manifest_sha256: plan.manifest_sha256.as_deref(),
        server_side: same_service(&plan.storage, &plan.to.storage),
    };
    let copied = copy::copy_backup(&from, &folder, &to, &folder, options)
        .await
        .map_err(|e| copy_failure(&e))?;
    let message = if copied.already {
        format!("{location} already holds this backup, intact; nothing was copied")
    } else {
        format!(
            "copied {} object(s), {}, to {location} and checked them there{}",
            copied.objects,
            crate::units::bytes(copied.bytes),
            if copied.server_side > 0 {
                " (copied by the S3 service itself)"
            } else {
                ""
            }
        )
    };
    let mut message = message;
    let (pruned, prune_error) = match &plan.retention {
        None => (Vec::new(), None),
        // The copy is made whatever retention does; a retention that fails is said apart
        // (and tried again after the next copy).
        Some(policy) => prune(&to, plan, policy).await,
    };
    if !pruned.is_empty() {
        message.push_str(&format!(
            "; retention of copy {:?} deleted {} older copies there",
            plan.to.name,
            pruned.len()
        ));
    }
    Ok(Summary {
        message,
        folder: Some(folder),
        stored_bytes: Some(copied.bytes),
        manifest_sha256: Some(copied.manifest_sha256),
        pruned,
        prune_error,
        ..Summary::default()
    })
}

/// The most folders a summary names (it must fit in a termination message).
const MAX_PRUNED_SHOWN: usize = 40;

/// Applies the copy store's retention to the schedule's backups in it; returns the folders
/// deleted, and why retention stopped if it did. Only complete backups taken by Coffer for a
/// Backup of the plan's namespace and schedule take part (a copy made by hand, another
/// schedule's, or another namespace's are left alone); only this store is touched.
async fn prune(
    store: &Store,
    plan: &CopyPlan,
    policy: &crate::api::Retention,
) -> (Vec<String>, Option<String>) {
    use crate::controller::retention::{self, Outcome, Run};
    let mut pruned = Vec::new();
    let group = super::normalized(&plan.group);
    let mut parts = group.trim_end_matches('/').split('/');
    let (Some(namespace), Some(schedule), None) = (parts.next(), parts.next(), parts.next()) else {
        return (
            pruned,
            Some("the plan names no schedule's folder".to_owned()),
        );
    };
    if super::same_store(&plan.storage, &plan.to.storage) {
        return (
            pruned,
            Some(
                "the copy store is the schedule's own store: its retention does not run there"
                    .to_owned(),
            ),
        );
    }
    let zone: chrono_tz::Tz = plan.time_zone.parse().unwrap_or(chrono_tz::Tz::UTC);
    let at = store.at(&group);
    let entries = match catalog::scan(&at).await {
        Ok(entries) => entries,
        Err(e) => return (pruned, Some(e.to_string())),
    };
    let mut history = Vec::new();
    for entry in &entries {
        let Some(Ok(manifest)) = &entry.manifest else {
            continue;
        };
        // Only folders directly below the group (one backup each).
        let name = entry.folder.trim_end_matches('/');
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let ours = manifest
            .owner
            .as_ref()
            .is_some_and(|o| o.kind == "Backup" && o.namespace == namespace)
            && manifest.name == schedule;
        if !ours {
            continue;
        }
        history.push(Run {
            name: entry.folder.clone(),
            time: folder_time(name).unwrap_or(manifest.started_at),
            outcome: Outcome::Succeeded,
        });
    }
    let selection = match retention::select(&history, policy, zone, chrono::Utc::now()) {
        Ok(selection) => selection,
        Err(e) => return (pruned, Some(e.to_string())),
    };
    for (folder, why) in &selection.delete {
        match crate::storage::purge::delete_backup(&at, folder, None).await {
            Ok(_) => {}
            // Locked: deleted by a later copy's retention, after its date.
            Err(crate::storage::purge::PurgeError::Storage(
                crate::storage::StorageError::Retained { .. },
            )) => continue,
            Err(e) => return (pruned, Some(format!("deleting {folder}: {e}"))),
        }
        tracing::info!(
            folder = folder.as_str(),
            "copy deleted by its store's retention: {why}"
        );
        if pruned.len() < MAX_PRUNED_SHOWN {
            pruned.push(format!("{group}{folder}"));
        }
    }
    (pruned, None)
}

/// The time in a backup folder's name (`20261201T020000Z-1a2b3c4d`).
fn folder_time(name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let stamp = name.get(..16)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// The backup a restore reads: the one in the plan's store when it is whole, else the first
/// whole copy among the plan's fallbacks. Returns the store (opened at the store's root),
/// the folder, the manifest, where it is, and the name of the copy when one is used with the
/// reason the backup itself was not.
pub(super) struct Located {
    pub root: Store,
    pub destination: Destination,
    pub folder: String,
    pub manifest: Manifest,
    pub copy: Option<(String, String)>,
}

/// Reads the manifest of `folder` and, when copies could stand in, checks every object
/// (size and SHA-256) and the key object before anything is restored.
async fn whole(
    store: &Store,
    folder: &str,
    expected: Option<&str>,
    check_objects: bool,
) -> Result<Manifest, Failed> {
    if !check_objects {
        return catalog::read_manifest_expecting(store, folder, expected)
            .await
            .map_err(|e| manifest_failure(&e));
    }
    copy::check_whole(store, folder, expected)
        .await
        .map_err(|e| copy_failure(&e))
}

/// Whether a failure says the backup is missing or damaged (so that a copy may stand in), as
/// opposed to a store that could not answer.
fn lost_or_damaged(f: &Failed) -> bool {
    matches!(
        f.failure,
        Failure::BackupNotFound | Failure::IntegrityCheckFailed | Failure::EncryptionKeyError
    )
}

/// Finds the backup of a restore of one folder (not `latest`).
pub(super) async fn locate(plan: &RestorePlan, env: &Environment) -> Result<Located, Failed> {
    let folder = super::normalized(&plan.folder);
    let (root, destination) = super::open(&plan.storage, env, "").await?;
    let expected = plan.manifest_sha256.as_deref();
    let fallbacks = !plan.fallbacks.is_empty();
    let primary = match whole(&root, &folder, expected, fallbacks).await {
        Ok(manifest) => {
            return Ok(Located {
                root,
                destination,
                folder,
                manifest,
                copy: None,
            });
        }
        Err(e) if fallbacks && lost_or_damaged(&e) => e,
        Err(e) => return Err(e),
    };
    let mut tried = Vec::new();
    for (index, copy) in plan.fallbacks.iter().enumerate() {
        let attempt = async {
            let (store, destination) = open_copy(index, copy, env, None).await?;
            let manifest = whole(&store, &folder, expected, true).await?;
            Ok::<_, Failed>((store, destination, manifest))
        };
        match attempt.await {
            Ok((store, destination, manifest)) => {
                tracing::warn!(
                    copy = copy.name.as_str(),
                    "the backup is missing or damaged ({}); restoring from copy {:?}",
                    primary.message,
                    copy.name
                );
                return Ok(Located {
                    root: store,
                    destination,
                    folder,
                    manifest,
                    copy: Some((copy.name.clone(), primary.message.clone())),
                });
            }
            Err(e) => tried.push(format!("copy {:?}: {}", copy.name, e.message)),
        }
    }
    Err(Failed {
        failure: primary.failure,
        message: format!(
            "{}; no copy could stand in ({}); nothing was restored",
            primary.message,
            tried.join("; ")
        ),
    })
}
