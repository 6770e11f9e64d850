//! `coffer backup PATH` and `coffer restore BACKUP --to PATH` on real filesystems: every kind
//! of file comes back as it was, archives that would write outside the target are refused
//! before anything is written, unreadable files are named, and a full disk is one line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_testenv::S3Server;
use serde_json::Value;
use sha2::{Digest, Sha256};

mod support;
use support::cli::{counted, fails, nothing_stored, ok, on_a_full_disk, stderr, walk};
use support::tree::{SPARSE_SIZE, allocated, describe, every_kind};

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

fn manifest(location: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(location.join("manifest.json")).unwrap()).unwrap()
}

/// An S3 server with the bucket `volumes`.
async fn s3_with_volumes() -> S3Server {
    let s3 = S3Server::start().unwrap();
    support::s3_client(&s3)
        .create_bucket()
        .bucket("volumes")
        .send()
        .await
        .unwrap();
    s3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_file_comes_back_through_s3_and_a_directory() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    every_kind(&source, support::needs_root("files' owners"));
    let expected = describe(&source);
    let s3 = s3_with_volumes().await;
    let dir_dest = work.path().join("backups");

    for (destination, env) in [
        ("s3://volumes/app".to_owned(), s3.env()),
        (dir_dest.display().to_string(), vec![]),
    ] {
        let (location, out) = ok(
            &[
                "backup",
                &source.display().to_string(),
                "--to",
                &destination,
            ],
            &env,
        );
        let summary = stderr(&out);
        let counts = format!(
            "backed up {} files, {} directories, 4 symbolic links and 2 hard links from",
            expected.values().filter(|e| e.kind == "file").count() - 2,
            expected.values().filter(|e| e.kind == "directory").count()
        );
        assert!(summary.starts_with(&counts), "{counts:?} in {summary}");
        let folder = if let Some(key) = location.strip_prefix("s3://") {
            s3.root().join(key)
        } else {
            PathBuf::from(&location)
        };
        let manifest = manifest(&folder);
        assert_eq!(manifest["source"]["kind"], "volume");
        assert_eq!(manifest["stats"]["hardLinks"], 2);
        assert_eq!(manifest["stats"]["symlinks"], 4);
        // The 9 GiB sparse file is archived as its 12 KiB of data, not as 9 GiB of zeros.
        let raw = manifest["objects"][0]["rawBytes"].as_u64().unwrap();
        assert!(raw < 8 << 20, "archive of {raw} bytes");

        let target = work.path().join(format!("restored-{}", env.len()));
        let (line, _) = ok(
            &["restore", &location, "--to", &target.display().to_string()],
            &env,
        );
        assert!(line.starts_with("restored "), "{line}");
        let restored = describe(&target);
        for (path, entry) in &expected {
            assert_eq!(restored.get(path), Some(entry), "{path}");
        }
        assert_eq!(restored.len(), expected.len(), "no extra entries");
        // Holes stay holes on restore too.
        let sparse = target.join("data/sparse.img");
        assert_eq!(std::fs::metadata(&sparse).unwrap().len(), SPARSE_SIZE);
        assert!(
            allocated(&sparse) < 1 << 20,
            "{} bytes allocated",
            allocated(&sparse)
        );
    }
    assert_eq!(s3.open_multipart_uploads(), 0);
}

#[test]
fn restore_clean_empties_the_target_and_without_it_keeps_other_files() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("sub/a"), b"new").unwrap();
    let dest = work.path().join("d").display().to_string();
    let (location, _) = ok(
        &["backup", &source.display().to_string(), "--to", &dest],
        &[],
    );
    let target = work.path().join("target");
    std::fs::create_dir_all(target.join("sub")).unwrap();
    std::fs::write(target.join("sub/a"), b"old").unwrap();
    std::fs::write(target.join("other"), b"kept").unwrap();
    ok(
        &["restore", &location, "--to", &target.display().to_string()],
        &[],
    );
    assert_eq!(std::fs::read(target.join("sub/a")).unwrap(), b"new");
    assert_eq!(std::fs::read(target.join("other")).unwrap(), b"kept");
    ok(
        &[
            "restore",
            &location,
            "--to",
            &target.display().to_string(),
            "--clean",
        ],
        &[],
    );
    assert_eq!(describe(&target), describe(&source));
}

