//! Copies of backups in other stores (3-2-1): `coffer copy` between two independent S3
//! servers (s3s-fs and versitygw), a directory and the same server (copied by the server
//! itself), each copy checked and restorable; damaged sources refused. Then the operator:
//! a schedule with two copies (another bucket with its own credentials, and a claim), a
//! restore that falls back to a copy when the backup's data is gone, a copy store that is
//! down (the Backup stays Succeeded, the copy is retried), and retention per copy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use coffer::api::{Backup, BackupPhase, BackupSchedule, CopyPhase, RestorePhase, RestoreRequest};
use coffer_testenv::{RedisServer, S3Server, VersityServer};
use kube::api::Api;
use serde_json::json;

mod support;
use support::cli::{fails, ok, stderr};
use support::operator::{Operator, admin, eventually};
use support::resources::{
    BUCKET, RUN, create, finished_backup, finished_restore, redis_source, secret, setup, storage,
};

async fn bucket(client: &aws_sdk_s3::Client, name: &str) {
    client.create_bucket().bucket(name).send().await.unwrap();
}

/// A directory of a few files, one large enough for a multipart upload.
fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(root.join("sub/b.bin"), support::noise(3 << 20)).unwrap();
}

fn same_tree(a: &Path, b: &Path) {
    for file in ["a.txt", "sub/b.bin"] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[tokio::test]
async fn coffer_copy_makes_checked_copies_in_another_service_a_directory_and_the_same_service() {
    let s3 = S3Server::start().unwrap();
    let versity = VersityServer::start().unwrap();
    bucket(&support::s3_client(&s3), "backups").await;
    bucket(&support::s3_client(&s3), "nearby").await;
    bucket(&support::versity_client(&versity), "offsite").await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("data");
    tree(&source);
    let (location, _) = ok(
        &[
            "backup",
            source.to_str().unwrap(),
            "--to",
            "s3://backups/vol/",
        ],
        &s3.env(),
    );
    let name = location.trim_end_matches('/').rsplit('/').next().unwrap();

    // To another S3 service, with its own credentials: streamed through, checked there.
    let mut env = s3.env();
    env.push((
        "COFFER_COPY_AWS_ACCESS_KEY_ID",
        versity.access_key().to_owned(),
    ));
    env.push((
        "COFFER_COPY_AWS_SECRET_ACCESS_KEY",
        versity.secret_key().to_owned(),
    ));
    let to_versity = [
        "copy",
        &location,
        "--to",
        "s3://offsite/copies/",
        "--to-s3-endpoint",
        &versity.endpoint(),
    ];
    let (copied, out) = ok(&to_versity, &env);
    assert_eq!(copied, format!("s3://offsite/copies/{name}/"));
    assert!(
        stderr(&out).contains("checked them at the destination"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("S3 service itself"),
        "{}",
        stderr(&out)
    );
    // Both manifests are the same bytes.
    let manifest = |client: aws_sdk_s3::Client, bucket: &'static str, key: String| async move {
        client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
    };
    let folder = location.strip_prefix("s3://backups/").unwrap();
    assert_eq!(
        manifest(
            support::s3_client(&s3),
            "backups",
            format!("{folder}manifest.json")
        )
        .await,
        manifest(
            support::versity_client(&versity),
            "offsite",
            format!("copies/{name}/manifest.json")
        )
        .await
    );
    // Again: found complete, nothing copied.
    let (_, out) = ok(&to_versity, &env);
    assert!(
        stderr(&out).contains("already holds this backup"),
        "{}",
        stderr(&out)
    );
    ok(&["verify", &copied], &versity.env());
    let restored = work.path().join("from-versity");
    ok(
        &["restore", &copied, "--to", restored.to_str().unwrap()],
        &versity.env(),
    );
    same_tree(&source, &restored);

    // To a directory.
    let dir = work.path().join("usb");
    let (in_dir, _) = ok(
        &["copy", &location, "--to", dir.to_str().unwrap()],
        &s3.env(),
    );
    ok(&["verify", &in_dir], &[]);

    // Within the same service: the server copies the objects.
    let (nearby, out) = ok(&["copy", &location, "--to", "s3://nearby/"], &s3.env());
    assert!(
        stderr(&out).contains("copied by the S3 service itself"),
        "{}",
        stderr(&out)
    );
    ok(&["verify", &nearby], &s3.env());

    // A copy never overwrites another backup.
    let other = work.path().join("other");
    tree(&other);
    std::fs::write(other.join("a.txt"), "another\n").unwrap();
    let (second, _) = ok(
        &[
            "backup",
            other.to_str().unwrap(),
            "--to",
            "s3://backups/other/",
        ],
        &s3.env(),
    );
    let second_name = second
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let dir_other = dir.join(&second_name);
    std::fs::create_dir_all(&dir_other).unwrap();
    for entry in std::fs::read_dir(dir.join(name)).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dir_other.join(entry.file_name())).unwrap();
        }
    }
    fails(
        &["copy", &second, "--to", dir.to_str().unwrap()],
        &s3.env(),
        &["already holds another backup", "never overwrites"],
    );

    // A damaged source (same size, other bytes, stored through S3 so that its own
    // checksums match) is refused by the manifest's SHA-256, and nothing is left behind.
    let client = support::s3_client(&s3);
    let listed = client
        .list_objects_v2()
        .bucket("backups")
        .prefix(folder)
        .send()
        .await
        .unwrap();
    let key = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .find(|k| !k.ends_with("manifest.json"))
        .unwrap()
        .to_owned();
    let mut bytes = manifest(client.clone(), "backups", key.clone())
        .await
        .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    client
        .put_object()
        .bucket("backups")
        .key(&key)
        .body(bytes.into())
        .send()
        .await
        .unwrap();
    let elsewhere = work.path().join("elsewhere");
    fails(
        &["copy", &location, "--to", elsewhere.to_str().unwrap()],
        &s3.env(),
        &["is damaged", "SHA-256"],
    );
    // Restoring the damaged backup: refused; with a copy to fall back to, the copy is
    // restored, and said so.
    let target = work.path().join("restored-from-copy");
    fails(
        &["restore", &location, "--to", target.to_str().unwrap()],
        &s3.env(),
        &["damaged"],
    );
    let (_, out) = ok(
        &[
            "restore",
            &location,
            "--to",
            target.to_str().unwrap(),
            "--fallback",
            &in_dir,
        ],
        &s3.env(),
    );
    assert!(
        stderr(&out).contains("restoring from the copy at"),
        "{}",
        stderr(&out)
    );
    same_tree(&source, &target);
    assert!(
        support::cli::walk(&elsewhere).is_empty(),
        "{:?}",
        support::cli::walk(&elsewhere)
    );
}

