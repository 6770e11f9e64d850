//! The filesystem backend: a directory (or a mounted volume). Files are `0600`, directories
//! `0700`; each object is written to a temporary name and renamed when committed, so a
//! reader never sees half an object.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWriteExt, BufWriter};

use super::{Commit, ObjectInfo, ObjectReader, StorageError};

/// A directory used as a store.
#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

/// Removes a file when dropped while it still holds its path.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Temporary files start with this; listings skip them.
const TEMP_PREFIX: &str = ".coffer-tmp-";

impl FsStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn location(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    async fn create_parent(&self, path: &Path) -> Result<(), StorageError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let parent = parent.to_owned();
        tokio::task::spawn_blocking(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent)
                .map_err(|e| {
                    StorageError::io("creating directory", parent.display().to_string(), e)
                })
        })
        .await
        .map_err(|e| StorageError::Io {
            what: "creating directory",
            location: self.root.display().to_string(),
            source: std::io::Error::other(e),
        })?
    }

    /// Writes `reader` to `key`; the object appears only if `commit` says so.
    pub async fn put_stream(
        &self,
        key: &str,
        reader: &mut (impl AsyncRead + Unpin + Send),
        commit: Commit,
    ) -> Result<u64, StorageError> {
        let path = self.path(key);
        let location = self.location(key);
        self.create_parent(&path).await?;
        let temp = temp_path(&path);
        // Removes the temporary file if this write is dropped before it ends (a cancelled
        // backup), so that no half-written file is left in the store.
        let mut guard = RemoveOnDrop(Some(temp.clone()));
        let written = write_temp(&temp, reader, &location).await;
        let committed = match written {
            Ok(bytes) => match commit.await {
                Ok(()) => Ok(bytes),
                Err(_) => Err(StorageError::Abandoned {
                    location: location.clone(),
                }),
            },
            Err(e) => Err(e),
        };
        guard.0 = None;
        match committed {
            Ok(bytes) => match tokio::fs::rename(&temp, &path).await {
                Ok(()) => Ok(bytes),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&temp).await;
                    Err(StorageError::io("renaming into", location, e))
                }
            },
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    /// Creates the directory if needed and checks that it can be written.
    pub async fn preflight(&self) -> Result<(), StorageError> {
        let probe = self
            .root
            .join(format!("{TEMP_PREFIX}probe-{}", std::process::id()));
        self.create_parent(&probe).await?;
        tokio::fs::write(&probe, b"")
            .await
            .map_err(|e| StorageError::io("writing to", self.root.display().to_string(), e))?;
        let _ = tokio::fs::remove_file(&probe).await;
        Ok(())
    }

    pub async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let mut reader = bytes;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(());
        self.put_stream(key, &mut reader, rx).await.map(|_| ())
    }

    pub async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let file = tokio::fs::File::open(self.path(key))
            .await
            .map_err(|e| StorageError::io("opening", self.location(key), e))?;
        Ok(Box::new(file))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut found = self
            .walked(self.path(prefix.trim_end_matches('/')), false)
            .await?;
        found.sort_by(|a: &ObjectInfo, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// The temporary files of writes that never finished (a worker killed mid-write); they
    /// are removed with [`FsStore::delete`] like any object.
    pub async fn temp_files(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        self.walked(self.root.clone(), true).await
    }

    /// [`walk`] from `start` on a blocking thread.
    async fn walked(
        &self,
        start: PathBuf,
        temporary: bool,
    ) -> Result<Vec<ObjectInfo>, StorageError> {
        let root = self.root.clone();
        let location = start.display().to_string();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            walk(&root, &start, &mut found, temporary)
                .map_err(|e| StorageError::io("listing", location.clone(), e))?;
            Ok(found)
        })
        .await
        .map_err(|e| StorageError::Io {
            what: "listing",
            location: self.root.display().to_string(),
            source: std::io::Error::other(e),
        })?
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("deleting", self.location(key), e)),
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    path.with_file_name(format!(
        "{TEMP_PREFIX}{name}-{}-{nonce}",
        std::process::id()
    ))
}

async fn write_temp(
    temp: &Path,
    reader: &mut (impl AsyncRead + Unpin + Send),
    location: &str,
) -> Result<u64, StorageError> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .await
        .map_err(|e| StorageError::io("creating", location.to_owned(), e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let result = async {
        let bytes = tokio::io::copy(reader, &mut out).await?;
        out.flush().await?;
        out.get_ref().sync_all().await?;
        Ok::<_, std::io::Error>(bytes)
    }
    .await;
    match result {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let _ = tokio::fs::remove_file(temp).await;
            Err(StorageError::io("writing", location.to_owned(), e))
        }
    }
}

/// The files below `dir`: the objects, or with `temporary` the temporary files of writes
/// that never finished.
fn walk(
    root: &Path,
    dir: &Path,
    found: &mut Vec<ObjectInfo>,
    temporary: bool,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let is_temp = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
        let file_type = entry.file_type()?;
        let path = entry.path();
        if file_type.is_dir() {
            walk(root, &path, found, temporary)?;
        } else if file_type.is_file() && is_temp == temporary {
            let metadata = entry.metadata()?;
            found.push(ObjectInfo {
                key: path
                    .strip_prefix(root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size: metadata.len(),
                modified: metadata.modified().ok().map(chrono::DateTime::from),
            });
        }
    }
    Ok(())
}