/// A backup made by a normal `coffer backup`, whose archive is then replaced by `archive`
/// (uncompressed) with the manifest updated to match, as an attacker who controls the
/// storage could.
fn forged_backup(work: &Path, archive: &[u8]) -> String {
    let source = work.join("innocent");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("file"), b"hello").unwrap();
    let dest = work.join("forged").display().to_string();
    let (location, _) = ok(
        &[
            "backup",
            &source.display().to_string(),
            "--to",
            &dest,
            "--compression",
            "none",
        ],
        &[],
    );
    let folder = Path::new(&location);
    std::fs::write(folder.join("volume.tar"), archive).unwrap();
    let sha: String = Sha256::digest(archive)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut manifest = manifest(folder);
    let object = &mut manifest["objects"][0];
    object["rawBytes"] = Value::from(archive.len());
    object["storedBytes"] = Value::from(archive.len());
    object["rawSha256"] = Value::from(sha.clone());
    object["sha256"] = Value::from(sha);
    std::fs::write(
        folder.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    location
}

/// An archive entry: path, type and link target.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str);

/// A tar archive with entries written raw, so `..` and absolute names get in.
fn archive(entries: &[RawEntry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, link) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let data: &[u8] = if *kind == tar::EntryType::Regular {
            b"pwned"
        } else {
            b""
        };
        header.set_size(data.len() as u64);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn archive_entries_that_would_land_outside_the_target_are_refused() {
    use tar::EntryType::{Link, Regular, Symlink};
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"precious").unwrap();
    let target = work.path().join("target");
    let evil_abs = format!("{}/evil", outside.display());
    let outside_str = outside.display().to_string();

    let cases: Vec<(&str, Vec<RawEntry>, &str)> = vec![
        (
            "dot-dot",
            vec![("ok", Regular, ""), ("../outside/evil", Regular, "")],
            "../outside/evil",
        ),
        ("absolute", vec![(&evil_abs, Regular, "")], &evil_abs),
        (
            "through an archive link",
            vec![("out", Symlink, &outside_str), ("out/evil", Regular, "")],
            "out/evil",
        ),
        (
            "hard link out",
            vec![("hard", Link, "../outside/secret")],
            "hard",
        ),
    ];
    for (case, entries, named) in cases {
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("keep"), b"keep").unwrap();
        let location = forged_backup(
            &work.path().join(case.replace(' ', "-")),
            &archive(&entries),
        );
        for clean in [false, true] {
            let target_str = target.display().to_string();
            let mut args = vec!["restore", &location, "--to", &target_str];
            if clean {
                args.push("--clean");
            }
            fails(
                &args,
                &[],
                &[
                    &format!("archive entry {named:?} would land outside the target"),
                    "nothing in the target was changed",
                ],
            );
            // Refused before anything was written, even with --clean.
            assert_eq!(
                walk(&target),
                [target.join("keep").display().to_string()],
                "{case}"
            );
            assert_eq!(
                walk(&outside),
                [outside.join("secret").display().to_string()],
                "{case}"
            );
        }
    }

    // A link that already is in the target is not written through either: the archive's
    // entries are extracted apart and moved into place, so the link is replaced by the
    // archive's directory, and what it pointed to is left alone.
    symlink(&outside, target.join("pre-existing")).unwrap();
    let location = forged_backup(
        &work.path().join("pre-existing"),
        &archive(&[("pre-existing/evil", Regular, "")]),
    );
    ok(
        &["restore", &location, "--to", &target.display().to_string()],
        &[],
    );
    let replaced = std::fs::symlink_metadata(target.join("pre-existing")).unwrap();
    assert!(replaced.is_dir(), "the link was replaced by a directory");
    assert!(target.join("pre-existing/evil").is_file());
    assert_eq!(
        walk(&outside),
        [outside.join("secret").display().to_string()]
    );
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"precious");
}

