//! A volume drill: the archive restored into a scratch directory (as a restore would, every
//! entry checked), then the tree counted against the manifest: files, directories, symbolic
//! links, hard links and the files' bytes; and the user's paths checked to exist.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::VolumeError;
use super::archive::data_regions;
use super::extract::ExtractError;
use super::{VolumeRestoreRequest, restore};
use crate::drill::{
    Blame, Cause, CheckResult, DrillError, DrillRequest, Outcome, UserCheck, failed_restore,
    integrity_cause, store_cause, timed,
};
use crate::pipeline::Progress;
use crate::storage::Store;
use crate::storage::manifest::{FileSample, Manifest};
use sha2::{Digest, Sha256};

pub async fn drill(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &DrillRequest,
    dir: &Path,
    progress: &Progress,
) -> Result<Outcome, DrillError> {
    let target = dir.join("volume");
    let restore_request = VolumeRestoreRequest {
        target: target.clone(),
        clean: false,
        key: request.key.clone(),
    };
    let (restore_time, restored) =
        timed(restore(store, folder, manifest, &restore_request, progress)).await;
    let entries = match restored {
        Ok(entries) => entries,
        Err(e) => return failed_restore(restore_time, &e),
    };
    let root = target.clone();
    let tree = tokio::task::spawn_blocking(move || count(&root))
        .await
        .map_err(|e| DrillError::Scratch {
            what: "counting the restored tree".to_owned(),
            detail: e.to_string(),
        })?
        .map_err(|e| DrillError::Scratch {
            what: format!("counting the restored tree in {}", target.display()),
            detail: e.to_string(),
        })?;
    let mut checks = compare(manifest, &tree);
    if !manifest.stats.sampled_files.is_empty() {
        let samples = manifest.stats.sampled_files.clone();
        let root = target.clone();
        checks.push(
            tokio::task::spawn_blocking(move || compare_samples(&root, &samples))
                .await
                .map_err(|e| DrillError::Scratch {
                    what: "hashing the sampled files".to_owned(),
                    detail: e.to_string(),
                })?,
        );
    }
    for check in &request.checks {
        if let UserCheck::Path(path) = check {
            let name = check.name();
            checks.push(match std::fs::symlink_metadata(target.join(path)) {
                Ok(meta) => CheckResult::passed(name, format!("exists ({})", kind_of(&meta))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    CheckResult::failed(name, "does not exist in the restored tree")
                }
                Err(e) => CheckResult::failed(name, e.to_string()),
            });
        }
    }
    Ok(Outcome {
        restore_time,
        restored: Ok(format!("restored {entries} entries")),
        checks,
    })
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// What a restored tree holds, counted as a backup counts it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    pub file_bytes: u64,
}

/// Counts the tree under `root` (not `root` itself): a file's second and later names are
/// hard links, a sparse file's holes are not bytes.
pub fn count(root: &Path) -> std::io::Result<Tree> {
    let mut tree = Tree::default();
    let mut seen = HashSet::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let file_type = meta.file_type();
            if file_type.is_dir() {
                tree.directories += 1;
                pending.push(path);
            } else if file_type.is_symlink() {
                tree.symlinks += 1;
            } else if file_type.is_file() {
                if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                    tree.hard_links += 1;
                    continue;
                }
                tree.files += 1;
                tree.file_bytes += if meta.blocks().saturating_mul(512) < meta.len() {
                    let file = std::fs::File::open(&path)?;
                    data_regions(&file, meta.len()).iter().map(|(_, n)| n).sum()
                } else {
                    meta.len()
                };
            }
        }
    }
    Ok(tree)
}

/// The built-in check of the sampled files: each restored file's contents against the
/// SHA-256 the backup recorded; the message names the first that differs or is missing.
pub fn compare_samples(root: &Path, samples: &[FileSample]) -> CheckResult {
    const NAME: &str = "sampled files' contents";
    for sample in samples {
        let path = root.join(&sample.path);
        let found = std::fs::File::open(&path).and_then(|mut file| {
            use std::io::Read;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Ok(hex::encode(hasher.finalize()))
        });
        match found {
            Ok(sha256) if sha256 == sample.sha256 => {}
            Ok(_) => {
                return CheckResult::failed(
                    NAME,
                    format!("{} differs from the file the backup archived", sample.path),
                );
            }
            Err(e) => {
                return CheckResult::failed(
                    NAME,
                    format!("{} cannot be read in the restored tree ({e})", sample.path),
                );
            }
        }
    }
    CheckResult::passed(
        NAME,
        format!(
            "{} files have the contents the backup archived",
            samples.len()
        ),
    )
}

/// The built-in checks: the restored tree's counts against the manifest's.
pub fn compare(manifest: &Manifest, tree: &Tree) -> Vec<CheckResult> {
    let stats = &manifest.stats;
    [
        ("files", stats.files, tree.files),
        ("directories", stats.directories, tree.directories),
        ("symbolic links", stats.symlinks, tree.symlinks),
        ("hard links", stats.hard_links, tree.hard_links),
        ("bytes in files", stats.file_bytes, tree.file_bytes),
    ]
    .into_iter()
    .filter_map(|(name, expected, found)| expected.map(|e| CheckResult::count(name, e, found)))
    .collect()
}

/// An I/O error of the disk itself (EIO, EROFS, EDQUOT, ENOSPC), anywhere in the chain.
fn scratch_fault(error: &std::io::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(5 | 28 | 30 | 122))
        {
            return true;
        }
        current = e.source();
    }
    false
}

impl Blame for VolumeError {
    fn not_the_backup(&self) -> Option<Cause> {
        match self {
            Self::Storage(e) => store_cause(e),
            Self::Integrity(e) => integrity_cause(e),
            Self::Extract(ExtractError::NoSpace { .. }) => Some(Cause::NoSpace),
            // The scratch directory's own failure; any other entry that cannot be written
            // there (a link to a name the archive lacks, an entry cut short) is the backup's.
            Self::Extract(ExtractError::Write { source, .. }) if scratch_fault(source) => {
                Some(Cause::Scratch)
            }
            // Making or claiming the scratch directory; the drill's own tasks.
            Self::Io { .. } | Self::Internal(_) => Some(Cause::Scratch),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_counted_as_a_backup_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/one"), b"12345").unwrap();
        std::fs::write(root.join("a/b/two"), b"12").unwrap();
        std::fs::hard_link(root.join("a/one"), root.join("one-again")).unwrap();
        std::os::unix::fs::symlink("a/one", root.join("link")).unwrap();
        let tree = count(root).unwrap();
        assert_eq!(
            tree,
            Tree {
                files: 2,
                directories: 2,
                symlinks: 1,
                hard_links: 1,
                file_bytes: 7,
            }
        );
    }
}
