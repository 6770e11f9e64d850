//! Checking and extracting a tar stream into a directory, never writing outside it. Runs on a
//! blocking thread.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::{Archive, EntryType};

/// An archive that cannot be extracted safely, or an extraction that failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(
        "archive entry {entry:?} would land outside the target ({reason}): refused, nothing was restored"
    )]
    Escape { entry: String, reason: &'static str },
    #[error("the backup's archive is unreadable: {0}")]
    Archive(#[source] io::Error),
    #[error("restoring {entry:?} into {target}: {}", innermost(source))]
    Write {
        entry: String,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "no space left on the device holding {target} (while restoring {entry:?}): free space or choose another target"
    )]
    NoSpace { entry: String, target: String },
}

/// Reads the whole archive and refuses it if any entry would land outside the target: an
/// absolute path, a `..` component, a hard link to such a path, or a path under a symbolic
/// link that the archive itself creates (a write through a link). Returns the entry count.
pub fn check(reader: impl Read) -> Result<u64, ExtractError> {
    let mut archive = Archive::new(reader);
    let mut links: HashSet<PathBuf> = HashSet::new();
    let mut count = 0;
    for entry in archive.entries().map_err(ExtractError::Archive)? {
        let entry = entry.map_err(ExtractError::Archive)?;
        let path = entry.path().map_err(ExtractError::Archive)?.into_owned();
        let shown = path.display().to_string();
        let escape = |reason| ExtractError::Escape {
            entry: shown.clone(),
            reason,
        };
        let normalized = relative(&path).ok_or_else(|| escape("absolute path or '..'"))?;
        if normalized.ancestors().skip(1).any(|a| links.contains(a)) {
            return Err(escape("it is under a symbolic link of the archive"));
        }
        match entry.header().entry_type() {
            EntryType::Symlink => {
                links.insert(normalized);
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ExtractError::Archive)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = relative(&target)
                    .ok_or_else(|| escape("a hard link to an absolute path or '..'"))?;
                if target.ancestors().any(|a| links.contains(a)) {
                    return Err(escape("a hard link through a symbolic link of the archive"));
                }
            }
            _ => {}
        }
        count += 1;
    }
    Ok(count)
}

/// `path` without `.` components, if it has no root and no `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Extracts an archive that [`check`] accepted into `target`, keeping modes, times and (when
/// running as root) owners. Directory modes and times are set last, deepest first, so that
/// extracting their contents neither is blocked by a read-only directory nor changes them.
pub fn extract(
    reader: impl Read,
    target: &Path,
    preserve_owners: bool,
) -> Result<u64, ExtractError> {
    let mut archive = Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(preserve_owners);
    archive.set_overwrite(true);
    let mut directories = Vec::new();
    let mut count = 0;
    for entry in archive.entries().map_err(ExtractError::Archive)? {
        let mut entry = entry.map_err(ExtractError::Archive)?;
        let name = entry
            .path()
            .map_err(ExtractError::Archive)?
            .display()
            .to_string();
        let write_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::StorageFull {
                ExtractError::NoSpace {
                    entry: name.clone(),
                    target: target.display().to_string(),
                }
            } else {
                ExtractError::Write {
                    entry: name.clone(),
                    target: target.display().to_string(),
                    source,
                }
            }
        };
        if entry.header().entry_type() == EntryType::Directory {
            let mtime = entry.header().mtime().unwrap_or(0);
            let mode = entry.header().mode().unwrap_or(0o755) & 0o7777;
            directories.push((
                target.join(relative(Path::new(&name)).unwrap_or_default()),
                mtime,
                mode,
            ));
        }
        let unpacked = entry.unpack_in(target).map_err(write_error)?;
        if !unpacked {
            return Err(ExtractError::Escape {
                entry: name,
                reason: "refused while extracting",
            });
        }
        // A directory's own mode comes last: until then its owner may write in it, so that a
        // read-only directory (0555) does not keep its own files out.
        if let Some((path, _, mode)) = directories.last()
            && entry.header().entry_type() == EntryType::Directory
            && mode & 0o700 != 0o700
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700))
                .map_err(write_error)?;
        }
        count += 1;
    }
    directories.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (path, mtime, mode) in directories {
        use std::os::unix::fs::PermissionsExt;
        let failed = |source| ExtractError::Write {
            entry: path.display().to_string(),
            target: target.display().to_string(),
            source,
        };
        let time = filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(0), 0);
        filetime::set_file_times(&path, time, time).map_err(failed)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(failed)?;
    }
    Ok(count)
}

/// The message of the deepest cause of an error (the `tar` crate wraps the system's error
/// in one that only names the file).
fn innermost(error: &io::Error) -> String {
    let mut current: &dyn std::error::Error = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Removes everything inside `target` (not `target` itself), without following links.
pub fn empty(target: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(target)? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, EntryType, Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(0);
            header.set_mode(0o644);
            // Write names raw so that '..' and absolute paths reach the archive.
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_cksum();
            builder.append(&header, io::empty()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn safe_archives_pass() {
        let ok = archive(&[
            ("dir", EntryType::Directory, None),
            ("dir/file", EntryType::Regular, None),
            ("./dir/other", EntryType::Regular, None),
            ("link", EntryType::Symlink, Some("/etc/passwd")),
            ("hard", EntryType::Link, Some("dir/file")),
        ]);
        assert_eq!(check(&ok[..]).unwrap(), 5);
    }

    #[test]
    fn escapes_are_refused_naming_the_entry() {
        for (entries, name) in [
            (vec![("../evil", EntryType::Regular, None)], "../evil"),
            (vec![("/etc/evil", EntryType::Regular, None)], "/etc/evil"),
            (
                vec![("a/../../evil", EntryType::Regular, None)],
                "a/../../evil",
            ),
            (
                vec![("hard", EntryType::Link, Some("../../etc/passwd"))],
                "hard",
            ),
            (
                vec![
                    ("out", EntryType::Symlink, Some("/tmp")),
                    ("out/evil", EntryType::Regular, None),
                ],
                "out/evil",
            ),
            (
                vec![
                    ("out", EntryType::Symlink, Some("/etc")),
                    ("hard", EntryType::Link, Some("out/passwd")),
                ],
                "hard",
            ),
        ] {
            let bytes = archive(&entries);
            let err = check(&bytes[..]).unwrap_err();
            assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
            assert!(err.to_string().contains("refused"), "{err}");
        }
    }
}
