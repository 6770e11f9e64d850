//! What a store holds: its backups (folders with a manifest) and the leftovers of failed
//! ones (folders with data but no manifest, which are not backups).

use std::collections::HashSet;

use super::manifest::{MANIFEST, MAX_MANIFEST_BYTES, Manifest, ManifestError};
use super::{StorageError, Store};

/// A folder of the store that holds a backup or the remains of one.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The folder, relative to the store, ending in `/` (empty for the store's root).
    pub folder: String,
    /// The manifest, or why it could not be read; `None` when there is none.
    pub manifest: Option<Result<Manifest, String>>,
    /// Bytes stored in the folder.
    pub stored_bytes: u64,
}

impl Entry {
    /// `ok`, `incomplete` (no manifest: a failed or running backup) or `unreadable`.
    pub fn status(&self) -> &'static str {
        match &self.manifest {
            Some(Ok(_)) => "ok",
            Some(Err(_)) => "unreadable",
            None => "incomplete",
        }
    }
}

/// Every backup folder under the store's destination, newest first (by completion time;
/// leftovers, which have none, by folder name, after the backups of the same name).
pub async fn scan(store: &Store) -> Result<Vec<Entry>, StorageError> {
    let objects = store.list("").await?;
    let keys: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut entries: Vec<Entry> = Vec::new();
    for object in &objects {
        let folder = backup_folder(&object.key, &keys);
        match entries.iter_mut().find(|e| e.folder == folder) {
            Some(entry) => entry.stored_bytes += object.size,
            None => entries.push(Entry {
                folder,
                manifest: None,
                stored_bytes: object.size,
            }),
        }
    }
    for entry in &mut entries {
        let key = format!("{}{MANIFEST}", entry.folder);
        if !objects.iter().any(|o| o.key == key) {
            continue;
        }
        let location = store.location(&key);
        entry.manifest = Some(match store.get_bytes(&key, MAX_MANIFEST_BYTES).await {
            Ok(bytes) => Manifest::from_json(&bytes, &location).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        });
    }
    entries.sort_by(|a, b| {
        let time = |e: &Entry| match &e.manifest {
            Some(Ok(m)) => Some(m.completed_at),
            _ => None,
        };
        time(b).cmp(&time(a)).then_with(|| b.folder.cmp(&a.folder))
    });
    Ok(entries)
}

/// Sub-folders that engines put objects in, inside a backup's folder.
const ENGINE_FOLDERS: [&str; 1] = ["postgres/"];

/// The backup folder an object belongs to: the deepest folder above it that holds a
/// manifest; for the remains of a failed backup (no manifest), the object's folder, or its
/// parent when that is an engine's sub-folder.
pub(crate) fn backup_folder(key: &str, keys: &HashSet<&str>) -> String {
    let mut folders = key
        .match_indices('/')
        .map(|(at, _)| &key[..=at])
        .collect::<Vec<_>>();
    folders.insert(0, "");
    folders.pop_if(|f| f.len() == key.len());
    if let Some(with_manifest) = folders
        .iter()
        .rev()
        .find(|f| keys.contains(&format!("{f}{MANIFEST}").as_str()))
    {
        return (*with_manifest).to_owned();
    }
    let own = folders.last().copied().unwrap_or_default();
    match ENGINE_FOLDERS.iter().find_map(|sub| own.strip_suffix(sub)) {
        Some(parent) => parent.to_owned(),
        None => own.to_owned(),
    }
}

/// The newest complete backup under the store's destination.
pub async fn latest(store: &Store) -> Result<Option<(String, Manifest)>, StorageError> {
    latest_before(store, None).await
}

/// [`latest`] among the backups completed by `before`, when given (what was the newest when
/// a restore was asked for: not a backup taken since, such as the restore's own safety
/// backup).
pub async fn latest_before(
    store: &Store,
    before: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<(String, Manifest)>, StorageError> {
    Ok(scan(store)
        .await?
        .into_iter()
        .find_map(|e| match e.manifest {
            Some(Ok(m)) if before.is_none_or(|t| m.completed_at <= t) => Some((e.folder, m)),
            _ => None,
        }))
}

/// A backup's manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadManifestError {
    #[error(
        "{location} does not exist: this is not a complete backup (use `coffer list` to find one)"
    )]
    Missing { location: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Invalid(#[from] ManifestError),
    #[error(
        "{location} has SHA-256 {found}, but the Backup recorded {expected} when it was taken: the stored manifest was changed or replaced; nothing was restored (restore another backup, and find out who can write to the store)"
    )]
    Changed {
        location: String,
        expected: String,
        found: String,
    },
}

/// Reads the manifest of the backup in `folder`: a folder without one holds no backup.
pub async fn read_manifest(store: &Store, folder: &str) -> Result<Manifest, ReadManifestError> {
    read_manifest_expecting(store, folder, None).await
}

/// [`read_manifest`], refusing a manifest whose SHA-256 is not `expected` (the one recorded
/// when the backup was taken), before anything of it is trusted.
pub async fn read_manifest_expecting(
    store: &Store,
    folder: &str,
    expected: Option<&str>,
) -> Result<Manifest, ReadManifestError> {
    Ok(read_manifest_bytes(store, folder, expected).await?.1)
}

/// [`read_manifest_expecting`], also returning the manifest's bytes as stored (a copy writes
/// them unchanged).
pub async fn read_manifest_bytes(
    store: &Store,
    folder: &str,
    expected: Option<&str>,
) -> Result<(Vec<u8>, Manifest), ReadManifestError> {
    let key = format!("{folder}{MANIFEST}");
    let location = store.location(&key);
    let bytes = store
        .get_bytes(&key, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| match e {
            StorageError::NotFound { .. } => ReadManifestError::Missing {
                location: location.clone(),
            },
            other => other.into(),
        })?;
    if let Some(expected) = expected {
        use sha2::{Digest, Sha256};
        let found = hex::encode(Sha256::digest(&bytes));
        if !found.eq_ignore_ascii_case(expected) {
            return Err(ReadManifestError::Changed {
                location,
                expected: expected.to_owned(),
                found,
            });
        }
    }
    let manifest = Manifest::from_json(&bytes, &location)?;
    Ok((bytes, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_in_engine_sub_folders_belong_to_their_backup() {
        let keys = [
            "pg/20261122T000000Z/manifest.json",
            "pg/20261122T000000Z/postgres/globals.sql.zst",
            "pg/20261122T000000Z/postgres/shop.dump.zst",
            "pg/20261123T000000Z/postgres/shop.dump.zst",
            "redis/20261123T000000Z/redis.rdb.zst",
            "loose.txt",
        ];
        let set = keys.into_iter().collect();
        let folder = |key| backup_folder(key, &set);
        assert_eq!(folder(keys[1]), "pg/20261122T000000Z/");
        assert_eq!(folder(keys[2]), "pg/20261122T000000Z/");
        assert_eq!(folder(keys[0]), "pg/20261122T000000Z/");
        // Remains of failed backups are grouped by the backup's folder too.
        assert_eq!(folder(keys[3]), "pg/20261123T000000Z/");
        assert_eq!(folder(keys[4]), "redis/20261123T000000Z/");
        assert_eq!(folder(keys[5]), "");
    }
}
