//! Directory trees for the volume tests: one with every kind of file, and a description of a
//! tree that two trees can be compared by.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use sha2::{Digest, Sha256};

/// What the tests compare of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// SHA-256 of the content (holes read as zeros) of regular files.
    pub sha256: Option<String>,
    pub link_target: Option<String>,
    pub mtime: i64,
    /// For a file with several names in the tree: the first of them.
    pub same_file_as: Option<String>,
}

/// Every entry under `root` by relative path.
pub fn describe(root: &Path) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    let mut paths = Vec::new();
    collect(root, root, &mut paths);
    paths.sort();
    for path in paths {
        // Names that are not UTF-8 are shown escaped, and kept apart by their bytes.
        let relative = path.as_os_str().as_bytes().escape_ascii().to_string();
        let path = root.join(path);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let kind = if meta.file_type().is_symlink() {
            "symlink"
        } else if meta.is_dir() {
            "directory"
        } else {
            "file"
        };
        let same_file_as = if kind == "file" && meta.nlink() > 1 {
            let first = inodes
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| relative.clone());
            (*first != relative).then(|| first.clone())
        } else {
            None
        };
        entries.insert(
            relative,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: if kind == "directory" { 0 } else { meta.size() },
                sha256: (kind == "file").then(|| content_sha256(&path, meta.size())),
                link_target: (kind == "symlink")
                    .then(|| std::fs::read_link(&path).unwrap().display().to_string()),
                mtime: meta.mtime(),
                same_file_as,
            },
        );
    }
    entries
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.strip_prefix(root).unwrap().to_owned());
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            collect(root, &path, out);
        }
    }
}

/// SHA-256 of a file's content, reading only where the filesystem says there is data
/// (holes are zeros by definition), so that a sparse 9 GiB file costs what its data costs.
/// Two files with the same content get the same hash however their holes lie.
pub fn content_sha256(path: &Path, size: u64) -> String {
    const BLOCK: u64 = 64 << 10;
    let mut file = File::open(path).unwrap();
    let mut hasher = Sha256::new();
    hasher.update(size.to_le_bytes());
    let mut next_block = 0u64;
    let mut offset = 0u64;
    let mut buffer = vec![0u8; BLOCK as usize];
    while offset < size {
        let Ok(data) = rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(offset)) else {
            break;
        };
        let hole = rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(data))
            .unwrap()
            .min(size);
        let mut block = (data / BLOCK * BLOCK).max(next_block);
        while block < hole {
            let len = BLOCK.min(size - block) as usize;
            file.seek(SeekFrom::Start(block)).unwrap();
            file.read_exact(&mut buffer[..len]).unwrap();
            // Blocks of zeros are hashed like holes: not at all.
            if buffer[..len].iter().any(|b| *b != 0) {
                hasher.update(block.to_le_bytes());
                hasher.update(&buffer[..len]);
            }
            block += BLOCK;
        }
        next_block = block;
        offset = hole;
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes the filesystem allocated for a file.
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// The size of the sparse file in [`every_kind`]: above 8 GiB, the most a plain tar header
/// can say.
pub const SPARSE_SIZE: u64 = 9 << 30;

/// Builds a tree with every kind of entry a volume holds: files of several sizes and modes,
/// nested, empty and private directories, relative, absolute and dangling symbolic links,
/// hard links, a sparse file over 8 GiB, long and non-ASCII names, old and new times, and
/// (when `owners` is set, which needs root) files owned by other users.
pub fn every_kind(root: &Path, owners: bool) {
    let write = |relative: &str, bytes: &[u8], mode: u32| {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("empty-file", b"", 0o644);
    write("one-byte", b"x", 0o600);
    write("app/config.yaml", b"listen: 8080\nname: shop\n", 0o640);
    write("app/bin/run", b"#!/bin/sh\necho hi\n", 0o755);
    write("app/bin/setuid-tool", b"tool", 0o4755);
    write("data/noise.bin", &super::noise(3 << 20), 0o644);
    write("data/odd-size", &super::noise(4095), 0o644);
    write("café ü/naïve — name.txt", "ünïcödé\n".as_bytes(), 0o644);
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    write(&long, b"long path", 0o644);
    // A name that is not UTF-8 (Latin-1 "été").
    let latin1 = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9");
    std::fs::write(root.join("app").join(latin1), b"bytes, not text").unwrap();
    std::fs::create_dir_all(root.join("empty/nested-empty")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    write("private/key", b"secret", 0o600);
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink("app/config.yaml", root.join("config-link")).unwrap();
    symlink("/etc/hostname", root.join("absolute-link")).unwrap();
    symlink("missing/target", root.join("dangling-link")).unwrap();
    symlink("../app", root.join("data/dir-link")).unwrap();
    std::fs::hard_link(root.join("data/noise.bin"), root.join("app/noise-hardlink")).unwrap();
    std::fs::hard_link(root.join("one-byte"), root.join("empty-hard")).unwrap();

    let mut sparse = File::create(root.join("data/sparse.img")).unwrap();
    for offset in [0, 5 << 30, SPARSE_SIZE - 4096] {
        sparse.seek(SeekFrom::Start(offset)).unwrap();
        sparse.write_all(&super::noise(4096)).unwrap();
    }
    sparse.set_len(SPARSE_SIZE).unwrap();
    drop(sparse);

    if owners {
        for (path, uid, gid) in [
            ("app/config.yaml", 1000, 1000),
            ("private", 70, 70),
            ("private/key", 70, 70),
            ("data/odd-size", 12345, 54321),
        ] {
            std::os::unix::fs::chown(root.join(path), Some(uid), Some(gid)).unwrap();
        }
        std::os::unix::fs::lchown(root.join("config-link"), Some(1000), Some(1000)).unwrap();
    }
    // Times last, deepest first, so that creating entries does not change them.
    let mut paths = Vec::new();
    collect(root, root, &mut paths);
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, relative) in paths.iter().enumerate() {
        let seconds = 1_000_000_000 + (i as i64) * 86_400 * 37;
        let time = FileTime::from_unix_time(seconds, 0);
        filetime::set_symlink_file_times(root.join(relative), time, time).unwrap();
    }
}
