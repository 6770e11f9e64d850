//! Extracting a tar stream into a directory, never writing outside it, and only once the
//! whole archive was read and matched: the archive is extracted into a staging directory
//! inside the target ([`extract`], every entry checked before it is written), and moved into
//! place ([`place`]) only after the caller has the verdict on the bytes. Runs on a blocking
//! thread.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::{Archive, Entry, EntryType};

/// The name prefix of the staging directory a restore creates in its target.
pub const STAGING_PREFIX: &str = ".coffer-restore-";

/// The name prefix of the directory where a restore with `clean` keeps what the target held
/// until the backup is in place.
pub const REPLACED_PREFIX: &str = ".coffer-replaced-";

/// Whether a top-level name of a target is one of a restore's own working directories
/// (never backed up, never removed by `clean`).
pub fn is_working_directory(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with(STAGING_PREFIX) || name.starts_with(REPLACED_PREFIX)
}

/// An archive that cannot be extracted safely, or an extraction that failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(
        "archive entry {entry:?} would land outside the target ({reason}): refused, nothing in the target was changed"
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
        "no space left on the device holding {target} (while restoring {entry:?}; the restore needs room for the backup beside what the target holds until it is moved into place): free space or choose another target"
    )]
    NoSpace { entry: String, target: String },
    #[error(
        "{path} is a directory in the target but not in the backup: it is left as it is and nothing was restored; restore with clean (which replaces the target's contents), or move it away"
    )]
    WouldReplaceDirectory { path: String },
    #[error(
        "moving the restored files into {target} failed at {entry:?} ({detail}): the target holds part of the backup; the rest is in {staging}{replaced}"
    )]
    PlaceFailed {
        target: String,
        entry: String,
        detail: String,
        staging: String,
        /// Where what the target held is kept, with `clean`.
        replaced: String,
    },
}

/// Refuses entries that would land outside the directory they are extracted into: an
/// absolute path, a `..` component, a hard link to such a path, or a path under a symbolic
/// link that the archive itself created (a write through a link).
#[derive(Default)]
pub(super) struct Guard {
    links: HashSet<PathBuf>,
}

