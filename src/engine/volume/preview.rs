//! What a volume restore would do, found without writing anything (`coffer restore
//! --dry-run`): the archive is read and checked as for a restore (every entry must stay
//! inside the target; the bytes must match the manifest), then each of its files is looked
//! up in the target, and the target's own files are looked up in the archive. Directories
//! are not counted (a restore merges into those that exist).

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

impl VolumePreview {
    /// The preview for people, one outcome per line.
    pub fn lines(&self) -> Vec<String> {
        use crate::engine::preview::examples;
        let s = &self.samples;
        vec![
            format!("created: {} files{}", self.created, examples(&s.created)),
            format!("replaced: {} files{}", self.replaced, examples(&s.replaced)),
            format!(
                "left alone: {} files{}",
                self.left_alone,
                examples(&s.left_alone)
            ),
            format!(
                "removed first: {} files{}",
                self.removed,
                examples(&s.removed)
            ),
        ]
    }
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
        &Codec::of(manifest, request.key.clone()),
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

/// What stands at a path of the target, looked at as a restore moves things into place
/// (never through a symbolic link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum There {
    Nothing,
    Directory,
    Other,
}

/// What is at `relative` in `target`: nothing when a parent on the way is not a real
/// directory (the restore replaces that parent, so everything under it is new).
fn there(target: &Path, relative: &Path) -> io::Result<There> {
    let mut at = target.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let meta = match std::fs::symlink_metadata(&at) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(There::Nothing),
            Err(e) => return Err(e),
        };
        let last = i + 1 == parts.len();
        match (last, meta.is_dir()) {
            (true, true) => return Ok(There::Directory),
            (true, false) => return Ok(There::Other),
            (false, true) => {}
            (false, false) => return Ok(There::Nothing),
        }
    }
    Ok(There::Nothing)
}

/// Compares the archive's entries with what `target` holds, as [`extract::place`] would
/// move them in: a file over a file or link replaces it, a directory over a file or link
/// replaces it (counted as replaced), a directory over a directory merges (not counted),
/// and a file over a directory fails the restore without `clean`.
fn compare(
    target: &Path,
    entries: &[(PathBuf, bool)],
    clean: bool,
) -> Result<VolumePreview, VolumeError> {
    let io_error = |source| VolumeError::Io {
        path: target.display().to_string(),
        source,
    };
    let mut preview = VolumePreview::default();
    // An archive that names a path twice: its last entry is what is restored.
    let unique: std::collections::BTreeMap<&Path, bool> =
        entries.iter().map(|(p, d)| (p.as_path(), *d)).collect();
    for (path, is_dir) in &unique {
        let found = if clean {
            There::Nothing
        } else {
            there(target, path).map_err(io_error)?
        };
        match (found, is_dir) {
            (There::Nothing, false) => {
                count(&mut preview.created, &mut preview.samples.created, path);
            }
            (There::Nothing | There::Directory, true) => {}
            (There::Other, _) => {
                count(&mut preview.replaced, &mut preview.samples.replaced, path);
            }
            (There::Directory, false) => {
                return Err(ExtractError::WouldReplaceDirectory {
                    path: target.join(path).display().to_string(),
                }
                .into());
            }
        }
    }
    if !target.exists() {
        return Ok(preview);
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(target.join(&dir)).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let name = entry.file_name();
            // What stopped restores left is not the target's data.
            if dir.as_os_str().is_empty() && extract::is_working_directory(&name) {
                continue;
            }
            let path = dir.join(&name);
            if entry.file_type().map_err(io_error)?.is_dir() {
                stack.push(path);
                continue;
            }
            if clean {
                count(&mut preview.removed, &mut preview.samples.removed, &path);
            } else if !unique.contains_key(path.as_path()) {
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
        assert_eq!(p.samples.created, ["a/new.txt", "b/deep.txt"]);
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

    #[test]
    fn links_are_replaced_never_followed_and_a_file_over_a_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.txt"), "outside").unwrap();
        // `data` is a link to elsewhere in the target; the backup has a directory there.
        std::os::unix::fs::symlink(outside.path(), dir.path().join("data")).unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        let entries = vec![
            (PathBuf::from("data"), true),
            (PathBuf::from("data/x.txt"), false),
        ];
        let p = compare(dir.path(), &entries, false).unwrap();
        assert_eq!(
            p.samples.replaced,
            ["data"],
            "the link gives way to the directory"
        );
        assert_eq!(
            p.samples.created,
            ["data/x.txt"],
            "not the file behind the link"
        );
        let over_a_directory = vec![(PathBuf::from("logs"), false)];
        let e = compare(dir.path(), &over_a_directory, false).unwrap_err();
        assert!(
            e.to_string().contains("is a directory in the target"),
            "{e}"
        );
        let p = compare(dir.path(), &over_a_directory, true).unwrap();
        assert_eq!(p.created, 1, "with clean it is replaced");
    }
}
