//! `coffer download BACKUP --to DIR|-`: a backup's data in the source's own formats
//! (`dump.rdb`, `pg_dump -Fc` archives and the roles SQL, the MySQL SQL dump, a plain tar),
//! decrypted and decompressed, checked against the manifest before it is handed over.
//!
//! Into a directory, each object is written to `NAME.partial` while it is checked and renamed
//! once it matched; when any object does not match, every file this download wrote is removed
//! again (what the directory held before is never touched or overwritten). To stdout, the
//! object is checked whole first (kept in the temporary directory when there is room, read
//! twice otherwise), and the bytes written are checked again as they pass.

use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};

use clap::Args;
use tokio::io::AsyncWriteExt;

use super::keys::{self, IdentityArgs};
use super::options::S3Args;
use super::progress::Display;
use super::{CliError, open_store};
use crate::pipeline::fetch::{Checked, Prepared, Spool};
use crate::pipeline::{self, Codec, Progress};
use crate::storage::manifest::{MANIFEST, Manifest, ObjectRecord};
use crate::storage::{Store, catalog};
use crate::units;

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The backup: a location `coffer backup` printed (or, with --latest, a destination
    /// whose newest complete backup is downloaded).
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    /// A directory (created when missing; files in it are never overwritten), or `-` for
    /// stdout when the backup is one stream (or --object names one).
    #[arg(long, value_name = "DIR|-")]
    pub to: String,
    /// BACKUP is a destination: download its newest complete backup.
    #[arg(long)]
    pub latest: bool,
    /// Only this object of the backup: its name in the manifest (`coffer list` and the
    /// manifest show them), with or without the compression suffix.
    #[arg(long, value_name = "NAME")]
    pub object: Option<String>,
    /// With `--to -`: where the object is kept while it is checked, before any of it is
    /// written to stdout (it must fit, leaving 256 MiB free). Default: TMPDIR unless it is in
    /// memory (tmpfs); give a tmpfs directory here to use memory.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

pub async fn run(args: DownloadArgs) -> Result<(), CliError> {
    let identities = args.identity.parse()?;
    let to_stdout = args.to == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(CliError::usage(
            "--to - writes the backup's bytes to stdout, which is a terminal: pipe it into a program or a file, or give --to DIR",
        ));
    }
    let (store, destination) = open_store(&args.backup, &args.s3).await?;
    let folder = if args.latest {
        catalog::latest(&store)
            .await
            .map_err(CliError::from_display)?
            .ok_or_else(|| CliError::failed(format!("{destination} holds no complete backup")))?
            .0
    } else {
        String::new()
    };
    // Read once: the manifest written beside the files is the one they were checked against.
    let (manifest_bytes, manifest) = catalog::read_manifest_bytes(&store, &folder, None)
        .await
        .map_err(CliError::from_display)?;
    let location = destination.join(&folder);
    let records = chosen(&manifest, args.object.as_deref())
        .map_err(|e| CliError::usage(format!("{location}: {e}")))?;
    let files = records
        .iter()
        .map(|r| {
            native_path(r, &manifest).map_err(|e| CliError::failed(format!("{location}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(twice) = files
        .iter()
        .enumerate()
        .find(|(i, f)| files[..*i].contains(f))
        .map(|(_, f)| f)
    {
        return Err(CliError::failed(format!(
            "{location}: its manifest names two objects that are both {:?} once decompressed: the manifest is damaged or was not written by Coffer; nothing was written",
            twice.display().to_string()
        )));
    }
    if to_stdout && records.len() != 1 {
        return Err(CliError::usage(format!(
            "{location} holds {} objects ({}): --to - writes one stream; give --object NAME, or --to DIR",
            records.len(),
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if manifest.encryption.is_none() && !identities.is_empty() {
        return Err(CliError::failed(format!(
            "{location} is not encrypted, but --identity was given: if it was meant to be encrypted, it was replaced or taken without encryption; leave out --identity to download it anyway"
        )));
    }
    // An encrypted backup opens first (a missing or wrong identity names the recipients).
    let key = keys::unlock(&store, &folder, &manifest, &identities).await?;
    let codec = Codec {
        compression: manifest.compression,
        key,
    };
    let progress = Progress::default();
    if to_stdout {
        let display = Display::start(format!("downloading {location}"), progress.clone());
        let spool = args
            .spool_dir
            .clone()
            .map_or_else(Spool::temp_dir_on_disk, Spool::in_dir);
        // Stopped, the spooled copy is dropped (removed) before the command exits.
        let work = to_stdout_checked(&store, &folder, records[0], &codec, &spool, &progress);
        let written = super::stopped::until_stopped(work).await;
        display.finish().await;
        let bytes = written.map_err(|signal| CliError {
            message: format!("stopped by {signal} while writing {location} to stdout"),
            code: super::stopped::exit_code(signal),
        })??;
        eprintln!(
            "wrote {} ({}) of {location} to stdout, checked against the manifest",
            files[0].display(),
            units::bytes(bytes)
        );
        return Ok(());
    }
    let dir = PathBuf::from(&args.to);
    let manifest_file = dir.join(MANIFEST);
    for path in files
        .iter()
        .map(|f| dir.join(f))
        .chain([manifest_file.clone()])
    {
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(CliError::failed(format!(
                "{} already exists: download into an empty directory, or move it away; nothing was written",
                path.display()
            )));
        }
    }
    let mut written = Written::default();
    if let Err(e) = written.create_dirs(&dir, &dir) {
        written.remove();
        return Err(e);
    }
    let display = Display::start(format!("downloading {location}"), progress.clone());
    // Stopped (Ctrl-C, SIGTERM), the download removes what it wrote, `.partial` files too.
    let work = async {
        into_dir(
            &store,
            &folder,
            &records,
            &files,
            &dir,
            &codec,
            &progress,
            &mut written,
        )
        .await?;
        write_manifest(&manifest_bytes, &manifest_file, &mut written).await
    };
    let result = super::stopped::until_stopped(work).await;
    display.finish().await;
    let result = result.unwrap_or_else(|signal| {
        Err(CliError {
            message: format!("stopped by {signal} while downloading {location}"),
            code: super::stopped::exit_code(signal),
        })
    });
    if let Err(e) = result {
        let removed = written.remove();
        return Err(CliError {
            message: format!("{}; {removed}", e.message),
            code: e.code,
        });
    }
    for (record, file) in records.iter().zip(&files) {
        println!(
            "{} ({}, from {})",
            dir.join(file).display(),
            units::bytes(record.raw_bytes),
            record.name
        );
    }
    eprintln!(
        "downloaded {location} into {}: {} file(s) checked against the manifest (sizes and SHA-256{}), and its manifest",
        dir.display(),
        records.len(),
        if codec.key.is_some() {
            ", decrypted"
        } else {
            ""
        }
    );
    Ok(())
}

/// The objects to download: all, or the one `--object` names.
fn chosen<'a>(
    manifest: &'a Manifest,
    object: Option<&str>,
) -> Result<Vec<&'a ObjectRecord>, String> {
    let Some(wanted) = object else {
        return Ok(manifest.objects.iter().collect());
    };
    let suffix = pipeline::extension(manifest.compression);
    manifest
        .objects
        .iter()
        .find(|o| o.name == wanted || o.name.strip_suffix(suffix) == Some(wanted))
        .map(|o| vec![o])
        .ok_or_else(|| {
            format!(
                "the backup has no object {wanted}; it has {}",
                manifest
                    .objects
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Where an object goes in the download: its name without the compression suffix, which is
/// the source's own file name (`redis.rdb`, `postgres/app.dump`, `mysql/app.sql`,
/// `volume.tar`). The manifest is not trusted to name a safe path: only plain relative names
/// are accepted.
pub fn native_path(record: &ObjectRecord, manifest: &Manifest) -> Result<PathBuf, String> {
    let name = record
        .name
        .strip_suffix(pipeline::extension(manifest.compression))
        .unwrap_or(&record.name);
    let path = Path::new(name);
    let plain = !name.is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && !name.ends_with('/');
    if !plain || name == MANIFEST {
        return Err(format!(
            "its manifest names an object {:?}, which is not a plain relative file name: the manifest is damaged or was not written by Coffer; nothing was written",
            record.name
        ));
    }
    Ok(path.to_path_buf())
}

/// What a download wrote, to be removed again when it fails.
#[derive(Default)]
struct Written {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Written {
    /// Removes what was written (files, then the directories made for them, deepest first)
    /// and says so.
    fn remove(&self) -> String {
        let mut left = Vec::new();
        for file in &self.files {
            if let Err(e) = std::fs::remove_file(file)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                left.push(format!("{} ({e})", file.display()));
            }
        }
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        if left.is_empty() {
            "nothing of it was kept".to_owned()
        } else {
            format!("could not remove {}", left.join(", "))
        }
    }

    /// Creates `dir` and its missing parents, remembering the ones it made. Below `root`
    /// (the download's directory) an existing entry must be a directory, not a symbolic link:
    /// files are never written through one to somewhere else.
    fn create_dirs(&mut self, root: &Path, dir: &Path) -> Result<(), CliError> {
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at {
            if d.as_os_str().is_empty() {
                break;
            }
            match std::fs::symlink_metadata(d) {
                Ok(meta) if d.starts_with(root) && d != root && !meta.is_dir() => {
                    return Err(CliError::failed(format!(
                        "{} is in the way (not a directory, or a symbolic link): download into an empty directory",
                        d.display()
                    )));
                }
                Ok(_) => break,
                Err(_) => missing.push(d.to_path_buf()),
            }
            at = d.parent();
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d)
                .map_err(|e| CliError::failed(format!("cannot create {}: {e}", d.display())))?;
            self.dirs.push(d);
        }
        Ok(())
    }
}

/// Writes each object into `dir` as `NAME.partial`, renamed to `NAME` once it matched.
#[allow(clippy::too_many_arguments)]
async fn into_dir(
    store: &Store,
    folder: &str,
    records: &[&ObjectRecord],
    files: &[PathBuf],
    dir: &Path,
    codec: &Codec,
    progress: &Progress,
    written: &mut Written,
) -> Result<(), CliError> {
    for (record, file) in records.iter().zip(files) {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            written.create_dirs(dir, parent)?;
        }
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let cannot_write = |e: std::io::Error| {
            CliError::failed(format!("cannot write {}: {e}", partial.display()))
        };
        // Opened and recorded with no await between: a stop cannot leave it unrecorded.
        let mut out = tokio::fs::File::from_std(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&partial)
                .map_err(cannot_write)?,
        );
        written.files.push(partial.clone());
        // One read from the store: what is written stays `.partial` until it all matched.
        let object = Prepared::unchecked(store, folder, record, codec);
        let (mut reading, verdict) = object
            .open(store, progress)
            .await
            .map_err(CliError::from_display)?;
        let copied = tokio::io::copy(&mut reading, &mut out).await;
        if let Err(e) = copied {
            return Err(match verdict.after_failure().await {
                Some(mismatch) => CliError::from_display(mismatch),
                None => CliError::failed(format!("writing {}: {e}", partial.display())),
            });
        }
        verdict.wait().await.map_err(CliError::from_display)?;
        out.sync_all().await.map_err(cannot_write)?;
        drop(out);
        // Never over a file that appeared meanwhile: a hard link fails where a name exists,
        // where a rename would replace it.
        match std::fs::hard_link(&partial, &path) {
            Ok(()) => written.files.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CliError::failed(format!(
                    "{} appeared while it was downloaded: move it away and download again",
                    path.display()
                )));
            }
            Err(e) => return Err(cannot_write(e)),
        }
        std::fs::remove_file(&partial).map_err(cannot_write)?;
        written.files.retain(|f| f != &partial);
    }
    Ok(())
}

/// Writes the backup's manifest beside its files, as it is stored (for inspection, and so
/// that what was downloaded can be checked again).
async fn write_manifest(bytes: &[u8], path: &Path, written: &mut Written) -> Result<(), CliError> {
    let cannot =
        |e: std::io::Error| CliError::failed(format!("cannot write {}: {e}", path.display()));
    let mut file = tokio::fs::File::from_std(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(cannot)?,
    );
    written.files.push(path.to_path_buf());
    file.write_all(bytes).await.map_err(cannot)?;
    file.sync_all().await.map_err(cannot)?;
    Ok(())
}

/// Checks the object whole, then writes its bytes to stdout, checked again as they pass (the
/// last byte held back until all matched). Returns the bytes written.
async fn to_stdout_checked(
    store: &Store,
    folder: &str,
    record: &ObjectRecord,
    codec: &Codec,
    spool: &Spool,
    progress: &Progress,
) -> Result<u64, CliError> {
    let (checked, prepared) =
        pipeline::fetch::prepare(store, folder, &[record], codec, spool, progress)
            .await
            .map_err(|e| CliError::failed(format!("{e}; nothing was written")))?;
    // Only a kept copy is sure to be what was checked: a second read from the store could
    // serve other bytes, and a program reading stdout applies them as they come.
    if checked != Checked::Spooled {
        return Err(CliError::failed(format!(
            "{} ({} stored) cannot be kept where it is checked before any of it reaches stdout (the temporary directory is in memory or lacks room): give --spool-dir DIR with room for it, or --to DIR; nothing was written",
            record.name,
            units::bytes(record.stored_bytes)
        )));
    }
    let Some(object) = prepared.into_iter().next() else {
        return Err(CliError::failed("nothing to download"));
    };
    let (mut reading, verdict) = object
        .open(store, progress)
        .await
        .map_err(CliError::from_display)?;
    let mut stdout = tokio::io::stdout();
    let copied = tokio::io::copy(&mut reading, &mut stdout).await;
    let flushed = stdout.flush().await;
    match copied.and_then(|bytes| flushed.map(|()| bytes)) {
        Ok(bytes) => {
            verdict.wait().await.map_err(CliError::from_display)?;
            Ok(bytes)
        }
        Err(e) => Err(match verdict.after_failure().await {
            Some(mismatch) => CliError::from_display(mismatch),
            None => CliError::failed(format!("writing to stdout: {e}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::Compression;

    fn manifest(compression: Compression, names: &[&str]) -> Manifest {
        let json = serde_json::json!({
            "formatVersion": 1,
            "cofferVersion": "0.1.0",
            "name": "n",
            "source": {"kind": "postgres", "address": "h:5432"},
            "startedAt": "2026-01-01T00:00:00Z",
            "completedAt": "2026-01-01T00:00:01Z",
            "compression": compression,
            "objects": names.iter().map(|n| serde_json::json!({
                "name": n, "format": "f", "rawBytes": 1, "rawSha256": "a",
                "storedBytes": 1, "sha256": "b"
            })).collect::<Vec<_>>(),
            "stats": {}
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn native_names_drop_the_compression_suffix_only() {
        let m = manifest(
            Compression::Zstd,
            &[
                "postgres/app.dump.zst",
                "postgres/globals.sql.zst",
                "odd.gz",
            ],
        );
        let names: Vec<_> = m
            .objects
            .iter()
            .map(|o| native_path(o, &m).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                PathBuf::from("postgres/app.dump"),
                PathBuf::from("postgres/globals.sql"),
                PathBuf::from("odd.gz"),
            ]
        );
        let plain = manifest(Compression::None, &["volume.tar"]);
        assert_eq!(
            native_path(&plain.objects[0], &plain).unwrap(),
            PathBuf::from("volume.tar")
        );
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for bad in [
            "../x.zst",
            "/etc/passwd.zst",
            "a/../../b.zst",
            "./a.zst",
            ".zst",
            "a/.zst",
            "manifest.json.zst",
        ] {
            let m = manifest(Compression::Zstd, &[bad]);
            let e = native_path(&m.objects[0], &m).unwrap_err();
            assert!(e.contains("not a plain relative file name"), "{bad}: {e}");
        }
    }

    #[test]
    fn object_is_chosen_by_its_stored_or_native_name() {
        let m = manifest(
            Compression::Zstd,
            &["mysql/a.sql.zst", "mysql/users.sql.zst"],
        );
        assert_eq!(
            chosen(&m, Some("mysql/a.sql")).unwrap()[0].name,
            "mysql/a.sql.zst"
        );
        assert_eq!(
            chosen(&m, Some("mysql/users.sql.zst")).unwrap()[0].name,
            "mysql/users.sql.zst"
        );
        assert_eq!(chosen(&m, None).unwrap().len(), 2);
        let e = chosen(&m, Some("b")).unwrap_err();
        assert!(e.contains("mysql/a.sql.zst, mysql/users.sql.zst"), "{e}");
    }
}
