//! The storage layer against a real S3 server and a real directory: the same behaviour from
//! both backends, failures that leave nothing behind, and one-line errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use coffer::storage::{Destination, S3Options, StorageError, Store};
use coffer_testenv::{S3Server, VersityServer};
use tokio::io::AsyncReadExt;

mod support;

fn s3_options(server: &S3Server, part_size: Option<usize>) -> S3Options {
    S3Options {
        credentials: Some((
            server.access_key().to_owned(),
            server.secret_key().to_owned(),
        )),
        endpoint: Some(server.endpoint()),
        region: Some(server.region().to_owned()),
        part_size,
        parts_in_flight: Some(2),
        ..S3Options::default()
    }
}

async fn s3_store(server: &S3Server, part_size: Option<usize>) -> Store {
    let dest = Destination::parse("s3://backups/prefix").unwrap();
    support::s3_client(server)
        .create_bucket()
        .bucket("backups")
        .send()
        .await
        .unwrap();
    Store::open(&dest, &s3_options(server, part_size)).await
}

fn fs_store(dir: &tempfile::TempDir) -> Store {
    Store::Fs(coffer::storage::fs::FsStore::new(dir.path().join("store")))
}

async fn put(store: &Store, key: &str, bytes: &[u8]) -> Result<u64, StorageError> {
    let (commit, committed) = tokio::sync::oneshot::channel();
    commit.send(()).unwrap();
    store.put_stream(key, &mut &bytes[..], committed).await
}

async fn get(store: &Store, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .get(key)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

/// The behaviour every backend must have.
async fn same_behaviour(store: &Store) {
    // Small objects, large objects (several parts for S3), empty objects.
    let small = support::noise(1000);
    let large = support::noise(12 << 20);
    assert_eq!(put(store, "a/small.bin", &small).await.unwrap(), 1000);
    assert_eq!(
        put(store, "a/b/large.bin", &large).await.unwrap(),
        large.len() as u64
    );
    assert_eq!(put(store, "a/empty.bin", b"").await.unwrap(), 0);
    assert_eq!(get(store, "a/small.bin").await, small);
    assert_eq!(get(store, "a/b/large.bin").await, large);
    assert_eq!(get(store, "a/empty.bin").await, b"");
    store.put_bytes("a/manifest.json", b"{}").await.unwrap();
    assert_eq!(
        store.get_bytes("a/manifest.json", 100).await.unwrap(),
        b"{}"
    );
    assert!(
        store.get_bytes("a/small.bin", 10).await.is_err(),
        "limit enforced"
    );

    let listed: Vec<(String, u64)> = store
        .list("a/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("a/b/large.bin".to_owned(), large.len() as u64),
            ("a/empty.bin".to_owned(), 0),
            ("a/manifest.json".to_owned(), 2),
            ("a/small.bin".to_owned(), 1000),
        ]
    );
    assert_eq!(store.list("a/b/").await.unwrap().len(), 1);
    assert!(store.list("nothing/").await.unwrap().is_empty());

    // An abandoned write leaves nothing, small or large.
    for bytes in [support::noise(10), support::noise(11 << 20)] {
        let (commit, committed) = tokio::sync::oneshot::channel::<()>();
        drop(commit);
        let err = store
            .put_stream("a/abandoned.bin", &mut &bytes[..], committed)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Abandoned { .. }), "{err}");
        assert!(store.list("a/abandoned").await.unwrap().is_empty());
    }

    // A source that fails half-way leaves nothing either.
    let head = support::noise(11 << 20);
    let mut failing = tokio::io::AsyncReadExt::chain(&head[..], FailingReader);
    let (commit, committed) = tokio::sync::oneshot::channel::<()>();
    let result = store
        .put_stream("a/broken.bin", &mut failing, committed)
        .await;
    drop(commit);
    assert!(result.is_err());
    assert!(store.list("a/broken").await.unwrap().is_empty());

    let missing = match store.get("a/nope.bin").await {
        Err(e) => e,
        Ok(_) => panic!("a missing object must not open"),
    };
    assert!(
        matches!(missing, StorageError::NotFound { .. }),
        "{missing}"
    );
    assert!(
        missing.to_string().contains("a/nope.bin does not exist"),
        "{missing}"
    );

    store.delete("a/small.bin").await.unwrap();
    store.delete("a/small.bin").await.unwrap();
    assert_eq!(store.list("a/").await.unwrap().len(), 3);
}

