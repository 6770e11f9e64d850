//! The orphan sweep: what failed or killed backups leave in a store. Folders with data but no
//! manifest (not a backup: never listed, never restored), multipart uploads that were never
//! completed nor aborted (invisible, but billed), and temporary files of a directory store.
//! Only leftovers older than a safety age are reported, so that a backup still running is
//! never taken for one; they are reported first, and removed only when asked.

use chrono::{DateTime, TimeDelta, Utc};

use super::catalog;
use super::{StorageError, Store};

/// What kind of leftover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A folder with data objects and no manifest.
    Incomplete,
    /// An open multipart upload.
    OpenUpload,
    /// A temporary file of a directory store.
    TempFile,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::OpenUpload => "open-upload",
            Self::TempFile => "temp-file",
        }
    }
}

/// One leftover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub kind: Kind,
    /// The folder (incomplete backups) or key, relative to the store.
    pub key: String,
    /// The multipart upload's id.
    pub upload_id: Option<String>,
    /// An incomplete folder's objects (only they are removed: a complete backup in a
    /// sub-folder is not part of it).
    pub objects: Vec<String>,
    /// Bytes it holds (0 when unknown: an upload's parts).
    pub bytes: u64,
    /// When it was last written (or started), if known.
    pub since: Option<DateTime<Utc>>,
}

/// What a sweep found, and what it could not look at.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub leftovers: Vec<Leftover>,
    /// Why some leftovers could not be looked for (a store that cannot list multipart
    /// uploads), with what to do instead.
    pub blind_spots: Vec<String>,
}

/// Every leftover older than `min_age` (anything whose age is unknown is left alone).
pub async fn find(
    store: &Store,
    now: DateTime<Utc>,
    min_age: TimeDelta,
) -> Result<Found, StorageError> {
    let mut blind_spots = Vec::new();
    let old = |t: Option<DateTime<Utc>>| t.is_some_and(|t| now - t >= min_age);
    let mut found = Vec::new();
    // What is being written now: a folder with a recent upload or temporary file is in use.
    let (uploads, temps) = match store {
        Store::S3(s3) => match s3.open_uploads("").await {
            Ok(uploads) => (uploads, Vec::new()),
            Err(StorageError::S3 { detail, .. }) if detail.contains("NotImplemented") => {
                blind_spots.push(format!(
                    "{} cannot list open multipart uploads (it does not implement ListMultipartUploads): give the bucket a lifecycle rule that aborts incomplete multipart uploads",
                    store.location("")
                ));
                (Vec::new(), Vec::new())
            }
            Err(e) => return Err(e),
        },
        Store::Fs(fs) => (Vec::new(), fs.temp_files().await?),
    };
    let objects = store.list("").await?;
    let keys: std::collections::HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    for entry in catalog::scan(store).await? {
        // Only folders laid out as Coffer writes them: never anyone else's files.
        if entry.manifest.is_some() || !is_backup_folder(&entry.folder) {
            continue;
        }
        let own: Vec<_> = objects
            .iter()
            .filter(|o| catalog::backup_folder(&o.key, &keys) == entry.folder)
            .collect();
        let writing = uploads
            .iter()
            .filter(|(key, _, _)| key.starts_with(&entry.folder))
            .map(|(_, _, started)| *started)
            .chain(
                temps
                    .iter()
                    .filter(|t| t.key.starts_with(&entry.folder))
                    .map(|t| t.modified),
            );
        // Every time must be known and old enough.
        let newest = own
            .iter()
            .map(|o| o.modified)
            .chain(writing)
            .collect::<Option<Vec<_>>>()
            .and_then(|times| times.into_iter().max());
        if old(newest) {
            found.push(Leftover {
                kind: Kind::Incomplete,
                key: entry.folder,
                upload_id: None,
                objects: own.iter().map(|o| o.key.clone()).collect(),
                bytes: entry.stored_bytes,
                since: newest,
            });
        }
    }
    for (key, id, started) in uploads {
        if old(started) {
            found.push(Leftover {
                kind: Kind::OpenUpload,
                key,
                upload_id: Some(id),
                objects: Vec::new(),
                bytes: 0,
                since: started,
            });
        }
    }
    for temp in temps {
        if old(temp.modified) {
            found.push(Leftover {
                kind: Kind::TempFile,
                key: temp.key,
                upload_id: None,
                objects: Vec::new(),
                bytes: temp.size,
                since: temp.modified,
            });
        }
    }
    Ok(Found {
        leftovers: found,
        blind_spots,
    })
}

/// Whether a folder is one Coffer writes a backup into: its last part is a UTC time,
/// optionally with a suffix (`20261201T160000Z/`, `20261201T160000Z-3f6c2a1e/`,
/// `20261201T160000Z-1/`). Pure.
pub fn is_backup_folder(folder: &str) -> bool {
    let Some(last) = folder
        .strip_suffix('/')
        .map(|f| f.rsplit('/').next().unwrap_or(f))
    else {
        return false;
    };
    if last.len() < 16 || !last.is_char_boundary(16) {
        return false;
    }
    let (time, suffix) = last.split_at(16);
    let time_ok = time.bytes().enumerate().all(|(i, b)| match i {
        8 => b == b'T',
        15 => b == b'Z',
        _ => b.is_ascii_digit(),
    });
    let suffix_ok = suffix.is_empty()
        || suffix.strip_prefix('-').is_some_and(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    time_ok && suffix_ok
}

/// Removes one leftover found by [`find`].
pub async fn remove(store: &Store, leftover: &Leftover) -> Result<(), StorageError> {
    match (leftover.kind, store) {
        (Kind::Incomplete, _) => {
            // The folder has no manifest: there is nothing to delete first.
            for key in &leftover.objects {
                store.delete(key).await?;
            }
            Ok(())
        }
        (Kind::OpenUpload, Store::S3(s3)) => {
            s3.abort_upload(
                &leftover.key,
                leftover.upload_id.as_deref().unwrap_or_default(),
            )
            .await
        }
        (Kind::TempFile, Store::Fs(_)) => store.delete(&leftover.key).await,
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::is_backup_folder;

    #[test]
    fn only_coffer_backup_folders_are_swept() {
        for yes in [
            "ns/shop/20261201T160000Z/",
            "ns/shop/20261201T160000Z-3f6c2a1e/",
            "redis-x/20261201T160000Z-1/",
        ] {
            assert!(is_backup_folder(yes), "{yes}");
        }
        for no in [
            "",
            "ns/",
            "photos/2026/",
            "ns/shop/20261201T160000Z",
            "ns/shop/20261201T1600Z/",
            "ns/shop/20261201T160000Z-/",
            "ns/shop/20261201T160000Z_x/",
        ] {
            assert!(!is_backup_folder(no), "{no}");
        }
    }
}
