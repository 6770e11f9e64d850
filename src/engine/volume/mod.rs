//! The volume engine: a directory tree as a tar stream (with hard links, sparse files,
//! modes, owners and times), and a restore that never writes outside its target.

pub mod archive;
pub mod drill;
pub mod extract;
pub mod preview;

use std::path::PathBuf;

use chrono::Utc;
use tokio_util::io::SyncIoBridge;

use crate::api::Compression;
use crate::pipeline::encryption::DataKey;
use crate::pipeline::encryption::Seal;
use crate::pipeline::fetch::Prepared;
use crate::pipeline::{self, Codec, Effort, ObjectSpec, Progress};
use crate::storage::manifest::{BackupOwner, Manifest, SourceInfo, Stats};
use crate::storage::{StorageError, Store};

use archive::{ArchiveError, Counts};
use extract::ExtractError;

/// The format name recorded for the archive.
pub const TAR_FORMAT: &str = "tar";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path} is not a directory: give the directory to back up")]
    NotADirectory { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Integrity(#[from] pipeline::IntegrityError),
    #[error("the backup's manifest lists no archive: it is not a volume backup")]
    NoArchive,
    #[error("{0}")]
    Internal(String),
}

impl<E: Into<VolumeError>> From<pipeline::PipelineError<E>> for VolumeError {
    fn from(e: pipeline::PipelineError<E>) -> Self {
        match e {
            pipeline::PipelineError::Storage(e) => Self::Storage(e),
            pipeline::PipelineError::Source(e) => e.into(),
            pipeline::PipelineError::Read(e) => Self::Internal(format!("reading the archive: {e}")),
            pipeline::PipelineError::Compress(e) => Self::Internal(format!("compressing: {e}")),
            pipeline::PipelineError::Encrypt(e) => Self::Internal(format!("encrypting: {e}")),
        }
    }
}

fn joined(e: tokio::task::JoinError) -> VolumeError {
    VolumeError::Internal(format!("a volume task failed: {e}"))
}

#[derive(Clone, Debug)]
pub struct VolumeBackupRequest {
    pub path: PathBuf,
    pub compression: Compression,
    pub name: String,
    pub folder: String,
    /// Leave out files that cannot be read (they are listed) instead of failing.
    pub skip_unreadable: bool,
    /// The Backup object this backup is taken for, recorded in the manifest.
    pub owner: Option<BackupOwner>,
    /// What the data objects are encrypted to (none: stored unencrypted).
    pub seal: Option<Seal>,
}

/// Archives the directory into the store; the manifest last.
pub async fn backup(
    store: &Store,
    request: &VolumeBackupRequest,
    progress: &Progress,
) -> Result<Manifest, VolumeError> {
    let started_at = Utc::now();
    let root = std::fs::canonicalize(&request.path).map_err(|source| VolumeError::Io {
        path: request.path.display().to_string(),
        source,
    })?;
    if !root.is_dir() {
        return Err(VolumeError::NotADirectory {
            path: request.path.display().to_string(),
        });
    }
    store.preflight().await?;
    let (writer, mut reader) = tokio::io::duplex(1 << 20);
    let skip = request.skip_unreadable;
    let tree = root.clone();
    let archiver = tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::with_capacity(256 << 10, SyncIoBridge::new(writer));
        archive::write_tree(&tree, out, skip)
    });
    let name = format!("volume.tar{}", pipeline::extension(request.compression));
    let spec = ObjectSpec {
        folder: &request.folder,
        name: &name,
        format: TAR_FORMAT,
        compression: request.compression,
        effort: Effort::Standard,
        seal: request.seal.as_ref(),
    };
    let mut counts = None;
    let check = async {
        counts = Some(archiver.await.map_err(joined)??);
        Ok::<_, VolumeError>(())
    };
    let record = pipeline::upload(store, spec, &mut reader, None, progress, check).await?;
    let counts: Counts =
        counts.ok_or_else(|| VolumeError::Internal("the tree was not archived".into()))?;
    for path in &counts.skipped_special {
        tracing::warn!("left out {path}: sockets, FIFOs and devices are not backed up");
    }
    for path in &counts.changed {
        tracing::warn!("{path} changed while it was read; its archived copy may be inconsistent");
    }
    let manifest = Manifest {
        format_version: Manifest::version_for(request.seal.as_ref().map(Seal::record)),
        coffer_version: env!("CARGO_PKG_VERSION").to_owned(),
        name: request.name.clone(),
        source: SourceInfo {
            kind: "volume".to_owned(),
            address: root.display().to_string(),
            server_version: None,
            mode: None,
            database: None,
            rdb_version: None,
            tool: None,
            position: None,
        },
        started_at,
        completed_at: Utc::now(),
        compression: request.compression,
        objects: vec![record],
        stats: Stats {
            files: Some(counts.files),
            directories: Some(counts.directories),
            symlinks: Some(counts.symlinks),
            hard_links: Some(counts.hard_links),
            file_bytes: Some(counts.bytes),
            sampled_files: counts.samples,
            unreadable: counts.unreadable,
            ..Stats::default()
        },
        owner: request.owner.clone(),
        encryption: request.seal.as_ref().map(|s| s.record().clone()),
    };
    store.put_manifest(&request.folder, &manifest).await?;
    Ok(manifest)
}

