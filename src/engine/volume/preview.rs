//! What a volume restore would do, found without writing anything (`coffer restore
//! --dry-run`): the archive is read and checked as for a restore (every entry must stay
//! inside the target; the bytes must match the manifest), then each of its files is looked
//! up in the target, and the target's own files are looked up in the archive. Directories
//! are not counted (a restore merges into those that exist).

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tar::Archive;
use tokio_util::io::SyncIoBridge;

use super::extract::{self, ExtractError, Guard};
use super::{VolumeError, VolumeRestoreRequest};
use crate::pipeline::fetch::Prepared;
use crate::pipeline::{self, Codec, Progress};
use crate::storage::Store;
use crate::storage::manifest::Manifest;

/// Paths kept as examples of each outcome.
pub const SAMPLE: usize = 5;

/// What a volume restore would do to the target's files (anything but directories).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumePreview {
    /// In the archive, not in the target (all of the archive's, with `clean`).
    pub created: u64,
    /// In both: the archive's replaces the target's.
    pub replaced: u64,
    /// In the target only, kept (without `clean`).
    pub left_alone: u64,
    /// In the target only, deleted first (`clean`: everything the target holds).
    pub removed: u64,
    /// Up to [`SAMPLE`] relative paths of each outcome.
    pub samples: Samples,
}

/// Example paths, per outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    pub created: Vec<String>,
    pub replaced: Vec<String>,
    pub left_alone: Vec<String>,
    pub removed: Vec<String>,
}

fn count(n: &mut u64, samples: &mut Vec<String>, path: &Path) {
    *n += 1;
    if samples.len() < SAMPLE {
        samples.push(path.display().to_string());
    }
}

/// Reads the archive of the backup in `folder` and the target directory, and says what
/// restoring it would do. Fails as the restore would on a damaged or escaping archive.
pub async fn preview(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &VolumeRestoreRequest,
    progress: &Progress,
) -> Result<VolumePreview, VolumeError> {
    let record = super::archive_record(manifest)?;
    let object = Prepared::unchecked(
        store,
        folder,
        record,
        &Codec {
            compression: manifest.compression,
            key: request.key.clone(),
        },
    );
    let (reading, verdict) = object.open(store, progress).await?;
    let listed = tokio::task::spawn_blocking(move || {
        list(std::io::BufReader::with_capacity(
            256 << 10,
            SyncIoBridge::new(reading),
        ))
    })
    .await
    .map_err(|e| VolumeError::Internal(format!("reading the archive stopped: {e}")))?;
    let entries = match listed {
        Ok(entries) => entries,
        Err(e) => {
            // Bytes that are not an archive may be damaged ones: named as such.
            let mismatch = verdict.wait().await.err();
            return Err(
                match mismatch.filter(pipeline::IntegrityError::is_mismatch) {
                    Some(mismatch) => mismatch.into(),
                    None => e.into(),
                },
            );
        }
    };
    verdict.wait().await?;
    let target = request.target.clone();
    let clean = request.clean;
    tokio::task::spawn_blocking(move || compare(&target, &entries, clean))
        .await
        .map_err(|e| VolumeError::Internal(format!("reading the target stopped: {e}")))?
        .map_err(|source| VolumeError::Io {
            path: request.target.display().to_string(),
            source,
        })
}

/// The archive's entries (relative path, whether a directory), each checked as a restore
/// checks it.
fn list(reader: impl Read) -> Result<Vec<(PathBuf, bool)>, ExtractError> {
    let mut archive = Archive::new(reader);
    let mut guard = Guard::default();
    let mut entries = Vec::new();
    for entry in archive.entries().map_err(ExtractError::Archive)? {
        let entry = entry.map_err(ExtractError::Archive)?;
        guard.admit(&entry)?;
        let path = entry.path().map_err(ExtractError::Archive)?;
        if let Some(relative) = extract::relative(&path)
            && !relative.as_os_str().is_empty()
        {
            entries.push((relative, entry.header().entry_type().is_dir()));
        }
    }
    Ok(entries)
}

/// Compares the archive's entries with what `target` holds.
fn compare(target: &Path, entries: &[(PathBuf, bool)], clean: bool) -> io::Result<VolumePreview> {
    let mut preview = VolumePreview::default();
    let in_archive: HashSet<&Path> = entries.iter().map(|(p, _)| p.as_path()).collect();
    for (path, is_dir) in entries {
        if *is_dir {
            continue;
        }
        let exists = match std::fs::symlink_metadata(target.join(path)) {
            Ok(_) => true,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                false
            }
            Err(e) => return Err(e),
        };
        if exists && !clean {
            count(&mut preview.replaced, &mut preview.samples.replaced, path);
        } else {
            count(&mut preview.created, &mut preview.samples.created, path);
        }
    }
    if !target.exists() {
        return Ok(preview);
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(target.join(&dir))? {
            let entry = entry?;
            let name = entry.file_name();
            // What stopped restores left is not the target's data.
            if dir.as_os_str().is_empty() && extract::is_working_directory(&name) {
                continue;
            }
            let path = dir.join(&name);
            if entry.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            if clean {
                count(&mut preview.removed, &mut preview.samples.removed, &path);
            } else if !in_archive.contains(path.as_path()) {
                count(
                    &mut preview.left_alone,
                    &mut preview.samples.left_alone,
                    &path,
                );
            }
        }
    }
    Ok(preview)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn files_are_created_replaced_left_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/same.txt"), "old").unwrap();
        std::fs::write(dir.path().join("mine.txt"), "x").unwrap();
        let entries = vec![
            (PathBuf::from("a"), true),
            (PathBuf::from("a/same.txt"), false),
            (PathBuf::from("a/new.txt"), false),
            (PathBuf::from("b/deep.txt"), false),
        ];
        let p = compare(dir.path(), &entries, false).unwrap();
        assert_eq!(
            (p.created, p.replaced, p.left_alone, p.removed),
            (2, 1, 1, 0)
        );
        assert_eq!(p.samples.replaced, ["a/same.txt"]);
        assert_eq!(p.samples.left_alone, ["mine.txt"]);
        let p = compare(dir.path(), &entries, true).unwrap();
        assert_eq!(
            (p.created, p.replaced, p.left_alone, p.removed),
            (3, 0, 0, 2)
        );
        let p = compare(&dir.path().join("missing"), &entries, false).unwrap();
        assert_eq!(
            (p.created, p.replaced, p.left_alone, p.removed),
            (3, 0, 0, 0)
        );
    }
}