#[tokio::test]
async fn a_schedule_copies_each_backup_falls_back_to_a_copy_retries_a_down_store_and_prunes_per_copy()
 {
    let (_namespace, ns, s3) = setup("copies").await;
    // The second bucket is on the same server with other credentials would need a second
    // identity; it is on versitygw, an independent service, with its own Secret.
    let versity = VersityServer::start().unwrap();
    bucket(&support::versity_client(&versity), "offsite").await;
    support::resources::versity_secret(&ns, "offsite-creds", &versity).await;
    create::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(
        &ns,
        json!({"metadata": {"name": "vault"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    let redis = RedisServer::start_with_password("redis-pw").unwrap();
    let mut con = support::redis_data::connect(&redis.url()).await;
    support::redis_data::set_numbered(&mut con, "order:", "v", 25).await;
    secret(&ns, "redis-auth", &[("password", "redis-pw")]).await;
    let (hook, told) = support::webhook::receiver().await;
    secret(&ns, "hook", &[("url", &hook)]).await;
    create::<coffer::api::Notifier>(
        &ns,
        json!({"metadata": {"name": "ops"}, "spec": {"webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}}),
    )
    .await;
    let _operator = Operator::start_with(&ns, "solo", &["--copy-backoff", "2"]);
    let offsite = json!({"s3": {"bucket": "offsite", "prefix": "dr/", "endpoint": versity.endpoint(),
        "region": "us-east-1", "forcePathStyle": true, "credentialsSecretRef": {"name": "offsite-creds"}}});
    create::<BackupSchedule>(
        &ns,
        json!({"metadata": {"name": "bot"}, "spec": {
            "schedule": "0 0 1 1 *", "source": redis_source(&redis, "redis-auth"), "storage": storage(&s3),
            "notify": [{"name": "ops"}],
            "copies": [
                {"name": "offsite", "storage": offsite, "retention": {"keepLast": 1}},
                {"name": "vault", "storage": {"filesystem": {"claimName": "vault"}}},
            ]}}),
    )
    .await;
    let backups: Api<Backup> = Api::namespaced(admin().await, &ns);
    let copied = |name: &'static str| {
        let backups = backups.clone();
        async move {
            eventually(RUN, &format!("{name}'s copies"), || async {
                let b = backups.get(name).await.unwrap();
                let status = b.status.as_ref()?;
                (status.copies.len() == 2
                    && status
                        .copies
                        .iter()
                        .all(|c| c.phase == CopyPhase::Succeeded))
                .then_some(b)
            })
            .await
        }
    };
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "first"}, "spec": {"scheduleRef": {"name": "bot"}}}),
    )
    .await;
    let first = finished_backup(&ns, "first").await;
    assert_eq!(
        first.status.as_ref().unwrap().phase,
        Some(BackupPhase::Succeeded)
    );
    let first = copied("first").await;
    let status = first.status.unwrap();
    let folder = status.resolved.as_ref().unwrap().folder.clone();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Copied")
        .unwrap();
    assert_eq!(condition.status, "True", "{condition:?}");
    for copy in &status.copies {
        assert!(copy.verified_time.is_some(), "{copy:?}");
    }
    let offsite_location = format!("s3://offsite/dr/{folder}");
    assert_eq!(status.copies[0].location, offsite_location);
    ok(&["verify", &offsite_location], &versity.env());
    let vault_dir = support::operator::plane()
        .claim_dir(&ns, "vault")
        .unwrap()
        .join(&folder);
    ok(&["verify", vault_dir.to_str().unwrap()], &[]);
    ok(&["verify", status.location.as_deref().unwrap()], &s3.env());

    // The backup's own data object is deleted: a restore reads the first copy, and says so.
    let primary = s3.root().join(BUCKET).join("ci").join(&folder);
    let data = primary
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap() != "manifest.json")
        .unwrap();
    std::fs::remove_file(&data).unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    create::<RestoreRequest>(
        &ns,
        json!({"metadata": {"name": "fallback"}, "spec": {"backupRef": {"name": "first"}}}),
    )
    .await;
    let restored = finished_restore(&ns, "fallback").await.status.unwrap();
    assert_eq!(
        restored.phase,
        Some(RestorePhase::Succeeded),
        "{restored:?}"
    );
    assert_eq!(
        restored.restored_from_copy.as_deref(),
        Some("offsite"),
        "{restored:?}"
    );
    assert_eq!(
        restored.location.as_deref(),
        Some(offsite_location.as_str())
    );
    let ready = restored
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("from copy \"offsite\""),
        "{}",
        ready.message
    );
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, 25);
    // A named copy, asked for.
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    create::<RestoreRequest>(&ns, json!({"metadata": {"name": "from-vault"}, "spec": {"backupRef": {"name": "first"}, "fromCopy": "vault"}})).await;
    let restored = finished_restore(&ns, "from-vault").await.status.unwrap();
    assert_eq!(
        restored.phase,
        Some(RestorePhase::Succeeded),
        "{restored:?}"
    );
    assert_eq!(restored.restored_from_copy.as_deref(), Some("vault"));
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(size, 25);

    // The offsite store is down: the next Backup succeeds, its copy fails and is retried.
    let mut versity = versity;
    versity.stop();
    create::<Backup>(
        &ns,
        json!({"metadata": {"name": "second"}, "spec": {"scheduleRef": {"name": "bot"}}}),
    )
    .await;
    let second = finished_backup(&ns, "second").await;
    assert_eq!(
        second.status.as_ref().unwrap().phase,
        Some(BackupPhase::Succeeded)
    );
    let failing = eventually(RUN, "the offsite copy to fail twice", || async {
        let b = backups.get("second").await.unwrap();
        let status = b.status.clone()?;
        let c = status.copies.iter().find(|c| c.name == "offsite")?;
        (c.phase == CopyPhase::Failed && c.attempts >= 2).then_some(status)
    })
    .await;
    assert_eq!(failing.phase, Some(BackupPhase::Succeeded));
    let condition = failing
        .conditions
        .iter()
        .find(|c| c.type_ == "Copied")
        .unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "CopyFailed")
    );
    assert!(
        condition.message.contains("offsite"),
        "{}",
        condition.message
    );
    // Its Notifier is told once, however often the copy is retried.
    eventually(RUN, "the copyFailed notification", || async {
        (!told.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let events = support::resources::events_of(&ns, "second").await;
    assert!(
        events.iter().any(|(_, reason, _)| reason == "CopyFailed"),
        "{events:?}"
    );
    // Back up: the next attempt succeeds, and the offsite store's retention (keepLast 1)
    // deletes the first backup's copy there, and only there.
    versity.restart().unwrap();
    let second = copied("second").await;
    let status = second.status.unwrap();
    assert!(status.copies[0].attempts >= 3);
    let bodies = told.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(
        bodies[0].contains("\"copyFailed\"") && bodies[0].contains("offsite"),
        "{}",
        bodies[0]
    );
    assert_eq!(
        status
            .notifications
            .iter()
            .filter(|d| d.event == "copyFailed")
            .count(),
        1,
        "{:?}",
        status.notifications
    );
    let first = eventually(
        RUN,
        "the first offsite copy to be marked removed",
        || async {
            let b = backups.get("first").await.unwrap();
            let status = b.status.clone()?;
            (status.copies.iter().find(|c| c.name == "offsite")?.phase == CopyPhase::Removed)
                .then_some(status)
        },
    )
    .await;
    assert_eq!(
        first
            .copies
            .iter()
            .find(|c| c.name == "vault")
            .unwrap()
            .phase,
        CopyPhase::Succeeded
    );
    let out = support::cli::coffer(&["verify", &offsite_location], &versity.env());
    assert!(
        !out.status.success(),
        "the first offsite copy is still there"
    );
    ok(&["verify", vault_dir.to_str().unwrap()], &[]);
    assert!(
        primary.join("manifest.json").exists(),
        "the backup's own store was touched"
    );
}