struct FailingReader;

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::Error::other("connection reset by source")))
    }
}

#[tokio::test]
async fn s3_backend_behaves_like_a_store() {
    let server = S3Server::start().unwrap();
    // 5 MiB parts (the S3 minimum): the 12 MiB object takes 3 parts, 2 in flight.
    let store = s3_store(&server, Some(5 << 20)).await;
    store.preflight().await.unwrap();
    same_behaviour(&store).await;
    assert_eq!(
        server.open_multipart_uploads(),
        0,
        "every multipart upload was completed or aborted"
    );
}

/// A store in `bucket` of versitygw, the second S3 implementation, made with object lock
/// when `locked`.
async fn versity_store(server: &VersityServer, bucket: &str, locked: bool) -> Store {
    support::versity_client(server)
        .create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(locked)
        .send()
        .await
        .unwrap();
    let options = S3Options {
        credentials: Some((
            server.access_key().to_owned(),
            server.secret_key().to_owned(),
        )),
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".to_owned()),
        part_size: Some(5 << 20),
        parts_in_flight: Some(2),
        ..S3Options::default()
    };
    let dest = Destination::parse(&format!("s3://{bucket}/prefix")).unwrap();
    Store::open(&dest, &options).await
}

#[tokio::test]
async fn a_second_s3_implementation_behaves_the_same_with_and_without_object_lock() {
    let server = VersityServer::start().unwrap();
    for (bucket, locked) in [("plain", false), ("locked", true)] {
        let store = versity_store(&server, bucket, locked).await;
        store.preflight().await.unwrap();
        // The lock is real where it was asked for, and absent elsewhere.
        let lock = support::versity_client(&server)
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await;
        assert_eq!(lock.is_ok(), locked, "{lock:?}");
        same_behaviour(&store).await;
        let open = support::versity_client(&server)
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        assert!(
            open.uploads().is_empty(),
            "every multipart upload was completed or aborted in {bucket}: {open:?}"
        );
    }
    // Its errors read like the first server's.
    let options = S3Options {
        credentials: Some((server.access_key().to_owned(), "wrong".to_owned())),
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".to_owned()),
        ..S3Options::default()
    };
    let store = Store::open(&Destination::parse("s3://plain/x").unwrap(), &options).await;
    let refused = store.preflight().await.unwrap_err().to_string();
    assert!(refused.contains("S3 refused the credentials"), "{refused}");
    let mut options = options;
    options.credentials = Some((
        server.access_key().to_owned(),
        server.secret_key().to_owned(),
    ));
    let store = Store::open(
        &Destination::parse("s3://no-such-bucket/x").unwrap(),
        &options,
    )
    .await;
    let missing = store.preflight().await.unwrap_err().to_string();
    assert!(
        missing.contains("bucket \"no-such-bucket\" does not exist"),
        "{missing}"
    );
}

#[tokio::test]
async fn s3_backend_uses_8_mib_parts_by_default() {
    let server = S3Server::start().unwrap();
    let store = s3_store(&server, None).await;
    let big = support::noise(20 << 20);
    assert_eq!(
        put(&store, "big.bin", &big).await.unwrap(),
        big.len() as u64
    );
    assert_eq!(get(&store, "big.bin").await, big);
    // Two parts of 8 MiB and the rest, as the server received them (parts go up side by
    // side: the short last one may arrive before the second).
    let mut sizes = server.part_sizes("big.bin");
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(sizes, [8 << 20, 8 << 20, (20 << 20) - (16 << 20)]);
    assert_eq!(server.open_multipart_uploads(), 0);
}

#[tokio::test]
async fn filesystem_backend_behaves_like_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir);
    store.preflight().await.unwrap();
    same_behaviour(&store).await;
    let root = dir.path().join("store");
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(root.join("a/b/large.bin")), 0o600);
    assert_eq!(mode(root.join("a/b")), 0o700);
    assert_eq!(mode(root.join("a")), 0o700);
    let leftovers: Vec<_> = walkdir(&root)
        .into_iter()
        .filter(|p| p.contains(".coffer-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        out.push(path.display().to_string());
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
    }
    out
}