#[derive(Clone, Debug)]
pub struct VolumeRestoreRequest {
    pub target: PathBuf,
    /// Empty the target first.
    pub clean: bool,
    /// The backup's data key, when it is encrypted.
    pub key: Option<DataKey>,
}

/// Restores the archive into the target directory (created if missing), reading it from
/// the store once: it is extracted into a staging directory inside the target, every entry
/// checked to stay inside, while its bytes are hashed; only when all of them matched the
/// manifest is it moved into place (with `clean`, after the rest of the target was removed).
/// A damaged, changed or escaping archive leaves the target as it was.
pub async fn restore(
    store: &Store,
    folder: &str,
    manifest: &Manifest,
    request: &VolumeRestoreRequest,
    progress: &Progress,
) -> Result<u64, VolumeError> {
    let record = archive_record(manifest)?;
    let target = request.target.clone();
    let needed = record.raw_bytes;
    let (staging, claim, left) = tokio::task::spawn_blocking({
        let target = target.clone();
        move || prepare_target(&target, needed)
    })
    .await
    .map_err(joined)??;
    for path in &left.removed {
        tracing::info!(
            "removed {}, left by a restore that was stopped",
            path.display()
        );
    }
    for path in &left.in_use {
        tracing::warn!(
            "{} belongs to another restore into the same directory, which is still running",
            path.display()
        );
    }
    if !request.clean {
        for (path, _) in &left.replaced {
            tracing::warn!(
                "{} holds what a stopped restore with clean had moved aside (the target's former contents): remove it once you no longer need it",
                path.display()
            );
        }
    }
    let object = Prepared::unchecked(
        store,
        folder,
        record,
        &Codec::of(manifest, request.key.clone()),
    );
    let (restoring, verdict) = object.open(store, progress).await?;
    let owners = running_as_root();
    let into = staging.path().to_owned();
    let shown = target.clone();
    let extracted = tokio::task::spawn_blocking(move || {
        let reader = std::io::BufReader::with_capacity(256 << 10, SyncIoBridge::new(restoring));
        extract::extract(reader, &into, &shown, owners)
    })
    .await;
    let extracted = match extracted {
        Ok(Ok(extracted)) => extracted,
        Ok(Err(e)) => {
            // Bytes that are not an archive may be damaged ones: named as such, as is the
            // store failing mid-object. The target's own trouble, or an escape, is reported
            // as it is (without reading the rest).
            let unreadable = matches!(e, ExtractError::Archive(_));
            let verdict = verdict.explain(unreadable).await;
            discard(staging).await;
            return Err(match verdict {
                Some(verdict) => verdict.into(),
                None => e.into(),
            });
        }
        Err(e) => {
            verdict.after_failure().await;
            discard(staging).await;
            return Err(joined(e));
        }
    };
    if let Err(e) = verdict.wait().await {
        discard(staging).await;
        return Err(e.into());
    }
    let clean = request.clean;
    let mut extracted = extracted;
    extracted.left = left;
    tokio::task::spawn_blocking(move || {
        let _claim = claim;
        let placed = extract::place(staging.path(), &target, clean, &extracted);
        if matches!(placed, Err(ExtractError::PlaceFailed { .. })) {
            // Named in the error: the part of the backup that is not in place yet.
            let _ = staging.keep();
        }
        placed.map(|()| extracted.entries)
    })
    .await
    .map_err(joined)?
    .map_err(VolumeError::from)
}

/// The manifest's entry of the backup's archive.
fn archive_record(
    manifest: &Manifest,
) -> Result<&crate::storage::manifest::ObjectRecord, VolumeError> {
    manifest
        .objects
        .iter()
        .find(|o| o.format == TAR_FORMAT)
        .ok_or(VolumeError::NoArchive)
}

/// Removes a staging directory (and what was extracted into it) off the async threads.
async fn discard(staging: tempfile::TempDir) {
    let _ = tokio::task::spawn_blocking(move || drop(staging)).await;
}

/// Creates the target if needed, checks it has room for the archive, deals with working
/// directories that stopped restores left (see [`extract::left_behind`]), and creates and
/// claims this restore's staging directory.
fn prepare_target(
    target: &std::path::Path,
    needed: u64,
) -> Result<(tempfile::TempDir, extract::Claim, extract::LeftBehind), VolumeError> {
    let io = |source| VolumeError::Io {
        path: target.display().to_string(),
        source,
    };
    std::fs::create_dir_all(target).map_err(io)?;
    // First, so that what stopped restores left does not count against the room.
    let left = extract::left_behind(target).map_err(io)?;
    if let Ok(stats) = rustix::fs::statvfs(target) {
        let available = stats.f_bavail.saturating_mul(stats.f_frsize);
        if available < needed {
            return Err(ExtractError::NoSpace {
                entry: format!(
                    "the backup's {} (the device has {} free)",
                    crate::units::bytes(needed),
                    crate::units::bytes(available)
                ),
                target: target.display().to_string(),
            }
            .into());
        }
    }
    let staging = tempfile::Builder::new()
        .prefix(extract::STAGING_PREFIX)
        .tempdir_in(target)
        .map_err(io)?;
    let claim = extract::Claim::take(staging.path())
        .map_err(io)?
        .ok_or_else(|| {
            VolumeError::Internal("a new staging directory is claimed already".to_owned())
        })?;
    Ok((staging, claim, left))
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
