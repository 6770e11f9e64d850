//! Writing a directory tree as a tar stream (GNU format): regular files, directories,
//! symbolic links, hard links, modes, owners and modification times; sparse files as GNU
//! sparse entries, so holes stay holes. Runs on a blocking thread.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, GnuExtSparseHeader, Header, HeaderMode};

use crate::storage::manifest::FileSample;

/// The first regular files archived are sampled (their contents' SHA-256 recorded, for
/// drills to compare), then one in [`SAMPLE_ONE_IN`] by its path's hash, at most
/// [`MAX_SAMPLED`] in all, each of at most [`MAX_SAMPLED_BYTES`] (a drill reads them again).
const FIRST_SAMPLED: u64 = 8;
const SAMPLE_ONE_IN: u8 = 64;
const MAX_SAMPLED: usize = 32;
const MAX_SAMPLED_BYTES: u64 = 64 << 20;

/// What the archive holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// Bytes of file data read.
    pub bytes: u64,
    /// Files and directories that could not be read (left out).
    pub unreadable: Vec<String>,
    /// Sockets, FIFOs and devices, which are not archived.
    pub skipped_special: Vec<String>,
    /// Files whose size changed while they were read (archived at their first size).
    pub changed: Vec<String>,
    /// A sample of the regular files, with the SHA-256 of the contents archived.
    pub samples: Vec<FileSample>,
}

/// Whether the regular file at `relative`, of `size` bytes, is sampled, `archived` files
/// and `sampled` samples into the archive. Paths that are not UTF-8 are not (the manifest
/// holds text).
fn sampled(relative: &Path, size: u64, archived: u64, sampled: usize) -> bool {
    let Some(path) = relative.to_str() else {
        return false;
    };
    if sampled >= MAX_SAMPLED || size > MAX_SAMPLED_BYTES {
        return false;
    }
    archived < FIRST_SAMPLED || Sha256::digest(path.as_bytes())[0] % SAMPLE_ONE_IN == 0
}

/// Archiving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "{path} cannot be read ({source}): fix its permissions, or pass --skip-unreadable to leave it out"
    )]
    Unreadable {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("archiving {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the backup stopped reading the archive ({0})")]
    Output(#[source] io::Error),
}

/// Archives the tree under `root` into `out`. Paths in the archive are relative to `root`.
pub fn write_tree(
    root: &Path,
    out: impl Write,
    skip_unreadable: bool,
) -> Result<Counts, ArchiveError> {
    let mut writer = TreeWriter {
        builder: Builder::new(out),
        root: root.to_owned(),
        skip_unreadable,
        links: HashMap::new(),
        counts: Counts::default(),
    };
    writer.builder.mode(HeaderMode::Complete);
    writer.builder.follow_symlinks(false);
    writer.directory_contents(Path::new(""))?;
    writer.builder.finish().map_err(ArchiveError::Output)?;
    Ok(writer.counts)
}

struct TreeWriter<W: Write> {
    builder: Builder<W>,
    root: PathBuf,
    skip_unreadable: bool,
    /// The first path of each multiply-linked file, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
    counts: Counts,
}

impl<W: Write> TreeWriter<W> {
    fn unreadable(&mut self, relative: &Path, source: io::Error) -> Result<(), ArchiveError> {
        let path = self.root.join(relative).display().to_string();
        if self.skip_unreadable {
            tracing::warn!("left out {path}: {source}");
            self.counts.unreadable.push(path);
            Ok(())
        } else {
            Err(ArchiveError::Unreadable { path, source })
        }
    }

    fn io(&self, relative: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
        let path = self.root.join(relative).display().to_string();
        move |source| ArchiveError::Io { path, source }
    }

