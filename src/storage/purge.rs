//! Deleting one backup's folder: the manifest first (a half-deleted backup is never taken for
//! a good one), then its data objects; refused when the manifest says the folder belongs to
//! another Backup object.

use serde::Deserialize;

use super::manifest::{MANIFEST, MAX_MANIFEST_BYTES};
use super::{StorageError, Store};

/// What a deletion removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purged {
    pub objects: usize,
    pub stored_bytes: u64,
}

/// Why a folder was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(
        "{location} belongs to Backup {namespace}/{name} (UID {found}), not to the Backup being deleted (UID {expected}); nothing was deleted"
    )]
    NotOwned {
        location: String,
        namespace: String,
        name: String,
        found: String,
        expected: String,
    },
    #[error("refusing to delete the store's root: name a backup's folder")]
    Root,
    #[error(
        "{location} holds {count} other backup(s) in folders below it: name one backup's folder (`coffer list` shows them); nothing was deleted"
    )]
    Nested { location: String, count: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Only the part of a manifest that says whose it is, read leniently: a manifest of another
/// format version still names its owner.
#[derive(Deserialize)]
struct OwnerOnly {
    #[serde(default)]
    owner: Option<Owner>,
}

#[derive(Deserialize)]
struct Owner {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    uid: String,
}

/// Deletes every object in `folder` (relative to the store, ending in `/`), manifest first.
/// With `owner_uid`, a folder whose manifest names another owner is refused.
pub async fn delete_backup(
    store: &Store,
    folder: &str,
    owner_uid: Option<&str>,
) -> Result<Purged, PurgeError> {
    if folder.trim_matches('/').is_empty() {
        return Err(PurgeError::Root);
    }
    let objects = store.list(folder).await?;
    let manifest = format!("{folder}{MANIFEST}");
    // A parent of backups is not a backup: deleting it would take every backup below it.
    let nested = objects
        .iter()
        .filter(|o| o.key != manifest && o.key.ends_with(&format!("/{MANIFEST}")))
        .count();
    if nested > 0 {
        return Err(PurgeError::Nested {
            location: store.location(folder),
            count: nested,
        });
    }
    if let Some(expected) = owner_uid
        && objects.iter().any(|o| o.key == manifest)
    {
        let bytes = match store.get_bytes(&manifest, MAX_MANIFEST_BYTES).await {
            Ok(bytes) => bytes,
            Err(StorageError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        // An unreadable manifest names nobody: the folder (unique to its run) is deleted.
        if let Ok(OwnerOnly { owner: Some(owner) }) = serde_json::from_slice(&bytes)
            && owner.uid != expected
        {
            return Err(PurgeError::NotOwned {
                location: store.location(folder),
                namespace: owner.namespace,
                name: owner.name,
                found: owner.uid,
                expected: expected.to_owned(),
            });
        }
    }
    // In a versioned bucket, keys hidden behind a delete marker still hold data.
    let mut keys = store.keys_holding_data(folder).await?;
    keys.sort_by_key(|k| *k != manifest);
    for key in &keys {
        store.delete(key).await?;
    }
    Ok(Purged {
        objects: keys.len(),
        stored_bytes: objects.iter().map(|o| o.size).sum(),
    })
}
