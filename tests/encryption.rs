//! Client-side encryption from the command line, against real Redis, PostgreSQL and MariaDB
//! servers and a real S3 server: round trips with either of two recipients, no plaintext in
//! the bucket, a wrong identity refused before the target is touched, rotation that rewrites
//! only the key object, and `verify` with and without a key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use coffer_testenv::{MariaDbServer, PostgresServer, RedisServer, S3Server};

mod support;
use support::cli::{fails, ok, stderr};

/// Text that must never be found in the bucket of an encrypted backup.
const MARKER: &str = "PLAINTEXT-MARKER-7f3a9c";

struct Keys {
    _dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    publics: Vec<String>,
}

impl Keys {
    /// `n` key pairs made with `coffer keygen`.
    fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        let mut publics = Vec::new();
        for i in 0..n {
            let file = dir.path().join(format!("key{i}.txt"));
            let (public, _) = ok(&["keygen", "-o", file.to_str().unwrap()], &[]);
            assert!(public.starts_with("age1"), "{public}");
            files.push(file);
            publics.push(public);
        }
        Self {
            _dir: dir,
            files,
            publics,
        }
    }

    fn file(&self, i: usize) -> &str {
        self.files[i].to_str().unwrap()
    }
}

async fn bucket(s3: &S3Server, name: &str) {
    support::s3_client(s3)
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .unwrap();
}