/// Runs coffer as an unprivileged user when the tests run as root (root reads everything).
fn coffer_unprivileged(args: &[&str]) -> std::process::Output {
    let mut command = if running_as_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(env!("CARGO_BIN_EXE_coffer"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_coffer"))
    };
    command.args(args).env_remove("RUST_LOG").output().unwrap()
}

#[test]
fn unreadable_files_are_named_and_fail_the_backup_unless_skipped() {
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(source.join("locked-dir")).unwrap();
    std::fs::write(source.join("readable"), b"ok").unwrap();
    std::fs::write(source.join("locked-dir/inside"), b"x").unwrap();
    std::fs::write(source.join("locked-file"), b"secret").unwrap();
    let dest = work.path().join("d");
    std::fs::create_dir_all(&dest).unwrap();
    if running_as_root() {
        for path in [
            &source,
            &source.join("locked-dir"),
            &source.join("readable"),
            &source.join("locked-file"),
            &dest,
        ] {
            std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
        }
    }
    std::fs::set_permissions(
        source.join("locked-file"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(
        source.join("locked-dir"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let source_str = source.display().to_string();
    let dest_str = dest.display().to_string();

    let out = coffer_unprivileged(&["backup", &source_str, "--to", &dest_str]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let message = stderr(&out);
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(
        message.contains("cannot be read") && message.contains("--skip-unreadable"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{source_str}/locked-")),
        "names the path: {message}"
    );
    nothing_stored(&dest);

    let out = coffer_unprivileged(&[
        "backup",
        &source_str,
        "--to",
        &dest_str,
        "--skip-unreadable",
    ]);
    assert!(out.status.success(), "{out:?}");
    let message = stderr(&out);
    for path in ["locked-dir", "locked-file"] {
        assert!(
            message.contains(&format!("{source_str}/{path}")),
            "{path} listed: {message}"
        );
    }
    let location = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let manifest = manifest(Path::new(&location));
    let unreadable: Vec<&str> = manifest["stats"]["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        unreadable,
        [
            format!("{source_str}/locked-dir"),
            format!("{source_str}/locked-file")
        ]
    );
}

#[test]
fn a_full_disk_fails_backup_and_restore_in_one_line() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("big"), support::noise(1 << 20)).unwrap();
    let source_str = source.display().to_string();
    support::cli::backup_fails_on_a_full_disk(&source_str, &[]);

    let dest = work.path().join("d").display().to_string();
    let (location, _) = ok(&["backup", &source_str, "--to", &dest], &[]);
    let out = on_a_full_disk(&["restore", &location, "--to", "{disk}/target"]);
    let err = stderr(&out);
    let message: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("coffer restore:"))
        .collect();
    assert_eq!(message.len(), 1, "{err}");
    assert!(
        message[0].contains("no space left on the device holding")
            && message[0].contains("/target"),
        "{err}"
    );
    assert!(err.contains("exit=1"), "{err}");
}

/// A read-only directory (0555) with files in it restores as a user other than root: its mode
/// is applied after its files are written. Runs the restore as `nobody` when the tests run as
/// root (as in CI), since root ignores directory permissions; says so when it cannot.
#[test]
fn a_read_only_directory_restores_with_its_files_as_a_non_root_user() {
    use std::os::unix::process::CommandExt;
    if !support::needs_root("restoring as a user other than root") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(source.join("ro/inner")).unwrap();
    std::fs::write(source.join("ro/a.txt"), "a").unwrap();
    std::fs::write(source.join("ro/inner/b.txt"), "b").unwrap();
    for dir in ["ro/inner", "ro"] {
        std::fs::set_permissions(source.join(dir), std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let store = work.path().join("store");
    let (location, _) = ok(
        &[
            "backup",
            &source.display().to_string(),
            "--to",
            &store.display().to_string(),
        ],
        &[],
    );
    let target = work.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    // `nobody` must be able to reach and read the store, and write the target.
    const NOBODY: u32 = 65534;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let chown = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .args([&store, &target])
        .status()
        .unwrap();
    assert!(chown.success());
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([
            "restore",
            location.trim(),
            "--to",
            &target.display().to_string(),
        ])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(target.join("ro/inner/b.txt")).unwrap(),
        "b"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("ro/a.txt")).unwrap(),
        "a"
    );
    let mode = std::fs::metadata(target.join("ro"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o555);
}

/// A restore replaces what the target has at the backup's paths, but never a directory of
/// the target by a file of the backup unless told to (`--clean`): that is refused before
/// anything moves. With `--clean`, what the target held goes only once the backup is in
/// place, and nothing of the restore's own working directories stays.
#[test]
fn a_directory_is_replaced_by_a_file_only_with_clean() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("data"), b"a file in the backup").unwrap();
    std::fs::write(source.join("other"), b"other").unwrap();
    let dest = work.path().join("backups").display().to_string();
    let (location, _) = ok(
        &["backup", &source.display().to_string(), "--to", &dest],
        &[],
    );
    let target = work.path().join("target");
    std::fs::create_dir_all(target.join("data")).unwrap();
    std::fs::write(target.join("data/inner"), b"the target's own").unwrap();
    std::fs::write(target.join("unrelated"), b"kept").unwrap();
    let target_str = target.display().to_string();
    let before = walk(&target);

    fails(
        &["restore", &location, "--to", &target_str],
        &[],
        &[&format!(
            "{} is a directory in the target but not in the backup",
            target.join("data").display()
        )],
    );
    let mut after = walk(&target);
    after.sort();
    let mut expected = before.clone();
    expected.sort();
    assert_eq!(after, expected, "nothing moved");
    assert_eq!(
        std::fs::read(target.join("data/inner")).unwrap(),
        b"the target's own"
    );

    ok(&["restore", &location, "--to", &target_str, "--clean"], &[]);
    let mut left = walk(&target);
    left.sort();
    assert_eq!(
        left,
        [
            target.join("data").display().to_string(),
            target.join("other").display().to_string()
        ]
    );
    assert_eq!(
        std::fs::read(target.join("data")).unwrap(),
        b"a file in the backup"
    );
}

/// `coffer download` writes the volume as a plain tar that GNU `tar` extracts into the same
/// tree (every kind of entry, modes, times, holes, and owners as root); to stdout as well; a
/// tampered archive is refused and nothing is left.
#[test]
fn download_writes_a_tar_that_tar_extracts() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let owners = support::needs_root("files' owners");
    every_kind(&source, owners);
    let expected = describe(&source);
    let dest = work.path().join("backups").display().to_string();
    let (location, _) = ok(
        &["backup", &source.display().to_string(), "--to", &dest],
        &[],
    );

    let into = work.path().join("download");
    ok(
        &["download", &location, "--to", &into.display().to_string()],
        &[],
    );
    let mut files = walk(&into);
    files.sort();
    assert_eq!(
        files,
        [into.join("manifest.json"), into.join("volume.tar")].map(|p| p.display().to_string())
    );
    let extracted = work.path().join("extracted");
    std::fs::create_dir(&extracted).unwrap();
    let mut tar = Command::new("tar");
    tar.arg("-x")
        .arg("-f")
        .arg(into.join("volume.tar"))
        .arg("-C")
        .arg(&extracted);
    if owners {
        tar.args(["--same-owner", "--same-permissions", "--numeric-owner"]);
    }
    let out = tar.output().unwrap();
    assert!(out.status.success(), "tar -x: {out:?}");
    let restored = describe(&extracted);
    for (path, entry) in &expected {
        assert_eq!(restored.get(path), Some(entry), "{path}");
    }
    assert_eq!(restored.len(), expected.len(), "no extra entries");

    // To stdout, piped into tar -t: the same archive.
    let piped = support::cli::coffer(&["download", &location, "--to", "-"], &[]);
    assert!(piped.status.success(), "{piped:?}");
    assert!(piped.stdout == std::fs::read(into.join("volume.tar")).unwrap());

    // A tampered archive: refused, nothing kept.
    let object = Path::new(&location).join("volume.tar.zst");
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&object, &bytes).unwrap();
    let other = work.path().join("tampered");
    fails(
        &["download", &location, "--to", &other.display().to_string()],
        &[],
        &["volume.tar.zst is damaged", "nothing of it was kept"],
    );
    nothing_stored(&other);
}

/// A download stopped while it writes (Ctrl-C, SIGTERM) removes what it wrote, its
/// `.partial` file and the directory it made too, and exits as a stopped command does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_download_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    // 4 MiB that do not compress: half of the stored object is half of the file.
    let mut data = Vec::with_capacity(4 << 20);
    let mut block = Sha256::digest(b"seed").to_vec();
    while data.len() < 4 << 20 {
        block = Sha256::digest(&block).to_vec();
        data.extend_from_slice(&block);
    }
    std::fs::write(source.join("data.bin"), &data).unwrap();
    let s3 = s3_with_volumes().await;
    let (location, _) = ok(
        &[
            "backup",
            &source.display().to_string(),
            "--to",
            "s3://volumes/app",
        ],
        &s3.env(),
    );
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        // The object's first half comes, then the connection pauses: the download is
        // caught in the middle, its `.partial` file holding part of the data.
        s3.pause_midway("volume.tar.zst", s3.reads("volume.tar.zst") + 1);
        let into = work.path().join(format!("stopped-{signal}"));
        let child = Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(["download", &location, "--to", &into.display().to_string()])
            .env_remove("RUST_LOG")
            .envs(s3.env().iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let partial = into.join("volume.tar.partial");
        let started = std::time::Instant::now();
        while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 1 << 20 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "no data in {}",
                partial.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{said}");
        assert!(
            said.contains(&format!("stopped by SIG{signal} while downloading"))
                && said.contains("nothing of it was kept"),
            "{said}"
        );
        assert!(!into.exists(), "{} is left", into.display());
    }
}

