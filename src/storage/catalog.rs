//! What a store holds: its backups (folders with a manifest) and the leftovers of failed
//! ones (folders with data but no manifest, which are not backups).

use super::manifest::{MANIFEST, MAX_MANIFEST_BYTES, Manifest};
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
    let mut entries: Vec<Entry> = Vec::new();
    for object in &objects {
        let folder = match object.key.rfind('/') {
            Some(at) => object.key[..=at].to_owned(),
            None => String::new(),
        };
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

/// The newest complete backup under the store's destination.
pub async fn latest(store: &Store) -> Result<Option<(String, Manifest)>, StorageError> {
    Ok(scan(store)
        .await?
        .into_iter()
        .find_map(|e| match e.manifest {
            Some(Ok(m)) => Some((e.folder, m)),
            _ => None,
        }))
}