    /// Archives the entries of the directory `relative`, sorted by name.
    fn directory_contents(&mut self, relative: &Path) -> Result<(), ArchiveError> {
        let entries = match std::fs::read_dir(self.root.join(relative)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return self.unreadable(relative, e);
            }
            Err(e) => return Err(self.io(relative)(e)),
        };
        let mut names: Vec<_> = entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(self.io(relative))?;
        names.sort();
        for name in names {
            // A restore's own working directories at the top of a volume are not its data.
            if relative.as_os_str().is_empty() && super::extract::is_working_directory(&name) {
                tracing::warn!(
                    "left out {}: a restore's working directory",
                    self.root.join(&name).display()
                );
                continue;
            }
            self.entry(&relative.join(name))?;
        }
        Ok(())
    }

    fn entry(&mut self, relative: &Path) -> Result<(), ArchiveError> {
        let path = self.root.join(relative);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Deleted since the directory was listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io(relative)(e)),
        };
        let file_type = meta.file_type();
        let mut header = header_for(&meta);
        if file_type.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_size(0);
            self.builder
                .append_data(&mut header, relative, io::empty())
                .map_err(ArchiveError::Output)?;
            self.counts.directories += 1;
            return self.directory_contents(relative);
        }
        if file_type.is_symlink() {
            let target = std::fs::read_link(&path).map_err(self.io(relative))?;
            header.set_entry_type(EntryType::Symlink);
            header.set_size(0);
            self.builder
                .append_link(&mut header, relative, target)
                .map_err(ArchiveError::Output)?;
            self.counts.symlinks += 1;
            return Ok(());
        }
        if !file_type.is_file() {
            self.counts.skipped_special.push(path.display().to_string());
            return Ok(());
        }
        if meta.nlink() > 1 {
            let inode = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&inode).cloned() {
                header.set_entry_type(EntryType::Link);
                header.set_size(0);
                self.builder
                    .append_link(&mut header, relative, first)
                    .map_err(ArchiveError::Output)?;
                self.counts.hard_links += 1;
                return Ok(());
            }
            self.links.insert(inode, relative.to_owned());
        }
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return self.unreadable(relative, e);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io(relative)(e)),
        };
        let size = meta.len();
        let regions = if meta.blocks().saturating_mul(512) < size {
            data_regions(&file, size)
        } else {
            vec![(0, size)]
        };
        let result = if regions == [(0, size)] {
            header.set_entry_type(EntryType::Regular);
            let sample = sampled(relative, size, self.counts.files, self.counts.samples.len());
            let mut exact = Exact::new(&mut file, size, sample);
            let written = self.builder.append_data(&mut header, relative, &mut exact);
            if exact.changed {
                self.counts.changed.push(path.display().to_string());
            } else if let (Ok(()), Some(hasher), Some(path)) =
                (&written, exact.hasher, relative.to_str())
            {
                self.counts.samples.push(FileSample {
                    path: path.to_owned(),
                    sha256: hex::encode(hasher.finalize()),
                });
            }
            written
        } else {
            self.append_sparse(&mut header, relative, &mut file, size, &regions)
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return self.unreadable(relative, e);
            }
            Err(e) => return Err(ArchiveError::Output(e)),
        }
        self.counts.files += 1;
        self.counts.bytes += regions.iter().map(|(_, len)| len).sum::<u64>();
        Ok(())
    }

    /// A GNU sparse entry: the data regions' map in the header (4) and in extension blocks
    /// (21 each), then only the regions' bytes.
    fn append_sparse(
        &mut self,
        header: &mut Header,
        relative: &Path,
        file: &mut File,
        size: u64,
        regions: &[(u64, u64)],
    ) -> io::Result<()> {
        header.set_entry_type(EntryType::GNUSparse);
        header.set_size(regions.iter().map(|(_, len)| len).sum());
        let (first, rest) = regions.split_at(regions.len().min(4));
        let gnu = header
            .as_gnu_mut()
            .ok_or_else(|| io::Error::other("not a GNU header"))?;
        gnu.set_real_size(size);
        for (slot, (offset, len)) in gnu.sparse.iter_mut().zip(first) {
            slot.set_offset(*offset);
            slot.set_length(*len);
        }
        gnu.set_is_extended(!rest.is_empty());
        let mut extensions = Vec::new();
        let chunks: Vec<&[(u64, u64)]> = rest.chunks(21).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut block = GnuExtSparseHeader::new();
            for (slot, (offset, len)) in block.sparse_mut().iter_mut().zip(*chunk) {
                slot.set_offset(*offset);
                slot.set_length(*len);
            }
            block.set_is_extended(i + 1 < chunks.len());
            extensions.extend_from_slice(block.as_bytes());
        }
        let data = Regions {
            file,
            regions: regions.to_vec(),
            current: 0,
            left: 0,
        };
        self.builder
            .append_data(header, relative, io::Cursor::new(extensions).chain(data))
    }
}