impl Guard {
    /// Checks one entry, before it is written.
    pub(super) fn admit<R: Read>(&mut self, entry: &Entry<'_, R>) -> Result<(), ExtractError> {
        let path = entry.path().map_err(ExtractError::Archive)?.into_owned();
        let shown = path.display().to_string();
        let escape = |reason| ExtractError::Escape {
            entry: shown.clone(),
            reason,
        };
        let normalized = relative(&path).ok_or_else(|| escape("absolute path or '..'"))?;
        if normalized
            .ancestors()
            .skip(1)
            .any(|a| self.links.contains(a))
        {
            return Err(escape("it is under a symbolic link of the archive"));
        }
        match entry.header().entry_type() {
            EntryType::Symlink => {
                self.links.insert(normalized);
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ExtractError::Archive)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = relative(&target)
                    .ok_or_else(|| escape("a hard link to an absolute path or '..'"))?;
                if target.ancestors().any(|a| self.links.contains(a)) {
                    return Err(escape("a hard link through a symbolic link of the archive"));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Reads the whole archive and refuses it if any entry would land outside the target (see
/// [`Guard`]). Returns the entry count.
#[cfg(test)]
fn check(reader: impl Read) -> Result<u64, ExtractError> {
    let mut archive = Archive::new(reader);
    let mut guard = Guard::default();
    let mut count = 0;
    for entry in archive.entries().map_err(ExtractError::Archive)? {
        guard.admit(&entry.map_err(ExtractError::Archive)?)?;
        count += 1;
    }
    Ok(count)
}

/// `path` without `.` components, if it has no root and no `..`.
pub(super) fn relative(path: &Path) -> Option<PathBuf> {
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

/// A directory of the archive, whose owner, mode and times are set once everything is in
/// place.
#[derive(Debug)]
pub struct Directory {
    relative: PathBuf,
    mtime: u64,
    mode: u32,
    owner: Option<(u32, u32)>,
}

/// What [`extract`] wrote into the staging directory.
#[derive(Debug, Default)]
pub struct Extracted {
    pub entries: u64,
    directories: Vec<Directory>,
    /// What stopped restores left in the target (set by the caller).
    pub left: LeftBehind,
}

/// Extracts an archive into `staging` (inside `target`, which errors name), checking every
/// entry before it is written (see [`Guard`]) and keeping modes, times and (when running as
/// root) owners. Directories stay writable by their owner until [`place`] gives them their
/// own mode.
pub fn extract(
    reader: impl Read,
    staging: &Path,
    target: &Path,
    preserve_owners: bool,
) -> Result<Extracted, ExtractError> {
    let mut archive = Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(preserve_owners);
    archive.set_overwrite(true);
    let mut guard = Guard::default();
    let mut extracted = Extracted::default();
    for entry in archive.entries().map_err(ExtractError::Archive)? {
        let mut entry = entry.map_err(ExtractError::Archive)?;
        guard.admit(&entry)?;
        let path = entry.path().map_err(ExtractError::Archive)?.into_owned();
        let name = path.display().to_string();
        let write_error = |source: io::Error| write_error(&name, target, source);
        let header = entry.header();
        let directory = (header.entry_type() == EntryType::Directory).then(|| Directory {
            relative: relative(&path).unwrap_or_default(),
            mtime: header.mtime().unwrap_or(0),
            mode: header.mode().unwrap_or(0o755) & 0o7777,
            owner: preserve_owners
                .then(|| {
                    Some((
                        u32::try_from(header.uid().ok()?).ok()?,
                        u32::try_from(header.gid().ok()?).ok()?,
                    ))
                })
                .flatten(),
        });
        let unpacked = entry.unpack_in(staging).map_err(write_error)?;
        if !unpacked {
            return Err(ExtractError::Escape {
                entry: name,
                reason: "refused while extracting",
            });
        }
        if let Some(directory) = directory {
            // Until `place`, the directory's owner may write in it, so that a read-only
            // directory (0555) does not keep its own files out.
            if directory.mode & 0o700 != 0o700 {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    staging.join(&directory.relative),
                    std::fs::Permissions::from_mode(directory.mode | 0o700),
                )
                .map_err(write_error)?;
            }
            extracted.directories.push(directory);
        }
        extracted.entries += 1;
    }
    Ok(extracted)
}

fn write_error(entry: &str, target: &Path, source: io::Error) -> ExtractError {
    if source.kind() == io::ErrorKind::StorageFull {
        ExtractError::NoSpace {
            entry: entry.to_owned(),
            target: target.display().to_string(),
        }
    } else {
        ExtractError::Write {
            entry: entry.to_owned(),
            target: target.display().to_string(),
            source,
        }
    }
}

/// Moves what [`extract`] wrote into `staging` (a directory inside `target`) into `target`.
/// An entry replaces what the target has at its path (a directory is merged with the
/// target's directory of the same name; symbolic links in the target are replaced, never
/// followed), except that a directory of the target is never replaced by a file of the
/// backup without `clean`: that refuses the restore before anything moves. With `clean`,
/// what the target held is first moved aside and removed only once everything is in place.
/// Then the archive's directories get their owners, modes and times, deepest first.
///
/// A failure part-way leaves the target with part of the backup; the error names where the
/// rest (and, with `clean`, the target's former contents) are: nothing is deleted.
pub fn place(
    staging: &Path,
    target: &Path,
    clean: bool,
    extracted: &Extracted,
) -> Result<(), ExtractError> {
    let failed = |entry: &Path, source| write_error(&entry.display().to_string(), target, source);
    if !clean
        && let Some(path) = replaced_directory(staging, target).map_err(|(p, e)| failed(&p, e))?
    {
        return Err(ExtractError::WouldReplaceDirectory {
            path: path.display().to_string(),
        });
    }
    let mut replaced = None;
    let mut _claim = None;
    if clean {
        let aside = tempfile::Builder::new()
            .prefix(REPLACED_PREFIX)
            .tempdir_in(target)
            .map_err(|e| failed(target, e))?
            .keep();
        _claim = Claim::take(&aside).map_err(|e| failed(&aside, e))?;
        for entry in std::fs::read_dir(target).map_err(|e| failed(target, e))? {
            let entry = entry.map_err(|e| failed(target, e))?;
            if !is_working_directory(&entry.file_name()) {
                std::fs::rename(entry.path(), aside.join(entry.file_name()))
                    .map_err(|e| failed(&entry.path(), e))?;
            }
        }
        replaced = Some(aside);
    }
    let place_failed = |(entry, source): (PathBuf, io::Error)| ExtractError::PlaceFailed {
        target: target.display().to_string(),
        entry: entry.display().to_string(),
        detail: innermost(&source),
        staging: staging.display().to_string(),
        replaced: replaced
            .as_ref()
            .map(|r| format!(", and what the target held before is in {}", r.display()))
            .unwrap_or_default(),
    };
    let mut opened = Vec::new();
    merge(staging, target, &mut opened).map_err(place_failed)?;
    let listed: HashSet<PathBuf> = extracted
        .directories
        .iter()
        .map(|d| target.join(&d.relative))
        .collect();
    let mut directories: Vec<&Directory> = extracted.directories.iter().collect();
    directories.sort_by_key(|d| std::cmp::Reverse(d.relative.components().count()));
    for directory in directories {
        use std::os::unix::fs::PermissionsExt;
        let path = target.join(&directory.relative);
        let failed = |e| place_failed((path.clone(), e));
        if let Some((uid, gid)) = directory.owner {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(failed)?;
        }
        let time =
            filetime::FileTime::from_unix_time(i64::try_from(directory.mtime).unwrap_or(0), 0);
        filetime::set_file_times(&path, time, time).map_err(failed)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(directory.mode))
            .map_err(failed)?;
    }
    // Directories of the target that the backup does not list get their own mode back.
    for (path, mode) in opened {
        if !listed.contains(&path) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| place_failed((path.clone(), e)))?;
        }
    }
    if let Some(aside) = replaced {
        std::fs::remove_dir_all(&aside).map_err(|e| failed(&aside, e))?;
    }
    // What stopped restores with clean had moved aside goes too: the target now holds the
    // backup alone, as clean asks.
    if clean {
        for (path, _claim) in &extracted.left.replaced {
            std::fs::remove_dir_all(path).map_err(|e| failed(path, e))?;
        }
    }
    Ok(())
}

/// The first directory of the target (not a link to one) that a non-directory of the staged
/// tree would replace.
fn replaced_directory(from: &Path, into: &Path) -> Result<Option<PathBuf>, (PathBuf, io::Error)> {
    let at = |path: &Path| {
        let path = path.to_owned();
        move |e| (path, e)
    };
    for entry in std::fs::read_dir(from).map_err(at(from))? {
        let entry = entry.map_err(at(from))?;
        let destination = into.join(entry.file_name());
        let is_dir = entry.file_type().map_err(at(&entry.path()))?.is_dir();
        match std::fs::symlink_metadata(&destination) {
            Ok(existing) if existing.is_dir() && !is_dir => return Ok(Some(destination)),
            Ok(existing) if existing.is_dir() => {
                if let Some(found) = replaced_directory(&entry.path(), &destination)? {
                    return Ok(Some(found));
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((destination, e)),
        }
    }
    Ok(None)
}

/// Moves the entries of `from` into `into`, merging directories. Directories of the target
/// that had to be opened for their owner to write in are listed with their former mode.
fn merge(
    from: &Path,
    into: &Path,
    opened: &mut Vec<(PathBuf, u32)>,
) -> Result<(), (PathBuf, io::Error)> {
    let at = |path: &Path| {
        let path = path.to_owned();
        move |e| (path, e)
    };
    for entry in std::fs::read_dir(from).map_err(at(from))? {
        let entry = entry.map_err(at(from))?;
        let source = entry.path();
        let destination = into.join(entry.file_name());
        let is_dir = entry.file_type().map_err(at(&source))?.is_dir();
        match std::fs::symlink_metadata(&destination) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((destination, e)),
            Ok(existing) if existing.is_dir() && is_dir => {
                use std::os::unix::fs::PermissionsExt;
                let mode = existing.permissions().mode() & 0o7777;
                if mode & 0o700 != 0o700 {
                    std::fs::set_permissions(
                        &destination,
                        std::fs::Permissions::from_mode(mode | 0o700),
                    )
                    .map_err(at(&destination))?;
                    opened.push((destination.clone(), mode));
                }
                merge(&source, &destination, opened)?;
                std::fs::remove_dir(&source).map_err(at(&source))?;
                continue;
            }
            // A file or link where the backup has a directory (a directory replaced by a
            // file was refused before, or cleaned away).
            Ok(existing) if existing.is_dir() || is_dir => {
                remove(&destination).map_err(at(&destination))?;
            }
            // A file over a file or link: the rename replaces it in one step.
            Ok(_) => {}
        }
        std::fs::rename(&source, &destination).map_err(at(&destination))?;
    }
    Ok(())
}

/// Removes a file, a link or a whole directory, never following links.
fn remove(path: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(path)?.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// A restore's claim on one of its working directories: an exclusive `flock` on the
/// directory, held while the restore runs and released by the kernel when its process ends,
/// so that a later restore can tell a directory left by a stopped restore from one in use.
#[derive(Debug)]
pub struct Claim(#[allow(dead_code)] std::fs::File);

impl Claim {
    /// Claims `dir`; `None` when another process holds it.
    pub fn take(dir: &Path) -> io::Result<Option<Self>> {
        let file = std::fs::File::open(dir)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Self(file))),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// What stopped restores left in a target.
#[derive(Debug, Default)]
pub struct LeftBehind {
    /// Their staging directories (part of a backup), removed.
    pub removed: Vec<PathBuf>,
    /// What they had moved aside with `clean` (the target's former contents), claimed: a
    /// restore with `clean` removes them once its backup is in place; others leave them.
    pub replaced: Vec<(PathBuf, Claim)>,
    /// Working directories of restores that are still running.
    pub in_use: Vec<PathBuf>,
}

/// Finds the working directories of other restores in `target`: those of stopped restores
/// (no one holds their [`Claim`]) are removed (staging) or claimed (moved-aside contents);
/// those of running restores are listed and left alone.
pub fn left_behind(target: &Path) -> io::Result<LeftBehind> {
    let mut found = LeftBehind::default();
    for entry in std::fs::read_dir(target)? {
        let entry = entry?;
        if !is_working_directory(&entry.file_name()) || !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        match Claim::take(&path)? {
            None => found.in_use.push(path),
            Some(claim)
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(STAGING_PREFIX) =>
            {
                std::fs::remove_dir_all(&path)?;
                drop(claim);
                found.removed.push(path);
            }
            Some(claim) => found.replaced.push((path, claim)),
        }
    }
    Ok(found)
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
    fn working_directories_of_stopped_restores_are_told_from_running_ones() {
        let target = tempfile::tempdir().unwrap();
        let running = target.path().join(".coffer-restore-running");
        let stopped = target.path().join(".coffer-restore-stopped");
        let aside = target.path().join(".coffer-replaced-stopped");
        let data = target.path().join(".coffer-restored-data");
        for dir in [&running, &stopped, &aside, &data] {
            std::fs::create_dir_all(dir.join("inside")).unwrap();
        }
        let _held = Claim::take(&running).unwrap().unwrap();
        let found = left_behind(target.path()).unwrap();
        assert_eq!(found.removed, std::slice::from_ref(&stopped));
        assert!(!stopped.exists());
        assert_eq!(found.in_use, std::slice::from_ref(&running));
        assert!(
            running.join("inside").exists(),
            "a running restore's directory stays"
        );
        assert_eq!(
            found
                .replaced
                .iter()
                .map(|(p, _)| p.clone())
                .collect::<Vec<_>>(),
            std::slice::from_ref(&aside)
        );
        assert!(
            aside.join("inside").exists(),
            "moved-aside contents are not removed here"
        );
        assert!(data.exists(), "not a working directory");
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