/// `coffer restore --dry-run` into a directory changes nothing and names what the restore
/// then does: files created, replaced, left alone, or removed first with `--clean`.
#[test]
fn a_dry_run_into_a_directory_changes_nothing_and_counts_what_the_restore_does() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    std::fs::create_dir_all(source.join("conf")).unwrap();
    std::fs::write(source.join("conf/app.yaml"), "from the backup").unwrap();
    std::fs::write(source.join("conf/new.yaml"), "only in the backup").unwrap();
    std::fs::write(source.join("top.txt"), "top").unwrap();
    let dest = work.path().join("backups").display().to_string();
    let (location, _) = ok(
        &["backup", &source.display().to_string(), "--to", &dest],
        &[],
    );
    let target = work.path().join("target");
    std::fs::create_dir_all(target.join("conf")).unwrap();
    std::fs::write(target.join("conf/app.yaml"), "edited since").unwrap();
    std::fs::write(target.join("uploads.db"), "only in the target").unwrap();
    let before = describe(&target);
    let to = target.display().to_string();

    let (_, out) = ok(&["restore", &location, "--to", &to, "--dry-run"], &[]);
    let said = support::cli::stdout(&out);
    assert!(said.starts_with("dry run: nothing was written"), "{said}");
    assert_eq!(counted(&said, "created: "), 2, "{said}");
    assert_eq!(counted(&said, "replaced: "), 1, "{said}");
    assert!(
        said.contains("replaced: 1 files (for example conf/app.yaml)"),
        "{said}"
    );
    assert_eq!(counted(&said, "left alone: "), 1, "{said}");
    assert_eq!(counted(&said, "removed first: "), 0, "{said}");
    let (_, out) = ok(
        &["restore", &location, "--to", &to, "--dry-run", "--clean"],
        &[],
    );
    let clean_said = support::cli::stdout(&out);
    assert_eq!(counted(&clean_said, "removed first: "), 2, "{clean_said}");
    assert_eq!(counted(&clean_said, "created: "), 3, "{clean_said}");
    assert_eq!(describe(&target), before, "the dry runs changed the target");

    // The restore does what the first preview said.
    ok(&["restore", &location, "--to", &to], &[]);
    assert_eq!(
        std::fs::read_to_string(target.join("conf/app.yaml")).unwrap(),
        "from the backup"
    );
    assert!(target.join("conf/new.yaml").exists() && target.join("top.txt").exists());
    assert_eq!(
        std::fs::read_to_string(target.join("uploads.db")).unwrap(),
        "only in the target"
    );
}