/// A header with the metadata of `meta` (mode, owner, times, size).
fn header_for(meta: &Metadata) -> Header {
    let mut header = Header::new_gnu();
    header.set_metadata_in_mode(meta, HeaderMode::Complete);
    header
}

/// The data regions of a file, from `SEEK_DATA`/`SEEK_HOLE`; the whole file where the
/// filesystem cannot tell.
pub(crate) fn data_regions(file: &File, size: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom as RSeek, seek};
    let mut regions = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let data = match seek(file, RSeek::Data(offset)) {
            Ok(data) => data,
            // No data after `offset`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return vec![(0, size)],
        };
        let hole = match seek(file, RSeek::Hole(data)) {
            Ok(hole) => hole.min(size),
            Err(_) => return vec![(0, size)],
        };
        if hole > data {
            regions.push((data, hole - data));
        }
        offset = hole;
    }
    // A file that ends in a hole gets an empty region at its end, as GNU tar writes it, so
    // readers know its full size.
    if regions
        .last()
        .is_none_or(|(offset, len)| offset + len < size)
    {
        regions.push((size, 0));
    }
    regions
}

/// Reads exactly `size` bytes: zeros if the file shrank, the first `size` bytes if it grew;
/// hashes what it read when asked to.
struct Exact<'a> {
    file: &'a mut File,
    left: u64,
    changed: bool,
    hasher: Option<Sha256>,
}

impl<'a> Exact<'a> {
    fn new(file: &'a mut File, size: u64, hash: bool) -> Self {
        Self {
            file,
            left: size,
            changed: false,
            hasher: hash.then(Sha256::new),
        }
    }
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        let n = if n == 0 {
            self.changed = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut probe = [0u8; 1];
            if self.file.read(&mut probe)? > 0 {
                self.changed = true;
            }
        }
        Ok(n)
    }
}

/// The bytes of a file's data regions, one after another.
struct Regions<'a> {
    file: &'a mut File,
    regions: Vec<(u64, u64)>,
    current: usize,
    left: u64,
}

impl Read for Regions<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            let Some((offset, len)) = self.regions.get(self.current).copied() else {
                return Ok(0);
            };
            self.current += 1;
            self.file.seek(SeekFrom::Start(offset))?;
            self.left = len;
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        let n = if n == 0 {
            // The file shrank: keep the archive consistent.
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    #[test]
    fn the_first_files_are_sampled_then_one_in_many_within_bounds() {
        let path = Path::new("a/b.txt");
        assert!(sampled(path, 10, 0, 0));
        assert!(sampled(path, 10, FIRST_SAMPLED - 1, 7));
        assert!(!sampled(path, MAX_SAMPLED_BYTES + 1, 0, 0), "too large");
        assert!(!sampled(path, 10, 0, MAX_SAMPLED), "enough samples");
        // After the first ones, about one in SAMPLE_ONE_IN, decided by the path alone.
        let chosen = (0..6400)
            .filter(|i| sampled(Path::new(&format!("f{i}")), 1, FIRST_SAMPLED, 0))
            .count();
        assert!((50..150).contains(&chosen), "{chosen}");
        let again = (0..6400)
            .filter(|i| sampled(Path::new(&format!("f{i}")), 1, FIRST_SAMPLED, 0))
            .count();
        assert_eq!(chosen, again);
    }
}