#[tokio::test]
async fn s3_errors_are_one_line_and_name_the_fix() {
    let server = S3Server::start().unwrap();
    let options = s3_options(&server, None);
    let preflight = |dest: &'static str, options: S3Options| async move {
        let store = Store::open(&Destination::parse(dest).unwrap(), &options).await;
        store.preflight().await.unwrap_err().to_string()
    };

    let missing = preflight("s3://no-such-bucket/x", options.clone()).await;
    assert!(
        missing.contains("bucket \"no-such-bucket\" does not exist: create it"),
        "{missing}"
    );

    let mut wrong = options.clone();
    let secret = support::distinctive_secret("s3-secret");
    wrong.credentials = Some((server.access_key().to_owned(), secret.clone()));
    let refused = preflight("s3://backups/x", wrong).await;
    assert!(
        refused.contains("S3 refused the credentials") && refused.contains("AWS_SECRET_ACCESS_KEY"),
        "{refused}"
    );
    assert!(!refused.contains(&secret), "{refused}");

    let mut unreachable = options.clone();
    unreachable.endpoint = Some("http://127.0.0.1:9".to_owned());
    let unreachable = preflight("s3://backups/x", unreachable).await;
    assert!(
        unreachable.contains("cannot reach S3") && unreachable.contains("--s3-endpoint"),
        "{unreachable}"
    );

    for e in [missing, refused, unreachable] {
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn enospc_is_reported_as_a_full_disk() {
    // /dev/full answers every write with ENOSPC: a real error from the kernel.
    let dir = tempfile::tempdir().unwrap();
    let err = coffer::storage::StorageError::io(
        "writing",
        dir.path().display().to_string(),
        std::fs::write("/dev/full", b"x").unwrap_err(),
    );
    assert!(err.to_string().contains("no space left"), "{err}");
}

/// A backup whose manifest cannot be written leaves none of its data objects behind (they
/// would be an incomplete backup for ever), and a cancelled write leaves no temporary file.
#[tokio::test]
async fn a_manifest_that_cannot_be_written_takes_the_data_with_it() {
    use coffer::storage::manifest::{FORMAT_VERSION, Manifest, ObjectRecord, SourceInfo, Stats};
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir);
    put(&store, "run/data.bin", b"data").await.unwrap();
    // Something in the manifest's way: a directory where the file must go.
    std::fs::create_dir_all(dir.path().join("store/run/manifest.json/x")).unwrap();
    let now = chrono::Utc::now();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        coffer_version: "test".into(),
        name: "run".into(),
        source: SourceInfo {
            kind: "volume".into(),
            address: "/".into(),
            server_version: None,
            mode: None,
            database: None,
            rdb_version: None,
            tool: None,
            position: None,
        },
        started_at: now,
        completed_at: now,
        compression: coffer::api::Compression::None,
        objects: vec![ObjectRecord {
            name: "data.bin".into(),
            format: "tar".into(),
            raw_bytes: 4,
            raw_sha256: "a".repeat(64),
            stored_bytes: 4,
            sha256: "a".repeat(64),
            database: None,
        }],
        stats: Stats::default(),
        owner: None,
        encryption: None,
    };
    assert!(store.put_manifest("run/", &manifest).await.is_err());
    assert!(!dir.path().join("store/run/data.bin").exists());

    // A write dropped half-way (a cancelled backup) leaves no temporary file.
    let (_commit, never) = tokio::sync::oneshot::channel::<()>();
    let (mut writer, mut reader) = tokio::io::duplex(64);
    let mut write = Box::pin(store.put_stream("run/other.bin", &mut reader, never));
    tokio::io::AsyncWriteExt::write_all(&mut writer, b"partial")
        .await
        .unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), &mut write).await;
    drop(write);
    let left: Vec<_> = walk_all(&dir.path().join("store/run"));
    assert!(
        left.iter().all(|name| !name.starts_with(".coffer-tmp-")),
        "{left:?}"
    );
}

fn walk_all(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