/// Every file under `root` that holds `needle`.
fn files_holding(root: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Backs up `source` to `dest` uncompressed (so that only encryption can hide the marker),
/// encrypted to both keys; checks that the bucket holds no plaintext and that the manifest
/// names both recipients. Returns the backup's location.
fn encrypted_backup(
    source: &str,
    dest: &str,
    keys: &Keys,
    s3: &S3Server,
    extra: &[&str],
) -> String {
    let mut args = vec![
        "backup",
        source,
        "--to",
        dest,
        "--compression",
        "none",
        "--recipient",
        &keys.publics[0],
        "--recipient",
        &keys.publics[1],
    ];
    args.extend_from_slice(extra);
    let (location, _) = ok(&args, &s3.env());
    assert_eq!(
        files_holding(s3.root(), MARKER.as_bytes()),
        Vec::<String>::new(),
        "plaintext in the bucket"
    );
    let folder = s3.root().join(location.strip_prefix("s3://").unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["formatVersion"], 2);
    assert_eq!(
        manifest["encryption"]["recipients"],
        serde_json::json!(keys.publics[..2])
    );
    // Listing and verifying the stored bytes need no key.
    let (_, listed) = ok(&["list", dest, "--output", "json"], &s3.env());
    let listed: serde_json::Value = serde_json::from_str(&support::cli::stdout(&listed)).unwrap();
    assert_eq!(listed[0]["location"], location);
    assert_eq!(
        listed[0]["encryptedTo"],
        serde_json::json!(keys.publics[..2])
    );
    let (_, verified) = ok(&["verify", &location], &s3.env());
    assert!(
        stderr(&verified).contains("stored bytes and key object only"),
        "{}",
        stderr(&verified)
    );
    location
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restores_with_either_identity_and_refuses_a_wrong_one_before_touching_the_target() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let keys = Keys::new(3);
    let source = RedisServer::start().unwrap();
    let mut con = support::redis_data::connect(&source.url()).await;
    support::redis_data::populate(&mut con).await;
    let _: () = redis::cmd("SET")
        .arg("note")
        .arg(format!("{MARKER} in a value"))
        .query_async(&mut con)
        .await
        .unwrap();
    let (expected, _) = support::redis_data::state(&mut con).await;
    let location = encrypted_backup(&source.url(), "s3://backups/redis", &keys, &s3, &[]);

    let target = RedisServer::start().unwrap();
    let mut tcon = support::redis_data::connect(&target.url()).await;
    let _: () = redis::cmd("SET")
        .arg("sentinel")
        .arg("untouched")
        .query_async(&mut tcon)
        .await
        .unwrap();
    // No identity, then a wrong one: one line naming both recipients, and the target as it
    // was.
    fails(
        &["restore", &location, "--to", &target.url()],
        &s3.env(),
        &[
            "is encrypted to",
            &keys.publics[0],
            &keys.publics[1],
            "--identity",
        ],
    );
    fails(
        &[
            "restore",
            &location,
            "--to",
            &target.url(),
            "--identity",
            keys.file(2),
        ],
        &s3.env(),
        &["none of the given private keys opens", &keys.publics[0]],
    );
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut tcon).await.unwrap();
    assert_eq!(size, 1, "the target was touched");

    for i in 0..2 {
        let _: () = redis::cmd("FLUSHALL").query_async(&mut tcon).await.unwrap();
        ok(
            &[
                "restore",
                &location,
                "--to",
                &target.url(),
                "--identity",
                keys.file(i),
            ],
            &s3.env(),
        );
        let (restored, _) = support::redis_data::state(&mut tcon).await;
        assert_eq!(restored, expected, "restored with identity {i}");
    }

    // Download: the same refusal without a key (nothing written), and with one the plain
    // dump.rdb, which a fresh server loads.
    let work = tempfile::tempdir().unwrap();
    let into = work.path().join("download");
    let into_arg = into.display().to_string();
    fails(
        &["download", &location, "--to", &into_arg],
        &s3.env(),
        &["is encrypted to", &keys.publics[0], "--identity"],
    );
    assert!(!into.exists(), "nothing was written");
    ok(
        &[
            "download",
            &location,
            "--to",
            &into_arg,
            "--identity",
            keys.file(1),
        ],
        &s3.env(),
    );
    assert!(
        files_holding(&into, MARKER.as_bytes()).len() == 1,
        "the RDB is in plain text"
    );
    let loaded = RedisServer::start_with(
        None,
        &[("dir", into_arg.as_str()), ("dbfilename", "redis.rdb")],
    )
    .unwrap();
    let mut lcon = support::redis_data::connect(&loaded.url()).await;
    assert_eq!(support::redis_data::state(&mut lcon).await.0, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restores_with_either_identity_and_a_wrong_one_creates_nothing() {
    use support::pg_data::{create, texts};
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let keys = Keys::new(3);
    let server = PostgresServer::start().unwrap();
    create(
        &server,
        "shop",
        &format!(
            "CREATE TABLE notes (id int PRIMARY KEY, body text); \
             INSERT INTO notes SELECT g, '{MARKER} ' || g FROM generate_series(1, 500) g;"
        ),
    )
    .await;
    let location = encrypted_backup(
        &server.url("shop"),
        "s3://backups/pg",
        &keys,
        &s3,
        &["--no-globals", "--databases", "shop"],
    );
    let databases = "SELECT datname FROM pg_database ORDER BY 1";
    let before = texts(&server, "postgres", databases).await;
    fails(
        &[
            "restore",
            &location,
            "--to",
            &server.url("copy_x"),
            "--create",
            "--identity",
            keys.file(2),
        ],
        &s3.env(),
        &["none of the given private keys opens"],
    );
    assert_eq!(texts(&server, "postgres", databases).await, before);
    for i in 0..2 {
        let copy = format!("copy_{i}");
        ok(
            &[
                "restore",
                &location,
                "--to",
                &server.url(&copy),
                "--create",
                "--identity",
                keys.file(i),
            ],
            &s3.env(),
        );
        let bodies = texts(&server, &copy, "SELECT body FROM notes ORDER BY id").await;
        assert_eq!(bodies.len(), 500);
        assert_eq!(bodies[41], format!("{MARKER} 42"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_restores_with_either_identity_and_a_wrong_one_creates_nothing() {
    use support::mysql_data::{rows, run};
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let keys = Keys::new(3);
    let server = MariaDbServer::start().unwrap();
    run(
        &server,
        None,
        &format!(
            "CREATE DATABASE shop; USE shop; \
             CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) ENGINE=InnoDB; \
             INSERT INTO notes VALUES (1, '{MARKER} one'), (2, '{MARKER} two');"
        ),
    )
    .await;
    let location = encrypted_backup(
        &server.url(Some("shop")),
        "s3://backups/my",
        &keys,
        &s3,
        &[],
    );
    let databases = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1";
    let before = rows(&server, None, databases).await;
    fails(
        &[
            "restore",
            &location,
            "--to",
            &server.url(None),
            "--rename",
            "shop=shop_x",
            "--create",
            "--identity",
            keys.file(2),
        ],
        &s3.env(),
        &["none of the given private keys opens"],
    );
    assert_eq!(rows(&server, None, databases).await, before);
    for i in 0..2 {
        let copy = format!("shop_{i}");
        ok(
            &[
                "restore",
                &location,
                "--to",
                &server.url(None),
                "--rename",
                &format!("shop={copy}"),
                "--create",
                "--identity",
                keys.file(i),
            ],
            &s3.env(),
        );
        let bodies = rows(&server, Some(&copy), "SELECT body FROM notes ORDER BY id").await;
        assert_eq!(
            bodies,
            [[format!("{MARKER} one")], [format!("{MARKER} two")]]
        );
    }
}

/// The key of the one key object in a backup's folder.
async fn key_object(s3: &S3Server, folder: &str) -> String {
    let listed = support::s3_client(s3)
        .list_objects_v2()
        .bucket("backups")
        .prefix(folder)
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .filter(|k| k.rsplit('/').next().unwrap().starts_with("keys-"))
        .map(str::to_owned)
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].clone()
}

/// The S3 ETag and modification time of an object.
async fn stamp(s3: &S3Server, key: &str) -> (String, String) {
    let head = support::s3_client(s3)
        .head_object()
        .bucket("backups")
        .key(key)
        .send()
        .await
        .unwrap();
    (
        head.e_tag().unwrap().to_owned(),
        head.last_modified().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_rewrapped_for_a_new_key_opens_with_it_only_and_its_data_is_not_rewritten() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let keys = Keys::new(3);
    let source = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(
            source.path().join(format!("file{i}.txt")),
            format!("{MARKER} {i}\n").repeat(500),
        )
        .unwrap();
    }
    let location = encrypted_backup(
        source.path().to_str().unwrap(),
        "s3://backups/vol",
        &keys,
        &s3,
        &[],
    );
    let folder = location.strip_prefix("s3://backups/").unwrap();
    let data = format!("{folder}volume.tar");
    let keys_object = key_object(&s3, folder).await;
    let data_before = stamp(&s3, &data).await;
    let keys_before = stamp(&s3, &keys_object).await;

    // verify with a key decrypts and checks the contents too.
    let (_, out) = ok(
        &["verify", &location, "--identity", keys.file(1)],
        &s3.env(),
    );
    assert!(stderr(&out).contains("decrypted and checked"), "{out:?}");

    // Rotation: the first key is retired, the third added.
    let rewrap = [
        "rewrap",
        &location,
        "--identity",
        keys.file(0),
        "--recipient",
        &keys.publics[1],
        "--recipient",
        &keys.publics[2],
    ];
    // The key that opens it is not among the new recipients: refused unless forced.
    let refused = support::cli::coffer(&rewrap, &s3.env());
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        stderr(&refused)
            .contains("none of the keys given with --identity is among the new recipients"),
        "{refused:?}"
    );
    assert_eq!(stamp(&s3, &keys_object).await, keys_before);
    let mut forced = rewrap.to_vec();
    forced.push("--force");
    let (_, out) = ok(&forced, &s3.env());
    assert!(stderr(&out).contains("now for"), "{out:?}");
    assert_eq!(
        stamp(&s3, &data).await,
        data_before,
        "the data was rewritten"
    );
    assert_ne!(stamp(&s3, &keys_object).await, keys_before);
    // The key that was kept still opens it.
    let (_, out) = ok(
        &["verify", &location, "--identity", keys.file(1)],
        &s3.env(),
    );
    assert!(stderr(&out).contains("decrypted and checked"), "{out:?}");

    let target = tempfile::tempdir().unwrap();
    let into = target.path().join("a");
    fails(
        &[
            "restore",
            &location,
            "--to",
            into.to_str().unwrap(),
            "--identity",
            keys.file(0),
        ],
        &s3.env(),
        &["none of the given private keys opens", &keys.publics[2]],
    );
    assert!(!into.exists(), "the target was created");
    ok(
        &[
            "restore",
            &location,
            "--to",
            into.to_str().unwrap(),
            "--identity",
            keys.file(2),
        ],
        &s3.env(),
    );
    assert_eq!(
        support::tree::describe(&into),
        support::tree::describe(source.path())
    );

    // A damaged data object is found by verify without a key, and by a restore before it
    // writes anything.
    let stored = s3.root().join("backups").join(&data);
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    support::s3_client(&s3)
        .put_object()
        .bucket("backups")
        .key(&data)
        .body(bytes.into())
        .send()
        .await
        .unwrap();
    fails(&["verify", &location], &s3.env(), &["is damaged"]);
    let other = target.path().join("b");
    fails(
        &[
            "restore",
            &location,
            "--to",
            other.to_str().unwrap(),
            "--identity",
            keys.file(1),
        ],
        &s3.env(),
        &["is damaged"],
    );
    assert!(
        !other.exists()
            || std::fs::read_dir(&other).unwrap().all(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')),
        "the damaged backup was restored"
    );
}

#[test]
fn bad_keys_are_one_line_usage_errors_that_never_echo_a_private_key() {
    let keys = Keys::new(1);
    let dir = tempfile::tempdir().unwrap();
    let private = std::fs::read_to_string(&keys.files[0]).unwrap();
    let secret = private
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_owned();
    // A private key given where a public one belongs.
    let out = support::cli::coffer(
        &[
            "backup",
            dir.path().to_str().unwrap(),
            "--to",
            dir.path().join("store").to_str().unwrap(),
            "--recipient",
            &secret,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = stderr(&out);
    assert!(said.contains("is not an age public key"), "{said}");
    assert!(!said.contains(&secret[16..]), "{said}");
    assert!(!dir.path().join("store").exists(), "something was stored");
    // A public key given where a private one belongs.
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&wrong, format!("{}\n", keys.publics[0])).unwrap();
    let out = support::cli::coffer(
        &[
            "verify",
            dir.path().to_str().unwrap(),
            "--identity",
            wrong.to_str().unwrap(),
        ],
        &[],
    );
    let said = stderr(&out);
    assert!(
        said.contains("line 1 of --identity") && said.contains("not an age private key"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_leaves_no_key_object_and_a_lost_one_fails_verify() {
    let s3 = S3Server::start().unwrap();
    bucket(&s3, "backups").await;
    let keys = Keys::new(1);
    // The source cannot be reached: the key object written first is removed again.
    let out = support::cli::coffer(
        &[
            "backup",
            &format!("redis://127.0.0.1:{}", support::operator::free_port()),
            "--to",
            "s3://backups/gone",
            "--recipient",
            &keys.publics[0],
        ],
        &s3.env(),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let left = support::s3_client(&s3)
        .list_objects_v2()
        .bucket("backups")
        .send()
        .await
        .unwrap();
    assert_eq!(left.contents().len(), 0, "{left:?}");

    // A backup whose key object was deleted cannot be decrypted by anyone: verify says so,
    // with or without a key.
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("a.txt"), "hello").unwrap();
    let (location, _) = ok(
        &[
            "backup",
            source.path().to_str().unwrap(),
            "--to",
            "s3://backups/vol",
            "--recipient",
            &keys.publics[0],
        ],
        &s3.env(),
    );
    let folder = location.strip_prefix("s3://backups/").unwrap();
    let object = key_object(&s3, folder).await;
    support::s3_client(&s3)
        .delete_object()
        .bucket("backups")
        .key(&object)
        .send()
        .await
        .unwrap();
    fails(
        &["verify", &location],
        &s3.env(),
        &["is missing", "nobody can decrypt"],
    );
    fails(
        &["verify", &location, "--identity", keys.file(0)],
        &s3.env(),
        &["is missing"],
    );

    // A key given for a backup that is not encrypted: refused, nothing restored.
    let (plain, _) = ok(
        &[
            "backup",
            source.path().to_str().unwrap(),
            "--to",
            "s3://backups/plain",
        ],
        &s3.env(),
    );
    let target = tempfile::tempdir().unwrap();
    let into = target.path().join("x");
    fails(
        &[
            "restore",
            &plain,
            "--to",
            into.to_str().unwrap(),
            "--identity",
            keys.file(0),
        ],
        &s3.env(),
        &["is not encrypted, but --identity was given"],
    );
    assert!(!into.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_works_against_a_second_s3_implementation_with_object_lock() {
    let server = coffer_testenv::VersityServer::start().unwrap();
    support::versity_client(&server)
        .create_bucket()
        .bucket("vault")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let env = server.env();
    let keys = Keys::new(1);
    let source = tempfile::tempdir().unwrap();
    // Large enough for several multipart parts.
    std::fs::write(source.path().join("big.bin"), support::noise(12 << 20)).unwrap();
    std::fs::write(source.path().join("note.txt"), format!("{MARKER}\n")).unwrap();
    let (said, _) = ok(
        &[
            "check",
            source.path().to_str().unwrap(),
            "--to",
            "s3://vault/v",
        ],
        &env,
    );
    assert!(!said.contains("FAIL"), "{said}");
    let (location, _) = ok(
        &[
            "backup",
            source.path().to_str().unwrap(),
            "--to",
            "s3://vault/v",
            "--compression",
            "none",
            "--recipient",
            &keys.publics[0],
        ],
        &env,
    );
    let stored = files_holding(&server.data_dir(), MARKER.as_bytes());
    assert!(stored.is_empty(), "plaintext in the bucket: {stored:?}");
    let (_, listed) = ok(&["list", "s3://vault/v"], &env);
    assert!(support::cli::stdout(&listed).contains(" ok "), "{listed:?}");
    ok(&["verify", &location, "--identity", keys.file(0)], &env);
    let target = tempfile::tempdir().unwrap();
    let into = target.path().join("back");
    ok(
        &[
            "restore",
            &location,
            "--to",
            into.to_str().unwrap(),
            "--identity",
            keys.file(0),
        ],
        &env,
    );
    assert_eq!(
        support::tree::describe(&into),
        support::tree::describe(source.path())
    );
    ok(&["delete", &location], &env);
    let (_, listed) = ok(&["list", "s3://vault/v", "--output", "json"], &env);
    assert_eq!(support::cli::stdout(&listed).trim(), "[]");
    let (_, gc) = ok(&["gc", "s3://vault/v"], &env);
    assert!(!support::cli::stdout(&gc).contains("upload"), "{gc:?}");
}
